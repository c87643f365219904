"""Rejection sampling's selection rule: only correct replies that ended their turn are kept, one per
problem, the shortest or the first; kept replies become training conversations as sampled."""

from __future__ import annotations

import pytest

from components.chat.protocol import validate_conversation
from components.rlhf.sampling import Reply
from components.rlvr.rewards import RewardWeights
from components.rlvr.rft import round_problems, select_solutions, solution_conversation
from components.tasks.base import TaskExample

W = RewardWeights()


def problem(answer: str) -> TaskExample:
    conversation = validate_conversation(
        {
            "messages": [
                {"role": "user", "content": f"say {answer}"},
                {"role": "assistant", "content": f"#### {answer}"},
            ]
        }
    )
    return TaskExample("arithmetic", conversation, answer)


def reply(text: str, n_tokens: int, ended: bool = True) -> Reply:
    return Reply(list(range(n_tokens)), [{"type": "text", "text": text}], ended, [True] * n_tokens)


def test_keeps_one_correct_ended_reply_per_problem():
    problems = [problem("7"), problem("3"), problem("5")]
    groups = [
        [reply("#### 6", 3), reply("so #### 7", 9), reply("#### 7", 4), reply("#### 7", 2, ended=False)],
        [reply("#### 4", 3), reply("#### 2", 3)],
        [reply("#### 5", 6), reply("#### 5.0", 5)],
    ]
    shortest = select_solutions(problems, groups, "shortest", W)
    assert [(ex.answer, rep.content[0]["text"], len(rep.tokens)) for ex, rep in shortest] == [
        ("7", "#### 7", 4),
        ("5", "#### 5.0", 5),
    ]
    first = select_solutions(problems, groups, "first", W)
    assert [len(rep.tokens) for _, rep in first] == [9, 6]
    with pytest.raises(ValueError, match="select"):
        select_solutions(problems, groups, "longest", W)


def test_solution_conversation_is_the_prompt_plus_the_sampled_reply():
    ex = problem("7")
    rep = Reply(
        [1, 2],
        [
            {"type": "text", "text": "3 + 4 = 7"},
            {"type": "python", "text": "3+4"},
            {"type": "output", "text": "7"},
            {"type": "text", "text": "#### 7"},
        ],
        True,
        [True, True],
    )
    conv = solution_conversation(ex, rep)
    assert conv["messages"][:-1] == ex.prompt
    assert conv["messages"][-1]["content"] == rep.content


def test_rounds_take_fresh_problems_until_they_run_out():
    first, second = round_problems(10, 4, 0, 0), round_problems(10, 4, 0, 1)
    assert len(set(first) | set(second)) == 8
    assert round_problems(10, 4, 0, 0) == first
    assert len(round_problems(10, 4, 0, 2)) == 4  # wraps into the next epoch's order
