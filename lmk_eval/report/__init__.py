"""From a run directory to ``reports/<run>.md``: tables, significance, extrapolation and depth plots.

One way through: the store's typed records -> tidy frames (``frames``) -> the report's one family
of comparisons (``stats``) -> a computed ``ReportData`` -> figures (``plots``) and markdown, one
renderer per section (``markdown``, ``tables``, ``sections``).
"""

from __future__ import annotations

from pathlib import Path

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.files import (
    atomic_write_text,
    check_writable_dir,
    check_writable_file,
    remove_tree,
)
from lmk_eval.report.data import ReportData, report_data
from lmk_eval.report.frames import main_frame, matched_seeds, part_weights, strategy_pivots
from lmk_eval.report.markdown import render
from lmk_eval.report.plots import draw
from lmk_eval.report.sections import remaining_seconds
from lmk_eval.report.stats import compare_rows, compare_scales, compare_strategies
from lmk_eval.report.tables import best_strategy_table, main_table, seed_table
from lmk_eval.store.cells import RunStore

__all__ = [
    "ReportData",
    "best_strategy_table",
    "check_report_paths",
    "compare_rows",
    "compare_scales",
    "compare_strategies",
    "main_frame",
    "main_table",
    "matched_seeds",
    "remaining_seconds",
    "report_data",
    "report_paths",
    "seed_table",
    "part_weights",
    "strategy_pivots",
    "write_report",
]


def report_paths(run_dir: Path, reports_dir: Path) -> tuple[Path, Path]:
    """The report's markdown file and its folder of figures."""
    return reports_dir / f"{run_dir.name}.md", reports_dir / run_dir.name


def check_report_paths(run_dir: Path, reports_dir: Path) -> None:
    """Refuse now, before any work, a report that could not be written."""
    markdown, assets = report_paths(run_dir, reports_dir)
    check_writable_dir(reports_dir, "report folder")
    check_writable_file(markdown, "report")
    check_writable_dir(assets, "report's figure folder")


def write_report(
    run_dir: Path, reports_dir: Path, baseline: str | None = None, latex: bool = False
) -> Path:
    """Write the report (and with ``latex`` its tables as ``<run>.tex`` beside it); a failure (a
    full disk) leaves none of the folders it created, nor the figures it drew into them."""
    markdown, assets = report_paths(run_dir, reports_dir)
    created = [p for p in (reports_dir, assets) if not p.exists()]
    try:
        store = RunStore(run_dir)
        if not store.cells_dir.is_dir():
            raise LmkEvalError(
                f"'{run_dir}' is not a run directory (no cells/); run `lmk-eval run` first"
            )
        check_report_paths(run_dir, reports_dir)
        data = report_data(store, baseline)
        text = render(data, draw(data, assets))
        if latex:
            from lmk_eval.report.latex import render_latex

            atomic_write_text(markdown.with_suffix(".tex"), render_latex(data))
        atomic_write_text(markdown, text)
        return markdown
    except BaseException:
        if created:
            remove_tree(created[0])  # holds only what this call wrote
        raise
