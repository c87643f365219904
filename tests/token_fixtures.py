"""A real tokenizer and token store from Python's own documentation (offline, on every machine)."""

from __future__ import annotations

from pathlib import Path


def build_pydoc_token_store(out: Path, vocab_size: int = 512) -> Path:
    """`out/tokenizer.json` and `out/tokens/`, as the tokenizer stage lays them out."""
    from pydoc_data.topics import topics

    from components.tokenizer.bpe import train_bpe
    from components.tokenizer.token_store import write_token_store

    texts = [topics[k] for k in sorted(topics)]
    tokenizer = train_bpe(texts, vocab_size)
    tokenizer.save(out / "tokenizer.json")
    write_token_store((tokenizer.encode(t) for t in texts), out / "tokens", tokenizer.vocab_size,
                      tokenizer.bos_id, val_fraction=0.1, seed=0)
    return out
