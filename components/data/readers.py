"""Reading raw crawls: WARC, JSONL and Parquet in one reader that survives bad input.

Every record either becomes a Document or is counted under a skip reason, per file, so a corrupt
file costs only its unreadable tail and the report can say exactly what was lost and why."""

from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader
from datatrove.utils.logging import logger

from components.data.blocks import HTML_FORMAT

WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".jsonl.zst", ".jsonl.zstd")
PARQUET_SUFFIXES = (".parquet",)
HTML_TYPES = ("text/html", "application/xhtml+xml")
FINEWEB_COLUMNS = ("dump", "url", "date", "file_path", "language", "language_score", "token_count")


class InputError(ValueError):
    """Inputs the data stage refuses before starting, with a message that names the file."""


class TruncatedInput(OSError):
    """The file ends inside a record or inside its compressed stream: its tail is lost."""


def input_format(path: str) -> str:
    name = path.lower()
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        f"unsupported input file {path!r}: expected .warc[.gz], .jsonl[.gz] or .parquet"
    )


def _compression(path: str) -> str | None:
    """Named from the suffix, not left to fsspec's inference: fsspec only knows `.zst` when zstandard is
    installed and never knows `.zstd`, and would otherwise hand the compressed bytes over as text."""
    name = path.lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def _check_compression(path: str) -> None:
    compression = _compression(path)
    if compression and compression not in fsspec.available_compressions():
        raise InputError(f"cannot read {path!r}: no {compression} decompressor installed "
                         f"(pip install zstandard)")


def resolve_inputs(inputs: list[str]) -> list[str]:
    """Expand files, folders and globs (local or fsspec URLs) to a sorted list of input files."""
    if not inputs:
        raise InputError("no inputs given: set data.inputs=[path/or/url, ...]")
    files: list[str] = []
    for spec in inputs:
        spec = str(spec)
        fs, _, paths = fsspec.get_fs_token_paths(spec)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        found = []
        for path in paths:
            if fs.isdir(path):
                root = path.rstrip("/")
                found += [p for p in fs.find(path) if _is_data_file(p, root)]
            elif fs.exists(path):
                found.append(path)
        if not found:
            raise InputError(f"input {spec!r} matches no file")
        for path in sorted(found):
            input_format(path)  # refuse unknown formats up front, naming the file
            _check_compression(path)
            files.append(path if protocol in ("file", "local") else f"{protocol}://{path}")
    return sorted(dict.fromkeys(files))


def _is_data_file(path: str, root: str = "") -> bool:
    name = Path(path).name
    if name in ("manifest.json", "ground_truth.jsonl"):
        return False
    # hidden or bookkeeping files and folders (.cache/, _temporary/, _SUCCESS) inside an input folder
    inner = path[len(root):] if root and path.startswith(root) else name
    if any(part.startswith((".", "_")) for part in inner.split("/") if part):
        return False
    try:
        input_format(path)
    except InputError:
        return False
    return True


