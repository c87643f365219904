"""Byte-level BPE tokenizer and packed token store (the tokenizer stage lives in `.stage`)."""

from components.tokenizer.bpe import (
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    Tokenizer,
    hf_tokenizer_kwargs,
    save_for_transformers,
    train_bpe,
)
from components.tokenizer.token_store import TokenStoreInfo, load_tokens, write_token_store

__all__ = [
    "SPECIAL_TOKENS",
    "SPLIT_PATTERN",
    "TokenStoreInfo",
    "Tokenizer",
    "hf_tokenizer_kwargs",
    "load_tokens",
    "save_for_transformers",
    "train_bpe",
    "write_token_store",
]
