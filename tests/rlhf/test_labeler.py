"""The programmatic labeler prefers what its docstring promises: right answers, shown working, replies that
end their turn and do not repeat themselves, and "I don't know" to questions about made-up things."""

from __future__ import annotations

import random

import pytest

from components.chat.protocol import assistant_text
from components.rlhf.labeler import Labeler, LabelerWeights, near_miss, repetition_rate, true_equations
from components.rlhf.preferences import PreferencePair
from components.tasks import arithmetic, identity, out_of_scope
from components.tasks.base import TaskExample

LABELER = Labeler()


def _ideal(example: TaskExample):
    return example.conversation["messages"][-1]["content"]


@pytest.fixture(scope="module")
def mental() -> list[TaskExample]:
    return arithmetic.generate(random.Random(0), 40, max_number=100, min_steps=2, tool_fraction=0.0)


@pytest.fixture(scope="module")
def tool() -> list[TaskExample]:
    return arithmetic.generate(random.Random(1), 20, max_number=100, min_steps=2, tool_fraction=1.0)


def _wrong(example: TaskExample) -> str:
    wrong = f"#### {int(example.answer) + 1}"
    return assistant_text(_ideal(example)).replace(f"#### {example.answer}", wrong)


def test_ideal_arithmetic_replies_score_full_marks(mental, tool) -> None:
    for example in mental + tool:
        judged = LABELER.judge(example, _ideal(example), ended=True)
        assert judged.correct is True and judged.steps == 1.0 and judged.ended
        assert judged.repetition < 0.1
        assert judged.score > 3.7


def test_right_answer_beats_wrong_answer(mental, tool) -> None:
    for example in mental:
        assert LABELER.prefer(example, (_ideal(example), True), (_wrong(example), True)) == 1
        assert LABELER.judge(example, _wrong(example), True).correct is False
    for example in tool:
        content = _ideal(example)
        wrong = [*content[:-1], {"type": "text", "text": f"#### {int(example.answer) + 1}"}]
        assert LABELER.prefer(example, (wrong, True), (content, True)) == -1


def test_ended_turn_beats_the_same_text_cut_off(mental) -> None:
    example = mental[0]
    assert LABELER.prefer(example, (_ideal(example), True), (_ideal(example), False)) == 1
    cut = LABELER.judge(example, _ideal(example), ended=False)
    ended = LABELER.judge(example, _ideal(example), True)
    assert not cut.ended and cut.score == pytest.approx(ended.score - 1)


def test_repetition_is_penalised(mental) -> None:
    example = mental[0]
    ideal = _ideal(example)
    looped = ideal.replace("\n####", " " + " ".join([ideal.split("\n")[0]] * 4) + "\n####")
    judged = LABELER.judge(example, looped, True)
    assert judged.correct and judged.repetition > 0.5
    assert LABELER.prefer(example, (ideal, True), (looped, True)) == 1
    assert repetition_rate("the cat sat on the mat") == 0.0
    assert repetition_rate("a b c a b c") == pytest.approx(1 / 4)
    assert repetition_rate("one two") == 0.0
    assert repetition_rate("go go go go go", n=1) == pytest.approx(4 / 5)


def test_working_beats_a_bare_answer_and_false_working_costs(mental) -> None:
    example = mental[0]
    bare = f"#### {example.answer}"
    assert LABELER.judge(example, bare, True).steps == 0.0
    assert LABELER.prefer(example, (_ideal(example), True), (bare, True)) == 1
    half = LABELER.judge(example, assistant_text(_ideal(example)).split(". ")[0] + ".\n" + bare, True)
    assert 0.0 < half.steps < 1.0
    lying = "2 + 2 = 5. 3 x 3 = 10.\n" + bare
    assert LABELER.judge(example, lying, True).steps == 0.0


def test_true_equations() -> None:
    assert true_equations("The apples cost 13 - 4 = 9 dollars. Each costs 12 / 3 = 4 dollars.") == (2, 0)
    assert true_equations("2 x 3 = 7 and 4 * 5 = 20") == (1, 1)
    assert true_equations("She has $1,200 / 4 = $300 and 5 + 12 / 3 = 9 and 0.5 x 10 = 5.") == (3, 0)
    assert true_equations("7 / 0 = 1") == (0, 1)
    assert true_equations("Chapter 3 of 10. Call 555-1234. Version 1.2.") == (0, 0)


