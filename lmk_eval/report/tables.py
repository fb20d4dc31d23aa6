"""Markdown tables and comparison lines over the frames and the comparisons."""

from __future__ import annotations

import pandas as pd

from lmk_eval.report.frames import (
    BANDS,
    ROW_KEYS,
    Names,
    Panel,
    reference_for,
    row_label,
    seed_std,
    strategy_pivots,
    varying,
)
from lmk_eval.report.significance import Comparison
from lmk_eval.report.stats import RowIntervals


def fmt_score(value: float, bold: bool, mark: str = "", std: float | None = None) -> str:
    text = f"{value * 100:.1f}" + (f" ± {std * 100:.1f}" if std is not None else "") + mark
    return f"**{text}**" if bold else text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main_table(
    frame: pd.DataFrame,
    poolings: list[str],
    comparisons: list[tuple[str, str, Comparison]],
    names: Names,
    benchmarks: dict[str, list[str]] | None = None,
) -> str:
    """Per-row main score (mean over splits and seeds), best in bold, † where the Holm-adjusted
    difference from the baseline is significant; then each mteb benchmark's average over its
    tasks (per reading), and each context's average over its rows."""
    vary = varying(frame)
    marked = {(row, p) for row, p, c in comparisons if c.significant}
    rows, row_means = [], {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        means = group.groupby("pooling")["score"].mean()
        best = means.max()
        label = row_label(key, vary)
        cells = [
            fmt_score(
                means[p], means[p] == best, "†" if (label, p) in marked else "", seed_std(group, p)
            )
            if p in means
            else "–"
            for p in poolings
        ]
        rows.append([label, group["metric"].iloc[0], str(group["split"].nunique()), *cells])
        row_means[key] = means
    for name, tasks in (benchmarks or {}).items():
        readings: dict[tuple, list[pd.Series]] = {}
        for (model, task, _context, length, strategy), means in row_means.items():
            if task in tasks:
                readings.setdefault((model, length, strategy), []).append(means)
        for (model, length, strategy), series in readings.items():
            where = (f"{model}: " if vary["model"] else "") + name
            where += (
                f" @{length}" + (f"/{strategy}" if vary["strategy"] else "")
                if len(readings) > 1
                else ""
            )
            rows += _average_row(
                f"{where} average (mteb benchmark, {len(tasks)} tasks)",
                f"{where} average",
                "tasks",
                series,
                len(tasks),
                poolings,
            )
    by_context: dict[str, list[pd.Series]] = {}
    for key, means in row_means.items():
        by_context.setdefault(key[2], []).append(means)
    for context, series in by_context.items():
        rows += _average_row(
            f"{context}-context average",
            f"{context}-context average",
            "rows",
            series,
            len(series),
            poolings,
        )
    return markdown_table(["task", "metric", "splits", *(names[p] for p in poolings)], rows)


def _average_row(
    label: str, short: str, unit: str, series: list[pd.Series], total: int, poolings: list[str]
) -> list[list[str]]:
    """One average row: the mean over the rows every pooling has (a fair average), saying over
    how many of ``total`` when some are missing; none when no row has every pooling."""
    table = pd.concat(series, axis=1).reindex(poolings)
    complete = table.loc[:, table.notna().all()]
    if complete.shape[1] == 0:
        return []
    avg = complete.mean(axis=1)
    best = avg.max()
    label = f"*{label}*"
    if complete.shape[1] < total:
        label = f"*{short} over the {complete.shape[1]} of {total} {unit} every pooling has*"
    return [
        [label, "", str(complete.shape[1]), *[fmt_score(avg[p], avg[p] == best) for p in poolings]]
    ]


def interval_table(
    frame: pd.DataFrame, found: list[RowIntervals], poolings: list[str], names: Names
) -> str | None:
    """Each main score's 95% bootstrap interval (computed in ``ReportData``), as a table."""
    vary = varying(frame)
    rows = []
    for row in found:
        cells = [
            f"{ci[0] * 100:.1f} – {ci[1] * 100:.1f}" if ci else "–"
            for ci in (row.intervals[p] for p in poolings)
        ]
        rows.append([row_label(row.key, vary), str(row.queries or "–"), *cells])
    if all(c == "–" for r in rows for c in r[2:]):
        return None
    return markdown_table(["task", "queries", *(names[p] for p in poolings)], rows)


def ci_text(c: Comparison) -> str:
    return f" (95% CI {c.ci[0] * 100:+.1f} to {c.ci[1] * 100:+.1f})" if c.ci else ""


def tested_text(c: Comparison) -> str:
    """A comparison's numbers, or why it was not tested (a non-finite side: no p, no †)."""
    if c.p_value is None:
        return f"not tested ({c.untested}), n={c.n} queries"
    return (
        f"Δ={c.mean_diff * 100:+.1f}{ci_text(c)}, p={c.p_value:.3g}, Holm-adjusted p={c.p_adjusted:.3g}"
        f"{' †' if c.significant else ''}, n={c.n} queries"
    )


def strategy_lines(found: list[tuple[str, Comparison]]) -> list[str]:
    return [f"{label}: {tested_text(c)}" for label, c in found]


def significance_lines(
    comparisons: list[tuple[str, str, Comparison]], baseline: str, names: Names
) -> list[str]:
    out = []
    for row, p, c in comparisons:
        out.append(f"{row}: {names[p]} vs {names[baseline]}: {tested_text(c)}")
    return out


def seed_table(frame: pd.DataFrame, poolings: list[str], names: Names) -> str | None:
    """Main score of every stored checkpoint, one row per (task row, seed): seed-to-seed spread,
    and the seeds an unfinished sweep holds for only some poolings."""
    seeded = frame[frame["seed"].notna()]
    if seeded["seed"].nunique() < 2:
        return None
    vary = varying(frame)
    rows = []
    for key, group in seeded.groupby(ROW_KEYS, sort=False):
        means = group.groupby(["seed", "pooling"])["score"].mean()
        for seed in sorted(group["seed"].unique()):
            rows.append(
                [
                    row_label(key, vary),
                    str(int(seed)),
                    *[
                        fmt_score(means[seed, p], False) if (seed, p) in means else "–"
                        for p in poolings
                    ],
                ]
            )
    return markdown_table(["task", "seed", *(names[p] for p in poolings)], rows)


def best_strategy_table(frame: pd.DataFrame, poolings: list[str], names: Names) -> str | None:
    """Each pooling's best strategy per document-length band (mean score over the band's lengths);
    strategies that tie are all named, since below the model's positions several are exact."""
    rows = []
    for panel in strategy_pivots(frame):
        table = panel.table
        for pooling in (p for p in poolings if p in table.columns.get_level_values(0)):
            cells = []
            for lo, hi, _name in BANDS:
                band = table.loc[(table.index >= lo) & (table.index <= hi), pooling]
                if band.empty:
                    cells.append("–")
                    continue
                means = band.mean()
                tied = [s for s in means.index if abs(means[s] - means.max()) < 1e-9]
                shown = "all tied" if len(tied) == len(means) > 1 else " = ".join(tied)
                cells.append(f"{shown} ({means.max() * 100:.1f})")
            rows.append([panel.label, names[pooling], *cells])
    if not rows:
        return None
    return markdown_table(["task", "pooling", *[b[2] + " tokens" for b in BANDS]], rows)


def split_tables(
    panels: list[Panel], poolings: list[str], column: str, names: Names
) -> list[tuple[str, str]]:
    """The panels as markdown, splits as rows, best per row in bold; a bundled task calibrated
    against a published curve gets that curve as a last column."""
    out = []
    for panel in panels:
        table = panel.table
        reference = reference_for(panel) if column == "length" else None
        rows = []
        for x, r in table.iterrows():
            best = r.max()
            cells = [fmt_score(r[p], r[p] == best) if p in r else "–" for p in poolings]
            if reference:
                cells.append(str(reference["scores"].get(int(x), "–")))
            rows.append([f"{x:g}", *cells])
        header = [column, *(names[p] for p in poolings)]
        header += [f"published: {reference['label']}"] if reference else []
        out.append((panel.label, markdown_table(header, rows)))
    return out


def part_tables(parts: pd.DataFrame, poolings: list[str], names: Names) -> list[tuple[str, str]]:
    """Per task scored in parts (subsets, an aggregate's sub-tasks): each part's score x pooling,
    averaged over seeds, best per part in bold."""
    if parts.empty:
        return []
    vary = varying(parts)
    out = []
    for (model, row, length, strategy), group in parts.groupby(
        ["model", "row", "max_length", "strategy"], sort=False
    ):
        table = group.pivot_table(index="part", columns="pooling", values="score", sort=False)
        rows = []
        for part, r in table.iterrows():
            best = r.max()
            rows.append(
                [
                    str(part),
                    *[
                        fmt_score(r[p], r[p] == best) if p in r and pd.notna(r[p]) else "–"
                        for p in poolings
                    ],
                ]
            )
        label = row_label((model, row, None, length, strategy), vary)
        out.append((label, markdown_table(["part", *(names[p] for p in poolings)], rows)))
    return out
