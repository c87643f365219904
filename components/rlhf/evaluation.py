"""Policies compared on held-out prompts: the reward model's score, KL to the reference, and the labeler's
judgement of the same replies, so a reward that rises while the labeler's judgement falls (reward
hacking) shows in one table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from components.chat.protocol import ChatFormat, assistant_text
from components.model.engine import SamplingParams
from components.model.gpt import GPT
from components.rlhf.labeler import TIE, Labeler, repetition_rate
from components.rlhf.ppo_math import kl_estimate, logprobs_from_logits
from components.rlhf.reward_model import RewardModel
from components.rlhf.sampling import Reply, sample_replies, sequence_batch
from components.tasks.base import TaskExample


@torch.no_grad()
def score_replies(model: GPT, reference: GPT, reward_model: RewardModel, fmt: ChatFormat,
                  prompts: Sequence[list[int]], replies: Sequence[Reply], batch_size: int = 64
                  ) -> tuple[list[float], list[float]]:
    """(reward-model score, KL(model || reference) summed over the sampled tokens) per reply."""
    scores: list[float] = []
    kls: list[float] = []
    for start in range(0, len(replies), batch_size):
        seqs = sequence_batch(prompts[start:start + batch_size], replies[start:start + batch_size], fmt.pad,
                              next(model.parameters()).device)
        logp = logprobs_from_logits(seqs.response_logits(model), seqs.response)
        ref_logp = logprobs_from_logits(seqs.response_logits(reference), seqs.response)
        kls += (kl_estimate(logp, ref_logp, "k1") * seqs.action_mask).sum(-1).tolist()
        scores += reward_model(seqs.input_ids, seqs.attention_mask).float().tolist()
    return scores, kls


def evaluate_policies(models: Mapping[str, GPT], reference: GPT, reward_model: RewardModel, fmt: ChatFormat,
                      labeler: Labeler, examples: Sequence[TaskExample], params: SamplingParams,
                      samples_per_prompt: int, baseline: str = "sft") -> tuple[dict[str, float], list[dict]]:
    """Metrics `eval/<name>_<model>` for every model, and `eval/labeler_{win,tie,loss}_rate_<model>`:
    on how many prompts the labeler's mean judgement of the model's replies beats the baseline's; the
    labeler's score and those rates also per task (`eval/<task>/...`), since tasks the baseline already
    gets right can only tie or lose."""
    prompts = [fmt.render_prompt(ex.prompt) for ex in examples]
    k = samples_per_prompt
    metrics: dict[str, float] = {}
    records: list[dict] = []
    per_prompt: dict[str, np.ndarray] = {}
    for name, model in models.items():
        groups = sample_replies(model.eval(), fmt, examples, params, num_samples=k)
        replies = [reply for group in groups for reply in group]
        scores, kls = score_replies(model, reference, reward_model, fmt,
                                    [p for p in prompts for _ in range(k)], replies)
        judged = [labeler.judge(ex, *reply.judged) for ex, group in zip(examples, groups, strict=True)
                  for reply in group]
        correct = [float(j.correct) for j in judged if j.correct is not None]
        per_prompt[name] = np.array([j.score for j in judged]).reshape(len(examples), k).mean(1)
        metrics |= {f"eval/reward_{name}": float(np.mean(scores)), f"eval/kl_{name}": float(np.mean(kls)),
                    f"eval/correct_rate_{name}": float(np.mean(correct)) if correct else math.nan,
                    f"eval/ended_rate_{name}": float(np.mean([r.ended for r in replies])),
                    f"eval/repetition_{name}": float(np.mean([repetition_rate(assistant_text(r.content))
                                                             for r in replies])),
                    f"eval/response_tokens_{name}": float(np.mean([len(r.tokens) for r in replies]))}
        records += [{"model": name, "task": ex.task, "prompt": ex.prompt, "expected": ex.answer,
                     "reply": reply.content, "ended": reply.ended, "reward": score, "kl": kl,
                     "labeler": judgement.score}
                    for (ex, reply), score, kl, judgement in zip(
                        ((ex, reply) for ex, group in zip(examples, groups, strict=True) for reply in group),
                        scores, kls, judged, strict=True)]
    tasks = np.array([ex.task for ex in examples])
    subsets = {"eval": np.ones(len(examples), bool)} | {f"eval/{t}": tasks == t for t in sorted(set(tasks))}
    for name, prompt_scores in per_prompt.items():
        for prefix, rows in subsets.items():
            metrics[f"{prefix}/labeler_score_{name}"] = float(prompt_scores[rows].mean())
            if name == baseline or baseline not in per_prompt:
                continue
            diff = prompt_scores[rows] - per_prompt[baseline][rows]
            metrics |= {f"{prefix}/labeler_win_rate_{name}": float((diff > TIE).mean()),
                        f"{prefix}/labeler_tie_rate_{name}": float((np.abs(diff) <= TIE).mean()),
                        f"{prefix}/labeler_loss_rate_{name}": float((diff < -TIE).mean())}
    return metrics, records
