"""Real text for the demo corpus, found offline on any machine with CPython 3.11.

English prose comes from the interpreter itself, best first: the reference-manual topics behind
`help()` (`pydoc_data.topics`), the docstrings of the standard library (read with `ast`, so no module
is imported: no side effects, no windows), the docstrings of a fixed list of built-in C modules, and
the explanatory comments of the standard library and of its test suite. Only paragraphs that read as
running text are kept (no code, doctests, tables, argument lists or anything that looks like PII),
and paragraphs that mostly repeat earlier ones are dropped. Non-English text comes from CPython's CJK
codec test files and spaCy's per-language example sentences (spaCy is a pipeline dependency), with
justext's stop-word lists as a last resort. Every source is optional: a missing one only shrinks the
corpus, and `SourceReport` says what was used."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import ipaddress
import os
import re
import sysconfig
import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

# Stdlib trees that are tests, GUIs, demos, vendored wheels or data tables rather than documentation.
SKIPPED_STDLIB = frozenset({
    "test", "tests", "idlelib", "tkinter", "turtledemo", "turtle.py", "lib2to3", "ensurepip",
    "site-packages", "dist-packages", "antigravity.py", "this.py", "__phello__", "pydoc_data",
    "encodings", "__pycache__", "venv",
})
NON_PROSE_MARKERS = (
    ">>>", "{", "}", "|", "#", "==", "http", "www.", "\\", "javascript", "lorem ipsum", "todo", "xxx",
    "uses cookies", "use of cookies", "use cookies", "cookie policy", "terms of use", "privacy policy",
)
TERMINAL = (".", "!", "?", ":", ")", '"', "'")
BULLET_RE = re.compile(r"^(?:[*\-+\u2022]|\d+\.|\([a-z0-9]\))\s+")
WORD_RE = re.compile(r"[A-Za-z0-9']+")
# Roughly how spaCy's English tokenizer splits (words, with punctuation marks as tokens of their own):
# Gopher's quality filter wants >= 80% of those tokens to hold a letter, and code-heavy docs miss that.
TOKEN_RE = re.compile(r"\w+(?:[.'\u2019]\w+)*|\S")
QUOTED_NAME_RE = re.compile(r"(?<![\w\"'])[\"']([^\s\"']+)[\"'](?![\w\"'])")
ARG_LIST_RE = re.compile(r"(?:^|\s)[a-z_][\w.]*:\s")
HEADING_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}\s*$")
ROLE_RE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]+?)(?:\s*<[^>]+>)?`")
# Conservative PII patterns: prose that looks like it holds an email, a public IP or a phone number
# is dropped, so the only PII in the corpus is what the builder plants (and lists in ground truth).
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
IPV4_RE = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
PHONE_LIKE_RE = re.compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}")


@dataclass(frozen=True)
class Passage:
    """A titled run of prose paragraphs from one place (a docstring, a manual section)."""

    source: str
    group: str
    title: str
    paragraphs: tuple[str, ...]
    part: int = 0  # > 0: a continuation of a longer passage (shown without its heading)

    @property
    def n_words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


@dataclass
class SourceReport:
    """Which sources fed the corpus, for the manifest."""

    used: dict[str, dict] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def add(self, name: str, **info) -> None:
        entry = self.used.setdefault(name, {})
        for key, value in info.items():
            entry[key] = entry.get(key, 0) + value if isinstance(value, int) else value


# --- English prose ---------------------------------------------------------------------------


def has_pii(text: str) -> bool:
    """True if the text holds something a PII scrubber could take for an email, public IP or phone."""
    if EMAIL_RE.search(text) or PHONE_LIKE_RE.search(text):
        return True
    for match in IPV4_RE.finditer(text):
        try:
            if ipaddress.ip_address(match.group(0)).is_global:
                return True
        except ValueError:
            continue
    return False


def _strip_markup(text: str) -> str:
    text = ROLE_RE.sub(lambda m: m.group(1).split(".")[-1], text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\1", text)
    text = text.replace("::", ":")
    text = QUOTED_NAME_RE.sub(r"\1", text)  # pydoc renders ``code`` as "code": drop the quotes
    return re.sub(r"\s+", " ", text).strip()


def is_prose(paragraph: str) -> bool:
    """Keep only paragraphs a web page would show as running text and every filter lets through."""
    words = paragraph.split()
    if len(words) < 6 or not paragraph.endswith(TERMINAL) or paragraph.endswith(("...", "\u2026")):
        return False
    if paragraph.endswith(")") and len(words) < 12:
        return False  # signatures and call examples, not sentences
    lowered = paragraph.lower()
    if any(marker in lowered for marker in NON_PROSE_MARKERS) or has_pii(paragraph):
        return False
    if max(len(w) for w in words) > 30:
        return False
    if len(ARG_LIST_RE.findall(paragraph)) >= 2:
        return False  # "name: description" argument lists run together
    mean_len = sum(len(w) for w in words) / len(words)
    return alpha_token_ratio(paragraph) >= 0.74 and 3.5 <= mean_len <= 8


@lru_cache(maxsize=1 << 16)
def alpha_token_ratio(text: str) -> float:
    """Share of tokens (punctuation counted as tokens) that contain a letter. Like spaCy, leading and
    trailing underscores count as tokens of their own: `__init__` is five tokens, one alphabetic."""
    return alpha_share(spacy_like_tokens(text))


def alpha_share(tokens: list[str]) -> float:
    return sum(any(c.isalpha() for c in t) for t in tokens) / max(len(tokens), 1)


def spacy_like_tokens(text: str) -> list[str]:
    """Approximately the tokens of spaCy's blank English tokenizer (what Gopher's filters count)."""
    tokens = TOKEN_RE.findall(text)
    if "_" not in text:
        return tokens
    out = []
    for token in tokens:
        if token[0] != "_" and token[-1] != "_":
            out.append(token)
            continue
        core = token.strip("_")
        out += ["_"] * (len(token) - len(core)) + ([core] if core else [])
    return out


# Gopher repetition thresholds (datatrove defaults) scaled by 0.75, so clean pages keep a margin.
TOP_NGRAM_MAX = ((2, 0.15), (3, 0.135), (4, 0.12))
DUP_NGRAM_MAX = ((5, 0.11), (6, 0.105), (7, 0.1), (8, 0.09), (9, 0.08), (10, 0.075))


def repetition_problem(text: str, words: list[str] | None = None) -> str | None:
    """Why Gopher's repetition filter (or FineWeb's duplicated-line rule) might drop this text, if it
    might: a cheap re-implementation with a safety margin, used to keep clean pages clean."""
    lines = [x for x in text.split("\n") if x.strip()]
    if len(set(lines)) < len(lines):
        return "duplicated_line"
    words = spacy_like_tokens(text) if words is None else words
    for n, limit in TOP_NGRAM_MAX:
        grams = Counter(_ngrams(words, n))
        if grams:
            gram, count = grams.most_common(1)[0]
            if (sum(map(len, gram)) + n - 1) * count / len(text) > limit:
                return f"top_{n}_gram"
    if len(set(_ngrams(words, 5))) == max(len(words) - 4, 0):
        return None  # no 5-gram occurs twice, so no longer n-gram does either
    for n, limit in DUP_NGRAM_MAX:
        if _duplicated_chars(words, n) / len(text) > limit:
            return f"duplicated_{n}_grams"
    return None


def _ngrams(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(words[i:len(words) - n + 1 + i] for i in range(n)), strict=True)


def _duplicated_chars(words: list[str], n: int) -> int:
    """Characters in repeated n-grams, counted as Gopher does (skipping past each repeat)."""
    seen, repeated, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def _blocks(raw: str) -> Iterator[list[str]]:
    block: list[str] = []
    for line in textwrap.dedent(raw.expandtabs()).splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _items(block: list[str]) -> Iterator[str]:
    """Split a block into items: wrapped lines join, bullets and indentation changes start a new one
    (so 'Args:' headers, argument lists and bullet lists become separate candidate paragraphs)."""
    block = textwrap.dedent("\n".join(block)).splitlines()
    current: list[str] = []
    prev = None
    for line in block:
        indent, stripped = _indent(line), line.strip()
        bullet = BULLET_RE.match(stripped)
        new = bullet or prev is None or indent < _indent(prev) or (
            indent > _indent(prev) and prev.rstrip().endswith(":"))
        if new and current:
            yield " ".join(current)
            current = []
        current.append(stripped[bullet.end():] if bullet else stripped)
        prev = line
    if current:
        yield " ".join(current)


def prose_paragraphs(raw: str) -> list[str]:
    """reST-ish documentation text -> prose paragraphs (code, doctests, tables and headings dropped)."""
    out = []
    for block in _blocks(raw):
        if any(HEADING_UNDERLINE.match(x) for x in block) or any(x.lstrip().startswith(">>>") for x in block):
            continue
        for item in _items(block):
            paragraph = _strip_markup(item)
            if is_prose(paragraph):
                out.append(paragraph)
    return out


def _topic_sections(name: str, text: str) -> Iterator[tuple[str, str]]:
    """Split a manual topic at its underlined headings: (heading, body) pairs."""
    lines = text.splitlines()
    title, body = name, []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and HEADING_UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()) - 1:
            if body:
                yield title, "\n".join(body)
            title, body = line.strip(), []
        elif not HEADING_UNDERLINE.match(line):
            body.append(line)
    if body:
        yield title, "\n".join(body)


def pydoc_topic_passages(report: SourceReport) -> Iterator[Passage]:
    """The language reference sections that `help('keyword')` shows: ~0.5 MB of prose."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        report.missing.append("pydoc_data.topics")
        return
    for name in sorted(topics):
        for title, body in _topic_sections(name, topics[name]):
            paragraphs = tuple(prose_paragraphs(body))
            if paragraphs:
                report.add("pydoc_data.topics", passages=1)
                yield Passage("pydoc_data.topics", f"topics/{name}", _strip_markup(title), paragraphs)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Documentation-bearing .py files of the standard library, in a fixed order."""
    root = root or stdlib_root()
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_STDLIB and not d.startswith("config-")]
        files += [Path(folder, n) for n in names if n.endswith(".py") and n not in SKIPPED_STDLIB]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _documented_nodes(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) for the module and its classes and functions, in source order."""
    yield "", tree

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")

    yield from walk(tree, "")


