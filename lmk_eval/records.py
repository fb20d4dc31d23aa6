"""What a stored cell is, typed: the variant, checkpoint and seed as fields, never recovered from a
label or a path.

``cell.json`` holds a ``CellRecord``: ``cell`` (a ``CellInfo``: model, task, splits, the variant
as its relevant options, the checkpoint it evaluates), ``identity`` (a ``CellIdentity``: what
produced it, compared on every run), the scores and per-query scores. Records written by older
lmk-eval (labels only, no checkpoint field) are upgraded on reading from what they do record:
the checkpoint's training identity, else the run's training record of that checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from .variants import Variant

RECORD_FORMAT = 3  # 3: typed cell (variant, label, checkpoint); 2 and older: labels only


class CheckpointRef(BaseModel):
    """A trained checkpoint of a controlled sweep: the seeds of one ``[train]`` output folder
    share a report row, so the folder is the row's model."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    group: str  # the [train] output folder
    pooling: str  # the pooling it was trained with
    seed: int


class CellInfo(BaseModel):
    """Which cell this is: model, task, splits, variant (its relevant options, canonical)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str  # as the sweep names it: "default", a path, a hub id, a checkpoint directory
    task: str
    splits: list[str]
    variant: Variant
    label: str  # for display only
    checkpoint: CheckpointRef | None = None

    @field_validator("variant", mode="before")
    @classmethod
    def _variant(cls, v: Any) -> Any:
        return Variant.from_options(v) if isinstance(v, dict) else v

    @field_serializer("variant")
    def _options(self, v: Variant) -> dict[str, Any]:
        return v.relevant_options()

    @property
    def row_model(self) -> str:
        """The model a report row names: a checkpoint's [train] folder, else the model itself."""
        return self.checkpoint.group if self.checkpoint else self.model

    @property
    def seed(self) -> int | None:
        return self.checkpoint.seed if self.checkpoint else None


class CellIdentity(BaseModel):
    """Everything that produced a cell's numbers; a stored cell is reused only while it is equal."""

    model_config = ConfigDict(extra="allow")  # a field of an older release: differs, so recomputed
    slot: dict[str, Any]  # model as named, task and splits, variant, non-default encoding options
    model: dict[str, Any]  # by content: files' sha256, hub commit, or a checkpoint's training
    data: dict[str, Any]  # by content: files, construction, dataset revision
    encoding: dict[str, Any] = Field(default_factory=dict)  # dtype, prompts, options, native
    scoring: dict[str, Any]  # harness scoring version, mteb, pytrec_eval


class CellRecord(BaseModel):
    """A finished cell as stored in ``cells/<key>/cell.json``."""

    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")  # NaN stays NaN
    format: int = RECORD_FORMAT
    cell: CellInfo
    identity: CellIdentity | None = None  # cells of runs before provenance lack it
    produced_by: dict[str, Any] = Field(default_factory=dict)  # harness version, git commit
    task: str
    context: str
    main_score: str
    scores: dict[str, dict[str, float]]  # split -> metric -> value
    per_query: dict[str, dict[str, float]]  # split -> query id -> main-metric value
    seconds: float | None = None  # wall time (encoding + scoring); older runs lack it
    # sha256 of the scores (``scored_digest``) and of mteb's <Task>.json beside the record, so an
    # edited or half-restored cell is told from the one that was computed; older cells lack them
    digests: dict[str, str] = Field(default_factory=dict)
    zero_grade_queries: dict[str, int] = Field(default_factory=dict)  # split -> queries judged only 0
    key: str = Field(default="", exclude=True)  # the cell directory's name, set on reading

    @model_validator(mode="after")
    def _main_score_present(self) -> CellRecord:
        for split, metrics in self.scores.items():
            if self.main_score not in metrics:
                raise ValueError(f"split {split} has no {self.main_score}")
        return self

    @property
    def variant(self) -> Variant:
        return self.cell.variant

    def scored_digest(self) -> str:
        """sha256 of what the cell scored (main metric, split scores, per-query scores)."""
        blob = self.model_dump_json(include={"main_score", "scores", "per_query"})
        return hashlib.sha256(blob.encode()).hexdigest()


def upgrade(data: Any, training: dict[str, dict[str, Any]]) -> Any:
    """A record of an older format in the current one. Its checkpoint comes from its own
    training identity or, before provenance, from the run's training record of that checkpoint
    (``training`` by checkpoint directory name, as the store names those records)."""
    if not isinstance(data, dict) or data.get("format", 2) >= RECORD_FORMAT:
        return data
    cell = data.get("cell")
    if not isinstance(cell, dict):
        return data
    cell = dict(cell)
    cell["label"] = cell.pop("pooling", None) or ""
    for key in ("max_length", "strategy"):
        cell.pop(key, None)  # part of the variant
    cell.setdefault("splits", list(data.get("scores") or {}))
    cell["checkpoint"] = _legacy_checkpoint(str(cell.get("model", "")), data.get("identity"), training)
    return {**data, "cell": cell, "format": RECORD_FORMAT}


def _legacy_checkpoint(model: str, identity: Any, training: dict[str, dict[str, Any]]) -> dict | None:
    trained = training.get(Path(model).name)
    model_identity = identity.get("model") if isinstance(identity, dict) else None
    if isinstance(model_identity, dict) and model_identity.get("kind") == "checkpoint":
        t = model_identity["training"]
        group = (trained or {}).get("config", {}).get("output") or str(Path(model).parent)
        return {"group": group, "pooling": t["pooling"], "seed": t["seed"]}
    if trained and isinstance(trained.get("config"), dict):
        return {"group": trained["config"]["output"], "pooling": trained["pooling"],
                "seed": trained["seed"]}  # fmt: skip
    return None
