"""The identity generator: deterministic, valid, short, and always answering with the right name."""

from __future__ import annotations

import random

import pytest

from components.chat.protocol import assistant_text, validate_conversation
from components.tasks import identity


def _gen(seed: int, n: int = 300, **params: object) -> list:
    return identity.generate(random.Random(seed), n, **params)


def test_deterministic_and_seed_dependent() -> None:
    assert _gen(1) == _gen(1)
    assert _gen(1) != _gen(2)


def test_conversations_are_valid_short_and_name_the_expected_identity() -> None:
    examples = _gen(0, 500)
    assert len(examples) == 500
    for example in examples:
        validate_conversation(example.conversation)
        assert example.task == "identity"
        assert len(str(example.conversation)) < 500
        reply = assistant_text(example.conversation["messages"][-1]["content"])
        assert example.answer in reply
        messages = example.conversation["messages"]
        has_system = messages[0]["role"] == "system"
        assert example.meta["system_identity"] is has_system
        if has_system:
            assert example.answer in messages[0]["content"]
            assert example.answer != identity.DEFAULT_NAME
        else:
            assert example.answer == identity.DEFAULT_NAME
        if example.meta["question"] in ("maker", "both") and not has_system:
            assert identity.DEFAULT_MAKER in reply.lower()


def test_mix_of_system_identities_greetings_and_phrasings() -> None:
    examples = _gen(3, 1000)
    share = sum(e.meta["system_identity"] for e in examples) / len(examples)
    assert 0.22 < share < 0.38
    assert any(e.meta["multi_turn"] and len(e.conversation["messages"]) >= 4 for e in examples)
    questions = {e.conversation["messages"][-2]["content"] for e in examples}
    assert len(questions) >= 40  # templates x casing variants
    assert sum(len(v) for v in identity.QUESTIONS.values()) >= 15
    assert len({e.answer for e in examples}) > 5


def test_custom_identity_and_fractions() -> None:
    examples = _gen(4, 100, name="Zed", maker="Zed Labs", system_fraction=0.0, greeting_fraction=1.0)
    assert all(e.answer == "Zed" and not e.meta["system_identity"] for e in examples)
    assert all(len(e.conversation["messages"]) == 4 for e in examples)
    assert all(e.meta["system_identity"] for e in _gen(5, 50, system_fraction=1.0))


@pytest.mark.parametrize("params", [
    {"name": ""}, {"maker": "   "}, {"name": 3}, {"system_fraction": 1.5}, {"system_fraction": -0.1},
    {"greeting_fraction": "half"}, {"nmae": "typo"},
])
def test_bad_params_raise_value_error(params: dict) -> None:
    with pytest.raises(ValueError, match="identity"):
        _gen(0, 1, **params)


def test_bad_n() -> None:
    with pytest.raises(ValueError, match="n must be"):
        identity.generate(random.Random(0), -1)
    assert identity.generate(random.Random(0), 0) == []
