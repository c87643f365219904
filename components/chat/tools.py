"""Tool use inside the decode loop: when the model closes a tool call, run the tool and feed its answer.

The engine calls `ToolExecutor.hook` after every token of every row. When the row's last token is
`<|python_end|>` or `<|search_end|>`, the text since the matching start token goes to the sandboxed
calculator or the catalog search, and `<|output_start|>result<|output_end|>` is forced into the row:
those tokens are never sampled, and the SFT loss never trains on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from components.chat.protocol import ChatFormat
from components.sandbox.calculator import run_calculator

ToolFunction = Callable[[str], str]


@dataclass(frozen=True)
class ToolCall:
    row: int
    tool: str  # "python" or "search"
    query: str
    result: str


@dataclass
class ToolExecutor:
    """A TokenHook that runs tool calls; `calls` records every call (for display and metrics)."""

    fmt: ChatFormat
    search: ToolFunction | None = None  # e.g. SearchTool.search; None: search answers with an error
    max_output_tokens: int = 128  # a tool's answer is cut to this many tokens (the context is small)
    max_calls_per_row: int = 8  # then every further call answers with an error
    calls: list[ToolCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tools: dict[int, tuple[str, int, ToolFunction]] = {}
        for kind, (start, end) in self.fmt.calls.items():
            self._tools[end] = (kind, start, self._function(kind))
        self._per_row: dict[int, int] = {}

    def _function(self, kind: str) -> ToolFunction:
        if kind == "python":
            return run_calculator
        return self.search or (lambda _query: "error: search is not available")

    def run(self, kind: str, query: str) -> str:
        """One tool call by name, outside the decode loop (the chat CLI, tests)."""
        return self._function(kind)(query)

    def hook(self, row: int, tokens: list[int]) -> Sequence[int] | None:
        tool = self._tools.get(tokens[-1])
        if tool is None:
            return None
        kind, start, function = tool
        try:
            opened = len(tokens) - 1 - tokens[::-1].index(start)
        except ValueError:
            return None  # an end token without its start: not a call, let the model go on
        query = self.fmt.tokenizer.decode(tokens[opened + 1:-1]).strip()
        self._per_row[row] = self._per_row.get(row, 0) + 1
        if self._per_row[row] > self.max_calls_per_row:
            result = f"error: more than {self.max_calls_per_row} tool calls in one reply"
        else:
            result = function(query)
        self.calls.append(ToolCall(row, kind, query, result))
        output = self.fmt.tokenizer.encode(result)[: self.max_output_tokens]
        return [self.fmt.output_start, *output, self.fmt.output_end]
