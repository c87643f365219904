"""The reward model: Bradley-Terry loss, padding-invariant scores, safetensors round trip, exact-resume data
and a tiny fit that learns a synthetic preference."""

from __future__ import annotations

import math
import time

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from components.model.checkpoint import save_model
from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.model.loading import load_pretrained
from components.rlhf.reward_model import (
    HEAD_WEIGHTS,
    PairData,
    RewardModel,
    RewardModule,
    TokenPairs,
    bradley_terry_loss,
    from_pretrained,
    last_token_index,
    load_reward_model,
    pair_metrics,
    save_reward_model,
)
from components.tokenizer.bpe import Tokenizer, train_bpe
from components.training.pretrain_module import NonFiniteLossError, OptimConfig

PAD = 0


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    from pydoc_data.topics import topics

    return train_bpe([topics[k] for k in sorted(topics)], 512)


def tiny_gpt(vocab_size: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, n_layer=2, n_embd=32, n_head=4, seq_len=64), kernels="torch")


@pytest.fixture
def reward_model(tokenizer) -> RewardModel:
    model = RewardModel(tiny_gpt(tokenizer.vocab_size)).eval()
    with torch.no_grad():  # a non-zero bias, so the round trip checks it too
        model.head.bias.fill_(0.25)
    return model


# --- loss and metrics --------------------------------------------------------------------------------

def test_bradley_terry_loss_matches_hand_computation() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.5, -1.0])
    nll = [math.log1p(math.exp(-d)) for d in (1.0, -0.5, 0.0)]
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(sum(nll) / 3, rel=1e-6)

    margin = torch.tensor([0.5, 0.0, 1.0])
    with_margin = [math.log1p(math.exp(-d)) for d in (0.5, -0.5, -1.0)]
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(sum(with_margin) / 3,
                                                                                rel=1e-6)
    centre = ((2 + 1) ** 2 + 0.5 ** 2 + (-2) ** 2) / 3
    assert bradley_terry_loss(chosen, rejected, center_coef=0.1).item() == pytest.approx(
        sum(nll) / 3 + 0.1 * centre, rel=1e-6)
    per_pair = bradley_terry_loss(chosen, rejected, reduction="none")
    assert per_pair.tolist() == pytest.approx(nll, rel=1e-6)
    assert bradley_terry_loss(chosen, rejected, reduction="sum").item() == pytest.approx(sum(nll), rel=1e-6)


def test_bradley_terry_loss_gradient_and_bad_input() -> None:
    chosen = torch.tensor([0.3], requires_grad=True)
    rejected = torch.tensor([-0.2], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    expected = -(1 - torch.sigmoid(torch.tensor(0.5))).item()  # d/dc -log sigmoid(c - r)
    assert chosen.grad.item() == pytest.approx(expected) and rejected.grad.item() == pytest.approx(-expected)
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="margin"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), reduction="max")


def test_pair_metrics_counts_ties_as_half() -> None:
    metrics = pair_metrics(torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.tensor([0.0, 2.0, 1.0, 1.0]))
    assert metrics["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert metrics["margin"] == pytest.approx((1 + 0 - 1 + 2) / 4)
    with pytest.raises(ValueError):
        pair_metrics(torch.zeros(0), torch.zeros(0))


# --- the model -----------------------------------------------------------------------------------------

def test_last_token_index() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0], [0, 1, 0, 1, 0]]).bool()
    assert last_token_index(mask).tolist() == [2, 4, 0, 3]
    with pytest.raises(ValueError, match="all padding"):
        last_token_index(torch.tensor([[True, False], [False, False]]))


def test_head_init_and_frozen_lm_head(reward_model) -> None:
    assert reward_model.config is reward_model.backbone.config
    assert reward_model.head.weight.shape == (1, 32) and reward_model.head.bias.shape == (1,)
    assert not reward_model.backbone.lm_head.weight.requires_grad  # unused: no gradient, DDP-safe
    assert reward_model.backbone.embed_tokens.weight.requires_grad


