"""The results store: one directory per finished cell, written atomically, plus a tidy CSV.

Layout of a run directory::

    sweep.json                 the sweep as run
    cells/<cell-key>/cell.json the cell, its scores per split, per-query main scores
    cells/<cell-key>/<Task>.json  mteb's TaskResult, as mteb writes it
    training/<checkpoint>.json training record of each checkpoint a controlled sweep trained
    scores.csv                 one row per (cell, split, metric)

A cell directory is built under ``.tmp`` and renamed into place, so a kill at any moment leaves
either a whole cell or none; a re-run computes only the cells that are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .sweep import Cell

SCORE_COLUMNS = [
    "model", "pooling", "pooling_name", "options", "task", "context", "split", "max_length",
    "strategy", "metric", "score", "main",
]  # fmt: skip


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class CellRecord:
    """A finished cell as read back from disk."""

    cell: dict[str, Any]
    task: str
    context: str
    main_score: str
    scores: dict[str, dict[str, float]]  # split -> metric -> value
    per_query: dict[str, dict[str, float]]  # split -> query id -> main-metric value
    seconds: float | None = None  # wall time of the cell (encoding + scoring); older runs lack it


class RunStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def cell_dir(self, cell: Cell) -> Path:
        return self.cells_dir / cell.key()

    def has(self, cell: Cell) -> bool:
        return (self.cell_dir(cell) / "cell.json").is_file()

    def save(
        self,
        cell: Cell,
        *,
        context: str,
        task_result_json: str,
        main_score: str,
        scores: dict[str, dict[str, float]],
        per_query: dict[str, dict[str, float]],
        seconds: float | None = None,
    ) -> None:
        staging_root = self.root / ".tmp"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=staging_root, prefix=cell.key()[:40]))
        try:
            (staging / f"{cell.task}.json").write_text(task_result_json, encoding="utf-8")
            record = {
                "cell": cell.describe(),
                "task": cell.task,
                "context": context,
                "main_score": main_score,
                "scores": scores,
                "per_query": per_query,
                "seconds": None if seconds is None else round(seconds, 2),
            }
            (staging / "cell.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
            target = self.cell_dir(cell)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def clean_staging(self) -> None:
        shutil.rmtree(self.root / ".tmp", ignore_errors=True)

    def records(self) -> list[CellRecord]:
        out = []
        for path in sorted(self.cells_dir.glob("*/cell.json")):
            d = json.loads(path.read_text(encoding="utf-8"))
            out.append(CellRecord(**d))
        return out

    def save_training(self, name: str, record: dict[str, Any]) -> None:
        """Keep a checkpoint's training record with the results (checkpoints are not committed)."""
        atomic_write_text(self.root / "training" / f"{name}.json", json.dumps(record, indent=1))

    def training_records(self) -> dict[str, dict[str, Any]]:
        """Checkpoint name -> its training record."""
        paths = sorted((self.root / "training").glob("*.json"))
        return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in paths}

    def write_sweep(self, sweep_dict: dict[str, Any]) -> None:
        atomic_write_text(self.root / "sweep.json", json.dumps(sweep_dict, indent=1))

    def sweep(self) -> dict[str, Any] | None:
        path = self.root / "sweep.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def scores_frame(self) -> pd.DataFrame:
        rows = []
        for r in self.records():
            c = r.cell
            for split, metrics in r.scores.items():
                for metric, value in metrics.items():
                    rows.append({
                        "model": c["model"],
                        "pooling": c["pooling"],
                        "pooling_name": c["variant"]["pooling"],
                        "options": json.dumps(c["variant"], sort_keys=True),
                        "task": r.task,
                        "context": r.context,
                        "split": split,
                        "max_length": c["max_length"],
                        "strategy": c["strategy"],
                        "metric": metric,
                        "score": value,
                        "main": metric == r.main_score,
                    })  # fmt: skip
        frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
        return frame.sort_values(["task", "split", "max_length", "pooling", "model", "metric"],
                                 kind="stable").reset_index(drop=True)  # fmt: skip

    def write_scores_csv(self) -> Path:
        path = self.root / "scores.csv"
        atomic_write_text(path, self.scores_frame().to_csv(index=False))
        return path
