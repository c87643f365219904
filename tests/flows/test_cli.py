"""The `llmops` command: help, config printing, clear errors for bad overrides, the corpus helper."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert name in out and command.summary.split()[0] in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "KEY=VALUE" in capsys.readouterr().out


def test_cfg_prints_resolved_config_with_overrides(capsys, tmp_path):
    assert main(["data", "--cfg", "profile=tiny", f"paths.root={tmp_path}", "data.minhash.n_grams=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["stage"] == "data" and cfg["profile_name"] == "tiny"
    assert cfg["data"]["minhash"]["n_grams"] == 7
    assert cfg["data"]["output_dir"] == f"{tmp_path}/data"
    assert cfg["tracking"]["uri"] == f"sqlite:///{tmp_path}/.state/mlflow.db"


def test_relative_root_is_made_absolute(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "--cfg", "paths.root=outputs"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["paths"]["root"] == f"{tmp_path}/outputs"


@pytest.mark.parametrize("override, message", [
    ("data.no_such_key=1", "Could not override 'data.no_such_key'"),
    ("profile=no_such_profile", "Could not find 'profile/no_such_profile'"),
    ("data.minhash=[=", "no viable alternative"),
])
def test_bad_overrides_fail_with_hydras_message(capsys, override, message):
    assert main(["data", override]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and message in err and "Traceback" not in err


def test_corpus_command_builds_once(capsys, tmp_path):
    args = ["corpus", "profile=tiny", f"paths.root={tmp_path}", "data.corpus.n_documents=60"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    manifest = tmp_path / "corpus" / "manifest.json"
    assert first["n_documents"] == 60 and manifest.exists()
    stamp = manifest.stat().st_mtime_ns
    assert main(args) == 0  # same settings: the existing build is reused, not rewritten
    assert json.loads(capsys.readouterr().out) == first and manifest.stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.parametrize(("command", "message"), [
    ("tokenizer", "llmops data"),
    ("pretrain", "llmops tokenizer"),
])
def test_a_stage_without_its_input_says_which_stage_to_run(prefect_harness, capsys, tmp_path, command,
                                                           message):
    assert main([command, "profile=tiny", f"paths.root={tmp_path}"]) == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after Prefect's own log lines
    assert last_line.startswith(f"llmops {command}: error:") and message in last_line


def test_scaling_plan_prints_the_compute_optimal_run(capsys, tmp_path):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.3478, "beta": 0.3658,
                               "flops_per_param_token": 6.0, "counting": {"embeddings": True}}))
    args = ["scaling", "plan", "compute=5.76e23", f"scaling.plan.fit={fit}", f"paths.root={tmp_path}"]
    assert main(args) == 0
    captured = capsys.readouterr()
    plan = json.loads(captured.out)
    assert plan["compute"] == 5.76e23
    assert plan["N_opt"] == pytest.approx(7.2e10, rel=0.05)  # Epoch's numbers (chinchilla README)
    assert plan["tokens_per_param"] == pytest.approx(18, rel=0.05)
    assert "llmops pretrain model.n_layer=" in captured.err and "tokens per parameter" in captured.err


@pytest.mark.parametrize("args, message", [
    (["compute=1e19"], "run `llmops scaling`"),
    ([], "give the budget"),
])
def test_scaling_plan_errors_say_what_to_do(capsys, tmp_path, args, message):
    assert main(["scaling", "plan", *args, f"paths.root={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
