"""From a run directory to ``reports/<run>.md``: tables, significance, extrapolation and depth plots."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from .significance import ALPHA, TEST_NAME, paired_test
from .store import CellRecord, RunStore, atomic_write_text
from .sweep import Cell
from .variants import LmkEvalError

LENGTH_SPLIT = re.compile(r"^test_(\d+)$")
DEPTH_SPLIT = re.compile(r"^depth_(\d+)$")
ROW_KEYS = ["model", "task", "context", "max_length", "strategy"]
CHECKPOINT = re.compile(r"^(?:(?P<root>.*)/)?(?P<pooling>[a-z_]+)-seed(?P<seed>\d+)$")


def split_checkpoint(model: str) -> tuple[str, int | None]:
    """``runs/x/lmk-seed2`` -> (``runs/x``, 2): matched checkpoints of a controlled sweep share a row."""
    m = CHECKPOINT.match(model.removeprefix("local/"))
    if m is None:
        return model, None
    return m.group("root") or "checkpoints", int(m.group("seed"))


def main_frame(records: list[CellRecord], root: Path) -> pd.DataFrame:
    rows = []
    for r in records:
        c = r.cell
        model, seed = split_checkpoint(c["model"])
        for split, metrics in r.scores.items():
            rows.append({"model": model, "seed": seed, "task": r.task, "context": r.context,
                         "max_length": c["max_length"], "strategy": c["strategy"],
                         "pooling": c["pooling"], "split": split,
                         "score": metrics[r.main_score], "metric": r.main_score,
                         "per_query": r.per_query.get(split, {})})  # fmt: skip
    if not rows:
        raise LmkEvalError(f"no finished cells in '{root}'; nothing to report")
    return pd.DataFrame(rows)


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
        for pooling, seed in extra[["pooling", "seed"]].drop_duplicates().itertuples(index=False):
            left_out.setdefault(f"{pooling} seed {int(seed)}", []).append(key[1])
    notes = [f"{name} ({', '.join(dict.fromkeys(tasks))})" for name, tasks in left_out.items()]
    return frame[keep], notes


def _evaluated_as(pooling: str, train: dict) -> dict:
    from .train import TrainConfig, evaluation_pooling

    return evaluation_pooling(TrainConfig(eval_interval=train.get("eval_interval", 32)), pooling)


def pooling_order(frame: pd.DataFrame, baseline: str, sweep: dict) -> list[str]:
    """Baseline first, then the sweep's own order, then anything else the store holds."""
    from .variants import make_variant

    declared = []
    train = sweep.get("train") or {}
    for p in sweep.get("poolings", []) + [
        _evaluated_as(n, train) for n in train.get("poolings", [])
    ]:
        try:
            declared.append(make_variant(**p).label())
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
    """Per-query scores of one pooling across all splits of a row, keyed split/query."""
    out = {}
    for _, r in group[group["pooling"] == pooling].iterrows():
        out.update({f"{r['seed']}/{r['split']}/{q}": v for q, v in r["per_query"].items()})
    return out


def _seed_std(group: pd.DataFrame, pooling: str) -> float | None:
    """Standard deviation over seeds of the split-averaged score, when there are several seeds."""
    rows = group[group["pooling"] == pooling]
    if rows["seed"].nunique() < 2:
        return None
    return float(rows.groupby("seed")["score"].mean().std())


