"""Export to the Hugging Face Llama format, so the trained model runs anywhere transformers (or vLLM,
llama.cpp's converter, ...) does.

Our module names already match LlamaForCausalLM minus its "model." prefix and RoPE uses the same
half-split layout, so export is a rename plus a config.json; no weight permutation. Written without
importing transformers (an optional dependency): the JSON is plain data."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from components.model.checkpoint import load_model
from components.model.config import GPTConfig
from components.model.gpt import GPT

if TYPE_CHECKING:  # the tokenizer module is optional here: imported only when a tokenizer is exported
    from components.tokenizer.bpe import Tokenizer

HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
HF_GENERATION_CONFIG = "generation_config.json"
PAD_TOKEN = "<|pad|>"
CHAT_END_TOKEN = "<|im_end|>"


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept "bfloat16" as well as torch.bfloat16, so a CLI can pass the name through."""
    resolved = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"unknown or non-float dtype {dtype!r}: use float32, bfloat16 or float16")
    return resolved


def token_ids(tokenizer: Tokenizer | None) -> dict[str, Any]:
    """bos/eos/pad ids for config.json. A base model's document boundary <|bos|> is also its EOS, as in
    the tokenizer's own transformers config."""
    if tokenizer is None:
        return {}
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.bos_id,
            "pad_token_id": tokenizer.special_id(PAD_TOKEN)}


def hf_config(cfg: GPTConfig, dtype: torch.dtype = torch.float32, tokenizer: Tokenizer | None = None
              ) -> dict[str, Any]:
    """LlamaConfig fields. RoPE is written twice: `rope_parameters` is what transformers 5.x reads,
    top-level `rope_theta` what 4.x reads (5.x folds it into rope_parameters, so the two agree)."""
    name = str(resolve_dtype(dtype)).removeprefix("torch.")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": name,  # transformers 4.x
        "dtype": name,  # transformers 5.x
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,  # LlamaConfig defaults are 1, 2
        **token_ids(tokenizer),
    }


def generation_config(cfg: GPTConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Greedy by default (transformers' default) up to the context length. With a tokenizer, generation
    also stops at <|im_end|>, so a chat-tuned export ends its turn; a base model never emits it."""
    out: dict[str, Any] = {"max_length": cfg.seq_len, **token_ids(tokenizer)}
    if tokenizer is not None:
        stops = [tokenizer.bos_id]
        with contextlib.suppress(KeyError):  # a tokenizer without chat tokens: stop at <|bos|> only
            stops.append(tokenizer.special_id(CHAT_END_TOKEN))
        out["eos_token_id"] = stops
    return out


def hf_state_dict(model: GPT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Our weights under HF names: "model." + name, lm_head at top level and dropped when tied (HF
    re-ties it from tie_word_embeddings; safetensors refuses shared storage anyway)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper prefixes every name
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if model.config.tie_embeddings:
                continue
            hf_name = name
        else:
            hf_name = "model." + name
        out[hf_name] = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
    return out


def _write_json(path: Path, values: dict[str, Any]) -> None:
    path.write_text(json.dumps(values, indent=1) + "\n")


def export_hf(model: GPT, out_dir: Path, tokenizer: Tokenizer | None = None,
              dtype: torch.dtype | str = torch.float32) -> Path:
    """Write a folder that `LlamaForCausalLM.from_pretrained(out_dir)` (and, with a tokenizer,
    `AutoTokenizer.from_pretrained(out_dir)`) loads offline. Returns out_dir."""
    dtype = resolve_dtype(dtype)
    cfg = model.config
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}: "
                         "export with the tokenizer the model was trained with")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(model, dtype), out_dir / HF_WEIGHTS, metadata={"format": "pt"})
    _write_json(out_dir / HF_CONFIG, hf_config(cfg, dtype, tokenizer))
    _write_json(out_dir / HF_GENERATION_CONFIG, generation_config(cfg, tokenizer))
    if tokenizer is not None:
        from components.tokenizer.bpe import save_for_transformers

        save_for_transformers(tokenizer, out_dir, model_max_length=cfg.seq_len)
    return out_dir


def export_from_checkpoint(model_dir: Path, out_dir: Path, tokenizer_path: Path | None = None,
                           dtype: torch.dtype | str = torch.float32) -> Path:
    """A saved model (save_model's folder) and optionally its tokenizer.json, as an HF folder."""
    model = load_model(Path(model_dir))
    tokenizer = None
    if tokenizer_path is not None:
        from components.tokenizer.bpe import Tokenizer

        tokenizer = Tokenizer.load(tokenizer_path)
    return export_hf(model, Path(out_dir), tokenizer=tokenizer, dtype=dtype)
