"""The decode loop against the plain full forward: greedy, sampling, stops, lengths, hooks, logprobs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from components.model.config import GPTConfig
from components.model.engine import Completion, Engine, SamplingParams, filter_logits
from components.model.gpt import GPT

VOCAB, SEQ_LEN, PAD = 97, 64, 0
PROMPTS = [[5, 17, 42], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [60]]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    # A wider init than training's 0.02 so the next-token distribution is peaked and depends on context.
    cfg = GPTConfig(vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, seq_len=SEQ_LEN,
                    init_std=0.3)
    return GPT(cfg).eval()


@pytest.fixture(scope="module")
def engine(model: GPT) -> Engine:
    return Engine(model, pad_id=PAD)


@torch.no_grad()
def next_logits(model: GPT, seq: Sequence[int]) -> torch.Tensor:
    """Next-token logits after `seq`, from one plain (uncached, unpadded) forward."""
    return model(torch.tensor([list(seq)]))[0, -1]


def assert_greedy(model: GPT, row: Completion) -> None:
    """Every sampled token is the argmax after the prompt and all earlier tokens, forced ones included."""
    for i, (token, sampled) in enumerate(zip(row.tokens, row.sampled, strict=True)):
        if sampled:
            assert int(next_logits(model, row.prompt + row.tokens[:i]).argmax()) == token, f"step {i}"


def test_greedy_equals_full_forward_argmax(model: GPT, engine: Engine) -> None:
    rows = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0))
    assert [r.prompt_index for r in rows] == [0, 1, 2]
    assert [r.prompt for r in rows] == PROMPTS
    for row in rows:
        assert len(row.tokens) == 12 and all(row.sampled) and row.finish_reason == "length"
        assert_greedy(model, row)
    assert len({tuple(r.tokens) for r in rows}) == 3  # outputs depend on the prompt


def test_greedy_num_samples(model: GPT, engine: Engine) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=0)
    single = engine.generate(PROMPTS, params)
    rows = engine.generate(PROMPTS, params, num_samples=3)
    assert [r.prompt_index for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, row in enumerate(rows):
        assert row.tokens == single[i // 3].tokens
        assert row.prompt == PROMPTS[i // 3]


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=123)
    a = engine.generate(PROMPTS, params, num_samples=2)
    b = engine.generate(PROMPTS, params, num_samples=2)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert a[0].tokens != a[1].tokens  # samples of one prompt differ
    other = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, temperature=1.0, seed=124), 2)
    assert [r.tokens for r in a] != [r.tokens for r in other]


def test_top_k_one_is_greedy(engine: Engine) -> None:
    greedy = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=0))
    top1 = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.5, top_k=1, seed=7))
    assert [r.tokens for r in top1] == [r.tokens for r in greedy]


@pytest.mark.parametrize(("top_p", "kept"), [
    (0.4, {0}), (0.7, {0, 1}), (0.85, {0, 1, 2}), (1.0, {0, 1, 2, 3}),
])
def test_top_p_keeps_minimal_nucleus(top_p: float, kept: set[int]) -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])  # token i has probability probs[i]
    perm = torch.tensor([2, 0, 3, 1])  # row 1: the same distribution, shuffled
    logits = torch.stack([probs.log(), probs[perm].log()])
    out = filter_logits(logits, top_k=None, top_p=top_p)
    assert {i for i in range(4) if out[0, i] > float("-inf")} == kept
    assert {int(perm[i]) for i in range(4) if out[1, i] > float("-inf")} == kept
    finite = out[0] > float("-inf")
    torch.testing.assert_close(out[0][finite], logits[0][finite])  # survivors unchanged


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_keeps_k(k: int) -> None:
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(k))
    out = filter_logits(logits, top_k=k, top_p=None)
    assert ((out > float("-inf")).sum(-1) == k).all()
    assert torch.equal(out.argmax(-1), logits.argmax(-1))
    assert torch.equal(filter_logits(logits, top_k=VOCAB + 5, top_p=None), logits)


def test_stop_token_ends_only_its_row(engine: Engine) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0)
    free = engine.generate(PROMPTS, params)
    # A token row 0 produces at some step but row 1 never does.
    step, stop = next((i, t) for i, t in enumerate(free[0].tokens) if i > 0 and t not in free[1].tokens
                      and t not in free[0].tokens[:i])
    rows = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=(stop,)))
    assert rows[0].tokens == free[0].tokens[:step + 1] and rows[0].tokens[-1] == stop
    assert rows[0].finish_reason == "stop"
    assert rows[1].tokens == free[1].tokens and rows[1].finish_reason == "length"


def test_max_new_tokens_and_context_clipping(engine: Engine) -> None:
    rows = engine.generate([[7] * 5], SamplingParams(max_new_tokens=3, temperature=0))
    assert len(rows[0].tokens) == 3
    long_prompt = list(range(1, SEQ_LEN - 3))  # 60 tokens: room for 4 more
    rows = engine.generate([long_prompt, [7] * 5], SamplingParams(max_new_tokens=20, temperature=0))
    assert [len(r.tokens) for r in rows] == [4, 4]
    assert len(long_prompt) + len(rows[0].tokens) == SEQ_LEN
    assert all(r.finish_reason == "length" for r in rows)
    rows = engine.generate([list(range(1, SEQ_LEN))], SamplingParams(max_new_tokens=5, temperature=0))
    assert len(rows[0].tokens) == 1


def test_hook_forces_tokens_that_condition_the_next(model: GPT, engine: Engine) -> None:
    forced = [11, 22, 33]
    fired: set[int] = set()

    def hook(row: int, generated: list[int]) -> list[int] | None:
        if row == 1 and len(generated) == 2 and row not in fired:  # only row 1, after its 2nd token
            fired.add(row)
            return forced
        return None

    params = SamplingParams(max_new_tokens=9, temperature=0)
    rows = engine.generate(PROMPTS[:2], params, hook=hook)
    plain = engine.generate(PROMPTS[:2], params)
    row = rows[1]
    assert row.tokens[2:5] == forced
    assert row.sampled == [True, True, False, False, False, True, True, True, True]
    assert all(math.isnan(lp) for lp in row.logprobs[2:5])
    assert all(not math.isnan(lp) for i, lp in enumerate(row.logprobs) if row.sampled[i])
    assert_greedy(model, row)  # tokens after the forced ones see them
    assert row.tokens[5:] != plain[1].tokens[5:]
    assert rows[0].tokens == plain[0].tokens  # the other row is untouched


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_are_full_forward_log_softmax(model: GPT, engine: Engine, temperature: float) -> None:
    rows = engine.generate(PROMPTS, SamplingParams(max_new_tokens=6, temperature=temperature, seed=3), 2)
    for row in rows:
        for i, token in enumerate(row.tokens):
            expected = next_logits(model, row.prompt + row.tokens[:i]).log_softmax(-1)[token]
            assert row.logprobs[i] == pytest.approx(float(expected), abs=1e-4)  # at temperature 1, always


@pytest.mark.parametrize(("prompts", "message"), [
    ([[1] * SEQ_LEN], "shorten the prompt"),
    ([[1, 2], []], "empty prompt"),
    ([[1, VOCAB]], "outside the vocabulary"),
    ([[-1, 2]], "another tokenizer"),
    ([], "no prompts"),
])
def test_bad_prompts_refused(engine: Engine, prompts: list[list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(prompts, SamplingParams(max_new_tokens=2))


@pytest.mark.parametrize("kwargs", [
    {"max_new_tokens": 0}, {"temperature": -0.1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5},
])
def test_bad_sampling_params_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)


def test_generate_restores_training_mode(model: GPT, engine: Engine) -> None:
    model.train()
    try:
        engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=2, temperature=0))
        assert model.training
    finally:
        model.eval()


def test_prefill_projects_only_the_last_prompt_position(model: GPT, engine: Engine) -> None:
    """The vocabulary projection sees one row per prompt and per decoding step, never the whole prompt:
    (batch x prompt x vocab) logits would be gigabytes at LLM scale."""
    rows_seen: list[int] = []
    handle = model.lm_head.register_forward_hook(
        lambda _m, args, _out: rows_seen.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    try:
        engine.generate(PROMPTS, SamplingParams(max_new_tokens=3, temperature=0), num_samples=2)
    finally:
        handle.remove()
    assert rows_seen == [len(PROMPTS), 2 * len(PROMPTS), 2 * len(PROMPTS)]
