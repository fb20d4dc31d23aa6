"""Sweeps end to end on a tiny real task: store, resume after a kill, determinism, gate, report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lmk_eval.config.variants import LmkEvalError
from lmk_eval.report import write_report
from lmk_eval.report.gate import check, write_baseline
from lmk_eval.run.plan import plan
from lmk_eval.run.runner import run_sweep
from lmk_eval.run.sweeps import load_sweep, sweep_from_dict
from lmk_eval.store.cells import RunStore
from tests.invariants import check_run

ROOT = Path(__file__).resolve().parents[1]


def tiny_sweep(folder: Path, name: str = "tiny"):
    return sweep_from_dict(
        {
            "name": name,
            "poolings": [
                {"pooling": "cls"},
                {"pooling": "mean"},
                {"pooling": "lmk", "interval": 16},
            ],
            "grid": [
                {"tasks": [str(folder)], "max_length": [64, 128], "strategy": "truncate"},
                {"tasks": ["needle-depth-quick:depth_000+depth_100"], "max_length": [512]},
            ],
        },
        name,
    )


@pytest.fixture(scope="module")
def finished_run(tiny_beir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    summary = run_sweep(tiny_sweep(tiny_beir), out, progress=False, log=lambda m: None)
    return out, summary


def test_run_stores_every_cell_with_mteb_results_and_tidy_csv(finished_run):
    out, summary = finished_run
    assert summary.total == summary.computed == 9
    cells = sorted((out / "cells").iterdir())
    assert len(cells) == 9
    assert all((c / "cell.json").exists() and len(list(c.glob("*.json"))) == 2 for c in cells)
    frame = pd.read_csv(out / "scores.csv")
    for column in ["model", "pooling", "options", "task", "split", "max_length", "metric", "score"]:
        assert column in frame.columns
    assert set(frame["pooling"]) == {"cls", "mean", "lmk[fixed/16]"}
    assert set(frame[frame.main]["split"]) == {"test", "depth_000", "depth_100"}


def test_per_query_scores_average_to_mteb_main_score(finished_run):
    out, _ = finished_run
    assert check_run(out) == 9


def test_rerun_of_a_finished_sweep_loads_no_model(finished_run, tiny_beir):
    out, _ = finished_run
    before = (out / "scores.csv").read_text()
    summary = run_sweep(tiny_sweep(tiny_beir), out, progress=False, log=lambda m: None)
    assert summary.computed == 0 and not summary.model_loaded
    assert (out / "scores.csv").read_text() == before


def test_two_runs_give_identical_scores(finished_run, tiny_beir, tmp_path):
    out, _ = finished_run
    run_sweep(tiny_sweep(tiny_beir), tmp_path / "again", progress=False, log=lambda m: None)
    assert (tmp_path / "again" / "scores.csv").read_text() == (out / "scores.csv").read_text()


def _run_cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lmk_eval.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _finished(cells: Path) -> int:
    return len([p for p in cells.iterdir() if (p / "cell.json").exists()]) if cells.is_dir() else 0


def _wait_for_cells(cells: Path, n: int, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if _finished(cells) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} cells appeared; exit {proc.poll()}")


LENGTHS = "32,48,64,96,128,192,256"  # 7 lengths x 3 poolings = 21 cells: work left after any signal


@pytest.mark.e2e
def test_killed_and_interrupted_runs_resume_to_the_uninterrupted_result(
    finished_run, tiny_beir, tmp_path
):
    target = tmp_path / "resumed"
    args = [
        "run",
        "--tasks",
        str(tiny_beir),
        "--pooling",
        "cls,mean,lmk",
        "--interval",
        "16",
        "--max-length",
        LENGTHS,
        "--output",
        str(target),
        "--no-report",
        "--no-progress",
    ]
    proc = _run_cli(args)
    _wait_for_cells(target / "cells", 1, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    killed_at = _finished(target / "cells")
    assert killed_at < 21
    proc = _run_cli(args)
    _wait_for_cells(target / "cells", killed_at + 1, proc)  # the restarted run made progress
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command to resume" in err
    assert "Traceback" not in err
    finished = _run_cli(args)
    _, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err
    assert _finished(target / "cells") == 21
    straight = tmp_path / "straight"
    run_sweep(load_sweep_from_args(args, straight), straight, progress=False, log=lambda m: None)
    assert (target / "scores.csv").read_text() == (straight / "scores.csv").read_text()
    assert not any((target / ".tmp").glob("*"))


def load_sweep_from_args(args, output):
    from lmk_eval.cli.flags import sweep_from_args
    from lmk_eval.cli.parser import build_parser

    parsed = build_parser().parse_args(args[:-4] + ["--output", str(output)])
    return sweep_from_args(parsed)


def test_gate_passes_on_true_baseline_and_names_cells_on_a_doctored_one(finished_run, tmp_path):
    import json

    out, _ = finished_run
    baseline = tmp_path / "baseline.json"
    n = write_baseline(out, baseline)
    assert n == 3 * 2 + 3 * 2  # folder: 3 poolings x 2 lengths; depth: 3 poolings x 2 splits
    assert check(out, baseline, 0.01) == ([], n)
    doc = json.loads(baseline.read_text())
    key = next(k for k in doc["scores"] if "|mean|" in k)
    doc["scores"][key] += 0.05
    doc["scores"]["default|gone|cls|64|truncate|default|test"] = 0.5
    baseline.write_text(json.dumps(doc))
    failures, _ = check(out, baseline, 0.01)
    assert len(failures) == 2
    assert any(key in f and "< baseline" in f for f in failures)
    assert any("gone" in f and "missing" in f for f in failures)
    loose, _ = check(out, baseline, 0.06)  # the +0.05 doctoring is within tolerance now
    assert len(loose) == 1 and "missing" in loose[0]


def test_both_ways_gate_also_names_cells_that_rose(finished_run, tmp_path):
    import json

    out, _ = finished_run
    baseline = tmp_path / "baseline.json"
    write_baseline(out, baseline)
    doc = json.loads(baseline.read_text())
    key = next(k for k in doc["scores"] if "|cls|" in k)
    doc["scores"][key] -= 0.05  # the run now looks 0.05 better than the baseline
    baseline.write_text(json.dumps(doc))
    assert check(out, baseline, 0.01)[0] == []
    (failure,) = check(out, baseline, 0.01, both_ways=True)[0]
    assert key in failure and "> baseline" in failure


def test_report_has_tables_significance_and_both_plots(finished_run, tmp_path):
    out, _ = finished_run
    path = write_report(out, tmp_path / "reports")
    text = path.read_text()
    assert "| task | metric | splits | cls | mean | lmk[fixed/16] |" in text
    assert "**" in text and "Holm-Bonferroni correction over all 6 comparisons" in text
    # seeds none, so n counts each query once: 8 claims in the folder, 2 x 10 needle queries
    assert text.count("n=8 queries") == 4 and text.count("n=20 queries") == 2
    assert (
        "## Evidence depth" in text
        and (tmp_path / "reports" / "tiny" / "depth.png").stat().st_size > 10_000
    )
    assert (tmp_path / "reports" / "tiny" / "length.png").exists()  # the folder task at 64 and 128


def _score_row(task, pooling, score, seed=None):
    return {
        "model": "m",
        "seed": seed,
        "task": task,
        "context": "long",
        "max_length": 512,
        "strategy": "window",
        "pooling": pooling,
        "label": pooling,
        "split": "test",
        "score": score,
        "metric": "ndcg_at_1",
        "per_query": {},
    }


def test_context_average_uses_only_rows_every_pooling_has():
    import pandas as pd

    from lmk_eval.report import main_table

    row = _score_row
    frame = pd.DataFrame([row("a", "cls", 0.2), row("a", "lmk", 0.4), row("b", "cls", 0.9)])
    table = main_table(frame, ["cls", "lmk"], [], {"cls": "cls", "lmk": "lmk"})
    average = next(line for line in table.splitlines() if "context average" in line)
    assert "1 of 2 rows" in average  # task b lacks lmk (an unfinished run)
    assert average.endswith("| 1 | 20.0 | **40.0** |")  # not cls's (0.2 + 0.9) / 2


def test_poolings_are_compared_over_the_seeds_they_all_have():
    import pandas as pd

    from lmk_eval.report import main_table, matched_seeds, seed_table

    row = _score_row
    frame = pd.DataFrame(
        [
            row("a", "cls", 0.2, 0),
            row("a", "cls", 0.8, 1),
            row("a", "lmk", 0.4, 0),
            row("b", "cls", 0.5, 1),
            row("b", "lmk", 0.7, 2),
        ]
    )
    kept, left_out = matched_seeds(frame)
    assert left_out == ["cls seed 1 (a)"]  # b shares no seed: nothing to match on, kept whole
    assert sorted(kept.loc[kept["task"] == "a", "seed"]) == [0, 0]
    table = main_table(kept, ["cls", "lmk"], [], {"cls": "cls", "lmk": "lmk"})
    assert "| a | ndcg_at_1 | 1 | 20.0 | **40.0** |" in table  # not cls's two-seed mean, 50.0
    # every seed, the left-out one too
    per_seed = seed_table(frame, ["cls", "lmk"], {"cls": "cls", "lmk": "lmk"}).splitlines()
    assert per_seed[2:5] == [
        "| a | 0 | 20.0 | 40.0 |",
        "| a | 1 | 80.0 | – |",
        "| b | 1 | 50.0 | – |",
    ]
    unseeded = frame.assign(seed=None)
    assert (
        matched_seeds(unseeded)[0] is unseeded
        and seed_table(unseeded, ["cls"], {"cls": "cls"}) is None
    )


def test_sweep_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('poolings = ["cls"]\ntasks = ["scifact"]\nmax_lenght = [256]\n')
    with pytest.raises(LmkEvalError, match="unknown key.*max_lenght"):
        load_sweep(bad)
    bad.write_text('poolings = ["cls", "nope"]\ntasks = ["scifact"]\n')
    with pytest.raises(LmkEvalError, match="unknown pooling 'nope'"):
        load_sweep(bad)
    bad.write_text("poolings = [")
    with pytest.raises(LmkEvalError, match="not valid TOML"):
        load_sweep(bad)


@pytest.mark.parametrize("config", sorted((ROOT / "tasks").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sweeps_parse_and_plan(config, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    groups = plan(load_sweep(config))
    assert groups and all(g.cells for g in groups)


def redigested(doc: dict) -> dict:
    """A cell record edited on purpose (to stand for a run that scored otherwise), with the digest
    of its scores written again as the store would have."""
    from lmk_eval.store.records import CellRecord

    return {
        **doc,
        "digests": {**doc["digests"], "scores": CellRecord.model_validate(doc).scored_digest()},
    }


def test_a_baseline_keyed_before_subsets_reads_as_the_default_subset(finished_run, tmp_path):
    from lmk_eval.report.gate import KEY_BEFORE_SUBSETS

    out, _ = finished_run
    baseline = tmp_path / "baseline.json"
    n = write_baseline(out, baseline)
    doc = json.loads(baseline.read_text())
    assert all(k.split("|")[-2] == "default" for k in doc["scores"])
    older = {k.replace("|default|", "|"): v for k, v in doc["scores"].items()}
    baseline.write_text(json.dumps({"key": KEY_BEFORE_SUBSETS, "scores": older}))
    assert check(out, baseline, 0.0, both_ways=True) == ([], n)
    first = next(iter(older))
    older[first] += 0.5
    baseline.write_text(json.dumps({"key": KEY_BEFORE_SUBSETS, "scores": older}))
    (failure,) = check(out, baseline, 0.01)[0]
    assert failure.startswith(first.rsplit("|", 1)[0] + "|default|")


def test_check_against_a_run_directory_to_four_decimals(finished_run, tmp_path, capsys):
    import shutil

    from lmk_eval.cli.commands import main

    out, _ = finished_run
    assert main(["check", str(out), "--baseline", str(out), "--decimals", "4"]) == 0
    assert "all 12 scores equal to 4 decimals" in capsys.readouterr().out
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    cell = next(p for p in (copy / "cells").glob("*__mean__*/cell.json"))
    doc = json.loads(cell.read_text())
    doc["scores"][0]["scores"][doc["main_score"]] += 0.0001  # changes the 4th decimal
    cell.write_text(json.dumps(redigested(doc)))
    assert main(["check", str(copy), "--baseline", str(out), "--decimals", "4"]) == 1
    out_text = capsys.readouterr().out
    assert (
        out_text.count("FAIL ") == 1
        and "|mean|" in out_text
        and "1 of 12 scores not equal" in out_text
    )


def test_shipped_sweeps_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    from lmk_eval.config.sweep import find_sweep_file
    from lmk_eval.run.sweeps import load_sweep

    monkeypatch.chdir(tmp_path)
    assert load_sweep("quick").name == "quick"
    assert find_sweep_file("tasks/ci.toml").name == "ci.toml"  # the old spelling still works
    with pytest.raises(LmkEvalError, match="shipped sweep: beir, ci, controlled-minilm"):
        load_sweep("nope")


def test_the_default_baseline_falls_back_to_the_sweeps_first_pooling():
    from lmk_eval.config.sweep import resolve_baseline
    from lmk_eval.run.sweeps import sweep_variants

    def baseline(sweep):
        return resolve_baseline(sweep.baseline, sweep_variants(sweep))

    sweep = sweep_from_dict({"name": "x", "poolings": ["mean", "lmk"], "tasks": ["needle"]}, "x")
    assert sweep.baseline is None and baseline(sweep) == "mean"  # validation changed nothing
    explicit = sweep_from_dict(
        {"name": "x", "poolings": ["mean", "lmk"], "tasks": ["needle"], "baseline": "lmk"}, "x"
    )
    assert baseline(explicit) == "lmk(granularity=fixed,interval=32)"  # its one variant
    assert explicit.baseline == "lmk"
    with pytest.raises(LmkEvalError, match="baseline 'cls' is not a pooling of this sweep"):
        sweep_from_dict(
            {"name": "x", "poolings": ["mean"], "tasks": ["needle"], "baseline": "cls"}, "x"
        )


@pytest.mark.e2e
def test_a_plain_wheel_carries_the_shipped_sweeps_and_data(tmp_path):
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lmk_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"lmk_eval/tasks/{p.name}" for p in (ROOT / "tasks").glob("*.toml")}
    assert shipped and shipped <= names
    assert "lmk_eval/data/synthetic/passkey.jsonl.xz" in names
    assert "lmk_eval/data/scifact/qrels/train.tsv" in names


def _options_sweep(folder: Path, poolings: list, name: str):
    return sweep_from_dict(
        {
            "name": name,
            "poolings": poolings,
            "tasks": [str(folder)],
            "max_length": [64],
            "query_prompt": "query: ",
        },
        name,
    )


LMK_AFTER = {"pooling": "lmk", "interval": 8}
LMK_BEFORE = {"pooling": "lmk", "interval": 8, "placement": "before"}
NO_PROMPT = {"pooling": "mean", "include_prompt": False}


@pytest.fixture(scope="module")
def options_run(tiny_beir, tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    together = root / "together"
    run_sweep(
        _options_sweep(tiny_beir, [LMK_AFTER, LMK_BEFORE, "mean", NO_PROMPT], "together"),
        together,
        progress=False,
        log=lambda m: None,
    )
    return together


def _by_label(run: Path) -> dict:
    return {r.cell.label: r for r in RunStore(run).records()}


def test_two_placements_in_one_sweep_score_as_each_alone_and_differ(
    options_run, tiny_beir, tmp_path
):
    together = _by_label(options_run)
    for pooling, label in ((LMK_AFTER, "lmk[fixed/8]"), (LMK_BEFORE, "lmk[fixed/8/before]")):
        alone = tmp_path / label
        run_sweep(
            _options_sweep(tiny_beir, [pooling], "alone"), alone, progress=False, log=lambda m: None
        )
        (record,) = RunStore(alone).records()
        # per-query scores too
        assert record.scores == together[label].scores and record.scores[0].per_query
    assert together["lmk[fixed/8]"].scores != together["lmk[fixed/8/before]"].scores


def test_prompt_inclusion_is_its_own_row_column_and_gate_key(options_run, tmp_path):
    from lmk_eval.report.gate import main_scores

    records = _by_label(options_run)  # (their embeddings differ: test_combinations)
    assert records["mean"].key != records["mean[no-prompt]"].key
    frame = pd.read_csv(options_run / "scores.csv")
    assert sorted(frame[frame.main]["variant"]) == sorted(
        [
            "lmk(granularity=fixed,interval=8)",
            "lmk(granularity=fixed,interval=8,placement=before)",
            "mean",
            "mean(include_prompt=false)",
        ]
    )
    keys = main_scores(options_run)
    assert len(keys) == 4 and any(
        "|mean(include_prompt=false)|64|truncate|default|test" in k for k in keys
    )
    text = write_report(
        options_run, tmp_path / "reports", baseline="mean(include_prompt=false)"
    ).read_text()
    assert (
        "| task | metric | splits | mean[no-prompt] | lmk[fixed/8] | lmk[fixed/8/before] | mean |"
        in text
    )
    assert text.count("vs mean[no-prompt]") == 3  # each other variant against the baseline


def test_decimals_compare_distance_not_rounding(finished_run, tmp_path):
    import shutil

    out, _ = finished_run
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    cell = next(p for p in (copy / "cells").glob("*__mean__*/cell.json"))
    doc = json.loads(cell.read_text())
    doc["scores"][0]["scores"][doc["main_score"]] = 0.12345 + 1e-12  # rounds to 0.1235
    cell.write_text(json.dumps(redigested(doc)))
    baseline = tmp_path / "b.json"
    write_baseline(copy, baseline)
    ref = json.loads(baseline.read_text())
    key = next(k for k, v in ref["scores"].items() if v == 0.12345 + 1e-12)
    ref["scores"][key] = 0.12345 - 1e-12  # rounds to 0.1234, yet 2e-12 away
    baseline.write_text(json.dumps(ref))
    assert check(copy, baseline, 0.01, decimals=4)[0] == []
    ref["scores"][key] = 0.12345 + 0.6e-4  # the same after rounding to 4 decimals? no: 6e-5 away
    baseline.write_text(json.dumps(ref))
    (failure,) = check(copy, baseline, 0.01, decimals=4)[0]
    assert key in failure


def test_a_baseline_keyed_by_labels_is_refused_with_the_fix(finished_run, tmp_path):
    out, _ = finished_run
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps(
            {
                "key": "model|task|pooling|max_length|strategy|split",
                "scores": {"default|t|cls|64|truncate|test": 0.5},
            }
        )
    )
    with pytest.raises(LmkEvalError, match="write it again with `lmk-eval baseline"):
        check(out, old, 0.01)


def test_a_grid_block_may_run_some_poolings_and_crosses_attention_scales():
    sweep = sweep_from_dict(
        {
            "name": "s",
            "poolings": ["cls", "late_chunking"],
            "grid": [
                {
                    "tasks": ["passkey-quick"],
                    "max_length": [1024],
                    "strategy": ["window", "grouped"],
                    "attention_scale": ["none", "logn"],
                },
                {
                    "tasks": ["passkey-quick"],
                    "max_length": [1024],
                    "strategy": ["grouped"],
                    "attention_scale": ["temperature:0.8"],
                    "poolings": ["cls"],
                },
            ],
        },
        "s",
    )
    cells = [c for g in plan(sweep) for c in g.cells]
    readings = sorted((c.variant.pooling, c.variant.reading()) for c in cells)
    # window+logn is window: every window fits
    assert readings == sorted(
        [(p, r) for p in ("cls", "late_chunking") for r in ("window", "grouped", "grouped+logn")]
        + [("cls", "grouped+temperature:0.8")]
    )
    with pytest.raises(
        LmkEvalError, match="grid 0: poolings lmk are not among the sweep's poolings"
    ):
        sweep_from_dict(
            {
                "name": "s",
                "poolings": ["cls"],
                "grid": [{"tasks": ["passkey-quick"], "poolings": ["lmk"]}],
            },
            "s",
        )


def test_a_baseline_of_another_scoring_version_is_refused_and_this_one_is_written(
    finished_run, tmp_path
):
    from lmk_eval.common.provenance import SCORING_VERSION

    out, _ = finished_run
    baseline = tmp_path / "baseline.json"
    write_baseline(out, baseline)
    written = json.loads(baseline.read_text())
    assert written["scoring_version"] == SCORING_VERSION
    assert check(out, baseline, 0.0)[0] == []
    baseline.write_text(json.dumps({**written, "scoring_version": SCORING_VERSION - 1}))
    with pytest.raises(LmkEvalError, match=f"scoring version {SCORING_VERSION - 1}"):
        check(out, baseline, 0.01)
