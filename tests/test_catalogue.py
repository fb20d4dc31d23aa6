"""The paper's evaluation as mteb runs it, end to end through a stand-in of the hub: the shipped
`paper` sweep (BEIR-15 with CQADupstack as mteb's aggregate, LongEmbed-6, MLDR's English subset)
on miniature copies of every dataset at mteb's pinned revisions, and a tiny random ModernBERT
served as answerdotai/ModernBERT-base. Its numbers mean nothing; the code paths are the users'.
"""

from __future__ import annotations

import re
from statistics import fmean

import mteb
import pandas as pd
import pytest
import torch

from lmk_eval.store.cells import RunStore
from tests.fake_hub import FakeHub, Repo, folder_files, run_cli
from tests.hub_catalogue import paper_tasks, repos_for
from tests.invariants import check_run
from tests.tiny_models import build_modernbert

pytestmark = pytest.mark.e2e  # whole sweeps, subprocesses, servers: `make test` runs them

MODEL = "answerdotai/ModernBERT-base"
AGGREGATE = "CQADupstackRetrieval"
MLDR = "MultiLongDocRetrieval[en]"


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory) -> Repo:
    """A tiny random ModernBERT with 8,192 positions, served under the paper's model id."""
    torch.manual_seed(0)
    model = build_modernbert(tmp_path_factory.mktemp("modernbert"), positions=8192)
    return Repo("model", MODEL, "8" * 40, folder_files(model))


@pytest.fixture(scope="module")
def hub(tmp_path_factory, model_repo):
    root = tmp_path_factory.mktemp("catalogue")
    with FakeHub([*repos_for(paper_tasks()), model_repo]) as served:
        yield served, root


