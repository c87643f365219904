"""The default demo raw web corpus: a small, deterministic Common Crawl look-alike with ground truth.

`build_demo_corpus` writes WARC files of real HTML pages (plus request, revisit and non-HTML records,
as readers meet in a real crawl) and a share of already-extracted JSONL documents with FineWeb's
columns. The English prose is real text shipped with CPython (see `corpus_sources`); the pages are
wrapped in site chrome (navigation, cookie banner, footer) so that HTML extraction has work to do.

Besides clean pages, the corpus plants cases aimed at exactly one filter of the FineWeb-style data
stage each (URL blocklist, HTML extraction, language ID, Gopher repetition and quality, C4 quality,
FineWeb quality, MinHash dedup) and PII to scrub. `ground_truth.jsonl` says, per document, which
filter should drop it (`expected_block`, null = keep) and which PII strings it holds, so the data
report can measure each filter's precision and recall. Rows also carry `source`/`file`, `variant`
(how a case was made), `lang`, and `jaccard` (word 5-gram Jaccard of a near-duplicate with its
original). Planted pages are checked against cheap re-implementations of the earlier filters, and
clean pages against all quality filters, so each case should trip exactly its filter; a few clean
technical pages still score under the language-ID threshold (real false positives, not bugs).

CPython ships ~2 MB of usable prose, so past the first few hundred pages passages are reused (at most
MAX_PASSAGE_REUSE times, reshuffled into new combinations); a guard refuses any clean page whose
5-gram Jaccard with an earlier one exceeds MAX_CLEAN_JACCARD, so only planted duplicates are
near-duplicates. When the text runs out, the clean share is capped and the manifest says so.

Duplicates: the original of a duplicate cluster is marked kept and each copy `minhash_dedup`, with
`duplicate_of` pointing at the original. MinHash keeps one document per cluster but which one is up
to the dedup, so an evaluation should treat a cluster symmetrically: it is right if exactly one
member of the cluster survives, whichever it is.

Same arguments + same Python (+ same spaCy for non-English text) -> byte-identical files.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import ipaddress
import json
import math
import platform
import random
import re
import struct
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path

from components.data.corpus_sources import (
    Passage,
    SourceReport,
    alpha_share,
    alpha_token_ratio,
    english_passages,
    non_english_texts,
    repetition_problem,
    shingles,
    spacy_like_tokens,
)

CRAWL = "CC-MAIN-2024-10"
CRAWL_START = datetime(2024, 2, 20, 21, 10, 55, tzinfo=timezone.utc)
CRAWL_SECONDS = 13 * 24 * 3600
JSONL_SHARE = 0.2
MIN_DOCUMENTS = 50
MAX_PASSAGE_REUSE = 4  # each source passage appears in at most this many pages
MAX_CLEAN_JACCARD = 0.25  # 5-gram Jaccard allowed between two clean pages
CORPUS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CaseSpec:
    """A planted case: which filter should drop it, and how many per 100 documents."""

    name: str
    expected_block: str | None
    share: float
    warc_only: bool = False


PLANTED_CASES = (
    CaseSpec("pii", None, 0.03),
    CaseSpec("spam_url", "url_filter", 0.015),
    CaseSpec("boilerplate_only", "text_extraction", 0.01, warc_only=True),
    CaseSpec("non_english", "language_filter", 0.03),
    CaseSpec("repetitive", "gopher_repetition", 0.02),
    CaseSpec("too_short", "gopher_quality", 0.006),
    CaseSpec("symbol_heavy", "gopher_quality", 0.006),
    CaseSpec("ellipsis_lines", "gopher_quality", 0.006),
    CaseSpec("low_alpha", "gopher_quality", 0.006),
    CaseSpec("lorem_ipsum", "c4_quality", 0.006),
    CaseSpec("javascript_notice", "c4_quality", 0.006),
    CaseSpec("curly_braces", "c4_quality", 0.006),
    CaseSpec("fineweb_line_punct", "fineweb_quality", 0.006),
    CaseSpec("short_lines", "fineweb_quality", 0.006),
    CaseSpec("duplicated_lines", "fineweb_quality", 0.006),
    CaseSpec("exact_duplicate", "minhash_dedup", 0.025),
    CaseSpec("near_duplicate", "minhash_dedup", 0.025),
)
CASES = {spec.name: spec for spec in PLANTED_CASES} | {"clean": CaseSpec("clean", None, 0.0)}
PROSE_CASES = ("spam_url", "repetitive", "too_short", "symbol_heavy", "ellipsis_lines", "low_alpha",
               "lorem_ipsum", "javascript_notice", "curly_braces", "fineweb_line_punct", "short_lines",
               "duplicated_lines")


# --- Pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One element of a page: h1/h2/p (one line), br (lines in one paragraph), table (tab-separated rows)."""

    kind: str
    lines: tuple[str, ...]

    def text(self) -> str:
        if self.kind != "table":
            return "\n".join(self.lines)
        rows = [" | ".join(row.split("\t")) + " |" for row in self.lines]
        n_cells = len(self.lines[0].split("\t"))
        return "\n".join([rows[0], "|".join(["---"] * n_cells) + "|", *rows[1:]])


@dataclass(frozen=True)
class Page:
    """A page's main content. `text` is what an extractor should get out of its HTML."""

    title: str
    blocks: tuple[Block, ...]
    lang: str = "en"

    @property
    def text(self) -> str:
        return "\n".join(block.text() for block in self.blocks)


def h(kind: str, *lines: str) -> Block:
    return Block(kind, tuple(lines))


@dataclass
class Doc:
    case: str
    page: Page | None  # None: no main content (boilerplate-only page)
    source: str = "warc"
    url: str = ""
    id: str = ""
    date: datetime = CRAWL_START
    site: Site | None = None
    variant: str | None = None
    pii: list[str] = field(default_factory=list)
    duplicate_of: Doc | None = None
    jaccard: float | None = None
    file: str = ""
    lang: str = "en"

    @property
    def expected_block(self) -> str | None:
        return CASES[self.case].expected_block


# --- Sites and URLs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    domain: str
    name: str
    sections: tuple[str, ...]
    theme: int


CLEAN_DOMAINS = (
    "pynotes.dev", "bytesandbranches.com", "stdlib-explained.org", "codeharbor.io", "thepythonledger.net",
    "devnotebook.org", "learnpydaily.com", "snakebytes.blog", "runtime-notes.io", "moduleoftheweek.net",
    "interpreterinsights.com", "pythonicpath.org", "devdigest.net", "tracebacktales.com",
    "cleancodecorner.org", "refguide.dev", "bitwisejournal.com", "codingalmanac.net",
    "softwarefieldnotes.org", "opensourcereader.com", "programmingprimer.net", "techwritershub.org",
    "thecompiledpage.com", "scriptsandsyntax.net",
)
MIRROR_DOMAINS = ("docs-archive.net", "pagemirror.org", "contentfeedreader.com", "webcache-archive.net",
                  "articlehub-syndicate.com", "dailytechreposts.net")
