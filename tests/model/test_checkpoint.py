"""save_model/load_model: exact round trip, refusal of another architecture, plain safetensors on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.model.checkpoint import CONFIG, WEIGHTS, load_model, save_model
from components.model.config import GPTConfig
from components.model.gpt import GPT


def tiny(**overrides: object) -> GPTConfig:
    values: dict = {"vocab_size": 97, "n_layer": 2, "n_embd": 32, "n_head": 4, "seq_len": 64, "init_std": 0.1}
    return GPTConfig(**{**values, **overrides})


def trained_looking(cfg: GPTConfig) -> GPT:
    """A model whose norms are not all ones, so a norm weight lost on the way would show."""
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("tied", [False, True])
@torch.no_grad()
def test_round_trip(tmp_path: Path, tied: bool) -> None:
    model = trained_looking(tiny(tie_embeddings=tied, n_kv_head=2))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", expected=model.config).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(x), loaded(x))
    if tied:
        assert loaded.lm_head.weight is loaded.embed_tokens.weight  # still one tensor, trains as one


def test_file_is_plain_safetensors(tmp_path: Path) -> None:
    for tied in (False, True):
        model = trained_looking(tiny(tie_embeddings=tied))
        out = save_model(model, tmp_path / str(tied))
        state = load_file(out / WEIGHTS)  # safetensors: tensors only, nothing to unpickle
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        expected = set(model.state_dict()) - ({"lm_head.weight"} if tied else set())
        assert set(state) == expected
        assert GPTConfig.load(out / CONFIG) == model.config


@pytest.mark.parametrize(("change", "knob"), [
    ({"n_layer": 3}, "n_layer"),
    ({"n_kv_head": 2}, "n_kv_head"),
    ({"tie_embeddings": True}, "tie_embeddings"),
])
def test_other_architecture_refused(tmp_path: Path, change: dict, knob: str) -> None:
    cfg = tiny()
    save_model(trained_looking(cfg), tmp_path)
    with pytest.raises(ValueError, match=f"{knob}: checkpoint"):
        load_model(tmp_path, expected=dataclasses.replace(cfg, **change))
    load_model(tmp_path, expected=dataclasses.replace(cfg, init_std=0.5))  # init_std is not architecture


def test_missing_dir_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a saved model"):
        load_model(tmp_path / "nope")
    save_model(trained_looking(tiny()), tmp_path)
    (tmp_path / CONFIG).unlink()
    with pytest.raises(FileNotFoundError, match=CONFIG):
        load_model(tmp_path)
