from __future__ import annotations

import math

from components.evaluation.chat_eval import EvalItem, Reply, eval_items, score
from components.tasks.arithmetic import TOOL_SYSTEM_PROMPT
from components.tasks.base import TaskExample


def example(task: str, user: str, answer: str | None, system: str | None = None) -> TaskExample:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": "ideal"}]
    return TaskExample(task, {"messages": messages}, answer)


def reply(item: EvalItem, text: str, ended: bool = True) -> Reply:
    return Reply(item, [{"type": "text", "text": text}], ended, 5)


def test_system_message_identity_counts_apart() -> None:
    told = TaskExample("identity", {"messages": [
        {"role": "system", "content": "You are Nova."}, {"role": "user", "content": "who are you?"},
        {"role": "assistant", "content": "I'm Nova."}]}, "Nova", {"system_identity": True})
    assert [i.kind for i in eval_items([told, example("identity", "who?", "x")])] == [
        "identity_system", "identity"]


def test_arithmetic_is_asked_with_and_without_the_calculator() -> None:
    items = eval_items([example("arithmetic", "2+2?", "4", system=TOOL_SYSTEM_PROMPT),
                        example("identity", "who are you?", "Nova")])
    kinds = [i.kind for i in items]
    assert kinds == ["arithmetic_tool", "arithmetic_no_tool", "identity"]
    assert items[0].prompt[0] == {"role": "system", "content": TOOL_SYSTEM_PROMPT}
    assert [m["role"] for m in items[1].prompt] == ["user"]


def test_scores_count_what_they_say() -> None:
    arith_tool, arith_plain, ident = eval_items([example("arithmetic", "2+2?", "4"),
                                                 example("identity", "who are you?", "Nova")])
    oos = EvalItem("out_of_scope", example("out_of_scope", "Who is Orson Kovacs?", None), [])
    replies = [
        reply(arith_tool, "2 + 2 = 4.\n#### 4"),
        reply(arith_plain, "2 + 2 = 5.\n#### 5", ended=False),
        reply(ident, "I am nova, a model."),
        reply(oos, "I'm sorry, I don't know who Orson Kovacs is."),
    ]
    metrics = score(replies)
    assert metrics["eval/turn_end_rate"] == 0.75
    assert metrics["eval/arithmetic_tool_accuracy"] == 1.0
    assert metrics["eval/arithmetic_no_tool_accuracy"] == 0.0
    assert metrics["eval/identity_accuracy"] == 1.0
    assert metrics["eval/idk_rate_out_of_scope"] == 1.0
    assert metrics["eval/idk_rate_in_scope"] == 0.0
    assert "eval/search_accuracy" not in metrics  # no prompts: left out, not a fake 0
    assert math.isclose(metrics["eval/reply_tokens"], 5.0)