# Taken from datatrove's shipped URL blocklists: domains on the list, and words it bans in URLs.
BLOCKED_DOMAINS = ("awesomecasino.com", "bigwinscasino.com", "1000casinos.com", "888casino.com",
                   "casino.com", "aztecrichescasino.com", "bluecoincasino.com")
BANNED_WORD_URLS = ("https://rxdiscount-store.net/buy-viagra-online/{slug}",
                    "https://pharma-express-deals.com/cialis/{slug}.html")
NON_ENGLISH_DOMAINS = {
    "de": "nachrichten-aktuell.de", "fr": "actu-numerique.fr", "es": "noticias-tecnologia.es",
    "it": "notizie-digitali.it", "pt": "noticias-tech.com.br", "nl": "technieuws.nl",
    "pl": "wiadomosci-dnia.pl", "ru": "novosti-tehnologiy.ru", "sv": "nyheter-idag.se",
    "da": "nyheder-online.dk", "zh": "keji-xinwen.cn", "ja": "tech-news.co.jp", "ko": "it-news.co.kr",
    "tr": "teknoloji-haber.com.tr", "cs": "zpravy-dnes.cz",
}
SECTIONS = ("articles", "blog", "docs", "notes", "tutorials", "guides", "reference", "posts")
THEMES = (
    {"nav": ("Home", "Articles", "Tutorials", "About"), "wrap": "post", "banner": True},
    {"nav": ("Start", "Library", "Guides", "Newsletter", "Contact"), "wrap": "entry", "banner": False},
    {"nav": ("Home", "Topics", "Archive", "Subscribe"), "wrap": "article-body", "banner": True},
    {"nav": ("Blog", "Docs", "Community", "Jobs"), "wrap": "content", "banner": True},
)


def make_sites(domains: tuple[str, ...], rng: random.Random) -> list[Site]:
    sites = []
    for i, domain in enumerate(domains):
        name = domain.split(".")[0].replace("-", " ").title()
        sections = tuple(rng.sample(SECTIONS, 3))
        sites.append(Site(domain, name, sections, i % len(THEMES)))
    return sites


def slugify(text: str, max_len: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "page"


class UrlMaker:
    """Unique, plausible URLs."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def unique(self, url: str) -> str:
        candidate, n = url, 1
        while candidate in self.seen:
            n += 1
            candidate = re.sub(r"(/?)$", rf"-{n}\1", url, count=1)
        self.seen.add(candidate)
        return candidate

    def on_site(self, site: Site, title: str, rng: random.Random) -> str:
        section = rng.choice(site.sections)
        prefix = f"{section}/2024/{rng.randint(1, 3):02d}" if section in ("blog", "posts") else section
        host = ("www." if site.theme % 2 == 0 else "") + site.domain
        return self.unique(f"https://{host}/{prefix}/{slugify(title)}/")


# --- Passage pool ----------------------------------------------------------------------------


class PoolExhausted(Exception):
    """Every passage has been used MAX_PASSAGE_REUSE times."""


class PassagePool:
    """Hands out passages in source order; once all are used, reshuffles them for another round
    (at most `max_rounds`), so reused passages land in new combinations that share little."""

    def __init__(self, passages: Iterator[Passage], rng: random.Random, max_rounds: int = MAX_PASSAGE_REUSE):
        self._source: Iterator[Passage] | None = passages
        self._all: list[Passage] = []
        self._order: list[Passage] = []
        self._rng = rng
        self.round = 0
        self.max_rounds = max_rounds
        self.used_words = Counter()

    def _next(self) -> Passage:
        if self._source is not None:
            passage = next(self._source, None)
            if passage is not None:
                self._all.append(passage)
                return passage
            self._source = None
        if not self._order:
            self.round += 1
            if self.round >= self.max_rounds or not self._all:
                raise PoolExhausted
            self._order = self._all[:]
            self._rng.shuffle(self._order)
            self._order.reverse()  # pop() from the end = shuffled order
        return self._order.pop()

    def take(self, n_words: int) -> list[Passage]:
        """Passages (distinct) totalling at least n_words words."""
        out: list[Passage] = []
        words = 0
        while words < n_words:
            passage = self._next()
            if passage in out:
                continue
            out.append(passage)
            words += passage.n_words
            self.used_words[passage.source] += passage.n_words
        return out

    @property
    def mixed(self) -> bool:
        return self.round > 0

    @property
    def distinct_words(self) -> int:
        return sum(p.n_words for p in self._all)

    @property
    def rounds_used(self) -> int:
        return min(self.round + 1, self.max_rounds)


# --- Page builders ---------------------------------------------------------------------------

TITLE_TEMPLATES = ("{x}: a practical overview", "Understanding {x}", "Notes on {x}", "A closer look at {x}",
                   "{x} explained", "How {x} works", "Working with {x}", "Reference notes: {x}")


def _subject(passage: Passage) -> str:
    """What a page about this passage is called (private module names lose their underscore)."""
    if passage.source == "pydoc_data.topics":
        return passage.title.replace('"', "")
    return (passage.group or passage.title).lstrip("_")


def page_title(passages: list[Passage], mixed: bool, rng: random.Random) -> str:
    if mixed:
        subjects = list(dict.fromkeys(_subject(p) for p in passages))[:3]
        listed = ", ".join(subjects[:-1]) + f" and {subjects[-1]}" if len(subjects) > 1 else subjects[0]
        return f"Python notes: {listed}"
    return rng.choice(TITLE_TEMPLATES).format(x=_subject(passages[0]))


MIN_PAGE_ALPHA = 0.84  # Gopher wants 0.8 of spaCy tokens to hold a letter; keep a margin
MIN_PAGE_WORDS = 110


def _wordy_enough(paragraphs: list[str]) -> list[str]:
    """Drop the most punctuation-heavy paragraphs until the page as a whole passes Gopher's
    alphabetic-word rule with a margin (single paragraphs may be below it)."""
    paragraphs = list(paragraphs)
    while len(paragraphs) > 1 and alpha_token_ratio(" ".join(paragraphs)) < MIN_PAGE_ALPHA:
        paragraphs.remove(min(paragraphs, key=alpha_token_ratio))
    return paragraphs


def prose_page(passages: list[Passage], mixed: bool, rng: random.Random) -> Page:
    """Title, then each passage as a section with its paragraphs. Headings that spaCy would split
    into underscore tokens (`_pydecimal.Decimal._round`) are left out: they sink Gopher's alpha rule."""
    title = page_title(passages, mixed, rng)
    kept = set(_wordy_enough([p for passage in passages for p in passage.paragraphs]))
    blocks = [h("h1", title)]
    for passage in passages:
        paragraphs = [p for p in passage.paragraphs if p in kept]
        if not paragraphs:
            continue
        if passage.part == 0 and passage.title != title and alpha_token_ratio(passage.title) == 1.0:
            blocks.append(h("h2", passage.title))
        blocks += [h("p", p) for p in paragraphs]
    return Page(title, tuple(blocks))


def page_problem(page: Page) -> str | None:
    """Why a clean page could fail a quality filter (too short, repetitive, punctuation-heavy)."""
    words = sum(len(b.text().split()) for b in page.blocks if b.kind == "p")
    if words < MIN_PAGE_WORDS:
        return "short"
    text = page.text
    tokens = spacy_like_tokens(text)
    if alpha_share(tokens) < MIN_PAGE_ALPHA - 0.02:
        return "alpha"
    return repetition_problem(text, tokens)


FILTER_ORDER = ("url_filter", "text_extraction", "language_filter", "gopher_repetition", "gopher_quality",
                "c4_quality", "fineweb_quality", "minhash_dedup")


def planted_problem(case: str, page: Page) -> str | None:
    """Why a filter that runs before the one a planted page is aimed at might already drop it."""
    stage = FILTER_ORDER.index(CASES[case].expected_block or "minhash_dedup")
    text = page.text
    if stage > FILTER_ORDER.index("gopher_repetition"):
        # the repeated boilerplate line of `duplicated_lines` is meant to be there: check the rest
        unique = "\n".join(dict.fromkeys(text.split("\n"))) if case == "duplicated_lines" else text
        problem = repetition_problem(unique)
        if problem:
            return problem
    if stage > FILTER_ORDER.index("gopher_quality"):
        if alpha_token_ratio(text) < MIN_PAGE_ALPHA - 0.02:
            return "alpha"
        if len(text.split()) < 60:
            return "short"
    return None


def page_words(rng: random.Random) -> int:
    """Target length of a clean page: log-normal, median ~270 words, a few long pages."""
    return int(min(max(rng.lognormvariate(math.log(270), 0.6), 120), 2500))


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if s]


