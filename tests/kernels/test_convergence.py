"""The tiny model trained the same steps with our kernels and with the PyTorch references: the loss
curves match (fp32; on the CPU the kernels run in Triton's interpreter)."""

from __future__ import annotations

import pytest
import torch

from components.model.config import GPTConfig
from components.model.gpt import GPT
from tests.kernels.conftest import DEVICE

pytestmark = pytest.mark.slow
STEPS = 8
TOLERANCE = 1e-4  # absolute, per step, on a loss of ~4.6 nats


def _losses(kernels: str) -> list[float]:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, seq_len=16)
    model = GPT(cfg, kernels=kernels).to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(0, 97, (STEPS, 2, 17), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    data[:, :, 1::2] = (data[:, :, ::2][:, :, :8] * 7 + 3) % 97  # a learnable pattern
    losses = []
    for x in data:
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_loss_curves_match_with_kernels_on_and_off():
    with_kernels, reference = _losses("triton"), _losses("torch")
    assert reference[-1] < reference[0]  # it trains at all
    assert with_kernels == pytest.approx(reference, abs=TOLERANCE)