def test_score_ignores_padding_side_and_content(reward_model) -> None:
    torch.manual_seed(1)
    seqs = [torch.randint(10, 500, (n,)).tolist() for n in (7, 12, 3)]
    width = 15

    def padded(left: bool, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.bool)
        for r, s in enumerate(seqs):
            cols = slice(width - len(s), width) if left else slice(0, len(s))
            ids[r, cols], mask[r, cols] = torch.tensor(s), True
        return ids, mask

    with torch.no_grad():
        right = reward_model(*padded(left=False, pad=PAD))
        left = reward_model(*padded(left=True, pad=PAD))
        other_pad = reward_model(*padded(left=False, pad=77))
        other_pad_left = reward_model(*padded(left=True, pad=123))
        alone = torch.stack([reward_model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.bool))[0]
                             for s in seqs])
        values = reward_model.values(*padded(left=False, pad=PAD))
    assert right.shape == (3,) and right.dtype == torch.float32
    for scores in (left, other_pad, other_pad_left, alone):
        torch.testing.assert_close(scores, right, atol=1e-5, rtol=0)
    assert values.shape == (3, width) and values.dtype == torch.float32
    torch.testing.assert_close(values[torch.arange(3), torch.tensor([6, 11, 2])], right, atol=1e-6, rtol=0)
    assert right.std() > 1e-3  # the sequences really score differently


def test_values_refuse_mismatched_shapes(reward_model) -> None:
    with pytest.raises(ValueError, match="batch, seq"):
        reward_model.values(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))


# --- saving and loading --------------------------------------------------------------------------------

def test_save_load_round_trip(reward_model, tokenizer, tmp_path) -> None:
    out = save_reward_model(reward_model, tokenizer, tmp_path / "rm")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.safetensors", "gpt_config.json", "tokenizer.json", HEAD_WEIGHTS])
    head = load_file(out / HEAD_WEIGHTS)
    assert set(head) == {"weight", "bias"} and head["bias"].item() == pytest.approx(0.25)

    loaded, loaded_tok = load_reward_model(out)
    assert loaded_tok.vocab_size == tokenizer.vocab_size
    first, second = tokenizer.encode("def f(x): return x")[:8], tokenizer.encode("lambda y: y + 1")[:5]
    ids = torch.full((2, len(first)), PAD, dtype=torch.long)
    ids[0], ids[1, :len(second)] = torch.tensor(first), torch.tensor(second)
    mask = ids != PAD
    mask[0] = True
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), reward_model(ids, mask), atol=0, rtol=0)
    gpt, _ = load_pretrained(out)  # still an ordinary model folder
    assert isinstance(gpt, GPT)
    stage = save_reward_model(reward_model, tokenizer, tmp_path / "stage" / "model").parent
    torch.testing.assert_close(load_reward_model(stage)[0].head.weight, reward_model.head.weight)


def test_load_names_missing_files(reward_model, tokenizer, tmp_path) -> None:
    save_model(reward_model.backbone, tmp_path / "sft")  # an SFT model folder: no head
    tokenizer.save(tmp_path / "sft" / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match=HEAD_WEIGHTS):
        load_reward_model(tmp_path / "sft")
    with pytest.raises(FileNotFoundError, match="gpt_config.json"):
        load_reward_model(tmp_path / "nothing")


def test_from_pretrained_puts_a_fresh_head_on_a_saved_gpt(reward_model, tokenizer, tmp_path) -> None:
    save_model(reward_model.backbone, tmp_path / "sft")
    tokenizer.save(tmp_path / "sft" / "tokenizer.json")
    torch.manual_seed(3)
    model, tok = from_pretrained(tmp_path / "sft")
    assert tok.vocab_size == tokenizer.vocab_size
    torch.testing.assert_close(model.backbone.embed_tokens.weight, reward_model.backbone.embed_tokens.weight)
    assert model.head.bias.item() == 0.0
    std = model.head.weight.std().item()
    assert 0.5 / math.sqrt(33) < std < 2 / math.sqrt(33)


# --- data ----------------------------------------------------------------------------------------------

