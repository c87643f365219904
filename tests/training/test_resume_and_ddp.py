"""The run survives a kill -9 (same step, same data position, same result) and data parallelism on the
CPU (gloo) computes what one process computes for the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from components.config import load_config
from components.model.checkpoint import load_model
from components.training.pretrain import run_pretraining

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[2]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(model_dir).state_dict()


def _assert_same_model(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=0, msg=name)


def test_killed_run_resumes_at_the_same_step_and_data_position(pretrain_overrides, tmp_path):
    steps = ["pretrain.max_steps=120", "pretrain.checkpoint_every_n_steps=20",
             "pretrain.val_every_n_steps=60"]
    reference = run_pretraining(load_config([*pretrain_overrides, *steps,
                                             f"pretrain.output_dir={tmp_path}/reference"]))

    command = [sys.executable, "-m", "components.training.pretrain", *pretrain_overrides, *steps,
               f"pretrain.output_dir={tmp_path}/killed"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    ckpts = tmp_path / "killed" / "checkpoints"
    proc = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (ckpts / "step000040.ckpt").exists() and not (ckpts / "step000060.ckpt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.05)
    time.sleep(0.3)  # let the checkpoint write finish
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"]
    assert 40 <= killed_at < 120

    # The same command again: it picks up checkpoints/last.ckpt and finishes the run.
    same_command = load_config([*pretrain_overrides, *steps, f"pretrain.output_dir={tmp_path}/killed"])
    resumed = run_pretraining(same_command)
    assert resumed.resumed_from_step == killed_at
    assert resumed.metrics["steps"] == 120
    assert resumed.metrics["val_loss"] == pytest.approx(reference.metrics["val_loss"], abs=1e-4)
    _assert_same_model(resumed.model_dir, reference.model_dir, atol=1e-4)

    # Rerunning a finished run trains no further.
    again = run_pretraining(same_command)
    assert again.resumed_from_step == 120 and again.metrics["steps"] == 120


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(pretrain_overrides, tmp_path):
    common = [*pretrain_overrides, "pretrain.max_steps=20", "pretrain.val_every_n_steps=1000",
              "pretrain.checkpoint_every_n_steps=1000", "pretrain.accelerator=cpu"]
    single = run_pretraining(load_config([*common, "pretrain.micro_batch_size=16",
                                          f"pretrain.output_dir={tmp_path}/single"]))
    ddp = run_pretraining(load_config([*common, "pretrain.micro_batch_size=8", "pretrain.devices=2",
                                       "pretrain.strategy=ddp_spawn", f"pretrain.output_dir={tmp_path}/ddp"]))
    assert ddp.metrics["tokens_seen"] == single.metrics["tokens_seen"]
    assert ddp.metrics["val_loss"] == pytest.approx(single.metrics["val_loss"], abs=1e-4)
    # Gradients were averaged across the ranks: the weights moved the same way as one process's.
    _assert_same_model(ddp.model_dir, single.model_dir, atol=1e-5)
    untrained = run_pretraining(load_config([*common, "pretrain.max_steps=1", "pretrain.micro_batch_size=16",
                                             f"pretrain.output_dir={tmp_path}/one_step"]))
    assert abs(untrained.metrics["val_loss"] - single.metrics["val_loss"]) > 0.1
