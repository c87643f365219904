"""Preference data: HH-RLHF, prompt/chosen/rejected and ranked records all load into pairs; bad records are
skipped and counted by reason; pairs round-trip through our own format and render to token ids."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from components.chat.protocol import ChatFormat
from components.rlhf.preferences import (
    PreferenceError,
    PreferencePair,
    load_preferences,
    pair_from_hh,
    pairs_from_ranking,
    parse_hh_dialogue,
    save_pairs,
)
from components.tokenizer.bpe import train_bpe

HH = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hh-rlhf"
HH_SAMPLE = HH / "harmless-base-test-part1.jsonl.gz"
PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]


def _skipped(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.startswith("skipped_"))


def _write(path: Path, records: list, gz: bool = False) -> Path:
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hh_sample() -> tuple[list[PreferencePair], dict[str, int]]:
    if not HH_SAMPLE.is_file():
        pytest.skip(f"HH-RLHF sample is not in ../shared/datasets/hh-rlhf (looked for {HH_SAMPLE})")
    return load_preferences(HH_SAMPLE)


def test_real_hh_rows_parse_or_are_counted(hh_sample) -> None:
    pairs, stats = hh_sample
    assert stats["records"] == 1500
    assert stats["records"] == stats["pairs"] + _skipped(stats) == stats["kept"] + _skipped(stats)
    assert stats["pairs"] >= 0.98 * stats["records"]
    assert all(p.prompt and p.prompt[-1]["role"] == "user" and p.prompt[0]["role"] == "user" for p in pairs)
    assert all(p.chosen.strip() and p.chosen == p.chosen.strip() for p in pairs)
    assert sum(p.chosen != p.rejected for p in pairs) >= 0.95 * len(pairs)
    assert all(p.source == HH_SAMPLE.name for p in pairs)


def test_hh_dialogue_parsing() -> None:
    text = "\n\nHuman:  hi  \n\nAssistant: hello\n\nHuman: Human: is not a turn here\n\nAssistant: ok "
    assert parse_hh_dialogue(text) == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Human: is not a turn here"}, {"role": "assistant", "content": "ok"}]
    for bad in ("", "   ", "\n\nAssistant: hi", "hello\n\nHuman: hi", "\n\nHuman: a\n\nHuman: b"):
        with pytest.raises(ValueError):
            parse_hh_dialogue(bad)


def test_pair_from_hh_rules() -> None:
    prompt = "\n\nHuman: how are you?\n\nAssistant: fine\n\nHuman: and now?"
    pair = pair_from_hh({"chosen": prompt + "\n\nAssistant: still fine",
                         "rejected": prompt.replace("fine", "fine ") + "\n\nAssistant: go away"})
    assert pair.prompt[-1] == {"role": "user", "content": "and now?"} and len(pair.prompt) == 3
    assert (pair.chosen, pair.rejected) == ("still fine", "go away")
    with pytest.raises(ValueError, match="differ before"):
        pair_from_hh({"chosen": prompt + "\n\nAssistant: a", "rejected": "\n\nHuman: other\n\nAssistant: b"})
    with pytest.raises(ValueError, match="end with an Assistant"):
        pair_from_hh({"chosen": prompt, "rejected": prompt + "\n\nAssistant: b"})
    with pytest.raises(ValueError, match="rejected"):
        pair_from_hh({"chosen": prompt + "\n\nAssistant: a", "rejected": 3})


def test_ranking_gives_every_pair_best_first() -> None:
    responses = ["best", "good", "bad", "worst"]
    pairs = pairs_from_ranking(PROMPT, responses, source="r")
    assert len(pairs) == 4 * 3 // 2
    assert [(p.chosen, p.rejected) for p in pairs[:3]] == [("best", "good"), ("best", "bad"),
                                                           ("best", "worst")]
    assert all(responses.index(p.chosen) < responses.index(p.rejected) for p in pairs)
    assert all(p.margin == 0.0 and p.source == "r" for p in pairs)


def test_scores_skip_ties_and_set_margins() -> None:
    pairs = pairs_from_ranking(PROMPT, ["a", "b", "c", "d"], scores=[1.0, 3.0, 1.0, 0.5])
    got = {(p.chosen, p.rejected): p.margin for p in pairs}
    assert got == {("b", "a"): 2.0, ("b", "c"): 2.0, ("b", "d"): 2.5, ("a", "d"): 0.5, ("c", "d"): 0.5}
    assert pairs_from_ranking(PROMPT, ["a", "b"], scores=[1, 1]) == []
    with pytest.raises(ValueError, match="scores"):
        pairs_from_ranking(PROMPT, ["a", "b"], scores=[1.0])
    with pytest.raises(ValueError, match="user message"):
        pairs_from_ranking([{"role": "assistant", "content": "x"}], ["a", "b"])


def test_round_trip_through_record_and_file(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "It is "}, {"type": "python", "text": "2+2"},
             {"type": "output", "text": "4"}, {"type": "text", "text": ".\n#### 4"}]
    pair = PreferencePair([{"role": "system", "content": "Be brief."}, *PROMPT], parts, "5",
                          chosen_ended=True, rejected_ended=False, margin=1.5, source="generated")
    assert PreferencePair.from_record(pair.to_record()) == pair
    assert PreferencePair.from_record(json.loads(json.dumps(pair.to_record()))) == pair
    for name in ("pairs.jsonl", "pairs.jsonl.gz"):
        save_pairs([pair, pair], tmp_path / name)
        loaded, stats = load_preferences(tmp_path / name)
        assert loaded == [pair, pair] and stats == {"records": 2, "kept": 2, "pairs": 2}


def test_from_record_rejects_malformed_records() -> None:
    good = {"prompt": "hi", "chosen": "a", "rejected": "b"}
    assert PreferencePair.from_record(good).prompt == [{"role": "user", "content": "hi"}]
    cases = {"bad_prompt": {**good, "prompt": [{"role": "user", "content": "q"}, {"role": "assistant",
                                                                                   "content": "a"}]},
             "bad_content": {**good, "chosen": [{"type": "image", "text": "x"}]},
             "bad_record": {**good, "margin": "big"}}
    for reason, record in cases.items():
        with pytest.raises(PreferenceError) as info:
            PreferencePair.from_record(record)
        assert info.value.reason == reason
    with pytest.raises(ValueError):
        PreferencePair.from_record(["not", "a", "record"])


def test_all_formats_and_bad_lines_are_counted(tmp_path: Path, caplog) -> None:
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    records = [
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
        hh,
        {"prompt": PROMPT, "responses": ["a", "b", "c"]},
        {"prompt": PROMPT, "responses": ["a", "b", "c"], "ranking": [2, 0, 1]},
        {"prompt": PROMPT, "responses": ["a", "b", "c"], "scores": [0, 2, 2]},
        "{not json",
        "",
        ["a list"],
        {"question": "?"},
        {"chosen": "plain", "rejected": "text"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": " ", "rejected": "something"},
        {"prompt": PROMPT, "responses": ["a", "b"], "ranking": [0, 0]},
        {"prompt": PROMPT, "responses": ["only one"]},
        {**hh, "rejected": "\n\nHuman: bye\n\nAssistant: go away"},
    ]
    for gz in (False, True):
        path = _write(tmp_path / ("prefs.jsonl.gz" if gz else "prefs.jsonl"), records, gz)
        with caplog.at_level(logging.WARNING):
            pairs, stats = load_preferences(path)
        assert stats == {"records": 14, "kept": 5, "pairs": 1 + 1 + 3 + 3 + 2, "skipped_invalid_json": 1,
                         "skipped_not_an_object": 1, "skipped_unknown_format": 2, "skipped_identical": 1,
                         "skipped_empty_chosen": 1, "skipped_bad_ranking": 1, "skipped_no_pairs": 1,
                         "skipped_prompt_mismatch": 1}
        assert stats["records"] == stats["kept"] + _skipped(stats)
        assert "line 6" in caplog.text
        ranked = [(p.chosen, p.rejected) for p in pairs[5:8]]
        assert ranked == [("c", "a"), ("c", "b"), ("a", "b")]
        assert {(p.chosen, p.rejected, p.margin) for p in pairs[8:]} == {("b", "a", 2.0), ("c", "a", 2.0)}
        assert all(p.source == path.name for p in pairs)


def test_missing_and_useless_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_preferences(tmp_path / "nowhere.jsonl")
    with pytest.raises(ValueError, match="no usable preference pair"):
        useless = ["{oops", {"prompt": "q", "chosen": "a", "rejected": "a"}]
        load_preferences(_write(tmp_path / "bad.jsonl", useless))
    truncated = tmp_path / "cut.jsonl.gz"
    save_pairs([PreferencePair(PROMPT, "4", "5")] * 200, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(ValueError, match="truncated"):
        load_preferences(truncated)


def test_token_ids_follow_the_chat_protocol() -> None:
    from pydoc_data.topics import topics

    fmt = ChatFormat(train_bpe([topics[k] for k in sorted(topics)[:40]], 400))
    pair = PreferencePair(PROMPT, "It is 4.", "It is", rejected_ended=False)
    chosen, rejected = pair.token_ids(fmt)
    head = fmt.render_prompt(PROMPT)
    assert chosen == head + fmt.tokenizer.encode("It is 4.") + [fmt.im_end]
    assert rejected == head + fmt.tokenizer.encode("It is")
    assistant = fmt.header("assistant")
    assert head[-len(assistant):] == assistant and head.count(fmt.im_end) == 1
