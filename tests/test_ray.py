"""The Ray executor: the same scores as the local executor, a killed worker retried, a corpus
split over two model replicas embedded exactly as in one process. Each test starts (and stops)
a local two-CPU Ray cluster."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e  # whole sweeps, subprocesses, servers: `make test` runs them

ray = pytest.importorskip("ray")  # the dev extra installs it; a plain install may not

ROOT = Path(__file__).resolve().parents[1]


def quick_args(folder: Path, out: Path, *extra: str) -> list[str]:
    """Two tasks, two poolings, two lengths: 8 cells in 4 groups."""
    return [
        "run",
        "--tasks",
        f"{folder},needle-depth-quick:depth_000+depth_100",
        "--pooling",
        "mean,lmk",
        "--max-length",
        "96,128",
        "--output",
        str(out),
        "--no-report",
        "--no-progress",
        *extra,
    ]


def cli(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    env = env or {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lmk_eval.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def local_scores(tiny_beir, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("local") / "run"
    proc = cli(quick_args(tiny_beir, out))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return (out / "scores.csv").read_text()


@pytest.mark.parametrize(
    "how", [[], ["--encoders", "2"]], ids=["groups as tasks", "corpus over two replicas"]
)
def test_ray_executor_gives_the_local_executors_scores(how, local_scores, tiny_beir, tmp_path):
    """Either way of running on Ray (the replicas embed each chunk's texts, the driver keeps each
    pooling's top-k) stores exactly the local executor's scores."""
    out = tmp_path / "run"
    proc = cli(quick_args(tiny_beir, out, "--executor", "ray", "--ray-cpus", "2", *how))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "ray: 1 node(s)" in err and "'num_cpus': 1" in err
    assert (out / "scores.csv").read_text() == local_scores
    # each of the two groups (a model on a task, both lengths) says what it shared
    assert err.count("inputs shared across lengths and readings") == 2, err


def test_a_killed_worker_is_retried_and_the_scores_are_the_same(local_scores, tiny_beir, tmp_path):
    """Each group task records its pid (``WORKER_PIDS_ENV``); the first one seen is killed."""
    from lmk_eval.run.executors import WORKER_PIDS_ENV

    out, pids = tmp_path / "run", tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", WORKER_PIDS_ENV: str(pids)}
    proc = cli(quick_args(tiny_beir, out, "--executor", "ray", "--ray-cpus", "2"), env=env)
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        started = sorted(int(p.name) for p in pids.iterdir() if p.name.isdigit())
        if started:
            time.sleep(1.0)  # let it get into its group (model loading, encoding)
            with contextlib.suppress(ProcessLookupError):  # finished already: wait for the next
                os.kill(started[0], signal.SIGKILL)
                killed = started[0]
            if killed is None:
                (pids / str(started[0])).unlink()
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert killed is not None, "no group task was seen running"
    assert proc.returncode == 0, err
    assert (out / "scores.csv").read_text() == local_scores


def test_two_actors_embed_a_corpus_exactly_as_one_process(tiny_beir):
    from lmk_eval.config.variants import make_variant
    from lmk_eval.model.encoding import TextEncoder
    from lmk_eval.retrieval.task_registry import resolve
    from lmk_eval.run.sharding import ShardedTextEncoder, encoder_pool
    from lmk_eval.run.sweeps import sweep_from_dict

    split = resolve("scifact-quick")[0].build()
    split.load_data()
    corpus = split.dataset["default"]["test"]["corpus"]
    texts = [(t + " " + x).strip() for t, x in zip(corpus["title"], corpus["text"], strict=True)][
        :120
    ]
    variants = [make_variant("mean", max_length=128), make_variant("lmk", max_length=128)]
    single = TextEncoder(None, slice_tokens=2000).encode(texts, variants)  # ~8 slices
    sweep = sweep_from_dict({"name": "s", "poolings": ["mean"], "tasks": ["needle"]}, "s")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actors = encoder_pool(sweep, "default", 2, {"num_cpus": 1}, slice_tokens=2000)
        pids = {ray.get(a.pid.remote()) for a in actors}
        sharded = ShardedTextEncoder(None, actors, slice_tokens=2000).encode(texts, variants)
    finally:
        ray.shutdown()
    assert len(pids) == 2 and os.getpid() not in pids  # two replicas, neither in this process
    for v in variants:
        assert np.array_equal(sharded[v], single[v]), v.label()


def test_the_local_executor_never_imports_ray(tiny_beir, tmp_path):
    code = (
        "import sys; from lmk_eval.cli.commands import main; "
        f"code = main({quick_args(tiny_beir, tmp_path / 'out')[:-2] + ['--no-report', '--no-progress']!r}); "
        "print(code, 'ray' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert done.stdout.strip().splitlines()[-1] == "0 False", done.stderr
