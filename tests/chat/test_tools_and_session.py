from __future__ import annotations

import pytest

from components.chat.session import ChatSession, StreamPrinter
from components.chat.tools import ToolExecutor
from components.model.engine import Engine, SamplingParams


def scripted(fmt, executor, script: list[int]):
    """A hook that makes the model 'write' `script` first, then lets the tool executor react."""
    def hook(row: int, tokens: list[int]):
        if len(tokens) == 1:
            return script
        return executor.hook(row, tokens)
    return hook


def test_engine_runs_the_calculator_and_injects_its_answer(model, fmt, tokenizer) -> None:
    start, end = fmt.calls["python"]
    executor = ToolExecutor(fmt)
    script = [start, *tokenizer.encode("3*4+2"), end]
    params = SamplingParams(max_new_tokens=len(script) + 8, temperature=0.0)
    done = Engine(model, fmt.pad).generate([fmt.render_prompt([{"role": "user", "content": "hi"}])], params,
                                           hook=scripted(fmt, executor, script))[0]
    after = done.tokens[1 + len(script):]
    output = [fmt.output_start, *tokenizer.encode("14"), fmt.output_end]
    assert after[:len(output)] == output
    assert not any(done.sampled[1 + len(script):1 + len(script) + len(output)])  # forced, not sampled
    assert executor.calls[0].query == "3*4+2" and executor.calls[0].result == "14"


def test_search_and_errors_come_back_as_text(fmt, tokenizer) -> None:
    executor = ToolExecutor(fmt, search=lambda q: f"found {q}")
    s_start, s_end = fmt.calls["search"]
    out = executor.hook(0, [s_start, *tokenizer.encode("glob"), s_end])
    assert tokenizer.decode(out) == "<|output_start|>found glob<|output_end|>"
    p_start, p_end = fmt.calls["python"]
    out = executor.hook(0, [p_start, *tokenizer.encode("__import__('os')"), p_end])
    assert tokenizer.decode(out).startswith("<|output_start|>error:")
    assert ToolExecutor(fmt).run("search", "x") == "error: search is not available"
    assert executor.hook(0, [p_end]) is None  # an end token without a start is not a call


def test_calls_per_reply_are_bounded(fmt, tokenizer) -> None:
    executor = ToolExecutor(fmt, max_calls_per_row=2)
    start, end = fmt.calls["python"]
    outs = [tokenizer.decode(executor.hook(0, [start, *tokenizer.encode("1+1"), end])) for _ in range(3)]
    assert "2" in outs[0] and "2" in outs[1] and "more than 2 tool calls" in outs[2]


def test_stream_printer_shows_text_and_tool_markers(fmt, tokenizer) -> None:
    pieces: list[str] = []
    printer = StreamPrinter(fmt, pieces.append)
    start, end = fmt.calls["python"]
    tokens = [*tokenizer.encode("So "), start, *tokenizer.encode("2*3"), end, fmt.output_start,
              *tokenizer.encode("6"), fmt.output_end, *tokenizer.encode("it is 6 ✓."), fmt.im_end]
    for t in tokens:
        printer(0, t, True)
    printer.flush()
    assert "".join(pieces) == "So \n[calculator: 2*3] -> 6]\nit is 6 ✓."


def test_session_keeps_history_and_drops_oldest_turns(model, fmt) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    session = ChatSession(model, fmt, params, system="Be brief.")
    dropped: list[int] = []
    for i in range(12):
        turn = session.send(f"message number {i} with a few words", on_dropped=dropped.append)
        assert turn.parts
    assert dropped, "a 96-token context cannot hold 12 exchanges"
    prompt = fmt.render_prompt(session._history())
    assert len(prompt) <= model.config.seq_len
    assert session.messages[-2]["content"] == "message number 11 with a few words"
    assert session._history()[0] == {"role": "system", "content": "Be brief."}  # the system message stays
    session.reset()
    assert session.messages == []


def test_a_message_too_long_for_the_context_is_refused(model, fmt) -> None:
    session = ChatSession(model, fmt, SamplingParams(max_new_tokens=8, temperature=0.0))
    with pytest.raises(ValueError, match="does not fit"):
        session.send("word " * 200)
    assert session.messages == []
