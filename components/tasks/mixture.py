"""Build the SFT data mixture: which task generators, in what proportions, with a real held-out set.

The mixture is a plain mapping (Hydra's `sft.tasks` config) of task name -> {"weight", **params}, so
changing the blend is a config edit that DVC sees, never a code change. Everything is seeded: the same
config and seed give byte-identical train/eval files.

Held-out evaluation examples come from a separate random stream, and any eval example whose prompt also
appears in the training set is dropped and replaced. Generated tasks have small prompt spaces
("Who are you?" will be drawn many times), so without this check "eval" would partly measure
memorisation of training prompts.

Generators are imported lazily by module path, so a task whose module or resource is unavailable (the
search catalog, a GSM8K file) only matters when that task is actually in the mixture."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.chat.protocol import validate_conversation
from components.tasks.base import TaskExample, rng_for
from components.tasks.jsonl import save_conversations

GENERATORS: dict[str, str] = {
    "identity": "components.tasks.identity",
    "out_of_scope": "components.tasks.out_of_scope",
    "text_tools": "components.tasks.text_tools",
    "arithmetic": "components.tasks.arithmetic",
    "gsm8k": "components.tasks.gsm8k",
    "search": "components.tasks.search",
}
# Objects a caller builds and hands in (not config values), with what to pass, for error messages.
RESOURCE_HINTS = {"search": "a components.sandbox.search.SearchTool over the data stage's catalog"}
EVAL_SEED_OFFSET = 1_000_003
# Held-out search: generate-and-filter rounds, each asking for twice as many candidates as the last (free
# prompts get rarer as they are used up), within a budget of candidates per task; then settle for fewer.
MAX_EVAL_ROUNDS = 12
EVAL_CANDIDATES_PER_EXAMPLE = 50
EVAL_CANDIDATES_MIN = 1_000
_NOT_PARAMS = ("rng", "n")


@dataclass
class Mixture:
    train: list[TaskExample]
    eval: list[TaskExample]
    stats: dict[str, int] = field(default_factory=dict)  # "train/<task>", "eval/<task>", ...


def build_mixture(tasks: Mapping[str, Mapping[str, Any]], *, size: int, n_eval: int, seed: int,
                  resources: Mapping[str, Any] | None = None) -> Mixture:
    """The training mixture (about `size` examples, shuffled) and `n_eval` held-out examples per task.

    Each task with weight > 0 gets round(size * weight / total_weight) training examples. Stats per task:
    train/<t>, eval/<t>, eval_overlap_dropped/<t> (eval candidates dropped because their prompt was in
    train or already in eval), eval_missing/<t> (held-out examples that could not be found), plus
    train/total and eval/total."""
    plan = _plan(tasks, size, n_eval)
    resources = dict(resources or {})
    stats: dict[str, int] = {}
    train: list[TaskExample] = []
    generators: dict[str, Callable[..., list[TaskExample]]] = {}
    for name, (n_train, params) in plan.items():
        generate, kwargs = _bind(name, params, resources)
        generators[name] = functools.partial(generate, **kwargs)
        made = _call(name, generators[name], rng_for(seed, name), n_train)
        train += made
        stats[f"train/{name}"] = len(made)

    seen = {_prompt_key(example) for example in train}
    held_out: list[TaskExample] = []
    for name in plan:
        eval_rng = rng_for(seed + EVAL_SEED_OFFSET, name)
        kept, dropped = _held_out(name, generators[name], eval_rng, n_eval, seen)
        held_out += kept
        stats[f"eval/{name}"] = len(kept)
        stats[f"eval_overlap_dropped/{name}"] = dropped
        stats[f"eval_missing/{name}"] = n_eval - len(kept)

    random.Random(seed).shuffle(train)
    stats["train/total"] = len(train)
    stats["eval/total"] = len(held_out)
    return Mixture(train=train, eval=held_out, stats=stats)


def write_mixture(mixture: Mixture, out_dir: str | Path) -> dict[str, Path]:
    """Write train.jsonl, eval.jsonl (one {"task", "messages", "answer", "meta"} per line, also valid
    standard chat JSONL) and stats.json into `out_dir`; returns their paths by name."""
    out = Path(out_dir)
    paths = {"train": out / "train.jsonl", "eval": out / "eval.jsonl", "stats": out / "stats.json"}
    save_conversations(paths["train"], (_record(e) for e in mixture.train))
    save_conversations(paths["eval"], (_record(e) for e in mixture.eval))
    paths["stats"].write_text(json.dumps(mixture.stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return paths


def read_examples(path: str | Path) -> list[TaskExample]:
    """Examples written by `write_mixture`, back as TaskExamples. Strict: this is our own artifact, so
    a malformed line is an error (ValueError naming the line), not something to skip."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"examples file not found: {path} (written by write_mixture)")
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                validate_conversation(record)
                if not isinstance(record.get("task"), str):
                    raise ValueError("missing 'task' string")
                answer, meta = record.get("answer"), record.get("meta") or {}
                if answer is not None and not isinstance(answer, str):
                    raise ValueError("'answer' must be a string or null")
                if not isinstance(meta, dict):
                    raise ValueError("'meta' must be an object")
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}, line {number}: {exc}") from exc
            examples.append(TaskExample(task=record["task"], conversation={"messages": record["messages"]},
                                        answer=answer, meta=meta))
    return examples


