"""The model's shape: a few knobs, everything else derived, plus the counts the scaling stage needs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GPTConfig:
    """A Llama-family decoder: RoPE, RMSNorm, SwiGLU, no biases, grouped-query attention optional.

    `ffn_hidden` defaults to Llama's 8/3 * n_embd rounded up to `ffn_multiple_of`, so the SwiGLU MLP
    has about the parameters of a 4x GELU MLP."""

    vocab_size: int
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_kv_head: int | None = None  # None: n_head (multi-head); fewer: grouped-query attention
    ffn_hidden: int | None = None
    ffn_multiple_of: int = 64
    seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        problems = []
        if self.vocab_size < 2:
            problems.append(f"vocab_size={self.vocab_size} (needs the tokenizer's vocabulary)")
        if self.n_layer < 1 or self.n_embd < 1 or self.n_head < 1 or self.seq_len < 2:
            problems.append("n_layer, n_embd, n_head must be >= 1 and seq_len >= 2")
        elif self.n_embd % self.n_head:
            problems.append(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        elif self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for RoPE (change n_embd or n_head)")
        if self.n_kv_head is not None and self.n_kv_head < 1:
            problems.append(f"n_kv_head={self.n_kv_head} must be >= 1 (or null for multi-head attention)")
        elif self.n_head >= 1 and self.n_head % self.kv_heads:
            problems.append(f"n_head={self.n_head} is not a multiple of n_kv_head={self.kv_heads}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden_dim(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        hidden = int(8 * self.n_embd / 3)
        return -(-hidden // self.ffn_multiple_of) * self.ffn_multiple_of

    # --- counts -----------------------------------------------------------------------------------
    def embedding_params(self) -> int:
        return self.vocab_size * self.n_embd

    def num_params(self, embeddings: bool = True) -> int:
        """Parameters, with or without the token embedding (Kaplan's N excludes it; Chinchilla's
        includes it). The output head counts as non-embedding unless it is tied to the embedding."""
        d, kv = self.n_embd, self.kv_heads * self.head_dim
        attention = d * d * 2 + d * kv * 2  # q, o; k, v
        mlp = 3 * d * self.hidden_dim
        norms = 2 * d
        body = self.n_layer * (attention + mlp + norms) + d  # + final norm
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return body + head + (self.embedding_params() if embeddings else 0)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward): 6 per non-embedding weight plus attention's
        score and value products, 12 * n_layer * n_embd * context (PaLM appendix B; nanochat)."""
        t = seq_len or self.seq_len
        matmul_params = self.num_params(embeddings=False) - self.n_layer * 2 * self.n_embd - self.n_embd
        if self.tie_embeddings:
            matmul_params += self.embedding_params()  # the tied head still does its matmul
        return 6 * matmul_params + 12 * self.n_layer * self.n_embd * t

    # --- io ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> GPTConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