def test_identity_and_out_of_scope() -> None:
    who = identity.generate(random.Random(0), 5)
    for example in who:
        assert LABELER.prefer(example, (_ideal(example), True), ("I am an assistant.", True)) == 1
        assert LABELER.judge(example, example.answer.upper(), True).correct is True
    unknown = out_of_scope.generate(random.Random(0), 5)
    for example in unknown:
        made_up = "They are a famous painter born in 1901 who lived in Paris."
        assert LABELER.prefer(example, (_ideal(example), True), (made_up, True)) == 1
        assert LABELER.judge(example, "I do not know.", True).correct is True


def test_task_without_answer_is_not_judged_on_correctness() -> None:
    example = TaskExample("chat", {"messages": [{"role": "user", "content": "hello"},
                                                {"role": "assistant", "content": "Hi!"}]})
    judged = LABELER.judge(example, "Hi there!", True)
    assert judged.correct is None and judged.steps == 0.0 and judged.score == 1.0


def test_rank_pairs_and_ties(mental) -> None:
    example = mental[0]
    ideal = _ideal(example)
    replies = [(f"#### {example.answer}", True), (_wrong(example), False), (_wrong(example), True),
               (ideal, True), (f"#### {example.answer}", True)]
    scores = [LABELER.judge(example, c, e).score for c, e in replies]
    order = LABELER.rank(example, replies)
    assert order[0] == 3 and [scores[i] for i in order] == sorted(scores, reverse=True)
    assert order.index(0) < order.index(4)  # stable: the tie keeps its given order
    pairs = LABELER.pairs(example, replies)
    assert len(pairs) == 10 - 1  # replies 0 and 4 tie: no pair
    for pair in pairs:
        chosen = LABELER.judge(example, pair.chosen, pair.chosen_ended).score
        rejected = LABELER.judge(example, pair.rejected, pair.rejected_ended).score
        assert pair.margin == pytest.approx(chosen - rejected) and pair.margin > 0
        assert pair.prompt == example.prompt and pair.source == "generated"
    assert any(not p.rejected_ended for p in pairs) and all(p.chosen_ended for p in pairs)
    assert LABELER.prefer(example, replies[0], replies[4]) == 0
    big = LABELER.pairs(example, replies, min_gap=1.5)
    assert big and all(p.margin > 1.5 for p in big) and len(big) < len(pairs)


def test_weights_change_the_preference(mental) -> None:
    example = mental[0]
    cut_right, ended_wrong = (_ideal(example), False), (_wrong(example), True)
    assert LABELER.prefer(example, cut_right, ended_wrong) == 1
    assert Labeler(LabelerWeights(correct=0.5)).prefer(example, cut_right, ended_wrong) == -1
    with pytest.raises(ValueError):
        LabelerWeights(correct=-1)
    with pytest.raises(ValueError):
        Labeler(ngram=0)
    with pytest.raises(ValueError):
        LABELER.judge(example, 42, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LABELER.judge(example, [{"text": "no type"}], True)


def test_near_miss_is_a_wrong_reply_that_looks_right(mental) -> None:
    """Only a correctness pair whose rejected reply ended, marked an answer, showed working and did not
    repeat itself is a near miss."""
    example = mental[0]
    right = _ideal(example)

    def pair(rejected: str, ended: bool = True, source: str = "generated/correctness") -> PreferencePair:
        return PreferencePair(list(example.prompt), right, rejected, True, ended, 2.0, source)

    wrong = _wrong(example)
    assert near_miss(pair(wrong))
    assert not near_miss(pair(wrong, ended=False))
    assert not near_miss(pair(wrong, source="generated/style"))
    assert not near_miss(pair(f"#### {int(example.answer) + 1}"))          # no working shown
    assert not near_miss(pair(wrong.split("####")[0]))                       # no marked answer
    assert not near_miss(pair(wrong + " the answer is the answer is the answer is"))  # repeats itself
