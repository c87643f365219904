"""The programmatic labeler that stands in for the human who ranks replies.

No human preference labels for our tasks can be downloaded, so the pipeline samples several replies per
prompt and ranks them with this labeler; the reward model learns its ranking and PPO optimises the
reward model. The labeler is also the judge of the reward-hacking check (a policy whose reward-model
score rises while its labeler score does not is exploiting the reward model), so what it prefers is
spelled out exactly here. A reply's score is

    score = correct * [answer right] + steps * working + ended * [turn ended] - repetition * repeated

with the weights of `LabelerWeights` (defaults 2, 1, 1, 2) and:

* answer right (1 or 0; a task without a checkable answer contributes 0 and reports `correct=None`):
  arithmetic and gsm8k: the answer after the last `####` equals `example.answer` (as the evaluation
  judges it); identity: the name appears in the reply, case-insensitive; out_of_scope: the reply says
  "I don't know" (`says_idk`); any other task with an answer: the `####` answer matches or the answer
  appears in the reply.
* working, in [0, 1], arithmetic and gsm8k only: (true equations - false equations) / needed, clipped,
  where needed is `meta["steps"]` or the number of equations in the example's own ideal reply (at
  least 1). An equation is written text `a op b [op c ...] = r` (integers or decimals, thousands commas
  and `$` allowed, op one of + - x * / and their Unicode forms, usual precedence, no parentheses) or a
  calculator call followed by its numeric output; a call whose output is an error counts as false.
* turn ended (1 or 0): the reply closed its turn with `<|im_end|>` instead of running into the limit.
* repeated, in [0, 1]: the fraction of the reply's word n-grams (lower-cased, n = 3) that repeat an
  earlier one: loops and padding cost up to `repetition` points.

Answers are read from the text parts of a reply only (tool outputs come from the sandbox, not the
model); repetition is measured over every part, so a loop of identical calculator calls counts too.
Known blind spots, which the reward-hacking check should watch for: any true equation counts toward
working, relevant to the problem or not (e.g. "1 + 1 = 2" padding), and the identity check accepts any
reply that contains the name."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction

from components.chat.protocol import Message, assistant_text, parts
from components.rlhf.preferences import Content, PreferencePair
from components.tasks.base import TaskExample, extract_answer
from components.tasks.out_of_scope import says_idk

WORKED_TASKS = ("arithmetic", "gsm8k")   # tasks whose replies show step-by-step working
TIE = 1e-9                               # score gaps this small are float noise, not a preference
_NUMBER = r"\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_OP = r"[-+x*/\u00d7\u00f7\u2212]"
_BEFORE, _AFTER = r"(?<![\w.,$])", r"(?![\d,]*\d)"   # a whole number: not part of a longer one or a word
_EQUATION = re.compile(rf"{_BEFORE}({_NUMBER}(?:\s*{_OP}\s*{_NUMBER})+)\s*=\s*({_NUMBER}){_AFTER}")
_STANDALONE = re.compile(rf"{_BEFORE}{_NUMBER}{_AFTER}")
_TOKEN = re.compile(rf"{_NUMBER}|{_OP}")
_OPS = {"\u00d7": "*", "x": "*", "\u00f7": "/", "\u2212": "-"}
_WORD = re.compile(r"\w+")

Reply = tuple[Content, bool]   # (assistant content, whether it ended its turn)


@dataclass(frozen=True)
class LabelerWeights:
    correct: float = 2.0       # the final answer is right (task-specific check)
    steps: float = 1.0         # arithmetic: fraction of the needed operations written as true equations
    ended: float = 1.0         # the reply ended its turn (<|im_end|>)
    repetition: float = 2.0    # penalty x fraction of repeated word n-grams

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"LabelerWeights.{f.name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Judgement:
    score: float
    correct: bool | None       # None when the task has no checkable answer
    steps: float               # in [0, 1]; 0 for tasks without working
    ended: bool
    repetition: float          # in [0, 1]


def repetition_rate(text: str, n: int = 3) -> float:
    """Fraction of the word n-grams (lower-cased) that repeat an earlier one; 0 for fewer than n words."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _number(text: str) -> Fraction:
    return Fraction(text.replace("$", "").replace(",", "").strip())


def _evaluate(tokens: list[str]) -> Fraction | None:
    """Value of `n op n op n ...` with * and / before + and -; None on division by zero."""
    terms: list[Fraction] = [_number(tokens[0])]
    signs: list[int] = [1]
    for op, raw in zip(tokens[1::2], tokens[2::2], strict=True):
        value, op = _number(raw), _OPS.get(op, op)
        if op in "+-":
            terms.append(value)
            signs.append(1 if op == "+" else -1)
        elif op == "*":
            terms[-1] *= value
        elif value == 0:
            return None
        else:
            terms[-1] /= value
    return sum((s * t for s, t in zip(signs, terms, strict=True)), Fraction(0))


@dataclass(frozen=True)
class Equation:
    operands: tuple[Fraction, ...]
    result: Fraction
    true: bool


def equations(text: str) -> list[Equation]:
    """The equations written in `text`, in order, e.g. "13 - 4 = 9" or "1,200 / 3 = 400"."""
    found = []
    for match in _EQUATION.finditer(text):
        tokens = _TOKEN.findall(match.group(1))
        value, result = _evaluate(tokens), _number(match.group(2))
        operands = tuple(_number(t) for t in tokens[::2])
        found.append(Equation(operands, result, value is not None and value == result))
    return found


