"""The arithmetic word problems: deterministic, valid, arithmetically true, step by step, and the same
problem renderable with and without the calculator."""

from __future__ import annotations

import random
import re

import pytest

from components.chat.protocol import assistant_text, validate_conversation
from components.sandbox.calculator import calculate
from components.tasks import arithmetic
from components.tasks.arithmetic import (
    GOODS,
    NAMES,
    TEMPLATES,
    THINGS,
    TOOL_SYSTEM_PROMPT,
    Problem,
    generate,
    make_problem,
    render,
)
from components.tasks.base import ANSWER_MARKER, TaskExample, extract_answer


def _div(a: int, b: int) -> int:
    assert a % b == 0, f"{a} / {b} is not exact"
    return a // b


def _truth(problem: Problem) -> int:
    """The answer recomputed from the problem's givens, independently of its steps."""
    g, k = problem.numbers, len(problem.steps)
    solvers = {
        "shopping": {1: lambda: _div(g["total"], g["a"]),
                     2: lambda: _div(g["total"] - g["cost"], g["a"]),
                     3: lambda: _div(g["total"] - g["count"] * g["cost"], g["a"])},
        "give_and_buy": {1: lambda: g["have"] - g["give"],
                         2: lambda: g["have"] + g["packs"] * g["per"],
                         3: lambda: g["have"] - g["give"] + g["packs"] * g["per"]},
        "sharing": {1: lambda: _div(g["total"], g["friends"]),
                    2: lambda: _div(g["bags"] * g["per"], g["friends"]),
                    3: lambda: _div(g["bags"] * g["per"] - g["keep"], g["friends"])},
        "rates": {1: lambda: g["rate"] * g["days"],
                  2: lambda: g["goal"] - g["rate"] * g["days"],
                  3: lambda: g["rate"] * g["days"] + g["rate2"] * g["days2"]},
        "groups": {1: lambda: g["red"] + g["blue"],
                   2: lambda: g["boxes"] * g["per"] + g["loose"],
                   3: lambda: g["boxes"] * g["per"] + g["bags"] * g["per2"]},
        "comparison": {1: lambda: g["more"] - g["less"],
                       2: lambda: g["first"] * g["times"] - g["first"],
                       3: lambda: g["first"] * g["times"] - g["fewer"] - g["first"]},
        "earnings": {1: lambda: g["wage"] * g["hours"],
                     2: lambda: (g["hours"] + g["hours2"]) * g["wage"],
                     3: lambda: (g["hours"] + g["hours2"]) * g["wage"] - g["spent"]},
    }
    assert set(solvers) == set(TEMPLATES), "a new template needs an independent solver here"
    return solvers[problem.template][k]()


def _all_problems(max_number: int, per_cell: int = 15) -> list[Problem]:
    rng = random.Random(max_number)
    return [make_problem(rng, max_number, steps, template=name)
            for name in sorted(TEMPLATES) for steps in (1, 2, 3) for _ in range(per_cell)]


def _assistant(example: TaskExample) -> list[dict[str, str]] | str:
    return example.conversation["messages"][-1]["content"]


def _dump(examples: list[TaskExample]) -> list[tuple]:
    return [(e.task, e.conversation, e.answer, e.meta) for e in examples]


def test_deterministic_given_the_rng() -> None:
    assert _dump(generate(random.Random(3), 40)) == _dump(generate(random.Random(3), 40))
    assert _dump(generate(random.Random(3), 40)) != _dump(generate(random.Random(4), 40))


def test_conversations_are_valid_and_shaped_by_tool_use() -> None:
    examples = generate(random.Random(0), 200)
    assert len(examples) == 200
    for example in examples:
        validate_conversation(example.conversation)
        messages = example.conversation["messages"]
        assert example.task == "arithmetic"
        assert example.meta["steps"] in (1, 2, 3)
        if example.meta["tool"]:
            assert messages[0] == {"role": "system", "content": TOOL_SYSTEM_PROMPT}
            assert [m["role"] for m in messages] == ["system", "user", "assistant"]
            kinds = [p["type"] for p in messages[-1]["content"]]
            assert kinds.count("python") == kinds.count("output") == example.meta["steps"]
        else:
            assert [m["role"] for m in messages] == ["user", "assistant"]
            assert isinstance(messages[-1]["content"], str)


def test_extracted_answer_is_the_answer_and_the_arithmetic_truth() -> None:
    for example in generate(random.Random(1), 300, max_number=100):
        text = assistant_text(_assistant(example))
        assert text.endswith(f"\n{ANSWER_MARKER} {example.answer}")
        assert extract_answer(text) == example.answer
    for max_number in (10, 20, 1000):
        for problem in _all_problems(max_number):
            assert problem.answer == _truth(problem), problem


def test_every_tool_output_is_what_the_calculator_says() -> None:
    for problem in _all_problems(50, per_cell=5):
        content = render(problem, tool=True)["messages"][-1]["content"]
        calls = [(a["text"], b["text"]) for a, b in zip(content, content[1:], strict=False)
                 if a["type"] == "python"]
        assert [expr for expr, _ in calls] == [step.expression for step in problem.steps]
        for (expr, output), step in zip(calls, problem.steps, strict=True):
            assert output == calculate(expr) == str(step.result)
            assert [p["type"] for p in content].count("output") == len(problem.steps)


