"""The CI regression gate: a run's main scores against a committed baseline."""

from __future__ import annotations

import json
from pathlib import Path

from .store import RunStore, atomic_write_text
from .variants import LmkEvalError


def main_scores(run_dir: Path) -> dict[str, float]:
    """``model|task|pooling|max_length|strategy|split`` -> main score, for every stored cell."""
    store = RunStore(run_dir)
    records = store.records()
    if not records:
        raise LmkEvalError(
            f"no finished cells in '{run_dir}'; run `lmk-eval run --output {run_dir}` first"
        )
    out = {}
    for r in records:
        c = r.cell
        for split, metrics in r.scores.items():
            key = "|".join(str(x) for x in (c["model"], r.task, c["pooling"], c["max_length"],
                                            c["strategy"], split))  # fmt: skip
            out[key] = metrics[r.main_score]
    return out


def write_baseline(run_dir: Path, path: Path) -> int:
    scores = main_scores(run_dir)
    doc = {
        "about": "main scores per cell and split; `lmk-eval check RUN --baseline THIS` compares",
        "key": "model|task|pooling|max_length|strategy|split",
        "scores": dict(sorted(scores.items())),
    }
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return len(scores)


def check(
    run_dir: Path, baseline_path: Path, tolerance: float, both_ways: bool = False
) -> tuple[list[str], int]:
    """Lines naming each baseline cell that is missing or dropped by more than ``tolerance``.

    ``both_ways`` also names cells that rose beyond it: the harness is deterministic, so in a
    correctness gate an unexplained gain (a landmark lost, a fallback taken) is as suspect as a loss.
    """
    if not baseline_path.is_file():
        raise LmkEvalError(
            f"baseline '{baseline_path}' does not exist; write one with `lmk-eval baseline`"
        )
    if tolerance < 0:
        raise LmkEvalError(f"tolerance must be >= 0, got {tolerance}")
    try:
        expected = json.loads(baseline_path.read_text(encoding="utf-8"))["scores"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise LmkEvalError(
            f"baseline '{baseline_path}' is not a baseline file from `lmk-eval baseline`"
        ) from None
    actual = main_scores(run_dir)
    failures = []
    for key, want in sorted(expected.items()):
        if key not in actual:
            failures.append(f"{key}: missing from {run_dir}")
        elif actual[key] < want - tolerance:
            failures.append(f"{key}: {actual[key]:.4f} < baseline {want:.4f} - {tolerance}")
        elif both_ways and actual[key] > want + tolerance:
            failures.append(
                f"{key}: {actual[key]:.4f} > baseline {want:.4f} + {tolerance}"
                " (refresh the baseline if the change is intended)"
            )
    return failures, len(expected)
