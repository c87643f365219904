"""GPTConfig's counts and the GPT forward: causality, loss masking, KV cache, left padding, GQA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.model.ops import IGNORE_INDEX

ATOL = 1e-5


def tiny(**overrides: object) -> GPTConfig:
    values: dict = {"vocab_size": 97, "n_layer": 2, "n_embd": 32, "n_head": 4, "seq_len": 64, "init_std": 0.1}
    return GPTConfig(**{**values, **overrides})


def make(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def tokens(*shape: int, vocab: int = 97, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


# --- config -----------------------------------------------------------------------------------------
CONFIGS = {
    "untied": tiny(),
    "tied": tiny(tie_embeddings=True),
    "gqa": tiny(n_head=8, n_kv_head=2),
    "mqa-tied-ffn": tiny(n_kv_head=1, tie_embeddings=True, ffn_hidden=48),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_num_params_matches_module(name: str) -> None:
    cfg = CONFIGS[name]
    model = GPT(cfg)
    total = sum(p.numel() for p in model.parameters())  # parameters() counts a tied weight once
    assert cfg.num_params() == total
    assert cfg.num_params(embeddings=False) == total - model.embed_tokens.weight.numel()
    assert cfg.embedding_params() == model.embed_tokens.weight.numel()


def test_gpt2_small_is_124m() -> None:
    cfg = GPTConfig(vocab_size=50304, n_layer=12, n_embd=768, n_head=12, seq_len=1024, tie_embeddings=True)
    assert 123e6 <= cfg.num_params() <= 125e6
    with torch.device("meta"):
        model = GPT(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seq_len", [None, 16])
def test_flops_per_token(name: str, seq_len: int | None) -> None:
    cfg = CONFIGS[name]
    model = GPT(cfg)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))  # tied head included
    t = seq_len or cfg.seq_len
    assert cfg.flops_per_token(seq_len) == 6 * matmul + 12 * cfg.n_layer * cfg.n_embd * t


@pytest.mark.parametrize(("overrides", "message"), [
    ({"vocab_size": 1}, "vocab_size"),
    ({"n_embd": 30}, "not divisible by n_head"),
    ({"n_embd": 36, "n_head": 4}, "even for RoPE"),
    ({"n_kv_head": 3}, "multiple of n_kv_head"),
    ({"n_layer": 0}, ">= 1"),
    ({"seq_len": 1}, "seq_len"),
])
def test_invalid_config_raises(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


@pytest.mark.parametrize("overrides", [{"n_head": 0}, {"n_kv_head": -2}, {"n_kv_head": 0}])
def test_invalid_head_counts_raise_value_error(overrides: dict) -> None:
    with pytest.raises(ValueError, match="n_head|n_kv_head"):
        tiny(**overrides)


def test_config_dict_round_trip(tmp_path) -> None:
    cfg = tiny(n_kv_head=2, tie_embeddings=True)
    cfg.save(tmp_path / "c.json")
    assert GPTConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_heads": 4})


# --- forward ----------------------------------------------------------------------------------------
@torch.no_grad()
def test_causal() -> None:
    model = make(tiny())
    x = tokens(2, 20)
    y = x.clone()
    y[:, 12] = (y[:, 12] + 1) % 97
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12], atol=ATOL, rtol=0)
    assert (a[:, 12:] - b[:, 12:]).abs().max() > 1e-3  # the change is seen from there on


def test_loss_ignores_ignore_index() -> None:
    model = make(tiny())
    x, targets = tokens(2, 16), tokens(2, 16, seed=2)
    targets[0, :5] = IGNORE_INDEX
    targets[1, 10:] = IGNORE_INDEX
    logits = model(x)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(model(x, targets), expected)
    summed = model(x, targets, loss_reduction="sum")
    torch.testing.assert_close(summed, expected * keep.sum(), rtol=1e-5, atol=1e-4)
    loss = model(x, targets)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["untied", "gqa"])
@torch.no_grad()
def test_kv_cache_matches_full_forward(name: str) -> None:
    model = make(CONFIGS[name])
    x = tokens(3, 30)
    full = model(x)
    cache = model.new_cache(3)
    steps = [model(x[:, :10], cache=cache)]
    for i in range(10, 30):
        steps.append(model(x[:, i:i + 1], cache=cache))
    assert cache.pos == 30
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("use_cache", [False, True])
@torch.no_grad()
def test_left_padding_matches_unpadded_rows(use_cache: bool) -> None:
    model = make(tiny())
    prompts = [tokens(1, n, seed=n)[0] for n in (7, 19, 12)]
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), 3, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):], mask[i, longest - len(p):] = p, True
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = model.new_cache(len(prompts)) if use_cache else None
    padded = model(ids, positions=positions, attention_mask=mask, cache=cache)
    assert torch.isfinite(padded).all()  # padding query rows attend to themselves, never to nothing
    for i, p in enumerate(prompts):
        torch.testing.assert_close(padded[i, longest - len(p):], model(p[None])[0], atol=ATOL, rtol=0)


@torch.no_grad()
def test_gqa_equals_mha_with_repeated_kv_heads() -> None:
    gqa_cfg = tiny(n_head=8, n_kv_head=2)
    gqa, mha = make(gqa_cfg), make(tiny(n_head=8))
    group, head_dim = 8 // 2, gqa_cfg.head_dim
    state = dict(gqa.state_dict())
    for name, w in gqa.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):  # query head h reads kv head h // group
            state[name] = w.view(2, head_dim, -1).repeat_interleave(group, dim=0).reshape(8 * head_dim, -1)
    mha.load_state_dict(state)
    x = tokens(2, 25)
    torch.testing.assert_close(gqa(x), mha(x), atol=ATOL, rtol=0)


@torch.no_grad()
def test_too_long_refused() -> None:
    model = make(tiny(seq_len=16))
    with pytest.raises(ValueError, match="longer than the model's context.*seq_len"):
        model(tokens(1, 17))
    with pytest.raises(ValueError, match="outside the model's context"):
        model(tokens(1, 4), positions=torch.tensor([[0, 1, 2, 16]]))
    cache = model.new_cache(1)
    model(tokens(1, 10), cache=cache)
    with pytest.raises(ValueError, match="context"):
        model(tokens(1, 7), cache=cache)
    model(tokens(1, 16))  # exactly the context is fine
