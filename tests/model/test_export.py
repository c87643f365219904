"""The HF export loads in transformers, offline, and computes exactly what our model computes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.model.checkpoint import save_model
from components.model.config import GPTConfig
from components.model.engine import Engine, SamplingParams
from components.model.export import export_from_checkpoint, export_hf
from components.model.gpt import GPT

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; make sure nothing is fetched
transformers = pytest.importorskip("transformers")

CONFIGS = {
    "untied-mha": {},
    "tied": {"tie_embeddings": True},
    "gqa": {"n_head": 8, "n_kv_head": 2, "rope_theta": 500.0, "norm_eps": 1e-6},
}


def make(vocab_size: int = 97, **overrides: object) -> GPT:
    torch.manual_seed(0)
    values: dict = {"vocab_size": vocab_size, "n_layer": 2, "n_embd": 32, "n_head": 4, "seq_len": 64,
                    "init_std": 0.3}
    model = GPT(GPTConfig(**{**values, **overrides}))
    with torch.no_grad():  # norms away from 1, so a dropped or misnamed norm weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def load_hf(path: Path) -> torch.nn.Module:
    return transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", CONFIGS)
@torch.no_grad()
def test_hf_logits_match(tmp_path: Path, name: str) -> None:
    model = make(**CONFIGS[name])
    export_hf(model, tmp_path)
    hf = load_hf(tmp_path)
    cfg = model.config
    assert hf.config.num_key_value_heads == cfg.kv_heads and hf.config.intermediate_size == cfg.hidden_dim
    assert hf.config.rope_parameters["rope_theta"] == cfg.rope_theta
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == cfg.tie_embeddings
    x = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=0)


def test_files(tmp_path: Path) -> None:
    model = make(tie_embeddings=True)
    export_hf(model, tmp_path, dtype="bfloat16")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # transformers 4.x and 5.x
    assert config["torch_dtype"] == config["dtype"] == "bfloat16"
    state = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in state and all(k.startswith("model.") for k in state)
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    assert len(state) == len(model.state_dict()) - 1
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_length"] == 64
    for bad in ("float33", "int8", torch.int8):
        with pytest.raises(ValueError, match="use float32, bfloat16 or float16"):
            export_hf(model, tmp_path / "bad", dtype=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_compiled_model_exports_plain_names(tmp_path: Path) -> None:
    model = make()
    export_hf(torch.compile(model), tmp_path)  # compiles lazily: nothing runs here
    assert set(load_file(tmp_path / "model.safetensors")) == {f"model.{k}" if k != "lm_head.weight" else k
                                                              for k in model.state_dict()}


@torch.no_grad()
def test_hf_generate_equals_engine_greedy(tmp_path: Path) -> None:
    model = make(n_head=8, n_kv_head=2)
    export_hf(model, tmp_path)
    hf = load_hf(tmp_path)
    prompt = [5, 17, 42, 8]
    ours = Engine(model, pad_id=0).generate([prompt], SamplingParams(max_new_tokens=8, temperature=0))[0]
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out[0, len(prompt):].tolist() == ours.tokens


@torch.no_grad()
def test_export_from_checkpoint(tmp_path: Path) -> None:
    model = make(n_kv_head=2)
    save_model(model, tmp_path / "ckpt")
    export_from_checkpoint(tmp_path / "ckpt", tmp_path / "hf")
    x = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(load_hf(tmp_path / "hf")(x).logits, model(x), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bpe = pytest.importorskip("components.tokenizer.bpe")
    words = ["the", "model", "reads", "tokens", "and", "writes", "text", "with", "merges", "byte", "pairs"]
    rng = torch.Generator().manual_seed(0)
    texts = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (40,), generator=rng))
             for _ in range(60)]
    path = tmp_path_factory.mktemp("tok")
    bpe.train_bpe(texts, vocab_size=bpe.MIN_VOCAB_SIZE).save(path)
    return path


@torch.no_grad()
def test_export_with_tokenizer(tmp_path: Path, tokenizer_dir: Path) -> None:
    from components.tokenizer.bpe import Tokenizer

    tok = Tokenizer.load(tokenizer_dir)
    model = make(vocab_size=tok.vocab_size + 13)  # a model vocabulary padded past the tokenizer's is fine
    save_model(model, tmp_path / "ckpt")
    export_from_checkpoint(tmp_path / "ckpt", tmp_path / "hf", tokenizer_path=tokenizer_dir)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    pad = tok.special_id("<|pad|>")
    ids = (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"])
    assert ids == (tok.bos_id, tok.bos_id, pad)
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tok.bos_id, tok.special_id("<|im_end|>")]
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the model writes text"
    assert hf_tok(text)["input_ids"] == [tok.bos_id, *tok.encode(text)]
    assert hf_tok.pad_token_id == pad
    hf = load_hf(tmp_path / "hf")
    assert hf.generation_config.pad_token_id == pad
    x = torch.tensor([[tok.bos_id, *tok.encode(text)]])
    torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=0)


def test_tokenizer_larger_than_model_refused(tmp_path: Path, tokenizer_dir: Path) -> None:
    from components.tokenizer.bpe import Tokenizer

    with pytest.raises(ValueError, match="tokenizer the model was trained with"):
        export_hf(make(vocab_size=97), tmp_path, tokenizer=Tokenizer.load(tokenizer_dir))