# --- helpers ----------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Hydra DictConfig/ListConfig (or any Mapping/Sequence) -> plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _plan(tasks: Mapping[str, Mapping[str, Any]], size: int, n_eval: int) -> dict[str, tuple[int, dict]]:
    """Validated task name -> (number of training examples, generator params), weight-0 tasks left out."""
    for label, value in (("size", size), ("n_eval", n_eval)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"mixture: {label} must be a non-negative integer, got {value!r}")
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"mixture: tasks must be a non-empty mapping of task name -> {{'weight': ...}}; "
                         f"known tasks: {sorted(GENERATORS)}")
    tasks = _plain(tasks)
    unknown = sorted(name for name in tasks if name not in GENERATORS)
    if unknown:
        raise ValueError(f"mixture: unknown task(s) {unknown}; known tasks: {sorted(GENERATORS)}")
    weights: dict[str, float] = {}
    params: dict[str, dict] = {}
    for name, config in tasks.items():
        if not isinstance(config, dict) or "weight" not in config:
            raise ValueError(f"mixture: task {name!r} needs a mapping with a 'weight', got {config!r}")
        config = dict(config)
        weight = config.pop("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) \
                or weight < 0:
            raise ValueError(f"mixture: task {name!r} weight must be a finite number >= 0, got {weight!r}")
        if weight > 0:
            weights[name], params[name] = float(weight), config
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mixture: every task has weight 0; give at least one task a positive weight")
    return {name: (round(size * weight / total), params[name]) for name, weight in weights.items()}


def _bind(name: str, params: dict[str, Any], resources: dict[str, Any]) -> tuple[Callable[..., Any], dict]:
    """The task's generate function and the keyword arguments to call it with (config params, then the
    resources its signature names). Missing required arguments and unknown params are ValueErrors."""
    try:
        module = importlib.import_module(GENERATORS[name])
    except ImportError as exc:
        raise ImportError(f"mixture: task {name!r}: cannot import {GENERATORS[name]} ({exc})") from exc
    generate = module.generate
    signature = inspect.signature(generate)
    named = {p.name: p for p in signature.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _NOT_PARAMS}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    stray = sorted(k for k in params if k in _NOT_PARAMS or (k not in named and not takes_any))
    if stray:
        raise ValueError(f"mixture: task {name!r} has unknown parameter(s) {stray}; its generator takes "
                         f"{sorted(named)}")
    kwargs = dict(params)
    for pname in named:
        if pname not in kwargs and pname in resources:
            kwargs[pname] = resources[pname]
    missing = [p for p, spec in named.items() if spec.default is spec.empty and p not in kwargs]
    for pname in missing:
        if pname in RESOURCE_HINTS:
            raise ValueError(f"mixture: task {name!r} needs the resource {pname!r} "
                             f"({RESOURCE_HINTS[pname]}): pass resources={{{pname!r}: ...}} to "
                             f"build_mixture, or give the task weight 0")
        raise ValueError(f"mixture: task {name!r} needs the parameter {pname!r}: set it in the task's config "
                         f"(sft.tasks.{name}.{pname}) or pass resources={{{pname!r}: ...}}")
    return generate, kwargs


def _call(name: str, generate: Callable[..., list[TaskExample]], rng: random.Random,
          n: int) -> list[TaskExample]:
    """Run a generator, naming the task in its parameter errors."""
    try:
        return list(generate(rng, n))
    except ValueError as exc:
        raise ValueError(f"mixture: task {name!r}: {exc}") from exc


def _held_out(name: str, generate: Callable[..., list[TaskExample]], rng: random.Random, n_eval: int,
              seen: set[str]) -> tuple[list[TaskExample], int]:
    """Up to `n_eval` examples whose prompts are not in `seen` (which grows with them), and the number of
    candidates dropped. Stops when enough are found, the candidate budget is spent, the rounds run out or
    the generator runs dry."""
    kept: list[TaskExample] = []
    dropped = 0
    budget = EVAL_CANDIDATES_PER_EXAMPLE * n_eval + EVAL_CANDIDATES_MIN
    for round_ in range(MAX_EVAL_ROUNDS):
        need = n_eval - len(kept)
        if need <= 0 or budget <= 0:
            break
        ask = min(need * 2**round_, budget)
        budget -= ask
        batch = _call(name, generate, rng, ask)
        if not batch:
            break
        for example in batch:
            if len(kept) == n_eval:
                break
            key = _prompt_key(example)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            kept.append(example)
    return kept, dropped


def _prompt_key(example: TaskExample) -> str:
    """What the model sees before answering, serialised: two examples with the same key are the same
    question."""
    return json.dumps(example.prompt, sort_keys=True, ensure_ascii=False)


def _record(example: TaskExample) -> dict[str, Any]:
    return {"task": example.task, "messages": example.conversation["messages"], "answer": example.answer,
            "meta": example.meta}
