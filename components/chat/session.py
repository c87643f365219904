"""A conversation with a model in the terminal: history kept in the context window, tokens streamed as
they are generated, tool calls and their results shown as they happen.

The model's context is fixed (model.seq_len), so before each reply the oldest user/assistant exchanges
are dropped until the prompt leaves room for `max_new_tokens`; the caller is told how many were dropped
(the system message, if any, always stays)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from components.chat.protocol import ChatFormat, Message
from components.chat.tools import ToolExecutor
from components.model.engine import Engine, SamplingParams
from components.model.gpt import GPT

TOOL_LABELS = {"python": "calculator", "search": "search"}


class StreamPrinter:
    """Turns the token stream of one reply into text pieces: decoded text as it becomes valid UTF-8,
    and readable markers around tool calls and their outputs."""

    def __init__(self, fmt: ChatFormat, write: Callable[[str], None]) -> None:
        self.fmt, self.write = fmt, write
        self.pending: list[int] = []
        self.shown = ""
        starts = {start: f"\n[{TOOL_LABELS[kind]}: " for kind, (start, _) in fmt.calls.items()}
        ends = {end: "]" for _, end in fmt.calls.values()}
        self.markers = {**starts, **ends, fmt.output_start: " -> ", fmt.output_end: "]\n", fmt.im_end: ""}

    def __call__(self, row: int, token: int, sampled: bool) -> None:
        if token in self.markers:
            self.flush()
            self.write(self.markers[token])
            self.pending, self.shown = [], ""
            return
        self.pending.append(token)
        text = self.fmt.tokenizer.decode(self.pending)
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return
        self.write(text[len(self.shown):])
        self.shown = text

    def flush(self) -> None:
        text = self.fmt.tokenizer.decode(self.pending)
        if len(text) > len(self.shown):
            self.write(text[len(self.shown):])
        self.shown = text


@dataclass
class Turn:
    parts: list[dict[str, str]]
    ended: bool  # the model closed its turn with <|im_end|> (else it ran out of tokens)
    dropped_turns: int  # exchanges dropped from the start of the history to fit this prompt


@dataclass
class ChatSession:
    model: GPT
    fmt: ChatFormat
    params: SamplingParams
    system: str | None = None
    search: Callable[[str], str] | None = None
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(self.model, self.fmt.pad)

    def _history(self) -> list[Message]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def fit_context(self) -> int:
        """Drop the oldest exchanges until the prompt leaves room for a reply; how many were dropped."""
        budget = self.model.config.seq_len - self.params.max_new_tokens
        dropped = 0
        while len(self.fmt.render_prompt(self._history())) > budget and len(self.messages) > 1:
            self.messages = self.messages[2:]  # one user message and the assistant's reply
            dropped += 1
        if len(self.fmt.render_prompt(self._history())) > budget:
            self.messages.pop()
            raise ValueError(f"the message alone does not fit the model's context of "
                             f"{self.model.config.seq_len} tokens with room for a reply: write less, or "
                             "lower chat.max_new_tokens")
        return dropped

    def send(self, text: str, on_text: Callable[[str], None] | None = None,
             on_dropped: Callable[[int], None] | None = None) -> Turn:
        """Add the user's message, generate the reply (tools run as it goes), keep it in the history.
        on_dropped hears, before the reply starts, how many old exchanges had to go."""
        self.messages.append({"role": "user", "content": text})
        dropped = self.fit_context()
        if dropped and on_dropped:
            on_dropped(dropped)
        prompt = self.fmt.render_prompt(self._history())
        params = replace(self.params, stop_token_ids=(self.fmt.im_end,))
        printer = StreamPrinter(self.fmt, on_text) if on_text else None
        tools = ToolExecutor(self.fmt, search=self.search)
        done = self.engine.generate([prompt], params, hook=tools.hook, on_token=printer)[0]
        if printer:
            printer.flush()
        parts = self.fmt.parse_reply(done.tokens) or [{"type": "text", "text": ""}]
        self.messages.append({"role": "assistant", "content": parts})
        return Turn(parts, done.finish_reason == "stop", dropped)

    def reset(self) -> None:
        self.messages = []
