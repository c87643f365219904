"""Chat JSONL reading and writing: bad lines are skipped and counted, never silently dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.tasks.jsonl import load_conversations, save_conversations

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! ¿Qué tal?"}]}
TOOL = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                     {"role": "assistant", "content": [{"type": "python", "text": "2+2"},
                                                       {"type": "output", "text": "4"},
                                                       {"type": "text", "text": "#### 4"}]}]}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "data.jsonl"
    assert save_conversations(path, [GOOD, TOOL]) == 2
    text = path.read_text(encoding="utf-8")
    assert "¿Qué tal?" in text and len(text.splitlines()) == 2
    conversations, stats = load_conversations(path)
    assert conversations == [GOOD, TOOL]
    assert stats == {"read": 2, "kept": 2, "skipped_invalid_json": 0, "skipped_invalid_conversation": 0}


def test_bad_lines_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(GOOD),
        "{not json",
        "",
        json.dumps({"messages": [{"role": "assistant", "content": "starts with assistant"}]}),
        json.dumps([1, 2, 3]),
        json.dumps(TOOL),
        json.dumps({"messages": [{"role": "user", "content": "no reply"}]}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe broken utf-8\n")
    with caplog.at_level("WARNING"):
        conversations, stats = load_conversations(path)
    assert conversations == [GOOD, TOOL]
    assert stats == {"read": 7, "kept": 2, "skipped_invalid_json": 2, "skipped_invalid_conversation": 3}
    skipped = stats["skipped_invalid_json"] + stats["skipped_invalid_conversation"]
    assert stats["read"] == stats["kept"] + skipped
    assert "skipped 5 of 7" in caplog.text and "line 2" in caplog.text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_conversations(tmp_path / "nope.jsonl")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert load_conversations(path) == ([], {"read": 0, "kept": 0, "skipped_invalid_json": 0,
                                             "skipped_invalid_conversation": 0})
