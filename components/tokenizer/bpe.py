"""Byte-level BPE (GPT-4 style split) trained with HF `tokenizers`, behind a small wrapper.

Why a wrapper: later stages build chat/tool sequences by concatenating `special_id(...)` with `encode(text)`
pieces, so `encode` must never turn text that merely *looks* like a special token into one (prompt
injection of control tokens). The wrapper also fixes the options (no BOS added, specials kept in `decode`)
that the HF defaults get wrong for that use."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

# Ids 0..10, in this order. `<|bos|>` marks a document boundary: prepended to every document.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|bos|>",
    "<|im_start|>",
    "<|im_sep|>",
    "<|im_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
    "<|search_start|>",
    "<|search_end|>",
    "<|pad|>",
)
BOS = "<|bos|>"
PAD = "<|pad|>"

# GPT-4's (cl100k) split pattern, except numbers: `\p{N}{1,2}` instead of `{1,3}`, as nanochat does for
# small vocabularies. With {1,3} the merges spend up to 1000 slots on 3-digit numbers, a large share of a
# 4k vocabulary; {1,2} caps that at 100 and leaves the rest for words. Works unchanged in both HF's
# Oniguruma and tiktoken's fancy-regex (possessive quantifiers included), which the benchmark checks.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]"""
    r"""|\s+(?!\S)|\s+"""
)
N_BYTES = 256
MIN_MERGES = 32  # fewer is a byte-level tokenizer in all but name
MIN_VOCAB_SIZE = N_BYTES + len(SPECIAL_TOKENS) + MIN_MERGES
# Below this the trainer has too few pairs to count for merges to mean anything.
MIN_TRAIN_BYTES = 1024
# A pair must occur twice to be merged: merges that occur once memorise the training text.
MIN_FREQUENCY = 2


