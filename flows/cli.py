"""`llmops`: one subcommand per pipeline stage, each taking Hydra overrides.

    llmops data profile=tiny paths.root=/tmp/x data.inputs=[a.warc.gz,b.parquet]

The config is composed (and bad overrides refused with Hydra's own message) before Prefect is
imported, so `--help`, `--cfg` and mistakes are fast and never end in a stack trace."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from components.config import load_config, to_yaml


@dataclass(frozen=True)
class Command:
    """A subcommand: the function it calls (`module:function`, taking the override list) and its help."""

    target: str
    summary: str
    description: str
    flow: bool = True  # runs as a Prefect flow with an MLflow run; False: a plain helper


COMMANDS: dict[str, Command] = {
    "pipeline": Command(
        "flows.pipeline:pipeline_flow",
        "run every stage that exists, in order, under one parent MLflow run",
        "Runs the whole pipeline (now: data, tokenizer, pretrain, scaling, sft, reward, rlhf, rlvr) as one "
        "Prefect "
        "flow. "
        "Each stage is a subflow with its own MLflow run nested under the pipeline's run, writing under "
        "${paths.root}/<stage>/.",
    ),
    "data": Command(
        "flows.data:data_flow",
        "filter a raw crawl the FineWeb way into deduplicated, PII-scrubbed Parquet shards",
        "URL blocklist, HTML extraction (trafilatura), language ID, Gopher repetition and quality, C4 and "
        "FineWeb quality filters, MinHash near-dedup and PII scrubbing, on datatrove. Inputs: "
        "data.inputs=[WARC / JSONL / Parquet files, folders, globs or fsspec URLs]; empty means the demo "
        "corpus the project builds offline. Writes ${paths.root}/data/{kept,excluded,report}/, "
        "catalog.duckdb, stats.json and metrics.json.",
    ),
    "tokenizer": Command(
        "flows.tokenizer:tokenizer_flow",
        "train the byte-level BPE tokenizer and pack the kept text into a token store",
        "Trains a GPT-4-style byte-level BPE (HF tokenizers) with the chat and tool special tokens on "
        "${paths.root}/data/kept, measures held-out bytes per token over tokenizer.sweep_vocab_sizes, "
        "and writes ${paths.root}/tokenizer/{tokenizer.json,hf/,tokens/{train,val}.bin,report.md}.",
    ),
    "pretrain": Command(
        "flows.pretrain:pretrain_flow",
        "pretrain the GPT (Lightning) on the token store; rerun to resume",
        "Trains the Llama-style GPT (model.*) on ${paths.root}/tokenizer/tokens with AdamW, warmup and "
        "cosine decay; logs loss, bits per byte, tokens/s and sample generations to MLflow, checkpoints "
        "to ${paths.root}/pretrain/checkpoints (rerunning resumes), and registers the final model "
        "(safetensors + a transformers LlamaForCausalLM export) in the MLflow registry.",
    ),
    "scaling": Command(
        "flows.scaling:scaling_flow",
        "scaling-law sweep: short pretraining runs, Chinchilla/Kaplan fits, the compute-optimal plan",
        "Trains the sweep (scaling.sweep: model sizes x token budgets, or IsoFLOP budgets x sizes, each run "
        "with a schedule of its own length) as mapped Prefect tasks with one MLflow run each, fits "
        "L = E + A/N^alpha + B/D^beta (Huber in log space, Hoffmann's starts, bootstrap intervals), IsoFLOP "
        "parabolas and Kaplan's laws, predicts a held-out larger run, and writes ${paths.root}/scaling/"
        "{fit.json,report.md,runs.csv,scaling.duckdb,*.png}. scaling.points=PATH.csv fits a table of (N, D "
        "or C, loss) from anywhere instead. `llmops scaling plan compute=1e19` prints the compute-optimal "
        "N, D and a model config of ours from the fitted law.",
    ),
    "sft": Command(
        "flows.sft:sft_flow",
        "finetune the base model into an assistant (chat protocol, tools, identity, honesty)",
        "Generates the seeded task mixture (identity, step-by-step arithmetic with and without the "
        "calculator, counting/spelling with the calculator, 'I don't know' for out-of-scope questions, "
        "search over the data catalog; plus sft.mixture.extra_jsonl files), renders it in the "
        "<|im_start|>role<|im_sep|>...<|im_end|> protocol with the loss on assistant tokens only, "
        "finetunes sft.init_from (a folder or models:/llmops-base@current), evaluates the result and "
        "the base model on held-out prompts, and registers llmops-sft. Writes ${paths.root}/sft/.",
    ),
    "reward": Command(
        "flows.reward:reward_flow",
        "train the reward model on the labeler's rankings of the SFT model's replies",
        "Samples reward.sampling.responses_per_prompt replies per prompt from reward.init_from (the SFT "
        "model), ranks them with the programmatic labeler that stands in for the human (correct, step by "
        "step, not repetitive, ends its turn), turns each ranking into pairs (plus reward.extra_files: "
        "{prompt,chosen,rejected}, HH-RLHF or ranking JSONL), trains a Bradley-Terry reward model from "
        "the SFT weights, reports held-out pairwise accuracy and registers llmops-reward. Writes "
        "${paths.root}/reward/.",
    ),
    "rlhf": Command(
        "flows.rlhf:rlhf_flow",
        "PPO against the reward model with a KL leash to the SFT model (and the run without it)",
        "PPO from rlhf.init_from against rlhf.reward_model: batched KV-cached rollouts, a per-token KL "
        "penalty to the frozen SFT model (k1/k3, fixed or adaptive to rlhf.kl.target), GAE, clipped "
        "policy and value losses, optional PPO-ptx. With rlhf.hacking_check.enabled the same run without "
        "the leash shows whether the reward gets gamed. Evaluates on held-out prompts, registers "
        "llmops-rlhf. Writes ${paths.root}/rlhf/.",
    ),
    "rlvr": Command(
        "flows.rlvr:rlvr_flow",
        "RL on problems with an answer key: GRPO and rejection-sampling finetuning, against best-of-n",
        "From rlvr.init_from: GRPO (G samples per problem, group-normalised advantages, grpo/dr_grpo/dapo "
        "loss aggregation, clip-higher, optional k3 KL, truncation masks, zero-variance group filtering) and "
        "rejection-sampling finetuning rounds (keep the correct samples, finetune on the shortest), scored "
        "with best-of-n (majority vote) on held-out problems; fits ScaleRL's sigmoid to held-out accuracy "
        "against GRPO compute. Registers llmops-rlvr. Writes ${paths.root}/rlvr/.",
    ),
    "chat": Command(
        "flows.chat:chat",
        "talk to a trained model in the terminal (streams tokens, runs tools)",
        "Loads chat.model (models:/llmops-sft@current by default, or a model folder), keeps the "
        "conversation in the context window (saying when the oldest turns are dropped), streams the "
        "reply and shows calculator and search calls with their results. /reset, /quit or Ctrl-D.",
        flow=False,
    ),
    "corpus": Command(
        "flows.corpus:build_corpus",
        "build the offline demo web corpus (WARC + JSONL with planted cases and ground truth)",
        "Writes the deterministic demo crawl to data.corpus.dir (same config -> byte-identical files). "
        "DVC's `corpus` stage runs this; data.dvc then tracks it as the raw input.",
        flow=False,
    ),
}


# Errors the stages raise for bad input (with a message saying what to change) and for a diverged run
# (FloatingPointError: NaN loss). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops",
        description="Train your own ChatGPT-style model end to end: Prefect flows over Hydra-configured "
        "stages, tracked in MLflow, versioned with DVC.",
        epilog="Examples: `llmops pipeline` (demo profile), `llmops data profile=tiny paths.root=/tmp/x`, "
        "`llmops data --cfg` (print the resolved config).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.summary, description=command.description)
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="Hydra overrides, e.g. profile=tiny paths.root=/tmp/run data.executor.workers=4")
        p.add_argument("--cfg", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name, command, overrides = args.command, COMMANDS[args.command], list(args.overrides)
    if name == "scaling" and overrides[:1] == ["plan"]:  # `compute=` is short for `scaling.plan.compute=`
        name, command = "scaling plan", SCALING_PLAN
        overrides = [f"scaling.plan.{o}" if o.split("=", 1)[0] == "compute" else o for o in overrides[1:]]
    try:
        cfg = load_config([*overrides, f"stage={args.command}"])
    except (HydraException, OmegaConfBaseException) as e:
        print(f"llmops {name}: invalid configuration: {e}", file=sys.stderr)
        return 2
    if args.cfg:
        print(to_yaml(cfg), end="")
        return 0
    if command.flow:
        use_project_prefect_home(cfg.paths.state)
    module, function = command.target.split(":")
    try:
        result = getattr(importlib.import_module(module), function)(overrides)
    except USER_ERRORS as e:  # bad input or a diverged run: the message says what to change
        print(f"llmops {name}: error: {e}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


def scaling_plan(overrides: list[str]) -> dict:
    """`llmops scaling plan compute=1e19 [overrides]`: the compute-optimal run from the fitted law; a
    summary on stderr, the JSON (returned) on stdout. A calculation: no Prefect flow, no MLflow run."""
    from components.scaling.stage import plan

    result = plan(load_config([*overrides, "stage=scaling"]))
    m = result["model"]
    print(f"compute {result['compute']:.3g} FLOPs -> N_opt {result['N_opt']:.4g} parameters, D_opt "
          f"{result['D_opt']:.4g} tokens ({result['tokens_per_param']:.1f} tokens per parameter), predicted "
          f"loss {result['predicted_loss']:.4f}\n"
          f"our nearest model: {m['n_layer']} layers x {m['n_embd']} wide, {m['n_head']} heads: "
          f"{result['model_params']:.4g} parameters as the fit counts them "
          f"({result['model_params_with_embeddings']:.4g} with embeddings), {result['tokens']:.4g} tokens "
          f"= {result['steps']} steps of {result['tokens_per_step']} tokens\n"
          f"  {result['command']}", file=sys.stderr)
    return result


SCALING_PLAN = Command("flows.cli:scaling_plan", "", "", flow=False)


def use_project_prefect_home(state_dir: str) -> None:
    """Prefect keeps its ephemeral database in PREFECT_HOME: default it into the run's state directory
    (unless the user set it, or points at a server with PREFECT_API_URL). Must run before `import prefect`."""
    if "prefect" in sys.modules or os.environ.get("PREFECT_API_URL"):
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry attempts
    home = os.environ.setdefault("PREFECT_HOME", os.path.join(state_dir, "prefect"))
    os.makedirs(home, exist_ok=True)  # Prefect's SQLite file cannot be opened in a missing folder


if __name__ == "__main__":
    sys.exit(main())
