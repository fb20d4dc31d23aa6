"""Nothing trusted that was not checked, nothing lost, nothing hangs (issue 26's second pass).

Every case here failed on the main it was written against: tampered cells and checkpoints were
reused, NaN passed the gate, a lost lock race deleted the winner's cells, a dead Ray address hung.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from lmk_eval.cli.commands import main
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.run.plan import plan
from lmk_eval.run.runner import run_sweep
from lmk_eval.run.sweeps import sweep_from_dict
from lmk_eval.store.cells import RunStore
from lmk_eval.store.records import Part
from tests.conftest import write_beir

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--tasks", "needle-depth-quick:depth_000", "--pooling", "mean"]


def quiet(_message: str) -> None:
    pass


def sweep_of(folder, poolings=("mean",), name="trust", **extra):
    return sweep_from_dict(
        {
            "name": name,
            "poolings": list(poolings),
            "tasks": [str(folder)],
            "max_length": [64],
            **extra,
        },
        name,
    )


def main_scores(out: Path) -> dict[tuple, float]:
    frame = pd.read_csv(out / "scores.csv")
    frame = frame[frame["main"]]
    return {(r.task, r.pooling, r.split): r.score for r in frame.itertuples()}


@pytest.fixture(scope="module")
def finished_once(tiny_beir, tmp_path_factory) -> Path:
    """One finished run per test module; each test gets its own copy (``finished``)."""
    out = tmp_path_factory.mktemp("trust") / "out"
    run_sweep(sweep_of(tiny_beir), out, progress=False, log=quiet)
    return out


@pytest.fixture
def finished(finished_once, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_once, out)
    (cell,) = (out / "cells").iterdir()
    return out, cell


# -- a cell is what its files say -----------------------------------------------------------------
def _edit_score(cell: Path) -> None:
    record = json.loads((cell / "cell.json").read_text())
    record["scores"][0]["scores"][record["main_score"]] = 0.123
    (cell / "cell.json").write_text(json.dumps(record))


def _mteb_json(cell: Path) -> Path:
    (path,) = [p for p in cell.iterdir() if p.name != "cell.json"]
    return path


def _edit_mteb_json(cell: Path) -> None:
    path = _mteb_json(cell)
    result = json.loads(path.read_text())
    for entries in result["scores"].values():
        entries[0]["main_score"] = 0.123
    path.write_text(json.dumps(result))


def _drop_digests_and_edit_score(cell: Path) -> None:
    record = json.loads((cell / "cell.json").read_text())
    del record["digests"]
    (cell / "cell.json").write_text(json.dumps(record))
    _edit_score(cell)


TAMPERING = {
    "score edited in cell.json": (_edit_score, "differ from the digest written with them"),
    "digests removed and score edited": (
        _drop_digests_and_edit_score,
        "has no digests, which every cell of",
    ),
    "mteb's JSON edited": (_edit_mteb_json, "differs from the digest written with its cell.json"),
    "mteb's JSON missing": (lambda cell: _mteb_json(cell).unlink(), "lacks mteb's"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_tampered_cell_is_refused_by_readers_and_recomputed_by_run(
    case, tiny_beir, finished, tmp_path
):
    out, cell = finished
    before = main_scores(out)
    tamper, why = TAMPERING[case]
    tamper(cell)
    with pytest.raises(LmkEvalError, match=why):
        RunStore(out).records()
    assert main(["check", str(out), "--baseline", str(out)]) == 2
    log = []
    summary = run_sweep(sweep_of(tiny_beir), out, progress=False, log=log.append)
    assert summary.computed == 1 and summary.set_aside == 1
    assert len([m for m in log if m.startswith("recomputing") and why in m]) == 1
    assert main_scores(out) == before  # the computed score, not the edited one
    (aside,) = (out / "set-aside").iterdir()
    assert aside.name.endswith(".corrupt.1")


def test_recompute_sets_the_old_cell_aside_instead_of_deleting_it(tiny_beir, finished):
    out, cell = finished
    old = (cell / "cell.json").read_text()
    summary = run_sweep(sweep_of(tiny_beir), out, recompute=True, progress=False, log=quiet)
    assert summary.computed == 1
    (aside,) = (out / "set-aside").iterdir()
    assert aside.name.endswith(".replaced.1") and (aside / "cell.json").read_text() == old


def test_a_run_that_loses_the_lock_race_removes_nothing(tmp_path, monkeypatch):
    """The other run creates and locks the folder between this run's look and its mkdir."""
    root = tmp_path / "out"
    winner, held = RunStore(root), []
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == root and not held:
            held.append(winner.writing())
            held[0].__enter__()
            (root / "cells" / "theirs").mkdir(parents=True)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(LmkEvalError, match="another lmk-eval run is writing"):
        with RunStore(root).writing():
            pass
    assert (root / "cells" / "theirs").is_dir()
    held[0].__exit__(None, None, None)


