"""A sweep's plan: every cell (model x pooling variant x task x length x reading), grouped so
that the variants of one group share one encoding session. Tasks are resolved (and local folders
validated) here; nothing is loaded."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import task_registry
from .provenance import digest
from .records import CellInfo, CheckpointRef
from .sweep import Sweep
from .taskref import TaskRef
from .variants import Variant, make_variant


@dataclass(frozen=True)
class Cell:
    model: str  # as the sweep names it: "default", a path, a hub id, a checkpoint directory
    variant: Variant
    task: str  # the task's name in this run (folders that share a name are told apart)
    slot: str  # JSON of what fixes this cell's place; content hashes are checked separately
    checkpoint: CheckpointRef | None = None  # the [train] checkpoint this cell evaluates

    def key(self) -> str:
        """Stable, readable directory name: task, pooling label, length, hash of the slot."""
        label = self.variant.label().replace("[", "-").replace("]", "").replace("/", "-")
        task = self.task.replace("[", "-").replace("]", "")  # MultiLongDocRetrieval[en]
        reading = re.sub(r"[^A-Za-z0-9._+-]", "_", self.variant.reading())
        return f"{task}__{label}__{self.variant.max_length}-{reading}__{digest(self.slot, 10)}"

    def describe(self) -> CellInfo:
        return CellInfo(
            model=self.model,
            task=self.task,
            splits=json.loads(self.slot)["task"]["splits"],
            variant=self.variant,
            label=self.variant.label(),
            checkpoint=self.checkpoint,
        )

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "key": self.key(),
            "model": self.model,
            "task": self.task,
            "variant": self.variant.key(),
            "pooling": self.variant.label(),
            "max_length": self.variant.max_length,
            "strategy": self.variant.reading(),
        }


@dataclass
class CellGroup:
    """Cells whose variants can share one encoding session (same model, task, length, strategy)."""

    model: str
    task: TaskRef
    cells: list[Cell]


def plan(sweep: Sweep) -> list[CellGroup]:
    """Every cell of the sweep, grouped; tasks are resolved (and local folders validated) here."""
    per_grid = [task_registry.resolve_all(g.tasks) for g in sweep.grids]
    names = task_registry.disambiguate([r for refs in per_grid for r in refs])
    encoding = sweep.encode_options().identity()  # non-default choices only: old keys stay valid
    checkpoints = {
        path: CheckpointRef(group=sweep.train.output, pooling=p, seed=seed)
        for path, (p, seed) in sweep.checkpoints().items()
    }
    groups: list[CellGroup] = []
    seen: set[str] = set()
    for model, poolings in sweep.model_poolings():
        for grid, refs in zip(sweep.grids, per_grid, strict=True):
            for ref in refs:
                ref = names[ref.spec_key]
                for reading in grid.readings():
                    variants = dict.fromkeys(
                        make_variant(**{**p, **reading}) for p in poolings if grid.runs(p)
                    )
                    cells = []
                    checkpoint = checkpoints.get(model)
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
                            cells.append(cell)
                    if cells:
                        groups.append(CellGroup(model, ref, cells))
    return groups


def benchmarks(groups: list[CellGroup]) -> dict[str, list[str]]:
    """mteb benchmark -> the tasks of this sweep it was named by (for the report's averages)."""
    out: dict[str, list[str]] = {}
    for g in groups:
        for name in g.task.benchmarks:
            out.setdefault(name, [])
            if g.task.name not in out[name]:
                out[name].append(g.task.name)
    return out
