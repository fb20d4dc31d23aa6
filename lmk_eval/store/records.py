"""What a stored cell is, typed: the variant, checkpoint and seed as fields, never recovered from a
label or a path.

``cell.json`` holds a ``CellRecord``: ``cell`` (a ``CellInfo``: model, task, splits, the variant
as its relevant options, the checkpoint it evaluates), ``identity`` (a ``CellIdentity``: what
produced it, compared on every run), mteb's main score, and the ``Part``s mteb scored: one per
(subset, split) of the task, and for an aggregate task (CQADupstack) one per (sub-task, subset,
split), each with its metrics and per-query scores. Records written by older lmk-eval (one
subset, scores by split; labels only, no checkpoint field) are upgraded on reading from what they
do record: the checkpoint's training identity, else the run's training record of that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from lmk_eval.common.provenance import digest
from lmk_eval.config.variants import Variant

RECORD_FORMAT = 4  # 4: parts by (task, subset, split); 3: typed cell (variant, label, checkpoint); 2: labels only


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


class Part(BaseModel):
    """One (task, subset, split) as mteb scored it: its metrics and, from mteb's saved rankings,
    each query's main-metric value (pytrec_eval, what mteb averages)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")
    task: str  # mteb's name of the task scored: the cell's own, or one of its aggregate's sub-tasks
    subset: str = "default"  # mteb's hf_subset (a language, say); "default" for tasks without any
    split: str
    scores: dict[str, float]  # metric -> value, as mteb computed them
    per_query: dict[str, float] = Field(default_factory=dict)  # query id -> main-metric value

    def label(self, own_task: str) -> str:
        """How the part is named beside its cell: split, subset/split, sub-task/subset/split."""
        names = [self.task] if self.task != own_task else []
        names += [self.subset] if self.subset != "default" else []
        return "/".join([*names, self.split])


class CellRecord(BaseModel):
    """A finished cell as stored in ``cells/<key>/cell.json``."""

    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")  # NaN stays NaN
    format: int = RECORD_FORMAT
    cell: CellInfo
    identity: CellIdentity | None = None  # cells of runs before provenance lack it
    produced_by: dict[str, Any] = Field(default_factory=dict)  # harness version, git commit
    task: str
    context: str
    main_score: str  # the metric
    main: float  # mteb's main score of the cell (TaskResult.get_score of <task>.json)
    # the entries of mteb's TaskResult saved beside the record (an aggregate's: its combined ones)
    scores: list[Part]
    # an aggregate's sub-tasks, as mteb scored each
    subtasks: list[Part] = Field(default_factory=list)
    seconds: float | None = None  # wall time (encoding + scoring); older runs lack it
    # sha256 of the scores (``scored_digest``) and of mteb's JSON files beside the record, so an
    # edited or half-restored cell is told from the one that was computed; older cells lack them
    digests: dict[str, str] = Field(default_factory=dict)
    # part label -> queries judged only 0
    zero_grade_queries: dict[str, int] = Field(default_factory=dict)
    # what the cell's group (its model on its task, every length and reading) put through the
    # model so far: ``work.Shared``'s fields; cells of older runs lack it
    sharing: dict[str, int | str] = Field(default_factory=dict)
    key: str = Field(default="", exclude=True)  # the cell directory's name, set on reading

    @model_validator(mode="after")
    def _main_score_present(self) -> CellRecord:
        for part in [*self.scores, *self.subtasks]:
            if self.main_score not in part.scores:
                raise ValueError(f"{part.label(self.task)} has no {self.main_score}")
        return self

    @property
    def variant(self) -> Variant:
        return self.cell.variant

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(p.split for p in self.scores))

    def split_score(self, split: str) -> float:
        """The cell's main score on one split: mteb's mean over its subsets there."""
        values = [p.scores[self.main_score] for p in self.scores if p.split == split]
        return sum(values) / len(values)

    def scored_parts(self) -> list[Part]:
        """The parts whose queries were scored: an aggregate's sub-tasks, else the cell's own."""
        return self.subtasks or self.scores

    def inconsistency(self, tolerance: float = 1e-4) -> str | None:
        """Why the cell's numbers disagree, or None: each part's per-query mean is its mteb score,
        and mteb's main score is the mean over splits of the mean over (sub-)tasks of the mean
        over subsets of those scores (what the report's paired statistics assume)."""
        parts = self.scored_parts()
        for p in parts:
            if (
                p.per_query
                and abs(fmean(p.per_query.values()) - p.scores[self.main_score]) > tolerance
            ):
                return (
                    f"{p.label(self.scores[0].task)}: the mean of its per-query {self.main_score}"
                    f" {fmean(p.per_query.values()):.6f} is not mteb's {p.scores[self.main_score]:.6f}"
                )
        per_split = []
        for split in dict.fromkeys(p.split for p in parts):
            here = [p for p in parts if p.split == split]
            tasks = dict.fromkeys(p.task for p in here)
            per_split.append(
                fmean(fmean(p.scores[self.main_score] for p in here if p.task == t) for t in tasks)
            )
        if abs(fmean(per_split) - self.main) > tolerance:
            return f"mteb's main score {self.main:.6f} is not the mean of its parts {fmean(per_split):.6f}"
        return None

    def scored_digest(self) -> str:
        """sha256 of what the cell scored (main score, every part's scores and per-query scores)."""
        blob = self.model_dump_json(include={"main_score", "main", "scores", "subtasks"})
        return hashlib.sha256(blob.encode()).hexdigest()


