"""Executing a sweep: plan, check, skip what the store has, hand the rest to an executor, store.

Order matters for trust: everything that can refuse the sweep (config, tasks, data files, model
tokenizers and positions, landmark tokens, the output path, training data) is checked before the
output directory is touched, and a stored cell is reused only if its recorded identity (model and
data by content, splits, options, scoring version) equals the current one. The model is loaded
only when a cell is missing, so re-running a finished sweep reads the store and nothing else.
The executor (``executors.py``) computes; the ``Sink`` here is the single writer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmk_eval.common.files import check_writable_dir
from lmk_eval.common.hardware import default_device, resolve_dtype
from lmk_eval.config.sweep import Sweep
from lmk_eval.run.executors import Executor, LocalExecutor
from lmk_eval.run.identities import cell_identities, checkpoint_identity, preflight
from lmk_eval.run.plan import CellGroup, benchmarks, plan
from lmk_eval.run.work import CellPayload, quiet_libraries
from lmk_eval.store.cells import STORE_FOLDERS, RunStore
from lmk_eval.store.records import Cell, query_counts


@dataclass
class RunSummary:
    total: int
    computed: int
    seconds: float
    model_loaded: bool
    set_aside: int = 0


class Sink:
    """The driver's side of a run: writes each payload (and training record) to the store, keeps
    the progress bar, and writes the sweep record with the first result."""

    def __init__(
        self,
        sweep: Sweep,
        store: RunStore,
        resolved: Resolved,
        todo,
        progress: bool,
        log: Callable[[str], None] = print,
    ):
        from tqdm.auto import tqdm

        self.sweep, self.store, self.resolved = sweep, store, resolved
        self.identities = resolved.identities
        self.log, self.said = log, set()
        self.cells = {c.key(): c for _, missing in todo for c in missing}
        self.bar = tqdm(total=len(self.cells), desc="cells", unit="cell", disable=not progress)

    def started(self, cell: Cell) -> None:
        self.bar.set_postfix_str(f"{cell.task} {cell.variant.label()} @{cell.variant.max_length}")

    def save(self, payload: CellPayload) -> None:
        if self.store.saved == 0:  # the sweep record appears with the first result, not before
            self.store.write_sweep(
                self.sweep.to_dict(), self.resolved.cells, self.resolved.benchmarks
            )
        cell = self.cells[payload.key]
        queries = query_counts(payload.scores, payload.subtasks)
        for part, n in payload.zero_grade_queries.items():
            if (cell.task, part) not in self.said:
                self.said.add((cell.task, part))
                self.log(
                    f"{cell.task} {part}: {n} of {queries.get(part) or 'its'} queries judge no document"
                    " relevant (every judgement grade 0 or less); mteb keeps them and scores them 0, and so does lmk-eval"
                )
        fields = {k: v for k, v in vars(payload).items() if k != "key"}
        self.store.save(cell, identity=self.identities[payload.key], **fields)
        self.bar.update(1)

    def trained(self, model: str, record: dict[str, Any]) -> None:
        """Keep the training record; the checkpoint's cells are stored under its files' digest."""
        self.store.save_training(Path(model).name, record)
        now = checkpoint_identity(self.sweep.train, record["pooling"], record["seed"], record)
        for key, cell in self.cells.items():
            if cell.model == model:
                self.identities[key] = {**self.identities[key], "model": now}

    def close(self) -> None:
        self.bar.close()
        if self.store.saved:
            self.store.write_scores_csv()


@dataclass
class Resolved:
    """A sweep's cells, grouped, and what produces each (model and data by content)."""

    groups: list[CellGroup]
    identities: dict[str, dict[str, Any]]

    @property
    def cells(self) -> list[Cell]:
        return [c for g in self.groups for c in g.cells]

    @property
    def benchmarks(self) -> dict[str, list[str]]:
        return benchmarks(self.groups)


def resolve_sweep(sweep: Sweep, output: Path | None = None) -> Resolved:
    """Tasks, cells and their identities (hub commits asked here): the one resolution `plan`,
    `run --dry-run` and `run` share, so what a run would refuse the plan refuses in the same
    line. ``output`` is checked after the tasks and before the hub is asked anything."""
    groups = plan(sweep)
    if output is not None:
        check_writable_dir(output, "output folder", folders=(*STORE_FOLDERS, ".tmp"))
    return Resolved(groups, cell_identities(sweep, groups))


def run_sweep(
    sweep: Sweep,
    output: str | Path,
    executor: Executor | None = None,
    *,
    recompute: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """Compute the sweep's missing cells into ``output`` and say what was done; ``executor``
    says where the work runs (default: this process, ``LocalExecutor``; the CLI builds it with
    ``executors.make_executor``)."""
    started = time.perf_counter()
    worker = executor or LocalExecutor(progress)
    resolved = resolve_sweep(sweep, Path(output))
    groups, identities, all_cells = resolved.groups, resolved.identities, resolved.cells
    store = RunStore(output)
    if recompute or any(store.lookup(c, identities[c.key()]).state != "ok" for c in all_cells):
        preflight(sweep, groups)  # only work can fail: a finished sweep loads no tokenizer
        if sweep.encode_options().dtype != "float32":
            device = sweep.device or default_device()
            dtype, why = resolve_dtype(sweep.encode_options().dtype, device)
            log(f"dtype {sweep.encode_options().dtype} -> {dtype} on {device}: {why}")
    with store.writing():
        todo, set_aside = _missing_cells(store, groups, identities, recompute, log)
        total, n_missing = len(all_cells), sum(len(m) for _, m in todo)
        if not todo:
            store.write_sweep(sweep.to_dict(), all_cells, resolved.benchmarks)
            store.write_scores_csv()
            log(f"all {total} cells already in {store.root}; nothing to compute")
            return RunSummary(total, 0, time.perf_counter() - started, False, set_aside)
        log(f"{n_missing} of {total} cells to compute -> {store.root}")
        quiet_libraries()
        sink = Sink(sweep, store, resolved, todo, progress, log)
        try:
            worker.run(sweep, todo, sink, log)
        except BaseException:
            # a full disk fails scores.csv too: say the first failure
            with contextlib.suppress(OSError):
                sink.close()
            raise
        sink.close()
    return RunSummary(total, n_missing, time.perf_counter() - started, True, set_aside)


def pending(
    store: RunStore, resolved: Resolved, recompute: bool = False
) -> list[tuple[CellGroup, list[Cell]]]:
    """The groups with the cells a run into ``store`` would compute: every cell under
    ``recompute``, else those the store does not hold as they are now. Reads only."""
    todo = []
    for g in resolved.groups:
        missing = [
            c
            for c in g.cells
            if recompute or store.lookup(c, resolved.identities[c.key()]).state != "ok"
        ]
        if missing:
            todo.append((g, missing))
    return todo


def _missing_cells(store: RunStore, groups, identities, recompute: bool, log):
    """Groups with the cells to compute; stale or corrupt cells are set aside with one line each."""
    todo, set_aside = [], 0
    for g in groups:
        missing = []
        for c in g.cells:
            found = store.lookup(c, identities[c.key()])
            if found.state == "ok" and not recompute:
                continue
            if found.state in ("stale", "corrupt"):
                where = store.set_aside(c, found.state)
                set_aside += 1
                log(f"recomputing {c.key()}: {found.why}; the old cell is in {where}")
            missing.append(c)
        if missing:
            todo.append((g, missing))
    return todo, set_aside
