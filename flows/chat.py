"""`llmops chat`: talk to a trained model in the terminal.

Not a Prefect flow: an interactive session is not a pipeline run. It loads a registered model (alias or
version) or a model folder, keeps the conversation in the context window, streams the reply, and shows
tool calls with their results. Commands: /reset (forget the conversation), /quit (or Ctrl-D)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

from components.chat.protocol import ChatFormat
from components.chat.session import ChatSession
from components.config import load_config
from components.model.engine import SamplingParams
from components.model.loading import load_pretrained


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _lines():  # noqa: ANN202 (an iterator of input lines)
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            return


def _dropped(n: int) -> None:
    _write(f"(dropped the {n} oldest exchange(s) to fit the context window)\n")


def chat(overrides: list[str] | None = None) -> None:
    cfg = load_config([*(overrides or []), "stage=chat"])
    c = cfg.chat
    source = str(c.model)
    if source.startswith("models:/"):
        from components.tracking.registry import fetch_model  # MLflow only when the registry is asked

        folder = fetch_model(cfg, source)
    else:
        folder = Path(source)
    model, tokenizer = load_pretrained(folder)
    params = SamplingParams(max_new_tokens=int(c.max_new_tokens), temperature=float(c.temperature),
                            top_k=c.top_k, top_p=c.top_p, seed=c.seed)
    with ExitStack() as stack:
        search = None
        if Path(c.catalog).exists():
            from components.sandbox.search import SearchTool

            search = stack.enter_context(SearchTool(c.catalog)).search
        session = ChatSession(model, ChatFormat(tokenizer), params, system=c.system, search=search)
        _write(f"{source} ({model.config.num_params() / 1e6:.1f}M parameters, context "
               f"{model.config.seq_len} tokens). /reset forgets the conversation, /quit or Ctrl-D ends.\n")
        for line in _lines():
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                break
            if text == "/reset":
                session.reset()
                _write("(conversation forgotten)\n")
                continue
            try:
                _write("assistant> ")
                turn = session.send(text, on_text=_write, on_dropped=_dropped)
            except ValueError as e:
                _write(f"\n(error: {e})\n")
                continue
            _write("\n")
            if not turn.ended:
                _write(f"(reply cut at chat.max_new_tokens={c.max_new_tokens})\n")
