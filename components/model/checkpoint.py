"""Model weights on disk: safetensors plus the GPTConfig as JSON, nothing executable.

`load_model` refuses a checkpoint whose architecture differs from what the caller expects, naming the
differing knobs, instead of failing deep inside `load_state_dict`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from components.model.config import GPTConfig
from components.model.gpt import GPT

WEIGHTS = "model.safetensors"
CONFIG = "gpt_config.json"


def save_model(model: GPT, out_dir: Path) -> Path:
    model = getattr(model, "_orig_mod", model)  # torch.compile'd: save the module's own names
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")  # safetensors refuses shared storage; the tie is in the config
    save_file(state, out_dir / WEIGHTS, metadata={"format": "pt", "architecture": "llmops-gpt"})
    model.config.save(out_dir / CONFIG)
    return out_dir


def config_mismatch(found: GPTConfig, expected: GPTConfig) -> list[str]:
    a, b = found.to_dict(), expected.to_dict()
    return [f"{k}: checkpoint {a[k]} vs expected {b[k]}" for k in a if a[k] != b[k] and k != "init_std"]


def load_model(model_dir: Path, expected: GPTConfig | None = None, device: str | torch.device = "cpu") -> GPT:
    """Load a saved model; with `expected`, refuse one of another architecture."""
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS).exists() or not (model_dir / CONFIG).exists():
        raise FileNotFoundError(f"{model_dir} is not a saved model (needs {WEIGHTS} and {CONFIG}); "
                                "run `llmops pretrain` or point at its model/ folder")
    cfg = GPTConfig.load(model_dir / CONFIG)
    if expected is not None and (diff := config_mismatch(cfg, expected)):
        raise ValueError(f"checkpoint {model_dir} is another architecture ({'; '.join(diff)}): use the "
                         "model config it was trained with, or train a new one")
    model = GPT(cfg)
    state = load_file(model_dir / WEIGHTS, device=str(device))
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {model_dir} does not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device)
