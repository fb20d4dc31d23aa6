"""Sections that describe the run rather than compare poolings: compute time, what is unfinished,
provenance, the queries scored 0 by mteb's rules."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from lmk_eval.report.tables import markdown_table
from lmk_eval.store.cells import CellRecord, RunStore
from lmk_eval.store.records import query_counts


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _timed_cells(records: list[CellRecord], key: Callable[[CellRecord], object]) -> dict:
    """Measured wall times of the timed cells, grouped by key."""
    out: dict = {}
    for r in records:
        if r.seconds is not None:
            out.setdefault(key(r), []).append(r.seconds)
    return out


def compute_section(records: list[CellRecord], training: dict[str, dict]) -> list[str]:
    """Measured wall time per task and for training, summed over every (resumed) run segment."""
    per_task = _timed_cells(records, lambda r: r.task)
    if not per_task and not training:
        return []
    rows = [[task, str(len(s)), _duration(sum(s))] for task, s in per_task.items()]
    training_seconds = sum(t["seconds"] for t in training.values())
    if training:
        rows.append(["training", str(len(training)), _duration(training_seconds)])
    total = sum(map(sum, per_task.values())) + training_seconds
    rows.append(["**total**", "", f"**{_duration(total)}**"])
    untimed = len(records) - sum(map(len, per_task.values()))
    machines = sorted({r.produced_by["machine"] for r in records if r.produced_by.get("machine")})
    unnamed = sum(1 for r in records if r.seconds is not None and not r.produced_by.get("machine"))
    where = (f" Measured on: {'; '.join(machines)}." if machines else "") + (
        f" {unnamed} cell(s) from older runs do not record their machine." if unnamed else ""
    )
    return [
        "## Compute",
        "",
        "Wall time measured per cell (encoding + mteb scoring) and per trained checkpoint, summed;"
        " a run interrupted and resumed counts only the work it kept."
        + (f" {untimed} cell(s) from older runs carry no timing." if untimed else "")
        + where,
        "",
        markdown_table(["step", "cells / checkpoints", "wall time"], rows),
        "",
        *sharing_lines(records),
    ]


def sharing_lines(records: list[CellRecord]) -> list[str]:
    """How many model inputs the cells of each group (a model on a task, every length and
    reading) shared: each group's last figures, summed over groups."""
    last: dict[str, dict] = {}
    for r in records:
        group = r.sharing.get("group")
        if group and r.sharing["asked"] >= last.get(group, {}).get("asked", -1):
            last[group] = r.sharing
    if not last:
        return []
    asked, run = sum(g["asked"] for g in last.values()), sum(g["run"] for g in last.values())
    asked_tokens = sum(g["asked_tokens"] for g in last.values())
    tokens = sum(g["tokens"] for g in last.values())
    return [
        f"Inputs shared across lengths and readings: {asked - run:,} of the {asked:,} model inputs"
        f" the cells' lengths and readings asked for were identical to one already run (a document"
        f" that fits reads alike at every length and by every strategy), so {run:,} ran;"
        f" {tokens:,} tokens went through the model, {asked_tokens:,} in a pass per length and"
        f" reading ({len(last)} group(s) of one model on one task; cells from older runs record"
        " none).",
        "",
    ]


def unfinished_note(
    store: RunStore, records: list[CellRecord], training: dict[str, dict]
) -> list[str]:
    """A bold warning naming what is missing when the store holds only part of its sweep."""
    manifest = store.manifest()
    if not manifest:
        return []
    done = {r.key for r in records}
    missing_cells = [c for c in manifest if c["key"] not in done]
    if not missing_cells:
        return []
    planned: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for c in manifest:
        planned.setdefault(Path(c["model"]).name, []).append(c["task"])
    for c in missing_cells:
        missing.setdefault(Path(c["model"]).name, []).append(c["task"])
    what = "; ".join(
        f"{m}: {'all' if tasks == planned[m] else ', '.join(dict.fromkeys(tasks))}"
        for m, tasks in missing.items()
    )
    trains = bool((store.sweep() or {}).get("train"))
    remaining = remaining_seconds(records, training, missing_cells, trains=trains)
    estimate = (
        f" At this run's own measured mean per cell (and per trained checkpoint) the rest needs"
        f" about {_duration(remaining)}."
        if remaining is not None
        else ""
    )
    return [
        f"**Unfinished run: {len(manifest) - len(missing_cells)} of {len(manifest)} planned cells are in"
        f" the store.** Missing: {what}. Running the same command again resumes it.{estimate}",
        "",
    ]


def remaining_seconds(
    records: list[CellRecord], trained: dict[str, dict], missing: list[dict], trains: bool
) -> float | None:
    """The missing cells (and checkpoints still to train) priced at the measured mean of their
    kind; None when some kind was never timed, since a guess would read as a measurement."""
    timed = _timed_cells(records, lambda r: (r.task, r.variant.max_length, r.variant.strategy))
    seconds = 0.0
    for cell in missing:
        key = (cell["task"], cell["max_length"], cell["strategy"])
        if key not in timed:
            return None
        seconds += statistics.mean(timed[key])
    untrained = {Path(c["model"]).name for c in missing} - set(trained) if trains else set()
    if untrained and not trained:
        return None
    if untrained:
        seconds += len(untrained) * statistics.mean(t["seconds"] for t in trained.values())
    return seconds