def _all_sentences(passages: list[Passage]) -> list[str]:
    return [s for p in passages for para in p.paragraphs for s in _sentences(para)]


def _first_sentences(passages: list[Passage], max_words: int) -> str:
    out: list[str] = []
    for sentence in _all_sentences(passages):
        if out and len(" ".join(out + [sentence]).split()) > max_words:
            break
        out.append(sentence)
    words = " ".join(out).split()
    if len(words) > max_words:
        return " ".join(words[:max_words]).rstrip(",;:") + "."
    return " ".join(words)


JS_NOTICES = (
    "This page works best with JavaScript enabled in your browser.",
    "Please enable JavaScript to view the interactive examples on this page.",
    "JavaScript is required to load the code playground and the reader comments.",
    "Your browser does not support JavaScript, or it has been turned off.",
    "To run the exercises you need a browser with JavaScript support.",
    "Some features of this site, such as search, will not work without JavaScript.",
    "Enable JavaScript to see the table of contents and the search box.",
    "We use JavaScript to render the diagrams, so they will not appear without it.",
    "The quiz at the end of this lesson needs JavaScript to check your answers.",
)
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore."
BRACE_LINES = (
    "In a template the placeholder is written as {name} and is filled in when the page is rendered.",
    "The format string uses {0} for the first argument and {1} for the second one.",
    "Write the set literal {1, 2, 3} when you need a quick collection of unique numbers.",
    "Dictionary displays such as {key: value} create a new dictionary object every time they run.",
)
REPEATED_LINES = (
    "Continue reading below the advertisement.",
    "Subscribe to our newsletter for weekly Python tips.",
    "Advertisement: scroll down to continue reading this article.",
    "Share this article with your friends and colleagues.",
)
HASHTAGS = ("#python", "#programming", "#coding", "#100daysofcode", "#devlife", "#learntocode",
            "#softwareengineering", "#pythontips", "#tech", "#developer", "#opensource", "#codinglife",
            "#stdlib", "#tutorial", "#webdev", "#datascience", "#pythonprogramming", "#codenewbie",
            "#backend", "#linux", "#automation", "#cleancode", "#pythondeveloper", "#techtips",
            "#programmer", "#softwaredevelopment", "#devcommunity", "#computerscience")


def repetitive_page(passages: list[Passage], rng: random.Random) -> tuple[Page, str]:
    """Gopher repetition: the same lines over and over, or the same words re-wrapped three times."""
    paragraphs = [p for passage in passages for p in passage.paragraphs][:4]
    title = f"{_subject(passages[0])} - {rng.choice(('Updated', 'Read more', 'Full guide'))}"
    if rng.random() < 0.5:
        lines = paragraphs * rng.randint(3, 5)
        return Page(title, (h("h1", title), *[h("p", x) for x in lines])), "repeated_lines"
    words = " ".join(paragraphs).split()[:120]
    stream = words * 3
    width = rng.choice((11, 13, 17))
    lines = [" ".join(stream[i:i + width]) for i in range(0, len(stream), width)]
    return Page(title, (h("h1", title), *[h("p", x) for x in lines])), "repeated_ngrams"


def too_short_page(passages: list[Passage], rng: random.Random) -> Page:
    """Gopher quality: fewer than 50 words. Still 240+ characters: trafilatura repeats the text of
    shorter pages when it falls back to its baseline extractor (then Gopher repetition would fire)."""
    words = " ".join(p for passage in passages for p in passage.paragraphs).split()
    n = rng.randint(34, 44)
    while n < len(words) and len(" ".join(words[:n])) < 240:
        n += 1
    text = " ".join(words[:min(n, 46)]).rstrip(",;:.") + "."
    title = passages[0].title
    return Page(title, (h("h1", title), h("p", text)))


def symbol_heavy_page(passages: list[Passage], rng: random.Random) -> Page:
    """Gopher quality: a social-media style post whose hashtags make '#' > 10% of the words."""
    title = f"Quick tip: {_subject(passages[0])}"
    text = _first_sentences(passages, rng.randint(80, 110))  # enough prose for language ID
    tags = " ".join(rng.sample(HASHTAGS, rng.randint(24, 28)))
    return Page(title, (h("h1", title), h("p", text), h("p", "Follow us for more tips like this one!"),
                        h("p", tags)))


def ellipsis_page(passages: list[Passage], rng: random.Random) -> Page:
    """Gopher quality: a teaser list, every line cut off with an ellipsis."""
    title = rng.choice(("Latest articles", "Recent posts", "More from our blog", "Popular this week"))
    lines = []
    for paragraph in [p for passage in passages for p in passage.paragraphs][:rng.randint(8, 14)]:
        lines.append(" ".join(paragraph.split()[:rng.randint(9, 16)]).rstrip(".,;:") + "...")
    return Page(title, (h("h1", title), *[h("p", x) for x in lines]))


