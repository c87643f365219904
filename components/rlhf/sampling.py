"""Prompts for the RL stages and the replies a model samples for them.

Prompts come from the project's seeded task generators (a mixture config like SFT's, with its own seed so
they are not SFT's training prompts); their held-out split is what every RL evaluation answers. Replies
keep both forms: the exact generated tokens (what the reward model and PPO score) and the parsed
content (what the labeler reads and the JSONL files show)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from components.chat.protocol import ChatFormat
from components.chat.tools import ToolExecutor
from components.model.engine import Completion, Engine, SamplingParams
from components.model.gpt import GPT
from components.tasks.base import TaskExample
from components.tasks.mixture import Mixture, build_mixture


@dataclass(frozen=True)
class Reply:
    tokens: list[int]               # as generated, <|im_end|> included when the turn ended
    content: list[dict[str, str]]   # parsed assistant content (text and tool parts)
    ended: bool                     # the model ended its turn itself (not cut off by the token limit)
    sampled: list[bool]             # False for tokens a tool hook forced

    @property
    def judged(self) -> tuple[list[dict[str, str]], bool]:
        """What the labeler reads: (content, ended)."""
        return self.content, self.ended


def prompt_mixture(prompts: Mapping[str, Any]) -> Mixture:
    """Training and held-out prompts from `{size, n_eval, seed, tasks}` (tasks as in sft.mixture)."""
    tasks = {name: dict(params) for name, params in prompts["tasks"].items()}
    for name, params in tasks.items():
        if name in ("search", "text_tools") and float(params.get("weight", 0)) > 0:
            raise ValueError(f"RL prompts: task {name!r} needs a tool in the loop; use tasks the labeler can "
                             "judge from text (arithmetic, identity, out_of_scope, gsm8k)")
    return build_mixture(tasks, size=int(prompts["size"]), n_eval=int(prompts["n_eval"]),
                         seed=int(prompts["seed"]))


def fitting(examples: Sequence[TaskExample], fmt: ChatFormat, seq_len: int, min_reply_tokens: int
            ) -> tuple[list[TaskExample], int]:
    """The examples whose prompt leaves room for `min_reply_tokens`, and how many were skipped."""
    kept = [ex for ex in examples if len(fmt.render_prompt(ex.prompt)) + min_reply_tokens <= seq_len]
    return kept, len(examples) - len(kept)


def to_reply(fmt: ChatFormat, completion: Completion) -> Reply:
    ended = completion.finish_reason == "stop" and completion.tokens[-1] == fmt.im_end
    # A reply that ends at once parses to no parts; an empty text part keeps it a valid assistant message.
    content = fmt.parse_reply(completion.tokens) or [{"type": "text", "text": ""}]
    return Reply(list(completion.tokens), content, ended, list(completion.sampled))


def sample_replies(model: GPT, fmt: ChatFormat, examples: Sequence[TaskExample], params: SamplingParams,
                   num_samples: int = 1, batch_size: int = 32, tools: bool = False) -> list[list[Reply]]:
    """`num_samples` replies per example (prompt-major), in batches of `batch_size` prompts. The seed in
    `params` is offset per batch so batches differ but the whole call is reproducible. With `tools`, the
    calculator runs (sandboxed) where a reply calls it and its output is forced in, never sampled."""
    engine = Engine(model, fmt.pad)
    out: list[list[Reply]] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        batch_params = params if params.seed is None else replace(params, seed=params.seed + start)
        hook = ToolExecutor(fmt).hook if tools else None
        done = engine.generate([fmt.render_prompt(ex.prompt) for ex in batch], batch_params, num_samples,
                               hook=hook)
        for i in range(len(batch)):
            out.append([to_reply(fmt, c) for c in done[i * num_samples:(i + 1) * num_samples]])
    return out


def stop_tokens(fmt: ChatFormat) -> tuple[int, ...]:
    """A reply ends at <|im_end|>; <|bos|> would start a new document."""
    return fmt.im_end, fmt.bos


@dataclass
class SequenceBatch:
    """Prompts left-padded to one column, replies right-padded after it: every reply starts at column
    `prompt_len`, so per-token quantities of the replies are the slice [prompt_len - 1, -1) of logits."""

    input_ids: torch.Tensor        # (B, P + R)
    attention_mask: torch.Tensor   # (B, P + R) bool
    positions: torch.Tensor        # (B, P + R) rotary positions that skip the left padding
    response: torch.Tensor         # (B, R) reply tokens (pad after a row's end)
    response_mask: torch.Tensor    # (B, R) float: 1 on the reply's tokens
    action_mask: torch.Tensor      # (B, R) float: 1 on the tokens the policy sampled (not tool output)
    prompt_len: int

    def select(self, rows: torch.Tensor) -> SequenceBatch:
        return SequenceBatch(self.input_ids[rows], self.attention_mask[rows], self.positions[rows],
                             self.response[rows], self.response_mask[rows], self.action_mask[rows],
                             self.prompt_len)

    def response_logits(self, model: GPT, temperature: float = 1.0) -> torch.Tensor:
        """(B, R, vocab) logits that predicted each reply token, divided by the sampling temperature."""
        logits = model(self.input_ids, positions=self.positions, attention_mask=self.attention_mask)
        logits = logits[:, self.prompt_len - 1:-1].float()
        return logits / temperature if temperature not in (0.0, 1.0) else logits


def sequence_batch(prompts: Sequence[Sequence[int]], replies: Sequence[Reply], pad_id: int,
                   device: torch.device | str = "cpu") -> SequenceBatch:
    if len(prompts) != len(replies):
        raise ValueError(f"{len(prompts)} prompts for {len(replies)} replies")
    if any(not r.tokens for r in replies):
        raise ValueError("a reply has no tokens")
    p_len = max(len(p) for p in prompts)
    r_len = max(len(r.tokens) for r in replies)
    b = len(prompts)
    ids = torch.full((b, p_len + r_len), pad_id, dtype=torch.long)
    mask = torch.zeros(b, p_len + r_len, dtype=torch.bool)
    action = torch.zeros(b, r_len)
    for i, (prompt, reply) in enumerate(zip(prompts, replies, strict=True)):
        ids[i, p_len - len(prompt):p_len] = torch.tensor(list(prompt))
        ids[i, p_len:p_len + len(reply.tokens)] = torch.tensor(reply.tokens)
        mask[i, p_len - len(prompt):p_len + len(reply.tokens)] = True
        action[i, :len(reply.tokens)] = torch.tensor(reply.sampled, dtype=torch.float)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    response_mask = mask[:, p_len:].float()
    return SequenceBatch(ids.to(device), mask.to(device), positions.to(device), ids[:, p_len:].to(device),
                         response_mask.to(device), action.to(device), p_len)
