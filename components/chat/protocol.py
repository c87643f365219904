"""The conversation token protocol: messages in, token ids and a loss mask out.

A conversation is the standard JSONL record `{"messages": [{"role", "content"}, ...]}`. An assistant's
content is a string or a list of parts, so tool calls and the tool's output stay structured:

    {"type": "text", "text": "..."}            what the assistant writes
    {"type": "python", "text": "3*4"}           a calculator call  -> <|python_start|>3*4<|python_end|>
    {"type": "search", "text": "query"}         a search call      -> <|search_start|>query<|search_end|>
    {"type": "output", "text": "12"}            the tool's answer  -> <|output_start|>12<|output_end|>

Rendered, every turn is `<|im_start|>{role}<|im_sep|>{content}<|im_end|>` after one `<|bos|>`. The loss
mask is 1 on what the assistant produces (its content, its calls and the `<|im_end|>` that ends its
turn) and 0 on everything else: the system and user turns, the `<|im_start|>assistant<|im_sep|>` header
the prompt supplies, and tool outputs, which the engine injects rather than samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from components.tokenizer.bpe import Tokenizer

ROLES = ("system", "user", "assistant")
TOOL_CALLS = {"python": ("<|python_start|>", "<|python_end|>"),
              "search": ("<|search_start|>", "<|search_end|>")}
OUTPUT = ("<|output_start|>", "<|output_end|>")
PART_TYPES = ("text", "output", *TOOL_CALLS)

Message = dict[str, Any]
Conversation = dict[str, list[Message]]


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, Mapping) or part.get("type") not in PART_TYPES:
        raise ValueError(f"{where}: a content part must be {{'type': one of {PART_TYPES}, 'text': str}}, "
                         f"got {part!r:.80}")
    if not isinstance(part.get("text"), str):
        raise ValueError(f"{where}: part of type {part['type']!r} has no 'text' string")


def validate_conversation(record: Any) -> Conversation:
    """The record itself when it is a well-formed conversation; else ValueError saying what is wrong.

    Well-formed: an optional system message first, then user and assistant alternating, starting with
    user and ending with assistant. Only assistant content may be a list of parts."""
    if not isinstance(record, Mapping) or not isinstance(record.get("messages"), list):
        raise ValueError("a conversation is {'messages': [{'role': ..., 'content': ...}, ...]}")
    messages = record["messages"]
    body = messages[1:] if messages and _role(messages[0]) == "system" else messages
    if not body:
        raise ValueError("conversation has no user or assistant message")
    for i, message in enumerate(messages):
        where = f"message {i}"
        role = _role(message)
        if role not in ROLES:
            raise ValueError(f"{where}: role must be one of {ROLES}, got {role!r}")
        if role == "system" and i != 0:
            raise ValueError(f"{where}: a system message may only come first")
        content = message.get("content")
        if isinstance(content, list) and role == "assistant":
            if not content:
                raise ValueError(f"{where}: assistant content is an empty list")
            for part in content:
                _check_part(part, where)
        elif not isinstance(content, str):
            raise ValueError(f"{where}: content must be a string"
                             + (" or a list of parts" if role == "assistant" else ""))
    for i, message in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if _role(message) != expected:
            raise ValueError("roles must alternate user/assistant after the optional system message; "
                             f"message {messages.index(message)} is {_role(message)!r}, "
                             f"expected {expected!r}")
    if _role(body[-1]) != "assistant":
        raise ValueError("conversation must end with an assistant message")
    return record  # type: ignore[return-value]


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, Mapping) else None


def parts(content: str | Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def assistant_text(content: str | Sequence[Mapping[str, str]]) -> str:
    """What the assistant wrote, tool calls and outputs left out (for answer checking)."""
    return "".join(p["text"] for p in parts(content) if p["type"] == "text")


class ChatFormat:
    """Renders conversations with one tokenizer's special-token ids."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        sid = tokenizer.special_id
        self.bos, self.pad = tokenizer.bos_id, sid("<|pad|>")
        self.im_start, self.im_sep, self.im_end = sid("<|im_start|>"), sid("<|im_sep|>"), sid("<|im_end|>")
        self.calls = {kind: (sid(start), sid(end)) for kind, (start, end) in TOOL_CALLS.items()}
        self.output_start, self.output_end = sid(OUTPUT[0]), sid(OUTPUT[1])
        self._role_ids = {role: tokenizer.encode(role) for role in ROLES}

    def header(self, role: str) -> list[int]:
        return [self.im_start, *self._role_ids[role], self.im_sep]

    def _content(self, content: str | Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
        """Token ids of assistant content and its mask (1 = trained on)."""
        ids: list[int] = []
        mask: list[int] = []
        for part in parts(content):
            text = self.tokenizer.encode(part["text"])
            kind = part["type"]
            if kind == "text":
                ids += text
                mask += [1] * len(text)
            elif kind == "output":
                ids += [self.output_start, *text, self.output_end]
                mask += [0] * (len(text) + 2)
            else:
                start, end = self.calls[kind]
                ids += [start, *text, end]
                mask += [1] * (len(text) + 2)
        return ids, mask

    def render(self, conversation: Conversation) -> tuple[list[int], list[int]]:
        """(ids, mask) of a whole conversation, for training."""
        validate_conversation(conversation)
        ids, mask = [self.bos], [0]
        for message in conversation["messages"]:
            head = self.header(message["role"])
            if message["role"] == "assistant":
                body, body_mask = self._content(message["content"])
                ids += [*head, *body, self.im_end]
                mask += [0] * len(head) + body_mask + [1]
            else:
                body = self.tokenizer.encode(message["content"])
                ids += [*head, *body, self.im_end]
                mask += [0] * (len(head) + len(body) + 1)
        return ids, mask

    def render_reply(self, content: str | Sequence[Mapping[str, str]], ended: bool = True) -> list[int]:
        """Ids of one assistant reply after the prompt's header: its content, then `<|im_end|>` when the
        turn ended (a generated reply cut off by the token limit has none)."""
        return self._content(content)[0] + ([self.im_end] if ended else [])

    def render_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Ids that ask the model for the next assistant turn: the history, then the assistant header."""
        ids = [self.bos]
        for message in messages:
            if message["role"] == "assistant":
                body = self._content(message["content"])[0]
            else:
                body = self.tokenizer.encode(message["content"])
            ids += [*self.header(message["role"]), *body, self.im_end]
        return ids + self.header("assistant")

    def parse_reply(self, ids: Sequence[int]) -> list[dict[str, str]]:
        """A generated assistant turn back into parts (the inverse of rendering its content); stops at
        <|im_end|>. Unclosed calls or outputs keep what was generated."""
        by_start = {start: (kind, end) for kind, (start, end) in self.calls.items()}
        by_start[self.output_start] = ("output", self.output_end)
        result: list[dict[str, str]] = []
        kind, closing, buffer = "text", None, []

        def flush() -> None:
            if buffer or kind != "text":
                result.append({"type": kind, "text": self.tokenizer.decode(buffer)})
            buffer.clear()

        for token in ids:
            if token == self.im_end:
                break
            if closing is None and token in by_start:
                flush()
                kind, closing = by_start[token]
            elif token == closing:
                flush()
                kind, closing = "text", None
            else:
                buffer.append(token)
        flush()
        return result
