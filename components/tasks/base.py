"""What every task generator returns: a training conversation plus what an evaluation needs to score
a fresh reply to the same prompt."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from components.chat.protocol import Conversation, Message

# Every task that has a checkable answer ends the assistant's text with this marker line (GSM8K's
# convention), so one extractor serves generated problems, GSM8K, and the RL stages later.
ANSWER_MARKER = "####"
_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class TaskExample:
    task: str                      # the generator's name, e.g. "arithmetic"
    conversation: Conversation     # the full conversation, ending with the ideal assistant turn
    answer: str | None = None      # the expected final answer (after ####), when the task has one
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"tool": True, "in_scope": False}

    @property
    def prompt(self) -> list[Message]:
        """The messages before the final assistant turn: what an evaluation sends the model."""
        return self.conversation["messages"][:-1]

    @property
    def question(self) -> str:
        """The text of the last prompt message: the question a reply answers (and draws its numbers from)."""
        return self.prompt[-1]["content"]


def extract_answer(text: str) -> str | None:
    """The final answer after the last `####` marker, normalised (commas, $ and a trailing . dropped)."""
    found = _ANSWER.findall(text)
    if not found:
        return None
    return found[-1].replace(",", "").replace("$", "").rstrip(".").strip()


def rng_for(seed: int, task: str) -> random.Random:
    """One independent, reproducible random stream per (seed, task)."""
    return random.Random(f"{seed}:{task}")
