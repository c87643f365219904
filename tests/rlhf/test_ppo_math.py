"""Tests for the PPO math: hand-worked GAE, KL estimators against exact KL, controllers, masking, losses."""

from __future__ import annotations

import math

import pytest
import torch

from components.rlhf.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_controller,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)

F64 = torch.float64


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# ----------------------------------------------------------------------------------------------- GAE

# Row 0 has 3 real tokens, row 1 has 2 (position 2 is padding, filled with junk that must not matter).
GAMMA, LAM = 0.9, 0.8  # gamma * lam = 0.72
REWARDS = [[0.0, 0.0, 1.0], [0.2, 2.0, 99.0]]
VALUES = [[0.5, 0.4, 0.6], [1.0, 0.5, 77.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
# Row 0 (value after the last token is 0):
#   t=2: delta = 1 + 0.9*0   - 0.6 =  0.4   A = 0.4
#   t=1: delta = 0 + 0.9*0.6 - 0.4 =  0.14  A = 0.14 + 0.72*0.4   = 0.428
#   t=0: delta = 0 + 0.9*0.4 - 0.5 = -0.14  A = -0.14 + 0.72*0.428 = 0.16816
# Row 1 (t=2 is padding: the episode ends after t=1):
#   t=1: delta = 2.0 + 0.9*0   - 0.5 =  1.5   A = 1.5
#   t=0: delta = 0.2 + 0.9*0.5 - 1.0 = -0.35  A = -0.35 + 0.72*1.5 = 0.73
EXPECTED_ADV = [[0.16816, 0.428, 0.4], [0.73, 1.5, 0.0]]
EXPECTED_RET = [[0.66816, 0.828, 1.0], [1.73, 2.0, 0.0]]  # A + V on real tokens, 0 on padding


def test_gae_matches_hand_computed_example() -> None:
    adv, ret = gae(_t(REWARDS), _t(VALUES), _t(MASK), gamma=GAMMA, lam=LAM)
    torch.testing.assert_close(adv, _t(EXPECTED_ADV))
    torch.testing.assert_close(ret, _t(EXPECTED_RET))


@pytest.mark.parametrize("junk", [0.0, -5.0, 1e6, float("nan")])
def test_gae_ignores_padded_reward_and_value(junk: float) -> None:
    rewards, values = _t(REWARDS), _t(VALUES)
    rewards[1, 2], values[1, 2] = junk, junk
    adv, ret = gae(rewards, values, _t(MASK), gamma=GAMMA, lam=LAM)
    torch.testing.assert_close(adv, _t(EXPECTED_ADV))
    torch.testing.assert_close(ret, _t(EXPECTED_RET))


def test_gae_with_gamma_lam_one_is_return_to_go_minus_value() -> None:
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 6, generator=g, dtype=F64), torch.randn(3, 6, generator=g, dtype=F64)
    lengths = [6, 4, 1]
    mask = torch.zeros(3, 6, dtype=F64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for i, n in enumerate(lengths):
        to_go = rewards[i, :n].flip(0).cumsum(0).flip(0)
        torch.testing.assert_close(adv[i, :n], to_go - values[i, :n])
        torch.testing.assert_close(ret[i, :n], to_go)
        assert torch.all(adv[i, n:] == 0) and torch.all(ret[i, n:] == 0)


def test_gae_carries_no_gradient() -> None:
    values = _t(VALUES).requires_grad_(True)
    adv, ret = gae(_t(REWARDS), values, _t(MASK), gamma=GAMMA, lam=LAM)
    assert not adv.requires_grad and not ret.requires_grad


# ------------------------------------------------------------------------------------ KL estimators


def test_kl_estimators_approach_exact_kl() -> None:
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=F64)
    q = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2], dtype=F64)
    exact = float((p * (p / q).log()).sum())  # KL(p || q) ~= 0.2775
    g = torch.Generator().manual_seed(0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, ref_logp = p.log()[samples].view(1, -1), q.log()[samples].view(1, -1)
    k1, k2, k3 = (kl_estimate(logp, ref_logp, kind) for kind in ("k1", "k2", "k3"))
    assert abs(float(k1.mean()) - exact) < 0.01
    assert abs(float(k3.mean()) - exact) < 0.01
    assert torch.all(k3 >= 0) and torch.all(k2 >= 0)
    assert k1.min() < 0  # k1 is unbiased but not per-token non-negative


def test_kl_estimate_default_is_k1_and_values() -> None:
    logp, ref = _t([[-1.0, -2.0]]), _t([[-1.5, -1.0]])
    lr = logp - ref
    torch.testing.assert_close(kl_estimate(logp, ref), lr)
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), 0.5 * lr**2)
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.exp(-lr) - 1 + lr)
    assert torch.all(kl_estimate(logp, logp, "k3") == 0)