def low_alpha_page(passages: list[Passage], rng: random.Random) -> Page:
    """Gopher quality: a short intro above a big table of numbers (< 80% words with a letter)."""
    title = f"Benchmark results: {_subject(passages[0])}"
    intro = _first_sentences(passages, rng.randint(170, 210))  # enough prose for language ID
    rows = ["Version\tDate\tMean (ms)\tStd (ms)\tMemory (MB)\tRuns"]
    day = datetime(2023, 1, 1) + timedelta(days=rng.randint(0, 300))
    for i in range(rng.randint(6, 7)):
        day += timedelta(days=rng.randint(3, 20))
        rows.append(f"3.{rng.choice((10, 11, 12))}.{i % 9}\t{day:%Y-%m-%d}\t{rng.uniform(5, 90):.2f}\t"
                    f"{rng.uniform(0.1, 4):.2f}\t{rng.uniform(10, 400):.1f}\t{rng.randint(100, 5000)}")
    return Page(title, (h("h1", title), h("p", intro), h("table", *rows)))


def lorem_page(page: Page, rng: random.Random) -> Page:
    """C4 quality: a page whose template placeholder text was never replaced."""
    at = rng.randint(1, len(page.blocks))
    return replace(page, blocks=page.blocks[:at] + (h("p", LOREM),) + page.blocks[at:])


def javascript_page(passages: list[Passage], rng: random.Random) -> Page:
    """C4 quality: mostly 'enable JavaScript' notices; without those lines < 5 sentences remain."""
    title = f"Interactive lesson: {_subject(passages[0])}"
    sentences = _all_sentences(passages)
    sentence = next((x for x in sentences if 12 <= len(x.split()) <= 35), sentences[0])
    notices = rng.sample(JS_NOTICES, rng.randint(5, 7))
    return Page(title, (h("h1", title), h("p", sentence), *[h("p", x) for x in notices]))


def braces_page(page: Page, rng: random.Random) -> Page:
    """C4 quality: a curly bracket (code or a template) anywhere drops the page."""
    at = rng.randint(2, len(page.blocks))
    return replace(page, blocks=page.blocks[:at] + (h("p", rng.choice(BRACE_LINES)),) + page.blocks[at:])


def line_punct_page(passages: list[Passage], rng: random.Random) -> Page:
    """FineWeb quality: an index of summaries, no line ending in punctuation."""
    title = f"Index of {_subject(passages[0])} and related topics"
    lines = []
    for passage in passages:
        for paragraph in passage.paragraphs:
            words = _sentences(paragraph)[0].split()[:rng.randint(10, 18)]
            lines.append(re.sub(r"\W+$", "", " ".join(words)))
    lines = list(dict.fromkeys(x for x in lines if len(x.split()) >= 5))[:rng.randint(12, 20)]
    return Page(title, (h("h1", title), *[h("p", x) for x in lines]))


def short_lines_page(passages: list[Passage], rng: random.Random) -> Page:
    """FineWeb quality: text set in a narrow column, most lines 30 characters or fewer."""
    title = f"{_subject(passages[0])} in short"
    sentences = _all_sentences(passages)[:14]
    for width in range(rng.randint(20, 24), 11, -2):
        blocks = [h("br", *lines) for lines in (_narrow(s, width) for s in sentences) if lines]
        lines = [x for b in blocks for x in b.lines]
        if lines and sum(len(x) <= 30 for x in lines) / len(lines) > 0.8:
            break
    return Page(title, (h("h1", title), *blocks))


def _narrow(sentence: str, width: int) -> list[str]:
    """Wrap a sentence to about `width`, every line at 3+ words (C4 drops shorter lines before FineWeb)."""
    lines: list[list[str]] = [[]]
    for word in sentence.split():
        current = lines[-1]
        if len(current) >= 3 and len(" ".join(current + [word])) > width:
            lines.append([word])
        else:
            current.append(word)
    if len(lines) > 1 and len(lines[-1]) < 3:
        tail = lines.pop()
        lines[-1] += tail
    return [" ".join(x) for x in lines] if len(lines[0]) >= 3 else []


def duplicated_lines_page(page: Page, rng: random.Random) -> Page:
    """FineWeb quality: one boilerplate line repeated inside the article (> 1% duplicated characters),
    too little for Gopher's repetition thresholds."""
    line = rng.choice(REPEATED_LINES)
    n_chars = len(page.text)
    copies = min(max(2, math.ceil(0.03 * n_chars / len(line)) + 1), 5)
    blocks = list(page.blocks)
    step = max(len(blocks) // copies, 1)
    for i in range(copies, 0, -1):
        blocks.insert(min(i * step, len(blocks)), h("p", line))
    return replace(page, blocks=tuple(blocks))


def non_english_page(lang: str, sentences: list[str], rng: random.Random) -> Page:
    """Language ID: real sentences of one language, a few per paragraph."""
    chosen = rng.sample(sentences, min(len(sentences), rng.randint(6, 14)))
    title, rest = chosen[0].rstrip("."), chosen[1:] or chosen
    per = rng.randint(2, 3)
    paragraphs = [" ".join(rest[i:i + per]) for i in range(0, len(rest), per)]
    return Page(title, (h("h1", title), *[h("p", p) for p in paragraphs]), lang=lang)


# --- PII -------------------------------------------------------------------------------------

FIRST_NAMES = ("jane", "john", "maria", "wei", "aisha", "lucas", "emma", "noah", "olga", "ravi", "sofia",
               "kenji", "fatima", "liam", "chloe", "mateo")
LAST_NAMES = ("doe", "smith", "garcia", "chen", "okafor", "muller", "rossi", "kowalski", "tanaka", "silva",
              "novak", "ibrahim", "larsen", "dubois", "patel", "obrien")
EMAIL_DOMAINS = ("example.org", "example.com", "example.net", "mailbox.org", "fastmail.com", "posteo.de")
PII_TEMPLATES = {
    "email": ("Questions about this page can be sent to {email}.",
              "If you spot a mistake, please write to the author at {email} and we will fix it."),
    "phone": ("You can reach the maintainer by phone at {phone} during office hours.",
              "For group training sessions, call our office at {phone}."),
    "ip": ("The examples were tested on our build server at {ip}, which is no longer maintained.",
           "A copy of these notes is mirrored on the host {ip} for readers behind a firewall."),
}


def fake_email(rng: random.Random) -> str:
    sep = rng.choice((".", "_", ""))
    return f"{rng.choice(FIRST_NAMES)}{sep}{rng.choice(LAST_NAMES)}@{rng.choice(EMAIL_DOMAINS)}"


def fake_phone(rng: random.Random) -> str:
    """Phone numbers in the formats PII scrubbers look for (US, UK, DE, international)."""
    n = rng.randint
    return rng.choice((
        f"({n(201, 989)}) {n(200, 999)}-{n(0, 9999):04d}",
        f"{n(201, 989)}-{n(200, 999)}-{n(0, 9999):04d}",
        f"+44 20 {n(7000, 8999)} {n(0, 9999):04d}",
        f"+49 30 {n(1000, 9999)} {n(1000, 9999)}",
        f"+1 {n(201, 989)} {n(200, 999)} {n(0, 9999):04d}",
    ))


def fake_public_ip(rng: random.Random) -> str:
    """A random IPv4 address that is globally routable (private and documentation ranges are not PII)."""
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not ip.is_multicast and str(ip).count(".") == 3:
            return str(ip)


def add_pii(page: Page, rng: random.Random) -> tuple[Page, list[str]]:
    """Insert 1-3 sentences holding an email, phone number or public IP between paragraphs."""
    makers: dict[str, Callable[[random.Random], str]] = {"email": fake_email, "phone": fake_phone,
                                                         "ip": fake_public_ip}
    kinds = rng.sample(sorted(makers), rng.randint(1, 3))
    blocks = list(page.blocks)
    planted = []
    for kind in kinds:
        value = makers[kind](rng)
        sentence = rng.choice(PII_TEMPLATES[kind]).format(**{kind: value})
        blocks.insert(rng.randint(1, len(blocks)), h("p", sentence))
        planted.append(value)
    return replace(page, blocks=tuple(blocks)), planted


# --- Duplicates ------------------------------------------------------------------------------


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of word 5-gram shingles, as MinHash estimates it."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def near_duplicate(page: Page, vocabulary: list[str], rng: random.Random,
                   change: float = 0.05, min_jaccard: float = 0.85) -> tuple[Page, float]:
    """Copy a page and rewrite ~`change` of its words in a few short runs (an edited repost).
    Runs rather than scattered words keep the 5-gram Jaccard high; the change shrinks if needed."""
    for attempt in range(6):
        budget = max(2, round(change * len(page.text.split()) / (2 ** attempt)))
        copy = _rewrite_runs(page, vocabulary, budget, rng)
        score = jaccard(page.text, copy.text)
        if min_jaccard <= score < 1.0:
            return copy, round(score, 4)
    return copy, round(score, 4)


