"""SFT conversations that teach self-induced search: ask the catalog, then answer from what it returned.

The seed's hallucination mitigation #2. Each example is a question whose answer is in the data stage's
catalog: the assistant writes a search call, the tool's output is injected, and the reply quotes the top
hit and ends with its URL after the `####` marker (so an evaluation can check which document was used).
The output part is the real `SearchTool.search` result, made by the same tool the engine calls at
inference, so training text and inference text match token for token.

Queries come from document titles ("Python notes: X, Y and Z" -> "X", or "X Y" when X alone finds another
document). An example is kept only when its top hit is the intended document or, failing that, a hit
whose title (shown in the output) contains every query term, so the answer is supported by what the
model sees. Everything is deterministic given the rng and the catalog: documents are sampled from sorted
ids, and ties in BM25 score are broken by id."""

from __future__ import annotations

import random
import re
from itertools import combinations

from components.sandbox.search import Hit, SearchTool, trim_words
from components.tasks.base import ANSWER_MARKER, TaskExample

NAME = "search"
QUESTION_TEMPLATES = (
    "What do the notes say about {q}?",
    "Search the notes for {q}.",
    "Can you look up {q}?",
    "Find something in the notes about {q}.",
    "What does the documentation say about {q}?",
    "Look up {q} for me, please.",
    "Is there anything in the notes on {q}?",
    "I need information on {q}. What do the notes say?",
)
OPENING = "Let me search for that. "
ANSWER_PREFIX = "The top result says: "

# Title shapes in the catalog; each gives a list of topics.
_LIST_TITLE = re.compile(r"^(?:Python notes|Reference notes): (.+)$")
_ONE_TOPIC = (
    re.compile(r"^(?:Notes on|Working with|A closer look at|Understanding) (.+)$"),
    re.compile(r"^(.+): a practical overview$"),
    re.compile(r"^How (\S+) works$"),
)
_SPLIT = re.compile(r", | and ")
_TERM = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_MIN_SENTENCE = 20
_CUT = " ..."  # marks an answer sentence cut short


def title_topics(title: str) -> list[str]:
    """The topics a document's title names, e.g. "Python notes: glob, os and re" -> ["glob", "os", "re"]."""
    title = title.strip()
    found = _LIST_TITLE.match(title)
    if found:
        topics = _SPLIT.split(found.group(1))
    else:
        match = next((m for pattern in _ONE_TOPIC if (m := pattern.match(title))), None)
        topics = [match.group(1)] if match else []
    return [t.strip() for t in topics if t.strip() and len(t.split()) <= 3]


def terms(text: str) -> set[str]:
    """Lower-case letter runs: roughly the words DuckDB's full-text index splits text into."""
    return set(_TERM.findall(text.lower()))


def candidate_queries(rng: random.Random, topics: list[str], max_words: int) -> list[tuple[str, str]]:
    """(topic as asked, query) pairs to try for one document: single topics first (the natural
    question), then two topics together ("X and Y", searched as "X Y")."""
    singles = [(t, t) for t in topics if len(t.split()) <= max_words]
    pairs = [(f"{a} and {b}", f"{a} {b}") for a, b in combinations(topics, 2)
             if len(f"{a} {b}".split()) <= max_words]
    rng.shuffle(singles)
    rng.shuffle(pairs)
    return singles + pairs


def answer_sentence(hit: Hit, limit: int) -> str:
    """The first sentence of the top hit's shown text after its title, cut to `limit` characters."""
    body = hit.snippet
    if hit.title and body.startswith(hit.title) and len(body) > len(hit.title) + _MIN_SENTENCE:
        body = body[len(hit.title):].strip()
    sentence = _SENTENCE_END.split(body, maxsplit=1)[0]
    return trim_words(sentence, limit)


def _example(rng: random.Random, topic: str, query: str, hits: list[Hit], output: str,
             max_chars: int) -> TaskExample | None:
    top = hits[0]
    question = rng.choice(QUESTION_TEMPLATES).format(q=topic)
    marker = f"\n{ANSWER_MARKER} {top.url}"
    fixed = len(question) + len(OPENING) + len(query) + len(output) + len(ANSWER_PREFIX) + len(marker)
    fixed += len(_CUT)
    sentence = answer_sentence(top, max_chars - fixed)
    if len(sentence) < _MIN_SENTENCE:
        return None
    if not sentence.endswith((".", "!", "?")):
        sentence += _CUT
    content = [
        {"type": "text", "text": OPENING},
        {"type": "search", "text": query},
        {"type": "output", "text": output},
        {"type": "text", "text": f"{ANSWER_PREFIX}{sentence}{marker}"},
    ]
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": content}]
    return TaskExample(task=NAME, conversation={"messages": messages}, answer=top.url,
                       meta={"tool": True, "in_scope": True, "search": True})


def _pick_query(rng: random.Random, search: SearchTool, doc_id: str, title: str,
                max_words: int) -> tuple[str, str, list[Hit]] | None:
    """The first candidate query whose top hit is `doc_id`; else the first whose top hit is about the
    query too (every query term in its title, and shown); else None."""
    fallback = None
    for topic, query in candidate_queries(rng, title_topics(title), max_words):
        hits = search.hits(query)
        if not hits:
            continue
        if hits[0].id == doc_id:
            return topic, query, hits
        top = hits[0]
        if fallback is None and terms(query) <= terms(top.title) & terms(top.snippet):
            fallback = topic, query, hits
    return fallback


def generate(rng: random.Random, n: int, *, search: SearchTool, max_query_words: int = 4,
             max_chars: int = 600, max_attempts: int | None = None, **params: object) -> list[TaskExample]:
    """Up to `n` search conversations (fewer when the catalog cannot supply them), deterministic given
    `rng` and the catalog. Documents are tried in a seeded order; at most `max_attempts` (default
    20 * n + 100) documents are tried."""
    docs = [(i, t) for i, t in search.kept_titles() if title_topics(t)]
    budget = 20 * n + 100 if max_attempts is None else max_attempts
    examples: list[TaskExample] = []
    while docs and len(examples) < n and budget > 0:
        made = 0
        for doc_id, title in rng.sample(docs, len(docs)):
            if len(examples) >= n or budget <= 0:
                break
            budget -= 1
            picked = _pick_query(rng, search, doc_id, title, max_query_words)
            if picked is None:
                continue
            topic, query, hits = picked
            example = _example(rng, topic, query, hits, search.search(query), max_chars)
            if example is not None:
                examples.append(example)
                made += 1
        if made == 0:
            break
    return examples
