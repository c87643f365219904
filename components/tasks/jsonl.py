"""Read and write conversations as standard chat JSONL (`{"messages": [...]}` per line).

SFT data also comes from files people bring (or from `write_mixture`), and such files are never
perfectly clean. A bad line must not stop a run, but it must not vanish either: a silently shrinking
dataset is how a pipeline trains on a tenth of what it was given without anyone noticing. So bad lines
are skipped AND counted, the counts are returned for the caller to log or track, and a warning names
the first offending line numbers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from components.chat.protocol import Conversation, validate_conversation

log = logging.getLogger(__name__)
_EXAMPLES_IN_WARNING = 5


def load_conversations(path: str | Path) -> tuple[list[Conversation], dict[str, int]]:
    """Valid conversations from a JSONL file, and stats {"read", "kept", "skipped_invalid_json",
    "skipped_invalid_conversation"}. Blank lines are not records and are not counted. Each kept record
    is returned as written (extra keys such as "task" or "answer" included)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"conversation file not found: {path} (expected JSONL, one "
                                f'{{"messages": [...]}} object per line)')
    kept: list[Conversation] = []
    stats = {"read": 0, "kept": 0, "skipped_invalid_json": 0, "skipped_invalid_conversation": 0}
    bad_lines: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            stats["read"] += 1
            try:
                record: Any = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                stats["skipped_invalid_json"] += 1
                bad_lines.append(f"line {number}: invalid JSON ({exc})")
                continue
            try:
                kept.append(validate_conversation(record))
            except ValueError as exc:
                stats["skipped_invalid_conversation"] += 1
                bad_lines.append(f"line {number}: {exc}")
    stats["kept"] = len(kept)
    if bad_lines:
        shown = "; ".join(bad_lines[:_EXAMPLES_IN_WARNING])
        extra = len(bad_lines) - _EXAMPLES_IN_WARNING
        more = f" (and {extra} more)" if extra > 0 else ""
        log.warning("%s: skipped %d of %d records: %s%s", path, len(bad_lines), stats["read"], shown, more)
    return kept, stats


def save_conversations(path: str | Path, conversations: Iterable[Conversation]) -> int:
    """Write one JSON object per line (UTF-8, not ASCII-escaped), creating parent directories.
    Returns the number of lines written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for conversation in conversations:
            handle.write(json.dumps(conversation, ensure_ascii=False) + "\n")
            count += 1
    return count