def test_kl_estimate_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(_t([[0.0]]), _t([[0.0]]), "k4")


# ------------------------------------------------------------------------------------ KL controllers


def test_adaptive_controller_moves_towards_target_with_clipping() -> None:
    target, horizon, n = 6.0, 10_000, 100
    up = AdaptiveKLController(0.2, target, horizon)
    up.update(current_kl=60.0, n_steps=n)  # error 9 clipped to +0.2
    assert up.value == pytest.approx(0.2 * (1 + 0.2 * n / horizon))
    down = AdaptiveKLController(0.2, target, horizon)
    down.update(current_kl=0.0, n_steps=n)  # error -1 clipped to -0.2
    assert down.value == pytest.approx(0.2 * (1 - 0.2 * n / horizon))
    small = AdaptiveKLController(0.2, target, horizon)
    small.update(current_kl=6.6, n_steps=n)  # error +0.1, inside the clip
    assert small.value == pytest.approx(0.2 * (1 + 0.1 * n / horizon))
    assert 0.2 < small.value < up.value
    on_target = AdaptiveKLController(0.2, target, horizon)
    on_target.update(current_kl=target, n_steps=n)
    assert on_target.value == pytest.approx(0.2)


def test_fixed_controller_never_moves_and_state_roundtrips() -> None:
    fixed = FixedKLController(0.05)
    for kl in (0.0, 1.0, 100.0):
        fixed.update(kl, 1000)
    assert fixed.value == 0.05
    adaptive = AdaptiveKLController(0.1, 1.0, 100)
    adaptive.update(5.0, 10)
    restored = AdaptiveKLController(0.1, 1.0, 100)
    restored.load_state_dict(adaptive.state_dict())
    assert restored.value == adaptive.value != 0.1
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05


