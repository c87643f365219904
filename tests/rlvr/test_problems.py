"""Problem sources for RLVR: generated arithmetic with and without the calculator offered, the
`{"prompt", "answer"}` loader with bad lines skipped and counted, and clear errors for unusable configs."""

from __future__ import annotations

import json

import pytest

from components.rlvr.problems import build_problems, load_problem_jsonl
from components.tasks.arithmetic import TOOL_SYSTEM_PROMPT


def config(**overrides):
    cfg = {
        "size": 20,
        "n_eval": 5,
        "seed": 3,
        "tools": False,
        "tasks": {
            "arithmetic": {"weight": 1.0, "max_number": 20, "min_steps": 1, "max_steps": 2},
            "gsm8k": {"weight": 0.0, "path": None},
        },
        "jsonl": {"train": [], "eval": []},
    }
    return cfg | overrides


def _offered(example) -> bool:
    return any(m["role"] == "system" and m["content"] == TOOL_SYSTEM_PROMPT for m in example.prompt)


def test_generated_problems_have_keys_and_disjoint_held_out_prompts():
    problems = build_problems(config())
    assert len(problems.train) == 20 and len(problems.eval) == 5
    assert all(ex.answer and float(ex.answer) >= 0 for ex in problems.train + problems.eval)
    assert not {json.dumps(ex.prompt) for ex in problems.train} & {
        json.dumps(ex.prompt) for ex in problems.eval
    }
    assert not any(_offered(ex) for ex in problems.train + problems.eval)
    assert build_problems(config()).train == problems.train  # seeded


def test_tools_switch_offers_the_calculator_on_every_problem():
    problems = build_problems(config(tools=True))
    assert all(_offered(ex) and ex.prompt[0]["role"] == "system" for ex in problems.train + problems.eval)
    plain = build_problems(config())
    assert [ex.answer for ex in problems.train] == [ex.answer for ex in plain.train]


def test_jsonl_problems_load_and_bad_lines_are_counted(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "What is 2+2?", "answer": 4},
        {"prompt": "Capital of France?", "answer": "Paris"},
        {"prompt": "", "answer": 1},
        {"prompt": "x"},
        {"prompt": "y", "answer": None},
        [1, 2],
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n\n")
    problems, stats = load_problem_jsonl(path)
    assert [p.answer for p in problems] == ["4", "Paris"]
    assert problems[0].prompt == [{"role": "user", "content": "What is 2+2?"}]
    assert stats == {
        "read": 7,
        "kept": 2,
        "skipped_bad_json": 1,
        "skipped_not_an_object": 1,
        "skipped_missing_fields": 1,
        "skipped_empty_prompt": 1,
        "skipped_empty_answer": 1,
    }
    mixed = build_problems(config(tasks={}, jsonl={"train": [str(path)], "eval": [str(path)]}))
    assert len(mixed.train) == len(mixed.eval) == 2
    assert mixed.stats["jsonl_train/p.jsonl/kept"] == 2


def test_unusable_configs_fail_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="no numeric answer key"):
        build_problems(config(tasks={"identity": {"weight": 1.0}}))
    with pytest.raises(ValueError, match="no held-out problems"):
        build_problems(config(n_eval=0))
    with pytest.raises(FileNotFoundError):
        load_problem_jsonl(tmp_path / "missing.jsonl")
