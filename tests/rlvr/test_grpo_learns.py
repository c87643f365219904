"""GRPO learns what its reward asks for: a tiny model that answers two prompts with one of two numbers
at random (about half right) learns which number goes with which prompt from the group-relative signal
alone, and a step whose groups all score the same changes nothing."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from components.chat.protocol import ChatFormat, validate_conversation
from components.model.config import GPTConfig
from components.model.gpt import GPT
from components.rlhf.sampling import sample_replies
from components.rlvr.evaluation import sampling_params
from components.rlvr.grpo import GRPOConfig, GRPOModule, ProblemData
from components.rlvr.rewards import verify
from components.tasks.base import TaskExample
from components.tokenizer.bpe import train_bpe

WORDS = ("alpha", "beta")


@pytest.fixture(scope="module")
def fmt() -> ChatFormat:
    from pydoc_data.topics import topics

    return ChatFormat(train_bpe([topics[k] for k in sorted(topics)], 512))


def problems() -> list[TaskExample]:
    out = []
    for i, word in enumerate(WORDS, start=1):
        conv = validate_conversation(
            {"messages": [{"role": "user", "content": word}, {"role": "assistant", "content": f"#### {i}"}]}
        )
        out.append(TaskExample("toy", conv, str(i)))
    return out


@pytest.fixture(scope="module")
def guesser(fmt) -> GPT:
    return make_guesser(fmt)


def make_guesser(fmt: ChatFormat) -> GPT:
    """SFT on every (prompt, any answer) pair: the format is learned, the mapping is not."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=fmt.tokenizer.vocab_size, n_layer=1, n_embd=32, n_head=2, seq_len=32))
    rows = []
    for word in WORDS:
        for answer in range(1, len(WORDS) + 1):
            ids, mask = fmt.render(
                {
                    "messages": [
                        {"role": "user", "content": word},
                        {"role": "assistant", "content": f"#### {answer}"},
                    ]
                }
            )
            rows.append((ids, mask))
    width = max(len(ids) for ids, _ in rows)
    inputs = torch.full((len(rows), width - 1), fmt.pad)
    targets = torch.full((len(rows), width - 1), -100)
    for r, (ids, mask) in enumerate(rows):
        inputs[r, : len(ids) - 1] = torch.tensor(ids[:-1])
        targets[r, : len(ids) - 1] = torch.tensor(
            [t if m else -100 for t, m in zip(ids[1:], mask[1:], strict=True)]
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(inputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def accuracy(model: GPT, fmt: ChatFormat, seed: int, n: int = 16) -> float:
    params = sampling_params(8, 1.0, fmt, seed)
    groups = sample_replies(model, fmt, problems(), params, n)
    return sum(
        verify(r.content[0]["text"], r.ended, ex.answer).accuracy
        for ex, group in zip(problems(), groups, strict=True)
        for r in group
    ) / (n * len(WORDS))


def train(model: GPT, fmt: ChatFormat, cfg: GRPOConfig) -> GRPOModule:
    import copy

    module = GRPOModule(model, copy.deepcopy(model).eval(), fmt, problems(), cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=-1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=ProblemData(len(WORDS), cfg, module))
    return module


def test_grpo_learns_the_rewarded_mapping(fmt, guesser):
    import copy

    before = accuracy(guesser, fmt, seed=1)
    assert 0.25 < before < 0.75  # guessing: about 1/2
    cfg = GRPOConfig(
        prompts_per_step=2,
        group_size=8,
        max_new_tokens=8,
        lr=3e-3,
        max_steps=60,
        minibatches=2,
        clip_high=0.28,
    )
    module = train(copy.deepcopy(guesser).train(), fmt, cfg)
    after = accuracy(module.policy, fmt, seed=1)
    assert after > 0.9 and after > before + 0.3, (before, after)
    rewards = [row["rl/reward_accuracy"] for row in module.history]
    assert len(rewards) == 60 and sum(rewards[-5:]) > sum(rewards[:5])
    assert module.history[-1]["rl/kl"] > module.history[0]["rl/kl"] >= 0


def test_groups_without_signal_leave_the_weights_alone(fmt):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=fmt.tokenizer.vocab_size, n_layer=1, n_embd=32, n_head=2, seq_len=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, max_new_tokens=4, max_steps=2)
    module = train(model.train(), fmt, cfg)  # a random model never writes "#### k": every group scores 0
    assert [row["rl/zero_variance_frac"] for row in module.history] == [1.0, 1.0]
    assert all(row["rl/optimizer_steps"] == 0 for row in module.history)
    assert all(torch.equal(before[k], v) for k, v in module.policy.state_dict().items())
