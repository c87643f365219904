"""Problems with an answer key, for RL on verifiable rewards: the project's arithmetic word problems,
GSM8K, and any `{"prompt", "answer"}` JSONL file.

Generated sources go through the SFT task mixture (own seed, held-out prompts never in training). Whether
the calculator is offered is one switch for every source: `tools: true` gives each prompt the tool
system message (the sampler then runs calls in the sandbox), `tools: false` asks for mental arithmetic."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.chat.protocol import validate_conversation
from components.tasks.arithmetic import TOOL_SYSTEM_PROMPT
from components.tasks.base import ANSWER_MARKER, TaskExample
from components.tasks.mixture import build_mixture

# Generators whose problems have a numeric answer key and take a `tool_fraction`.
VERIFIABLE_TASKS = ("arithmetic", "gsm8k")
JSONL_SKIP_REASONS = ("bad_json", "not_an_object", "missing_fields", "empty_prompt", "empty_answer")


@dataclass
class ProblemSet:
    train: list[TaskExample]
    eval: list[TaskExample]
    stats: dict[str, int] = field(default_factory=dict)


def with_tool_offer(example: TaskExample, tools: bool) -> TaskExample:
    """The same problem with the calculator offered (tool system message first) or not offered."""
    messages = [
        m for m in example.prompt if not (m["role"] == "system" and m["content"] == TOOL_SYSTEM_PROMPT)
    ]
    if tools:
        messages = [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, *messages]
    ideal = example.conversation["messages"][-1]
    conversation = validate_conversation({"messages": [*messages, ideal]})
    return TaskExample(example.task, conversation, example.answer, {**example.meta, "tool_offered": tools})


def load_problem_jsonl(path: str | Path, *, tools: bool = False) -> tuple[list[TaskExample], dict[str, int]]:
    """Every usable `{"prompt": str, "answer": str | number}` line as a problem, and the stats
    {"read", "kept", "skipped_<reason>"}. The stored ideal reply is only the marked answer (RL never
    trains on it; it keeps the record a valid conversation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file {path} does not exist")
    stats: Counter[str] = Counter({"read": 0, "kept": 0, **{f"skipped_{r}": 0 for r in JSONL_SKIP_REASONS}})
    problems: list[TaskExample] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            stats["read"] += 1
            reason = None
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                reason = "bad_json"
            else:
                reason = _problem_error(record)
            if reason is not None:
                stats[f"skipped_{reason}"] += 1
                continue
            answer = str(record["answer"]).strip()
            conversation = validate_conversation(
                {
                    "messages": [
                        {"role": "user", "content": record["prompt"].strip()},
                        {"role": "assistant", "content": f"{ANSWER_MARKER} {answer}"},
                    ]
                }
            )
            problem = TaskExample("jsonl", conversation, answer, {"source": path.name, "row": line_no})
            problems.append(with_tool_offer(problem, tools))
            stats["kept"] += 1
    return problems, dict(stats)


def _problem_error(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not_an_object"
    if "prompt" not in record or "answer" not in record:
        return "missing_fields"
    if not isinstance(record["prompt"], str) or not record["prompt"].strip():
        return "empty_prompt"
    if record["answer"] is None or isinstance(record["answer"], bool) or not str(record["answer"]).strip():
        return "empty_answer"
    return None


def build_problems(cfg: Mapping[str, Any]) -> ProblemSet:
    """Training and held-out problems from `{size, n_eval, seed, tools, tasks, jsonl: {train, eval}}`."""
    tools = bool(cfg.get("tools", False))
    tasks = {
        name: dict(params) for name, params in cfg["tasks"].items() if float(params.get("weight", 0)) > 0
    }
    unknown = sorted(set(tasks) - set(VERIFIABLE_TASKS))
    if unknown:
        raise ValueError(
            f"rlvr.problems.tasks: {unknown} have no numeric answer key; use "
            f'{list(VERIFIABLE_TASKS)} or a {{"prompt", "answer"}} JSONL file (rlvr.problems.jsonl)'
        )
    for params in tasks.values():
        params["tool_fraction"] = 1.0 if tools else 0.0
    train: list[TaskExample] = []
    held_out: list[TaskExample] = []
    stats: dict[str, int] = {}
    if tasks:
        mixture = build_mixture(
            tasks, size=int(cfg["size"]), n_eval=int(cfg["n_eval"]), seed=int(cfg["seed"])
        )
        train += [with_tool_offer(ex, tools) for ex in mixture.train]
        held_out += [with_tool_offer(ex, tools) for ex in mixture.eval]
        stats |= mixture.stats
    jsonl = cfg.get("jsonl") or {}
    for split, into in (("train", train), ("eval", held_out)):
        for path in jsonl.get(split) or []:
            loaded, file_stats = load_problem_jsonl(path, tools=tools)
            into += loaded
            stats |= {f"jsonl_{split}/{Path(path).name}/{k}": v for k, v in file_stats.items()}
    _check(train, held_out)
    stats["train/problems"], stats["eval/problems"] = len(train), len(held_out)
    return ProblemSet(train, held_out, stats)


def _check(train: Sequence[TaskExample], held_out: Sequence[TaskExample]) -> None:
    if not train:
        raise ValueError("rlvr: no training problems; give a task a positive weight or a jsonl.train file")
    if not held_out:
        raise ValueError("rlvr: no held-out problems; set rlvr.problems.n_eval > 0 or a jsonl.eval file")
    missing = [ex.task for ex in (*train, *held_out) if ex.answer is None]
    if missing:
        raise ValueError(f"rlvr: {len(missing)} problems have no answer key (tasks {sorted(set(missing))})")