@dataclass
class FileReport:
    """What one input file yielded: the per-shard row of the catalog.

    Always `records == documents + sum(skipped.values())`: a record that does not become a document is
    counted under its reason, and a file that cannot be read to its end (or at all) counts its unreadable
    remainder as one record, skipped under the file-level reason (`empty_file`, `corrupt_or_truncated_file`,
    `unreadable_file_<Error>`); a Parquet file without a `text` column skips each of its rows."""

    path: str
    format: str
    records: int = 0
    documents: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def skip(self, reason: str, n: int = 1) -> None:
        """Count `n` records that did not become documents, as they happen (nothing to merge later)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + n


class CrawlReader(BaseReader):
    """Reads a fixed list of WARC / JSONL / Parquet files; rank r reads files r, r+W, r+2W, ..."""

    name = "📖 Crawl reader"

    def __init__(self, files: list[str], report_dir: str | None = None, limit: int = -1):
        super().__init__(limit=limit)
        self.files = list(files)
        self.report_dir = report_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        reports = []
        emitted = 0
        for path in self.files[rank::world_size]:
            if self.limit != -1 and emitted >= self.limit:
                break  # the limit is per rank: do not open (and half-read) the remaining files
            report = FileReport(path=path, format=input_format(path))
            reports.append(report)
            self.stat_update("input_files")
            # closing(): release the file at once when the limit stops reading early
            with closing(self._read(path, report)) as docs:
                for doc in docs:
                    emitted += 1
                    report.documents += 1
                    self.stat_update("documents")
                    self.update_doc_stats(doc)
                    yield doc
                    if self.limit != -1 and emitted >= self.limit:
                        break  # stop before reading another record that nobody will use
            for reason, n in report.skipped.items():
                self.stat_update(f"skipped_{reason}", value=n)
        self._save_reports(reports, rank)

    def _save_reports(self, reports: list[FileReport], rank: int) -> None:
        if not self.report_dir:
            return
        out = Path(self.report_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{rank:05d}.jsonl", "w") as f:
            for r in reports:
                f.write(json.dumps(asdict(r)) + "\n")

    def _read(self, path: str, report: FileReport):
        readers = {"warc": self._read_warc, "jsonl": self._read_jsonl, "parquet": self._read_parquet}
        try:
            with fsspec.open(path, "rb") as f:
                report.bytes = _size(f)
                if report.bytes == 0:
                    report.records += 1
                    report.skip("empty_file")
                    logger.warning(f"empty input file skipped: {path}")
                    return
            yield from readers[report.format](path, report)
        except Exception as e:  # noqa: BLE001 - any unreadable remainder is counted, never fatal
            reason = _error_reason(e)
            if report.records == report.documents + sum(report.skipped.values()):
                report.records += 1  # failed between records: the lost remainder counts as one record
            # (otherwise it failed inside the record just counted, which is the one lost)
            report.skip(reason)
            report.error = f"{type(e).__name__}: {e}"
            logger.warning(f"{path}: stopped reading after {report.records} records ({report.error})")

    # --- WARC -------------------------------------------------------------------------------
    def _read_warc(self, path: str, report: FileReport):
        from warcio.archiveiterator import ArchiveIterator

        # A document is handed on only once the stream has been read past its record: gzip checks a
        # member's CRC when reading on into the next one, so a corrupt record is caught before it leaves.
        pending = None
        # Decompress here rather than in warcio: warcio prints zlib errors and reads on, and takes a
        # stream that ends early for the end of the archive, so a cut or corrupt file looked complete.
        with fsspec.open(path, "rb", compression=_compression(path)) as f:
            for record in ArchiveIterator(_StrictStream(f), arc2warc=True):
                if pending is not None:
                    yield pending
                    pending = None
                report.records += 1
                doc, reason = self._warc_record(record, path)
                if doc is None:
                    report.skip(reason)
                else:
                    pending = doc
            if pending is not None:
                yield pending

    def _warc_record(self, record, path: str) -> tuple[Document | None, str | None]:
        doc, reason = self._warc_document(record, path)
        if _ends_early(record):  # the file ends inside this record: its content is incomplete
            raise TruncatedInput(f"file ends inside record {record.rec_headers.get_header('WARC-Record-ID')} "
                                 f"(WARC Content-Length {record.length})")
        return doc, reason

    def _warc_document(self, record, path: str) -> tuple[Document | None, str | None]:
        if record.rec_type not in ("response", "conversion"):
            return None, f"warc_{record.rec_type}_record"
        headers = record.rec_headers
        payload_type = headers.get_header("WARC-Identified-Payload-Type")
        http_type = record.http_headers.get_header("Content-Type") if record.http_headers else None
        mime = (payload_type or http_type or "").split(";")[0].strip().lower()
        if record.rec_type == "response" and mime not in HTML_TYPES:
            return None, "non_html"
        content = record.content_stream().read()
        if not content.strip():
            return None, "empty_payload"
        text = _decode(content, http_type)
        if text is None:
            return None, "undecodable"
        url = headers.get_header("WARC-Target-URI")
        doc = Document(
            text=text,
            id=headers.get_header("WARC-Record-ID") or f"{path}/{record.rec_type}",
            metadata={
                "url": url,
                "date": headers.get_header("WARC-Date"),
                "file_path": path,
                "source_format": "warc",
                "content_format": HTML_FORMAT if record.rec_type == "response" else "text",
            },
        )
        return doc, None

    # --- JSONL ------------------------------------------------------------------------------
    def _read_jsonl(self, path: str, report: FileReport):
        with fsspec.open(path, "rb", compression=_compression(path)) as f:
            for lineno, raw in enumerate(f):
                if not raw.strip():
                    continue
                report.records += 1
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    report.skip("malformed_json")
                    continue
                yield from self._emit(row, path, lineno, "jsonl", report)

    # --- Parquet ----------------------------------------------------------------------------
    def _read_parquet(self, path: str, report: FileReport):
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            if "text" not in pf.schema_arrow.names:
                rows = pf.metadata.num_rows
                report.records += rows
                report.skip("no_text_column", rows)
                report.error = f"no 'text' column in {path} (columns: {pf.schema_arrow.names})"
                logger.warning(f"{path}: skipped, {report.error}")
                return
            index = 0
            for batch in pf.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    report.records += 1
                    yield from self._emit(row, path, index, "parquet", report)
                    index += 1

    def _emit(self, row, path: str, index: int, fmt: str, report: FileReport):
        """A JSONL/Parquet row as a document, or counted under the reason it is not one."""
        doc, reason = self._row_to_doc(row, path, index, fmt)
        if doc is None:
            report.skip(reason)
        else:
            yield doc

    def _row_to_doc(self, row, path: str, index: int, fmt: str) -> tuple[Document | None, str | None]:
        if not isinstance(row, dict):
            return None, "not_an_object"
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            return None, "no_text"
        metadata = {k: row[k] for k in FINEWEB_COLUMNS if row.get(k) is not None}
        metadata.setdefault("file_path", path)
        metadata["source_format"] = fmt
        metadata["content_format"] = "text"
        return Document(text=text, id=str(row.get("id") or f"{path}/{index}"), metadata=metadata), None


def _size(f) -> int:
    try:
        return int(f.size)
    except (AttributeError, TypeError):
        f.seek(0, 2)
        return f.tell()


class _StrictStream:
    """The decompressed file as warcio reads it, except that a compressed stream that ends early raises
    TruncatedInput: warcio takes an EOFError while parsing headers for the clean end of the archive."""

    def __init__(self, f):
        self._f = f

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except EOFError as e:
            raise TruncatedInput(f"compressed stream ends early ({e})") from e

    def tell(self) -> int:
        return self._f.tell()


def _ends_early(record) -> bool:
    """Read the rest of the record; True when the file ended before its WARC Content-Length."""
    stream = record.raw_stream
    while stream.read(1 << 16):
        pass
    return getattr(stream, "limit", 0) > 0


# `charset=utf-8`, `charset="utf-8"` (header or <meta content=...>) and `<meta charset="utf-8">`
_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
# Labels Python does not know, and labels that browsers (WHATWG Encoding Standard) decode with a superset:
# pages declared gb2312 routinely use GBK characters, and "iso-8859-1" pages windows-1252 quotes and dashes.
_LABEL_ALIASES = {"x-gbk": "gbk", "gb_2312-80": "gb2312", "x-sjis": "shift_jis", "x-euc-jp": "euc_jp"}
_BROWSER_CODECS = {"gb2312": "gb18030", "gbk": "gb18030", "iso8859-1": "cp1252", "ascii": "cp1252",
                   "iso8859-9": "cp1254", "tis-620": "cp874", "iso8859-11": "cp874", "euc_kr": "cp949",
                   "shift_jis": "cp932", "big5": "big5hkscs"}


def _decode(content: bytes, content_type: str | None) -> str | None:
    """UTF-8 first, then the declared charset (as a browser reads it); None when neither decodes the
    bytes cleanly."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        pass
    head = content[:2048].decode("ascii", "ignore")
    declared = _CHARSET.search(content_type or "") or _CHARSET.search(head)
    if not declared:
        return None
    label = declared.group(1).lower()
    try:
        charset = codecs.lookup(_LABEL_ALIASES.get(label, label)).name
    except LookupError:
        return None
    if charset == "utf-8":
        return None
    for codec in dict.fromkeys((_BROWSER_CODECS.get(charset, charset), charset)):
        try:
            return content.decode(codec)
        except UnicodeDecodeError:
            continue
    return None


def _error_reason(e: Exception) -> str:
    if isinstance(e, (EOFError, TruncatedInput, gzip.BadGzipFile, zlib.error)) or "gzip" in str(e).lower():
        return "corrupt_or_truncated_file"
    if isinstance(e, UnicodeDecodeError):
        return "undecodable_file"
    return f"unreadable_file_{type(e).__name__}"
