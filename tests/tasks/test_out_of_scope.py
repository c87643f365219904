"""The out-of-scope generator: made-up subjects, every answer an honest "I don't know"."""

from __future__ import annotations

import random

import pytest

from components.chat.protocol import validate_conversation
from components.tasks import out_of_scope
from components.tasks.out_of_scope import IDK_PHRASE, says_idk


def _gen(seed: int, n: int = 300, **params: object) -> list:
    return out_of_scope.generate(random.Random(seed), n, **params)


def test_deterministic_and_seed_dependent() -> None:
    assert _gen(1) == _gen(1)
    assert _gen(1) != _gen(2)


def test_every_answer_says_i_dont_know() -> None:
    for example in _gen(0, 500):
        validate_conversation(example.conversation)
        reply = example.conversation["messages"][-1]["content"]
        assert IDK_PHRASE in reply
        assert says_idk(reply)
        assert example.answer is None
        assert example.meta["in_scope"] is False
        assert example.task == "out_of_scope"
        assert len(str(example.conversation)) < 500


def test_subjects_and_templates_vary() -> None:
    examples = _gen(7, 1000)
    questions = {e.conversation["messages"][0]["content"] for e in examples}
    assert len(questions) > 800
    assert {e.meta["subject"] for e in examples} == {"person", "place", "thing"}
    openings = {q.split()[0].lower() for q in questions}
    assert {"who", "what", "when", "tell"} <= openings


def test_person_fraction() -> None:
    assert all(e.meta["subject"] == "person" for e in _gen(1, 100, person_fraction=1.0))
    assert not any(e.meta["subject"] == "person" for e in _gen(1, 100, person_fraction=0.0))


@pytest.mark.parametrize("text, expected", [
    ("I don't know who that is.", True),
    ("i DON'T KNOW", True),
    ("Honestly, I do not know.", True),
    ("I don\u2019t know.", True),
    ("I know who that is.", False),
    ("Orson Kovacs was a painter.", False),
    ("", False),
])
def test_says_idk(text: str, expected: bool) -> None:
    assert says_idk(text) is expected


@pytest.mark.parametrize("params", [{"person_fraction": 2}, {"person_fraction": "x"}, {"names": []}])
def test_bad_params_raise_value_error(params: dict) -> None:
    with pytest.raises(ValueError, match="out_of_scope"):
        _gen(0, 1, **params)
