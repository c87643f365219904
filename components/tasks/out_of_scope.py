"""SFT conversations that teach the model to say "I don't know" (hallucination mitigation #1).

A language model asked about something it never saw still produces a fluent, confident answer: it
has only ever been trained to continue text. Showing it questions about people and things that exist
in no data at all, each answered with an honest "I don't know", gives it a way out. The names are made
up here (first names joined to syllable-built surnames, syllable-built places and inventions), so the
honest answer really is "I don't know"; no real person is ever the subject.

Every answer contains the exact phrase `IDK_PHRASE`, and `says_idk` recognises it (and its common
variants) in a generated reply, so an evaluation can score refusals. `answer` is None: there is nothing
to extract."""

from __future__ import annotations

import random
import re
from typing import Any

from components.tasks.base import TaskExample

NAME = "out_of_scope"
IDK_PHRASE = "I don't know"
_IDK = re.compile(r"\bI\s+(?:don['\u2019]t|do\s+not)\s+know\b", re.IGNORECASE)

FIRST_NAMES = ("Orson", "Mira", "Tobias", "Elena", "Rafael", "Ingrid", "Casimir", "Leona", "Anselm",
               "Priya", "Dorian", "Noor", "Lucian", "Marisol", "Henrik", "Yara", "Felix", "Anouk",
               "Emeric", "Talia", "Bruno", "Selma", "Ivo", "Greta", "Jonas", "Liesel", "Matteo", "Oona")
SURNAME_ROOTS = ("Kov", "Dral", "Vem", "Mor", "Tesk", "Bran", "Sil", "Quor", "Hald", "Zen", "Lint",
                 "Varn", "Ost", "Pell", "Grim", "Tav", "Ruv", "Nesk", "Fal", "Dorm")
SURNAME_ENDINGS = ("acs", "enko", "avi", "ström", "ovic", "ander", "elli", "ington", "ard", "oux", "berg",
                   "essa", "ados", "urin", "otti", "eck")
PLACE_ENDINGS = ("ia", "ora", "heim", "vale", "mont", "grad", "stan", "ara")
THING_KINDS = ("theorem", "protocol", "engine", "algorithm", "treaty", "prize", "festival", "method")

PERSON_QUESTIONS: tuple[tuple[str, str], ...] = (
    # (user question, honest answer); {x} is the made-up name.
    ("Who is {x}?", "I'm sorry, I don't know who {x} is."),
    ("What is {x} famous for?", "I don't know who {x} is, so I can't say what they are famous for."),
    ("When was {x} born?", "I don't know when {x} was born. I have no reliable information about them."),
    ("Tell me about {x}'s discoveries.", "I don't know of any discoveries by {x}. I have no information "
     "about this person."),
    ("What did {x} invent?", "I don't know anything {x} invented; I have no information about them."),
    ("Where does {x} live?", "I don't know. I have no information about anyone named {x}."),
    ("What books has {x} written?", "I'm not aware of any books by {x}. I don't know who they are."),
    ("Give me a short biography of {x}.", "Sorry, I don't know who {x} is, so I can't write a biography "
     "without making things up."),
    ("Why is {x} well known?", "I don't know who {x} is. If you tell me more, I can try to help."),
)
PLACE_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("Where is {x}?", "I don't know of a place called {x}."),
    ("What is the capital of {x}?", "I don't know of a country or region called {x}, so I can't name "
     "its capital."),
    ("How many people live in {x}?", "I'm sorry, I don't know anything about {x}."),
)
THING_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the {x}?", "I don't know what the {x} is. I have no information about it."),
    ("Explain the {x} to me.", "I'm sorry, I don't know the {x}, and I'd rather not guess."),
    ("Who came up with the {x}?", "I don't know. I have no information about the {x}."),
)


def says_idk(text: str) -> bool:
    """Whether `text` admits not knowing ("I don't know", "I do not know", curly apostrophe too)."""
    return bool(_IDK.search(text))


def generate(rng: random.Random, n: int, *, person_fraction: float = 0.7,
             **unknown: Any) -> list[TaskExample]:
    """`n` questions about made-up people, places and things, each answered with "I don't know".
    `person_fraction` of them are about people; the rest are split between places and things."""
    if unknown:
        raise ValueError(f"out_of_scope: unknown parameter(s) {sorted(unknown)}; known: person_fraction")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"out_of_scope: n must be a non-negative integer, got {n!r}")
    if isinstance(person_fraction, bool) or not isinstance(person_fraction, int | float) \
            or not 0.0 <= person_fraction <= 1.0:
        raise ValueError(f"out_of_scope: person_fraction must be a number in [0, 1], got {person_fraction!r}")
    return [_example(rng, person_fraction) for _ in range(n)]


def made_up_person(rng: random.Random) -> str:
    """A plausible but invented full name, e.g. "Orson Kovacs" or "Mira T. Draleck"."""
    surname = rng.choice(SURNAME_ROOTS) + rng.choice(SURNAME_ENDINGS)
    if rng.random() < 0.2:
        return f"{rng.choice(FIRST_NAMES)} {rng.choice('ABCDEFGHJKLMNPRSTVW')}. {surname}"
    return f"{rng.choice(FIRST_NAMES)} {surname}"


def made_up_place(rng: random.Random) -> str:
    return rng.choice(SURNAME_ROOTS) + rng.choice(PLACE_ENDINGS)


def made_up_thing(rng: random.Random) -> str:
    return f"{rng.choice(SURNAME_ROOTS)}{rng.choice(SURNAME_ENDINGS)} {rng.choice(THING_KINDS)}"


def _example(rng: random.Random, person_fraction: float) -> TaskExample:
    roll = rng.random()
    if roll < person_fraction:
        subject, kind, templates = made_up_person(rng), "person", PERSON_QUESTIONS
    elif rng.random() < 0.5:
        subject, kind, templates = made_up_place(rng), "place", PLACE_QUESTIONS
    else:
        subject, kind, templates = made_up_thing(rng), "thing", THING_QUESTIONS
    question, reply = rng.choice(templates)
    question = question.format(x=subject)
    if rng.random() < 0.15:
        question = question.lower()
    messages = [{"role": "user", "content": question},
                {"role": "assistant", "content": reply.format(x=subject)}]
    return TaskExample(task=NAME, conversation={"messages": messages}, answer=None,
                       meta={"in_scope": False, "subject": kind})
