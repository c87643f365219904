"""GRPO-family policy-gradient math as pure torch functions: group-relative advantages, the clipped
objective, the three loss aggregations, the full loss with an optional KL-to-reference term, and pass@k.

Conventions follow ``components.rlhf.ppo_math``: tensors are (B, T) over response positions, masks are
float or bool (B, T), and masked-out entries are selected away with ``torch.where`` so nan/inf in padding
cannot leak into losses *or* gradients.

The variants (all critic-free; B = P prompts × G samples each, flattened group by group):

* GRPO (DeepSeekMath, Shao et al. 2024): A = (r - mean_group) / (std_group + eps) with the unbiased
  (sample, Bessel-corrected) std as in DeepSeekMath's and TRL's implementations; per-sequence token mean,
  then mean over sequences; optional k3 KL to the reference inside the loss.
* Dr. GRPO (Liu et al. 2025): no std scaling (``scale_by_std=False``) and a constant normaliser
  (sum / (B · max_len)) instead of per-sequence length, removing GRPO's length and difficulty biases.
  Pass ``max_len`` = the generation budget (max new tokens): the default, the padded width of the batch,
  changes with the batch and so is not really constant.
* DAPO (Yu et al. 2025): token-level mean over all tokens of the batch, clip-higher (``clip_high`` >
  ``clip_low``), dynamic sampling (drop ``zero_variance_groups``) and overlong filtering
  (``completion_mask(..., mask_truncated=True)``).

Aggregations normalise over the tensors given; with gradient accumulation over micro-batches the "dapo"
and "grpo" means are per micro-batch, not over the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from components.rlhf.ppo_math import kl_estimate, masked_mean, masked_sum

AGGREGATIONS = ("grpo", "dr_grpo", "dapo")


# ------------------------------------------------------------------------------------------ advantages


def zero_variance_groups(rewards: Tensor, tol: float = 1e-6) -> Tensor:
    """(P,) bool: every sample in the group got the same reward (within ``tol``), so its advantages are all
    zero and it carries no learning signal (DAPO's dynamic sampling drops such groups). G == 1 is True."""
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (P, G), got shape {tuple(rewards.shape)}")
    return (rewards.amax(dim=1) - rewards.amin(dim=1)) <= tol


def group_advantages(rewards: Tensor, scale_by_std: bool = True, eps: float = 1e-4) -> Tensor:
    """Group-relative advantages (P, G): A = r - mean_group, divided by (std_group + eps) when
    ``scale_by_std`` (GRPO; Dr. GRPO turns it off). std is the unbiased sample std, as in DeepSeekMath/TRL.
    Groups with no reward spread (see ``zero_variance_groups``) and G == 1 get exactly 0, never nan.
    Rewards are data, so the result is detached."""
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (P, G): P prompts x G samples, got shape {tuple(rewards.shape)}")
    r = rewards.detach()
    r = r if r.is_floating_point() else r.float()
    if r.numel() and not bool(torch.isfinite(r).all()):
        raise ValueError("rewards must be finite: a nan/inf reward would poison every advantage in its group")
    adv = r - r.mean(dim=1, keepdim=True)
    if scale_by_std and r.shape[1] > 1:
        adv = adv / (r.std(dim=1, keepdim=True, correction=1) + eps)
    flat = zero_variance_groups(r).unsqueeze(1)
    return torch.where(flat, torch.zeros_like(adv), adv)


def completion_mask(response_mask: Tensor, ended: Tensor, mask_truncated: bool) -> Tensor:
    """(B, T) float loss mask: the response mask, with rows of truncated completions (``ended`` False)
    zeroed when ``mask_truncated`` (DAPO's overlong filtering: a cut-off reply's reward says little about
    its tokens, so it should neither be pushed up nor down)."""
    m = response_mask.float()
    if not mask_truncated:
        return m
    keep = ended.bool().reshape(-1, 1)
    return torch.where(keep, m, torch.zeros_like(m))


# ------------------------------------------------------------------------------------------ objective


def clipped_objective(logp: Tensor, old_logp: Tensor, advantages: Tensor, clip_low: float = 0.2,
                      clip_high: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO-style clipped surrogate per token: -min(r·A, clip(r, 1 - clip_low, 1 + clip_high)·A) with
    r = exp(logp - old_logp). ``advantages`` is (B,) (broadcast over T) or (B, T). ``clip_high`` None is
    symmetric; DAPO's clip-higher makes it larger so low-probability tokens can still rise. Returns
    (per_token_loss (B, T), clipped (B, T) bool: the clipped branch was taken and differs)."""
    if clip_high is None:
        clip_high = clip_low
    adv = advantages.detach()
    if adv.ndim == 1:
        adv = adv.unsqueeze(-1)
    ratio = torch.exp(logp - old_logp.detach())
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def aggregate(per_token: Tensor, mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar. "grpo": mean over sequences of each sequence's masked
    token mean (empty sequences excluded; all empty → 0). "dapo": masked token mean over the whole batch
    (0 if no tokens). "dr_grpo": masked sum / (B · max_len), a constant normaliser (B counts every row,
    ``max_len`` defaults to T)."""
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")
    if per_token.shape != mask.shape or per_token.ndim != 2:
        raise ValueError(f"per_token and mask must both be (B, T), got {tuple(per_token.shape)} and "
                         f"{tuple(mask.shape)}")
    if mode == "dapo":
        return masked_mean(per_token, mask)
    if mode == "dr_grpo":
        length = per_token.shape[1] if max_len is None else max_len
        if length <= 0:
            raise ValueError(f"dr_grpo needs max_len > 0, got {length}")
        denom = per_token.shape[0] * length
        total = masked_sum(per_token, mask)
        return total / denom if denom > 0 else total
    seq_mean = masked_mean(per_token, mask, dim=1)
    nonempty = masked_sum(torch.ones_like(per_token), mask, dim=1) > 0
    n = nonempty.sum()
    total = torch.where(nonempty, seq_mean, torch.zeros_like(seq_mean)).sum()
    return torch.where(n > 0, total / n.clamp_min(1).to(total.dtype), torch.zeros_like(total))


# ----------------------------------------------------------------------------------------------- loss


@dataclass(frozen=True)
class GRPOLossConfig:
    """The knobs that tell GRPO, Dr. GRPO and DAPO losses apart (see the module docstring)."""

    clip_low: float = 0.2
    clip_high: float | None = None  # None: symmetric; DAPO uses e.g. 0.28
    kl_coef: float = 0.0            # beta for the k3 KL-in-loss to the reference (DeepSeekMath); 0: off
    aggregation: str = "grpo"
    max_len: int | None = None      # dr_grpo's normaliser: set it to the generation budget

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low}")
        if self.clip_high is not None and not self.clip_high >= 0.0:
            raise ValueError(f"clip_high must be >= 0 or None, got {self.clip_high}")
        if not (math.isfinite(self.kl_coef) and self.kl_coef >= 0.0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {self.kl_coef}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; "
                             f"choose one of {', '.join(AGGREGATIONS)}")
        if self.max_len is not None and self.max_len <= 0:
            raise ValueError(f"max_len must be > 0 or None, got {self.max_len}")


def _stat(x: Tensor, mask: Tensor) -> float:
    """A detached masked mean as a Python float, for logging."""
    return float(masked_mean(x.detach().float(), mask).item())


def grpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, cfg: GRPOLossConfig,
              ref_logp: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The GRPO-family loss: aggregate(clipped per-token loss + kl_coef · k3(logp, ref_logp)) under
    ``cfg.aggregation``. k3 is the unbiased, non-negative estimator of KL(policy || ref); its gradient
    flows through ``logp`` only. Inputs are zeroed at masked positions first, so nan padding gives neither
    a nan loss nor nan gradients. Stats (floats): clipfrac, kl (0 without a reference), ratio_mean,
    ratio_max (over masked tokens; 0 when there are none)."""
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError(f"kl_coef={cfg.kl_coef} > 0 needs ref_logp (the reference policy's log-probs)")
    if logp.shape != mask.shape or old_logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
                         f"{tuple(mask.shape)} must share one (B, T) shape")
    m = mask.bool()
    zeros = torch.zeros_like(logp)
    adv = advantages.detach()
    adv = (adv.unsqueeze(-1) if adv.ndim == 1 else adv).expand_as(logp)
    logp_s = torch.where(m, logp, zeros)
    old_s = torch.where(m, old_logp.detach(), zeros)
    adv_s = torch.where(m, adv.to(logp.dtype), zeros)

    per_token, clipped = clipped_objective(logp_s, old_s, adv_s, cfg.clip_low, cfg.clip_high)
    kl = zeros
    if ref_logp is not None:
        ref_s = torch.where(m, ref_logp.detach().to(logp.dtype), zeros)
        kl = kl_estimate(logp_s, ref_s, "k3")
        if cfg.kl_coef > 0:
            per_token = per_token + cfg.kl_coef * kl
    loss = aggregate(per_token, mask, cfg.aggregation, cfg.max_len)

    with torch.no_grad():
        ratio = torch.exp(logp_s - old_s)
        ratio_max = torch.where(m, ratio, torch.full_like(ratio, float("-inf"))).max() if m.any() else None
        stats = {
            "clipfrac": _stat(clipped.float(), mask),
            "kl": _stat(kl, mask),
            "ratio_mean": _stat(ratio, mask),
            "ratio_max": float(ratio_max.item()) if ratio_max is not None else 0.0,
        }
    return loss, stats


# --------------------------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), in the
    product form 1 - ∏_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod
