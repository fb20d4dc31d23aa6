"""The command line: every bad option is one clear line and a non-zero exit."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from lmk_eval.cli.commands import main

SHIPPED = [
    "cls",
    "mean",
    "max",
    "lasttoken",
    "weightedmean",
    "mean_sqrt_len_tokens",
    "lmk",
    "mean_every_k",
    "multi_cls",
    "layer_mean",
    "layer_max_cls",
    "latent_attention",
    "multilayer_attention",
    "gem",
    "native",
]


def test_list_names_every_shipped_pooling_and_how_windows_merge(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [
        *SHIPPED,
        "fixed",
        "sentence",
        "variable",
        "after",
        "before",
        "truncate",
        "window",
    ]:
        assert f"  {name} " in out, name
    merges = out.split("under --strategy window:")[1]
    assert "mean_every_k" in merges and "a window shorter than k adds nothing" in merges
    assert all(f"  {name} " in merges for name in SHIPPED)


def test_pooling_options_from_flags_apply_before_the_sweep_is_checked(tmp_path, capsys):
    """The command the old code refused: its baseline was resolved before --interval applied."""
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--pooling",
            "lmk,mean",
            "--interval",
            "64",
            "--tasks",
            "passkey-quick:test_256",
            "--output",
            str(out),
            "--report-dir",
            str(tmp_path / "reports"),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    frame = pd.read_csv(out / "scores.csv")
    assert set(frame["pooling"]) == {"lmk[fixed/64]", "mean"}
    report = (tmp_path / "reports" / "out.md").read_text()
    assert "(baseline for significance: `lmk[fixed/64]`)" in report  # no cls: the first pooling


def test_flag_defaults_and_choices_are_the_schemas(capsys):
    from lmk_eval.cli.parser import build_parser
    from lmk_eval.config.training import TrainConfig

    parser = build_parser()
    train = parser.parse_args(["train"])
    assert all(getattr(train, f) is None for f in ("steps", "batch_size", "lr", "seeds", "output"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    cfg = TrainConfig()
    assert f"(default {cfg.steps})" in text and f"(default {cfg.learning_rate})" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--precision", "float16"])  # not a TrainConfig precision
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--placement", "middle"])


def test_tasks_lists_bundled_and_online(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "passkey-quick" in out and "benchmark LongEmbed" in out and "BEIR folder" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pooling", "clss"], "unknown pooling 'clss'"),
        (["--interval", "0"], "interval must be an integer >= 1"),
        (
            ["--max-length", "2"],
            "max_length 2 is too small to hold the special tokens around one token of text",
        ),
        (
            ["--max-length", "2", "--pooling", "lmk"],
            "too small to hold [CLS], a token and a landmark",
        ),
        (["--model", "./no/such/model"], "model path './no/such/model' does not exist"),
        (["--tasks", "./no/such/folder"], "task folder './no/such/folder' does not exist"),
        (["--config", "tasks/none.toml"], "sweep config 'tasks/none.toml' does not exist"),
        (
            ["--intervals", "32,x", "--granularity", "variable"],
            "intervals must be comma-separated integers",
        ),
        (
            ["--tasks", "SciFact"],
            "HF_HUB_OFFLINE is set and hub dataset 'mteb/scifact' at revision d56462d0e63a25450459c4f213e49ffdb866f7f9 (mteb task SciFact) is not in the Hugging Face cache",
        ),
    ],
)
def test_bad_options_give_one_line_and_exit_2(args, message, capsys, tmp_path):
    code = main(["run", *args, "--output", str(tmp_path / "out"), "--no-report", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmk-eval: error:") and message in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written, not even a run directory


def test_bad_model_path_through_the_real_console_entry_point(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmk_eval.cli",
            "run",
            "--model",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_and_report_on_a_missing_run(tmp_path, capsys):
    assert main(["check", str(tmp_path), "--baseline", str(tmp_path / "b.json")]) == 2
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "baseline" in err and "not a run directory" in err


def test_help_explains_the_run_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in ["--config", "--pooling", "--tasks", "--max-length", "--strategy", "--output"]:
        assert flag in out


def test_the_cli_leaves_the_tokenizer_its_cores(tmp_path):
    """A CLI run tokenises on every core (the forward waits for it on a CPU), unless the user says
    TOKENIZERS_PARALLELISM: the CLI used to set it to false for every run."""
    probe = (
        "import os; from lmk_eval.cli import main; main(['list']);"
        " print(os.environ.get('TOKENIZERS_PARALLELISM', 'unset'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "unset"