def docstring_passages(root: Path, path: Path) -> list[Passage]:
    """One passage per docstring of one stdlib file, parsed (never imported)."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    module = _module_name(root, path)
    out = []
    for qualname, node in _documented_nodes(tree):
        doc = ast.get_docstring(node)
        paragraphs = tuple(prose_paragraphs(doc)) if doc else ()
        if paragraphs:
            title = f"{module}.{qualname}" if qualname else module
            out.append(Passage("stdlib_docstrings", module, title, paragraphs))
    return out


def stdlib_docstring_passages(report: SourceReport) -> Iterator[Passage]:
    root = stdlib_root()
    for path in stdlib_files(root):
        passages = docstring_passages(root, path)
        if passages:
            report.add("stdlib_docstrings", files=1, passages=len(passages))
        yield from passages


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the lower-cased text, as near-duplicate detection sees it."""
    words = WORD_RE.findall(text.lower())
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 0))}


# C modules whose docstrings are only reachable by importing them; importing these has no side
# effects. A fixed list (not a scan) so the corpus does not depend on what else is installed.
C_MODULES = (
    "_abc", "_asyncio", "_bisect", "_bz2", "_codecs", "_collections", "_contextvars", "_csv", "_datetime",
    "_decimal", "_elementtree", "_functools", "_hashlib", "_heapq", "_io", "_json", "_locale", "_lzma",
    "_operator", "_pickle", "_queue", "_random", "_socket", "_sqlite3", "_sre", "_ssl", "_stat",
    "_statistics", "_string", "_struct", "_symtable", "_thread", "_tracemalloc", "_warnings", "_weakref",
    "array", "atexit", "binascii", "builtins", "cmath", "errno", "faulthandler", "gc", "itertools",
    "marshal", "math", "mmap", "posix", "pyexpat", "select", "sys", "time", "unicodedata", "zlib",
)