def numbers(text: str) -> set[Fraction]:
    """Every number written in `text` (digits, thousands commas and `$` allowed)."""
    return {_number(m.group(0)) for m in _STANDALONE.finditer(text)}


def true_equations(text: str) -> tuple[int, int]:
    """(true, false) counts of the equations written in `text`."""
    found = equations(text)
    right = sum(e.true for e in found)
    return right, len(found) - right


def _tool_equations(content: Content) -> tuple[int, int]:
    """(true, false) calculator calls: a call answered by a number is true working, one answered by an
    error false; a call cut off before its output is neither."""
    right = wrong = 0
    items = parts(content)
    for call, output in zip(items, items[1:], strict=False):
        if call["type"] == "python" and output["type"] == "output":
            try:
                _number(output["text"])
                right += 1
            except (ValueError, ZeroDivisionError):
                wrong += 1
    return right, wrong


def working(content: Content) -> tuple[int, int]:
    """(true, false) equations in a reply: written ones in its text plus its calculator calls."""
    written, tools = true_equations(assistant_text(content)), _tool_equations(content)
    return written[0] + tools[0], written[1] + tools[1]


def _needed(example: TaskExample) -> int:
    steps = example.meta.get("steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        return steps
    messages: list[Message] = example.conversation["messages"]
    ideal = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "")
    return max(1, sum(working(ideal)))


def is_correct(example: TaskExample, text: str) -> bool | None:
    """Whether `text` gets the example right by its task's rule; None when there is nothing to check."""
    answer = example.answer
    if example.task == "out_of_scope":
        return says_idk(text)
    if answer is None:
        return None
    if example.task in WORKED_TASKS:
        return extract_answer(text) == answer
    if example.task == "identity":
        return answer.lower() in text.lower()
    return extract_answer(text) == answer or answer in text


def near_miss(pair: PreferencePair) -> bool:
    """A pair decided by correctness whose rejected reply looks right: it ended its turn, marked an answer,
    showed working and did not repeat itself, so only checking its numbers tells it from the chosen one.
    A reward model's accuracy on these is what lets PPO improve correctness, not just form."""
    text = assistant_text(pair.rejected)
    return (pair.source.endswith("/correctness") and pair.rejected_ended and extract_answer(text) is not None
            and sum(working(pair.rejected)) > 0 and repetition_rate(text) == 0)


class Labeler:
    """Scores replies to task examples (see the module docstring) and turns them into preference pairs."""

    def __init__(self, weights: LabelerWeights | None = None, ngram: int = 3) -> None:
        if isinstance(ngram, bool) or not isinstance(ngram, int) or ngram < 1:
            raise ValueError(f"ngram must be a positive integer, got {ngram!r}")
        self.weights = weights or LabelerWeights()
        self.ngram = ngram

    def judge(self, example: TaskExample, reply: Content, ended: bool) -> Judgement:
        """The score of one reply and what it is made of."""
        if not isinstance(reply, str) and not (isinstance(reply, Sequence) and all(
                isinstance(p, Mapping) and isinstance(p.get("type"), str) and isinstance(p.get("text"), str)
                for p in reply)):
            raise ValueError(f"a reply is a string or a list of {{type, text}} parts, got {reply!r:.60}")
        text = assistant_text(reply)
        correct = is_correct(example, text)
        steps = 0.0
        if example.task in WORKED_TASKS:
            right, wrong = working(reply)
            steps = min(1.0, max(0.0, (right - wrong) / _needed(example)))
        repetition = repetition_rate(" ".join(p["text"] for p in parts(reply)), self.ngram)
        w = self.weights
        score = (w.correct * bool(correct) + w.steps * steps + w.ended * bool(ended)
                 - w.repetition * repetition)
        return Judgement(score, correct, steps, bool(ended), repetition)

    def scores(self, example: TaskExample, replies: Sequence[Reply]) -> list[float]:
        return [self.judge(example, content, ended).score for content, ended in replies]

    def rank(self, example: TaskExample, replies: Sequence[Reply]) -> list[int]:
        """Reply indices best first; equal scores keep their given order."""
        scores = self.scores(example, replies)
        return sorted(range(len(replies)), key=lambda i: -scores[i])

    def pairs(self, example: TaskExample, replies: Sequence[Reply], min_gap: float = 0.0,
              source: str = "generated") -> list[PreferencePair]:
        """Every pair of replies whose score gap exceeds max(min_gap, 0), the higher one chosen and the
        gap as margin; ties never pair (a reward model cannot learn from a coin flip)."""
        scores = self.scores(example, replies)
        order = sorted(range(len(replies)), key=lambda i: -scores[i])
        floor = max(min_gap, TIE)
        result = []
        for a, better in enumerate(order):
            for worse in order[a + 1:]:
                gap = scores[better] - scores[worse]
                if gap > floor:
                    (chosen, chosen_ended), (rejected, rejected_ended) = replies[better], replies[worse]
                    result.append(PreferencePair(list(example.prompt), chosen, rejected, bool(chosen_ended),
                                                 bool(rejected_ended), gap, source))
        return result

    def prefer(self, example: TaskExample, a: Reply, b: Reply) -> int:
        """+1 when `a` scores higher, -1 when `b` does, 0 on a tie."""
        gap = self.judge(example, *a).score - self.judge(example, *b).score
        return 0 if abs(gap) <= TIE else (1 if gap > 0 else -1)
