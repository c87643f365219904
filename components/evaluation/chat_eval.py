"""Score a chat model on held-out generated prompts: does it end its turns, know who it is, get the
arithmetic right with and without the calculator, and say "I don't know" only when it should?

Every prompt is answered greedily by the same engine that serves chat, tools executed in the loop, so
the numbers describe what a user would see. The same call scores the base model, for the comparison."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from components.chat.protocol import ChatFormat, Message, assistant_text
from components.chat.tools import ToolExecutor
from components.model.engine import Engine, SamplingParams
from components.model.gpt import GPT
from components.tasks.arithmetic import TOOL_SYSTEM_PROMPT
from components.tasks.base import TaskExample, extract_answer
from components.tasks.out_of_scope import says_idk

# Tasks whose questions the model can answer: saying "I don't know" to them is a false refusal.
IN_SCOPE_TASKS = ("identity", "arithmetic", "text_tools", "search", "gsm8k")


@dataclass(frozen=True)
class EvalItem:
    """One prompt to answer: `kind` names the metric it counts towards."""

    kind: str
    example: TaskExample
    prompt: list[Message]


@dataclass(frozen=True)
class Reply:
    item: EvalItem
    parts: list[dict[str, str]]
    ended_turn: bool
    n_tokens: int

    @property
    def text(self) -> str:
        return assistant_text(self.parts)

    def record(self) -> dict:
        return {"kind": self.item.kind, "task": self.item.example.task, "prompt": self.item.prompt,
                "expected": self.item.example.answer, "reply": self.parts, "ended_turn": self.ended_turn}


def _without_tool_prompt(prompt: list[Message]) -> list[Message]:
    return [m for m in prompt if not (m["role"] == "system" and m["content"] == TOOL_SYSTEM_PROMPT)]


def eval_items(examples: Sequence[TaskExample]) -> list[EvalItem]:
    """Arithmetic problems are asked twice, with the calculator offered and without. Identity questions
    whose answer is in a system message count apart from those about the trained-in identity."""
    items = []
    for ex in examples:
        if ex.task == "identity" and ex.meta.get("system_identity"):
            items.append(EvalItem("identity_system", ex, ex.prompt))
        elif ex.task == "arithmetic":
            plain = _without_tool_prompt(ex.prompt)
            offered = [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, *plain]
            items += [EvalItem("arithmetic_tool", ex, offered), EvalItem("arithmetic_no_tool", ex, plain)]
        else:
            items.append(EvalItem(ex.task, ex, ex.prompt))
    return items


def generate_replies(model: GPT, fmt: ChatFormat, items: Sequence[EvalItem], *, max_new_tokens: int,
                     batch_size: int = 32, search: Callable[[str], str] | None = None) -> list[Reply]:
    engine = Engine(model, fmt.pad)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0,
                            stop_token_ids=(fmt.im_end, fmt.bos))
    replies: list[Reply] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        prompts = [fmt.render_prompt(item.prompt) for item in batch]
        tools = ToolExecutor(fmt, search=search)
        for item, done in zip(batch, engine.generate(prompts, params, hook=tools.hook), strict=True):
            ended = done.finish_reason == "stop" and done.tokens[-1] == fmt.im_end
            replies.append(Reply(item, fmt.parse_reply(done.tokens), ended, len(done.tokens)))
    return replies


def _correct(reply: Reply) -> bool:
    expected = reply.item.example.answer
    if reply.item.example.task == "identity":
        return expected is not None and expected.lower() in reply.text.lower()
    if reply.item.example.task == "search":
        return expected is not None and expected in reply.text
    return expected is not None and extract_answer(reply.text) == expected


def score(replies: Sequence[Reply]) -> dict[str, float]:
    """Rates in [0, 1] under `eval/` names; a metric without prompts is left out, not reported as 0."""
    by_kind: dict[str, list[Reply]] = defaultdict(list)
    for reply in replies:
        by_kind[reply.item.kind].append(reply)
    metrics = {"eval/turn_end_rate": _mean(r.ended_turn for r in replies),
               "eval/reply_tokens": _mean(r.n_tokens for r in replies)}
    for kind, group in sorted(by_kind.items()):
        if kind != "out_of_scope":
            metrics[f"eval/{kind}_accuracy"] = _mean(_correct(r) for r in group)
    out_of_scope = by_kind.get("out_of_scope", [])
    in_scope = [r for r in replies if r.item.example.task in IN_SCOPE_TASKS]
    if out_of_scope:
        metrics["eval/idk_rate_out_of_scope"] = _mean(says_idk(r.text) for r in out_of_scope)
    if in_scope:
        metrics["eval/idk_rate_in_scope"] = _mean(says_idk(r.text) for r in in_scope)
    return metrics


def _mean(values) -> float:  # noqa: ANN001 (any iterable of bools or numbers)
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def evaluate_chat(model: GPT, fmt: ChatFormat, examples: Sequence[TaskExample], *, max_new_tokens: int = 192,
                  search: Callable[[str], str] | None = None) -> tuple[dict[str, float], list[dict]]:
    """(metrics, one record per prompt) for `model` on the held-out examples. Prompts that leave no
    room for a reply in the model's context are left out and counted (eval/skipped_too_long)."""
    items = eval_items(examples)
    room = model.config.seq_len - 8
    fitting = [item for item in items if len(fmt.render_prompt(item.prompt)) <= room]
    replies = generate_replies(model, fmt, fitting, max_new_tokens=max_new_tokens, search=search)
    metrics = score(replies) | {"eval/skipped_too_long": float(len(items) - len(fitting))}
    return metrics, [r.record() for r in replies]