def _members(obj: object) -> Iterator[tuple[str, object]]:
    for name in sorted(vars(obj)):
        if not name.startswith("_") or name in ("__init__", "__new__", "__call__"):
            yield name, vars(obj)[name]


def c_module_passages(report: SourceReport) -> Iterator[Passage]:
    """Docstrings of built-in (C) modules, their functions, classes and methods."""
    for module_name in C_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        n = 0
        targets = [(module_name, module)]
        for name, member in _members(module):
            if callable(member) and getattr(member, "__module__", module_name) in (module_name, None):
                targets.append((f"{module_name}.{name}", member))
                if isinstance(member, type):
                    targets += [(f"{module_name}.{name}.{m}", v) for m, v in _members(member)]
        for title, obj in targets:
            doc = getattr(obj, "__doc__", None)
            paragraphs = tuple(prose_paragraphs(doc)) if isinstance(doc, str) else ()
            if paragraphs:
                n += 1
                yield Passage("c_module_docstrings", module_name, title, paragraphs)
        if n:
            report.add("c_module_docstrings", modules=1, passages=n)


def _comment_blocks(source: str) -> Iterator[str]:
    """Runs of full-line `#` comments, as reST-ish text (blank comment lines separate paragraphs)."""
    block: list[str] = []
    for line in source.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith(("#!", "#-*-", "# -*-")):
            block.append(stripped.lstrip("#")[1:] if stripped.startswith("# ") else stripped.lstrip("#"))
        elif block:
            yield "\n".join(block)
            block = []