# -- finite or refused ----------------------------------------------------------------------------
@pytest.fixture
def nan_run(tiny_beir, tmp_path):
    """A run whose mean cell scored NaN (as a broken model would), beside a finite cls cell."""
    sweep = sweep_of(tiny_beir, poolings=("cls", "mean"), name="nan")
    cells = [c for g in plan(sweep) for c in g.cells]
    store = RunStore(tmp_path / "nan")
    identity = {"slot": {}, "model": {}, "data": {}, "scoring": {}}
    with store.writing():
        store.write_sweep(sweep.to_dict(), cells)
        for cell in cells:
            bad = cell.variant.pooling == "mean"
            per_query = {f"q{i}": math.nan if bad else i / 4 for i in range(5)}
            main = math.nan if bad else 0.5
            part = Part(
                task=cell.task, split="test", scores={"ndcg_at_10": main}, per_query=per_query
            )
            store.save(
                cell,
                identity=identity,
                context="short",
                task_result_json="{}",
                main_score="ndcg_at_10",
                main=main,
                scores=[part],
            )
    return store.root, next(c.key() for c in cells if c.variant.pooling == "mean")


def test_a_nan_main_score_fails_check_and_baseline_naming_the_cell(nan_run, tmp_path, capsys):
    run, bad_key = nan_run
    for argv in (
        ["check", str(run), "--baseline", str(run)],
        ["baseline", str(run), "-o", str(tmp_path / "b.json")],
    ):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert bad_key in line and "nan" in line
    assert not (tmp_path / "b.json").exists()


def test_a_comparison_with_a_nan_side_is_reported_untested(nan_run, tmp_path):
    from lmk_eval.report import write_report

    lines = write_report(nan_run[0], tmp_path / "reports").read_text().splitlines()
    (untested,) = [line for line in lines if "mean vs cls" in line]
    assert (
        "not tested (a side's per-query scores are not finite)" in untested and "p=" not in untested
    )
    rows = [line for line in lines if line.startswith("| tiny_scifact")]
    assert rows and not [row for row in rows if "†" in row]


# -- qrels conventions as mteb's, said out loud --------------------------------------------------
@pytest.mark.parametrize("grade", [0, -1])
def test_queries_judged_only_zero_are_named_kept_and_scored_zero(grade, tmp_path):
    docs = [
        {"id": f"d{i}", "text": t}
        for i, t in enumerate(["Cats sit on mats.", "Rain falls in Spain.", "Bees make honey."])
    ]
    queries = [
        {"id": "q0", "text": "Where do cats sit?"},
        {"id": "q1", "text": "Where does rain fall?"},
        {"id": "q2", "text": "Who makes honey?"},
    ]
    folder = write_beir(
        tmp_path / "data", docs, queries, [("q0", "d0", 1), ("q1", "d1", 1), ("q2", "d2", grade)]
    )
    log = []
    out = tmp_path / "out"
    run_sweep(sweep_of(folder), out, progress=False, log=log.append)
    (line,) = [m for m in log if "judge no document relevant" in m]
    assert "test: 1 of 3 queries" in line and "every judgement grade 0 or less" in line
    (record,) = RunStore(out).records()
    assert record.zero_grade_queries == {"test": 1} and record.scores[0].per_query["q2"] == 0
    from lmk_eval.report import write_report

    settings = write_report(out, tmp_path / "r").read_text().split("## Main scores")[0]
    assert (
        "judge no document relevant (every judgement grade 0 or less)" in settings
        and "test 1 of 3" in settings
    )


def test_a_split_without_positive_judgements_is_refused_before_scoring():
    from lmk_eval.run.work import zero_grade_queries

    task = SimpleNamespace(
        dataset={"default": {"test": {"relevant_docs": {"q1": {"d1": 0}, "q2": {"d2": 0}}}}},
        metadata=SimpleNamespace(name="HubTask", eval_splits=["test"]),
        is_aggregate=False,
    )
    with pytest.raises(LmkEvalError, match="HubTask test: no query has a relevant document"):
        zero_grade_queries(task)


