"""Tests for the GRPO-family math: hand-worked group advantages and aggregations, the clipped objective's
sides, loss gradients against hand formulas, KL term, nan-safe masking, and pass@k against enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from components.rlvr.grpo_math import (
    AGGREGATIONS,
    GRPOLossConfig,
    aggregate,
    clipped_objective,
    completion_mask,
    group_advantages,
    grpo_loss,
    pass_at_k,
    zero_variance_groups,
)

F64 = torch.float64
REWARDS = [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]


def _t(rows: list[list[float]] | list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# ------------------------------------------------------------------------------------------ advantages


def test_group_advantages_with_std_by_hand() -> None:
    # Row 0: mean 0.5, sample std sqrt((4 * 0.25) / 3) = 0.57735; 0.5 / (0.57735 + 1e-4) = 0.86588.
    # Row 1: no spread -> 0. Row 2: mean 0.25, sample std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5;
    # -0.25 / 0.5001 = -0.49990, 0.75 / 0.5001 = 1.49970.
    a, b, c = 0.8658754297607016, 0.4999000199960008, 1.4997000599880024
    expected = _t([[a, -a, -a, a], [0, 0, 0, 0], [-b, -b, -b, c]])
    torch.testing.assert_close(group_advantages(_t(REWARDS)), expected)


def test_group_advantages_without_std_by_hand() -> None:
    expected = _t([[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.25, -0.25, -0.25, 0.75]])
    torch.testing.assert_close(group_advantages(_t(REWARDS), scale_by_std=False), expected)


def test_group_advantages_zero_variance_and_single_sample_are_exactly_zero() -> None:
    adv = group_advantages(_t([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7]]))
    assert torch.equal(adv, torch.zeros_like(adv))
    single = group_advantages(_t([[1.0], [0.0]]))
    assert torch.equal(single, torch.zeros(2, 1, dtype=F64))
    assert not torch.isnan(group_advantages(torch.tensor([[1, 1], [0, 1]]))).any()  # integer rewards too


def test_group_advantages_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        group_advantages(_t([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        group_advantages(_t([1.0, 0.0]))


def test_zero_variance_groups() -> None:
    assert zero_variance_groups(_t(REWARDS)).tolist() == [False, True, False]
    assert zero_variance_groups(_t([[0.5], [1.0]])).tolist() == [True, True]
    assert zero_variance_groups(_t([[1.0, 1.0 + 1e-9]])).tolist() == [True]


def test_completion_mask_truncation() -> None:
    resp = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    ended = torch.tensor([True, False])
    torch.testing.assert_close(completion_mask(resp, ended, mask_truncated=True),
                               torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(completion_mask(resp, ended, mask_truncated=False), resp.float())


# ------------------------------------------------------------------------------------------ aggregation

PER_TOKEN = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
RAGGED = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_aggregations_by_hand() -> None:
    x, m = _t(PER_TOKEN), _t(RAGGED)
    assert aggregate(x, m, "grpo").item() == pytest.approx((1.5 + 4.0) / 2)    # 2.75
    assert aggregate(x, m, "dapo").item() == pytest.approx((1 + 2 + 4) / 3)    # 2.333
    assert aggregate(x, m, "dr_grpo").item() == pytest.approx(7 / (2 * 3))     # 1.1667
    assert aggregate(x, m, "dr_grpo", max_len=4).item() == pytest.approx(7 / (2 * 4))
    assert aggregate(x, m.bool(), "grpo").item() == pytest.approx(2.75)        # bool masks too


def test_aggregation_empty_rows() -> None:
    x = _t(PER_TOKEN)
    one_empty = _t([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert aggregate(x, one_empty, "grpo").item() == pytest.approx(1.5)   # the empty row is excluded
    assert aggregate(x, one_empty, "dapo").item() == pytest.approx(1.5)
    assert aggregate(x, one_empty, "dr_grpo").item() == pytest.approx(3 / 6)  # but counts in B here
    for mode in AGGREGATIONS:
        assert aggregate(x, torch.zeros_like(x), mode).item() == 0.0


def test_aggregate_rejects_unknown_mode_and_shapes() -> None:
    with pytest.raises(ValueError, match="grpo, dr_grpo, dapo"):
        aggregate(_t(PER_TOKEN), _t(RAGGED), "mean")
    with pytest.raises(ValueError, match="B, T"):
        aggregate(_t(PER_TOKEN), _t([[1.0, 1.0]]), "grpo")


# ------------------------------------------------------------------------------------------- objective


def _objective(ratio: float, adv: float, clip_low: float = 0.2, clip_high: float | None = None
               ) -> tuple[float, bool]:
    logp = torch.tensor([[math.log(ratio)]], dtype=F64)
    loss, clipped = clipped_objective(logp, torch.zeros_like(logp), _t([adv]), clip_low, clip_high)
    return loss.item(), bool(clipped.item())


def test_clipped_objective_at_ratio_one_is_minus_advantage() -> None:
    logp = _t([[-1.0, -2.0], [-0.5, -3.0]])
    adv = _t([2.0, -1.5])
    loss, clipped = clipped_objective(logp, logp.clone(), adv)
    torch.testing.assert_close(loss, _t([[-2.0, -2.0], [1.5, 1.5]]))
    assert not clipped.any()
    loss_bt, _ = clipped_objective(logp, logp.clone(), adv.unsqueeze(1).expand(2, 2))  # (B, T) advantages
    torch.testing.assert_close(loss_bt, loss)


def test_clip_engages_only_on_the_advantage_side() -> None:
    # A > 0: a ratio above 1 + eps is clipped (no incentive to push further), below 1 - eps it is not.
    assert _objective(1.5, 1.0) == (pytest.approx(-1.2), True)
    assert _objective(0.5, 1.0) == (pytest.approx(-0.5), False)
    # A < 0: a ratio below 1 - eps is clipped, above 1 + eps it is not (the loss keeps growing).
    assert _objective(0.5, -1.0) == (pytest.approx(0.8), True)
    assert _objective(1.5, -1.0) == (pytest.approx(1.5), False)
    assert _objective(1.1, 1.0) == (pytest.approx(-1.1), False)


def test_clip_high_asymmetry() -> None:
    assert _objective(1.25, 1.0, 0.2, 0.28) == (pytest.approx(-1.25), False)  # inside the raised ceiling
    assert _objective(1.5, 1.0, 0.2, 0.28) == (pytest.approx(-1.28), True)
    assert _objective(0.7, -1.0, 0.2, 0.28) == (pytest.approx(0.8), True)     # the floor is unchanged
    assert _objective(1.25, 1.0, 0.2, None) == (pytest.approx(-1.2), True)    # None: symmetric


# ------------------------------------------------------------------------------------------------ loss

LOGP = [[-1.0, -2.0, -0.5, -1.5], [-0.3, -0.7, -2.0, -1.0], [-1.2, -0.2, -0.4, -0.9]]
MASK = [[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
ADV = [0.5, -1.0, 2.0]
LENS = [3, 1, 4]


def _grad(cfg: GRPOLossConfig) -> torch.Tensor:
    logp = _t(LOGP).requires_grad_(True)
    loss, _ = grpo_loss(logp, logp.detach(), _t(ADV), _t(MASK), cfg)
    loss.backward()
    assert logp.grad is not None
    return logp.grad


def _expected(per_row: list[float]) -> torch.Tensor:
    return _t([[scale if m else 0.0 for m in row] for scale, row in zip(per_row, MASK, strict=True)])


def test_grpo_loss_gradient_matches_hand_formula() -> None:
    # At ratio 1 the loss is -A per token; "grpo" divides by each row's length and by the number of rows.
    torch.testing.assert_close(_grad(GRPOLossConfig()),
                               _expected([-a / (3 * n) for a, n in zip(ADV, LENS, strict=True)]))


def test_dapo_and_dr_grpo_gradients_match_hand_formula() -> None:
    tokens = sum(LENS)
    torch.testing.assert_close(_grad(GRPOLossConfig(aggregation="dapo")),
                               _expected([-a / tokens for a in ADV]))
    torch.testing.assert_close(_grad(GRPOLossConfig(aggregation="dr_grpo", max_len=10)),
                               _expected([-a / (3 * 10) for a in ADV]))


def test_grpo_loss_value_and_stats_at_ratio_one() -> None:
    logp = _t(LOGP)
    loss, stats = grpo_loss(logp, logp, _t(ADV), _t(MASK), GRPOLossConfig())
    assert loss.item() == pytest.approx(-sum(ADV) / 3)
    assert (stats["clipfrac"], stats["kl"]) == (0.0, 0.0)
    assert (stats["ratio_mean"], stats["ratio_max"]) == (pytest.approx(1.0), pytest.approx(1.0))


def test_grpo_loss_clipfrac_and_ratio_stats() -> None:
    logp = _t([[math.log(1.5), math.log(1.1), 0.0]])
    _, stats = grpo_loss(logp, torch.zeros_like(logp), _t([1.0]), _t([[1.0, 1.0, 0.0]]), GRPOLossConfig())
    assert stats["clipfrac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(1.3)
    assert stats["ratio_max"] == pytest.approx(1.5)


def test_kl_term_zero_at_reference_and_positive_elsewhere() -> None:
    logp = _t(LOGP)
    cfg = GRPOLossConfig(kl_coef=0.1)
    base, _ = grpo_loss(logp, logp, _t(ADV), _t(MASK), GRPOLossConfig())
    same, stats = grpo_loss(logp, logp, _t(ADV), _t(MASK), cfg, ref_logp=logp.clone())
    assert same.item() == pytest.approx(base.item())
    assert stats["kl"] == 0.0
    moved, stats = grpo_loss(logp, logp, _t(ADV), _t(MASK), cfg, ref_logp=logp - 0.3)
    # k3 with log r = 0.3 on every token: e^-0.3 - 1 + 0.3, the same on each row, so each row mean adds it.
    k3 = math.exp(-0.3) - 1 + 0.3
    assert stats["kl"] == pytest.approx(k3)
    assert moved.item() == pytest.approx(base.item() + 0.1 * k3)
    _, logged_only = grpo_loss(logp, logp, _t(ADV), _t(MASK), GRPOLossConfig(), ref_logp=logp - 0.3)
    assert logged_only["kl"] == pytest.approx(k3)  # with kl_coef 0 the KL is still reported


def test_kl_coef_without_reference_raises() -> None:
    logp = _t(LOGP)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, logp, _t(ADV), _t(MASK), GRPOLossConfig(kl_coef=0.05))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_nan_padding_does_not_leak(aggregation: str) -> None:
    mask = _t(MASK).bool()
    nan = torch.full_like(_t(LOGP), float("nan"))
    logp = torch.where(mask, _t(LOGP), nan).requires_grad_(True)
    old = torch.where(mask, _t(LOGP) + 0.1, nan)
    ref = torch.where(mask, _t(LOGP) - 0.2, nan)
    adv = torch.where(mask, _t(ADV).unsqueeze(1).expand(3, 4), nan)  # (B, T) advantages, nan in padding too
    cfg = GRPOLossConfig(kl_coef=0.1, aggregation=aggregation, clip_high=0.28)
    loss, stats = grpo_loss(logp, old, adv, mask, cfg, ref_logp=ref)
    loss.backward()
    assert logp.grad is not None
    assert torch.isfinite(loss)
    assert all(math.isfinite(v) for v in stats.values())
    assert torch.isfinite(logp.grad).all()
    assert (logp.grad[~mask] == 0).all()


def test_empty_mask_gives_zero_loss_and_stats() -> None:
    logp = _t(LOGP).requires_grad_(True)
    loss, stats = grpo_loss(logp, logp.detach(), _t(ADV), torch.zeros(3, 4), GRPOLossConfig())
    loss.backward()
    assert loss.item() == 0.0
    assert stats == {"clipfrac": 0.0, "kl": 0.0, "ratio_mean": 0.0, "ratio_max": 0.0}


@pytest.mark.parametrize(
    "kwargs",
    [{"clip_low": -0.1}, {"clip_low": 1.0}, {"clip_high": -0.1}, {"kl_coef": -1.0}, {"kl_coef": float("inf")},
     {"aggregation": "sum"}, {"max_len": 0}],
)
def test_loss_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GRPOLossConfig(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- pass@k


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 3) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert 0.0 < pass_at_k(1000, 1, 500) <= 1.0  # large n stays stable
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