def _short(identity: dict | None) -> str:
    if not identity:
        return "not recorded"
    parts = []
    for key in (
        "package",
        "repo",
        "commit",
        "content",
        "files",
        "construction",
        "dataset",
        "subsets",
    ):
        if key in identity:
            value = identity[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, list):
                value = "+".join(map(str, value))
            elif key in ("commit", "content", "files"):
                value = f"`{str(value)[:12]}`"
            parts.append(f"{key} {value}")
    if identity.get("kind") == "mteb-aggregate":  # each sub-task's dataset, revision and commit
        parts += [
            f"{name} ({_short(sub).removeprefix('?: ')})" for name, sub in identity["tasks"].items()
        ]
    if identity.get("kind") == "checkpoint":
        t = identity["training"]
        parts.append(
            f"trained from base ({_short(t['base'])}) on data `{str(t['data'])[:12]}`,"
            f" {t['steps']} steps, seed {t['seed']} (training hash in the checkpoint name)"
        )
    return f"{identity.get('kind', '?')}: " + "; ".join(parts)


def dtypes(records: list[CellRecord]) -> str:
    found = sorted(
        {r.identity.encoding.get("dtype", "float32") if r.identity else "float32" for r in records}
    )
    legacy = any(r.identity is None for r in records)
    return ", ".join(found) + (
        " (older cells do not record it: lmk-eval then ran float32 only)" if legacy else ""
    )


def _encoding_text(encoding: dict) -> str:
    parts = [f"dtype {encoding['dtype']}"] if "dtype" in encoding else []
    prompts = encoding.get("prompts")
    if prompts is not None:
        shown = ", ".join(f"{k} {v!r}" for k, v in prompts.items()) if prompts else "none"
        parts.append(f"prompts {shown}")
    for key, value in (encoding.get("options") or {}).items():
        if key not in ("query_prompt", "document_prompt", "dtype"):
            parts.append(f"{key} {value}")
    return "; ".join(parts)


def provenance_section(records: list[CellRecord]) -> list[str]:
    """What produced these numbers, from each cell's recorded identity."""
    legacy = [r for r in records if r.identity is None]
    models_seen: dict[str, str] = {}
    tasks_seen: dict[str, str] = {}
    scoring: set[str] = set()
    produced: set[str] = set()
    encodings: dict[str, str] = {}
    for r in records:
        if r.identity is None:
            continue
        models_seen.setdefault(r.cell.model, _short(r.identity.model))
        encoding = r.identity.encoding
        text = _encoding_text(encoding)
        if text:
            encodings.setdefault(f"`{r.cell.model}`", text)
        if "native" in encoding:
            n = encoding["native"]
            encodings.setdefault(
                f"`{r.cell.model}` native",
                f"{n['pooling']} pooling, include_prompt {n['include_prompt']}, normalize"
                f" {n['normalize']}, similarity {n['similarity']} (from its {n['source']})",
            )
        splits = "+".join(r.cell.splits)
        tasks_seen.setdefault(f"{r.task} ({splits})", _short(r.identity.data))
        scoring.add(", ".join(f"{k} {v}" for k, v in r.identity.scoring.items()))
        produced.add(
            ", ".join(f"{k} {v}" for k, v in sorted(r.produced_by.items()) if k != "machine")
        )
    lines = ["## Provenance", ""]
    if legacy:
        lines += [
            f"{len(legacy)} of {len(records)} cells were written before lmk-eval recorded"
            " provenance: their model and data are known by name only.",
            "",
        ]
    if models_seen:
        lines += [
            "Each cell records what produced it (`cell.json`, key `identity`); a stored cell"
            " is reused only while all of it is unchanged.",
            "",
        ]
        lines += [f"- model `{m}`: {v}" for m, v in models_seen.items()]
        lines += [f"- encoding of {m}: {v}" for m, v in encodings.items()]
        lines += [f"- task {t}: data {v}" for t, v in tasks_seen.items()]
        lines += [f"- scoring: {v}" for v in sorted(scoring)]
        lines += [f"- computed by: {v}" for v in sorted(produced)]
        lines += [""]
    return lines if (legacy or models_seen) else []


def zero_grade_line(records: list[CellRecord]) -> list[str]:
    """The settings line naming queries whose judgements are all grade 0 or less (scored 0, as mteb does)."""
    seen = {
        (
            r.task,
            part,
        ): f"{r.task} {part} {n} of {query_counts(r.scores, r.subtasks).get(part) or '?'}"
        for r in records
        for part, n in r.zero_grade_queries.items()
    }
    if not seen:
        return []
    return [
        "- queries that judge no document relevant (every judgement grade 0 or less), kept and scored 0"
        f" as mteb scores them: {'; '.join(seen[k] for k in sorted(seen))}"
    ]
