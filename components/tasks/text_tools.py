"""SFT conversations that count and spell with the calculator tool instead of "by eye".

A BPE model never sees letters: "strawberry" is one or two tokens, so "how many r's?" or "spell it
backwards" asks about something its input does not contain, and it guesses. The fix the seed proposes
is the same as for arithmetic: call a tool. Each conversation is a question about one word, a short
text, a calculator call (`count("strawberry", "r")`, `len("word")`, `"word"[::3]`, `"word"[::-1]`), the
tool's output, and a sentence ending with the `####` answer line.

The output part is produced by the calculator the engine calls at inference (`calculate`, which
`run_calculator` wraps), so the training text shows exactly what the model will see later."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from components.tasks.base import ANSWER_MARKER, TaskExample

NAME = "text_tools"
KINDS = ("count", "length", "every_nth", "reverse")
_TIME_LIMIT_S = 10.0

WORDS = (
    "apple", "banana", "orange", "cherry", "grape", "lemon", "melon", "peach", "pear", "plum",
    "table", "chair", "window", "door", "floor", "house", "garden", "kitchen", "bottle", "pencil",
    "paper", "letter", "school", "teacher", "student", "lesson", "number", "answer", "question",
    "river", "mountain", "forest", "ocean", "island", "valley", "desert", "meadow", "canyon", "glacier",
    "yellow", "purple", "silver", "golden", "green", "black", "white", "brown", "scarlet", "crimson",
    "happy", "little", "simple", "gentle", "quiet", "bright", "strong", "summer", "winter", "autumn",
    "spring", "morning", "evening", "tonight", "yesterday", "tomorrow", "weekend", "holiday", "birthday",
    "coffee", "butter", "cheese", "cookie", "dinner", "bread", "pepper", "tomato", "potato", "carrot",
    "rabbit", "turtle", "monkey", "giraffe", "elephant", "kitten", "puppy", "parrot", "dolphin", "penguin",
    "guitar", "piano", "violin", "trumpet", "drummer", "music", "rhythm", "planet", "rocket", "galaxy",
    "computer", "keyboard", "program", "function", "variable", "network", "battery", "camera", "printer",
    "engine", "bicycle", "airplane", "balloon", "ladder", "hammer", "pillow", "blanket", "mirror",
    "basket", "button", "pocket", "jacket", "zipper", "sweater", "coat", "umbrella", "rainbow", "thunder",
    "lightning", "weather", "cloud", "sunshine", "shadow", "candle", "lantern", "castle", "village",
    "market", "street", "bridge", "tunnel", "harbor", "museum", "library", "doctor", "nurse", "farmer",
    "baker", "painter", "writer", "sailor", "soldier", "friend", "family", "mother", "father", "sister",
    "brother", "balance", "freedom", "success", "science", "history", "language", "grammar", "spelling",
    "committee", "necessary", "occasion", "accommodate", "embarrass", "parallel", "bookkeeper",
    "ubiquitous", "strawberry", "mississippi", "abracadabra", "hippopotamus", "onomatopoeia",
    "encyclopedia", "bookkeeping", "assessment", "possession", "tennessee", "raspberry", "blueberry",
)

_COUNT_QUESTIONS = (
    "How many {l}'s are in {w}?",
    "How many times does the letter {l} appear in \"{w}\"?",
    "Count the letter '{l}' in \"{w}\".",
    "how many {l}s in {w}",
    "In the word {w}, how many {l}'s are there?",
)
_LENGTH_QUESTIONS = (
    "How many letters are in \"{w}\"?",
    "How long is the word {w}?",
    "Count the letters in {w}.",
    "how many characters does {w} have",
)
_NTH_QUESTIONS = (
    "What is every {nth} letter of \"{w}\", starting with the first?",
    "Take every {nth} letter of {w}, starting from the first letter. What do you get?",
    "Write every {nth} character of \"{w}\", beginning with the first one.",
)
_REVERSE_QUESTIONS = (
    "Spell \"{w}\" backwards.",
    "What is {w} reversed?",
    "Reverse the word {w}.",
    "write {w} backwards",
)
_OPENINGS = {
    "count": ("Let me count with the calculator. ", "I'll count them with the calculator. "),
    "length": ("Let me count with the calculator. ", "I'll check with the calculator. "),
    "every_nth": ("Let me use the calculator for that. ", "I'll slice the word with the calculator. "),
    "reverse": ("Let me use the calculator for that. ", "I'll reverse it with the calculator. "),
}


def generate(rng: random.Random, n: int, *, kinds: Sequence[str] = KINDS, max_step: int = 4,
             absent_letter_fraction: float = 0.1, **unknown: Any) -> list[TaskExample]:
    """`n` counting/spelling conversations solved with the calculator, deterministic given `rng`.

    `kinds`: which of KINDS to draw from (uniformly); `max_step`: the largest n in "every n-th letter"
    (>= 2); `absent_letter_fraction`: share of counting questions about a letter the word lacks (answer 0).
    """
    kinds = _check_params(n, kinds, max_step, absent_letter_fraction, unknown)
    from components.sandbox.calculator import calculate  # lazy: only this task needs the tool module

    examples = []
    for _ in range(n):
        kind = rng.choice(kinds)
        word = rng.choice(WORDS)
        if kind == "count":
            question, expression, reply = _count(rng, word, absent_letter_fraction)
        elif kind == "length":
            question = rng.choice(_LENGTH_QUESTIONS).format(w=word)
            expression = f'len("{word}")'
            reply = "\"{w}\" has {r} letters."
        elif kind == "every_nth":
            step = rng.randint(2, max_step)
            while len(word) < step + 2:
                word = rng.choice(WORDS)
            question = rng.choice(_NTH_QUESTIONS).format(w=word, nth=_ordinal(step))
            expression = f'"{word}"[::{step}]'
            reply = f"Every {_ordinal(step)} letter of \"{{w}}\", starting with the first, gives \"{{r}}\"."
        else:
            question = rng.choice(_REVERSE_QUESTIONS).format(w=word)
            expression = f'"{word}"[::-1]'
            reply = "\"{w}\" reversed is \"{r}\"."
        # `calculate` formats exactly as the engine's `run_calculator` does on success, but raises instead
        # of returning "error: ..." (a bug here must never become training text), and gets a generous
        # deadline: these expressions are our own, and a busy machine must not change the data.
        result = calculate(expression, time_limit_s=_TIME_LIMIT_S)
        if rng.random() < 0.2:  # people type sloppily; the word itself is already lower-case
            question = question[:1].lower() + question[1:]
        content = [
            {"type": "text", "text": rng.choice(_OPENINGS[kind])},
            {"type": "python", "text": expression},
            {"type": "output", "text": result},
            {"type": "text", "text": reply.format(w=word, r=result) + f"\n{ANSWER_MARKER} {result}"},
        ]
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": content}]
        examples.append(TaskExample(task=NAME, conversation={"messages": messages}, answer=result,
                                    meta={"tool": True, "kind": kind}))
    return examples


def _count(rng: random.Random, word: str, absent_letter_fraction: float) -> tuple[str, str, str]:
    present = sorted(set(word))
    absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in present]
    letter = rng.choice(absent) if rng.random() < absent_letter_fraction else rng.choice(present)
    question = rng.choice(_COUNT_QUESTIONS).format(l=letter, w=word)
    expression = f'count("{word}", "{letter}")'
    count = word.count(letter)
    if count == 1:
        reply = f"There is 1 '{letter}' in \"{{w}}\"."
    else:
        reply = f"There are {{r}} '{letter}'s in \"{{w}}\"."
    return question, expression, reply


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _check_params(n: int, kinds: Sequence[str], max_step: int, absent_letter_fraction: float,
                  unknown: dict[str, Any]) -> tuple[str, ...]:
    if unknown:
        raise ValueError(f"text_tools: unknown parameter(s) {sorted(unknown)}; known: kinds, max_step, "
                         f"absent_letter_fraction")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"text_tools: n must be a non-negative integer, got {n!r}")
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise ValueError(f"text_tools: kinds must be a list of task kinds from {KINDS}, got {kinds!r}")
    chosen = tuple(kinds)
    bad = [k for k in chosen if k not in KINDS]
    if not chosen or bad:
        raise ValueError(f"text_tools: kinds must be a non-empty list drawn from {KINDS}, got {list(chosen)}")
    if isinstance(max_step, bool) or not isinstance(max_step, int) or not 2 <= max_step <= 6:
        raise ValueError(f"text_tools: max_step must be an integer in [2, 6], got {max_step!r}")
    if isinstance(absent_letter_fraction, bool) or not isinstance(absent_letter_fraction, int | float) \
            or not 0.0 <= absent_letter_fraction <= 1.0:
        raise ValueError(f"text_tools: absent_letter_fraction must be a number in [0, 1], "
                         f"got {absent_letter_fraction!r}")
    return chosen
