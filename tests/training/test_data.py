"""Micro-batches are a pure function of (seed, number): epochs cover the data, ranks split the batch."""

from __future__ import annotations

import numpy as np
import pytest

from components.training.data import WindowPlan, windows


def test_each_epoch_visits_every_window_once_in_a_new_order():
    plan = WindowPlan(n_tokens=1 + 10 * 8, seq_len=8, global_batch=5, seed=3)
    assert plan.n_windows == 10
    first = np.concatenate([plan.window_starts(m) for m in (0, 1)])
    second = np.concatenate([plan.window_starts(m) for m in (2, 3)])
    assert sorted(first) == sorted(second) == list(range(0, 80, 8))
    assert list(first) != list(second)


def test_batches_are_reproducible_and_seeded():
    a, b = WindowPlan(10_000, 16, 4, seed=0), WindowPlan(10_000, 16, 4, seed=1)
    assert np.array_equal(a.window_starts(7), WindowPlan(10_000, 16, 4, seed=0).window_starts(7))
    assert not np.array_equal(a.window_starts(7), b.window_starts(7))


def test_targets_are_inputs_shifted_by_one():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = windows(tokens, np.array([0, 10]), seq_len=5)
    assert x.tolist() == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]
    assert y.tolist() == [[1, 2, 3, 4, 5], [11, 12, 13, 14, 15]]


def test_ranks_split_the_same_global_batch(tokenizer_dir):
    from components.training.data import TrainWindows

    plan = WindowPlan(50_000, 32, global_batch=8, seed=0)
    store = tokenizer_dir / "tokens"
    single = next(iter(TrainWindows(store, plan, rank=0, world_size=1, start_micro_batch=5)))[0]
    halves = [next(iter(TrainWindows(store, plan, rank=r, world_size=2, start_micro_batch=5)))[0]
              for r in (0, 1)]
    assert np.array_equal(single.numpy(), np.concatenate([h.numpy() for h in halves]))


def test_a_store_smaller_than_one_batch_is_refused_with_what_to_change():
    with pytest.raises(ValueError, match="micro_batch_size / model.seq_len"):
        WindowPlan(n_tokens=100, seq_len=64, global_batch=4, seed=0)
