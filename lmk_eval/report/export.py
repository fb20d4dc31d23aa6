"""A run's cells in mteb's results layout, so the numbers can go where the field looks for them.

mteb's results repository keeps ablations as *experiments*:
``results/<org__model>/<revision>/experiments/<name>/<Task>.json`` beside a ``model_meta.json``,
the name serialised by mteb from the ModelMeta's ``experiment_kwargs``. A pooling variant is
exactly one such experiment: its kwargs are the variant's options (and any non-default encoding
option), so two variants never share a folder. The paths come from mteb's own
``ResultCache.get_task_result_path`` and the files are the ones mteb wrote into each cell, so
``ResultCache.load_results(..., load_experiments=...)`` and ``mteb submit-results`` read them.
``ResultCache.save_to_cache`` is not used: it would add a ``run_settings.jsonl`` naming the
exporting machine's package versions as if they had produced the scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.files import atomic_write_text, check_writable_dir, remove_if_empty
from lmk_eval.store.cells import RunStore, result_files
from lmk_eval.store.records import CellRecord


@dataclass
class Exported:
    """What an export wrote: result files, experiments (model, revision, name) and the tasks
    whose results mteb's leaderboard will not take (task -> why)."""

    files: list[Path] = field(default_factory=list)
    experiments: set[tuple[str, str, str]] = field(default_factory=set)
    not_on_leaderboard: dict[str, str] = field(default_factory=dict)


def experiment_meta(record: CellRecord):
    """mteb's ModelMeta of the cell's model and variant, from what the cell recorded (the model
    itself need not be at hand: its name and revision are the ones the run gave mteb)."""
    from lmk_eval.model import loading as models
    from lmk_eval.retrieval.mteb_adapter import variant_meta

    identity = record.identity
    if identity is None:
        raise LmkEvalError(
            f"cell '{record.key}' predates provenance records (no identity); run the sweep again to export it"
        )
    encoding = identity.encoding
    try:
        facts = models.describe(models.resolve_model(record.cell.model))
    except LmkEvalError:  # a checkpoint or directory that is gone: its sizes stay unknown
        facts = {}
    native = encoding.get("native") or {}
    return variant_meta(
        models.recorded_name(record.cell.model),
        models.revision_of(identity.model),
        record.variant,
        encoding.get("options", {}),
        similarity=native.get("similarity", "cosine"),
        use_instructions=bool(encoding.get("prompts")),
        facts=facts,
        model_ref=record.cell.model,
    )


def leaderboard_mismatch(task_name: str, dataset_revision: str | None) -> str | None:
    """Why mteb's leaderboard would skip this result, or None: it takes a task's results only when
    computed on the dataset revision its TaskMetadata names."""
    import mteb

    try:
        expected = mteb.get_task(task_name).metadata.dataset.get("revision")
    except KeyError:
        return "not an mteb task: lmk-eval's own data"
    if dataset_revision != expected:
        return f"computed on dataset revision {dataset_revision}, mteb's task names {expected}"
    return None


def export_run(run_dir: Path, results_dir: Path) -> Exported:
    """Write every finished cell of ``run_dir`` into ``results_dir`` (a clone of mteb's results
    repository, or any folder: files go under its ``results/``). Everything is read and checked
    before the first file is written; a failure removes the files and folders this call made."""
    from mteb import ResultCache

    store = RunStore(run_dir)
    if not store.cells_dir.is_dir():
        raise LmkEvalError(
            f"'{run_dir}' is not a run directory (no cells/); run `lmk-eval run` first"
        )
    records = store.records()
    if not records:
        raise LmkEvalError(f"'{run_dir}' has no finished cells to export; run the sweep first")
    check_writable_dir(results_dir, "mteb results folder")
    made_root = not results_dir.exists()
    cache = ResultCache(cache_path=results_dir)  # (it creates the folder)
    created: list[Path] = []
    try:
        planned, out = _plan(records, store, cache, run_dir)
        for path, text in planned.items():
            if not path.exists():
                created.append(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
            for folder in path.parents[: len(path.relative_to(cache.cache_path).parents) - 1]:
                remove_if_empty(folder)  # the folders it made, if now empty
        if made_root:
            remove_if_empty(results_dir)
        raise
    return out


def _plan(
    records: list[CellRecord], store: RunStore, cache, run_dir: Path
) -> tuple[dict[Path, str], Exported]:
    """Every file to write (path -> text) and what the export will have written."""
    from mteb import TaskResult

    planned: dict[Path, str] = {}
    out = Exported()
    for record in records:
        meta = experiment_meta(record)
        meta_text = json.dumps(meta.to_dict(), default=str, indent=4)
        for file in result_files(record, store.cell_dir(record.key)).values():
            result = TaskResult.from_disk(file)
            path = cache.get_task_result_path(result.task_name, meta)
            text = file.read_text(encoding="utf-8")  # mteb's own TaskResult.to_disk output
            if planned.get(path, text) != text:
                raise LmkEvalError(
                    f"two cells of '{run_dir}' export to '{path}' with different scores; export them from separate runs"
                )
            if path not in planned:
                out.files.append(path)
            planned[path] = text
            planned[path.parent / "model_meta.json"] = meta_text
            out.experiments.add((meta.name, meta.revision, meta.experiment_name or ""))
            why = leaderboard_mismatch(result.task_name, result.dataset_revision)
            if why:
                out.not_on_leaderboard[result.task_name] = why
    return planned, out
