"""The compute-optimal run for a FLOP budget, from a fitted law: N, D, and a model config of our
architecture with about N parameters (counted as the fit counted them).

Shapes follow one rule, so plans at different budgets stay comparable: width = `aspect_ratio` x depth
(nanochat's 64; Kaplan et al. found loss flat over a wide range of aspect ratios), rounded to a multiple
of `head_dim`, heads of `head_dim`. Of those shapes the one whose N is closest to N_opt (in log) wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from components.model.config import GPTConfig
from components.scaling.analysis import chinchilla_from_dict
from components.scaling.laws import compute_optimal


def shape_for(n_target: float, vocab_size: int, seq_len: int, embeddings: bool, aspect_ratio: int = 64,
              head_dim: int = 64, max_layers: int = 128) -> GPTConfig:
    """Our GPT with width ≈ aspect_ratio x depth whose parameter count is closest to n_target."""
    best, best_gap = None, math.inf
    for n_layer in range(1, max_layers + 1):
        n_embd = max(head_dim, round(aspect_ratio * n_layer / head_dim) * head_dim)
        model = GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_embd // head_dim,
                          seq_len=seq_len)
        gap = abs(math.log(model.num_params(embeddings=embeddings) / n_target))
        if gap < best_gap:
            best, best_gap = model, gap
    assert best is not None
    return best


def plan_run(fit: dict, compute: float, vocab_size: int, seq_len: int, tokens_per_step: int,
             aspect_ratio: int = 64, head_dim: int = 64) -> dict:
    """N_opt, D_opt, tokens per parameter and predicted loss at `compute`, plus the model config nearest
    N_opt and the steps that spend the budget at `tokens_per_step` tokens per step."""
    if not (math.isfinite(compute) and compute > 0):
        raise ValueError(f"compute must be a positive number of FLOPs, got {compute}")
    law = chinchilla_from_dict(fit)
    k = float(fit.get("flops_per_param_token", 6.0))
    counting = fit.get("counting", {})
    embeddings = bool(counting.get("embeddings", True))
    opt = compute_optimal(law, compute, k)
    model = shape_for(opt["N_opt"], vocab_size, seq_len, embeddings, aspect_ratio, head_dim)
    n = model.num_params(embeddings=embeddings)
    tokens = compute / (k * n)  # the budget spent on the chosen shape
    return {
        "compute": compute,
        "N_opt": opt["N_opt"],
        "D_opt": opt["D_opt"],
        "tokens_per_param": opt["tokens_per_param"],
        "predicted_loss": float(law.predict(opt["N_opt"], opt["D_opt"])),
        "model": {"n_layer": model.n_layer, "n_embd": model.n_embd, "n_head": model.n_head,
                  "seq_len": seq_len, "vocab_size": vocab_size},
        "model_params": n,
        "model_params_with_embeddings": model.num_params(embeddings=True),
        "counting_embeddings": embeddings,
        "tokens": tokens,
        "steps": math.ceil(tokens / tokens_per_step),
        "tokens_per_step": tokens_per_step,
        "predicted_loss_of_model": float(law.predict(n, tokens)),
        "command": (f"llmops pretrain model.n_layer={model.n_layer} model.n_embd={model.n_embd} "
                    f"model.n_head={model.n_head} model.seq_len={seq_len} "
                    f"pretrain.max_steps={math.ceil(tokens / tokens_per_step)}"),
    }


def load_fit(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no fitted law at {path}: run `llmops scaling` (a sweep) or "
                                f"`llmops scaling scaling.points=PATH.csv` first, or set scaling.plan.fit")
    fit = json.loads(path.read_text())
    missing = [k for k in ("E", "A", "B", "alpha", "beta") if k not in fit]
    if missing:
        raise ValueError(f"{path} is not a scaling fit (lacks {missing})")
    return fit
