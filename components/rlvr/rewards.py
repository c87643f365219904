"""Verifiable rewards for RL on checkable tasks (DeepSeek-R1 style: a rule-based accuracy reward plus a
format reward), and self-consistency voting over several samples.

Decisions a caller must know:

* The answer is read only from its marked place: the text after the LAST ``####`` marker, on that
  marker's line (the convention every task's ideal reply follows, see ``components.tasks.base``). An
  unmarked answer earns no accuracy, however right it is: R1's rule-based accuracy reward requires the
  answer in the specified place, and rewarding answers found anywhere teaches the policy to spray numbers.
* Answers compare numerically when both sides parse as a number (``parse_number`` reads the *leading*
  number, so "12.0", "12 apples" and "$12" all equal "12"); otherwise as normalised strings
  (case-folded, whitespace collapsed, surrounding markdown emphasis and a trailing '.' dropped).
* Format (in [0, 1]) is two halves: 0.5 for a usable answer in the marked place (one that parses as a
  number when the key is numeric, any non-empty one otherwise) and 0.5 for a turn that ended properly
  (end-of-turn token, not truncated). Truncation does not zero accuracy here: dropping truncated
  completions from the loss is the trainer's choice (see ``grpo_math.completion_mask``).
* Working (0 or 1, weight 0 by default): 1 when the reply writes at least one equation
  (``a op b = r``, see ``labeler.equations``) and every one is true and grounded: its operands are
  numbers of the problem or results of the reply's earlier equations. A rule-based check of each step,
  not only of the final answer, so groups whose answers are all wrong need not all score the same.
  All-or-nothing and grounded, so neither padding ("1 + 1 = 2") nor a true equation on numbers the
  problem does not have ("9 x 2 = 18") earns it: without grounding, GRPO learned exactly that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from components.rlhf.labeler import equations, numbers
from components.tasks.base import ANSWER_MARKER

# Junk a model puts before an answer: whitespace, markdown emphasis/code, quotes, brackets, "=" or ":",
# and LaTeX wrappers such as \boxed{ or \( .
_JUNK_PREFIX = re.compile(r"(?:[\s*_`'\"(\[{<=:]|\\boxed\{|\\\(|\\\[)*")
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?|\.\d+"  # "1,234" only with proper thousands groups
_NUMBER = re.compile(
    r"(?:[$€£¥]\s*)?(?P<sign>[+-]?)\s*(?:[$€£¥]\s*)?"
    rf"(?P<num>{_UNSIGNED})(?P<exp>[eE][+-]?\d+)?"
    rf"(?:\s*/\s*(?P<den>{_UNSIGNED}))?"
)
_MINUSES = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})
_EMPHASIS = "*_`"


def parse_number(text: str) -> float | None:
    """The leading number of an answer string, tolerant of the junk models write around it ("1,234",
    "$12.50", "3/4", "**42**", "50%", "12 apples"); None when it does not start with a finite number.
    Never raises: a reward function that throws on one odd sample would kill a whole rollout batch."""
    if not isinstance(text, str):
        return None
    s = text.translate(_MINUSES)
    start = _JUNK_PREFIX.match(s)
    found = _NUMBER.match(s, start.end() if start else 0)
    if found is None:
        return None
    try:
        value = float(found["sign"] + found["num"].replace(",", "") + (found["exp"] or ""))
        if found["den"] is not None:
            den = float(found["den"].replace(",", ""))
            if den == 0:
                return None
            value = value / den
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def final_answer(text: str) -> str | None:
    """The stripped text after the last ``####`` marker, up to the end of that line; None when there is no
    marker or nothing follows it (an empty answer is no answer)."""
    at = text.rfind(ANSWER_MARKER)
    if at < 0:
        return None
    answer = text[at + len(ANSWER_MARKER):].split("\n", 1)[0].strip()
    return answer or None


def _normalise(text: str) -> str:
    """Case-folded, whitespace-collapsed, emphasis-stripped, without a trailing '.'."""
    s = " ".join(text.casefold().split()).strip(_EMPHASIS).strip()
    return s.rstrip(".").strip()


def answers_match(predicted: str | None, expected: str, *, rel_tol: float = 1e-6,
                  abs_tol: float = 1e-9) -> bool:
    """Whether a predicted answer equals the key: numerically when both parse (so "12.0" == "12" and
    "1,200" == "1200"), else as normalised strings. None (no answer) never matches."""
    if predicted is None:
        return False
    p, e = parse_number(predicted), parse_number(expected)
    if p is not None and e is not None:
        return math.isclose(p, e, rel_tol=rel_tol, abs_tol=abs_tol)
    return _normalise(predicted) == _normalise(expected)


@dataclass(frozen=True)
class RewardWeights:
    """How much accuracy, format and working count in the total reward; the format term is kept small so
    the policy cannot farm it instead of solving the problem."""

    accuracy: float = 1.0
    format: float = 0.2
    working: float = 0.0

    def __post_init__(self) -> None:
        for name in ("accuracy", "format", "working"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"reward weight {name!r} must be a finite number >= 0, got {value!r}")
        if self.accuracy == 0 and self.format == 0 and self.working == 0:
            raise ValueError("reward weights accuracy, format and working are all 0: every reward would be 0")


DEFAULT_WEIGHTS = RewardWeights()


@dataclass(frozen=True)
class RewardParts:
    """One completion's reward, split so its parts can be logged separately."""

    accuracy: float  # 1.0 if the marked final answer matches the key, else 0.0
    format: float    # in [0, 1]: 0.5 usable marked answer + 0.5 properly ended turn
    total: float     # weights.accuracy * accuracy + weights.format * format + weights.working * working
    working: float = 0.0  # 1.0 if every equation written is true and grounded (and there is one), else 0.0


def grounded_working(text: str, problem: str) -> float:
    """1.0 when `text` writes equations and each is true and uses only numbers of `problem` or earlier
    results, else 0.0."""
    available = numbers(problem)
    found = equations(text)
    for equation in found:
        if not equation.true or not set(equation.operands) <= available:
            return 0.0
        available.add(equation.result)
    return float(bool(found))


def verify(text: str, ended: bool, expected: str, weights: RewardWeights = DEFAULT_WEIGHTS,
           problem: str = "") -> RewardParts:
    """Score a completion against its answer key (see the module docstring for the rules); `problem`,
    the question's text, is what working may draw its numbers from."""
    answer = final_answer(text)
    accuracy = 1.0 if answers_match(answer, expected) else 0.0
    if answer is None:
        usable = False
    elif parse_number(expected) is not None:
        usable = parse_number(answer) is not None
    else:
        usable = True
    fmt = 0.5 * usable + 0.5 * bool(ended)
    working = grounded_working(text, problem)
    total = weights.accuracy * accuracy + weights.format * fmt + weights.working * working
    return RewardParts(accuracy, fmt, total, working)


def majority_answer(texts: Sequence[str]) -> str | None:
    """Self-consistency vote: the most common marked final answer among ``texts``, with answers equal under
    ``answers_match`` counted together ("12" and "12.0" are one vote each for the same answer). Returns the
    group's first-seen spelling; ties go to the answer seen first; None if no text has a marked answer."""
    groups: list[str] = []  # each group's first-seen spelling
    counts: list[int] = []
    for text in texts:
        answer = final_answer(text)
        if answer is None:
            continue
        for i, first in enumerate(groups):
            if answers_match(answer, first):
                counts[i] += 1
                break
        else:
            groups.append(answer)
            counts.append(1)
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (counts[i], -i))
    return groups[best]
