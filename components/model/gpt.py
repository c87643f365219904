"""A Llama-family GPT: token embedding, n pre-norm blocks (RoPE attention through SDPA, SwiGLU MLP),
final RMSNorm, output head. No biases.

Module and parameter names follow HF's LlamaForCausalLM (`embed_tokens`, `layers.i.self_attn.q_proj`,
`mlp.gate_proj`, `input_layernorm`, ...) so export is a rename-free copy. One forward serves training
(causal, positions 0..T-1) and generation (a KVCache, per-row positions and padding masks)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from components.model import ops
from components.model.config import GPTConfig
from components.model.kernels import Kernels


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, kernels: Kernels) -> None:
        super().__init__()
        self.eps, self.kernels = eps, kernels
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.rms_norm(x, self.weight, self.eps)


class KVCache:
    """Pre-allocated keys and values for every layer, plus which slots hold real (non-padding) tokens.

    All rows advance together (prompts are left-padded), so one write position serves the batch."""

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        shape = (cfg.n_layer, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.pos = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def repeat_rows(self, n: int) -> KVCache:
        """Each row n times (a prompt prefilled once, sampled n ways): row i becomes rows i*n..i*n+n-1."""
        out = object.__new__(KVCache)
        out.k = self.k.repeat_interleave(n, dim=1)
        out.v = self.v.repeat_interleave(n, dim=1)
        out.valid = self.valid.repeat_interleave(n, dim=0)
        out.pos = self.pos
        return out


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int, kernels: Kernels) -> None:
        super().__init__()
        self.layer, self.n_head, self.n_kv, self.head_dim = layer, cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.kernels = kernels
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = self.kernels.apply_rope(q, cos, sin), self.kernels.apply_rope(k, cos, sin)
        if cache is not None:
            end = cache.pos + t
            cache.k[self.layer, :, :, cache.pos:end] = k
            cache.v[self.layer, :, :, cache.pos:end] = v
            k = cache.k[self.layer, :, :, :end].to(q.dtype)  # cache is in param dtype; q may be autocast
            v = cache.v[self.layer, :, :, :end].to(q.dtype)
        gqa = self.n_kv != self.n_head
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, kernels: Kernels) -> None:
        super().__init__()
        self.kernels = kernels
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.kernels.swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int, kernels: Kernels) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps, kernels)
        self.self_attn = Attention(cfg, layer, kernels)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps, kernels)
        self.mlp = MLP(cfg, kernels)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, kernels: str = "auto") -> None:
        """kernels: auto (Triton on CUDA, PyTorch elsewhere), triton or torch (see model/kernels.py)."""
        super().__init__()
        self.config = cfg
        self.kernels = Kernels(kernels)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg, i, self.kernels) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps, self.kernels)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = ops.rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                p.normal_(0.0, std)

    def hidden_states(self, idx: torch.Tensor, *, positions: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None,
                      cache: KVCache | None = None) -> torch.Tensor:
        """The final normed hidden states (B, T, n_embd).

        positions: (B, T) rotary positions (default: cache.pos + 0..T-1). attention_mask: (B, T) bool,
        False for padding, which no token attends to. segment_ids: (B, T) ints for sequences packed into
        one row: a token attends only to earlier tokens of its own segment (pass positions that restart
        at 0 per segment). Without cache, mask or segments: plain causal attention."""
        b, t = idx.shape
        start = cache.pos if cache is not None else 0
        if positions is None and start + t > self.config.seq_len:
            raise ValueError(f"sequence of {start + t} tokens is longer than the model's context "
                             f"({self.config.seq_len}): shorten the input or train with a larger "
                             "model.seq_len")
        if positions is None:
            cos, sin = self.rope_cos[start:start + t], self.rope_sin[start:start + t]
        else:
            if int(positions.max()) >= self.config.seq_len:
                raise ValueError(f"position {int(positions.max())} is outside the model's context "
                                 f"({self.config.seq_len})")
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)
        if segment_ids is not None:
            if cache is not None or attention_mask is not None:
                raise ValueError("segment_ids are for packed training rows: pass neither cache nor "
                                 "attention_mask with them")
            mask = self._segment_mask(segment_ids)
        else:
            mask = self._attention_mask(b, t, attention_mask, cache, idx.device)
        x = self.embed_tokens(idx)
        for block in self.layers:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.pos += t
        return self.norm(x)

    @staticmethod
    def _attention_mask(b: int, t: int, attention_mask: torch.Tensor | None, cache: KVCache | None,
                        device: torch.device) -> torch.Tensor | None:
        """None for the plain causal case (SDPA's fast path); else a (B, 1, T, S) bool mask: causal, no
        padding keys, and always the token itself so a padding query row is never all -inf (NaN)."""
        if cache is None and attention_mask is None:
            return None
        start = cache.pos if cache is not None else 0
        valid = attention_mask
        if valid is None:
            valid = torch.ones(b, t, dtype=torch.bool, device=device)
        if cache is not None:
            if start + t > cache.max_len:
                raise ValueError(f"KV cache holds {cache.max_len} tokens; {start + t} requested")
            cache.valid[:, start:start + t] = valid
            valid = cache.valid[:, :start + t]
        query_slot = torch.arange(start, start + t, device=device)[:, None]
        key_slot = torch.arange(start + t, device=device)[None, :]
        mask = (key_slot <= query_slot)[None] & valid[:, None, :]
        mask |= (key_slot == query_slot)[None]
        return mask[:, None]

    @staticmethod
    def _segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T) block-diagonal causal mask: no attention across packed sequences."""
        t = segment_ids.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        return (same & causal)[:, None]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                positions: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                loss_reduction: str = "mean") -> torch.Tensor:
        """Logits (B, T, vocab), or with `targets` the cross-entropy (IGNORE_INDEX targets skipped)."""
        h = self.hidden_states(idx, positions=positions, attention_mask=attention_mask,
                               segment_ids=segment_ids, cache=cache)
        if targets is None:
            return self.lm_head(h)
        return self.kernels.linear_cross_entropy(h, self.lm_head.weight, targets, loss_reduction)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = next(self.parameters())
        return KVCache(self.config, batch_size, max_len or self.config.seq_len, p.device, p.dtype)
