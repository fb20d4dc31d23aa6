"""The prepared GPU check runs on a CPU with tiny configs, so the script cannot rot between GPUs,
and it imports nothing of mteb's (mteb, datasets, pytrec_eval), which the GPU image lacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e  # whole sweeps, subprocesses, servers: `make test` runs them
BLOCKED = ("mteb", "datasets", "pytrec_eval")  # what mteb brings; the GPU image has none of them

# run the script as `python benchmarks/gpu_check.py ...`, then name every blocked package it loaded
RUNNER = f"""
import runpy, sys
sys.argv = ["gpu_check.py", *sys.argv[1:]]
try:
    runpy.run_path({str(ROOT / "benchmarks" / "gpu_check.py")!r}, run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
print("loaded:", sorted({{m.split(".")[0] for m in sys.modules}} & set({BLOCKED!r})))
"""


def test_gpu_check_runs_on_cpu_without_mteb(tmp_path):
    out = tmp_path / "gpu-check.md"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, "--device", "cpu", "--tiny", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "loaded: []"
    result = json.loads(out.with_suffix(".json").read_text())
    cases = {(r["model"], r["length"], r["dtype"]) for r in result["speed"]}
    assert cases == {
        (m, n, d)
        for m in ("minilm", "modernbert-base")
        for n in (128, 1024)
        for d in ("float32", "bfloat16")
    }
    for r in result["speed"]:
        assert r["tokens"] > 0 and r["raw_tok_s"] > 0 and r["harness_tok_s"] > 0
    from lmk_eval.pooling.registry import POOLINGS

    expected = {p for p, spec in POOLINGS.items() if not spec.needs_checkpoint and p != "native"}
    assert set(result["cosine"]) == {
        f"{m}@{n}" for m in ("minilm", "modernbert-base") for n in (128, 1024)
    }
    for case in result["cosine"].values():
        assert set(case) == expected
        # bf16 rounds every activation: close to the float32 direction, and really not float32
        assert all(c["min"] > 0.9 for c in case.values()), case
        assert any(c["mean"] < 1 - 1e-5 for c in case.values()), case
    assert "| minilm | 1,024 | bfloat16 |" in out.read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_gpu_check_refuses_a_missing_gpu():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
