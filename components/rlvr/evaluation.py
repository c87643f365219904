"""Held-out scoring of a policy on problems with an answer key: greedy exact match, sampled pass@1 and
pass@k, and best-of-n by majority vote (self-consistency: the inference-time baseline that needs no
answer key; pass@k is best-of-n with an oracle picking the right sample, its upper bound)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from components.chat.protocol import ChatFormat, assistant_text
from components.model.engine import SamplingParams
from components.model.gpt import GPT
from components.rlhf.sampling import Reply, sample_replies, stop_tokens
from components.rlvr.grpo_math import pass_at_k
from components.rlvr.rewards import RewardWeights, answers_match, majority_answer, verify
from components.tasks.base import TaskExample


def used_tool(reply: Reply) -> bool:
    return any(part["type"] == "python" for part in reply.content)


def sampling_params(
    max_new_tokens: int,
    temperature: float,
    fmt: ChatFormat,
    seed: int,
    top_k: int | None = None,
    top_p: float | None = None,
) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop_token_ids=stop_tokens(fmt),
        seed=seed,
    )


def paired_gain(correct: Sequence[bool], baseline: Sequence[bool]) -> tuple[float, float]:
    """(gain, standard error) of one model's exact-match rate over a baseline's on the same problems. The
    error is the paired one (std of the per-problem differences / sqrt(n)): both models answered the same
    problems, so it is smaller than two independent rates' would be, and tells whether a gain is noise."""
    if len(correct) != len(baseline) or not correct:
        raise ValueError(
            f"paired_gain needs two equally long, non-empty lists, got {len(correct)} and {len(baseline)}"
        )
    diff = np.asarray(correct, dtype=float) - np.asarray(baseline, dtype=float)
    stderr = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return float(diff.mean()), stderr


def evaluate_problems(
    model: GPT,
    fmt: ChatFormat,
    problems: Sequence[TaskExample],
    *,
    samples: int,
    params: SamplingParams,
    tools: bool,
    weights: RewardWeights | None = None,
    greedy: bool = True,
    batch_size: int = 32,
) -> tuple[dict[str, float], list[dict]]:
    """Metrics (unsuffixed: `accuracy`, `pass_at_1`, `pass_at_<k>`, `best_of_<k>_majority`, ...) and one
    record per problem. `accuracy` is greedy exact match, the number the learning check compares."""
    weights = weights or RewardWeights()
    metrics: dict[str, float] = {}
    records = [{"task": ex.task, "prompt": ex.prompt, "expected": ex.answer} for ex in problems]
    if greedy:
        greedy_params = replace(params, temperature=0.0)
        replies = [g[0] for g in sample_replies(model, fmt, problems, greedy_params, 1, batch_size, tools)]
        correct = [
            verify(assistant_text(r.content), r.ended, ex.answer, weights).accuracy > 0
            for ex, r in zip(problems, replies, strict=True)
        ]
        metrics |= {
            "accuracy": float(np.mean(correct)),
            "response_tokens_greedy": float(np.mean([len(r.tokens) for r in replies])),
        }
        for record, reply, ok in zip(records, replies, correct, strict=True):
            record["greedy"] = {"reply": reply.content, "ended": reply.ended, "correct": ok}
    if samples > 0:
        groups = sample_replies(model, fmt, problems, params, samples, max(1, batch_size // samples), tools)
        texts = [[assistant_text(r.content) for r in group] for group in groups]
        parts = [
            [verify(t, r.ended, ex.answer, weights, ex.question) for t, r in zip(ts, group, strict=True)]
            for ex, ts, group in zip(problems, texts, groups, strict=True)
        ]
        hits = np.array([[p.accuracy > 0 for p in row] for row in parts])
        votes = [majority_answer(ts) for ts in texts]
        majority = [answers_match(v, ex.answer) for v, ex in zip(votes, problems, strict=True)]
        flat = [r for group in groups for r in group]
        metrics |= {
            "pass_at_1": float(hits.mean()),
            f"pass_at_{samples}": float(np.mean([pass_at_k(samples, int(c), samples) for c in hits.sum(1)])),
            f"best_of_{samples}_majority": float(np.mean(majority)),
            "reward": float(np.mean([p.total for row in parts for p in row])),
            "format": float(np.mean([p.format for row in parts for p in row])),
            "response_tokens": float(np.mean([len(r.tokens) for r in flat])),
            "ended_rate": float(np.mean([r.ended for r in flat])),
            "tool_use_rate": float(np.mean([used_tool(r) for r in flat])),
        }
        for record, group, row, vote in zip(records, groups, hits, votes, strict=True):
            record["samples"] = [
                {"reply": r.content, "ended": r.ended, "correct": bool(ok)}
                for r, ok in zip(group, row, strict=True)
            ]
            record["majority"] = vote
    return metrics, records
