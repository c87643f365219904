"""The search task: deterministic conversations whose search output is exactly what the tool returns at
inference, whose answer is the top hit, and which skip documents the search cannot find."""

from __future__ import annotations

import random
import re

import pytest

from components.chat.protocol import validate_conversation
from components.sandbox.search import SearchTool
from components.tasks.base import TaskExample, extract_answer, rng_for
from components.tasks.search import (
    OPENING,
    QUESTION_TEMPLATES,
    candidate_queries,
    generate,
    terms,
    title_topics,
)
from tests.sandbox.test_search import DOCS, build_search_catalog, fts_catalog


@pytest.fixture(scope="module")
def tool(tmp_path_factory):
    with SearchTool(fts_catalog(tmp_path_factory.mktemp("catalog"))) as search:
        yield search


def chars(example: TaskExample) -> int:
    content = [m["content"] for m in example.conversation["messages"]]
    return sum(len(c) if isinstance(c, str) else sum(len(p["text"]) for p in c) for c in content)


def asked_topic(question: str) -> str | None:
    """The topic a question was made with, when it comes from one of the templates."""
    for template in QUESTION_TEMPLATES:
        found = re.fullmatch(re.escape(template).replace(re.escape("{q}"), "(.+)"), question)
        if found:
            return found.group(1)
    return None


def test_examples_match_the_tool(tool):
    examples = generate(rng_for(0, "search"), 8, search=tool)
    assert len(examples) == 8
    kept_urls = {f"https://notes.example.com/{i}/" for i, (status, *_) in DOCS.items() if status == "kept"}
    for ex in examples:
        validate_conversation(ex.conversation)
        user, assistant = ex.conversation["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert [p["type"] for p in assistant["content"]] == ["text", "search", "output", "text"]
        opening, call, output, answer = (p["text"] for p in assistant["content"])
        assert opening == OPENING
        assert output == tool.search(call)  # exactly what the engine would inject
        top = tool.hits(call)[0]
        assert ex.answer == top.url and ex.answer in kept_urls
        assert extract_answer(answer) == top.url
        assert answer.split("\n")[0].removesuffix(" ...").removeprefix("The top result says: ") in output
        assert terms(call) <= terms(output)  # the shown result supports the answer
        assert ex.task == "search" and ex.meta == {"tool": True, "in_scope": True, "search": True}
        assert ex.prompt == [user]
        assert chars(ex) <= 600
        topic = asked_topic(user["content"])
        assert topic is not None and terms(topic) - {"and"} == terms(call) - {"and"}


def test_deterministic(tool):
    first = generate(rng_for(3, "search"), 6, search=tool)
    assert first == generate(rng_for(3, "search"), 6, search=tool)
    assert first != generate(rng_for(4, "search"), 6, search=tool)


def test_more_than_the_catalog_can_give_is_fewer_not_a_crash(tool):
    examples = generate(random.Random(1), 200, search=tool, max_attempts=40)
    assert 0 < len(examples) < 200
    assert generate(random.Random(1), 0, search=tool) == []


def test_a_document_the_search_cannot_surface_is_skipped(tmp_path):
    hidden = {
        "a": ("kept", "Notes on vortex", "A short body."),
        # No title topics, and "vortex" only past the snippet: it outranks "a" but shows nothing relevant.
        "b": ("kept", "Miscellaneous", "filler words here " * 20 + "vortex " * 40),
    }
    path = build_search_catalog(tmp_path, docs=hidden)
    with SearchTool(path) as search:
        if search.search("vortex") == "no results":
            pytest.skip("no fts index")
        assert search.hits("vortex")[0].id == "b"
        assert generate(random.Random(0), 5, search=search) == []


def test_title_topics():
    assert title_topics("Python notes: distutils.ccompiler, __slots__ and glob") == [
        "distutils.ccompiler", "__slots__", "glob"]
    assert title_topics("Reference notes: json and csv") == ["json", "csv"]
    assert title_topics("Python notes: Debugger Commands, pdb and re") == ["Debugger Commands", "pdb", "re"]
    assert title_topics("Notes on gzip") == ["gzip"]
    assert title_topics("A closer look at typing") == ["typing"]
    assert title_topics("test.support: a practical overview") == ["test.support"]
    assert title_topics("How tarfile works") == ["tarfile"]
    assert title_topics("Return the list of stack frames for this task.") == []


def test_candidate_queries():
    found = candidate_queries(random.Random(0), ["glob", "os", "Debugger Commands"], max_words=2)
    asked = [q for _, q in found]
    assert set(asked[:3]) == {"glob", "os", "Debugger Commands"}  # single topics first
    assert set(asked[3:]) == {"glob os"}  # pairs over max_words are left out
    assert ("glob and os", "glob os") in found
    assert len(QUESTION_TEMPLATES) >= 6
