"""What every stored cell must satisfy, checked against mteb's own files in the cell.

The mean of a cell's per-query scores, per (task, subset, split) and then averaged as mteb
averages (over subsets, over an aggregate's sub-tasks, over splits), equals the main score the
cell stores, which equals mteb's ``TaskResult`` saved beside it (``get_score``). Written here with
plain nested means, not with the report's weights, so that it checks them.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

from mteb import TaskResult

from lmk_eval.store.cells import RunStore
from lmk_eval.store.records import CellRecord

TOLERANCE = 1e-3


def mteb_mean(record: CellRecord) -> float:
    """Per split: the mean over (sub-)tasks of their mean over subsets of the mean over queries;
    then the mean over splits."""
    per_split = []
    for split in dict.fromkeys(p.split for p in record.scored_parts()):
        parts = [p for p in record.scored_parts() if p.split == split]
        per_task = []
        for task in dict.fromkeys(p.task for p in parts):
            per_task.append(fmean(fmean(p.per_query.values()) for p in parts if p.task == task))
        per_split.append(fmean(per_task))
    return fmean(per_split)


def check_cell(record: CellRecord, folder: Path) -> None:
    for part in record.scored_parts():
        assert part.per_query, f"{record.key}: {part.label(record.task)} has no per-query scores"
        assert abs(fmean(part.per_query.values()) - part.scores[record.main_score]) < TOLERANCE, (
            part
        )
    saved = TaskResult.model_validate_json((folder / f"{record.task}.json").read_text())
    assert abs(mteb_mean(record) - record.main) < TOLERANCE, record.key
    assert abs(saved.get_score() - record.main) < 1e-9, record.key
    for name in {p.task for p in record.subtasks}:
        sub = TaskResult.model_validate_json((folder / "subtasks" / f"{name}.json").read_text())
        parts = [p for p in record.subtasks if p.task == name]
        assert abs(sub.get_score() - fmean(p.scores[record.main_score] for p in parts)) < 1e-9


def check_run(run_dir: Path) -> int:
    """Every cell of a run satisfies the invariant; returns how many were checked."""
    records = RunStore(run_dir).records()
    for record in records:
        check_cell(record, run_dir / "cells" / record.key)
    return len(records)
