"""Preference data: which of two replies to the same prompt is better, read from the formats people publish.

A reward model learns from pairs (prompt, chosen reply, rejected reply). Such pairs come from files in
several shapes, so `load_preferences` detects the shape per JSONL record:

1. `{"prompt", "chosen", "rejected"}`: prompt is a string (one user message) or a list of messages;
   chosen and rejected are assistant content (a string or a list of protocol parts). Our own
   `PreferencePair.to_record` is this shape plus `chosen_ended`, `rejected_ended`, `margin`, `source`.
2. `{"chosen", "rejected"}` as Anthropic HH-RLHF dialogues ("\\n\\nHuman: ...\\n\\nAssistant: ...") that
   share every turn but the last assistant one.
3. `{"prompt", "responses": [...]}` with an optional `"ranking"` (indices, best first) or `"scores"`
   (higher is better); without either the responses are best first. K responses give the K(K-1)/2
   pairs, as InstructGPT trains its reward model.

Files are never perfectly clean, and a silently shrinking dataset is how a reward model ends up trained
on a tenth of its data, so bad records are skipped AND counted by reason (see `load_preferences`).
Two decisions about real data: a pair whose chosen reply is empty is skipped (`empty_chosen`), because
a reward model taught that silence wins hands PPO an easy way to stop answering; and a pair whose two
replies are identical teaches nothing, so it is skipped (`identical`)."""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from components.chat.protocol import ChatFormat, Message, parts, validate_conversation

log = logging.getLogger(__name__)
_EXAMPLES_IN_WARNING = 5
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}

Content = str | list[dict[str, str]]


class PreferenceError(ValueError):
    """A malformed preference record; `reason` is the short key it is counted under when skipped."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: `chosen` is the better assistant reply to `prompt` than `rejected`."""

    prompt: list[Message]          # the conversation before the reply; ends with a user message
    chosen: Content                # assistant content: a protocol string or a list of parts
    rejected: Content
    chosen_ended: bool = True      # False: a generated reply cut off before <|im_end|>
    rejected_ended: bool = True
    margin: float = 0.0            # how strongly chosen is preferred (e.g. a labeler score gap); 0 = unknown
    source: str = ""               # file name, "generated", ...

    def to_record(self) -> dict[str, Any]:
        """Our own JSONL record (format 1 plus the extra fields); `from_record` reads it back."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
                "chosen_ended": self.chosen_ended, "rejected_ended": self.rejected_ended,
                "margin": self.margin, "source": self.source}

    @classmethod
    def from_record(cls, record: Any, source: str = "") -> PreferencePair:
        """A pair from a `{"prompt", "chosen", "rejected", ...}` record; PreferenceError (a ValueError)
        saying what is wrong otherwise. `source` is used when the record names none."""
        if not isinstance(record, Mapping):
            raise PreferenceError("not_an_object", f"a record must be a JSON object, got {record!r:.60}")
        prompt = _check_prompt(_prompt(record.get("prompt")))
        chosen, rejected = record.get("chosen"), record.get("rejected")
        _check_reply(prompt, chosen, "chosen")
        _check_reply(prompt, rejected, "rejected")
        flags = {key: record.get(key, True) for key in ("chosen_ended", "rejected_ended")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise PreferenceError("bad_record", f"{key} must be true or false, got {value!r:.40}")
        margin = record.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
            raise PreferenceError("bad_record", f"margin must be a finite number, got {margin!r:.40}")
        named = record.get("source", source)
        if not isinstance(named, str):
            raise PreferenceError("bad_record", f"source must be a string, got {named!r:.40}")
        return cls(prompt, _copy(chosen), _copy(rejected), flags["chosen_ended"], flags["rejected_ended"],
                   float(margin), named)

    def token_ids(self, fmt: ChatFormat) -> tuple[list[int], list[int]]:
        """(chosen ids, rejected ids): the prompt asking for an assistant turn, then each reply, with
        `<|im_end|>` only where that reply ended its turn."""
        head = fmt.render_prompt(self.prompt)
        return (head + fmt.render_reply(self.chosen, self.chosen_ended),
                head + fmt.render_reply(self.rejected, self.rejected_ended))


def _copy(content: Content) -> Content:
    return content if isinstance(content, str) else [dict(p) for p in content]


def _prompt(value: Any) -> list[Message]:
    """A prompt as a list of messages: a string is one user message. Checked by `_check_reply`."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise PreferenceError("bad_prompt", "prompt must be a string or a non-empty list of messages")
    if not all(isinstance(m, Mapping) for m in value):
        raise PreferenceError("bad_prompt", "every prompt message must be an object {role, content}")
    return [{"role": m.get("role"), "content": _copy(m.get("content"))} for m in value]


