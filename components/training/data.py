"""Batches from the packed token store, addressed by micro-batch number so a run resumes exactly.

Training windows are the store cut into non-overlapping (seq_len + 1)-token pieces, visited in a fresh
seeded permutation each epoch. Micro-batch m is a pure function of (seed, m), so a run restarted from a
checkpoint at optimizer step s continues with micro-batch s * accumulate, and a data-parallel run sees
the same global batch as one process: rank r takes rows [r * local, (r + 1) * local) of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from components.tokenizer.token_store import load_tokens


@dataclass(frozen=True)
class WindowPlan:
    """Which windows of a token array make up each global micro-batch."""

    n_tokens: int
    seq_len: int
    global_batch: int
    seed: int

    @property
    def n_windows(self) -> int:
        return (self.n_tokens - 1) // self.seq_len

    def __post_init__(self) -> None:
        if self.n_windows < self.global_batch:
            raise ValueError(
                f"the training split has {self.n_tokens:,} tokens: fewer than one batch of "
                f"{self.global_batch} x {self.seq_len + 1}-token windows. Use more data (a larger "
                "data profile) or lower pretrain.micro_batch_size / model.seq_len")

    def window_starts(self, micro_batch: int) -> np.ndarray:
        """Start offsets of the global micro-batch's windows (each epoch a new permutation)."""
        first = micro_batch * self.global_batch
        sample_ids = np.arange(first, first + self.global_batch)
        epochs, within = np.divmod(sample_ids, self.n_windows)
        starts = np.empty(self.global_batch, dtype=np.int64)
        for epoch in np.unique(epochs):
            order = epoch_order(self.seed, self.n_windows, int(epoch))
            rows = epochs == epoch
            starts[rows] = order[within[rows]] * self.seq_len
        return starts


@lru_cache(maxsize=2)  # a micro-batch can straddle two epochs
def epoch_order(seed: int, n_windows: int, epoch: int) -> np.ndarray:
    """The epoch's window order, computed once (10B tokens: ~200 ms a permutation)."""
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


def windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    block = np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)
    block = torch.from_numpy(block)
    return block[:, :-1], block[:, 1:]


class TrainWindows(IterableDataset):
    """Endless micro-batches for one rank, starting at `start_micro_batch`."""

    def __init__(self, store: Path, plan: WindowPlan, rank: int, world_size: int,
                 start_micro_batch: int) -> None:
        self.store, self.plan, self.rank, self.world_size = store, plan, rank, world_size
        self.start = start_micro_batch
        self.local = plan.global_batch // world_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tokens = load_tokens(self.store, "train")
        m = self.start
        while True:
            starts = self.plan.window_starts(m)[self.rank * self.local:(self.rank + 1) * self.local]
            yield windows(tokens, starts, self.plan.seq_len)
            m += 1


class ValWindows(torch.utils.data.Dataset):
    """The first `max_windows` consecutive validation windows, in batches: the same text every time,
    whatever the batch size or number of devices."""

    def __init__(self, store: Path, seq_len: int, batch_size: int, max_windows: int) -> None:
        self.store, self.seq_len, self.batch_size = store, seq_len, batch_size
        n_windows = (len(load_tokens(store, "val")) - 1) // seq_len
        if n_windows < 1:
            raise ValueError(f"the validation split of {store} is shorter than one {seq_len + 1}-token "
                             "window: raise tokenizer.val_fraction or lower model.seq_len")
        self.n_windows = min(n_windows, max_windows)

    def __len__(self) -> int:
        return -(-self.n_windows // self.batch_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = load_tokens(self.store, "val")
        last = min(self.n_windows, (i + 1) * self.batch_size)
        starts = np.arange(i * self.batch_size, last) * self.seq_len
        return windows(tokens, starts, self.seq_len)


class PretrainData(L.LightningDataModule):
    def __init__(self, store: Path, seq_len: int, micro_batch_size: int, accumulate: int, seed: int,
                 val_sequences: int) -> None:
        super().__init__()
        self.store, self.seq_len, self.micro_batch_size = Path(store), seq_len, micro_batch_size
        self.accumulate, self.seed, self.val_sequences = accumulate, seed, val_sequences

    def plan(self, world_size: int) -> WindowPlan:
        n_tokens = len(load_tokens(self.store, "train"))
        return WindowPlan(n_tokens, self.seq_len, self.micro_batch_size * world_size, self.seed)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # The checkpoint (if any) is restored before this is called: resume at the next micro-batch.
        start = trainer.global_step * self.accumulate
        dataset = TrainWindows(self.store, self.plan(trainer.world_size), trainer.global_rank,
                               trainer.world_size, start)
        return DataLoader(dataset, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        dataset = ValWindows(self.store, self.seq_len, self.micro_batch_size, self.val_sequences)
        return DataLoader(dataset, batch_size=None)
