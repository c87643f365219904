"""Load a trained model and its tokenizer from a folder, whichever format it was saved in.

Later stages start from a pretrained (or finetuned) model given as a path: our own `save_model` folder
(gpt_config.json + model.safetensors + tokenizer.json), a stage's output folder holding one in `model/`,
or a Hugging Face Llama folder (config.json + safetensors), such as `export_hf` writes or one trained
elsewhere in the same architecture. Registry aliases are resolved to a folder by components/tracking."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from components.model.checkpoint import CONFIG, load_model
from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.tokenizer.bpe import Tokenizer

HF_CONFIG = "config.json"
HF_INDEX = "model.safetensors.index.json"


def hf_llama_config(values: dict) -> GPTConfig:
    """Our GPTConfig for a transformers LlamaConfig, refusing what our GPT does not implement."""
    if values.get("model_type") != "llama":
        raise ValueError(f"model_type {values.get('model_type')!r} is not supported: only Llama-architecture "
                         "checkpoints load (RoPE, RMSNorm, SwiGLU, no biases)")
    rope = values.get("rope_parameters") or values.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"RoPE scaling {rope!r} is not supported: only default RoPE loads")
    unsupported = [k for k in ("attention_bias", "mlp_bias") if values.get(k)]
    if unsupported or values.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported Llama options: {unsupported or values.get('hidden_act')}")
    n_embd, n_head = int(values["hidden_size"]), int(values["num_attention_heads"])
    if values.get("head_dim") not in (None, n_embd // n_head):
        raise ValueError(f"head_dim {values['head_dim']} != hidden_size / num_attention_heads: not supported")
    return GPTConfig(
        vocab_size=int(values["vocab_size"]), n_layer=int(values["num_hidden_layers"]), n_embd=n_embd,
        n_head=n_head, n_kv_head=values.get("num_key_value_heads"),
        ffn_hidden=int(values["intermediate_size"]), seq_len=int(values["max_position_embeddings"]),
        rope_theta=float(rope.get("rope_theta", values.get("rope_theta", 10000.0))),
        norm_eps=float(values.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(values.get("tie_word_embeddings", False)))


def _hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    if (folder / HF_INDEX).exists():
        shards = sorted(set(json.loads((folder / HF_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    raise FileNotFoundError(f"{folder} has a config.json but no model.safetensors (or sharded index); "
                            "only safetensors weights load (no pickles)")


def import_hf(folder: Path) -> GPT:
    """A LlamaForCausalLM folder as our GPT (the names match up to the "model." prefix)."""
    cfg = hf_llama_config(json.loads((folder / HF_CONFIG).read_text()))
    state = {k.removeprefix("model."): v.float() for k, v in _hf_weights(folder).items()}
    if cfg.tie_embeddings or "lm_head.weight" not in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder} does not match a Llama model of its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model


def resolve_model_dir(path: str | Path) -> Path:
    """The folder holding the weights: `path` itself, or its `model/` (a stage's output folder)."""
    folder = Path(path)
    for candidate in (folder, folder / "model"):
        if (candidate / CONFIG).exists() or (candidate / HF_CONFIG).exists():
            return candidate
    raise FileNotFoundError(f"no model at {folder}: expected {CONFIG} (a saved model, e.g. "
                            f"outputs/pretrain/model) or {HF_CONFIG} (a Hugging Face Llama folder)")


def load_pretrained(path: str | Path) -> tuple[GPT, Tokenizer]:
    """The model and the tokenizer saved beside it (fp32, on the CPU, in eval mode)."""
    folder = resolve_model_dir(path)
    model = load_model(folder) if (folder / CONFIG).exists() else import_hf(folder)
    tokenizer = Tokenizer.load(folder / "tokenizer.json")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer in {folder} has {tokenizer.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}: they were not trained together")
    return model.eval(), tokenizer
