"""A sweep's plan: every cell (model x pooling variant x task x length x reading), grouped by
model and task so that every length and reading of one group shares one pass over each corpus
chunk (identical inputs run once). Tasks are resolved (and local folders validated) here; nothing
is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lmk_eval.config.sweep import Sweep
from lmk_eval.config.variants import make_variant
from lmk_eval.retrieval import task_registry
from lmk_eval.retrieval.taskref import TaskRef
from lmk_eval.run.sweeps import checkpoints, model_poolings
from lmk_eval.store.records import Cell, CheckpointRef


@dataclass
class CellGroup:
    """Cells whose variants share one encoding session: one model on one task, at every length and
    reading the sweep asks for."""

    model: str
    task: TaskRef
    cells: list[Cell]


def plan(sweep: Sweep) -> list[CellGroup]:
    """Every cell of the sweep, grouped; tasks are resolved (and local folders validated) here."""
    per_grid = [task_registry.resolve_all(g.tasks) for g in sweep.grids]
    names = task_registry.disambiguate([r for refs in per_grid for r in refs])
    encoding = sweep.encode_options().identity()  # non-default choices only: old keys stay valid
    refs_of = {
        path: CheckpointRef(group=sweep.train.output, pooling=p, seed=seed)
        for path, (p, seed) in checkpoints(sweep).items()
    }
    groups: dict[tuple[str, str], CellGroup] = {}
    seen: set[str] = set()
    for model, poolings in model_poolings(sweep):
        for grid, refs in zip(sweep.grids, per_grid, strict=True):
            for ref in refs:
                ref = names[ref.spec_key]
                for reading in grid.readings():
                    variants = dict.fromkeys(
                        make_variant(**{**p, **reading}) for p in poolings if grid.runs(p)
                    )
                    group = groups.setdefault((model, ref.name), CellGroup(model, ref, []))
                    checkpoint = refs_of.get(model)
                    for v in variants:
                        place = {
                            "model": model,
                            "task": ref.slot(),
                            "variant": v.relevant_options(),
                        }
                        if encoding:
                            place["encoding"] = encoding
                        slot = json.dumps(place, sort_keys=True)
                        cell = Cell(model, v, ref.name, slot, checkpoint)
                        if cell.key() not in seen:
                            seen.add(cell.key())
                            group.cells.append(cell)
    return [g for g in groups.values() if g.cells]


def benchmarks(groups: list[CellGroup]) -> dict[str, list[str]]:
    """mteb benchmark -> the tasks of this sweep it was named by (for the report's averages)."""
    out: dict[str, list[str]] = {}
    for g in groups:
        for name in g.task.benchmarks:
            out.setdefault(name, [])
            if g.task.name not in out[name]:
                out[name].append(g.task.name)
    return out