def query_counts(scores: list[Part], subtasks: list[Part]) -> dict[str, int]:
    """Part label -> the queries scored there (the names ``zero_grade_queries`` are counted by)."""
    own = scores[0].task if scores else ""
    return {p.label(own): len(p.per_query) for p in subtasks or scores}


class _ScoresBefore4(BaseModel):
    """What a record of format 3 or older digested: scores and per-query scores by split."""

    model_config = ConfigDict(ser_json_inf_nan="constants")
    main_score: str
    scores: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, float]]


def digest_before_4(data: dict[str, Any]) -> str:
    """The scores digest an older lmk-eval wrote, computed again from the record as stored."""
    scored = _ScoresBefore4.model_validate(
        {k: data.get(k) for k in ("main_score", "scores", "per_query")}
    )
    return hashlib.sha256(scored.model_dump_json().encode()).hexdigest()


def upgrade(data: Any, training: dict[str, dict[str, Any]]) -> Any:
    """A record of an older format in the current one. Format 3 and older scored one subset and
    kept scores by split (their main score is the mean over splits, as mteb's). Format 2 and
    older: its checkpoint comes from its own training identity or, before provenance, from the
    run's training record of that checkpoint (``training`` by checkpoint directory name, as the
    store names those records)."""
    if not isinstance(data, dict) or data.get("format", 2) >= RECORD_FORMAT:
        return data
    if data.get("format", 2) < 3:
        data = _typed_cell(data, training)
    return _parts(data)


def _parts(data: dict[str, Any]) -> dict[str, Any]:
    scores, per_query, main = (
        data.get("scores"),
        data.get("per_query") or {},
        data.get("main_score"),
    )
    if not isinstance(scores, dict) or not isinstance(per_query, dict):
        return data
    parts = [
        {
            "task": data.get("task"),
            "split": split,
            "scores": metrics,
            "per_query": per_query.get(split, {}),
        }
        for split, metrics in scores.items()
    ]
    mains = [m.get(main) for m in scores.values() if isinstance(m, dict)]
    ok = mains and all(isinstance(x, (int, float)) for x in mains)
    # checked as stored
    digests = {k: v for k, v in (data.get("digests") or {}).items() if k != "scores"}
    return {
        **{k: v for k, v in data.items() if k != "per_query"},
        "scores": parts,
        "digests": digests,
        "main": sum(mains) / len(mains) if ok else None,
        "format": RECORD_FORMAT,
    }


def _typed_cell(data: dict[str, Any], training: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cell = data.get("cell")
    if not isinstance(cell, dict):
        return data
    cell = dict(cell)
    cell["label"] = cell.pop("pooling", None) or ""
    for key in ("max_length", "strategy"):
        cell.pop(key, None)  # part of the variant
    cell.setdefault("splits", list(data.get("scores") or {}))
    cell["checkpoint"] = _legacy_checkpoint(
        str(cell.get("model", "")), data.get("identity"), training
    )
    return {**data, "cell": cell, "format": 3}


def _legacy_checkpoint(
    model: str, identity: Any, training: dict[str, dict[str, Any]]
) -> dict | None:
    trained = training.get(Path(model).name)
    model_identity = identity.get("model") if isinstance(identity, dict) else None
    if isinstance(model_identity, dict) and model_identity.get("kind") == "checkpoint":
        t = model_identity["training"]
        group = (trained or {}).get("config", {}).get("output") or str(Path(model).parent)
        return {"group": group, "pooling": t["pooling"], "seed": t["seed"]}
    if trained and isinstance(trained.get("config"), dict):
        return {
            "group": trained["config"]["output"],
            "pooling": trained["pooling"],
            "seed": trained["seed"],
        }
    return None


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