# -- checkpoints by content -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    """One mean checkpoint (2 steps) trained and evaluated by a controlled sweep."""
    from lmk_eval.retrieval.synthetic import needles

    root = tmp_path_factory.mktemp("controlled")
    facts = needles()[:16]
    folder = write_beir(
        root / "facts",
        [{"id": f"d{i}", "text": f} for i, (f, _) in enumerate(facts)],
        [{"id": f"q{i}", "text": q} for i, (_, q) in enumerate(facts)],
        [(f"q{i}", f"d{i}", 1) for i in range(16)],
    )
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "train.tsv")
    train = {
        "poolings": ["mean"],
        "data": str(folder),
        "steps": 2,
        "batch_size": 8,
        "max_seq_length": 32,
        "output": str(root / "ckpt"),
    }
    sweep = sweep_from_dict(
        {
            "name": "ctl",
            "train": train,
            "tasks": ["needle-depth-quick:depth_000"],
            "max_length": [512],
        },
        "ctl",
    )
    run_sweep(sweep, root / "run", progress=False, log=quiet)
    return root, train


def _copy(controlled, tmp_path):
    root, train = controlled
    shutil.copytree(root / "ckpt", tmp_path / "ckpt")
    shutil.copytree(root / "run", tmp_path / "run")
    train = {**train, "output": str(tmp_path / "ckpt")}
    sweep = sweep_from_dict(
        {
            "name": "ctl",
            "train": train,
            "tasks": ["needle-depth-quick:depth_000"],
            "max_length": [512],
        },
        "ctl",
    )
    (checkpoint,) = (tmp_path / "ckpt").iterdir()
    return sweep, checkpoint


def test_a_checkpoints_cells_are_stored_under_its_files_digest(controlled, tmp_path):
    from lmk_eval.train.trainer import DONE_FILE, checkpoint_files_digest

    root, train = controlled
    (checkpoint,) = (root / "ckpt").iterdir()
    record = json.loads((checkpoint / DONE_FILE).read_text())
    assert record["files"] == checkpoint_files_digest(checkpoint)
    (cell,) = RunStore(root / "run").records()
    assert cell.identity.model["files"] == record["files"]
    sweep = sweep_from_dict(
        {
            "name": "ctl",
            "train": train,
            "tasks": ["needle-depth-quick:depth_000"],
            "max_length": [512],
        },
        "ctl",
    )
    summary = run_sweep(sweep, root / "run", progress=False, log=quiet)
    assert summary.computed == 0  # the unchanged checkpoint and its cell are reused


def _other_weights(checkpoint: Path) -> None:
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other weights
    weights.write_bytes(bytes(data))


CHECKPOINT_TAMPERING = {
    "weights replaced": (_other_weights, "holds files that differ from its training record"),
    "training record removed": (
        lambda c: (c / "lmk_eval_training.json").unlink(),
        "is not the checkpoint this training makes",
    ),
    "a foreign folder under its name": (
        lambda c: (shutil.rmtree(c), c.mkdir(), (c / "mine.txt").write_text("mine")),
        "is not the checkpoint this training makes",
    ),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_TAMPERING))
