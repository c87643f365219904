"""Tests for the verifiable rewards: the answer parser on messy model output, reward parts and weights,
self-consistency voting, and real GSM8K answer lines scoring as correct."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from components.rlvr.rewards import (
    RewardParts,
    RewardWeights,
    answers_match,
    final_answer,
    majority_answer,
    parse_number,
    verify,
)

GSM8K_DIR = Path("/work/shared/datasets/gsm8k")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", 1234.0),
        ("$12.50", 12.5),
        ("12.", 12.0),
        ("-3", -3.0),
        ("+4", 4.0),
        ("3/4", 0.75),
        ("-3/4", -0.75),
        ("0.75", 0.75),
        (".5", 0.5),
        ("12 apples", 12.0),
        ("12 apples.", 12.0),
        ("  **42** ", 42.0),
        ("`7`", 7.0),
        ("50%", 50.0),
        ("$1,234.00", 1234.0),
        ("-$5", -5.0),
        ("\u22128", -8.0),          # unicode minus
        ("\\boxed{17}", 17.0),
        ("= 9", 9.0),
        ("1,000,000", 1_000_000.0),
        ("2e3", 2000.0),
        ("1,2345", 1.0),            # not a thousands group: the leading number only
    ],
)
def test_parse_number_messy(text: str, expected: float) -> None:
    assert parse_number(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["twelve", "", "abc", "   ", "1/0", "1e999", "9" * 400, "-", "$", "nan", "inf", "x = 12"]
)
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text) is None


def test_parse_number_never_raises_on_odd_input() -> None:
    for text in ["1/0.0", "1e308/1e-300", "\x00", "#### ####", "/5", "5/", "..", "1,,2", None]:
        value = parse_number(text)  # type: ignore[arg-type]
        assert value is None or math.isfinite(value)


def test_final_answer_last_marker_on_its_line() -> None:
    assert final_answer("work\n#### 5\nmore\n#### 7") == "7"
    assert final_answer("#### 12 apples.") == "12 apples."
    assert final_answer("####12") == "12"
    assert final_answer("#### 3 #### 4") == "4"
    assert final_answer("#### 12\n(hope that helps)") == "12"
    assert final_answer("the answer is 12") is None
    assert final_answer("#### \nnext line 12") is None  # the marker's own line is empty
    assert final_answer("") is None


def test_answers_match() -> None:
    assert answers_match("12.0", "12")
    assert answers_match("1,200", "1200")
    assert answers_match("$1,234.00", "1234")
    assert answers_match("0.75", "3/4")
    assert answers_match("12 apples.", "12")
    assert answers_match("-3", "-3")
    assert not answers_match("3", "-3")
    assert not answers_match("12.5", "12")
    assert not answers_match("twelve", "12")
    assert not answers_match(None, "12")
    assert answers_match("  paris. ", "Paris")
    assert answers_match("**PARIS**", "Paris")
    assert answers_match("New   York", "new york")
    assert not answers_match("London", "Paris")


def test_verify_correct_marked_answer() -> None:
    parts = verify("6 * 2 = 12\n#### 12", True, "12", problem="6 boxes of 2 eggs: how many eggs?")
    assert parts == RewardParts(accuracy=1.0, format=1.0, total=1.0 + 0.2 * 1.0, working=1.0)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("#### $1,234.00", "1,234"),
        ("#### 12 apples.", "12"),
        ("####12", "12"),
        ("#### -7", "-7"),
        ("#### 0.5", "1/2"),
        ("first try #### 3\nactually\n#### 4", "4"),
    ],
)
def test_verify_messy_correct(text: str, key: str) -> None:
    assert verify(text, True, key).accuracy == 1.0


def test_verify_multiple_markers_reads_the_last() -> None:
    assert verify("#### 12\nwait, no\n#### 13", True, "12").accuracy == 0.0


def test_verify_unmarked_answer_earns_no_accuracy() -> None:
    parts = verify("The answer is 12.", True, "12")
    assert parts.accuracy == 0.0
    assert parts.format == 0.5  # only the properly-ended half
    assert parts.total == pytest.approx(0.2 * 0.5)
    assert verify("The answer is 12.", False, "12").format == 0.0


def test_verify_junk_answer_against_numeric_key() -> None:
    parts = verify("#### twelve", True, "12")
    assert parts.accuracy == 0.0
    assert parts.format == 0.5  # an answer was marked, but it does not parse as a number


def test_verify_truncated_but_correct() -> None:
    parts = verify("#### 12", False, "12")
    assert (parts.accuracy, parts.format) == (1.0, 0.5)


def test_verify_non_numeric_key() -> None:
    parts = verify("The capital.\n#### paris", True, "Paris")
    assert (parts.accuracy, parts.format) == (1.0, 1.0)
    wrong = verify("#### Lyon", True, "Paris")
    assert (wrong.accuracy, wrong.format) == (0.0, 1.0)  # any non-empty answer is well formed here


def test_reward_weights_change_totals() -> None:
    text = "#### 12"
    assert verify(text, True, "12", RewardWeights(accuracy=2.0, format=0.5)).total == pytest.approx(2.5)
    assert verify(text, True, "13", RewardWeights(accuracy=2.0, format=0.5)).total == pytest.approx(0.5)
    assert verify(text, True, "12", RewardWeights(accuracy=1.0, format=0.0)).total == 1.0
    assert verify(text, False, "13", RewardWeights(accuracy=0.0, format=1.0)).total == 0.5


PROBLEM = "Priya has 5 erasers. Ben has 3 times as many. How many more erasers does Ben have than Priya?"


@pytest.mark.parametrize(
    ("text", "key", "working", "total"),
    [
        ("Ben has 5 x 3 = 15. 15 - 5 = 10 more.\n#### 10", "10", 1.0, 1.0 + 0.2 + 0.5),  # right, every step
        ("Ben has 5 x 3 = 15. 15 - 3 = 12 more.\n#### 12", "10", 1.0, 0.2 + 0.5),  # wrong operand, true steps
        ("Ben has 5 x 3 = 15. 15 - 5 = 9 more.\n#### 10", "10", 0.0, 1.0 + 0.2),   # a false step
        ("Nora has 9 x 2 = 18 more.\n#### 18", "10", 0.0, 0.2),  # true, on numbers not in the problem
        ("1 + 1 = 2, 5 x 3 = 16\n#### 16", "10", 0.0, 0.2),  # padding does not buy a false step
        ("#### 10", "10", 0.0, 1.0 + 0.2),                                       # no working written
    ],
)
def test_working_reward_needs_every_equation_true_and_grounded(text: str, key: str, working: float,
                                                               total: float) -> None:
    parts = verify(text, True, key, RewardWeights(accuracy=1.0, format=0.2, working=0.5), PROBLEM)
    assert parts.working == working
    assert parts.total == pytest.approx(total)


@pytest.mark.parametrize(
    "kwargs",
    [{"accuracy": -1.0}, {"format": -0.1}, {"working": -0.5}, {"accuracy": float("nan")},
     {"format": float("inf")}, {"accuracy": 0.0, "format": 0.0}],
)
def test_reward_weights_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        RewardWeights(**kwargs)


def test_majority_answer_groups_equal_numbers() -> None:
    texts = ["#### 7", "#### 12", "#### 12.0", "no answer", "#### 7", "#### $12"]
    assert majority_answer(texts) == "12"  # 12, 12.0, $12 are one answer with 3 votes


def test_majority_answer_ties_and_empty() -> None:
    assert majority_answer(["#### 5", "#### 6", "#### 6.0", "#### 5"]) == "5"  # tie: first seen wins
    assert majority_answer(["#### Paris", "#### paris.", "#### Lyon"]) == "Paris"
    assert majority_answer(["nothing", "still nothing"]) is None
    assert majority_answer([]) is None


def test_gsm8k_reference_answers_verify() -> None:
    path = GSM8K_DIR / "train.jsonl"
    if not path.exists():
        pytest.skip(f"GSM8K not found under {GSM8K_DIR}")
    rows = []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            if "," in row["answer"].rsplit("####", 1)[1] or len(rows) < 20:
                rows.append(row)  # the first rows plus some with thousands separators
            if len(rows) >= 40:
                break
    assert any("," in r["answer"].rsplit("####", 1)[1] for r in rows)
    for row in rows:
        key = row["answer"].rsplit("####", 1)[1].strip()
        parts = verify(row["answer"], True, key)
        assert parts.accuracy == 1.0, row["answer"]
        assert parts.format == 1.0, row["answer"]
