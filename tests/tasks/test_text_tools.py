"""The counting/spelling generator: every tool call, rerun through the calculator, gives its output."""

from __future__ import annotations

import random

import pytest

from components.chat.protocol import assistant_text, validate_conversation
from components.sandbox.calculator import calculate
from components.tasks import text_tools
from components.tasks.base import extract_answer


def _gen(seed: int, n: int = 300, **params: object) -> list:
    return text_tools.generate(random.Random(seed), n, **params)


def test_deterministic_and_seed_dependent() -> None:
    assert _gen(1) == _gen(1)
    assert _gen(1) != _gen(2)


def test_tool_calls_match_their_outputs_and_the_answer() -> None:
    for example in _gen(0, 600):
        validate_conversation(example.conversation)
        assert len(str(example.conversation)) < 500
        content = example.conversation["messages"][-1]["content"]
        assert [p["type"] for p in content] == ["text", "python", "output", "text"]
        assert calculate(content[1]["text"], time_limit_s=10.0) == content[2]["text"] == example.answer
        assert extract_answer(assistant_text(content)) == example.answer
        assert example.meta["tool"] is True


def test_known_examples() -> None:
    assert calculate('count("strawberry", "r")', time_limit_s=10.0) == "3"
    assert calculate('"ubiquitous"[::3]', time_limit_s=10.0) == "uqts"
    by_kind: dict[str, list] = {}
    for example in _gen(5, 400):
        by_kind.setdefault(example.meta["kind"], []).append(example)
    assert set(by_kind) == set(text_tools.KINDS)
    for example in by_kind["count"]:
        question = example.conversation["messages"][0]["content"]
        call = example.conversation["messages"][1]["content"][1]["text"]
        word, letter = call[len('count("'):-2].split('", "')
        assert word in question and letter in question
        assert example.answer == str(word.count(letter))
    for example in by_kind["reverse"]:
        call = example.conversation["messages"][1]["content"][1]["text"]
        assert example.answer == call.split('"')[1][::-1]


def test_word_list() -> None:
    assert len(set(text_tools.WORDS)) >= 150
    assert {"strawberry", "mississippi", "ubiquitous"} <= set(text_tools.WORDS)
    assert all(w.isalpha() and w.islower() for w in text_tools.WORDS)


def test_kinds_param() -> None:
    assert {e.meta["kind"] for e in _gen(2, 50, kinds=["reverse"])} == {"reverse"}
    assert {e.meta["kind"] for e in _gen(2, 50, kinds=("count",), absent_letter_fraction=1.0)} == {"count"}
    assert all(e.answer == "0" for e in _gen(2, 50, kinds=("count",), absent_letter_fraction=1.0))


@pytest.mark.parametrize("params", [
    {"kinds": []}, {"kinds": ["spell"]}, {"kinds": "count"}, {"max_step": 1}, {"max_step": 2.5},
    {"absent_letter_fraction": -1}, {"bogus": 1},
])
def test_bad_params_raise_value_error(params: dict) -> None:
    with pytest.raises(ValueError, match="text_tools"):
        _gen(0, 1, **params)
