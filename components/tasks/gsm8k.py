"""GSM8K grade-school math as SFT conversations, with its calculator annotations turned into tool calls.

GSM8K's reference answers already build up step by step and mark every computation with a calculator
annotation: "Natalia sold 48/2 = <<48/2=24>>24 clips in May." The annotation becomes a calculator call
whose output our sandbox computes (text "Natalia sold 48/2 = ", python "48/2", output "24", text
" clips in May."), so the model learns to call the tool exactly where the dataset's authors did and to
read the injected result instead of writing it. The literal result that follows the annotation in the
text is dropped in tool mode (the output stands in for it). Without the tool the annotations are just
removed ("48/2 = 24 clips").

A row is skipped, and counted in the returned stats, when its JSON is bad, a field is missing, an
annotation is malformed, the calculator fails on an annotation or disagrees with the annotation's stated
result, or there is no `#### <answer>` line. The same rows are kept with and without the tool, so an
evaluation can ask the same problems both ways."""

from __future__ import annotations

import functools
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from components.chat.protocol import Conversation, validate_conversation
from components.sandbox.calculator import run_calculator
from components.tasks.arithmetic import TOOL_SYSTEM_PROMPT
from components.tasks.base import TaskExample, extract_answer

TASK = "gsm8k"
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
# the result as the text writes it after an annotation: "24", "22,500", "0.2", ".5", "-3"
_LITERAL = re.compile(r"-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
_ABS_TOL, _REL_TOL = 1e-6, 1e-9  # the relative part absorbs the calculator's 10-significant-digit floats
SKIP_REASONS = ("bad_json", "missing_fields", "bad_annotation", "calculator_error", "calculator_mismatch",
                "no_answer")


class _Skip(Exception):
    """The row cannot be used; the argument is the stats reason."""


@dataclass(frozen=True)
class _Row:
    """One usable row: the question and its answer split into text and (expression, output) calls."""

    index: int
    question: str
    pieces: tuple[str | tuple[str, str, str], ...]  # text, or (expression, output, literal in the text)
    answer: str


def _parse_answer(text: str) -> tuple[str | tuple[str, str, str], ...]:
    """The answer split at its annotations; raises _Skip when an annotation cannot be trusted."""
    pieces: list[str | tuple[str, str, str]] = []
    position = 0
    for match in _ANNOTATION.finditer(text):
        expression, sep, stated = match.group(1).rpartition("=")
        expression = expression.strip()
        if not sep or not expression:
            raise _Skip("bad_annotation")
        try:
            stated_value = float(stated)
        except ValueError:
            raise _Skip("bad_annotation") from None
        literal = _LITERAL.match(text, match.end())
        if literal is None or not _close(float(literal.group().replace(",", "")), stated_value):
            raise _Skip("bad_annotation")  # the text does not repeat the result right after the annotation
        output = run_calculator(expression)
        if output.startswith("error"):
            raise _Skip("calculator_error")
        if not _close(float(output), stated_value):
            raise _Skip("calculator_mismatch")
        pieces += [text[position:match.start()], (expression, output, literal.group())]
        position = literal.end()
    pieces.append(text[position:])
    if any(isinstance(p, str) and ("<<" in p or ">>" in p) for p in pieces):
        raise _Skip("bad_annotation")
    return tuple(p for p in pieces if p != "")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _read_rows(path: str | Path) -> tuple[list[_Row], dict[str, int]]:
    """The usable rows and the stats; parsed once per file version (the calculator calls dominate)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"GSM8K not found at {file}: expected the train split as JSONL lines "
                                f'{{"question", "answer"}} (e.g. ../shared/datasets/gsm8k/train.jsonl)')
    info = file.stat()
    rows, stats = _parse_file(str(file.resolve()), info.st_mtime_ns, info.st_size)
    return list(rows), dict(stats)


@functools.lru_cache(maxsize=4)
def _parse_file(file: str, mtime_ns: int, size: int) -> tuple[tuple[_Row, ...], tuple[tuple[str, int], ...]]:
    """Parse one file version (mtime and size are part of the cache key only)."""
    stats = {"read": 0, "kept": 0, **{f"skipped_{reason}": 0 for reason in SKIP_REASONS}}
    rows: list[_Row] = []
    with open(file, encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if not line.strip():
                continue  # blank lines are not rows
            stats["read"] += 1
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise _Skip("bad_json") from None
                if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                        or not isinstance(record.get("answer"), str) or not record["question"].strip():
                    raise _Skip("missing_fields")
                answer = extract_answer(record["answer"])
                if not answer:
                    raise _Skip("no_answer")
                rows.append(_Row(index, record["question"].strip(), _parse_answer(record["answer"].strip()),
                                 answer))
                stats["kept"] += 1
            except _Skip as skip:
                stats[f"skipped_{skip.args[0]}"] += 1
    return tuple(rows), tuple(stats.items())


def _render(row: _Row, tool: bool) -> Conversation:
    user = {"role": "user", "content": row.question}
    if not tool:
        text = "".join(p if isinstance(p, str) else p[2] for p in row.pieces)
        return validate_conversation({"messages": [user, {"role": "assistant", "content": text}]})
    content: list[dict[str, str]] = []
    for piece in row.pieces:
        if isinstance(piece, str):
            content.append({"type": "text", "text": piece})
        else:
            content += [{"type": "python", "text": piece[0]}, {"type": "output", "text": piece[1]}]
    return validate_conversation({"messages": [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, user,
                                               {"role": "assistant", "content": content}]})


def _example(row: _Row, tool: bool) -> TaskExample:
    return TaskExample(TASK, _render(row, tool), row.answer, {"tool": tool, "source": TASK, "row": row.index})


def load_gsm8k(path: str | Path, *, tool: bool = True) -> tuple[list[TaskExample], dict[str, int]]:
    """Every usable row of a GSM8K JSONL file as a conversation, and the stats {"read", "kept",
    "skipped_<reason>"...} (read == kept + all skipped). meta["row"] is the 0-based line number."""
    rows, stats = _read_rows(path)
    return [_example(row, tool) for row in rows], stats


def generate(rng: random.Random, n: int, *, path: str | None = None,
             tool_fraction: float = 1.0) -> list[TaskExample]:
    """A seeded sample of `n` distinct GSM8K rows; round(n * tool_fraction) of them, at random
    positions, use the calculator."""
    if not path:
        raise ValueError("gsm8k needs path= set to the GSM8K train.jsonl "
                         "(e.g. ../shared/datasets/gsm8k/train.jsonl)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(tool_fraction, bool) or not isinstance(tool_fraction, int | float) \
            or not 0.0 <= tool_fraction <= 1.0:
        raise ValueError(f"tool_fraction must be a number in [0, 1], got {tool_fraction!r}")
    rows, stats = _read_rows(path)
    if n > len(rows):
        raise ValueError(f"asked for {n} GSM8K rows but {path} has only {len(rows)} usable ({stats})")
    n_tool = round(n * tool_fraction)
    tools = [True] * n_tool + [False] * (n - n_tool)
    rng.shuffle(tools)
    return [_example(row, tool) for row, tool in zip(rng.sample(rows, n), tools, strict=True)]