def check_vocab_size(vocab_size: int) -> None:
    """Refuse a vocabulary with no room for the 256 bytes, the special tokens and some merges."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the minimum is {MIN_VOCAB_SIZE} ({N_BYTES} bytes + "
            f"{len(SPECIAL_TOKENS)} special tokens + {MIN_MERGES} merges); raise `tokenizer.vocab_size`"
        )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which HF's ByteLevel uses for its vocab."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(N_BYTES):
        if b not in printable:
            printable.append(b)
            chars.append(N_BYTES + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


BYTE_DECODER: dict[str, int] = {c: b for b, c in _bytes_to_unicode().items()}


def _empty_hf_tokenizer() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


class Tokenizer:
    """Our byte-level BPE: ordinary-text encode (specials never produced), decode, ids of the specials."""

    def __init__(self, hf: HFTokenizer) -> None:
        missing = [s for s in SPECIAL_TOKENS if hf.token_to_id(s) != SPECIAL_TOKENS.index(s)]
        if missing:
            raise ValueError(f"not one of our tokenizers: special tokens {missing} missing or misnumbered")
        # Not saved in tokenizer.json, so set on every construction: text "<|im_start|>" stays ordinary bytes.
        hf.encode_special_tokens = True
        self.hf = hf

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def bos_id(self) -> int:
        return SPECIAL_TOKENS.index(BOS)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(SPECIAL_TOKENS)}

    def special_id(self, name: str) -> int:
        """Id of a special token, by its full name ("<|im_start|>")."""
        try:
            return SPECIAL_TOKENS.index(name)
        except ValueError:
            raise KeyError(f"unknown special token {name!r}; known: {', '.join(SPECIAL_TOKENS)}") from None

    def encode(self, text: str) -> list[int]:
        """Ids of ordinary text: no BOS, and special-token look-alikes in the text encode as bytes."""
        # The batch path skips computing character offsets: ~25% faster than `hf.encode` even for one text.
        return self.hf.encode_batch_fast([text], add_special_tokens=False)[0].ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts, in parallel across cores (HF's batch encode, offsets skipped)."""
        return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, special tokens included verbatim (a rendered chat stays readable)."""
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def bytes_per_token(self, texts: Iterable[str], batch_size: int = 256) -> float:
        """UTF-8 bytes per token over `texts` (no BOS counted): the compression a vocabulary buys."""
        n_bytes = n_tokens = 0
        for batch in _batched(texts, batch_size):
            n_bytes += sum(len(t.encode("utf-8")) for t in batch)
            n_tokens += sum(len(ids) for ids in self.encode_batch(batch))
        if n_tokens == 0:
            raise ValueError("bytes_per_token needs some non-empty text")
        return n_bytes / n_tokens

    def to_tiktoken_ranks(self) -> dict[bytes, int]:
        """Mergeable ranks for `tiktoken.Encoding`: each byte-level vocab entry as raw bytes -> its id.

        tiktoken merges the pair whose concatenation has the lowest rank; HF merges in merge order. The
        trainer numbers each new token in merge order, so the two agree (the benchmark checks it)."""
        specials = set(SPECIAL_TOKENS)
        return {bytes(BYTE_DECODER[c] for c in token): i
                for token, i in self.hf.get_vocab(with_added_tokens=False).items() if token not in specials}

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (a folder gets `folder/tokenizer.json`); returns the file written."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a saved `tokenizer.json` (or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer at {path}: run the tokenizer stage (`llmops tokenizer`) "
                                    "or point at its output folder")
        return cls(HFTokenizer.from_file(str(path)))


def _batched(texts: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = MIN_FREQUENCY,
              min_train_bytes: int = MIN_TRAIN_BYTES) -> Tokenizer:
    """Train a byte-level BPE with exactly `vocab_size` tokens on `texts` (streamed, read once).

    Raises ValueError for a vocabulary too small to hold bytes + specials + merges, for too little text,
    and when the text supports fewer merges than asked for (the model's embedding is sized from
    `vocab_size`, so a silently smaller vocabulary would mislead every later stage)."""
    check_vocab_size(vocab_size)
    seen = {"bytes": 0, "docs": 0}

    def counted() -> Iterator[str]:
        for text in texts:
            seen["bytes"] += len(text.encode("utf-8"))
            seen["docs"] += 1
            yield text

    hf = _empty_hf_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    hf.train_from_iterator(counted(), trainer)
    hint = "check the data stage output (`llmops data`) or lower `tokenizer.vocab_size`"
    if seen["bytes"] < min_train_bytes:
        raise ValueError(f"too little training text: {seen['bytes']} bytes in {seen['docs']} documents "
                         f"(minimum {min_train_bytes}); {hint}")
    if hf.get_vocab_size() < vocab_size:
        raise ValueError(
            f"the training text ({seen['bytes']} bytes) supports only {hf.get_vocab_size()} of the "
            f"{vocab_size} tokens asked for (pairs seen fewer than {min_frequency} times are not merged); "
            f"{hint}"
        )
    # For HF users: `tokenizer(text)` starts with BOS, as every training document did. `encode` skips it.
    hf.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))])
    return Tokenizer(hf)


def hf_tokenizer_kwargs() -> dict[str, object]:
    """Special-token roles for transformers: a base model uses `<|bos|>` as both BOS and EOS (the document
    boundary), `<|pad|>` for padding; the chat tokens are named so `skip_special_tokens` drops them."""
    return {"bos_token": BOS, "eos_token": BOS, "pad_token": PAD,
            "additional_special_tokens": [s for s in SPECIAL_TOKENS if s not in (BOS, PAD)]}


def save_for_transformers(tokenizer: Tokenizer, out_dir: str | Path,
                          model_max_length: int | None = None) -> Path:
    """Write `tokenizer.json` + `tokenizer_config.json` so `AutoTokenizer.from_pretrained(out_dir)` loads
    offline, with no transformers import here (it is an optional dependency)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir / "tokenizer.json")
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **hf_tokenizer_kwargs(),
        "clean_up_tokenization_spaces": False,  # decode must give back the text byte for byte
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True} for i, s in enumerate(SPECIAL_TOKENS)},
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out_dir