def test_token_pairs_batch_layout() -> None:
    pairs = TokenPairs(chosen=[[1, 2, 3], [4]], rejected=[[5, 6], [7, 8, 9, 10]], pad_id=PAD,
                       margin=[1.0, 2.0])
    batch = pairs.batch([1, 0])
    assert batch["input_ids"].tolist() == [[4, 0, 0, 0], [1, 2, 3, 0], [7, 8, 9, 10], [5, 6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[True, False, False, False], [True, True, True, False],
                                                [True] * 4, [True, True, False, False]]
    assert batch["margin"].tolist() == [2.0, 1.0] and batch["margin"].dtype == torch.float32
    assert TokenPairs([[1]], [[2]], pad_id=PAD).margin == [0.0]
    with pytest.raises(ValueError, match="pairs"):
        TokenPairs([[1], [2]], [[3]], pad_id=PAD)
    with pytest.raises(ValueError, match="empty"):
        TokenPairs([[1], []], [[3], [4]], pad_id=PAD)


class FakeTrainer:
    def __init__(self, global_step: int) -> None:
        self.global_step, self.world_size, self.global_rank = global_step, 1, 0


def train_batches(data: PairData, global_step: int, n: int) -> list[dict[str, torch.Tensor]]:
    data.trainer = FakeTrainer(global_step)  # type: ignore[assignment]
    batches = iter(data.train_dataloader())
    return [next(batches) for _ in range(n)]


def test_pair_batches_are_a_pure_function_of_seed_and_step() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, rng.integers(2, 9)).tolist() for _ in range(22)]
    train = TokenPairs(seqs[:10], seqs[10:20], pad_id=PAD, margin=[float(i) for i in range(10)])
    val = TokenPairs(seqs[20:21], seqs[21:22], pad_id=PAD)
    data = PairData(train, val, batch_size=4, seed=7)
    run = train_batches(data, 0, 8)  # 32 pairs: more than three epochs
    resumed = train_batches(PairData(train, val, batch_size=4, seed=7), 5, 3)
    for a, b in zip(run[5:], resumed, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])
    epoch = torch.cat([b["margin"] for b in run[:2]] + [run[2]["margin"][:2]])
    assert sorted(epoch.tolist()) == [float(i) for i in range(10)]  # each pair once per epoch
    other_seed = train_batches(PairData(train, val, batch_size=4, seed=8), 0, 3)
    assert any(not torch.equal(a["margin"], b["margin"]) for a, b in zip(run, other_seed, strict=False))
    val_batches = list(data.val_dataloader())
    assert len(val_batches) == 1 and val_batches[0]["input_ids"].shape[0] == 2
    with pytest.raises(ValueError, match="training pairs"):
        PairData(train, val, batch_size=11, seed=0)


# --- training ------------------------------------------------------------------------------------------

A, B = 5, 6  # the preferred and the dispreferred final token


def synthetic_pairs(n: int, seed: int) -> TokenPairs:
    """Same random prompt; chosen ends with A, rejected with B; lengths vary so padding is exercised."""
    rng = np.random.default_rng(seed)
    chosen, rejected = [], []
    for _ in range(n):
        body = rng.integers(10, 60, rng.integers(2, 12)).tolist()
        tail = rng.integers(10, 60, rng.integers(0, 4)).tolist()
        chosen.append(body + tail + [A])
        rejected.append(body + rng.permutation(tail).tolist() + [B])
    return TokenPairs(chosen, rejected, pad_id=PAD, margin=[1.0] * n)


def test_tiny_fit_learns_the_preference() -> None:
    started = time.perf_counter()
    L.seed_everything(0, verbose=False)
    model = RewardModel(tiny_gpt(64))
    optim = OptimConfig(lr=3e-3, warmup_steps=5, max_steps=40, weight_decay=0.0)
    module = RewardModule(model, optim, margin_in_loss=True, center_coef=0.01, run_fingerprint="abc")
    data = PairData(synthetic_pairs(128, 0), synthetic_pairs(48, 1), batch_size=16, seed=0)
    trainer = L.Trainer(max_steps=40, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        val_check_interval=20, check_val_every_n_epoch=None, log_every_n_steps=10,
                        deterministic=True)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 40
    assert {"train/loss", "train/accuracy", "train/lr"} <= set(trainer.callback_metrics)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert after["val/accuracy"] >= 0.9, (before, after)
    assert after["val/loss"] < before["val/loss"] and after["val/margin"] > 1.0
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint == {"gpt_config": model.config.to_dict(), "run_fingerprint": "abc"}
    assert time.perf_counter() - started < 60


def test_nan_loss_stops_training() -> None:
    model = RewardModel(tiny_gpt(64))
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    module = RewardModule(model, OptimConfig(warmup_steps=1, max_steps=2))
    data = PairData(synthetic_pairs(8, 0), synthetic_pairs(4, 1), batch_size=4, seed=0)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.raises(NonFiniteLossError, match="reward"):
        trainer.fit(module, datamodule=data)


def test_reward_module_uses_the_given_model_and_optimises_the_head() -> None:
    model = RewardModel(tiny_gpt(64))
    module = RewardModule(model, OptimConfig())
    assert module.model is model
    assert all(p.device.type == "cpu" for p in module.parameters())
    groups = module.configure_optimizers()["optimizer"].param_groups
    params = {id(p) for group in groups for p in group["params"]}
    assert id(model.head.weight) in params and id(model.head.bias) in params