def test_kl_controller_factory_validates() -> None:
    assert isinstance(kl_controller(False, 0.1, None, 0), FixedKLController)
    ctl = kl_controller(True, 0.1, 6.0, 10_000)
    assert isinstance(ctl, AdaptiveKLController) and ctl.value == 0.1
    with pytest.raises(ValueError, match="target"):
        kl_controller(True, 0.1, None, 10_000)
    with pytest.raises(ValueError, match="target"):
        kl_controller(True, 0.1, 0.0, 10_000)
    with pytest.raises(ValueError, match="horizon"):
        kl_controller(True, 0.1, 6.0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        kl_controller(False, -0.1, None, 0)


# ------------------------------------------------------------------------------------- masked stats


def test_masked_mean_empty_mask_is_zero() -> None:
    x = _t([[1.0, 2.0], [3.0, 4.0]])
    assert masked_mean(x, torch.zeros_like(x)).item() == 0.0
    per_row = masked_mean(x, _t([[1.0, 1.0], [0.0, 0.0]]), dim=1)
    torch.testing.assert_close(per_row, _t([[1.5, 0.0]])[0])
    assert masked_sum(x, _t([[1.0, 0.0], [0.0, 1.0]])).item() == 5.0


def test_masked_stats_accept_bool_mask_and_ignore_nan_padding() -> None:
    x = _t([[1.0, 3.0, float("nan")]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(x, mask).item() == 2.0
    assert masked_var(x, mask).item() == pytest.approx(2.0)  # unbiased: ((1)^2 + (1)^2) / 1
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(1.0)
    assert masked_var(_t([[5.0, 0.0]]), _t([[1.0, 0.0]])).item() == 0.0  # one entry: no nan


def test_whiten_normalises_masked_entries_and_ignores_the_rest() -> None:
    g = torch.Generator().manual_seed(1)
    x = 3.0 + 5.0 * torch.randn(4, 7, generator=g, dtype=F64)
    mask = (torch.arange(7) < torch.tensor([[7], [5], [2], [4]])).to(F64)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[mask == 0] == 0)
    x2 = x.clone()
    x2[mask == 0] = 1e9
    torch.testing.assert_close(masked_whiten(x2, mask), w)
    kept = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(masked_mean(x, mask).item())


# ------------------------------------------------------------------------------------------ rewards


def test_token_rewards_put_score_at_last_real_token() -> None:
    kl = _t([[0.1, 0.2, 0.3], [0.5, -0.4, 9.0]])
    mask = _t([[1, 1, 1], [1, 1, 0]])
    rewards = token_rewards(torch.tensor([1.0, -2.0], dtype=F64), kl, mask, kl_coef=0.5)
    expected = _t([[-0.05, -0.1, -0.15 + 1.0], [-0.25, 0.2 - 2.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_token_rewards_refuses_empty_row() -> None:
    with pytest.raises(ValueError, match="empty"):
        token_rewards(torch.ones(2), torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]), 0.1)


# ------------------------------------------------------------------------------------------- losses


def test_policy_loss_ratio_one_is_minus_mean_advantage() -> None:
    logp = _t([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]])
    adv = _t([[1.0, -2.0, 0.5], [3.0, 0.25, 100.0]])
    mask = _t([[1, 1, 1], [1, 1, 0]])
    loss, stats = policy_loss(logp, logp.clone(), adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(-(1.0 - 2.0 + 0.5 + 3.0 + 0.25) / 5)
    assert stats["clipfrac"] == 0.0
    assert stats["approx_kl"] == 0.0
    assert stats["ratio_mean"] == pytest.approx(1.0)


def test_policy_loss_clips_ratio_beyond_range_with_positive_advantage() -> None:
    old = _t([[-1.0, -1.0]])
    logp = (old + _t([[math.log(1.5), 0.0]])).requires_grad_(True)  # ratios 1.5 (past 1.2) and 1.0
    adv = _t([[2.0, 1.0]])
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 2), clip_range=0.2)
    assert loss.item() == pytest.approx((-2.0 * 1.2 - 1.0 * 1.0) / 2)
    assert stats["clipfrac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx(1.25)
    assert stats["approx_kl"] == pytest.approx(0.5 * math.log(1.5) ** 2 / 2)
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0  # clipped token: no gradient
    assert logp.grad[0, 1].item() == pytest.approx(-1.0 / 2)  # d(-A r)/dlogp = -A r / n


def test_policy_loss_masked_tokens_contribute_nothing() -> None:
    old = _t([[-1.0, -1.0, -1.0]])
    mask = _t([[1, 1, 0]])
    logp = (old + _t([[0.1, -0.1, 3.0]])).requires_grad_(True)
    adv = _t([[1.0, -1.0, 50.0]])
    loss, stats = policy_loss(logp, old, adv, mask, clip_range=0.2)
    logp2 = (old + _t([[0.1, -0.1, -7.0]])).requires_grad_(True)
    loss2, stats2 = policy_loss(logp2, old, _t([[1.0, -1.0, -9.0]]), mask, clip_range=0.2)
    assert loss.item() == pytest.approx(loss2.item()) and stats == pytest.approx(stats2)
    loss.backward()
    assert logp.grad[0, 2].item() == 0.0


def test_value_loss_clipping() -> None:
    old = _t([[0.0, 0.0, 0.0]])
    values = _t([[1.0, 1.0, 0.1]]).requires_grad_(True)
    returns = _t([[0.0, 2.0, 0.3]])
    loss, stats = value_loss(values, old, returns, _t([[1, 1, 1]]), clip_range=0.2)
    # token 0: unclipped (1-0)^2=1    clipped (0.2-0)^2=0.04 -> 1     (unclipped)
    # token 1: unclipped (1-2)^2=1    clipped (0.2-2)^2=3.24 -> 3.24  (clipped)
    # token 2: inside the range, both (0.1-0.3)^2=0.04
    assert loss.item() == pytest.approx(0.5 * (1.0 + 3.24 + 0.04) / 3)
    assert stats["vf_clipfrac"] == pytest.approx(1 / 3)
    loss.backward()
    assert values.grad[0, 1].item() == 0.0  # clipped term is constant in values
    assert values.grad[0, 0].item() == pytest.approx(0.5 * 2 * (1.0 - 0.0) / 3)


def test_value_loss_ignores_masked_tokens() -> None:
    old, mask = _t([[0.0, 0.0]]), _t([[1, 0]])
    a, _ = value_loss(_t([[0.5, 9.0]]), old, _t([[1.0, -9.0]]), mask, clip_range=1.0)
    b, _ = value_loss(_t([[0.5, -3.0]]), old, _t([[1.0, 4.0]]), mask, clip_range=1.0)
    assert a.item() == pytest.approx(b.item()) == pytest.approx(0.5 * 0.25)


# ------------------------------------------------------------------------------------ logits → stats


def test_logprobs_and_entropy_match_categorical() -> None:
    g = torch.Generator().manual_seed(2)
    logits = 3.0 * torch.randn(2, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logprobs_from_logits(logits, tokens), dist.log_prob(tokens))
    torch.testing.assert_close(entropy_from_logits(logits), dist.entropy())


def test_logprobs_and_entropy_are_float32_for_bf16_logits() -> None:
    logits = torch.randn(1, 3, 7).to(torch.bfloat16)
    tokens = torch.tensor([[0, 3, 6]])
    assert logprobs_from_logits(logits, tokens).dtype == torch.float32
    assert entropy_from_logits(logits).dtype == torch.float32