def test_steps_are_spread_over_tokens_one_operation_per_sentence() -> None:
    """Each sentence does one computation and writes its result after it; the answer comes last."""
    for problem in _all_problems(30, per_cell=3):
        text = render(problem, tool=False)["messages"][-1]["content"]
        body, final = text.rsplit("\n", 1)
        assert final == f"{ANSWER_MARKER} {problem.answer}"
        sentences = [s for s in re.split(r"(?<=\.) ", body) if s]
        assert sentences == [step.sentence for step in problem.steps]
        for sentence, step in zip(sentences, problem.steps, strict=True):
            assert sentence.index(step.shown) < sentence.index(f"= {step.result}")
            assert len(re.findall(r"[-+x/] \d", sentence)) == 1
        assert problem.steps[-1].result == problem.answer
        for i, step in enumerate(problem.steps[:-1]):  # every intermediate result is used later on
            assert any(step.result in (later.left, later.right) for later in problem.steps[i + 1:])


def test_tool_text_never_writes_a_result_the_calculator_gives() -> None:
    for problem in _all_problems(30, per_cell=3):
        content = render(problem, tool=True)["messages"][-1]["content"]
        text = "".join(p["text"] for p in content if p["type"] == "text")
        assert " = " not in text
        assert text.rsplit("\n", 1)[1] == f"{ANSWER_MARKER} {problem.answer}"


def test_one_problem_renders_both_ways_with_the_same_answer_and_question() -> None:
    problem = make_problem(random.Random(5), 20, 3, template="shopping")
    mental, tool = render(problem, tool=False), render(problem, tool=True)
    assert mental["messages"][-2] == tool["messages"][-2] == {"role": "user", "content": problem.question}
    assert extract_answer(mental["messages"][-1]["content"]) == str(problem.answer)
    assert extract_answer(assistant_text(tool["messages"][-1]["content"])) == str(problem.answer)


def test_emily_style_example_reads_like_the_seed() -> None:
    problem = make_problem(random.Random(0), 20, 3, template="shopping")
    text = render(problem, tool=False)["messages"][-1]["content"]
    g = problem.numbers
    assert f"buys {g['a']} " in problem.question and f"costs ${g['cost']}" in problem.question
    assert f"{g['count']} x {g['cost']} = {g['count'] * g['cost']} dollars." in text
    assert f"{g['total']} - {g['count'] * g['cost']} = " in text


def test_steps_params_set_the_number_of_operations() -> None:
    for k in (1, 2, 3):
        examples = generate(random.Random(k), 30, min_steps=k, max_steps=k, tool_fraction=1.0)
        for example in examples:
            assert example.meta["steps"] == k
            assert [p["type"] for p in _assistant(example)].count("python") == k
    seen = {e.meta["steps"] for e in generate(random.Random(0), 100)}
    assert seen == {1, 2, 3}


def test_max_number_bounds_every_number() -> None:
    for max_number in (10, 20):
        for problem in _all_problems(max_number, per_cell=10):
            in_question = [int(x) for x in re.findall(r"\d+", problem.question)]
            in_steps = [v for s in problem.steps for v in (s.left, s.right, s.result)]
            assert all(0 <= v <= max_number for v in in_question + in_steps), problem
            assert set(problem.numbers.values()) <= set(in_question) | {1}  # "one" orange is a word
    big = [max(s.result for s in p.steps) for p in _all_problems(1000, per_cell=5)]
    assert max(big) > 100 and all(v <= 1000 for v in big)


def test_tool_fraction_is_an_exact_share() -> None:
    assert sum(e.meta["tool"] for e in generate(random.Random(0), 10, tool_fraction=0.5)) == 5
    assert not any(e.meta["tool"] for e in generate(random.Random(0), 10, tool_fraction=0.0))
    assert all(e.meta["tool"] for e in generate(random.Random(0), 10, tool_fraction=1))
    assert generate(random.Random(0), 0) == []


def test_conversations_are_short() -> None:
    for example in generate(random.Random(2), 300):
        messages = example.conversation["messages"]
        size = len(messages[-2]["content"]) + sum(len(p["text"]) for p in _assistant(example)
                                                  if isinstance(p, dict)) \
            if example.meta["tool"] else len(messages[-2]["content"]) + len(messages[-1]["content"])
        assert size < 450, example.conversation


def test_variety() -> None:
    assert len(TEMPLATES) >= 6
    assert len(NAMES) >= 20 and len({n for n, _, _ in NAMES}) == len(NAMES)
    assert len(GOODS) + len(THINGS) >= 20
    examples = generate(random.Random(0), 300)
    assert {e.meta["template"] for e in examples} == set(TEMPLATES)
    assert len({e.conversation["messages"][-2]["content"] for e in examples}) > 250


@pytest.mark.parametrize("params", [
    {"max_number": 5}, {"max_number": 20.0}, {"max_number": True}, {"max_number": 10**7},
    {"min_steps": 0}, {"max_steps": 4}, {"min_steps": 3, "max_steps": 2}, {"min_steps": "1"},
    {"tool_fraction": -0.1}, {"tool_fraction": 1.5}, {"tool_fraction": "half"}, {"tool_fraction": None},
])
def test_bad_params_are_rejected(params: dict) -> None:
    name = next(iter(params))
    with pytest.raises(ValueError, match=name):
        generate(random.Random(0), 3, **params)


def test_bad_n_and_make_problem_args_are_rejected() -> None:
    with pytest.raises(ValueError, match="n must"):
        generate(random.Random(0), -1)
    with pytest.raises(ValueError, match="steps"):
        make_problem(random.Random(0), 20, 4)
    with pytest.raises(ValueError, match="template"):
        make_problem(random.Random(0), 20, 2, template="nope")
    assert arithmetic.MAX_STEPS == 3
