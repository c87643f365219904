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


def save_random_chat_model(tmp_path_factory, seq_len: int = 128) -> Path:
    """A saved random GPT (2 layers, 64 wide) with the pydoc tokenizer: a stand-in SFT model for tests."""
    import torch

    from components.model.checkpoint import save_model
    from components.model.config import GPTConfig
    from components.model.gpt import GPT
    from components.tokenizer.bpe import Tokenizer

    tokenizer = Tokenizer.load(build_pydoc_token_store(tmp_path_factory.mktemp("tokenizer")))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=64, n_head=4, seq_len=seq_len))
    out = save_model(model, tmp_path_factory.mktemp("sft") / "model")
    tokenizer.save(out / "tokenizer.json")
    return out