def _rewrite_runs(page: Page, vocabulary: list[str], budget: int, rng: random.Random) -> Page:
    blocks = list(page.blocks)
    paragraphs = [i for i, b in enumerate(blocks) if b.kind == "p" and len(b.lines[0].split()) >= 12]
    changed = 0
    while changed < budget and paragraphs:
        i = rng.choice(paragraphs)
        words = blocks[i].lines[0].split()
        run = min(rng.randint(6, 14), budget - changed, len(words) - 2)
        start = rng.randint(0, len(words) - run - 1)  # never the last word: keep the final period
        for j in range(start, start + run):
            new = rng.choice(vocabulary)
            words[j] = new.capitalize() if words[j][:1].isupper() else new
        changed += run
        blocks[i] = h("p", " ".join(words))
    return replace(page, blocks=tuple(blocks))


# --- HTML ------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def body_html(page: Page) -> str:
    parts = []
    for block in page.blocks:
        if block.kind in ("h1", "h2", "p"):
            parts.append(f"<{block.kind}>{_esc(block.lines[0])}</{block.kind}>")
        elif block.kind == "br":
            parts.append("<p>" + "<br>\n".join(_esc(x) for x in block.lines) + "</p>")
        elif block.kind == "table":
            head, *rows = [row.split("\t") for row in block.lines]
            cells = "".join(f"<th>{_esc(c)}</th>" for c in head)
            body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>\n" for r in rows)
            parts.append(f'<table class="results">\n<thead><tr>{cells}</tr></thead>\n'
                         f"<tbody>\n{body}</tbody>\n</table>")
    return "\n".join(parts)


def _nav(site: Site) -> str:
    items = "".join(f'<li><a href="/{slugify(x)}/">{x}</a></li>' for x in THEMES[site.theme]["nav"])
    return f'<nav class="main-nav" aria-label="Main"><ul>{items}</ul></nav>'


def _footer(site: Site, year: int) -> str:
    return (f'<footer class="site-footer"><p>&copy; {year} {_esc(site.name)}. All rights reserved.</p>'
            '<ul class="footer-links"><li><a href="/privacy/">Privacy policy</a></li>'
            '<li><a href="/terms/">Terms of use</a></li><li><a href="/contact/">Contact us</a></li></ul>'
            "</footer>")


COOKIE_BANNER = ('<div id="cookie-banner" class="cookie-consent" role="dialog"><p>This website uses cookies '
                 "to improve your experience. By continuing to browse you accept our cookie policy.</p>"
                 '<button type="button">Accept</button></div>')


def _head(title: str, site: Site, url: str, lang: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)} | {_esc(site.name)}</title>\n"
            f'<link rel="canonical" href="{html.escape(url)}">\n'
            f'<meta property="og:site_name" content="{html.escape(site.name)}">\n'
            '<link rel="stylesheet" href="/static/css/site.css">\n'
            "<script>window.dataLayer = window.dataLayer || [];</script>\n</head>\n")


def render_html(doc: Doc) -> str:
    """A full HTML page: site chrome around the main content (or nothing but chrome)."""
    site, date = doc.site, doc.date
    assert site is not None
    if doc.page is None:
        return _app_shell(doc)
    theme = THEMES[site.theme]
    related = "".join(f'<li><a href="/{s}/">More in {s}</a></li>' for s in site.sections)
    return (
        _head(doc.page.title, site, doc.url, doc.page.lang)
        + "<body>\n"
        + (COOKIE_BANNER + "\n" if theme["banner"] else "")
        + f'<header class="site-header"><a class="logo" href="/">{_esc(site.name)}</a>{_nav(site)}</header>\n'
        + f'<main>\n<article class="{theme["wrap"]}">\n'
        + f'<p class="byline">Published {date:%B %d, %Y}</p>\n'
        + body_html(doc.page)
        + "\n</article>\n"
        + f'<aside class="sidebar"><h3>Related</h3><ul>{related}</ul></aside>\n</main>\n'
        + _footer(site, date.year)
        + '\n<script src="/static/js/app.js" defer></script>\n</body>\n</html>\n'
    )


def _app_shell(doc: Doc) -> str:
    """A page with navigation, sidebar and footer but no main content (rendered client-side)."""
    site = doc.site
    assert site is not None
    links = "".join(f'<li><a href="/{s}/">{s.title()}</a></li>' for s in site.sections)
    return (
        _head(site.name, site, doc.url, "en")
        + "<body>\n"
        + f'<aside class="site-nav"><a class="logo" href="/">{_esc(site.name)}</a>{_nav(site)}</aside>\n'
        + '<div id="app" data-route="' + html.escape(doc.url) + '"></div>\n'
        + f'<aside class="sidebar"><h3>Popular sections</h3><ul>{links}</ul></aside>\n'
        + _footer(site, doc.date.year)
        + '\n<script>document.getElementById("app").dataset.ready = "1";</script>\n'
        + '<script src="/static/js/bundle.js" defer></script>\n</body>\n</html>\n'
    )


# --- Binary payloads for non-HTML records ---------------------------------------------------


