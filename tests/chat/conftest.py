"""A real tokenizer (trained on Python's own documentation, offline) and a tiny random GPT."""

from __future__ import annotations

import pytest
import torch

from components.chat.protocol import ChatFormat
from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.tokenizer.bpe import Tokenizer, train_bpe


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    from pydoc_data.topics import topics

    return train_bpe([topics[k] for k in sorted(topics)], 512)


@pytest.fixture(scope="session")
def fmt(tokenizer) -> ChatFormat:
    return ChatFormat(tokenizer)


@pytest.fixture
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=32, n_head=4, seq_len=96)
    return GPT(cfg).eval()
