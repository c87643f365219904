"""PPO math for RLHF as pure torch functions: masked statistics, log-probs, KL estimators and controllers,
per-token rewards, GAE, and the clipped policy / value losses.

Follows the usual definitions (Ziegler et al. 2019; TRL; OpenRLHF). Tensors are (B, T) over response
positions unless said otherwise; ``mask`` is float or bool (B, T) with 1 on real response tokens.
Masked-out positions never influence results: they are selected away with ``torch.where`` rather than
multiplied by 0, so even a nan/inf in padding cannot leak in.
"""

from __future__ import annotations

import torch
from torch import Tensor

KL_KINDS = ("k1", "k2", "k3")


# ----------------------------------------------------------------------------------------- masked stats


def _fmask(mask: Tensor, like: Tensor) -> Tensor:
    """The mask as weights in ``like``'s dtype (bool or float input)."""
    return mask.to(like.dtype)


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` weighted by ``mask``; masked-out entries are dropped, not multiplied (nan-safe)."""
    m = _fmask(mask, x)
    weighted = torch.where(m != 0, x * m, torch.zeros_like(x))
    return weighted.sum() if dim is None else weighted.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over masked entries; 0 (not nan) where the mask is empty, so an empty batch logs a clean 0."""
    total = masked_sum(x, mask, dim)
    count = masked_sum(torch.ones_like(x), mask, dim)
    return torch.where(count > 0, total / count.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(total))


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over all masked entries. With ``unbiased`` Bessel's correction is applied when there are
    at least two entries; with fewer it is undefined, so the (zero) biased value is returned, not nan."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = masked_sum(torch.ones_like(x), mask)
        var = torch.where(n > 1, var * n / (n - 1).clamp_min(torch.finfo(x.dtype).tiny), var)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise to unit variance (and zero mean if ``shift_mean``) over masked entries, as PPO does to
    advantages so the step size does not depend on the reward scale. Masked-out entries are 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


# ------------------------------------------------------------------------------------- logits → stats


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(token) per position, (B, T, V) × (B, T) → (B, T), in float32 because bf16 log-softmax is too
    coarse for the small policy/reference differences PPO works with."""
    logits = logits.float()
    picked = torch.gather(logits, -1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical over the vocabulary at each position, (B, T, V) → (B, T), in float32."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || ref) from tokens sampled from the policy (Schulman, "Approximating
    KL divergence"): k1 = log r is unbiased but can be negative; k2 = ½(log r)² is ≥ 0, low variance, biased;
    k3 = (1/r - 1) + log r is unbiased and ≥ 0. Here log r = logp - ref_logp."""
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        # expm1 keeps precision near log r = 0; the clamp removes rounding below 0.
        return (torch.expm1(-log_ratio) + log_ratio).clamp_min(0.0)
    raise ValueError(f"unknown KL estimator kind {kind!r}; choose one of {', '.join(KL_KINDS)}")


# -------------------------------------------------------------------------------------- KL controllers


class FixedKLController:
    """A constant KL penalty coefficient (``update`` does nothing)."""

    def __init__(self, coef: float) -> None:
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: kept so callers need not know which controller they hold."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. (2019) proportional controller steering the observed KL towards ``target``:
    err = clip(kl/target - 1, ±0.2); coef *= 1 + err·n_steps/horizon."""

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move the coefficient after ``n_steps`` samples (or batches) observed ``current_kl``."""
        err = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def kl_controller(adaptive: bool, coef: float, target: float | None, horizon: int
                  ) -> FixedKLController | AdaptiveKLController:
    """Build the KL controller a config asks for, refusing settings that would make it meaningless."""
    if coef < 0:
        raise ValueError(f"KL coefficient must be >= 0, got {coef}")
    if not adaptive:
        return FixedKLController(coef)
    if target is None or target <= 0:
        raise ValueError(f"adaptive KL control needs a target KL > 0, got {target}")
    if horizon <= 0:
        raise ValueError(f"adaptive KL control needs a horizon > 0, got {horizon}")
    return AdaptiveKLController(coef, target, horizon)


# ------------------------------------------------------------------------------------ rewards and GAE


def last_positions(mask: Tensor) -> Tensor:
    """Index of each row's last masked position, (B,) long; -1 for a row with an empty mask."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=-1).values


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token PPO rewards: a -kl_coef·kl penalty on every response token plus the reward model's scalar
    score on the row's last real token, where the turn ends. Detached: rewards are data, not a graph."""
    last = last_positions(mask)
    if bool((last < 0).any()):
        raise ValueError("token_rewards: a row has an empty response mask, so no token can take its score")
    m = mask.bool()
    kl = kl.detach()
    rewards = torch.where(m, -kl_coef * kl, torch.zeros_like(kl))
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.detach().to(rewards.dtype)
    return rewards


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
        ) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation, backwards over each row: δ_t = r_t + γ·V_{t+1} - V_t,
    A_t = δ_t + γλ·A_{t+1}. The value after a row's last real token is 0 (the episode ends). Masked-out
    positions are skipped — they get 0 advantage/return and carry nothing into real ones (a gap inside a
    row is stepped over). Returns (advantages, returns = advantages + values)."""
    rewards, values = rewards.detach(), values.detach()
    m = mask.bool()
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in range(values.shape[1] - 1, -1, -1):
        real = m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        next_adv = torch.where(real, adv_t, next_adv)
        next_value = torch.where(real, values[:, t], next_value)
        advantages[:, t] = torch.where(real, adv_t, torch.zeros_like(adv_t))
    returns = torch.where(m, advantages + values, torch.zeros_like(values))
    return advantages, returns


# -------------------------------------------------------------------------------------------- losses


def _stat(x: Tensor, mask: Tensor) -> float:
    """A detached masked mean as a Python float, for logging."""
    return float(masked_mean(x.detach().float(), mask).item())


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
                ) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate, token-level mean over masked tokens: max(-A·r, -A·clip(r, 1±ε)) with
    r = exp(logp - old_logp), so a token whose ratio already moved past the clip in the advantage's
    direction gives no gradient. Stats: clipfrac, approx_kl (½ mean (log r)²), ratio_mean."""
    advantages, old_logp = advantages.detach(), old_logp.detach()
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clipfrac": _stat((clipped > unclipped).float(), mask),
        "approx_kl": _stat(0.5 * log_ratio**2, mask),
        "ratio_mean": _stat(ratio, mask),
    }
    return loss, stats


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
               ) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss: ½ masked mean of max((V - R)², (V_clip - R)²) with V_clip = V_old + clip(V - V_old,
    ±c), which keeps the critic from moving far from the values the advantages were computed with.
    Stats: vf_clipfrac (fraction of tokens where the clipped term was larger)."""
    old_values, returns = old_values.detach(), returns.detach()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped = (values - returns) ** 2
    clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, {"vf_clipfrac": _stat((clipped > unclipped).float(), mask)}
