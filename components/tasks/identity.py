"""SFT conversations that teach the model who it is ("knowledge of self").

A pretrained model has no idea what it is called: asked "Who are you?" it continues with whatever
identity its web text suggests (often "ChatGPT"). A small share of identity conversations fixes that.
Two mechanisms are taught side by side:

* the baked-in identity (`name`, `maker`): no system message, the answer always uses them;
* the system-message alternative (`system_fraction` of the conversations): a system message names a
  different, randomly drawn assistant and the answer must use THAT name, so the model learns to prefer
  the identity it is given at inference over the one it was trained with.

Questions are varied (templates, casing, a greeting turn first) so the model learns the intent rather
than one string. Answers are plain chat text without a `####` marker (an identity reply is not a maths
answer); `TaskExample.answer` is the expected name, which an evaluation looks for in the reply."""

from __future__ import annotations

import random
from typing import Any

from components.tasks.base import TaskExample

NAME = "identity"
DEFAULT_NAME = "llmops-chat"
DEFAULT_MAKER = "the llmops team"
MAX_FIELD_CHARS = 60  # name / maker: keeps every conversation well under the demo model's context

# Question kinds -> user phrasings. "other" asks whether the assistant is some other product.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "name": (
        "Who are you?",
        "What's your name?",
        "What is your name?",
        "What should I call you?",
        "Do you have a name?",
        "Tell me your name.",
        "Introduce yourself.",
        "What are you?",
        "Which assistant am I talking to?",
        "Can you tell me who you are?",
        "Who am I talking to?",
    ),
    "maker": (
        "Who made you?",
        "Who created you?",
        "Who built you?",
        "Who trained you?",
        "Which company made you?",
        "Who developed you?",
    ),
    "both": (
        "Who are you and who made you?",
        "Tell me about yourself.",
        "What's your name, and who created you?",
        "What are you and where do you come from?",
    ),
    "other": (
        "Are you ChatGPT?",
        "Are you Siri?",
        "Is this Claude?",
        "Are you Alexa?",
        "Are you GPT-4?",
        "Are you made by OpenAI?",
        "Are you Google's assistant?",
    ),
}

ANSWERS: dict[str, tuple[str, ...]] = {
    "name": (
        "I'm {name}, an AI assistant made by {maker}.",
        "My name is {name}.",
        "I'm {name}. How can I help you?",
        "You can call me {name}. I'm an assistant built by {maker}.",
        "I am {name}, a chat assistant. What can I do for you?",
    ),
    "maker": (
        "I was made by {maker}. I'm {name}.",
        "{Maker} built me. My name is {name}.",
        "I'm {name}, and I was created by {maker}.",
        "{Maker} trained me. I'm {name}, an AI assistant.",
    ),
    "both": (
        "I'm {name}, an AI assistant created by {maker}.",
        "My name is {name}, and I was built by {maker}.",
        "I'm {name}, a chat assistant made by {maker}. How can I help?",
    ),
    "other": (
        "No, I'm {name}, an assistant made by {maker}.",
        "No. I'm {name}, and I was created by {maker}.",
        "No, I'm not. My name is {name}, and {maker} built me.",
    ),
}

GREETINGS: tuple[tuple[str, str], ...] = (
    ("Hi!", "Hello! How can I help you today?"),
    ("Hello!", "Hi! What can I do for you?"),
    ("hey", "Hey! How can I help?"),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("Hello, how are you?", "I'm doing well, thanks for asking! How can I help?"),
    ("hi there", "Hi there! What can I do for you?"),
)

# Identities for the system-message alternative: small lists, never the default identity.
SYSTEM_NAMES = ("Nova", "Atlas", "Pixel", "Sage", "Echo", "Orion", "Juniper", "Milo", "Iris", "Quill",
                "Kestrel", "Luma")
SYSTEM_MAKERS = ("Acme", "Northwind Labs", "Blue Harbor AI", "Globex", "Initech", "Lumen Research",
                 "Redwood Robotics", "Vela Systems")
SYSTEM_TEMPLATES = (
    "You are {name}, an assistant made by {maker}.",
    "Your name is {name}. You were built by {maker}.",
    "You are {name}, a helpful assistant created by {maker}. Be concise.",
    "You are {name}. {Maker} developed you.",
)


def generate(rng: random.Random, n: int, *, name: str = DEFAULT_NAME, maker: str = DEFAULT_MAKER,
             system_fraction: float = 0.3, greeting_fraction: float = 0.2,
             **unknown: Any) -> list[TaskExample]:
    """`n` identity conversations, deterministic given `rng`. `answer` is the name the reply must use."""
    _check_params(n, name, maker, system_fraction, greeting_fraction, unknown)
    name, maker = name.strip(), maker.strip()
    return [_example(rng, name, maker, system_fraction, greeting_fraction) for _ in range(n)]


def _example(rng: random.Random, name: str, maker: str, system_fraction: float,
             greeting_fraction: float) -> TaskExample:
    messages: list[dict[str, Any]] = []
    from_system = rng.random() < system_fraction
    if from_system:
        name = rng.choice([s for s in SYSTEM_NAMES if s.lower() != name.lower()])
        maker = rng.choice(SYSTEM_MAKERS)
        messages.append({"role": "system", "content": _fill(rng.choice(SYSTEM_TEMPLATES), name, maker)})
    multi_turn = rng.random() < greeting_fraction
    if multi_turn:
        greeting, reply = rng.choice(GREETINGS)
        messages += [{"role": "user", "content": greeting}, {"role": "assistant", "content": reply}]
    kind = rng.choice(tuple(QUESTIONS))
    question = _vary_case(rng, rng.choice(QUESTIONS[kind]))
    answer = _fill(rng.choice(ANSWERS[kind]), name, maker)
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    meta = {"system_identity": from_system, "question": kind, "multi_turn": multi_turn}
    return TaskExample(task=NAME, conversation={"messages": messages}, answer=name, meta=meta)


def _fill(template: str, name: str, maker: str) -> str:
    return template.format(name=name, maker=maker, Maker=maker[:1].upper() + maker[1:])


def _vary_case(rng: random.Random, text: str) -> str:
    """People type sloppily: mostly as written, sometimes lower-case, upper-case or unpunctuated."""
    roll = rng.random()
    if roll < 0.55:
        return text
    if roll < 0.75:
        return text.lower()
    if roll < 0.85:
        return text.upper()
    return text.lower().rstrip("?.!")


def _check_params(n: int, name: str, maker: str, system_fraction: float, greeting_fraction: float,
                  unknown: dict[str, Any]) -> None:
    if unknown:
        raise ValueError(f"identity: unknown parameter(s) {sorted(unknown)}; known: name, maker, "
                         f"system_fraction, greeting_fraction")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"identity: n must be a non-negative integer, got {n!r}")
    for field, value in (("name", name), ("maker", maker)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"identity: {field} must be a non-empty string, got {value!r}")
        if len(value.strip()) > MAX_FIELD_CHARS:
            raise ValueError(f"identity: {field} is longer than {MAX_FIELD_CHARS} characters")
    for field, value in (("system_fraction", system_fraction), ("greeting_fraction", greeting_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"identity: {field} must be a number in [0, 1], got {value!r}")
