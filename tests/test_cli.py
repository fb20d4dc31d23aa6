"""The command line: every bad option is one clear line and a non-zero exit."""

import subprocess
import sys

import pytest

from lmk_eval.cli import main
from lmk_eval.variants import GRANULARITIES, POOLINGS


def test_list_names_every_pooling_and_granularity(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*POOLINGS, *GRANULARITIES, "truncate", "window"]:
        assert f"  {name} " in out


def test_tasks_lists_bundled_and_online(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "passkey-quick" in out and "LEMBNeedleRetrieval" in out and "BEIR folder" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pooling", "clss"], "unknown pooling 'clss'"),
        (["--interval", "0"], "interval must be an integer >= 1"),
        (["--max-length", "2"], "too small to hold [CLS], a token and a landmark"),
        (["--model", "./no/such/model"], "model path './no/such/model' does not exist"),
        (["--tasks", "./no/such/folder"], "task folder './no/such/folder' does not exist"),
        (["--config", "tasks/none.toml"], "sweep config 'tasks/none.toml' does not exist"),
        (
            ["--intervals", "32,x", "--granularity", "variable"],
            "intervals must be comma-separated integers",
        ),
        (
            ["--tasks", "SciFact"],
            "hub is unreachable, so mteb task(s) SciFact cannot be downloaded",
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
        [sys.executable, "-m", "lmk_eval.cli", "run", "--model", str(tmp_path / "missing"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
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
