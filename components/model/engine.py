"""KV-cached, batched autoregressive sampling: the one decode loop every later stage uses.

Prompts of different lengths are left-padded and decoded together; a prompt can be prefilled once and
sampled `num_samples` ways (GRPO, best-of-n). A per-row hook may force tokens into a row between
steps (tool calls: the engine feeds the tool's output back without sampling it), and every completion
records which tokens were sampled and their log-probabilities (PPO, GRPO)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from components.model.gpt import GPT

# (row, tokens generated so far in that row) -> tokens to feed next instead of sampling, or None.
TokenHook = Callable[[int, list[int]], Sequence[int] | None]
# (row, token, sampled) for every token appended to a row, as it is appended: streaming output.
TokenCallback = Callable[[int, int, bool], None]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set with this much probability (nucleus)
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")


@dataclass
class Completion:
    prompt_index: int
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # log p(token) at temperature 1; nan if forced
    sampled: list[bool] = field(default_factory=list)  # False for tokens a hook forced (tool output)
    finish_reason: str = "length"  # "stop": a stop token was sampled; "length": ran out of tokens


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set every logit outside the top-k / nucleus to -inf (the most likely token always survives)."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this token already >= p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
                ) -> torch.Tensor:
    """One token per row from (B, vocab) logits."""
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / params.temperature, params.top_k, params.top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Engine:
    def __init__(self, model: GPT, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _check(self, prompts: Sequence[Sequence[int]]) -> int:
        cfg = self.model.config
        if not prompts:
            raise ValueError("no prompts to generate from")
        longest = max(len(p) for p in prompts)
        if min(len(p) for p in prompts) == 0:
            raise ValueError("empty prompt: start it with the tokenizer's <|bos|> token")
        if longest >= cfg.seq_len:
            raise ValueError(f"prompt of {longest} tokens leaves no room in the model's context of "
                             f"{cfg.seq_len} tokens: shorten the prompt (or use a model trained with a "
                             "larger model.seq_len)")
        bad = [t for p in prompts for t in p if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"token ids {sorted(set(bad))[:5]} are outside the vocabulary "
                             f"(size {cfg.vocab_size}): was the prompt encoded with another tokenizer?")
        return longest

    def _checked_ids(self, ids: Sequence[int]) -> list[int]:
        ids = [int(t) for t in ids]
        vocab = self.model.config.vocab_size
        if not all(0 <= t < vocab for t in ids):
            raise ValueError(f"a hook returned token ids outside the vocabulary (size {vocab}): {ids[:8]}")
        return ids

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, num_samples: int = 1,
                 hook: TokenHook | None = None, on_token: TokenCallback | None = None) -> list[Completion]:
        """Complete each prompt `num_samples` times; completions come prompt-major (p0s0, p0s1, p1s0...).

        Generation stops at a sampled stop token (kept in `tokens`), at max_new_tokens, or where the
        context ends."""
        longest = self._check(prompts)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        was_training = self.model.training
        self.model.eval()
        try:
            return self._generate(prompts, params, num_samples, hook, on_token, longest)
        finally:
            self.model.train(was_training)

    def _generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, num_samples: int,
                  hook: TokenHook | None, on_token: TokenCallback | None, longest: int
                  ) -> list[Completion]:
        device = self.device
        max_new = min(params.max_new_tokens, self.model.config.seq_len - longest)
        ids = torch.full((len(prompts), longest), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = torch.tensor(list(p), device=device)
            mask[i, longest - len(p):] = True
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = self.model.new_cache(len(prompts), longest + max_new)
        # Only the last prompt position's logits are needed: projecting every prompt position onto the
        # vocabulary would cost B x prompt x vocab floats for nothing (gigabytes at LLM scale).
        hidden = self.model.hidden_states(ids, positions=positions, attention_mask=mask, cache=cache)
        logits = self.model.lm_head(hidden[:, -1]).float()
        if num_samples > 1:
            cache = cache.repeat_rows(num_samples)
            logits = logits.repeat_interleave(num_samples, dim=0)
            positions = positions.repeat_interleave(num_samples, dim=0)
        rows = [Completion(i // num_samples, list(prompts[i // num_samples]))
                for i in range(len(prompts) * num_samples)]
        next_pos = positions[:, -1] + 1
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device).manual_seed(params.seed)
        stop = set(params.stop_token_ids)
        forced: list[deque[int]] = [deque() for _ in rows]
        done = [False] * len(rows)
        for step in range(max_new):
            sampled = sample_next(logits, params, generator).tolist()
            logprobs = logits.log_softmax(-1)
            feed = []
            for r, row in enumerate(rows):
                if done[r]:
                    feed.append(self.pad_id)
                    continue
                if forced[r]:
                    token, logprob, was_sampled = forced[r].popleft(), float("nan"), False
                else:
                    token, was_sampled = sampled[r], True
                    logprob = float(logprobs[r, token])
                row.tokens.append(token)
                row.logprobs.append(logprob)
                row.sampled.append(was_sampled)
                feed.append(token)
                if on_token is not None:
                    on_token(r, token, was_sampled)
                if was_sampled and token in stop:
                    row.finish_reason, done[r] = "stop", True
                elif hook is not None and (extra := hook(r, row.tokens)):
                    forced[r].extend(self._checked_ids(extra))
            if all(done) or step == max_new - 1:
                break
            alive = torch.tensor([not d for d in done], device=device)
            token_ids = torch.tensor(feed, device=device)[:, None]
            logits = self.model(token_ids, positions=next_pos[:, None], attention_mask=alive[:, None],
                                cache=cache)[:, -1].float()
            next_pos = next_pos + 1
        return rows
