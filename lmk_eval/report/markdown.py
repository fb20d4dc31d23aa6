"""The report as markdown: one renderer per section over a computed ``ReportData``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from lmk_eval.report.data import ReportData
from lmk_eval.report.frames import ROW_KEYS, parts_frame, reference_strategy
from lmk_eval.report.sections import (
    compute_section,
    dtypes,
    provenance_section,
    unfinished_note,
    zero_grade_line,
)
from lmk_eval.report.significance import ALPHA, CI_NAME, CORRECTION, TEST_NAME
from lmk_eval.report.tables import (
    best_strategy_table,
    interval_table,
    main_table,
    part_tables,
    seed_table,
    significance_lines,
    split_tables,
    strategy_lines,
)
from lmk_eval.retrieval.mteb_tasks import LONG_CONTEXT_CHARS

Figures = dict[str, Path | None]  # "length", "depth" -> the figure drawn, or None


def render(data: ReportData, figures: Figures) -> str:
    parts = [f"# lmk-eval report: {data.name}", ""]
    if data.sweep.get("description"):
        parts += [data.sweep["description"], ""]
    parts += unfinished_note(data.store, data.records, data.training)
    for section in (
        settings,
        main_scores,
        parts_section,
        per_seed,
        lengths,
        depths,
        attention_scale,
        significance,
    ):
        parts += section(data, figures)
    parts += compute_section(data.records, data.training)
    parts += provenance_section(data.records)
    return "\n".join(parts)


def settings(data: ReportData, _figures: Figures) -> list[str]:
    frame, names = data.frame, data.names
    seeds = ""
    if data.seeded:
        seeds = (
            f"; seeds: {', '.join(str(int(x)) for x in sorted(frame['seed'].dropna().unique()))}"
            " (scores are means over seeds, ± their standard deviation)"
        )
    return [
        "## Settings",
        "",
        f"- models: {', '.join(sorted(frame['model'].unique()))}" + seeds,
        f"- poolings: {', '.join(names[p] for p in data.poolings)} (baseline for significance:"
        f" `{names[data.baseline]}`)",
        f"- tasks: {', '.join(dict.fromkeys(frame['task']))}",
        *zero_grade_line(data.records),
        f"- dtype: {dtypes(data.records)} (pooling, normalisation and scoring in float32)",
        f"- max_length: {', '.join(map(str, sorted(frame['max_length'].unique())))};"
        f" strategy: {', '.join(sorted(frame['strategy'].unique()))}",
        f"- cells: {frame.groupby(ROW_KEYS + ['pooling', 'seed'], dropna=False).ngroups};"
        f" run directory: `{data.store.root}`;"
        f" written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
    ]


def main_scores(data: ReportData, _figures: Figures) -> list[str]:
    names, frame = data.names, data.frame
    parts = [
        "## Main scores",
        "",
        "Main score ×100: mteb's main score of each task (the mean over its splits, as LongEmbed"
        " averages over lengths"
        + (", and over its language subsets" if _subsets(data) else "")
        + (
            "; an aggregate's (CQADupstack) is mteb's mean over its sub-tasks"
            if _aggregates(data)
            else ""
        )
        + ("; then the mean over seeds" if data.seeded else "")
        + f"). Best per row in **bold**; † marks a difference from `{names[data.baseline]}` that stays"
        f" significant (p < {ALPHA}) after {CORRECTION} correction over all"
        f" {data.family.size} comparisons of this report (see Significance)."
        + (
            " A benchmark's average is the mean of its tasks' scores (mteb's Mean(Task)), at each"
            " reading it ran at."
            if data.sweep.get("benchmarks")
            else ""
        )
        + f" A context's average is the mean of its rows (long: the documents evaluated average"
        f" {LONG_CONTEXT_CHARS:,} characters or more).",
        "",
    ]
    if data.unmatched:
        parts += [
            "Seeds not yet run for every pooling of a row are left out of every table, plot"
            " and test below, so that each pooling is averaged over the same seeds (the store"
            f" keeps them): {'; '.join(data.unmatched)}.",
            "",
        ]
    parts += [
        main_table(frame, data.poolings, data.family.rows, names, data.sweep.get("benchmarks")),
        "",
    ]
    intervals = interval_table(frame, data.intervals, data.poolings, names)
    if intervals:
        parts += [
            "95% confidence intervals of the main scores ×100: "
            + CI_NAME
            + (", each query's score averaged over seeds first" if data.seeded else "")
            + ".",
            "",
            intervals,
            "",
        ]
    return parts


def _subsets(data: ReportData) -> bool:
    return any(len({p.subset for p in r.scores}) > 1 for r in data.records)


def _aggregates(data: ReportData) -> bool:
    return any(r.subtasks for r in data.records)


def parts_section(data: ReportData, _figures: Figures) -> list[str]:
    tables = part_tables(parts_frame(data.records), data.poolings, data.names)
    if not tables:
        return []
    parts = [
        "## Subsets and sub-tasks",
        "",
        "Tasks mteb scores in parts: each language subset, or each sub-task of an aggregate"
        " (CQADupstack), its main score ×100 (mean over the task's splits and over seeds). The"
        " task's main score above is mteb's mean over these parts; its queries are paired within"
        " each part.",
        "",
    ]
    for label, t in tables:
        parts += [f"**{label}**", "", t, ""]
    return parts


def per_seed(data: ReportData, _figures: Figures) -> list[str]:
    table = seed_table(data.every_seed, data.poolings, data.names)
    if not table:
        return []
    return [
        "## Per seed",
        "",
        "Main score ×100 of every stored checkpoint (mean over a task's"
        " splits), seeds left out above included.",
        "",
        table,
        "",
    ]


def lengths(data: ReportData, figures: Figures) -> list[str]:
    tables = split_tables(data.lengths, data.poolings, "length", data.names)
    if not (figures["length"] or tables):
        return []
    parts = ["## Length extrapolation", ""]
    if figures["length"]:
        parts += [f"![length extrapolation]({data.name}/length.png)", ""]
    best = best_strategy_table(data.frame, data.poolings, data.names)
    if best:
        parts += [
            "Each pooling's best strategy per document-length band (mean score ×100 over the"
            " band's lengths; the strategies read up to the max_length of their row; strategies that tie are"
            " joined by =):",
            "",
            best,
            "",
        ]
    for label, t in tables:
        parts += [f"**{label}** (score ×100 per document length in tokens)", "", t, ""]
    return parts


def depths(data: ReportData, figures: Figures) -> list[str]:
    if not figures["depth"]:
        return []
    parts = [
        "## Evidence depth",
        "",
        "Needle placed at a fixed fraction of each document (0 = first word, 1 = last).",
        "",
        f"![evidence depth]({data.name}/depth.png)",
        "",
    ]
    for label, t in split_tables(data.depths, data.poolings, "depth", data.names):
        parts += [f"**{label}**", "", t, ""]
    return parts


def attention_scale(data: ReportData, _figures: Figures) -> list[str]:
    if not data.family.scales:
        return []
    return [
        "## Attention scale",
        "",
        "Each reading with an attention scale against the same strategy without one (same pooling,"
        " model, task and max_length), on per-query main scores: Δ ×100 with the"
        f" {CI_NAME} of the paired differences; p from {TEST_NAME}, Holm-adjusted within the"
        " report's one family (see Significance). `logn` multiplies the queries of an input of n > P"
        " tokens by ln n / ln P (LongEmbed), `temperature:T` by 1 / T (TempScale); inputs that fit are"
        " untouched, so splits at or below the model's positions contribute differences of 0.",
        "",
        *[f"- {line}" for line in strategy_lines(data.family.scales)],
        "",
    ]


def significance(data: ReportData, _figures: Figures) -> list[str]:
    family, names = data.family, data.names
    if not family:
        return []
    text = (
        f"Each pooling against `{names[data.baseline]}` on every row of the main table: {TEST_NAME},"
        " on per-query main scores"
        + (
            " with each query's score first averaged over seeds (n counts queries, not"
            " seed x query pairs)"
            if data.seeded
            else ""
        )
        + "; a task with several splits weighs each split equally"
        + (
            ", and within a split each sub-task and language subset, as mteb averages them"
            if _subsets(data) or _aggregates(data)
            else ""
        )
        + ". Its Δ interval is the"
        f" {CI_NAME} of the paired differences."
        + (
            f" Each other strategy is also compared with `{reference_strategy(data.frame)}` for the same"
            " pooling, model and task, at the same max_length or, where it has none (truncate"
            " stops at the model's positions), at its longest one below; each line names both."
            if family.strategies
            else ""
        )
        + (
            " Each reading with an attention scale is also compared with the same strategy without"
            " it; those lines are under Attention scale."
            if family.scales
            else ""
        )
        + f" The {family.size} p-values form one family, adjusted by {CORRECTION}; † = adjusted"
        f" p < {ALPHA}. Per-length and per-depth tables are descriptive and are not tested."
    )
    return [
        "## Significance",
        "",
        text,
        "",
        *[f"- {n}" for n in significance_lines(family.rows, data.baseline, names)],
        *[f"- {n}" for n in strategy_lines(family.strategies)],
        "",
    ]