def tiny_png(rng: random.Random, size: int = 24) -> bytes:
    """A valid RGB PNG with a seeded gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    r, g = rng.randint(0, 255), rng.randint(0, 255)
    rows = b"".join(
        b"\x00" + bytes(v for x in range(size) for v in ((r + x * 5) % 256, (g + y * 7) % 256, 128))
        for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(
        b"IEND", b"")


def tiny_pdf(title: str) -> bytes:
    """A valid one-page PDF."""
    stream = f"BT /F1 18 Tf 72 720 Td ({title}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- Planning --------------------------------------------------------------------------------


class SimilarityGuard:
    """Keeps clean pages apart: a page sharing too many 5-grams with an earlier page (possible once
    passages are reused) is refused, so only planted duplicates are near-duplicates."""

    def __init__(self, max_jaccard: float = MAX_CLEAN_JACCARD):
        self.max_jaccard = max_jaccard
        self.index: dict[str, list[int]] = {}
        self.sizes: list[int] = []

    def check(self, text: str) -> str | None:
        grams = shingles(text)
        shared = Counter(i for g in grams for i in self.index.get(g, ()))
        for i, n in shared.items():
            if n / (len(grams) + self.sizes[i] - n) > self.max_jaccard:
                return "similar_to_earlier_page"
        return None

    def add(self, text: str) -> None:
        grams = shingles(text)
        page = len(self.sizes)
        self.sizes.append(len(grams))
        for g in grams:
            self.index.setdefault(g, []).append(page)


def case_counts(n_documents: int) -> dict[str, int]:
    """Documents per case: each planted case at least once, the rest clean."""
    counts = {spec.name: max(1, round(spec.share * n_documents)) for spec in PLANTED_CASES}
    counts["clean"] = n_documents - sum(counts.values())
    return counts


def _record_id(rng: random.Random) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def _warc_date(date: datetime) -> str:
    return date.strftime("%Y-%m-%dT%H:%M:%SZ")


class Builder:
    """Builds the documents in memory; `write_corpus` puts them on disk."""

    def __init__(self, n_documents: int, seed: int, n_warc_files: int):
        self.n_documents, self.seed, self.n_warc_files = n_documents, seed, n_warc_files
        self.report = SourceReport()
        self.pool = PassagePool(english_passages(self.report), self.rng("pool"))
        self.urls = UrlMaker()
        site_rng = self.rng("sites")
        self.sites = make_sites(CLEAN_DOMAINS, site_rng)
        self.mirrors = make_sites(MIRROR_DOMAINS, site_rng)
        self.blocked = make_sites(BLOCKED_DOMAINS, site_rng)
        self.docs: list[Doc] = []
        self.capped = False
        self.rejected_pages: Counter = Counter()
        self.similar = SimilarityGuard()
        self.n_spam = 0

    def rng(self, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}:{purpose}")

    def clean_page(self, n_words: int, rng: random.Random) -> Page:
        """A prose page of about n_words that passes the quality filters: pages that come out too
        short after trimming get more passages, repetitive ones are rebuilt from fresh passages."""
        passages = self.pool.take(n_words)
        for _ in range(20):
            page = prose_page(passages, self.pool.mixed, rng)
            problem = page_problem(page) or self.similar.check(page.text)
            if problem is None:
                self.similar.add(page.text)
                return page
            if problem == "short":
                passages += self.pool.take(MIN_PAGE_WORDS)
            else:
                self.rejected_pages[problem] += 1
                passages = self.pool.take(n_words)
        raise PoolExhausted  # the remaining text cannot make clean pages

    def _planted_page(self, case: str, rng: random.Random) -> tuple[Page, str | None]:
        """A page for a planted case; each takes as much prose from the pool as it needs."""
        take = self.pool.take
        if case == "repetitive":
            return repetitive_page(take(130), rng)
        makers: dict[str, Callable[[], Page]] = {
            "spam_url": lambda: self.clean_page(page_words(rng), rng),
            "too_short": lambda: too_short_page(take(50), rng),
            "symbol_heavy": lambda: symbol_heavy_page(take(120), rng),
            "ellipsis_lines": lambda: ellipsis_page(take(rng.randint(200, 300)), rng),
            "low_alpha": lambda: low_alpha_page(take(220), rng),
            "lorem_ipsum": lambda: lorem_page(self.clean_page(rng.randint(300, 500), rng), rng),
            "javascript_notice": lambda: javascript_page(take(80), rng),
            "curly_braces": lambda: braces_page(self.clean_page(rng.randint(250, 450), rng), rng),
            "fineweb_line_punct": lambda: line_punct_page(take(rng.randint(300, 450)), rng),
            "short_lines": lambda: short_lines_page(take(rng.randint(120, 200)), rng),
            "duplicated_lines": lambda: duplicated_lines_page(self.clean_page(rng.randint(200, 320), rng),
                                                              rng),
        }
        return makers[case](), None

    def _prose_doc(self, case: str, rng: random.Random) -> Doc:
        """A planted document that an earlier filter is unlikely to catch first (retried if it would)."""
        for _ in range(10):
            page, variant = self._planted_page(case, rng)
            if planted_problem(case, page) is None:
                break
            self.rejected_pages[f"planted_{case}"] += 1
        return Doc(case, page, variant=variant)

    def build(self) -> None:
        counts = case_counts(self.n_documents)
        rng = self.rng("cases")
        for case in PROSE_CASES:
            try:
                self.docs += [self._prose_doc(case, rng) for _ in range(counts[case])]
            except PoolExhausted:  # only with very little source text: fewer planted pages
                self.capped = True
        self.docs += self._non_english_docs(counts["non_english"], self.rng("non_english"))
        self.docs += [Doc("boilerplate_only", None) for _ in range(counts["boilerplate_only"])]
        clean = self._clean_docs(counts["clean"] + counts["pii"], self.rng("clean"))
        self._plant_pii(clean, counts["pii"], self.rng("pii"))
        self.docs += clean
        self.docs += self._duplicates(clean, counts, self.rng("duplicates"))
        self._place(self.rng("place"))

    def _clean_docs(self, n: int, rng: random.Random) -> list[Doc]:
        docs = []
        for _ in range(n):
            try:
                page = self.clean_page(page_words(rng), rng)
            except PoolExhausted:
                self.capped = True
                break
            docs.append(Doc("clean", page, variant="remix" if self.pool.mixed else None))
        return docs

    def _plant_pii(self, clean: list[Doc], n: int, rng: random.Random) -> None:
        for doc in rng.sample(clean, min(n, len(clean) // 2)):
            assert doc.page is not None
            doc.page, doc.pii = add_pii(doc.page, rng)
            doc.case = "pii"

    def _non_english_docs(self, n: int, rng: random.Random) -> list[Doc]:
        texts = non_english_texts(self.report)
        langs = sorted(texts)
        if not langs:
            return []
        docs = []
        for i in range(n):
            lang = langs[i % len(langs)]
            docs.append(Doc("non_english", non_english_page(lang, texts[lang], rng), lang=lang, variant=lang))
        return docs

    def _duplicates(self, clean: list[Doc], counts: dict[str, int], rng: random.Random) -> list[Doc]:
        originals = [d for d in clean if d.case == "clean"]
        wanted = counts["exact_duplicate"] + counts["near_duplicate"]
        chosen = rng.sample(originals, min(wanted, len(originals) // 2))
        vocabulary = sorted({w.lower() for d in originals for w in d.page.text.split() if w.isalpha()})
        copies = []
        for i, original in enumerate(chosen):
            assert original.page is not None
            if i < counts["exact_duplicate"]:
                copies.append(Doc("exact_duplicate", original.page, duplicate_of=original, jaccard=1.0))
            else:
                page, score = near_duplicate(original.page, vocabulary, rng)
                copies.append(Doc("near_duplicate", page, duplicate_of=original, jaccard=score))
        return copies

    def _place(self, rng: random.Random) -> None:
        """Shuffle, then give every document its source, site, URL, date and id."""
        rng.shuffle(self.docs)
        for doc in self.docs:
            warc_only = CASES[doc.case].warc_only
            doc.source = "warc" if warc_only or rng.random() >= JSONL_SHARE else "jsonl"
            doc.date = CRAWL_START + timedelta(seconds=rng.randrange(CRAWL_SECONDS))
            doc.id = _record_id(rng)
            doc.url = self._url(doc, rng)

    def _url(self, doc: Doc, rng: random.Random) -> str:
        title = doc.page.title if doc.page else "home"
        if doc.case == "spam_url":
            self.n_spam += 1
            if self.n_spam % 3:  # two in three on a blocklisted domain, one with a banned word
                doc.site = rng.choice(self.blocked)
                doc.variant = "blocklisted_domain"
                return self.urls.on_site(doc.site, title, rng)
            doc.variant = "banned_word_in_url"
            url = rng.choice(BANNED_WORD_URLS).format(slug=slugify(title))
            doc.site = Site(url.split("/")[2], "Discount Store", ("shop",), 1)
            return self.urls.unique(url)
        if doc.case == "non_english":
            domain = NON_ENGLISH_DOMAINS.get(doc.lang, f"{doc.lang}.worldnews-digest.com")
            doc.site = Site(domain, domain.split(".")[0].title(), ("artikel", "news", "blog"), 2)
            return self.urls.on_site(doc.site, f"{doc.lang}-{rng.randrange(10 ** 6)}", rng)
        pool = self.mirrors if doc.duplicate_of is not None and rng.random() < 0.6 else self.sites
        doc.site = rng.choice(pool)
        return self.urls.on_site(doc.site, title, rng)


# --- Writing ---------------------------------------------------------------------------------


def _gzip_bytes(data: bytes) -> bytes:
    """gzip with a zero mtime and no file name, so the bytes depend on the content only."""
    buf = BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def _http_date(date: datetime) -> str:
    return date.strftime("%a, %d %b %Y %H:%M:%S GMT")


SERVERS = ("nginx", "Apache", "cloudflare", "nginx/1.24.0", "LiteSpeed")


class WarcFileWriter:
    """One Common Crawl style WARC file: warcinfo, then request/response pairs, a revisit, non-HTML."""

    def __init__(self, path: Path, rng: random.Random):
        from warcio.warcwriter import WARCWriter

        self.path, self.rng = path, rng
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.writer = WARCWriter(self._fh, gzip=True, warc_version="1.0")
        self.counts: Counter = Counter()
        self.warcinfo_id = _record_id(rng)
        self.responses: list[tuple[str, str, str]] = []  # url, date, payload digest

    def close(self) -> None:
        self._fh.close()

    def _write(self, record) -> None:
        self.writer.write_record(record)
        self.counts[record.rec_type] += 1

    def warcinfo(self, date: datetime) -> None:
        info = (f"software: llmops demo corpus builder {CORPUS_FORMAT_VERSION}\r\n"
                f"format: WARC File Format 1.0\r\nisPartOf: {CRAWL}\r\n"
                "operator: llmops demo (synthetic crawl)\r\n"
                "description: Demo corpus of real CPython documentation text in HTML pages\r\n").encode()
        headers = {"WARC-Record-ID": self.warcinfo_id, "WARC-Date": _warc_date(date),
                   "WARC-Filename": self.path.name, "Content-Type": "application/warc-fields"}
        self._write(self.writer.create_warc_record("", "warcinfo", payload=BytesIO(info), length=len(info),
                                                   warc_headers_dict=headers))

    def request(self, url: str, date: datetime) -> str:
        from warcio.statusandheaders import StatusAndHeaders

        parts = url.split("/", 3)
        http = StatusAndHeaders(f"GET /{parts[3] if len(parts) > 3 else ''} HTTP/1.1", [
            ("Host", parts[2]), ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
            ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            ("Accept-Language", "en-US,en;q=0.5"), ("Connection", "Keep-Alive")], is_http_request=True)
        rec_id = _record_id(self.rng)
        self._write(self.writer.create_warc_record(url, "request", http_headers=http, warc_headers_dict={
            "WARC-Record-ID": rec_id, "WARC-Date": _warc_date(date), "WARC-Warcinfo-ID": self.warcinfo_id}))
        return rec_id

    def response(self, url: str, date: datetime, record_id: str, body: bytes, mime: str,
                 concurrent_to: str | None = None) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        content_type = f"{mime}; charset=utf-8" if mime.startswith("text/") else mime
        http = StatusAndHeaders("200 OK", [
            ("Date", _http_date(date)), ("Server", self.rng.choice(SERVERS)), ("Content-Type", content_type),
            ("Content-Length", str(len(body))), ("Connection", "close")], protocol="HTTP/1.1")
        headers = {"WARC-Record-ID": record_id, "WARC-Date": _warc_date(date),
                   "WARC-Warcinfo-ID": self.warcinfo_id, "WARC-IP-Address": fake_public_ip(self.rng),
                   "WARC-Identified-Payload-Type": mime}
        if concurrent_to:
            headers["WARC-Concurrent-To"] = concurrent_to
        record = self.writer.create_warc_record(url, "response", payload=BytesIO(body), length=len(body),
                                                http_headers=http, warc_headers_dict=headers)
        self._write(record)
        if mime == "text/html":
            digest = record.rec_headers.get_header("WARC-Payload-Digest")
            self.responses.append((url, _warc_date(date), digest))

    def revisit(self, date: datetime) -> None:
        """A later capture of an earlier page whose payload had not changed (not a document)."""
        from warcio.statusandheaders import StatusAndHeaders

        url, first_date, digest = self.responses[0]
        http = StatusAndHeaders("200 OK", [("Date", _http_date(date)),
                                           ("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        self._write(self.writer.create_revisit_record(url, digest, url, first_date, http_headers=http,
                                                      warc_headers_dict={
                                                          "WARC-Record-ID": _record_id(self.rng),
                                                          "WARC-Date": _warc_date(date),
                                                          "WARC-Warcinfo-ID": self.warcinfo_id}))


def _write_warc(path: Path, docs: list[Doc], rng: random.Random, site_domain: str) -> Counter:
    writer = WarcFileWriter(path, rng)
    try:
        writer.warcinfo(docs[0].date if docs else CRAWL_START)
        extras_at = {len(docs) // 3: "image/png", (2 * len(docs)) // 3: "application/pdf"}
        for i, doc in enumerate(docs):
            if i in extras_at:
                mime = extras_at[i]
                payload = tiny_png(rng) if mime == "image/png" else tiny_pdf("Annual report 2023")
                ext = "png" if mime == "image/png" else "pdf"
                url = f"https://www.{site_domain}/static/media/file-{rng.randrange(10 ** 6)}.{ext}"
                writer.response(url, doc.date, _record_id(rng), payload, mime)
            request_id = writer.request(doc.url, doc.date) if i % 4 == 0 else None
            writer.response(doc.url, doc.date, doc.id, render_html(doc).encode("utf-8"), "text/html",
                            concurrent_to=request_id)
        if writer.responses:
            writer.revisit((docs[-1].date if docs else CRAWL_START) + timedelta(minutes=5))
    finally:
        writer.close()
    return writer.counts


def _jsonl_row(doc: Doc, file_path: str) -> dict:
    assert doc.page is not None
    return {"text": doc.page.text, "id": doc.id, "dump": CRAWL, "url": doc.url, "date": _warc_date(doc.date),
            "file_path": file_path, "language": None, "language_score": None}


def _crawl_file_path(rng: random.Random, index: int) -> str:
    segment = f"1707947{rng.randrange(10 ** 6):06d}.{rng.randrange(100)}"
    return (f"s3://commoncrawl/crawl-data/{CRAWL}/segments/{segment}/warc/"
            f"CC-MAIN-20240220211055-20240221001055-{index:05d}.warc.gz")


def _ground_truth_row(doc: Doc) -> dict:
    return {"id": doc.id, "url": doc.url, "source": doc.source, "file": doc.file, "case": doc.case,
            "variant": doc.variant, "expected_block": doc.expected_block, "pii": doc.pii,
            "duplicate_of": doc.duplicate_of.id if doc.duplicate_of else None, "jaccard": doc.jaccard,
            "lang": doc.page.lang if doc.page else "en"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_corpus(builder: Builder, out: Path) -> dict:
    """Write WARC, JSONL, ground truth and manifest; return the manifest."""
    (out / "warc").mkdir(parents=True, exist_ok=True)
    (out / "jsonl").mkdir(parents=True, exist_ok=True)
    for stale in [*(out / "warc").glob("crawl-*.warc.gz"), *(out / "jsonl").glob("extracted-*.jsonl.gz")]:
        stale.unlink()
    warc_docs = [d for d in builder.docs if d.source == "warc"]
    jsonl_docs = [d for d in builder.docs if d.source == "jsonl"]
    n_jsonl_files = max(1, round(builder.n_warc_files / 2)) if jsonl_docs else 0
    rng = builder.rng("write")
    record_counts: Counter = Counter()
    files = []
    for i in range(builder.n_warc_files):
        rel = f"warc/crawl-{i:05d}.warc.gz"
        chunk = sorted(warc_docs[i::builder.n_warc_files], key=lambda d: d.date)
        for doc in chunk:
            doc.file = rel
        record_counts += _write_warc(out / rel, chunk, rng, builder.sites[i % len(builder.sites)].domain)
        files.append(rel)
    for i in range(n_jsonl_files):
        rel = f"jsonl/extracted-{i:05d}.jsonl.gz"
        chunk = sorted(jsonl_docs[i::n_jsonl_files], key=lambda d: d.date)
        file_path = _crawl_file_path(rng, i)
        lines = []
        for doc in chunk:
            doc.file = rel
            lines.append(json.dumps(_jsonl_row(doc, file_path), ensure_ascii=False))
        (out / rel).write_bytes(_gzip_bytes(("\n".join(lines) + "\n").encode("utf-8")))
        files.append(rel)
    ordered = sorted(builder.docs, key=lambda d: (d.file, d.date, d.id))
    with open(out / "ground_truth.jsonl", "w", encoding="utf-8") as f:
        for doc in ordered:
            f.write(json.dumps(_ground_truth_row(doc), ensure_ascii=False) + "\n")
    files.append("ground_truth.jsonl")
    manifest = _manifest(builder, out, files, record_counts)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _manifest(builder: Builder, out: Path, files: list[str], record_counts: Counter) -> dict:
    docs = builder.docs
    kept = [d for d in docs if d.expected_block is None and d.page is not None]
    return {
        "format_version": CORPUS_FORMAT_VERSION,
        "seed": builder.seed,
        "n_documents_requested": builder.n_documents,
        "n_documents": len(docs),
        "n_warc_files": builder.n_warc_files,
        "crawl": CRAWL,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "files": [{"path": rel, "bytes": (out / rel).stat().st_size, "sha256": _sha256(out / rel)}
                  for rel in files],
        "total_bytes": sum((out / rel).stat().st_size for rel in files),
        "cases": dict(sorted(Counter(d.case for d in docs).items())),
        "expected_blocks": dict(sorted(Counter(str(d.expected_block) for d in docs).items())),
        "sources": dict(sorted(Counter(d.source for d in docs).items())),
        "warc_records": dict(sorted(record_counts.items())),
        "expected_kept_documents": len(kept),
        "expected_kept_text_bytes": sum(len(d.page.text.encode("utf-8")) for d in kept if d.page),
        "clean_documents_capped": builder.capped,
        "rejected_pages": dict(sorted(builder.rejected_pages.items())),
        "passage_rounds": builder.pool.rounds_used,
        "text_sources": {"used": builder.report.used, "missing": builder.report.missing,
                         "english_distinct_words": builder.pool.distinct_words,
                         "english_words_drawn": dict(sorted(builder.pool.used_words.items()))},
    }


def build_demo_corpus(out_dir: str | Path, *, n_documents: int = 3000, seed: int = 0,
                      n_warc_files: int = 4) -> dict:
    """Build the demo raw web corpus into `out_dir` (created if missing) and return its manifest.

    Writes `warc/crawl-XXXXX.warc.gz`, `jsonl/extracted-XXXXX.jsonl.gz`, `ground_truth.jsonl` and
    `manifest.json`; the same arguments give byte-identical files. If the available text runs out
    (each passage reused at most MAX_PASSAGE_REUSE times) the clean share is capped, and the manifest
    says so (`clean_documents_capped`, `n_documents`)."""
    if isinstance(n_documents, bool) or not isinstance(n_documents, int) or n_documents < MIN_DOCUMENTS:
        raise ValueError(f"n_documents must be an integer >= {MIN_DOCUMENTS} (every planted case needs "
                         f"room next to the clean pages), got {n_documents!r}")
    if isinstance(n_warc_files, bool) or not isinstance(n_warc_files, int) or n_warc_files < 1:
        raise ValueError(f"n_warc_files must be an integer >= 1, got {n_warc_files!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builder = Builder(n_documents, seed, n_warc_files)
    builder.build()
    return write_corpus(builder, out)
