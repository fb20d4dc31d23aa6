"""Sweeps as data: a TOML file (or CLI flags) becomes a plan of cells.

A cell is one (model, pooling variant, task, max_length, strategy); cells that share model, task,
max_length and strategy form a group whose variants share forward passes.

    name = "quick"
    models = ["default"]
    baseline = "cls"
    poolings = [{pooling = "cls"}, {pooling = "mean"}, {pooling = "lmk", interval = 32}]

    [[grid]]
    tasks = ["scifact-quick"]
    max_length = [256]
    strategy = "truncate"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models, task_registry
from .encoding import DEFAULT_TOKEN_BUDGET
from .variants import LmkEvalError, Variant, make_variant

DEFAULT_MODEL = "default"
SWEEP_KEYS = {"name", "description", "models", "poolings", "grid", "baseline", "token_budget",
              "tasks", "max_length", "strategy", "train"}  # fmt: skip
GRID_KEYS = {"tasks", "max_length", "strategy"}


@dataclass
class Grid:
    tasks: list[str]
    max_lengths: list[int]
    strategy: str = "truncate"


@dataclass
class Sweep:
    name: str
    poolings: list[dict[str, Any]]
    grids: list[Grid]
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    baseline: str = "cls"
    description: str = ""
    token_budget: int = DEFAULT_TOKEN_BUDGET
    train: dict[str, Any] | None = None  # a controlled sweep: train, then evaluate each checkpoint

    def train_config(self):
        from dataclasses import fields

        from .train import TrainConfig

        if self.train is None:
            return None
        unknown = set(self.train) - {f.name for f in fields(TrainConfig)}
        if unknown:
            valid = ", ".join(f.name for f in fields(TrainConfig))
            raise LmkEvalError(
                f"[train]: unknown key(s) {', '.join(sorted(unknown))}; valid: {valid}"
            )
        return TrainConfig(**self.train)

    def model_poolings(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(model, poolings) pairs: every model x every pooling, or each checkpoint x its own."""
        cfg = self.train_config()
        if cfg is None:
            return [(m, self.poolings) for m in self.models]
        from .train import checkpoint_dir, evaluation_pooling

        return [
            (str(checkpoint_dir(cfg, p, seed)), [evaluation_pooling(cfg, p)])
            for seed in cfg.seeds
            for p in cfg.poolings
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "models": self.models,
            "baseline": self.baseline,
            "token_budget": self.token_budget,
            "poolings": self.poolings,
            "train": self.train,
            "grid": [
                {"tasks": g.tasks, "max_length": g.max_lengths, "strategy": g.strategy}
                for g in self.grids
            ],
        }


@dataclass(frozen=True)
class Cell:
    model: str
    variant: Variant
    task: str

    def key(self) -> str:
        """Stable, readable directory name: task, pooling label, length, short hash of the rest."""
        blob = json.dumps(
            {"model": self.model, "task": self.task, **self.variant.relevant_options()},
            sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        label = self.variant.label().replace("[", "-").replace("]", "").replace("/", "-")
        return f"{self.task}__{label}__{self.variant.max_length}-{self.variant.strategy}__{digest}"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "pooling": self.variant.label(),
            "variant": self.variant.relevant_options(),
            "max_length": self.variant.max_length,
            "strategy": self.variant.strategy,
        }


@dataclass
class CellGroup:
    """Cells whose variants can share one encoding session (same model, task, length, strategy)."""

    model: str
    task: task_registry.TaskRef
    cells: list[Cell]


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _grid(d: dict[str, Any], where: str) -> Grid:
    unknown = set(d) - GRID_KEYS
    if unknown:
        raise LmkEvalError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    tasks = [str(t) for t in _as_list(d.get("tasks"))]
    if not tasks:
        raise LmkEvalError(f"{where}: no tasks given")
    lengths = _as_list(d.get("max_length", 512))
    for n in lengths:
        if not isinstance(n, int):
            raise LmkEvalError(f"{where}: max_length must be integers, got {n!r}")
    return Grid(tasks, lengths, str(d.get("strategy", "truncate")))


def sweep_from_dict(d: dict[str, Any], default_name: str) -> Sweep:
    unknown = set(d) - SWEEP_KEYS
    if unknown:
        raise LmkEvalError(
            f"sweep: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(SWEEP_KEYS))}"
        )
    poolings = []
    for p in _as_list(d.get("poolings")):
        poolings.append({"pooling": p} if isinstance(p, str) else dict(p))
    train = dict(d["train"]) if "train" in d else None
    if not poolings and train is None:
        raise LmkEvalError("sweep: no poolings given")
    if "grid" in d:
        grids = [_grid(g, f"grid {i + 1}") for i, g in enumerate(_as_list(d["grid"]))]
    else:
        grids = [_grid({k: d[k] for k in GRID_KEYS if k in d}, "sweep")]
    sweep = Sweep(
        name=str(d.get("name", default_name)),
        description=str(d.get("description", "")),
        models=[str(m) for m in _as_list(d.get("models"))] or [DEFAULT_MODEL],
        poolings=poolings,
        grids=grids,
        baseline=str(d.get("baseline", "cls")),
        token_budget=int(d.get("token_budget", DEFAULT_TOKEN_BUDGET)),
        train=train,
    )
    validate(sweep)
    return sweep


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise LmkEvalError(f"sweep config '{path}' does not exist; see tasks/*.toml for examples")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LmkEvalError(f"sweep config '{path}' is not valid TOML: {exc}") from None
    return sweep_from_dict(data, path.stem)


def validate(sweep: Sweep) -> None:
    """Build every variant and name every model now, so a typo fails before any work.

    Tasks are checked by ``plan``, which also runs before any model loads.
    """
    cfg = sweep.train_config()
    if cfg is not None:
        cfg.validate()  # checkpoints do not exist yet: training makes them
        models.resolve_model(cfg.base)
    else:
        for model in sweep.models:
            models.resolve_model(model)
    pairs = sweep.model_poolings()
    for grid in sweep.grids:
        for _model, poolings in pairs:
            for p in poolings:
                for n in grid.max_lengths:
                    make_variant(**{**p, "max_length": n, "strategy": grid.strategy})


def plan(sweep: Sweep) -> list[CellGroup]:
    groups: list[CellGroup] = []
    for model, poolings in sweep.model_poolings():
        for grid in sweep.grids:
            for ref in task_registry.resolve_all(grid.tasks):
                for n in grid.max_lengths:
                    variants = dict.fromkeys(
                        make_variant(**{**p, "max_length": n, "strategy": grid.strategy})
                        for p in poolings
                    )
                    groups.append(
                        CellGroup(model, ref, [Cell(model, v, ref.name) for v in variants])
                    )
    return groups