@pytest.fixture(scope="module")
def paper(hub):
    served, root = hub
    out, reports = root / "paper", root / "reports"
    done = run_cli(
        [
            "run",
            "--config",
            "paper",
            "--output",
            str(out),
            "--report-dir",
            str(reports),
            "--no-progress",
        ],
        served.endpoint,
        root / "hf",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, reports / "paper.md"


def test_the_paper_sweep_runs_through_the_hub_with_cqadupstack_as_one_task(paper):
    out, _ = paper
    frame = pd.read_csv(out / "scores.csv")
    beir = [t.metadata.name for t in mteb.get_benchmark("BEIR").tasks]
    longembed = [t.metadata.name for t in mteb.get_benchmark("LongEmbed").tasks]
    assert set(frame["task"]) == {*beir, *longembed, MLDR} and len(set(frame["task"])) == 22
    assert not {t.metadata.name for t in mteb.get_task(AGGREGATE).tasks} & set(frame["task"])
    main = frame[frame["main"]]
    assert set(main[main["task"] == MLDR]["subset"]) == {"en"} and set(
        main[main["task"] == MLDR]["split"]
    ) == {"test"}
    assert set(main[main["task"] == "MSMARCO"]["split"]) == {"dev"}
    context = dict(zip(frame["task"], frame["context"], strict=False))
    assert {context[t] for t in beir} == {"short"} and {context[t] for t in [*longembed, MLDR]} == {
        "long"
    }
    # every cell: per-query means = its main score = mteb's TaskResult
    assert check_run(out) == 22 * 3


def test_an_aggregate_keeps_each_sub_task_and_pairs_queries_within_them(paper):
    out, _ = paper
    records = [r for r in RunStore(out).records() if r.task == AGGREGATE]
    assert len(records) == 3
    subtasks = [t.metadata.name for t in mteb.get_task(AGGREGATE).tasks]
    for r in records:
        assert [p.task for p in r.subtasks] == subtasks and [p.task for p in r.scores] == [
            AGGREGATE
        ]
        assert all(
            (out / "cells" / r.key / "subtasks" / f"{name}.json").is_file() for name in subtasks
        )
        combined = mteb.get_task(AGGREGATE).combine_task_results(
            [
                mteb.TaskResult.model_validate_json(
                    (out / "cells" / r.key / "subtasks" / f"{n}.json").read_text()
                )
                for n in subtasks
            ]
        )
        assert r.main == pytest.approx(combined.get_score(), abs=1e-12)
        assert r.main == pytest.approx(fmean(p.scores["ndcg_at_10"] for p in r.subtasks), abs=1e-9)
    identity = records[0].identity.data
    assert identity["kind"] == "mteb-aggregate" and list(identity["tasks"]) == subtasks
    for name, sub in identity["tasks"].items():
        assert (
            sub["dataset"] == mteb.get_task(name).metadata.dataset
            and sub["commit"] == sub["dataset"]["revision"]
        )


def test_a_subset_loads_and_scores_that_language_only(paper, hub):
    out, _ = paper
    served, _ = hub
    (record,) = [
        r for r in RunStore(out).records() if r.task == MLDR and r.variant.pooling == "cls"
    ]
    assert [(p.subset, p.split) for p in record.scores] == [("en", "test")]
    assert record.scores[0].per_query and all(
        q.startswith("en-") for q in record.scores[0].per_query
    )
    assert record.identity.data["subsets"] == ["en"] and record.variant.max_length == 8192
    fetched = {
        r.split("/resolve/", 1)[1] for r in served.requests if "MultiLongDocRetrieval/resolve/" in r
    }
    assert any("/en/" in f for f in fetched) and not [
        f for f in fetched if re.search(r"/(?!en/)[a-z]{2}/", f)
    ]


def test_the_report_averages_follow_mteb_benchmarks(paper):
    from lmk_eval.common.hardware import cpu_description

    out, report = paper
    text = report.read_text()
    assert f"Measured on: {cpu_description()}." in text  # the machine beside the timings
    records = RunStore(out).records()
    header = next(
        line for line in text.splitlines() if line.startswith("| task | metric | splits |")
    )
    poolings = [c.strip() for c in header.strip("|").split("|")[3:]]
    for name, size in (("BEIR", 15), ("LongEmbed", 6)):
        row = next(
            line
            for line in text.splitlines()
            if line.startswith(f"| *{name} average (mteb benchmark, {size} tasks)*")
        )
        shown = [float(c.strip().strip("*")) for c in row.strip("|").split("|")[3:]]
        tasks = [t.metadata.name for t in mteb.get_benchmark(name).tasks]
        for label, value in zip(poolings, shown, strict=True):
            mains = [r.main for r in records if r.task in tasks and r.cell.label == label]
            assert len(mains) == size and value == pytest.approx(100 * fmean(mains), abs=0.051)


def test_an_aggregate_equals_its_sub_tasks_run_by_name(hub, paper):
    served, root = hub
    subtasks = [t.metadata.name for t in mteb.get_task(AGGREGATE).tasks]
    out = root / "by-name"
    done = run_cli(
        [
            "run",
            "--model",
            MODEL,
            "--tasks",
            ",".join(subtasks),
            "--pooling",
            "cls",
            "--max-length",
            "512",
            "--dtype",
            "bfloat16",
            "--output",
            str(out),
            "--no-report",
            "--no-progress",
        ],
        served.endpoint,
        root / "hf",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    by_name = {r.task: r.main for r in RunStore(out).records()}
    (aggregate,) = [
        r
        for r in RunStore(paper[0]).records()
        if r.task == AGGREGATE and r.variant.pooling == "cls"
    ]
    assert {p.task: p.scores["ndcg_at_10"] for p in aggregate.subtasks} == pytest.approx(
        by_name, abs=1e-9
    )
    assert aggregate.main == pytest.approx(fmean(by_name.values()), abs=1e-9)


def test_plan_and_run_refuse_a_missing_dataset_in_the_same_line(model_repo, tmp_path):
    """The plan resolves what the run resolves: a dataset the hub lacks stops both, before any work."""
    repos = [r for r in repos_for(paper_tasks()) if r.repo_id != "mteb/nfcorpus"] + [model_repo]
    lines = {}
    with FakeHub(repos) as served:
        for command in (
            ["plan", "--config", "paper", "--no-measure"],
            ["run", "--config", "paper", "--dry-run"],
            ["run", "--config", "paper", "--output", str(tmp_path / "out")],
        ):
            done = run_cli(command, served.endpoint, tmp_path / "hf")
            assert done.returncode == 2, done.stderr[-2000:]
            lines[command[0] + ("-dry" if "--dry-run" in command else "")] = (
                done.stderr.strip().splitlines()
            )
    assert len(set(map(tuple, lines.values()))) == 1, lines
    (line,) = lines["plan"]
    assert "hub dataset 'mteb/nfcorpus'" in line and "no such repository" in line
    assert not (tmp_path / "out").exists()


def test_plan_of_a_hub_task_uses_mteb_statistics_and_writes_nothing(hub, tmp_path):
    served, root = hub
    out = tmp_path / "never"
    done = run_cli(
        [
            "run",
            "--dry-run",
            "--tasks",
            "SciFact",
            "--pooling",
            "cls",
            "--max-length",
            "128",
            "--no-measure",
            "--on",
            "h100",
            "--output",
            str(out),
        ],
        served.endpoint,
        root / "hf",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if "| SciFact |" in line)
    assert "| 5,183 | 300 |" in row and "estimated" in row
    assert not out.exists()


def test_export_writes_an_aggregate_with_its_sub_tasks(paper, tmp_path):
    from lmk_eval.report.export import experiment_meta, export_run

    out, _ = paper
    export_run(out, tmp_path)
    loaded = mteb.ResultCache(tmp_path).load_results(
        include_remote=False, load_experiments="match_name"
    )
    scores = {
        (m.experiment_name, t.task_name): t.get_score()
        for m in loaded.model_results
        for t in m.task_results
    }
    records = RunStore(out).records()
    subtasks = [t.metadata.name for t in mteb.get_task(AGGREGATE).tasks]
    # every cell, and each sub-task of the three aggregates
    assert len(scores) == len(records) + 3 * len(subtasks)
    for r in records:
        name = experiment_meta(r).experiment_name
        # mteb's name, no subset
        assert scores[(name, r.scores[0].task)] == pytest.approx(r.main, abs=1e-12)
        if r.task == AGGREGATE:
            assert all((name, s) in scores for s in subtasks)
