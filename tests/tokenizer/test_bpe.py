"""The byte-level BPE: special tokens, round trips, refusals, and agreement with transformers and tiktoken."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.tokenizer.bpe import (
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    Tokenizer,
    save_for_transformers,
    train_bpe,
)

# Varied text to compare encodings on: Unicode, emoji, code, odd whitespace, digits, contractions.
SAMPLES = [
    "Hello, world!",
    "  leading and trailing spaces   ",
    "tabs\tand\r\nwindows newlines\n\n\nand blank lines\n",
    "naïve café, Straße, ÆØÅ, ελληνικά, русский, עברית, العربية, हिन्दी, 中文字符, 日本語のテキスト, 한국어",
    "emoji 🎉🚀 👩‍👩‍👧‍👦 🇫🇷 ❤️ and a combining e\u0301",
    "nbsp\u00a0here, ideographic\u3000space, line\u2028separator, zero\u200bwidth, bom\ufeff",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\nprint(f(12345678))\n",
    '{"key": [1, 2.5, -3e10], "s": "it\'s"}',
    "I'm sure you've seen they'll do what we'd DON'T WON'T",
    "",
    " ",
    "\n",
    "a" * 500,
    "1234567890 3.14159 $1,000,000.00 100%",
]
# Text that looks like special tokens: ordinary bytes to `encode`.
LOOKALIKES = "<|bos|> <|im_start|>user<|im_sep|>hi<|im_end|> <|pad|><|python_start|>x<|python_end|>"


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [topics[k] for k in sorted(topics)]


@pytest.fixture(scope="module")
def tok(corpus: list[str]) -> Tokenizer:
    return train_bpe(corpus, 1024)


def test_special_tokens_have_fixed_ids(tok: Tokenizer) -> None:
    assert len(SPECIAL_TOKENS) == 11
    assert [tok.special_id(s) for s in SPECIAL_TOKENS] == list(range(11))
    assert [tok.hf.id_to_token(i) for i in range(11)] == list(SPECIAL_TOKENS)
    assert tok.bos_id == tok.special_id("<|bos|>") == 0
    assert tok.special_id("<|pad|>") == 10
    assert tok.vocab_size == 1024
    with pytest.raises(KeyError, match="unknown special token"):
        tok.special_id("<|eos|>")


@pytest.mark.parametrize("text", [*SAMPLES, LOOKALIKES])
def test_round_trip_and_no_special_ids(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)


def test_special_lookalikes_encode_as_ordinary_bytes(tok: Tokenizer) -> None:
    ids = tok.encode("<|im_start|>")
    assert tok.special_id("<|im_start|>") not in ids
    assert len(ids) > 1  # bytes, not one control token
    assert tok.encode(LOOKALIKES) == [i for part in tok.encode_batch([LOOKALIKES]) for i in part]


def test_concatenating_specials_and_text(tok: Tokenizer) -> None:
    """How SFT rendering builds sequences: special ids glued to `encode` pieces."""
    sid = tok.special_id
    user = "what is <|im_end|> 2+2?"
    ids = [tok.bos_id, sid("<|im_start|>"), *tok.encode("user"), sid("<|im_sep|>"), *tok.encode(user),
           sid("<|im_end|>")]
    assert tok.decode(ids) == f"<|bos|><|im_start|>user<|im_sep|>{user}<|im_end|>"
    assert [i for i in ids if i < len(SPECIAL_TOKENS)] == [0, 1, 2, 3]  # the text's look-alike stays text


def test_encode_batch_matches_encode(tok: Tokenizer) -> None:
    assert tok.encode_batch(SAMPLES) == [tok.encode(s) for s in SAMPLES]
    assert tok.encode_batch([]) == []


def test_merges_compress(tok: Tokenizer, corpus: list[str]) -> None:
    assert tok.bytes_per_token(corpus[:20]) > 2.0
    with pytest.raises(ValueError, match="non-empty"):
        tok.bytes_per_token(["", ""])


def test_vocab_too_small_is_refused(corpus: list[str]) -> None:
    with pytest.raises(ValueError, match=rf"minimum is {MIN_VOCAB_SIZE}.*raise `tokenizer.vocab_size`"):
        train_bpe(corpus, 256 + len(SPECIAL_TOKENS))
    assert train_bpe(corpus[:5], MIN_VOCAB_SIZE).vocab_size == MIN_VOCAB_SIZE


@pytest.mark.parametrize("texts", [[], [""], ["tiny text"] * 3])
def test_too_little_text_is_refused(texts: list[str]) -> None:
    with pytest.raises(ValueError, match=r"too little training text.*check the data stage output.*lower"):
        train_bpe(texts, 512)


def test_text_too_small_for_the_vocab_is_refused(corpus: list[str]) -> None:
    match = r"supports only \d+ of the 8192 tokens.*lower `tokenizer.vocab_size`"
    with pytest.raises(ValueError, match=match):
        train_bpe(corpus[:3], 8192)


def test_training_is_deterministic(corpus: list[str], tok: Tokenizer) -> None:
    assert train_bpe(corpus, 1024).hf.to_str() == tok.hf.to_str()


def test_save_and_load(tok: Tokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    for loaded in (Tokenizer.load(path), Tokenizer.load(tmp_path / "tok")):
        texts = [*SAMPLES, LOOKALIKES]
        assert [loaded.encode(s) for s in texts] == [tok.encode(s) for s in texts]
        assert loaded.vocab_size == tok.vocab_size
    with pytest.raises(FileNotFoundError, match="no tokenizer at .*run the tokenizer stage"):
        Tokenizer.load(tmp_path / "missing")


def test_tiktoken_on_the_same_merges_agrees(tok: Tokenizer, corpus: list[str]) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    ranks = tok.to_tiktoken_ranks()
    assert len(ranks) == tok.vocab_size - len(SPECIAL_TOKENS)
    assert all(bytes([b]) in ranks for b in range(256))
    enc = tiktoken.Encoding(name="ours", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                            special_tokens=tok.special_tokens)
    texts = [*SAMPLES, LOOKALIKES, *corpus[:20]]
    assert [enc.encode_ordinary(t) for t in texts] == tok.encode_batch(texts)
    assert enc.decode(tok.encode(SAMPLES[4])) == SAMPLES[4]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300))
def test_decode_encode_round_trip_property(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


# --- transformers -------------------------------------------------------------------------------


def test_transformers_loads_tokenizer_json(tok: Tokenizer, tmp_path: Path, corpus: list[str]) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok.save(tmp_path)))
    for text in [*SAMPLES, *corpus[:10]]:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == tok.decode(ids) == text
    assert hf.encode("hi")[0] == tok.bos_id  # HF users get a BOS, as every training document had


def test_save_for_transformers_loads_offline(tok: Tokenizer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = save_for_transformers(tok, tmp_path / "hf", model_max_length=512)
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|bos|>"
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<|bos|>", "<|bos|>", "<|pad|>")
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 0, 10)
    assert hf.model_max_length == 512
    assert hf(SAMPLES[3])["input_ids"] == [0, *tok.encode(SAMPLES[3])]
    ids = [tok.special_id("<|im_start|>"), *tok.encode("hi"), tok.special_id("<|im_end|>")]
    assert hf.decode(ids) == "<|im_start|>hi<|im_end|>"
    assert hf.decode(ids, skip_special_tokens=True) == "hi"
    # HF's own convention: special-token text in its input *is* the special token (chat templates
    # rely on it). Only our `encode` treats such text as ordinary bytes.
    assert hf.encode("<|im_start|>", add_special_tokens=False) == [1]
