"""GSM8K loading: annotations become calculator calls with sandbox-computed outputs, unusable rows are
skipped and counted, and the sample generator is seeded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from components.chat.protocol import assistant_text, validate_conversation
from components.sandbox.calculator import calculate
from components.tasks.arithmetic import TOOL_SYSTEM_PROMPT
from components.tasks.base import TaskExample, extract_answer
from components.tasks.gsm8k import generate, load_gsm8k

GSM8K = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "gsm8k" / "train.jsonl"
FIRST_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                  "May. How many clips did Natalia sell altogether in April and May?")


@pytest.fixture(scope="module")
def real() -> tuple[list[TaskExample], list[TaskExample], dict[str, int]]:
    if not GSM8K.is_file():
        pytest.skip(f"GSM8K is not in ../shared/datasets/gsm8k (looked for {GSM8K})")
    tool, stats = load_gsm8k(GSM8K)
    mental, mental_stats = load_gsm8k(GSM8K, tool=False)
    assert mental_stats == stats
    return tool, mental, stats


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(question: str, answer: str) -> str:
    return json.dumps({"question": question, "answer": answer})


GOOD = _row("Tom has 3 bags of 4 apples. How many apples?", "He has 3*4 = <<3*4=12>>12 apples.\n#### 12")
SMALL = [
    GOOD,
    "{not json",
    _row("Bad annotation?", "It is 2+2 = <<2+2=5>>5.\n#### 5"),       # the calculator says 4
    json.dumps({"question": "No answer field"}),
    _row("No final line?", "It is 2+2 = <<2+2=4>>4."),
    _row("Division by zero?", "It is <<2/0=1>>1.\n#### 1"),
    _row("Result not repeated?", "It is <<2+3=5>> five.\n#### 5"),
    "",
    _row("Thousands?", "They pay 4500*5 = $<<4500*5=22500>>22,500 in all.\n#### 22,500"),
]


def test_first_row_converts_exactly(real) -> None:
    tool, mental, _ = real
    first = tool[0]
    assert first.answer == "72" and first.meta == {"tool": True, "source": "gsm8k", "row": 0}
    assert first.conversation == {"messages": [
        {"role": "system", "content": TOOL_SYSTEM_PROMPT},
        {"role": "user", "content": FIRST_QUESTION},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Natalia sold 48/2 = "},
            {"type": "python", "text": "48/2"},
            {"type": "output", "text": "24"},
            {"type": "text", "text": " clips in May.\nNatalia sold 48+24 = "},
            {"type": "python", "text": "48+24"},
            {"type": "output", "text": "72"},
            {"type": "text", "text": " clips altogether in April and May.\n#### 72"},
        ]},
    ]}
    assert mental[0].conversation == {"messages": [
        {"role": "user", "content": FIRST_QUESTION},
        {"role": "assistant",
         "content": "Natalia sold 48/2 = 24 clips in May.\n"
                    "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"},
    ]}
    assert mental[0].meta == {"tool": False, "source": "gsm8k", "row": 0}


def test_nearly_all_rows_are_kept_and_every_row_is_counted(real) -> None:
    tool, mental, stats = real
    assert stats["read"] == 7473
    assert stats["kept"] == len(tool) == len(mental)
    assert stats["kept"] >= 0.95 * stats["read"]
    assert stats["read"] == stats["kept"] + sum(v for k, v in stats.items() if k.startswith("skipped_"))


def test_real_rows_are_valid_with_answers_and_calculator_outputs(real) -> None:
    tool, mental, _ = real
    for with_tool, without in zip(tool, mental, strict=True):
        assert with_tool.answer == without.answer and with_tool.meta["row"] == without.meta["row"]
        assert with_tool.prompt[1:] == without.prompt
        content = with_tool.conversation["messages"][-1]["content"]
        assert extract_answer(assistant_text(content)) == with_tool.answer
        assert extract_answer(without.conversation["messages"][-1]["content"]) == without.answer
        text = assistant_text(content) + without.conversation["messages"][-1]["content"]
        assert "<<" not in text and ">>" not in text
    for example in tool[:1000]:
        validate_conversation(example.conversation)
        content = example.conversation["messages"][-1]["content"]
        for call, output in zip(content, content[1:], strict=False):
            if call["type"] == "python":
                assert output["type"] == "output" and output["text"] == calculate(call["text"])


def test_small_file_skips_and_counts(tmp_path: Path) -> None:
    examples, stats = load_gsm8k(_write(tmp_path, SMALL))
    assert stats == {"read": 8, "kept": 2, "skipped_bad_json": 1, "skipped_missing_fields": 1,
                     "skipped_bad_annotation": 1, "skipped_calculator_error": 1,
                     "skipped_calculator_mismatch": 1, "skipped_no_answer": 1}
    assert [e.meta["row"] for e in examples] == [0, 8]
    assert examples[0].conversation["messages"][-1]["content"] == [
        {"type": "text", "text": "He has 3*4 = "}, {"type": "python", "text": "3*4"},
        {"type": "output", "text": "12"}, {"type": "text", "text": " apples.\n#### 12"}]
    # the literal "22,500" the injected output replaces is dropped; the answer is normalised
    thousands = examples[1]
    assert thousands.answer == "22500"
    assert thousands.conversation["messages"][-1]["content"][2:] == [
        {"type": "output", "text": "22500"}, {"type": "text", "text": " in all.\n#### 22,500"}]
    mental, _ = load_gsm8k(tmp_path / "train.jsonl", tool=False)
    assert mental[1].conversation["messages"][-1]["content"] == \
        "They pay 4500*5 = $22,500 in all.\n#### 22,500"


def test_missing_file_says_where_it_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gsm8k"):
        load_gsm8k(tmp_path / "nowhere.jsonl")


def test_generate_is_a_seeded_sample_with_a_tool_share(tmp_path: Path) -> None:
    lines = [_row(f"What is {i} + {i}?", f"It is {i}+{i} = <<{i}+{i}={2 * i}>>{2 * i}.\n#### {2 * i}")
             for i in range(30)]
    path = str(_write(tmp_path, lines))
    first = generate(random.Random(1), 10, path=path, tool_fraction=0.3)
    again = generate(random.Random(1), 10, path=path, tool_fraction=0.3)
    assert [(e.conversation, e.answer, e.meta) for e in first] == \
        [(e.conversation, e.answer, e.meta) for e in again]
    assert sum(e.meta["tool"] for e in first) == 3
    assert len({e.meta["row"] for e in first}) == 10
    for example in first:
        assert example.task == "gsm8k" and example.meta["source"] == "gsm8k"
        assert example.answer == str(2 * example.meta["row"])
        assert (example.conversation["messages"][0]["role"] == "system") == example.meta["tool"]
    assert all(e.meta["tool"] for e in generate(random.Random(2), 5, path=path))  # tool_fraction=1.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"path": None}, "path"), ({"path": ""}, "path"),
    ({"tool_fraction": 2.0}, "tool_fraction"), ({"tool_fraction": "x"}, "tool_fraction"),
    ({"n": -1}, "n must"), ({"n": 99}, "only"),
])
def test_generate_rejects_bad_params(tmp_path: Path, kwargs: dict, match: str) -> None:
    params = {"n": 1, "path": str(_write(tmp_path, [GOOD])), **kwargs}
    n = params.pop("n")
    with pytest.raises(ValueError, match=match):
        generate(random.Random(0), n, **params)
