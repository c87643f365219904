"""MinHash dedup as configured (datatrove's four steps, FineWeb's 5-grams, 14 buckets x 8 hashes, seed 1)
on planted duplicates: near-duplicates with word-5-gram Jaccard >= 0.8 are removed (recall >= 0.9), no
distinct document is dropped, one member of each duplicate cluster survives, and runs are repeatable."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.utils.text import simplify_text

from components.config import load_config

SEED = 0
N_ORIGINALS = 70  # 30 with duplicates, 10 with a related (not duplicate) page, 30 alone
DOC_WORDS = 300
N_GRAMS = 5
WORLD_SIZE = 2  # two signature files, so clusters span files as they do with several tasks


@dataclass
class Planted:
    docs: dict[str, str]  # id -> text, in reading order
    clusters: list[list[str]]  # original first, then its copies
    distinct: set[str]  # documents with no duplicate anywhere: must all survive
    copy_jaccard: dict[str, float] = field(default_factory=dict)  # copy id -> Jaccard to its original


@pytest.fixture(scope="module")
def minhash_config() -> MinhashConfig:
    cfg = load_config(["profile=tiny"]).data.minhash
    assert cfg.enabled and (cfg.n_grams, cfg.num_buckets, cfg.hashes_per_bucket, cfg.seed) == (5, 14, 8, 1)
    return MinhashConfig(n_grams=cfg.n_grams, num_buckets=cfg.num_buckets,
                         hashes_per_bucket=cfg.hashes_per_bucket, seed=cfg.seed)


@pytest.fixture(scope="module")
def signature_step(minhash_config, tmp_path_factory) -> MinhashDedupSignature:
    folder = str(tmp_path_factory.mktemp("shingles"))
    return MinhashDedupSignature(output_folder=folder, config=minhash_config)


@pytest.fixture(scope="module")
def shingler(signature_step):
    """The hashed word n-grams exactly as MinHash computes them for a text."""
    return lambda text: set(signature_step.get_shingles(text).ravel().tolist())


@pytest.fixture(scope="module")
def tokenizer(signature_step):
    """The words MinHash sees: its text normalisation, then its tokenizer."""
    step = signature_step
    return lambda text: step.word_tokenizer.word_tokenize(simplify_text(text, step.config.norm_config))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def grams(tokens: list[str]) -> set[tuple[str, ...]]:
    return set(zip(*(tokens[i:] for i in range(N_GRAMS)), strict=False))


def source_chunks() -> list[list[str]]:
    """Real English prose: Python's own help topics, cut into non-overlapping 300-word pages."""
    from pydoc_data.topics import topics

    chunks = []
    for name in sorted(topics):
        words = topics[name].split()
        chunks += [words[i:i + DOC_WORDS] for i in range(0, len(words) - DOC_WORDS + 1, DOC_WORDS)]
    return chunks


def far_apart(chunks: list[list[str]], n: int, tokenizer, rng: random.Random) -> list[tuple[list, list]]:
    """n pages, as (words, MinHash tokens), with little text in common (the help topics repeat some
    passages)."""
    picked, seen = [], []
    for words in rng.sample(chunks, len(chunks)):
        tokens = tokenizer(" ".join(words))
        g = grams(tokens)
        if all(jaccard(g, other) < 0.1 for other in seen):
            picked.append((words, tokens))
            seen.append(g)
            if len(picked) == n:
                return picked
    raise AssertionError("not enough distinct source text")


def near_copy(tokens: list[str], vocabulary: list[str], rng: random.Random, target: float) -> tuple:
    """Rewrite short runs of words (an edited repost) until the Jaccard to the original is just under
    `target`, never under 0.8; returns (text, Jaccard). Edits MinHash's own tokens, so the Jaccard is
    exact (the test of the planted cases checks it against MinHash's hashed shingles)."""
    original = grams(tokens)
    copy, score = list(tokens), 1.0
    for _ in range(200):
        trial = list(copy)
        start, length = rng.randrange(len(trial) - 6), rng.randint(1, 4)
        trial[start:start + length] = rng.sample(vocabulary, rng.randint(1, 4))
        trial_score = jaccard(original, grams(trial))
        if trial_score < 0.8:
            continue  # that edit went too far: try another
        copy, score = trial, trial_score
        if score <= target:
            break
    return " ".join(copy), score


