"""The results store: one directory per finished cell, written atomically, plus a tidy CSV.

Layout of a run directory::

    sweep.json                    the sweep as run, and the keys of its cells (its manifest)
    cells/<cell-key>/cell.json    the cell, its identity (what produced it), scores, per-query scores
    cells/<cell-key>/<Task>.json  mteb's TaskResult, as mteb writes it (an aggregate's: combined)
    cells/<cell-key>/subtasks/    an aggregate's sub-tasks: mteb's TaskResult of each
    set-aside/<cell-key>.<why>.N  cells that were corrupt, stale, or replaced under --recompute
    training/<checkpoint>.json    training record of each checkpoint a controlled sweep trained
    scores.csv                    one row per (cell, subset, split, metric) of the sweep's cells

A cell directory is built under ``.tmp`` and renamed into place, so a kill at any moment leaves
either a whole cell or none. A cell is reused only if its stored identity (model content, data
content, splits, options, scoring version) equals the current one; otherwise it is set aside,
never deleted, and recomputed. One lock per run directory keeps two runs from interleaving.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.files import atomic_write_text, remove_if_empty, remove_tree, staging_dir
from lmk_eval.common.provenance import code_info, differences, file_sha256
from lmk_eval.store.records import (
    RECORD_FORMAT,
    Cell,
    CellIdentity,
    CellRecord,
    Part,
    digest_before_4,
    upgrade,
)

SCORE_COLUMNS = [
    "model",
    "variant",
    "pooling",
    "pooling_name",
    "options",
    "task",
    "context",
    "subset",
    "split",
    "max_length",
    "strategy",  # the context strategy alone (truncate, window, grouped, ...)
    "attention_scale",  # the scale it ran with: none, logn, temperature:T
    "reading",  # both together with any SelfExtend values, as reports label it: grouped+logn
    "metric",
    "score",
    "main",
]
LOCK_NAME = ".lock"
SET_ASIDE = "set-aside"  # where replaced, stale and corrupt cells go
STORE_FOLDERS = ("cells", SET_ASIDE, "training")  # folders a run directory keeps
SUBTASKS = "subtasks"  # inside an aggregate's cell: mteb's JSON of each sub-task


class CorruptCell(LmkEvalError):
    pass


def read_record(path: Path, training: dict[str, dict[str, Any]] | None = None) -> CellRecord:
    """A cell.json (older formats upgraded, see ``records.upgrade``), or CorruptCell naming the
    file and what is wrong with it."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = exc.strerror if isinstance(exc, OSError) else "not valid JSON (truncated?)"
        raise CorruptCell(f"stored cell '{path}' is unreadable: {what}") from None
    if (
        isinstance(d, dict)
        and d.get("format", 2) < RECORD_FORMAT
        and "scores" in (d.get("digests") or {})
    ):
        if d["digests"]["scores"] != _digest_before_4(d):  # checked as written, before the upgrade
            raise CorruptCell(
                f"stored cell '{path}' has scores that differ from the digest written with them (edited?)"
            )
    try:
        record = CellRecord.model_validate(upgrade(d, training or {}))
    except (ValidationError, LmkEvalError, KeyError, TypeError) as exc:
        first = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else None
        where = ".".join(map(str, first["loc"])) if first else ""
        raise CorruptCell(
            f"stored cell '{path}' is not a cell record"
            + (f" ({where}: {first['msg']})" if first else "")
        ) from None
    record.key = path.parent.name
    _check_files(
        record,
        path,
        written_with_digests=isinstance(d, dict) and d.get("format", 2) >= RECORD_FORMAT,
    )
    return record


def _digest_before_4(d: dict) -> str | None:
    try:
        return digest_before_4(d)
    except ValidationError:
        return None


def result_files(record: CellRecord, folder: Path) -> dict[str, Path]:
    """mteb's JSON files of a cell by digest key: its own ``<task>.json`` (``task_result``) and,
    for an aggregate, each sub-task's ``subtasks/<name>.json`` (``task_result/<name>``)."""
    files = {"task_result": folder / f"{record.task}.json"}
    for name in dict.fromkeys(p.task for p in record.subtasks):
        files[f"task_result/{name}"] = folder / SUBTASKS / f"{name}.json"
    return files


def _check_files(record: CellRecord, path: Path, written_with_digests: bool) -> None:
    """A cell is what its files say: mteb's JSON files are beside the record, and all match the
    digests written with them. Only a record of an older format may go without digests (only
    mteb's JSON is required there); one of format 3 or older had its scores checked as stored."""
    files = result_files(record, path.parent)
    for file in files.values():
        if not file.is_file():
            raise CorruptCell(
                f"stored cell '{path.parent}' lacks mteb's {file.relative_to(path.parent)}"
            )
    if written_with_digests and "scores" not in record.digests:
        raise CorruptCell(
            f"stored cell '{path}' has no digests, which every cell of format {RECORD_FORMAT}"
            " is written with (edited?)"
        )
    if not record.digests:
        return
    if "scores" in record.digests and record.digests["scores"] != record.scored_digest():
        raise CorruptCell(
            f"stored cell '{path}' has scores that differ from the digest written with them (edited?)"
        )
    for key, file in files.items():
        try:
            same = record.digests.get(key) == file_sha256(file)
        except OSError as exc:
            raise CorruptCell(f"stored cell '{file}' is unreadable: {exc.strerror}") from None
        if not same:
            raise CorruptCell(
                f"stored cell '{file}' differs from the digest written with its cell.json (edited?)"
            )


