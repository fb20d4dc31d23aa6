"""From a run directory to ``reports/<run>.md``: tables, significance, extrapolation and depth plots."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import LmkEvalError
from .files import atomic_write_text, check_writable_dir, check_writable_file, remove_tree
from .significance import (
    ALPHA,
    CI_NAME,
    CORRECTION,
    TEST_NAME,
    Comparison,
    adjust,
    bootstrap_ci,
    paired_test,
    seed_averaged,
)
from .store import CellRecord, RunStore

LENGTH_SPLIT = re.compile(r"^test_(\d+)$")
DEPTH_SPLIT = re.compile(r"^depth_(\d+)$")
ROW_KEYS = ["model", "task", "context", "max_length", "strategy"]
Names = Mapping[str, str]  # a variant's key -> its label, for display


@dataclass
class Panel:
    """One table (and plot panel) of scores by split value or length, for one report row."""

    label: str
    task: str  # the task it shows, whatever the label says (a published curve is looked up by it)
    table: pd.DataFrame
    xlabel: str | None = None  # when its x is not the plot's own (max_length instead of length)
    construction: str | None = None  # how its cells' data was built, when they all say the same


def _construction(group: pd.DataFrame) -> str | None:
    if "construction" not in group:
        return None
    values = group["construction"].unique()
    return values[0] if len(values) == 1 else None


def main_frame(records: list[CellRecord], root: Path) -> pd.DataFrame:
    """One row per (cell, split), keyed by the cell's typed fields: ``pooling`` is the variant's
    key (``Variant.key()``), ``label`` how it is shown; a checkpoint's row model is its [train]
    folder and its seed is its own."""
    rows = []
    for r in records:
        c, v = r.cell, r.variant
        construction = r.identity.data.get("construction") if r.identity else None
        for split, metrics in r.scores.items():
            rows.append({"model": c.row_model, "seed": c.seed, "task": r.task, "context": r.context,
                         "construction": construction,
                         "max_length": v.max_length, "strategy": v.reading(),
                         "pooling": v.key(), "label": v.label(), "split": split,
                         "score": metrics[r.main_score], "metric": r.main_score,
                         "per_query": r.per_query.get(split, {})})  # fmt: skip
    if not rows:
        raise LmkEvalError(f"no finished cells in '{root}'; nothing to report")
    return pd.DataFrame(rows)


def display_names(frame: pd.DataFrame) -> dict[str, str]:
    """Variant key -> label; labels show every differing option, so they never collide."""
    names = dict(zip(frame["pooling"], frame["label"], strict=True))
    if len(set(names.values())) != len(names):  # cannot happen while label() shows every option
        return {k: k for k in names}
    return names


def matched_seeds(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per row, keep only the seeds every pooling in it has, so that each pooling is averaged over
    the same training runs (an unfinished controlled sweep has one pooling a seed ahead). Returns
    the kept frame and what was left out, as "pooling seed N (tasks)"."""
    if not frame["seed"].notna().any():
        return frame, []
    keep = pd.Series(True, index=frame.index)
    left_out: dict[str, list[str]] = {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        seeds = [frozenset(s.dropna()) for _, s in group.groupby("pooling")["seed"]]
        common = frozenset.intersection(*seeds)
        extra = group[~group["seed"].isin(common)]
        if not common or extra.empty:  # nothing shared (nothing to match on) or nothing extra
            continue
        keep[extra.index] = False
        for label, seed in extra[["label", "seed"]].drop_duplicates().itertuples(index=False):
            left_out.setdefault(f"{label} seed {int(seed)}", []).append(key[1])
    notes = [f"{name} ({', '.join(dict.fromkeys(tasks))})" for name, tasks in left_out.items()]
    return frame[keep], notes


def _evaluated_as(pooling: str, train: dict) -> dict:
    from .train import TrainConfig, evaluation_pooling

    return evaluation_pooling(TrainConfig(eval_interval=train.get("eval_interval", 32)), pooling)


def pooling_order(frame: pd.DataFrame, baseline: str | None, sweep: dict) -> list[str]:
    """Variant keys: the baseline first, then the sweep's own order, then anything else the
    store holds."""
    from .variants import make_variant

    declared = []
    train = sweep.get("train") or {}
    for p in sweep.get("poolings", []) + [
        _evaluated_as(n, train) for n in train.get("poolings", [])
    ]:
        try:
            declared.append(make_variant(**p).key())
        except LmkEvalError:
            continue
    names = list(dict.fromkeys([*declared, *sorted(frame["pooling"].unique())]))
    names = [n for n in names if n in set(frame["pooling"])]
    return sorted(names, key=lambda p: (p != baseline, names.index(p)))


def _row_label(key: tuple, vary: dict[str, bool]) -> str:
    model, task, _context, max_length, strategy = key
    label = task
    if vary["max_length"] or vary["strategy"]:
        label += f" @{max_length}" + (f"/{strategy}" if vary["strategy"] else "")
    if vary["model"]:
        label = f"{model}: {label}"
    return label


def _fmt(value: float, bold: bool, mark: str = "", std: float | None = None) -> str:
    text = f"{value * 100:.1f}" + (f" ± {std * 100:.1f}" if std is not None else "") + mark
    return f"**{text}**" if bold else text


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pooled_queries(group: pd.DataFrame, pooling: str) -> dict[str, float]:
    """Per-query scores of one pooling across all splits of a row (keyed split/query), each
    query's score averaged over the seeds first: one observation per query, not per (seed, query)."""
    per_seed = []
    for _seed, rows in group[group["pooling"] == pooling].groupby("seed", dropna=False):
        scores: dict[str, float] = {}
        for split, per_query in zip(rows["split"], rows["per_query"], strict=True):
            scores.update({f"{split}/{q}": v for q, v in per_query.items()})
        per_seed.append(scores)
    return seed_averaged(per_seed)


def split_weights(keys: list[str] | set[str]) -> dict[str, float]:
    """Weights that make a mean over split/query keys the mean over splits of per-split means
    (how a multi-split task's main score is averaged), whatever each split's query count."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split("/", 1)[0]] = counts.get(k.split("/", 1)[0], 0) + 1
    return {k: 1.0 / (len(counts) * counts[k.split("/", 1)[0]]) for k in keys}


def _seed_std(group: pd.DataFrame, pooling: str) -> float | None:
    """Standard deviation over seeds of the split-averaged score, when there are several seeds."""
    rows = group[group["pooling"] == pooling]
    if rows["seed"].nunique() < 2:
        return None
    return float(rows.groupby("seed")["score"].mean().std())


def compare_rows(frame: pd.DataFrame, poolings: list[str], baseline: str):
    """Every pooling against the baseline on every row, Holm-adjusted as one family.
    Returns [(row label, pooling, Comparison)]."""
    vary = _varying(frame)
    found = []
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        if baseline not in set(group["pooling"]):
            continue
        base_q = _pooled_queries(group, baseline)
        for p in poolings:
            if p == baseline or p not in set(group["pooling"]):
                continue
            cand = _pooled_queries(group, p)
            cmp = paired_test(cand, base_q, split_weights(set(cand) & set(base_q)))
            if cmp.reported:
                found.append((_row_label(key, vary), p, cmp))
    adjusted = adjust([c for _, _, c in found])
    return [(row, p, c) for (row, p, _), c in zip(found, adjusted, strict=True)]


def main_table(
    frame: pd.DataFrame, poolings: list[str], comparisons: list[tuple[str, str, Comparison]],
    names: Names,
) -> str:
    """Per-row main score (mean over splits and seeds), best in bold, † where the Holm-adjusted
    difference from the baseline is significant."""
    vary = _varying(frame)
    marked = {(row, p) for row, p, c in comparisons if c.significant}
    rows, context_means = [], {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        means = group.groupby("pooling")["score"].mean()
        best = means.max()
        label = _row_label(key, vary)
        cells = [
            _fmt(means[p], means[p] == best, "†" if (label, p) in marked else "", _seed_std(group, p))
            if p in means
            else "–"
            for p in poolings
        ]
        rows.append([label, group["metric"].iloc[0], str(group["split"].nunique()), *cells])
        context_means.setdefault(key[2], []).append(means)
    for context, series in context_means.items():
        table = pd.concat(series, axis=1).reindex(poolings)
        complete = table.loc[:, table.notna().all()]  # rows every pooling has: a fair average
        if complete.shape[1] == 0:
            continue
        avg = complete.mean(axis=1)
        best = avg.max()
        label = f"*{context}-context average*"
        if complete.shape[1] < table.shape[1]:
            label = f"*{context}-context average over the {complete.shape[1]} of {table.shape[1]} rows every pooling has*"
        rows.append([label, "", str(complete.shape[1]),
                     *[_fmt(avg[p], avg[p] == best) for p in poolings]])  # fmt: skip
    return _markdown_table(["task", "metric", "splits", *(names[p] for p in poolings)], rows)


def interval_table(frame: pd.DataFrame, poolings: list[str], names: Names) -> str | None:
    """Each main score's 95% bootstrap interval over (seed-averaged) queries."""
    vary = _varying(frame)
    rows = []
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        cells = []
        for p in poolings:
            scores = _pooled_queries(group, p) if p in set(group["pooling"]) else {}
            ci = bootstrap_ci(scores, split_weights(set(scores))) if scores else None
            cells.append(f"{ci[0] * 100:.1f} – {ci[1] * 100:.1f}" if ci else "–")
        rows.append([_row_label(key, vary), str(len(_pooled_queries(group, poolings[0])) or "–"), *cells])
    if all(c == "–" for r in rows for c in r[2:]):
        return None
    return _markdown_table(["task", "queries", *(names[p] for p in poolings)], rows)


def _ci(c: Comparison) -> str:
    return f" (95% CI {c.ci[0] * 100:+.1f} to {c.ci[1] * 100:+.1f})" if c.ci else ""


def _tested(c: Comparison) -> str:
    """A comparison's numbers, or why it was not tested (a non-finite side: no p, no †)."""
    if c.p_value is None:
        return f"not tested ({c.untested}), n={c.n} queries"
    return (f"Δ={c.mean_diff * 100:+.1f}{_ci(c)}, p={c.p_value:.3g}, Holm-adjusted p={c.p_adjusted:.3g}"
            f"{' †' if c.significant else ''}, n={c.n} queries")  # fmt: skip


def strategy_lines(found: list[tuple[str, Comparison]]) -> list[str]:
    return [f"{label}: {_tested(c)}" for label, c in found]


def significance_lines(comparisons: list[tuple[str, str, Comparison]], baseline: str,
                       names: Names) -> list[str]:  # fmt: skip
    out = []
    for row, p, c in comparisons:
        out.append(f"{row}: {names[p]} vs {names[baseline]}: {_tested(c)}")
    return out


def seed_table(frame: pd.DataFrame, poolings: list[str], names: Names) -> str | None:
    """Main score of every stored checkpoint, one row per (task row, seed): seed-to-seed spread,
    and the seeds an unfinished sweep holds for only some poolings."""
    seeded = frame[frame["seed"].notna()]
    if seeded["seed"].nunique() < 2:
        return None
    vary = _varying(frame)
    rows = []
    for key, group in seeded.groupby(ROW_KEYS, sort=False):
        means = group.groupby(["seed", "pooling"])["score"].mean()
        for seed in sorted(group["seed"].unique()):
            rows.append([_row_label(key, vary), str(int(seed)),
                         *[_fmt(means[seed, p], False) if (seed, p) in means else "–"
                           for p in poolings]])  # fmt: skip
    return _markdown_table(["task", "seed", *(names[p] for p in poolings)], rows)


def _varying(frame: pd.DataFrame) -> dict[str, bool]:
    return {k: frame[k].nunique() > 1 for k in ("model", "max_length", "strategy")}


def split_pivots(frame: pd.DataFrame, pattern: re.Pattern, scale: float) -> list[Panel]:
    """Per row key, score by split value (length in tokens or depth fraction) x pooling."""
    vary = _varying(frame)
    out = []
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        matched = group[group["split"].str.match(pattern)]
        if not matched.empty:
            x = matched["split"].str.extract(pattern)[0].astype(float) * scale
            table = matched.assign(x=x).pivot_table(index="x", columns="pooling", values="score")
            out.append(Panel(_row_label(key, vary), key[1], table.sort_index(),
                             construction=_construction(matched)))  # fmt: skip
    return out


BANDS = ((0, 512, "<= 512"), (513, 2048, "1,024-2,048"), (2049, 10**9, ">= 4,096"))


def reference_strategy(frame: pd.DataFrame) -> str:
    """What other strategies are compared with: the model's own reading (truncate), else windows."""
    present = set(frame["strategy"])
    return next((s for s in ("truncate", "window") if s in present), sorted(present)[0])


def _reading(frame: pd.DataFrame) -> pd.Series:
    """How each row read its documents: the strategy, with its max_length where the frame has
    several (truncate@256 and truncate@512 are two readings, never averaged into one)."""
    if frame["max_length"].nunique() < 2:
        return frame["strategy"]
    return frame["strategy"] + "@" + frame["max_length"].astype(str)


def strategy_pivots(frame: pd.DataFrame) -> list[Panel]:
    """Per (model, task): score by document length x (pooling, reading), for one panel each."""
    vary = _varying(frame)
    out = []
    for (model, task), group in frame.groupby(["model", "task"], sort=False):
        matched = group[group["split"].str.match(LENGTH_SPLIT)]
        if matched.empty or matched["strategy"].nunique() < 2:
            continue
        x = matched["split"].str.extract(LENGTH_SPLIT)[0].astype(float)
        table = matched.assign(x=x, reading=_reading(matched)).pivot_table(
            index="x", columns=["pooling", "reading"], values="score"
        )
        out.append(Panel(f"{model}: {task}" if vary["model"] else task, task, table.sort_index(),
                         construction=_construction(matched)))  # fmt: skip
    return out


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
    return _markdown_table(["task", "pooling", *[b[2] + " tokens" for b in BANDS]], rows)


def _reference_length(lengths: list[int], length: int) -> int | None:
    """The reference strategy's max_length a candidate at ``length`` is paired with: the same, else
    the longest below it (truncate stops at the model's positions), else none."""
    if length in lengths:
        return length
    below = [n for n in lengths if n < length]
    return max(below) if below else None


def compare_strategies(frame: pd.DataFrame, poolings: list[str], names: Names):
    """Every other strategy against the reference one at a paired max_length (see
    ``_reference_length``), per (model, task, pooling): [(label naming both lengths, Comparison)]."""
    if frame["strategy"].nunique() < 2:
        return []
    reference = reference_strategy(frame)
    vary = _varying(frame)
    out = []
    for (model, task), group in frame.groupby(["model", "task"], sort=False):
        ref_rows = group[group["strategy"] == reference]
        ref_lengths = sorted(int(n) for n in ref_rows["max_length"].unique())
        for pooling in poolings:
            for (strategy, length), rows in group[group["strategy"] != reference].groupby(
                ["strategy", "max_length"], sort=False
            ):
                ref_length = _reference_length(ref_lengths, int(length))
                if ref_length is None:
                    continue
                cmp = _paired(rows, ref_rows[ref_rows["max_length"] == ref_length], pooling)
                if cmp is not None:
                    name = f"{model}: {task}" if vary["model"] else task
                    out.append((f"{name}: {names[pooling]} {strategy}@{length} vs {reference}@{ref_length}", cmp))
    return out


def _paired(candidate: pd.DataFrame, base: pd.DataFrame, pooling: str) -> Comparison | None:
    """One pooling's paired test of two readings' rows on their common queries (None: untestable)."""
    cand, ref = _pooled_queries(candidate, pooling), _pooled_queries(base, pooling)
    if not cand or not ref:
        return None
    cmp = paired_test(cand, ref, split_weights(set(cand) & set(ref)))
    return cmp if cmp.reported else None


def compare_scales(frame: pd.DataFrame, poolings: list[str], names: Names):
    """Every reading with an attention scale (``grouped+logn``) against the same strategy without
    one (``grouped``), per (model, task, max_length, pooling): [(label, Comparison)]."""
    scaled = frame[frame["strategy"].str.contains("+", regex=False)]
    if scaled.empty:
        return []
    vary = _varying(frame)
    out = []
    for (model, task, length, reading), rows in scaled.groupby(["model", "task", "max_length", "strategy"], sort=False):
        plain = reading.split("+")[0]
        base_rows = frame[(frame["model"] == model) & (frame["task"] == task) & (frame["max_length"] == length)
                          & (frame["strategy"] == plain)]  # fmt: skip
        for pooling in poolings:
            cmp = _paired(rows, base_rows, pooling)
            if cmp is not None:
                name = f"{model}: {task}" if vary["model"] else task
                out.append((f"{name}: {names[pooling]} {reading}@{length} vs {plain}@{length}", cmp))
    return out


def reference_for(panel: Panel) -> dict | None:
    """The published curve a panel's bundled task is calibrated against, if its cells were
    computed on that calibrated construction (cells that record none, or another, get none)."""
    from .task_registry import reference_curve

    return reference_curve(panel.task, panel.construction)


def split_tables(panels: list[Panel], poolings: list[str], column: str,
                 names: Names) -> list[tuple[str, str]]:  # fmt: skip
    """The panels as markdown, splits as rows, best per row in bold; a bundled task calibrated
    against a published curve gets that curve as a last column."""
    out = []
    for panel in panels:
        table = panel.table
        reference = reference_for(panel) if column == "length" else None
        rows = []
        for x, r in table.iterrows():
            best = r.max()
            cells = [_fmt(r[p], r[p] == best) if p in r else "–" for p in poolings]
            if reference:
                cells.append(str(reference["scores"].get(int(x), "–")))
            rows.append([f"{x:g}", *cells])
        header = [column, *(names[p] for p in poolings)]
        header += [f"published: {reference['label']}"] if reference else []
        out.append((panel.label, _markdown_table(header, rows)))
    return out


def max_length_pivots(frame: pd.DataFrame) -> list[Panel]:
    """Single-split tasks run at several max_lengths: score against max_length."""
    vary = _varying(frame)
    out = []
    for (model, task, strategy), group in frame.groupby(["model", "task", "strategy"], sort=False):
        if group["max_length"].nunique() > 1 and group["split"].nunique() == 1:
            label = f"{task}/{strategy}" if vary["strategy"] else task
            label = f"{model}: {label}" if vary["model"] else label
            table = group.pivot_table(index="max_length", columns="pooling", values="score")
            out.append(Panel(f"{label} (max_length)", task, table, "max_length (tokens)"))
    return out


def plot(series: list[Panel], poolings: list[str], names: Names, path: Path, *, xlabel: str,
         ylabel: str, log2: bool, title: str) -> Path | None:  # fmt: skip
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    markers = "osD^v<>ph*"
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes.flat, series, strict=False):
        table = panel.table
        if isinstance(table.columns, pd.MultiIndex):  # (pooling, reading): colour = reading
            strategies = list(dict.fromkeys(table.columns.get_level_values(1)))
            for pooling, strategy in table.columns:
                i = poolings.index(pooling) if pooling in poolings else 0
                ax.plot(table.index, table[(pooling, strategy)] * 100, color=f"C{strategies.index(strategy)}",
                        linestyle=styles[i % len(styles)], marker=markers[i % len(markers)], markersize=4,
                        label=f"{names[pooling]} · {strategy}")  # fmt: skip
        for i, p in enumerate(x for x in poolings if x in table.columns and not isinstance(table.columns, pd.MultiIndex)):
            ax.plot(table.index, table[p] * 100, marker=markers[i % len(markers)], label=names[p])
        reference = reference_for(panel) if log2 else None
        if reference:
            xs = [x for x in table.index if int(x) in reference["scores"]]
            ax.plot(xs, [reference["scores"][int(x)] for x in xs], color="grey", linestyle="--",
                    label="published (LongEmbed, MiniLM mean@256)")  # fmt: skip
        if log2:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(table.index))
            ax.set_xticklabels([f"{int(x)}" for x in table.index], rotation=45)
        ax.set_title(panel.label, fontsize=10)
        ax.set_xlabel(panel.xlabel or xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    _legend_below(fig, axes, panel_height=3.6 * rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _legend_below(fig, axes, panel_height: float) -> None:
    """One legend for all panels, below them, so that no line is hidden behind it."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if not handles:
        fig.tight_layout()
        return
    ncol = min(len(handles), 4)
    legend_height = 0.22 * -(-len(handles) // ncol) + 0.1  # inches: a row per ncol labels
    fig.set_size_inches(fig.get_size_inches()[0], panel_height + legend_height)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (panel_height + legend_height), 1, 1))


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
    return [
        "## Compute",
        "",
        "Wall time measured per cell (encoding + mteb scoring) and per trained checkpoint, summed;"
        " a run interrupted and resumed counts only the work it kept."
        + (f" {untimed} cell(s) from older runs carry no timing." if untimed else ""),
        "",
        _markdown_table(["step", "cells / checkpoints", "wall time"], rows),
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
    for key in ("package", "repo", "commit", "content", "files", "construction", "dataset"):
        if key in identity:
            value = identity[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif key in ("commit", "content", "files"):
                value = f"`{str(value)[:12]}`"
            parts.append(f"{key} {value}")
    if identity.get("kind") == "checkpoint":
        t = identity["training"]
        parts.append(f"trained from base ({_short(t['base'])}) on data `{str(t['data'])[:12]}`,"
                     f" {t['steps']} steps, seed {t['seed']} (training hash in the checkpoint name)")  # fmt: skip
    return f"{identity.get('kind', '?')}: " + "; ".join(parts)


def _dtypes(records: list[CellRecord]) -> str:
    found = sorted({r.identity.encoding.get("dtype", "float32") if r.identity else "float32"
                    for r in records})  # fmt: skip
    legacy = any(r.identity is None for r in records)
    return ", ".join(found) + (" (older cells do not record it: lmk-eval then ran float32 only)"
                               if legacy else "")  # fmt: skip


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
        produced.add(", ".join(f"{k} {v}" for k, v in sorted(r.produced_by.items())))
    lines = ["## Provenance", ""]
    if legacy:
        lines += [f"{len(legacy)} of {len(records)} cells were written before lmk-eval recorded"
                  " provenance: their model and data are known by name only.", ""]  # fmt: skip
    if models_seen:
        lines += ["Each cell records what produced it (`cell.json`, key `identity`); a stored cell"
                  " is reused only while all of it is unchanged.", ""]  # fmt: skip
        lines += [f"- model `{m}`: {v}" for m, v in models_seen.items()]
        lines += [f"- encoding of {m}: {v}" for m, v in encodings.items()]
        lines += [f"- task {t}: data {v}" for t, v in tasks_seen.items()]
        lines += [f"- scoring: {v}" for v in sorted(scoring)]
        lines += [f"- computed by: {v}" for v in sorted(produced)]
        lines += [""]
    return lines if (legacy or models_seen) else []


def zero_grade_line(records: list[CellRecord]) -> list[str]:
    """The settings line naming queries whose judgements are all grade 0 (scored 0, as mteb does)."""
    seen = {(r.task, split): f"{r.task} {split} {n} of {len(r.per_query.get(split, {})) or '?'}"
            for r in records for split, n in r.zero_grade_queries.items()}  # fmt: skip
    if not seen:
        return []
    return ["- queries that judge no document relevant (only grade-0 judgements), kept and scored 0"
            f" as mteb scores them: {'; '.join(seen[k] for k in sorted(seen))}"]  # fmt: skip


def report_paths(run_dir: Path, reports_dir: Path) -> tuple[Path, Path]:
    """The report's markdown file and its folder of figures."""
    return reports_dir / f"{run_dir.name}.md", reports_dir / run_dir.name


def check_report_paths(run_dir: Path, reports_dir: Path) -> None:
    """Refuse now, before any work, a report that could not be written."""
    markdown, assets = report_paths(run_dir, reports_dir)
    check_writable_dir(reports_dir, "report folder")
    check_writable_file(markdown, "report")
    check_writable_dir(assets, "report's figure folder")


def write_report(run_dir: Path, reports_dir: Path, baseline: str | None = None) -> Path:
    """Write the report; a failure (a full disk) leaves none of the folders it created, nor the
    figures it drew into them."""
    created = [p for p in (reports_dir, report_paths(run_dir, reports_dir)[1]) if not p.exists()]
    try:
        return _write_report(run_dir, reports_dir, baseline)
    except BaseException:
        if created:
            remove_tree(created[0])  # holds only what this call wrote
        raise


def _write_report(run_dir: Path, reports_dir: Path, baseline: str | None = None) -> Path:
    from .sweep import resolve_baseline

    store = RunStore(run_dir)
    if not store.cells_dir.is_dir():
        raise LmkEvalError(
            f"'{run_dir}' is not a run directory (no cells/); run `lmk-eval run` first"
        )
    check_report_paths(run_dir, reports_dir)
    sweep = store.sweep() or {}
    training = store.training_records()
    records = store.records(training)  # read once
    every_seed = main_frame(records, store.root)
    names = display_names(every_seed)
    variants = {r.variant.key(): r.variant for r in records}
    declared = pooling_order(every_seed, None, sweep)
    baseline = resolve_baseline(baseline or sweep.get("baseline"), [variants[k] for k in declared])
    frame, unmatched = matched_seeds(every_seed)
    poolings = sorted(declared, key=lambda p: p != baseline)  # stable: the baseline first
    name = run_dir.name
    assets = reports_dir / name
    comparisons = compare_rows(frame, poolings, baseline)
    by_strategy = compare_strategies(frame, poolings, names)
    by_scale = compare_scales(frame, poolings, names)
    family = adjust([c for _, _, c in comparisons] + [c for _, c in by_strategy + by_scale])  # one Holm family
    comparisons = [(r, p, c) for (r, p, _), c in zip(comparisons, family, strict=False)]
    rest = [(label, c) for (label, _), c in zip(by_strategy + by_scale, family[len(comparisons):], strict=True)]
    by_strategy, by_scale = rest[: len(by_strategy)], rest[len(by_strategy) :]
    family_size = sum(c.p_value is not None for c in family)  # the untested carry no p-value
    table = main_table(frame, poolings, comparisons, names)
    intervals = interval_table(frame, poolings, names)
    lengths = split_pivots(frame, LENGTH_SPLIT, 1)
    depths = split_pivots(frame, DEPTH_SPLIT, 0.01)
    panels = strategy_pivots(frame) or [*lengths, *max_length_pivots(frame)]
    length_plot = plot(panels, poolings, names, assets / "length.png",
                       xlabel="document length (tokens)", ylabel="main score ×100", log2=True,
                       title="Length extrapolation")  # fmt: skip
    depth_plot = plot(depths, poolings, names, assets / "depth.png",
                      xlabel="needle depth (fraction of document)", ylabel="nDCG@1 ×100",
                      log2=False, title="Evidence depth")  # fmt: skip
    seeded = frame["seed"].notna().any()
    parts = [
        f"# lmk-eval report: {name}",
        "",
        *([sweep["description"], ""] if sweep.get("description") else []),
        *unfinished_note(store, records, training),
        "## Settings",
        "",
        f"- models: {', '.join(sorted(frame['model'].unique()))}"
        + (
            f"; seeds: {', '.join(str(int(x)) for x in sorted(frame['seed'].dropna().unique()))}"
            " (scores are means over seeds, ± their standard deviation)"
            if seeded
            else ""
        ),
        f"- poolings: {', '.join(names[p] for p in poolings)} (baseline for significance:"
        f" `{names[baseline]}`)",
        f"- tasks: {', '.join(dict.fromkeys(frame['task']))}",
        *zero_grade_line(records),
        f"- dtype: {_dtypes(records)} (pooling, normalisation and scoring in float32)",
        f"- max_length: {', '.join(map(str, sorted(frame['max_length'].unique())))};"
        f" strategy: {', '.join(sorted(frame['strategy'].unique()))}",
        f"- cells: {frame.groupby(ROW_KEYS + ['pooling', 'seed'], dropna=False).ngroups};"
        f" run directory: `{run_dir}`;"
        f" written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "## Main scores",
        "",
        "Main score ×100 (mean over a task's splits, as LongEmbed averages over lengths"
        + (", and over seeds" if seeded else "")
        + f"). Best per row in **bold**; † marks a difference from `{names[baseline]}` that stays"
        f" significant (p < {ALPHA}) after {CORRECTION} correction over all"
        f" {family_size} comparisons of this report (see Significance).",
        "",
        *(
            [
                "Seeds not yet run for every pooling of a row are left out of every table, plot"
                " and test below, so that each pooling is averaged over the same seeds (the store"
                f" keeps them): {'; '.join(unmatched)}.",
                "",
            ]
            if unmatched
            else []
        ),
        table,
        "",
    ]
    if intervals:
        parts += ["95% confidence intervals of the main scores ×100: " + CI_NAME
                  + (", each query's score averaged over seeds first" if seeded else "") + ".",
                  "", intervals, ""]  # fmt: skip
    per_seed = seed_table(every_seed, poolings, names)
    if per_seed:
        parts += ["## Per seed", "", "Main score ×100 of every stored checkpoint (mean over a task's"
                  " splits), seeds left out above included.", "", per_seed, ""]  # fmt: skip
    length_tables = split_tables(lengths, poolings, "length", names)
    if length_plot or length_tables:
        parts += ["## Length extrapolation", ""]
        if length_plot:
            parts += [f"![length extrapolation]({name}/length.png)", ""]
        best = best_strategy_table(frame, poolings, names)
        if best:
            parts += ["Each pooling's best strategy per document-length band (mean score ×100 over the"
                      " band's lengths; the strategies read up to the max_length of their row; strategies that tie are"
                      " joined by =):", "",
                      best, ""]  # fmt: skip
        for label, t in length_tables:
            parts += [f"**{label}** (score ×100 per document length in tokens)", "", t, ""]
    depth_tables = split_tables(depths, poolings, "depth", names)
    if depth_plot:
        parts += ["## Evidence depth", "",
                  "Needle placed at a fixed fraction of each document (0 = first word, 1 = last).",
                  "", f"![evidence depth]({name}/depth.png)", ""]  # fmt: skip
        for label, t in depth_tables:
            parts += [f"**{label}**", "", t, ""]
    if by_scale:
        parts += ["## Attention scale", "",
                  "Each reading with an attention scale against the same strategy without one (same pooling,"
                  " model, task and max_length), on per-query main scores: Δ ×100 with the"
                  f" {CI_NAME} of the paired differences; p from {TEST_NAME}, Holm-adjusted within the"
                  " report's one family (see Significance). `logn` multiplies the queries of an input of n > P"
                  " tokens by ln n / ln P (LongEmbed), `temperature:T` by 1 / T (TempScale); inputs that fit are"
                  " untouched, so splits at or below the model's positions contribute differences of 0.", ""]  # fmt: skip
        parts += [f"- {line}" for line in strategy_lines(by_scale)] + [""]
    if comparisons or by_strategy or by_scale:
        parts += [
            "## Significance",
            "",
            f"Each pooling against `{names[baseline]}` on every row of the main table: {TEST_NAME},"
            " on per-query main scores"
            + (" with each query's score first averaged over seeds (n counts queries, not"
               " seed x query pairs)" if seeded else "")
            + "; a task with several splits weighs each split equally. Its Δ interval is the"
            f" {CI_NAME} of the paired differences."
            + (f" Each other strategy is also compared with `{reference_strategy(frame)}` for the same"
               " pooling, model and task, at the same max_length or, where it has none (truncate"
               " stops at the model's positions), at its longest one below; each line names both."
               if by_strategy else "")
            + (" Each reading with an attention scale is also compared with the same strategy without"
               " it; those lines are under Attention scale." if by_scale else "")
            + f" The {family_size} p-values form one family, adjusted by {CORRECTION}; † = adjusted"
            f" p < {ALPHA}. Per-length and per-depth tables are descriptive and are not tested.",
            "",
        ]  # fmt: skip
        parts += [f"- {n}" for n in significance_lines(comparisons, baseline, names)]
        parts += [f"- {n}" for n in strategy_lines(by_strategy)] + [""]
    parts += compute_section(records, training)
    parts += provenance_section(records)
    path = reports_dir / f"{name}.md"
    atomic_write_text(path, "\n".join(parts))
    return path