def comment_passages(report: SourceReport, tests: bool = False, per_passage: int = 6) -> Iterator[Passage]:
    """Explanatory comments of the standard library (or of its test suite), a few per passage."""
    root = stdlib_root()
    source = "stdlib_test_comments" if tests else "stdlib_comments"
    files = sorted((root / "test").rglob("*.py")) if tests else stdlib_files(root)
    for path in files:
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        paragraphs = [p for block in _comment_blocks(text) for p in prose_paragraphs(block)]
        module = _module_name(root, path)
        for part, start in enumerate(range(0, len(paragraphs), per_passage), 1):
            chunk = tuple(paragraphs[start:start + per_passage])
            title = f"Implementation notes: {module}" + (f" (part {part})" if part > 1 else "")
            yield Passage(source, module, title, chunk)
        if paragraphs:
            report.add(source, files=1)


def novel_passages(passages: Iterable[Passage], max_seen: float = 0.2) -> Iterator[Passage]:
    """Drop paragraphs whose 5-grams were mostly seen before (copied docstrings, shared boilerplate),
    so that pages built from disjoint passages share almost no 5-grams and repeat nothing inside.
    Titles are made unique, since a page repeating a heading has a duplicated line."""
    seen: set[str] = set()
    titles: dict[str, int] = {}
    for passage in passages:
        kept = []
        for paragraph in passage.paragraphs:
            grams = shingles(paragraph)
            if not grams or len(grams & seen) / len(grams) > max_seen:
                continue
            seen |= grams
            kept.append(paragraph)
        if kept:
            n = titles[passage.title] = titles.get(passage.title, 0) + 1
            title = passage.title if n == 1 else f"{passage.title} ({n})"
            yield Passage(passage.source, passage.group, title, tuple(kept))


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _split_long(paragraph: str, max_words: int) -> list[str]:
    """Split a very long paragraph at sentence ends into pieces of at most ~max_words."""
    if len(paragraph.split()) <= max_words:
        return [paragraph]
    pieces, current = [], []
    for sentence in SENTENCE_END.split(paragraph):
        if current and len(" ".join(current + [sentence]).split()) > max_words:
            pieces.append(" ".join(current))
            current = []
        current.append(sentence)
    return pieces + [" ".join(current)] if current else pieces


def chunked(passages: Iterable[Passage], max_words: int = 60) -> Iterator[Passage]:
    """Cut passages into chunks of at most ~max_words, so pages are made of several chunks and pages
    that reuse a chunk share little else (a page of one long passage would repeat whole)."""
    for passage in passages:
        paragraphs = [piece for p in passage.paragraphs for piece in _split_long(p, max_words)]
        chunk: list[str] = []
        part = 0
        for paragraph in paragraphs:
            if chunk and len(" ".join(chunk + [paragraph]).split()) > max_words:
                yield replace(passage, paragraphs=tuple(chunk), part=part)
                chunk, part = [], part + 1
            chunk.append(paragraph)
        if chunk:
            yield replace(passage, paragraphs=tuple(chunk), part=part)


