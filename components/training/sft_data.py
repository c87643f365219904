"""Conversations packed into fixed-length training rows, with per-conversation attention.

Several rendered conversations share one `seq_len` row, so short chats don't waste most of a row on
padding. Each carries a segment id, and its positions restart at 0, so the model sees each conversation
exactly as it would alone: `GPT(segment_ids=...)` masks attention across segments. Targets are -100
(ignored) wherever the protocol's loss mask is 0: prompts, headers, tool outputs, padding.

Micro-batch m is a pure function of (seed, m), as in pretraining: a resumed run continues with the next
batch of the same epoch order, and rank r of a data-parallel run takes its slice of the global batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from components.model.ops import IGNORE_INDEX
from components.training.data import epoch_order

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PackedRows:
    input_ids: torch.Tensor  # (N, T) long
    targets: torch.Tensor  # (N, T) long, IGNORE_INDEX where no loss
    positions: torch.Tensor  # (N, T) long, restarting at 0 in every segment
    segment_ids: torch.Tensor  # (N, T) long, 0 = padding, 1.. = conversations of the row

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, rows: Sequence[int] | np.ndarray) -> Batch:
        index = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return {"input_ids": self.input_ids[index], "targets": self.targets[index],
                "positions": self.positions[index], "segment_ids": self.segment_ids[index]}

    @property
    def trained_tokens(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def pack(rendered: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, pad_id: int
         ) -> tuple[PackedRows, dict[str, int]]:
    """First-fit packing of (ids, mask) conversations into rows of seq_len inputs.

    A conversation of L tokens takes L - 1 slots (inputs ids[:-1], targets ids[1:]). One longer than a
    row is skipped and counted (cutting it would train on a turn without its end), never silently."""
    rows: list[list[tuple[list[int], list[int]]]] = []
    free: list[int] = []
    skipped = 0
    for ids, mask in rendered:
        n = len(ids) - 1
        if n > seq_len or n < 1:
            skipped += 1
            continue
        inputs = list(ids[:-1])
        targets = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)]
        slot = next((i for i, space in enumerate(free) if space >= n), None)
        if slot is None:
            rows.append([])
            free.append(seq_len)
            slot = len(rows) - 1
        rows[slot].append((inputs, targets))
        free[slot] -= n
    shape = (len(rows), seq_len)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    targets = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for segment, (inputs, row_targets) in enumerate(row, start=1):
            n = len(inputs)
            input_ids[r, at:at + n] = torch.tensor(inputs)
            targets[r, at:at + n] = torch.tensor(row_targets)
            positions[r, at:at + n] = torch.arange(n)
            segment_ids[r, at:at + n] = segment
            at += n
        positions[r, at:] = torch.arange(seq_len - at)  # padding: its own segment 0, never trained on
    packed = PackedRows(input_ids, targets, positions, segment_ids)
    stats = {"conversations": len(rendered) - skipped, "skipped_too_long": skipped, "rows": len(rows),
             "fill": float((segment_ids > 0).float().mean()) if rows else 0.0,
             "trained_tokens": packed.trained_tokens}
    return packed, stats


class TrainRows(IterableDataset):
    """Endless micro-batches for one rank, starting at `start_micro_batch`."""

    def __init__(self, rows: PackedRows, global_batch: int, seed: int, rank: int, world_size: int,
                 start_micro_batch: int) -> None:
        if len(rows) < global_batch:
            raise ValueError(f"only {len(rows)} packed rows for a global batch of {global_batch}: generate "
                             "more conversations (sft.mixture.size) or lower sft.micro_batch_size")
        self.rows, self.global_batch, self.seed = rows, global_batch, seed
        self.rank, self.local, self.start = rank, global_batch // world_size, start_micro_batch

    def row_indices(self, micro_batch: int) -> np.ndarray:
        n = len(self.rows)
        sample = np.arange(micro_batch * self.global_batch, (micro_batch + 1) * self.global_batch)
        epochs, within = np.divmod(sample, n)
        return np.array([epoch_order(self.seed, n, int(e))[w] for e, w in zip(epochs, within, strict=True)])

    def __iter__(self) -> Iterator[Batch]:
        m = self.start
        while True:
            rows = self.row_indices(m)[self.rank * self.local:(self.rank + 1) * self.local]
            yield self.rows.batch(rows)
            m += 1


class ValRows(torch.utils.data.Dataset):
    def __init__(self, rows: PackedRows, batch_size: int) -> None:
        self.rows, self.batch_size = rows, batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, i: int) -> Batch:
        return self.rows.batch(range(i * self.batch_size, min(len(self.rows), (i + 1) * self.batch_size)))


class SFTData(L.LightningDataModule):
    def __init__(self, train: PackedRows, val: PackedRows, micro_batch_size: int, accumulate: int,
                 seed: int) -> None:
        super().__init__()
        self.train, self.val = train, val
        self.micro_batch_size, self.accumulate, self.seed = micro_batch_size, accumulate, seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step * self.accumulate  # after a checkpoint restore: the next micro-batch
        dataset = TrainRows(self.train, self.micro_batch_size * trainer.world_size, self.seed,
                            trainer.global_rank, trainer.world_size, start)
        return DataLoader(dataset, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ValRows(self.val, self.micro_batch_size), batch_size=None)