def plant(tokenizer) -> Planted:
    rng = random.Random(SEED)
    picked = far_apart(source_chunks(), N_ORIGINALS + 10, tokenizer, rng)
    originals, fillers = picked[:N_ORIGINALS], [words for words, _ in picked[N_ORIGINALS:]]
    vocabulary = sorted({t for _, tokens in picked for t in tokens if t.isalpha()})
    docs, clusters, distinct, copy_jaccard = {}, [], set(), {}
    for i, (words, tokens) in enumerate(originals):
        docs[f"orig-{i}"] = " ".join(words)
        if i < 30:  # a cluster: the original and 1-3 copies
            members = [f"orig-{i}"]
            for j in range(1 + i % 3):
                copy_id = f"copy-{i}-{j}"
                if (i + j) % 5 == 0:  # an exact copy, re-typeset: case and spacing differ
                    lines = ("  ".join(words[k:k + 12]) for k in range(0, DOC_WORDS, 12))
                    docs[copy_id], copy_jaccard[copy_id] = "\n".join(lines).lower(), 1.0
                else:
                    docs[copy_id], copy_jaccard[copy_id] = near_copy(tokens, vocabulary, rng,
                                                                    rng.uniform(0.8, 0.95))
                members.append(copy_id)
            clusters.append(members)
        elif i < 40:  # related but distinct: quotes a third of the original, the rest is another page
            related = f"related-{i}"
            docs[related] = " ".join(words[:DOC_WORDS // 3] + fillers[i - 30][:2 * DOC_WORDS // 3])
            distinct |= {f"orig-{i}", related}
        else:
            distinct.add(f"orig-{i}")
    order = list(docs)
    rng.shuffle(order)  # copies are not next to their original, and land in either file
    return Planted({k: docs[k] for k in order}, clusters, distinct, copy_jaccard)


@pytest.fixture(scope="module")
def planted(tokenizer) -> Planted:
    return plant(tokenizer)


def run_minhash(planted: Planted, config: MinhashConfig, work: Path) -> tuple[list[str], dict[str, int]]:
    """datatrove's four MinHash steps, as the pipeline's jobs run them; returns the surviving ids in
    reading order and every clustered document's cluster id."""
    ids = list(planted.docs)
    shards = [ids[rank::WORLD_SIZE] for rank in range(WORLD_SIZE)]

    def documents(rank: int) -> list[Document]:
        return [Document(text=planted.docs[i], id=i) for i in shards[rank]]

    signatures = MinhashDedupSignature(output_folder=str(work / "signatures"), config=config)
    for rank in range(WORLD_SIZE):
        signatures.run(documents(rank), rank=rank, world_size=WORLD_SIZE)
    buckets = MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=config)
    for bucket in range(config.num_buckets):
        buckets.run(rank=bucket, world_size=config.num_buckets)
    clusters = MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config,
                                   save_cluster_id=True)
    clusters.run()
    survivors, cluster_of = [], {}
    for rank in range(WORLD_SIZE):
        dedup = MinhashDedupFilter(str(work / "remove"), load_cluster_ids=True)
        docs = documents(rank)
        survivors += [d.id for d in dedup.run(iter(docs), rank=rank, world_size=WORLD_SIZE)]
        cluster_of |= {d.id: d.metadata["minhash_cluster_id"] for d in docs
                       if d.metadata.get("minhash_cluster_id", -1) != -1}
    return survivors, cluster_of


@pytest.fixture(scope="module")
def result(planted, minhash_config, tmp_path_factory):
    return run_minhash(planted, minhash_config, tmp_path_factory.mktemp("minhash"))


def test_planted_cases_are_what_they_claim(planted, shingler):
    """Preconditions, measured on MinHash's own shingles: copies are near-duplicates (>= 0.8), and the
    documents that must survive are far from everything else."""
    grams = {i: shingler(text) for i, text in planted.docs.items()}
    copies = {c: cluster[0] for cluster in planted.clusters for c in cluster[1:]}
    assert len(copies) == 60 and sum(j == 1.0 for j in planted.copy_jaccard.values()) >= 8
    near = [j for j in planted.copy_jaccard.values() if j < 1.0]
    assert min(near) >= 0.8 and max(near) < 0.97 and sum(j < 0.85 for j in near) >= 10
    for copy_id, original in copies.items():
        assert jaccard(grams[copy_id], grams[original]) == pytest.approx(planted.copy_jaccard[copy_id])
    related = [(f"orig-{i}", f"related-{i}") for i in range(30, 40)]
    assert all(0.1 < jaccard(grams[a], grams[b]) < 0.3 for a, b in related)
    in_cluster = {m: n for n, cluster in enumerate(planted.clusters) for m in cluster}
    worst = max(jaccard(grams[a], grams[b]) for a, b in combinations(grams, 2)
                if in_cluster.get(a, a) != in_cluster.get(b, b))
    assert worst < 0.3, "documents from different clusters must be far apart"


def test_near_duplicates_are_removed_and_distinct_documents_kept(planted, result):
    survivors, _ = result
    kept = set(survivors)
    assert len(survivors) == len(kept)
    assert planted.distinct <= kept, f"distinct documents dropped: {sorted(planted.distinct - kept)}"
    copies = sum(len(cluster) - 1 for cluster in planted.clusters)
    removed = sum(len(cluster) - len(kept & set(cluster)) for cluster in planted.clusters)
    assert removed / copies >= 0.9, f"recall {removed}/{copies}"
    assert len(kept) == len(planted.docs) - removed, "only members of planted clusters are removed"
    for cluster in planted.clusters:
        assert kept & set(cluster), f"a whole cluster was removed: {cluster}"
        exact = [c for c in cluster[1:] if planted.copy_jaccard[c] == 1.0]
        if exact:  # identical texts always collide: at most one of the original and its exact copies
            assert len(kept & {cluster[0], *exact}) <= 1, cluster


def test_exactly_one_member_of_each_found_cluster_survives(planted, result):
    survivors, cluster_of = result
    members: dict[int, list[str]] = {}
    for doc_id, cluster in cluster_of.items():
        members.setdefault(cluster, []).append(doc_id)
    planted_cluster = {m: n for n, cluster in enumerate(planted.clusters) for m in cluster}
    assert len(members) >= 28
    for cluster, ids in members.items():
        assert len(ids) >= 2
        assert len({planted_cluster.get(i, i) for i in ids}) == 1, f"cluster {cluster} mixes documents: {ids}"
        assert len(set(ids) & set(survivors)) == 1, f"cluster {cluster}: {ids}"
    found = {i for ids in members.values() for i in ids}
    # every planted cluster that was found whole keeps exactly one document
    for cluster in planted.clusters:
        if set(cluster) <= found and len({cluster_of[m] for m in cluster}) == 1:
            assert len(set(cluster) & set(survivors)) == 1


def test_same_survivors_on_a_second_run(planted, result, minhash_config, tmp_path):
    assert run_minhash(planted, minhash_config, tmp_path) == result
