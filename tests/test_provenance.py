"""A stored cell is reused only while what produced it is unchanged; the store stays readable."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lmk_eval.cli.commands import main
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.training import TrainConfig
from lmk_eval.run.plan import plan
from lmk_eval.run.runner import run_sweep
from lmk_eval.run.sweeps import sweep_from_dict
from lmk_eval.store.cells import RunStore
from lmk_eval.train.trainer import checkpoint_dir, is_trained, training_identity
from tests.conftest import write_beir


def quiet(_message):
    pass


def folder_sweep(*tasks, pooling="mean", name="prov"):
    return sweep_from_dict(
        {"name": name, "poolings": [pooling], "tasks": list(tasks), "max_length": [64]}, name
    )


def main_scores(out: Path) -> dict[tuple, float]:
    frame = pd.read_csv(out / "scores.csv")
    frame = frame[frame["main"]]
    return {(r.task, r.pooling, r.split): r.score for r in frame.itertuples()}


@pytest.fixture(scope="module")
def same_named(tmp_path_factory):
    """Two folders both called 'same': one where every query finds its document, one shuffled."""
    root = tmp_path_factory.mktemp("same")
    docs = [
        {"id": f"d{i}", "text": t}
        for i, t in enumerate(
            [
                "The cat sat on the mat.",
                "Rain falls in Spain.",
                "Paris is the capital of France.",
                "Bees make honey.",
                "Ice melts when warm.",
            ]
        )
    ]
    queries = [
        {"id": "q0", "text": "Where did the cat sit?"},
        {"id": "q1", "text": "Where does rain fall?"},
        {"id": "q2", "text": "What is the capital of France?"},
    ]
    easy = write_beir(
        root / "x" / "same", docs, queries, [("q0", "d0", 1), ("q1", "d1", 1), ("q2", "d2", 1)]
    )
    hard = write_beir(
        root / "y" / "same", docs, queries, [("q0", "d4", 1), ("q1", "d3", 1), ("q2", "d0", 1)]
    )
    return easy, hard


def test_same_named_folders_in_one_output_score_as_in_clean_ones(same_named, tmp_path):
    easy, hard = same_named
    shared = tmp_path / "shared"
    run_sweep(folder_sweep(str(easy)), shared, progress=False, log=quiet)
    first = main_scores(shared)
    log = []
    summary = run_sweep(folder_sweep(str(hard)), shared, progress=False, log=log.append)
    assert summary.computed == 1  # not "nothing to compute"
    run_sweep(folder_sweep(str(hard)), tmp_path / "clean", progress=False, log=quiet)
    assert main_scores(shared) == main_scores(tmp_path / "clean")
    assert main_scores(shared) != first  # the easy folder's perfect score is not reported


def test_an_edited_qrels_file_recomputes_and_says_why(same_named, tmp_path):
    folder = shutil.copytree(same_named[0], tmp_path / "data" / "same")
    out = tmp_path / "out"
    run_sweep(folder_sweep(str(folder)), out, progress=False, log=quiet)
    before = main_scores(out)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td3\t1\n")
    log = []
    summary = run_sweep(folder_sweep(str(folder)), out, progress=False, log=log.append)
    assert summary.computed == 1 and summary.set_aside == 1
    (line,) = [m for m in log if m.startswith("recomputing")]
    assert "changed since it was stored: data.files" in line
    assert main_scores(out) != before
    aside = list((out / "set-aside").iterdir())
    assert len(aside) == 1 and aside[0].name.endswith(".stale.1")  # kept, not deleted


def test_a_split_subset_then_the_whole_task_computes_the_whole_task(tmp_path):
    out = tmp_path / "out"
    run_sweep(folder_sweep("needle-depth-quick:depth_000"), out, progress=False, log=quiet)
    summary = run_sweep(folder_sweep("needle-depth-quick"), out, progress=False, log=quiet)
    assert summary.computed == 1
    splits = {split for (_task, _p, split) in main_scores(out)}
    assert len(splits) == 11  # every depth, from the new cell; the subset cell is not reported
    assert len([r for r in RunStore(out).records()]) == 1


def test_a_folder_named_like_a_bundled_task_is_its_own_task(tiny_beir, tmp_path):
    folder = shutil.copytree(tiny_beir, tmp_path / "scifact-quick")
    groups = plan(folder_sweep(str(folder), "scifact-quick"))
    names = [g.task.name for g in groups]
    assert names[1] == "scifact-quick" and names[0].startswith("scifact-quick@")
    assert groups[0].cells[0].key() != groups[1].cells[0].key()


def test_a_changed_training_setup_names_a_new_checkpoint(tiny_beir):
    cfg = TrainConfig(data=str(tiny_beir), split="test", steps=10)
    longer = cfg.model_copy(update={"steps": 11})
    faster = cfg.model_copy(update={"learning_rate": 1e-4})
    dirs = {checkpoint_dir(c, "lmk", 0) for c in (cfg, longer, faster)}
    assert len(dirs) == 3
    assert checkpoint_dir(cfg, "lmk", 0) == checkpoint_dir(cfg.model_copy(), "lmk", 0)
    assert training_identity(cfg, "lmk", 0)["steps"] == 10


def test_a_checkpoint_with_another_training_identity_is_not_reused(tmp_path, tiny_beir):
    import json

    cfg = TrainConfig(data=str(tiny_beir), split="test", steps=3)
    path = tmp_path / "ckpt"
    path.mkdir()
    record = {"identity": training_identity(cfg, "lmk", 0)}
    (path / "lmk_eval_training.json").write_text(json.dumps(record))
    assert is_trained(path, training_identity(cfg, "lmk", 0))
    assert not is_trained(path, training_identity(cfg.model_copy(update={"steps": 4}), "lmk", 0))


def test_a_corrupt_cell_is_named_set_aside_and_recomputed(tiny_beir, tmp_path):
    out = tmp_path / "out"
    sweep = folder_sweep(str(tiny_beir))
    run_sweep(sweep, out, progress=False, log=quiet)
    before = main_scores(out)
    (cell,) = (out / "cells").iterdir()
    text = (cell / "cell.json").read_text()
    (cell / "cell.json").write_text(text[: len(text) // 2])  # truncated mid-write by a crash
    for command in (
        ["report", str(out), "--output-dir", str(tmp_path / "r")],
        ["check", str(out), "--baseline", str(out)],
    ):
        with pytest.raises(LmkEvalError, match="cell.json' is unreadable: not valid JSON"):
            RunStore(out).records()
        assert main(command) == 2
    log = []
    summary = run_sweep(sweep, out, progress=False, log=log.append)
    assert summary.computed == 1 and any("unreadable" in m for m in log)
    assert main_scores(out) == before
    assert [p.name.split(".")[-2] for p in (out / "set-aside").iterdir()] == ["corrupt"]


def test_recompute_computes_stored_cells_again(tiny_beir, tmp_path):
    out = tmp_path / "out"
    sweep = folder_sweep(str(tiny_beir))
    run_sweep(sweep, out, progress=False, log=quiet)
    assert run_sweep(sweep, out, progress=False, log=quiet).computed == 0
    assert run_sweep(sweep, out, recompute=True, progress=False, log=quiet).computed == 1


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_results_honour_the_umask(tiny_beir, tmp_path, umask, file_mode, dir_mode):
    from lmk_eval.report import write_report

    old = os.umask(umask)  # the writers read nothing of it: the kernel applies it to each file
    try:
        out = tmp_path / "out"
        run_sweep(folder_sweep(str(tiny_beir)), out, progress=False, log=quiet)
        report = write_report(out, tmp_path / "reports")
    finally:
        os.umask(old)
    (cell,) = (out / "cells").iterdir()
    for path in [out / "scores.csv", out / "sweep.json", cell / "cell.json", report]:
        assert path.stat().st_mode & 0o777 == file_mode, path
    for path in [out, out / "cells", cell]:
        assert path.stat().st_mode & 0o777 == dir_mode, path


def test_a_second_writer_stops_with_one_line(tiny_beir, tmp_path):
    from filelock import FileLock

    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / ".lock")):
        with pytest.raises(LmkEvalError, match="another lmk-eval run is writing to"):
            run_sweep(folder_sweep(str(tiny_beir)), out, progress=False, log=quiet)
    assert not (out / "cells").exists() and not (out / "sweep.json").exists()


def test_a_model_that_fails_to_load_leaves_nothing_behind(tmp_path, capsys):
    from lmk_eval.model.loading import packaged_model_path

    broken = shutil.copytree(packaged_model_path(), tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--model",
            str(broken),
            "--tasks",
            "needle-depth-quick:depth_000",
            "--pooling",
            "mean",
            "--output",
            str(out),
            "--no-report",
            "--no-progress",
        ]
    )
    assert code == 2 and "could not load model directory" in capsys.readouterr().err
    assert not out.exists()


def test_auto_dtype_follows_the_cpu_flags(monkeypatch):
    from lmk_eval.common import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_vnni"}))
    assert hardware.resolve_dtype("auto", "cpu") == (
        "float32",
        "this CPU has no native bf16 (no avx512_bf16, amx_bf16 or bf16 flag)",
    )
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert hardware.resolve_dtype("auto", "cpu")[0] == "bfloat16"
    assert hardware.resolve_dtype("float32", "cpu") == ("float32", "as asked")
    with pytest.raises(LmkEvalError, match="torch sees no CUDA GPU"):
        hardware.check_device("cuda")


def test_a_dtype_is_its_own_cell_beside_float32(tiny_beir, tmp_path):
    out = tmp_path / "out"
    fp32 = folder_sweep(str(tiny_beir))
    bf16 = sweep_from_dict(
        {
            "name": "prov",
            "poolings": ["mean"],
            "tasks": [str(tiny_beir)],
            "max_length": [64],
            "dtype": "bfloat16",
        },
        "prov",
    )
    run_sweep(fp32, out, progress=False, log=quiet)
    summary = run_sweep(bf16, out, progress=False, log=quiet)
    assert summary.computed == 1 and summary.set_aside == 0  # beside the fp32 cell, not over it
    assert len(list((out / "cells").iterdir())) == 2
    (record,) = RunStore(out).records()
    assert record.identity.encoding["dtype"] == "bfloat16"
    assert record.identity.slot["encoding"] == {"dtype": "bfloat16"}
    assert run_sweep(fp32, out, progress=False, log=quiet).computed == 0  # fp32 still reusable