def english_passages(report: SourceReport) -> Iterator[Passage]:
    """All English passages in chunks, best prose first, lazily (a small corpus parses few files)."""

    def chained() -> Iterator[Passage]:
        yield from pydoc_topic_passages(report)
        yield from stdlib_docstring_passages(report)
        yield from c_module_passages(report)
        yield from comment_passages(report)
        yield from comment_passages(report, tests=True)

    yield from chunked(novel_passages(chained()))


# --- Non-English text ------------------------------------------------------------------------

CJK_FILES = {"zh": ("gb2312", "gbk", "gb18030", "big5"), "ja": ("euc_jp", "shift_jis", "euc_jisx0213"),
             "ko": ("euc_kr", "cp949")}
SPACY_LANGS = ("de", "fr", "es", "it", "pt", "nl", "pl", "ru", "sv", "da", "ca", "ro", "cs", "fi", "tr",
               "uk", "id", "nb", "hu", "el")
JUSTEXT_LANGS = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
                 "nl": "Dutch"}


def cjk_texts(report: SourceReport) -> dict[str, list[str]]:
    """Chinese, Japanese and Korean prose from CPython's codec test data (Lib/test/cjkencodings)."""
    folder = stdlib_root() / "test" / "cjkencodings"
    out: dict[str, list[str]] = {}
    for lang, stems in CJK_FILES.items():
        for stem in stems:
            path = folder / f"{stem}-utf8.txt"
            if not path.exists():
                continue
            lines = [x.strip() for x in path.read_text("utf-8", errors="replace").splitlines()]
            lines = [x for x in lines if len(x) >= 8 and "\ufffd" not in x]
            if lines:
                out.setdefault(lang, []).extend(lines)
                report.add("cpython_cjkencodings", files=1)
    if not out:
        report.missing.append("Lib/test/cjkencodings")
    return {lang: list(dict.fromkeys(lines)) for lang, lines in out.items()}


def _literal_list(path: Path, name: str) -> list[str]:
    """The list literal assigned to `name` in a Python file, read without importing it."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [x for x in value if isinstance(x, str)] if isinstance(value, list) else []
    return []


def spacy_example_texts(report: SourceReport) -> dict[str, list[str]]:
    """spaCy's example sentences per language (real news-style sentences), parsed from
    `spacy/lang/<lang>/examples.py` without importing spaCy (which takes seconds)."""
    out: dict[str, list[str]] = {}
    spec = importlib.util.find_spec("spacy")
    if spec is None or not spec.submodule_search_locations:
        report.missing.append("spacy.lang.*.examples")
        return out
    lang_dir = Path(next(iter(spec.submodule_search_locations))) / "lang"
    for lang in SPACY_LANGS:
        sentences = _literal_list(lang_dir / lang / "examples.py", "sentences")
        sentences = [s.strip() for s in sentences if len(s.split()) >= 3 and not has_pii(s)]
        if sentences:
            out[lang] = list(dict.fromkeys(sentences))
    if out:
        report.add("spacy.lang.*.examples", languages=len(out), version=importlib.metadata.version("spacy"))
    else:
        report.missing.append("spacy.lang.*.examples")
    return out


def justext_stoplist_texts(report: SourceReport, langs: Iterable[str]) -> dict[str, list[str]]:
    """Last resort: common words of a language from justext's stop lists (word salad, but real words)."""
    try:
        import justext
    except ImportError:
        report.missing.append("justext stoplists")
        return {}
    out = {}
    for lang in langs:
        try:
            words = sorted(justext.get_stoplist(JUSTEXT_LANGS[lang]))
        except (KeyError, ValueError):
            continue
        out[lang] = [" ".join(words[i:i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    if out:
        report.add("justext.stoplists", languages=len(out))
    return out


def non_english_texts(report: SourceReport) -> dict[str, list[str]]:
    """Language code -> real sentences or lines in that language, from whatever is present."""
    texts = spacy_example_texts(report)
    texts.update(cjk_texts(report))
    missing = [lang for lang in JUSTEXT_LANGS if lang not in texts]
    texts.update(justext_stoplist_texts(report, missing))
    return dict(sorted(texts.items()))
