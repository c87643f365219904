from __future__ import annotations

import numpy as np
import pytest
import torch

from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.model.ops import IGNORE_INDEX
from components.training.sft_data import TrainRows, pack

PAD = 0


def conversations(lengths: list[int], seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(1, 50, size=n).tolist()
        mask = [0] * (n // 2) + [1] * (n - n // 2)  # the second half is the "assistant"
        out.append((ids, mask))
    return out


def test_pack_places_every_conversation_once_with_its_targets() -> None:
    convs = conversations([5, 9, 3, 12, 7, 4])
    packed, stats = pack(convs, seq_len=16, pad_id=PAD)
    assert stats["conversations"] == 6 and stats["skipped_too_long"] == 0
    assert stats["rows"] == len(packed) < 6  # packing saved rows
    found = []
    for r in range(len(packed)):
        for seg in sorted(set(packed.segment_ids[r].tolist()) - {0}):
            where = packed.segment_ids[r] == seg
            x, y = packed.input_ids[r][where].tolist(), packed.targets[r][where].tolist()
            assert packed.positions[r][where].tolist() == list(range(len(x)))
            found.append((x, y))
    expected = [(ids[:-1], [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)])
                for ids, mask in convs]
    assert sorted(found) == sorted(expected)
    pad = packed.segment_ids == 0
    assert (packed.targets[pad] == IGNORE_INDEX).all() and (packed.input_ids[pad] == PAD).all()
    assert packed.trained_tokens == sum(sum(m[1:]) for _, m in convs)


def test_too_long_conversations_are_skipped_and_counted() -> None:
    packed, stats = pack(conversations([5, 40, 6]), seq_len=16, pad_id=PAD)
    assert stats["skipped_too_long"] == 1 and stats["conversations"] == 2


def test_packed_conversations_do_not_see_each_other() -> None:
    """Each conversation's logits in a packed row equal its logits alone: no attention leakage."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_layer=2, n_embd=32, n_head=4, seq_len=32)).eval()
    convs = conversations([7, 11, 9], seed=1)
    packed, stats = pack(convs, seq_len=32, pad_id=PAD)
    assert stats["rows"] == 1
    with torch.no_grad():
        logits = model(packed.input_ids, positions=packed.positions, segment_ids=packed.segment_ids)
        for seg, (ids, _) in enumerate(convs, start=1):
            alone = model(torch.tensor([ids[:-1]]))[0]
            assert torch.allclose(logits[0][packed.segment_ids[0] == seg], alone, atol=1e-5)
        # and the loss ignores everything but the assistant targets
        loss = model(packed.input_ids, packed.targets, positions=packed.positions,
                     segment_ids=packed.segment_ids, loss_reduction="sum")
        manual = torch.nn.functional.cross_entropy(logits[0], packed.targets[0], ignore_index=IGNORE_INDEX,
                                                   reduction="sum")
        assert torch.allclose(loss, manual, atol=1e-4)


def test_micro_batches_are_a_pure_function_of_seed_and_index() -> None:
    packed, _ = pack(conversations([8] * 40), seq_len=16, pad_id=PAD)
    a = TrainRows(packed, global_batch=4, seed=3, rank=0, world_size=1, start_micro_batch=0)
    b = TrainRows(packed, global_batch=4, seed=3, rank=0, world_size=1, start_micro_batch=5)
    first = [next(iter_) for iter_ in [iter(a)] for _ in range(1)]
    resumed = next(iter(b))
    assert torch.equal(resumed["input_ids"], packed.batch(a.row_indices(5))["input_ids"])
    assert first[0]["input_ids"].shape == (4, 16)
    # an epoch visits every row exactly once
    epoch = np.concatenate([a.row_indices(m) for m in range(len(packed) // 4)])
    assert sorted(epoch.tolist()) == list(range(len(packed)))
    # two ranks split the same global batch
    r0 = TrainRows(packed, global_batch=4, seed=3, rank=0, world_size=2, start_micro_batch=0)
    r1 = TrainRows(packed, global_batch=4, seed=3, rank=1, world_size=2, start_micro_batch=0)
    both = torch.cat([next(iter(r0))["input_ids"], next(iter(r1))["input_ids"]])
    assert torch.equal(both, packed.batch(a.row_indices(0))["input_ids"])


def test_too_few_rows_for_a_batch_is_a_clear_error() -> None:
    packed, _ = pack(conversations([8, 8]), seq_len=16, pad_id=PAD)
    with pytest.raises(ValueError, match="sft.mixture.size"):
        TrainRows(packed, global_batch=8, seed=0, rank=0, world_size=1, start_micro_batch=0)
