"""Pretraining for real on the tiny profile: it learns, stops on NaN, refuses a foreign checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from components.config import load_config
from components.training.pretrain import run_pretraining
from components.training.pretrain_module import NonFiniteLossError, OptimConfig, lr_factor


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(500, cfg) == pytest.approx(0.1)


def test_tiny_model_learns_well_below_the_unigram_entropy(pretrain_overrides, tmp_path):
    from components.model.checkpoint import load_model

    result = run_pretraining(load_config(pretrain_overrides))
    m = result.metrics
    assert m["steps"] == 200
    # A model that ignored context would score the unigram entropy; one that learned is far below.
    assert m["val_loss"] < m["train_unigram_entropy"] - 1.0, m
    assert 0 < m["val_bpb"] < 8
    assert json.loads((tmp_path / "pretrain" / "metrics.json").read_text()) == m
    assert [step for step, _ in result.samples] == [50, 100, 150, 200, 200]  # + the final validation
    model = load_model(result.model_dir)
    assert model.config.num_params() == m["params"]
    assert (tmp_path / "pretrain" / "checkpoints" / "last.ckpt").exists()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(pretrain_overrides,
                                                                                 tmp_path, monkeypatch):
    from components.model.gpt import GPT

    forward, calls = GPT.forward, []

    def diverging_forward(self, idx, targets=None, **kwargs):
        out = forward(self, idx, targets, **kwargs)
        if targets is not None and self.training:
            calls.append(1)
            if len(calls) > 12:  # step 13 on: the loss blows up
                return out * float("nan")
        return out

    monkeypatch.setattr(GPT, "forward", diverging_forward)
    cfg = load_config([*pretrain_overrides, "pretrain.max_steps=30", "pretrain.checkpoint_every_n_steps=5",
                       "pretrain.val_every_n_steps=1000"])
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 12.*last good checkpoint is kept"):
        run_pretraining(cfg)
    ckpt = torch.load(tmp_path / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 10
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_a_checkpoint_of_another_architecture_is_refused(pretrain_overrides):
    run_pretraining(load_config([*pretrain_overrides, "pretrain.max_steps=5",
                                 "pretrain.checkpoint_every_n_steps=5"]))
    with pytest.raises(ValueError, match=r"another architecture \(n_layer: checkpoint 2 vs config 3\)"):
        run_pretraining(load_config([*pretrain_overrides, "pretrain.max_steps=10", "model.n_layer=3"]))
    # resume=false starts over instead
    fresh = run_pretraining(load_config([*pretrain_overrides, "pretrain.max_steps=5", "model.n_layer=3",
                                         "pretrain.resume=false"]))
    assert fresh.metrics["steps"] == 5 and fresh.resumed_from_step is None
    assert math.isfinite(fresh.metrics["val_loss"])


def test_a_changed_training_setting_starts_over_instead_of_resuming(pretrain_overrides):
    first = run_pretraining(load_config([*pretrain_overrides, "pretrain.max_steps=5"]))
    assert first.resumed_from_step is None
    same = run_pretraining(load_config([*pretrain_overrides, "pretrain.max_steps=5"]))
    assert same.resumed_from_step == 5  # finished: nothing left to train
    changed = run_pretraining(load_config([*pretrain_overrides, "pretrain.max_steps=5",
                                           "pretrain.optim.lr=1e-3"]))
    assert changed.resumed_from_step is None and changed.metrics["steps"] == 5
    assert changed.metrics["val_loss"] != same.metrics["val_loss"]
