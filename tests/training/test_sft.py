"""The SFT stage without Prefect or MLflow: a tiny GPT finetuned on the generated mixture learns the
held-out assistant tokens, writes its outputs, resumes, and refuses a missing starting model clearly."""

from __future__ import annotations

import json

import pytest
import torch

from components.config import load_config
from components.model.checkpoint import save_model
from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.tokenizer.bpe import Tokenizer
from components.training.sft import run_sft


@pytest.fixture(scope="module")
def base_dir(tokenizer_dir, tmp_path_factory):
    """A randomly initialised tiny GPT saved as a model folder with the session's tokenizer."""
    tokenizer = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=64, n_head=4, seq_len=128))
    out = save_model(model, tmp_path_factory.mktemp("base") / "model")
    tokenizer.save(out / "tokenizer.json")
    return out


def sft_config(base_dir, tmp_path, *extra: str):
    return load_config(["stage=sft", "profile=tiny", f"paths.root={tmp_path}", f"sft.init_from={base_dir}",
                        "sft.mixture.tasks.search.weight=0", "sft.export_hf=false", "sft.max_steps=40",
                        "sft.optim.lr=3e-3", *extra])


def test_sft_learns_the_held_out_assistant_tokens_and_writes_its_outputs(base_dir, tmp_path):
    result = run_sft(sft_config(base_dir, tmp_path))
    m = result.metrics
    assert m["steps"] == 40
    assert m["val/loss"] < m["val/loss_base"] - 1.0, m  # from a random model: the format is learned fast
    for name in ("turn_end_rate", "identity_accuracy", "idk_rate_out_of_scope"):
        assert f"eval/{name}_sft" in m and f"eval/{name}_base" in m
    out = tmp_path / "sft"
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(m)
    records = [json.loads(line) for line in (out / "eval_sft.jsonl").read_text().splitlines()]
    assert {r["task"] for r in records} == {"identity", "arithmetic", "text_tools", "out_of_scope"}
    assert "| eval/turn_end_rate |" in (out / "report.md").read_text()
    train = (out / "data" / "train.jsonl").read_text().splitlines()
    assert len(train) == 240 and result.data_stats["train_conversations"] > 0

    again = run_sft(sft_config(base_dir, tmp_path))  # the same command: resumes at the end, trains nothing
    assert again.resumed_from_step == 40 and again.metrics["val/loss"] == pytest.approx(m["val/loss"])


def test_a_missing_starting_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        run_sft(sft_config(tmp_path / "nowhere", tmp_path))
