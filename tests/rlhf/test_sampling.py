"""The masks PPO trains with: prompts left-padded and replies right-padded into one batch, where the
log-probabilities recomputed for the reply tokens are the ones the engine sampled them with, padding
changes nothing, and tokens a tool forced are not actions."""

from __future__ import annotations

import pytest
import torch

from components.chat.protocol import ChatFormat
from components.model.config import GPTConfig
from components.model.engine import Engine, SamplingParams
from components.model.gpt import GPT
from components.rlhf.ppo_math import logprobs_from_logits
from components.rlhf.sampling import Reply, prompt_mixture, sequence_batch, stop_tokens, to_reply
from components.tokenizer.bpe import train_bpe


@pytest.fixture(scope="module")
def fmt() -> ChatFormat:
    from pydoc_data.topics import topics

    return ChatFormat(train_bpe([topics[k] for k in sorted(topics)], 512))


@pytest.fixture(scope="module")
def model(fmt) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=fmt.tokenizer.vocab_size, n_layer=2, n_embd=32, n_head=4, seq_len=160)
    return GPT(cfg).eval()


@pytest.fixture(scope="module")
def examples():
    prompts = {"size": 6, "n_eval": 1, "seed": 1,
               "tasks": {"arithmetic": {"weight": 1.0, "tool_fraction": 0.0}, "identity": {"weight": 1.0}}}
    return prompt_mixture(prompts).train


def test_recomputed_logprobs_are_the_engines_and_masks_cover_each_reply(fmt, model, examples):
    params = SamplingParams(max_new_tokens=12, temperature=1.0, stop_token_ids=stop_tokens(fmt), seed=3)
    prompts = [fmt.render_prompt(ex.prompt) for ex in examples]
    completions = Engine(model, fmt.pad).generate(prompts, params)  # batched, left-padded, KV-cached
    replies = [to_reply(fmt, c) for c in completions]
    assert len({len(p) for p in prompts}) > 1
    seqs = sequence_batch(prompts, replies, fmt.pad)
    with torch.no_grad():
        logp = logprobs_from_logits(seqs.response_logits(model), seqs.response)
    for i, (reply, done) in enumerate(zip(replies, completions, strict=True)):
        n = len(reply.tokens)
        assert seqs.response_mask[i].tolist() == [1.0] * n + [0.0] * (seqs.response.shape[1] - n)
        assert seqs.response[i, :n].tolist() == reply.tokens
        assert seqs.input_ids[i, seqs.prompt_len - len(prompts[i]):seqs.prompt_len].tolist() == prompts[i]
        assert not seqs.attention_mask[i, :seqs.prompt_len - len(prompts[i])].any()  # left padding
        assert torch.allclose(logp[i, :n], torch.tensor(done.logprobs), atol=1e-4)


def test_forced_tool_tokens_are_in_the_reply_but_not_actions(fmt):
    replies = [Reply([5, 6, 7, 8], [], True, [True, False, False, True]), Reply([9], [], False, [True])]
    seqs = sequence_batch([[1, 2, 3], [1, 2]], replies, fmt.pad)
    assert seqs.response_mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert seqs.action_mask.tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]
    assert seqs.positions[1].tolist()[:seqs.prompt_len + 1] == [0, 0, 1, 2]  # positions skip left padding
    with pytest.raises(ValueError, match="no tokens"):
        sequence_batch([[1]], [Reply([], [], False, [])], fmt.pad)


def test_rl_prompts_refuse_tasks_that_need_a_tool():
    with pytest.raises(ValueError, match="needs a tool"):
        prompt_mixture({"size": 2, "n_eval": 1, "seed": 0, "tasks": {"search": {"weight": 1.0}}})


def test_a_reply_that_ends_at_once_is_still_a_valid_assistant_message(fmt):
    from components.model.engine import Completion
    from components.rlhf.preferences import PreferencePair

    reply = to_reply(fmt, Completion(0, [1], tokens=[fmt.im_end], sampled=[True], finish_reason="stop"))
    assert reply.ended and reply.content == [{"type": "text", "text": ""}]
    pair = PreferencePair([{"role": "user", "content": "hi"}], "hello", reply.content)
    assert PreferencePair.from_record(pair.to_record()) == pair