def _check_prompt(prompt: list[Message]) -> list[Message]:
    """A prompt must be a conversation that asks for an assistant turn: valid once a reply follows."""
    if not prompt or not isinstance(prompt[-1], Mapping) or prompt[-1].get("role") != "user":
        raise PreferenceError("bad_prompt", "prompt must end with a user message")
    try:
        validate_conversation({"messages": [*prompt, {"role": "assistant", "content": ""}]})
    except ValueError as exc:
        raise PreferenceError("bad_prompt", f"prompt: {exc}") from None
    return prompt


def _check_reply(prompt: list[Message], content: Any, name: str) -> None:
    """Reply content must be what an assistant message may hold (checked after a valid prompt)."""
    if content is None:
        raise PreferenceError("bad_record", f"record has no {name!r} reply")
    try:
        validate_conversation({"messages": [*prompt, {"role": "assistant", "content": content}]})
    except ValueError as exc:
        raise PreferenceError("bad_content", f"{name}: {exc}") from None


def is_empty(content: Content) -> bool:
    """Whether a reply says nothing at all (no part has any non-blank text)."""
    return not any(p["text"].strip() for p in parts(content))


def parse_hh_dialogue(text: str) -> list[Message]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as protocol messages, turn text
    stripped. ValueError when it does not start with a Human turn, roles do not alternate, or it is empty.
    Only a role name at the very start or after a blank line starts a turn ("Human:" mid-text does not)."""
    if not isinstance(text, str) or not text.strip():
        raise PreferenceError("bad_dialogue", "dialogue is empty or not a string")
    pieces = _HH_TURN.split(text.lstrip(" \t"))
    if pieces[0].strip() or len(pieces) < 3:
        raise PreferenceError("bad_dialogue", f"dialogue must start with 'Human:', got {text.strip()!r:.40}")
    messages: list[Message] = []
    for i in range(1, len(pieces), 2):
        role = _HH_ROLES[pieces[i]]
        expected = "user" if len(messages) % 2 == 0 else "assistant"
        if role != expected:
            raise PreferenceError("bad_dialogue", f"turn {len(messages)} is {pieces[i]!r}; Human and "
                                  "Assistant turns must alternate, starting with Human")
        messages.append({"role": role, "content": pieces[i + 1].strip()})
    return messages


def pair_from_hh(record: Mapping[str, Any], source: str = "") -> PreferencePair:
    """An HH-RLHF `{"chosen", "rejected"}` record as a pair. Both dialogues must parse, end with an
    assistant turn and agree on every turn before it (whitespace aside): that shared part is the prompt.
    PreferenceError (a ValueError) saying which rule broke."""
    dialogues = {}
    for name in ("chosen", "rejected"):
        try:
            dialogues[name] = parse_hh_dialogue(record.get(name))  # type: ignore[arg-type]
        except PreferenceError as exc:
            raise PreferenceError(exc.reason, f"{name}: {exc}") from None
        if dialogues[name][-1]["role"] != "assistant":
            raise PreferenceError("bad_dialogue", f"{name} does not end with an Assistant turn")
    chosen, rejected = dialogues["chosen"], dialogues["rejected"]
    if _squash(chosen[:-1]) != _squash(rejected[:-1]):
        raise PreferenceError("prompt_mismatch",
                              "chosen and rejected differ before their last Assistant turn")
    return PreferencePair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], source=source)


def _squash(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m["role"], " ".join(m["content"].split())) for m in messages]


def pairs_from_ranking(prompt: list[Message], responses: Sequence[Content], *,
                       scores: Sequence[float] | None = None, source: str = "") -> list[PreferencePair]:
    """Every pair of K ranked responses, K(K-1)/2 of them as InstructGPT trains on. Without `scores`
    the responses are best first (margin 0, unknown); with scores higher is better, equal scores make
    no pair, and the margin is the score gap. Pairs come best chosen first."""
    if scores is None:
        order, values = list(range(len(responses))), None
    else:
        if len(scores) != len(responses):
            raise PreferenceError("bad_ranking", f"{len(scores)} scores for {len(responses)} responses")
        values = [_score(s) for s in scores]
        order = sorted(range(len(responses)), key=lambda i: -values[i])
    _check_prompt(prompt)
    for i, content in enumerate(responses):
        _check_reply(prompt, content, f"response {i}")
    pairs = []
    for a, better in enumerate(order):
        for worse in order[a + 1:]:
            gap = 0.0 if values is None else values[better] - values[worse]
            if values is not None and gap <= 0:
                continue
            pairs.append(PreferencePair(prompt, _copy(responses[better]), _copy(responses[worse]),
                                        margin=gap, source=source))
    return pairs


def _score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PreferenceError("bad_ranking", f"a score must be a finite number, got {value!r:.40}")
    return float(value)


def _ranked(record: Mapping[str, Any], source: str) -> list[PreferencePair]:
    """Format 3: responses with an optional ranking (a permutation, best first) or scores."""
    responses, ranking, scores = record["responses"], record.get("ranking"), record.get("scores")
    if not isinstance(responses, list):
        raise PreferenceError("bad_ranking", "responses must be a list")
    if ranking is not None and scores is not None:
        raise PreferenceError("bad_ranking", "give either ranking or scores, not both")
    if ranking is not None:
        if not isinstance(ranking, list) or not all(type(i) is int for i in ranking) \
                or sorted(ranking) != list(range(len(responses))):
            raise PreferenceError("bad_ranking", "ranking must list every response index "
                                  f"0..{len(responses) - 1} exactly once, got {ranking!r:.60}")
        responses = [responses[i] for i in ranking]
    if scores is not None and not isinstance(scores, list):
        raise PreferenceError("bad_ranking", "scores must be a list of numbers")
    return pairs_from_ranking(_prompt(record.get("prompt")), responses, scores=scores, source=source)


def _is_hh(record: Mapping[str, Any]) -> bool:
    return all(isinstance(record.get(k), str) and "Human:" in record[k] for k in ("chosen", "rejected"))


def pairs_from_record(record: Any, source: str = "") -> list[PreferencePair]:
    """The pairs one record of any supported format gives (format detected from its keys); empty-chosen
    and identical pairs are dropped. PreferenceError when the record is unusable."""
    if not isinstance(record, Mapping):
        raise PreferenceError("not_an_object", f"a record must be a JSON object, got {record!r:.60}")
    if "responses" in record:
        pairs = _ranked(record, source)
    elif "chosen" in record and "rejected" in record:
        if "prompt" in record:
            pairs = [PreferencePair.from_record(record, source)]
        elif _is_hh(record):
            pairs = [pair_from_hh(record, source)]
        else:
            raise PreferenceError("unknown_format", "chosen/rejected without a prompt must be HH-RLHF "
                                  "dialogues ('\\n\\nHuman: ...\\n\\nAssistant: ...')")
    else:
        raise PreferenceError("unknown_format", f"unrecognised record keys {sorted(record)[:6]}; expected "
                              "prompt/chosen/rejected, HH chosen/rejected, or prompt/responses")
    return _usable(pairs)


def _usable(pairs: list[PreferencePair]) -> list[PreferencePair]:
    if not pairs:
        raise PreferenceError("no_pairs", "the record gives no pair (fewer than two responses, or all tied)")
    kept = [p for p in pairs if not is_empty(p.chosen)]
    if not kept:
        raise PreferenceError("empty_chosen", "the preferred reply is empty")
    kept = [p for p in kept if (p.chosen, p.chosen_ended) != (p.rejected, p.rejected_ended)]
    if not kept:
        raise PreferenceError("identical", "chosen and rejected replies are identical")
    return kept


def _open_lines(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    with path.open("rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with _open_lines(path) as handle:
            yield from enumerate(handle, start=1)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read the file to the end ({type(exc).__name__}: {exc}); is the "
                         "gzip download truncated?") from None


def load_preferences(path: str | Path) -> tuple[list[PreferencePair], dict[str, int]]:
    """Every usable pair in a JSONL file (plain or gzip), and stats {"records", "kept", "pairs",
    "skipped_<reason>"...}: every non-blank line is a record, and records == kept + all skipped, where a
    kept record gave at least one pair (a ranking gives several). Bad lines are skipped and counted, with
    a warning naming the first few; a missing file is FileNotFoundError, a file without any usable pair
    ValueError. Pairs without a source of their own get the file's name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path} (expected JSONL: prompt/chosen/rejected, "
                                "HH-RLHF chosen/rejected, or prompt/responses records; .gz allowed)")
    pairs: list[PreferencePair] = []
    stats: Counter[str] = Counter(records=0, kept=0, pairs=0)
    bad: list[str] = []
    for number, raw in _records(path):
        if not raw.strip():
            continue
        stats["records"] += 1
        try:
            found = pairs_from_record(json.loads(raw.decode("utf-8")), path.name)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            stats["skipped_invalid_json"] += 1
            bad.append(f"line {number}: invalid JSON ({exc})")
            continue
        except PreferenceError as exc:
            stats[f"skipped_{exc.reason}"] += 1
            bad.append(f"line {number}: {exc}")
            continue
        stats["kept"] += 1
        pairs += found
    stats["pairs"] = len(pairs)
    if bad:
        shown = "; ".join(bad[:_EXAMPLES_IN_WARNING])
        more = f" (and {len(bad) - _EXAMPLES_IN_WARNING} more)" if len(bad) > _EXAMPLES_IN_WARNING else ""
        log.warning("%s: skipped %d of %d records: %s%s", path, len(bad), stats["records"], shown, more)
    if not pairs:
        raise ValueError(f"{path}: no usable preference pair in {stats['records']} records ({dict(stats)})")
    return pairs, dict(stats)


def save_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> int:
    """Write one `to_record` JSON object per line (UTF-8, gzip when the name ends in .gz), creating
    parent directories. Returns the number of pairs written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_record(), ensure_ascii=False) + "\n")
            count += 1
    return count