@dataclass(frozen=True)
class Lookup:
    """What the store holds for a planned cell: reusable, missing, stale or corrupt (with why)."""

    state: str  # "ok" | "missing" | "stale" | "corrupt"
    why: str = ""


class RunStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.saved = 0  # cells this process wrote

    # -- reading -----------------------------------------------------------------------------
    def cell_dir(self, cell: Cell | str) -> Path:
        return self.cells_dir / (cell if isinstance(cell, str) else cell.key())

    def has(self, cell: Cell | str) -> bool:
        return (self.cell_dir(cell) / "cell.json").is_file()

    def sweep(self) -> dict[str, Any] | None:
        """The stored sweep.json, or LmkEvalError naming it when it is unreadable."""
        path = self.root / "sweep.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise LmkEvalError(
                f"'{path}' is unreadable or not valid JSON; restore it or run the sweep again"
                " into a fresh --output"
            ) from None
        if not isinstance(data, dict):
            raise LmkEvalError(f"'{path}' is not a sweep record; run the sweep again")
        return data

    def manifest(self) -> list[dict[str, Any]] | None:
        """The cells the last run planned (key, model, task, max_length, strategy); None for runs
        written before manifests, whose every stored cell belongs to the run."""
        cells = (self.sweep() or {}).get("cells")
        if cells is None:
            return None
        if not isinstance(cells, list) or not all(
            isinstance(c, dict) and "key" in c for c in cells
        ):
            raise LmkEvalError(
                f"'{self.root / 'sweep.json'}' has a malformed cell list; run the sweep again"
            )
        return cells

    def records(self, training: dict[str, dict[str, Any]] | None = None) -> list[CellRecord]:
        """The run's finished cells (its manifest's, or every stored one for older runs).
        A corrupt cell.json stops with one line naming it: `run` sets it aside and recomputes."""
        manifest = self.manifest()
        if manifest is None:
            paths = sorted(self.cells_dir.glob("*/cell.json"))
        else:
            paths = [self.cell_dir(c["key"]) / "cell.json" for c in manifest]
            paths = [p for p in paths if p.is_file()]
        training = self.training_records() if training is None else training
        out = []
        for path in paths:
            try:
                out.append(read_record(path, training))
            except CorruptCell as exc:
                raise LmkEvalError(
                    f"{exc}; run the sweep again to set it aside and recompute it"
                ) from None
        return out

    def training_records(self) -> dict[str, dict[str, Any]]:
        """Checkpoint name -> its training record."""
        out = {}
        for p in sorted((self.root / "training").glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                raise LmkEvalError(
                    f"training record '{p}' is unreadable; delete it or restore it"
                ) from None
        return out

    def lookup(self, cell: Cell, identity: dict[str, Any]) -> Lookup:
        path = self.cell_dir(cell) / "cell.json"
        if not self.cell_dir(cell).exists():
            return Lookup("missing")
        try:
            record = read_record(path)
        except CorruptCell as exc:
            return Lookup("corrupt", str(exc))
        if record.identity is None:
            return Lookup("stale", "it records no provenance (written by an older lmk-eval)")
        changed = differences(record.identity.model_dump(), identity)
        if changed:
            return Lookup("stale", f"changed since it was stored: {', '.join(changed)}")
        return Lookup("ok")

    # -- writing (only inside `writing()`) ---------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[RunStore]:
        """Create the run directory and hold its lock; if this run created the directory and the
        block fails before any cell is saved, remove it again: a failed run leaves nothing.

        The directory is created exclusively (``mkdir`` without ``exist_ok``), so "this run created
        it" is never a guess another run can falsify, and it is only ever removed under its lock."""
        from filelock import FileLock, Timeout

        self.root.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.root.mkdir()
            created = True
        except FileExistsError:
            created = False
        lock = FileLock(str(self.root / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise LmkEvalError(
                f"another lmk-eval run is writing to '{self.root}'; wait for it to finish or use"
                " another --output"
            ) from None
        try:
            yield self
        except BaseException:
            if created and self.saved == 0:
                for child in self.root.iterdir():  # under the lock; the folder itself after it
                    if child.is_dir():
                        remove_tree(child)
                    elif child.name != LOCK_NAME:
                        child.unlink(missing_ok=True)
                lock.release()
                (self.root / LOCK_NAME).unlink(missing_ok=True)
                remove_if_empty(self.root)
            raise
        finally:
            if lock.is_locked:
                lock.release()
            remove_if_empty(self.root / ".tmp")

    def set_aside(self, cell: Cell | str, why: str) -> Path:
        """Move a stored cell out of the way (never delete a result someone may want back)."""
        key = cell if isinstance(cell, str) else cell.key()
        aside = self.root / SET_ASIDE
        aside.mkdir(parents=True, exist_ok=True)
        n = 1
        while (target := aside / f"{key}.{why}.{n}").exists():
            n += 1
        os.replace(self.cell_dir(key), target)
        return target

    def save(
        self,
        cell: Cell,
        *,
        identity: dict[str, Any],
        context: str,
        task_result_json: str,
        main_score: str,
        main: float,
        scores: list[Part],
        subtasks: list[Part] | None = None,
        subtask_results: dict[str, str] | None = None,
        seconds: float | None = None,
        zero_grade_queries: dict[str, int] | None = None,
        machine: str | None = None,
        sharing: dict[str, int | str] | None = None,
    ) -> None:
        """Store one cell whole: mteb's JSON (an aggregate's sub-tasks' too), then the record
        with their digests, built aside and renamed into place."""
        staging = staging_dir(self.root / ".tmp", cell.key()[:40])
        try:
            record = CellRecord(
                cell=cell.describe(),
                identity=CellIdentity(**identity),
                produced_by={**code_info(), **({"machine": machine} if machine else {})},
                task=cell.task,
                context=context,
                main_score=main_score,
                main=main,
                scores=scores,
                subtasks=subtasks or [],
                seconds=None if seconds is None else round(seconds, 2),
                zero_grade_queries=zero_grade_queries or {},
                sharing=sharing or {},
            )
            why = record.inconsistency()
            if why:  # never store numbers the report's statistics would contradict
                raise LmkEvalError(
                    f"cell {cell.key()}: {why}; nothing was stored for it (a change in mteb's"
                    " scoring? report it with the mteb version)"
                )
            files = result_files(record, staging)
            texts = {
                "task_result": task_result_json,
                **{f"task_result/{k}": v for k, v in (subtask_results or {}).items()},
            }
            if set(texts) != set(files):
                raise LmkEvalError(
                    f"cell {cell.key()}: mteb's results of {sorted(texts)} do not match its parts"
                )
            for name, file in files.items():
                atomic_write_text(file, texts[name])
            record.digests = {
                "scores": record.scored_digest(),
                **{k: file_sha256(f) for k, f in files.items()},
            }
            atomic_write_text(staging / "cell.json", record.model_dump_json(indent=1))
            target = self.cell_dir(cell)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # --recompute: the old cell is set aside, never deleted
                self.set_aside(cell, "replaced")
            os.replace(staging, target)
            self.saved += 1
        finally:
            if staging.exists():
                remove_tree(staging)

    def save_training(self, name: str, record: dict[str, Any]) -> None:
        """Keep a checkpoint's training record with the results (checkpoints are not committed)."""
        atomic_write_text(self.root / "training" / f"{name}.json", json.dumps(record, indent=1))

    def write_sweep(
        self,
        sweep_dict: dict[str, Any],
        cells: list[Cell],
        benchmarks: dict[str, list[str]] | None = None,
    ) -> None:
        """The sweep as run, its cells (the manifest) and the mteb benchmarks its tasks were named
        by (benchmark -> tasks), which the report averages over."""
        record = {**sweep_dict, "cells": [c.manifest_entry() for c in cells]}
        if benchmarks:
            record["benchmarks"] = benchmarks
        atomic_write_text(self.root / "sweep.json", json.dumps(record, indent=1))

    # -- tables ------------------------------------------------------------------------------
    def scores_frame(self, records: list[CellRecord] | None = None) -> pd.DataFrame:
        rows = []
        for r in self.records() if records is None else records:
            c, v = r.cell, r.variant
            for part in r.scores:  # the task's own entries (an aggregate's: mteb's combined ones)
                for metric, value in part.scores.items():
                    rows.append(
                        {
                            "model": c.model,
                            "variant": v.key(),
                            "pooling": c.label,
                            "pooling_name": v.pooling,
                            "options": json.dumps(v.relevant_options(), sort_keys=True),
                            "task": r.task,
                            "context": r.context,
                            "subset": part.subset,
                            "split": part.split,
                            "max_length": v.max_length,
                            "strategy": v.strategy,
                            "attention_scale": v.scale,
                            "reading": v.reading(),
                            "metric": metric,
                            "score": value,
                            "main": metric == r.main_score,
                        }
                    )
        frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
        return frame.sort_values(
            ["task", "subset", "split", "max_length", "variant", "model", "metric"], kind="stable"
        ).reset_index(drop=True)

    def write_scores_csv(self) -> Path:
        path = self.root / "scores.csv"
        atomic_write_text(path, self.scores_frame().to_csv(index=False))
        return path
