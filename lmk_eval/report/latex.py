"""The report's main and per-length tables as LaTeX a paper can paste: booktabs rules, the best
per row in bold, † where the report's Holm-corrected test says so; rendered by pandas' Styler."""

from __future__ import annotations

import pandas as pd

from lmk_eval.report.data import ReportData
from lmk_eval.report.frames import ROW_KEYS, row_label, varying

DAGGER = r"\textsuperscript{\dag}"


def main_scores(data: ReportData) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """Row label x pooling name: the main score x100 (mean over splits and seeds, as the markdown
    table), and the (row, pooling) cells whose difference from the baseline is significant."""
    vary = varying(data.frame)
    rows = {}
    for key, group in data.frame.groupby(ROW_KEYS, sort=False):
        means = group.groupby("pooling")["score"].mean()
        rows[row_label(key, vary)] = {
            data.names[p]: means[p] * 100 for p in data.poolings if p in means
        }
    marked = {(row, data.names[p]) for row, p, c in data.family.rows if c.significant}
    columns = [data.names[p] for p in data.poolings]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns), marked


def latex_table(scores: pd.DataFrame, marked: set[tuple[str, str]], caption: str) -> str:
    """One booktabs table: scores to one decimal, best per row in bold, † on marked cells."""
    text = pd.DataFrame(
        [
            [
                ("--" if pd.isna(v) else f"{v:.1f}" + (DAGGER if (row, col) in marked else ""))
                for col, v in r.items()
            ]
            for row, r in scores.iterrows()
        ],
        index=scores.index,
        columns=scores.columns,
    )
    best = scores.eq(scores.max(axis=1), axis=0)
    styler = text.style.apply(
        lambda _: best.replace({True: "textbf: --rwrap;", False: ""}), axis=None
    )
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(
        hrules=True,
        caption=caption,
        position="t",
        position_float="centering",
        column_format="l" + "r" * len(scores.columns),
    )


def render_latex(data: ReportData) -> str:
    """The main table, then one table per length panel (scores by document length)."""
    scores, marked = main_scores(data)
    baseline = data.names[data.baseline]
    parts = [
        f"% lmk-eval report of {data.name}: tables for a paper (needs \\usepackage{{booktabs}})",
        latex_table(
            scores,
            marked,
            f"Main score $\\times$100 ({data.name}); best per row in bold;"
            f" \\dag: different from {baseline} after Holm correction over the report's"
            f" {data.family.size} comparisons (p < 0.05).",
        ),
    ]
    for panel in data.lengths:
        table = panel.table[[p for p in data.poolings if p in panel.table]] * 100
        table.columns = [data.names[p] for p in table.columns]
        table.index = [f"{x:g}" for x in table.index]
        parts.append(
            latex_table(
                table,
                set(),
                f"{panel.label}: score $\\times$100 per document length"
                " in tokens; descriptive, not tested.",
            )
        )
    return "\n\n".join(parts) + "\n"