def test_a_changed_checkpoint_is_refused_never_reused_nor_trained_over(case, controlled, tmp_path):
    from lmk_eval.config.training import TrainConfig
    from lmk_eval.train.trainer import train_all

    sweep, checkpoint = _copy(controlled, tmp_path)
    tamper, why = CHECKPOINT_TAMPERING[case]
    tamper(checkpoint)
    files = {
        p.relative_to(checkpoint): p.read_bytes() for p in checkpoint.rglob("*") if p.is_file()
    }
    stored = (tmp_path / "run" / "scores.csv").read_text()
    with pytest.raises(LmkEvalError, match=why):
        run_sweep(sweep, tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(LmkEvalError, match=why):
        train_all(TrainConfig(**sweep.train.model_dump()), log=quiet)
    assert {
        p.relative_to(checkpoint): p.read_bytes() for p in checkpoint.rglob("*") if p.is_file()
    } == files
    assert (tmp_path / "run" / "scores.csv").read_text() == stored


# -- messages -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--dtype", "float8"],
        ["run", "--max-length", "abc"],
        ["run", "--encoders", "x"],
        ["bogus"],
        ["check"],
        ["train", "--steps", "two"],
    ],
)
def test_argument_errors_are_one_line_with_a_pointer_to_help(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lmk-eval") and ": error: " in line and "--help`" in line


@pytest.mark.parametrize("recompute", [False, True])
def test_the_hint_after_ctrl_c_resumes_rather_than_starts_over(
    recompute, monkeypatch, capsys, tmp_path
):
    import lmk_eval.run.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmk_eval.run.runner, "run_sweep", interrupted)
    argv = [
        "run",
        *SMALL,
        "--output",
        str(tmp_path / "o"),
        "--no-report",
        *(["--recompute"] if recompute else []),
    ]
    assert main(argv) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert ("without --recompute" in line) == recompute and "resume" in line


def test_a_token_budget_under_16_is_refused_by_the_encoder_too():
    import lmk_eval

    for budget in (1, 0, -5):
        with pytest.raises(LmkEvalError, match="token_budget must be at least 16"):
            lmk_eval.encoder(None, "mean", token_budget=budget)


def test_a_long_flags_sweep_gets_a_short_name_that_tells_it_apart():
    from lmk_eval.cli.flags import sweep_from_args
    from lmk_eval.cli.parser import build_parser

    many = [
        "cls",
        "mean",
        "lmk",
        "max",
        "lasttoken",
        "mean_sqrt_len_tokens",
        "multi_cls",
        "mean_every_k",
        "layer_mean",
        "layer_max_cls",
        "native",
        "late_chunking",
    ]
    names = [
        sweep_from_args(
            build_parser().parse_args(["run", "--tasks", "scifact-quick", "--pooling", ",".join(p)])
        ).name
        for p in (many, [*many[:-1], "weightedmean"])
    ]
    assert all(len(n) <= 120 and n.startswith("scifact-quick-cls+mean+lmk") for n in names)
    assert names[0] != names[1]


# -- bounded waits --------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("head", ["refusing", "silent"])
def test_an_unanswering_ray_address_is_one_line_within_its_timeout(head, tmp_path):
    pytest.importorskip("ray")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if head == "silent":
        listener.listen(8)  # accepts connections, never speaks Ray
    else:
        listener.close()  # nothing listens: refused
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "lmk_eval.cli",
        "run",
        "--executor",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
        "--ray-timeout",
        "5",
        *SMALL,
        "--output",
        str(out),
        "--no-report",
        "--no-progress",
    ]
    temp = tmp_path / "tmp"
    temp.mkdir()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "TMPDIR": str(temp)},
        )
    finally:
        listener.close()
    assert not list(temp.glob("lmk-eval-ray-*")), "a refused join left its log in the temp folder"
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("lmk-eval: error: ")
    assert (
        "cannot reach the Ray cluster" if head == "refusing" else "did not answer within 5 s"
    ) in lines[-1]
    # Ray's own lines
    assert not [line for line in lines if "rpc_client" in line or "gcs" in line.lower()]
    assert not out.exists()


# -- fast start-up --------------------------------------------------------------------------------
PROBE = """
import sys
from lmk_eval.cli.commands import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
heavy = [m for m in ("torch", "mteb", "transformers") if m in sys.modules]
print("imported:", heavy, file=sys.stderr)
sys.exit(99 if heavy else code)
"""


@pytest.fixture(scope="module")
def finished_quick(tmp_path_factory):
    """A copy of the shipped quick run, re-run once here (which caches the model's summary)."""
    out = tmp_path_factory.mktemp("quick") / "quick"
    shutil.copytree(ROOT / "results" / "quick", out)
    assert (
        main(["run", "--config", "quick", "--output", str(out), "--no-report", "--no-progress"])
        == 0
    )
    return out


@pytest.mark.parametrize("command", ["--help", "list", "tasks", "check", "finished re-run"])
def test_start_up_commands_import_neither_torch_nor_mteb(command, finished_quick):
    argv = {
        "--help": ["--help"],
        "list": ["list"],
        "tasks": ["tasks"],
        "check": [
            "check",
            str(finished_quick),
            "--baseline",
            str(ROOT / "results" / "quick"),
            "--decimals",
            "4",
        ],
        "finished re-run": [
            "run",
            "--config",
            "quick",
            "--output",
            str(finished_quick),
            "--no-report",
        ],
    }[command]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stderr


# -- a full disk ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["baseline", "report"])
def test_a_full_disk_names_the_file_and_leaves_nothing_half_made(
    command, finished, tmp_path, monkeypatch, capsys
):
    import errno
    import os

    out, _cell = finished

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / ("base.json" if command == "baseline" else "reports")
    argv = (
        ["baseline", str(out), "-o", str(target)]
        if command == "baseline"
        else ["report", str(out), "--output-dir", str(target)]
    )
    assert main(argv) == 2  # not 1, a failed gate's code
    (line,) = capsys.readouterr().err.strip().splitlines()
    named = target if command == "baseline" else target / f"{out.name}.md"
    assert f"'{named}': No space left on device" in line
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_disk_that_fills_mid_run_names_the_first_write_that_failed(
    tiny_beir, tmp_path, monkeypatch, capsys
):
    import errno

    real = os.fsync

    def fills_after_the_first_cell(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if "__cls__" in path or "scores.csv" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fills_after_the_first_cell)
    out = tmp_path / "out"
    argv = [
        "run",
        "--tasks",
        str(tiny_beir),
        "--pooling",
        "mean,cls",
        "--max-length",
        "64",
        "--output",
        str(out),
        "--no-report",
        "--no-progress",
    ]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    # the cell, not scores.csv after it
    assert "__cls__" in line and "No space left on device" in line, line
