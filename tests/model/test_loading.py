from __future__ import annotations

import json

import pytest
import torch

from components.model.checkpoint import save_model
from components.model.config import GPTConfig
from components.model.export import export_hf
from components.model.gpt import GPT
from components.model.loading import load_pretrained, resolve_model_dir
from components.tokenizer.bpe import train_bpe


@pytest.fixture(scope="module")
def tokenizer():
    from pydoc_data.topics import topics

    return train_bpe([topics[k] for k in sorted(topics)][:60], 320)


@pytest.mark.parametrize("tie", [False, True])
def test_saved_and_hf_folders_load_the_same_model(tmp_path, tokenizer, tie) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                          seq_len=32, tie_embeddings=tie)).eval()
    stage = tmp_path / "pretrain"
    save_model(model, stage / "model")
    tokenizer.save(stage / "model" / "tokenizer.json")
    export_hf(model, tmp_path / "hf", tokenizer=tokenizer)
    x = torch.randint(0, tokenizer.vocab_size, (2, 12))
    for source in (stage, stage / "model", tmp_path / "hf"):
        loaded, tok = load_pretrained(source)
        assert tok.vocab_size == tokenizer.vocab_size
        assert torch.allclose(loaded(x), model(x), atol=1e-5), source


def test_missing_and_unsupported_folders_are_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no model at"):
        resolve_model_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="only Llama"):
        load_pretrained(tmp_path)
    yarn = {"model_type": "llama", "rope_scaling": {"rope_type": "yarn"}}
    (tmp_path / "config.json").write_text(json.dumps(yarn))
    with pytest.raises(ValueError, match="RoPE scaling"):
        load_pretrained(tmp_path)