def main_table(frame: pd.DataFrame, poolings: list[str], baseline: str) -> tuple[str, list[str]]:
    """Per-row main score (mean over splits), best in bold, † where significantly != baseline."""
    vary = _varying(frame)
    rows, notes, context_means = [], [], {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        means = group.groupby("pooling")["score"].mean()
        best = means.max()
        cells = []
        base_q = _pooled_queries(group, baseline) if baseline in means else {}
        for p in poolings:
            if p not in means:
                cells.append("–")
                continue
            mark = ""
            if base_q and p != baseline:
                cmp = paired_test(_pooled_queries(group, p), base_q)
                if cmp.significant:
                    mark = "†"
                if cmp.p_value is not None:
                    notes.append(f"{_row_label(key, vary)}: {p} vs {baseline}: Δ={cmp.mean_diff * 100:+.1f},"
                                 f" p={cmp.p_value:.3g}, n={cmp.n}")  # fmt: skip
            cells.append(_fmt(means[p], means[p] == best, mark, _seed_std(group, p)))
        splits = group["split"].nunique()
        rows.append([_row_label(key, vary), group["metric"].iloc[0], str(splits), *cells])
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
    return _markdown_table(["task", "metric", "splits", *poolings], rows), notes


def seed_table(frame: pd.DataFrame, poolings: list[str]) -> str | None:
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
    return _markdown_table(["task", "seed", *poolings], rows)


def _varying(frame: pd.DataFrame) -> dict[str, bool]:
    return {k: frame[k].nunique() > 1 for k in ("model", "max_length", "strategy")}


def split_pivots(frame: pd.DataFrame, pattern: re.Pattern, scale: float) -> dict[str, pd.DataFrame]:
    """Per row key, score by split value (length in tokens or depth fraction) x pooling."""
    vary = _varying(frame)
    out = {}
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        matched = group[group["split"].str.match(pattern)]
        if not matched.empty:
            x = matched["split"].str.extract(pattern)[0].astype(float) * scale
            table = matched.assign(x=x).pivot_table(index="x", columns="pooling", values="score")
            out[_row_label(key, vary)] = table.sort_index()
    return out


def split_tables(
    pivots: dict[str, pd.DataFrame], poolings: list[str], column: str
) -> list[tuple[str, str]]:
    """The pivots as markdown, splits as rows, best per row in bold."""
    out = []
    for label, table in pivots.items():
        rows = []
        for x, r in table.iterrows():
            best = r.max()
            rows.append(
                [f"{x:g}", *[_fmt(r[p], r[p] == best) if p in r else "–" for p in poolings]]
            )
        out.append((label, _markdown_table([column, *poolings], rows)))
    return out


def max_length_pivots(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Single-split tasks run at several max_lengths: score against max_length."""
    vary = _varying(frame)
    out = {}
    for (model, task, strategy), group in frame.groupby(["model", "task", "strategy"], sort=False):
        if group["max_length"].nunique() > 1 and group["split"].nunique() == 1:
            label = f"{task}/{strategy}" if vary["strategy"] else task
            label = f"{model}: {label}" if vary["model"] else label
            out[f"{label} (max_length)"] = group.pivot_table(
                index="max_length", columns="pooling", values="score"
            )
    return out


def plot(series: dict[str, pd.DataFrame], poolings: list[str], path: Path, *, xlabel: str,
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
    for ax, (name, table) in zip(axes.flat, series.items(), strict=False):
        for i, p in enumerate(x for x in poolings if x in table.columns):
            ax.plot(table.index, table[p] * 100, marker=markers[i % len(markers)], label=p)
        if log2:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(table.index))
            ax.set_xticklabels([f"{int(x)}" for x in table.index], rotation=45)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("max_length (tokens)" if "(max_length)" in name else xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


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
    from .sweep import plan, sweep_from_dict

    saved = {k: v for k, v in (store.sweep() or {}).items() if v is not None}
    if not saved:
        return []
    try:
        cells = [c for g in plan(sweep_from_dict(saved, store.root.name)) for c in g.cells]
    except LmkEvalError:  # e.g. hub tasks offline: the plan cannot be rebuilt here
        return []
    planned: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    missing_cells = [c for c in cells if not store.has(c)]
    for c in cells:
        planned.setdefault(Path(c.model).name, []).append(c.task)
    for c in missing_cells:
        missing.setdefault(Path(c.model).name, []).append(c.task)
    if not missing:
        return []
    what = "; ".join(
        f"{m}: {'all' if tasks == planned[m] else ', '.join(tasks)}" for m, tasks in missing.items()
    )
    remaining = remaining_seconds(records, training, missing_cells, trains="train" in saved)
    estimate = (
        f" At this run's own measured mean per cell (and per trained checkpoint) the rest needs"
        f" about {_duration(remaining)}."
        if remaining is not None
        else ""
    )
    return [
        f"**Unfinished run: {len(cells) - len(missing_cells)} of {len(cells)} planned cells are in"
        f" the store.** Missing: {what}. Running the same command again resumes it.{estimate}",
        "",
    ]


def remaining_seconds(
    records: list[CellRecord], trained: dict[str, dict], missing: list[Cell], trains: bool
) -> float | None:
    """The missing cells (and checkpoints still to train) priced at the measured mean of their
    kind; None when some kind was never timed, since a guess would read as a measurement."""
    timed = _timed_cells(records, lambda r: (r.task, r.cell["max_length"], r.cell["strategy"]))
    seconds = 0.0
    for cell in missing:
        key = (cell.task, cell.variant.max_length, cell.variant.strategy)
        if key not in timed:
            return None
        seconds += statistics.mean(timed[key])
    untrained = {Path(c.model).name for c in missing} - set(trained) if trains else set()
    if untrained and not trained:
        return None
    if untrained:
        seconds += len(untrained) * statistics.mean(t["seconds"] for t in trained.values())
    return seconds


def write_report(run_dir: Path, reports_dir: Path, baseline: str | None = None) -> Path:
    store = RunStore(run_dir)
    if not store.cells_dir.is_dir():
        raise LmkEvalError(
            f"'{run_dir}' is not a run directory (no cells/); run `lmk-eval run` first"
        )
    sweep = store.sweep() or {}
    baseline = baseline or sweep.get("baseline", "cls")
    records, training = store.records(), store.training_records()  # read once
    every_seed = main_frame(records, store.root)
    frame, unmatched = matched_seeds(every_seed)
    poolings = pooling_order(every_seed, baseline, sweep)
    name = run_dir.name
    assets = reports_dir / name
    table, notes = main_table(frame, poolings, baseline)
    lengths = split_pivots(frame, LENGTH_SPLIT, 1)
    depths = split_pivots(frame, DEPTH_SPLIT, 0.01)
    length_plot = plot({**lengths, **max_length_pivots(frame)}, poolings, assets / "length.png",
                       xlabel="document length (tokens)", ylabel="main score ×100", log2=True,
                       title="Length extrapolation")  # fmt: skip
    depth_plot = plot(depths, poolings, assets / "depth.png",
                      xlabel="needle depth (fraction of document)", ylabel="nDCG@1 ×100",
                      log2=False, title="Evidence depth")  # fmt: skip
    parts = [
        f"# lmk-eval report: {name}",
        "",
        sweep.get("description", ""),
        "",
        *unfinished_note(store, records, training),
        "## Settings",
        "",
        f"- models: {', '.join(sorted(frame['model'].unique()))}"
        + (
            f"; seeds: {', '.join(str(int(x)) for x in sorted(frame['seed'].dropna().unique()))}"
            " (scores are means over seeds, ± their standard deviation)"
            if frame["seed"].notna().any()
            else ""
        ),
        f"- poolings: {', '.join(poolings)} (baseline for significance: `{baseline}`)",
        f"- tasks: {', '.join(dict.fromkeys(frame['task']))}",
        f"- max_length: {', '.join(map(str, sorted(frame['max_length'].unique())))};"
        f" strategy: {', '.join(sorted(frame['strategy'].unique()))}",
        f"- cells: {frame.groupby(ROW_KEYS + ['pooling', 'seed'], dropna=False).ngroups};"
        f" run directory: `{run_dir}`;"
        f" written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "## Main scores",
        "",
        "Main score ×100 (mean over a task's splits, as LongEmbed averages over lengths). Best per"
        f" row in **bold**; † marks a difference from `{baseline}` with p < {ALPHA} ({TEST_NAME},"
        " all splits' queries pooled).",
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
    per_seed = seed_table(every_seed, poolings)
    if per_seed:
        parts += ["## Per seed", "", "Main score ×100 of every stored checkpoint (mean over a task's"
                  " splits), seeds left out above included.", "", per_seed, ""]  # fmt: skip
    length_tables = split_tables(lengths, poolings, "length")
    if length_plot or length_tables:
        parts += ["## Length extrapolation", ""]
        if length_plot:
            parts += [f"![length extrapolation]({name}/length.png)", ""]
        for label, t in length_tables:
            parts += [f"**{label}** (score ×100 per document length in tokens)", "", t, ""]
    depth_tables = split_tables(depths, poolings, "depth")
    if depth_plot:
        parts += ["## Evidence depth", "",
                  "Needle placed at a fixed fraction of each document (0 = first word, 1 = last).",
                  "", f"![evidence depth]({name}/depth.png)", ""]  # fmt: skip
        for label, t in depth_tables:
            parts += [f"**{label}**", "", t, ""]
    if notes:
        parts += ["## Significance", "", f"{TEST_NAME}; Δ is candidate − baseline ×100.", ""]
        parts += [f"- {n}" for n in notes] + [""]
    parts += compute_section(records, training)
    path = reports_dir / f"{name}.md"
    atomic_write_text(path, "\n".join(parts))
    return path
