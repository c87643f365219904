"""The SFT mixture: proportions, determinism, a truly held-out eval set, config errors, files.

Only this engineer's tasks (identity, out_of_scope, text_tools) are used, so the tests do not depend on
the other generators."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from components.chat.protocol import validate_conversation
from components.tasks import mixture as mixture_module
from components.tasks.jsonl import load_conversations
from components.tasks.mixture import GENERATORS, build_mixture, read_examples, write_mixture

TASKS = {"identity": {"weight": 1.0}, "out_of_scope": {"weight": 1.0},
         "text_tools": {"weight": 2.0, "kinds": ["count", "reverse"]}}


def _prompt(example) -> str:
    return json.dumps(example.prompt, sort_keys=True)


def test_proportions_and_stats() -> None:
    result = build_mixture(TASKS, size=400, n_eval=20, seed=0)
    counts = Counter(e.task for e in result.train)
    assert counts == {"identity": 100, "out_of_scope": 100, "text_tools": 200}
    assert result.stats["train/identity"] == 100 and result.stats["train/text_tools"] == 200
    assert result.stats["train/total"] == 400
    assert Counter(e.task for e in result.eval) == {"identity": 20, "out_of_scope": 20, "text_tools": 20}
    assert result.stats["eval/total"] == 60 and result.stats["eval_missing/identity"] == 0
    assert {e.meta["kind"] for e in result.train if e.task == "text_tools"} == {"count", "reverse"}
    # shuffled: the tasks are interleaved, not in blocks
    assert len({e.task for e in result.train[:20]}) > 1
    for example in result.train + result.eval:
        validate_conversation(example.conversation)


def test_deterministic_and_seed_dependent() -> None:
    a = build_mixture(TASKS, size=200, n_eval=10, seed=3)
    b = build_mixture(TASKS, size=200, n_eval=10, seed=3)
    c = build_mixture(TASKS, size=200, n_eval=10, seed=4)
    assert a == b
    assert a.train != c.train


def test_eval_is_held_out() -> None:
    # identity has a small prompt space, so many eval candidates collide with train and get replaced
    result = build_mixture({"identity": {"weight": 1, "system_fraction": 0.0}}, size=600, n_eval=30, seed=1)
    train_prompts = {_prompt(e) for e in result.train}
    eval_prompts = [_prompt(e) for e in result.eval]
    assert not train_prompts & set(eval_prompts)
    assert len(set(eval_prompts)) == len(eval_prompts)
    assert result.stats["eval_overlap_dropped/identity"] > 0
    assert result.stats["eval/identity"] + result.stats["eval_missing/identity"] == 30


def test_held_out_shortfall_is_recorded() -> None:
    # one phrasing kind, no system messages: the prompt space is tiny and mostly used by train
    tasks = {"identity": {"weight": 1, "system_fraction": 0.0, "greeting_fraction": 0.0}}
    result = build_mixture(tasks, size=2000, n_eval=200, seed=0)
    assert 0 < result.stats["eval_missing/identity"] <= 200
    assert result.stats["eval/identity"] == len(result.eval) == 200 - result.stats["eval_missing/identity"]
    assert not {_prompt(e) for e in result.train} & {_prompt(e) for e in result.eval}


def test_zero_weight_tasks_are_skipped() -> None:
    result = build_mixture({"identity": {"weight": 1}, "search": {"weight": 0}}, size=10, n_eval=2, seed=0)
    assert {e.task for e in result.train + result.eval} == {"identity"}
    assert "train/search" not in result.stats


def test_accepts_any_mapping() -> None:
    from types import MappingProxyType

    tasks = MappingProxyType({"out_of_scope": MappingProxyType({"weight": 1, "person_fraction": 1.0})})
    result = build_mixture(tasks, size=5, n_eval=1, seed=0)
    assert len(result.train) == 5 and all(e.meta["subject"] == "person" for e in result.train)


@pytest.mark.parametrize("tasks, kwargs, match", [
    ({"wikipedia": {"weight": 1}}, {}, "unknown task.*identity"),
    ({"identity": {}}, {}, "weight"),
    ({"identity": {"weight": -1}}, {}, "weight"),
    ({"identity": {"weight": 0}}, {}, "weight 0"),
    ({}, {}, "non-empty"),
    ({"identity": {"weight": 1, "system_fraction": 7}}, {}, "identity.*system_fraction"),
    ({"identity": {"weight": 1, "colour": "red"}}, {}, "colour"),
    ({"identity": {"weight": 1}}, {"size": -5}, "size"),
    ({"identity": {"weight": 1}}, {"n_eval": 1.5}, "n_eval"),
])
def test_config_errors(tasks: dict, kwargs: dict, match: str) -> None:
    options = {"size": 10, "n_eval": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_mixture(tasks, **options)


def test_missing_resource_and_resource_passing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A generator with a required keyword-only resource: an error naming the task without it, and the
    resource passed only to generators that accept it."""
    module = tmp_path / "fake_resource_task.py"
    module.write_text(
        "from components.tasks import identity\n"
        "def generate(rng, n, *, search, **params):\n"
        "    assert search == 'tool'\n"
        "    return [e.__class__('fake', e.conversation, e.answer, {}) for e in identity.generate(rng, n)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(GENERATORS, "fake", "fake_resource_task")
    tasks = {"fake": {"weight": 1}, "identity": {"weight": 1}}
    with pytest.raises(ValueError, match="'fake' needs the resource 'search'.*SearchTool"):
        build_mixture(tasks, size=4, n_eval=1, seed=0)
    result = build_mixture(tasks, size=4, n_eval=1, seed=0, resources={"search": "tool"})
    assert Counter(e.task for e in result.train) == {"fake": 2, "identity": 2}


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    result = build_mixture(TASKS, size=40, n_eval=3, seed=0)
    paths = write_mixture(result, tmp_path / "sft")
    assert paths["train"].name == "train.jsonl" and paths["eval"].name == "eval.jsonl"
    assert read_examples(paths["train"]) == result.train
    assert read_examples(paths["eval"]) == result.eval
    assert json.loads(paths["stats"].read_text()) == result.stats
    first = json.loads(paths["train"].read_text().splitlines()[0])
    assert set(first) == {"task", "messages", "answer", "meta"}
    conversations, stats = load_conversations(paths["train"])  # also standard chat JSONL
    assert stats["kept"] == 40 and stats["read"] == 40


def test_read_examples_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task": "x", "messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_examples(path)
    with pytest.raises(FileNotFoundError):
        read_examples(tmp_path / "missing.jsonl")


def test_registry() -> None:
    assert {"identity", "out_of_scope", "text_tools", "arithmetic", "gsm8k", "search"} <= set(GENERATORS)
    assert mixture_module.EVAL_SEED_OFFSET == 1_000_003
