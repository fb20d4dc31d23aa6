"""Tidy frames from typed cell records: one row per (cell, split), pooled per query, pivoted
by length, depth or strategy for the tables and plots."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.reading.strategies import reference_order
from lmk_eval.report.significance import (
    seed_averaged,
)
from lmk_eval.store.cells import CellRecord

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


def construction_of(group: pd.DataFrame) -> str | None:
    if "construction" not in group:
        return None
    values = group["construction"].unique()
    return values[0] if len(values) == 1 else None


def main_frame(records: list[CellRecord], root: Path) -> pd.DataFrame:
    """One row per (cell, split), keyed by the cell's typed fields: ``pooling`` is the variant's
    key (``Variant.key()``), ``label`` how it is shown; a checkpoint's row model is its [train]
    folder and its seed is its own. ``score`` is mteb's score of the split (the mean over its
    subsets, or an aggregate's over its sub-tasks); ``per_query`` keys each query by (split,
    task, subset, query id), so queries of two sub-tasks or languages never pair up."""
    rows = []
    for r in records:
        c, v = r.cell, r.variant
        construction = r.identity.data.get("construction") if r.identity else None
        for split in r.splits:
            per_query = {
                (split, p.task, p.subset, q): x
                for p in r.scored_parts()
                if p.split == split
                for q, x in p.per_query.items()
            }
            rows.append(
                {
                    "model": c.row_model,
                    "seed": c.seed,
                    "task": r.task,
                    "context": r.context,
                    "construction": construction,
                    "max_length": v.max_length,
                    "strategy": v.reading(),
                    "scaled": v.scale != "none",
                    "unscaled": v.unscaled().reading(),
                    "pooling": v.key(),
                    "label": v.label(),
                    "split": split,
                    "score": r.split_score(split),
                    "metric": r.main_score,
                    "per_query": per_query,
                }
            )
    if not rows:
        raise LmkEvalError(f"no finished cells in '{root}'; nothing to report")
    return pd.DataFrame(rows)


def parts_frame(records: list[CellRecord]) -> pd.DataFrame:
    """One row per (cell, part) of the cells mteb scored in several parts (language subsets, an
    aggregate's sub-tasks): the part's main score, its mean over the cell's splits."""
    rows = []
    for r in records:
        parts = r.scored_parts()
        keys = list(dict.fromkeys((p.task, p.subset) for p in parts))
        if len(keys) < 2:
            continue
        c, v, own = r.cell, r.variant, r.scores[0].task
        for task, subset in keys:
            scores = [p.scores[r.main_score] for p in parts if (p.task, p.subset) == (task, subset)]
            rows.append(
                {
                    "model": c.row_model,
                    "seed": c.seed,
                    "row": r.task,
                    "max_length": v.max_length,
                    "strategy": v.reading(),
                    "pooling": v.key(),
                    "part": task if task != own else subset,
                    "score": sum(scores) / len(scores),
                }
            )
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


def evaluated_as(pooling: str, train: dict) -> dict:
    from lmk_eval.config.training import TrainConfig, evaluation_pooling

    return evaluation_pooling(TrainConfig(eval_interval=train.get("eval_interval", 32)), pooling)


def pooling_order(frame: pd.DataFrame, baseline: str | None, sweep: dict) -> list[str]:
    """Variant keys: the baseline first, then the sweep's own order (its manifest's, as planned),
    then anything else the store holds."""
    manifest = sweep.get("cells")
    if isinstance(manifest, list) and all(isinstance(c, dict) and "variant" in c for c in manifest):
        declared = [c["variant"] for c in manifest]
    else:
        declared = _declared_before_manifests(sweep)
    names = list(dict.fromkeys([*declared, *sorted(frame["pooling"].unique())]))
    names = [n for n in names if n in set(frame["pooling"])]
    return sorted(names, key=lambda p: (p != baseline, names.index(p)))


def _declared_before_manifests(sweep: dict) -> list[str]:
    """A run written before sweep.json listed its cells: its order rebuilt from its sweep's
    poolings (and the poolings its checkpoints are evaluated with)."""
    from lmk_eval.config.variants import make_variant

    declared = []
    train = sweep.get("train") or {}
    for p in sweep.get("poolings", []) + [
        evaluated_as(n, train) for n in train.get("poolings", [])
    ]:
        try:
            declared.append(make_variant(**p).key())
        except LmkEvalError:
            continue
    return declared


def row_label(key: tuple, vary: dict[str, bool]) -> str:
    model, task, _context, max_length, strategy = key
    label = task
    if vary["max_length"] or vary["strategy"]:
        label += f" @{max_length}" + (f"/{strategy}" if vary["strategy"] else "")
    if vary["model"]:
        label = f"{model}: {label}"
    return label


QueryKey = tuple[str, str, str, str]  # (split, task, subset, query id)


def pooled_queries(group: pd.DataFrame, pooling: str) -> dict[QueryKey, float]:
    """Per-query scores of one pooling across all splits of a row, each query's score averaged
    over the seeds first: one observation per query, not per (seed, query)."""
    per_seed = []
    for _seed, rows in group[group["pooling"] == pooling].groupby("seed", dropna=False):
        scores: dict[QueryKey, float] = {}
        for per_query in rows["per_query"]:
            scores.update(per_query)
        per_seed.append(scores)
    return seed_averaged(per_seed)


def part_weights(keys: list[QueryKey] | set[QueryKey]) -> dict[QueryKey, float]:
    """Weights that make a weighted mean over (split, task, subset, query) keys mteb's main score:
    splits weigh equally, within a split each (sub-)task, within it each subset, within it each
    query, whatever the counts at each level (mteb's mean over splits and subsets, and an
    aggregate's mean over its sub-tasks)."""
    keys = list(keys)
    weights = dict.fromkeys(keys, 1.0)
    for depth in range(4):
        below: dict[tuple, set[tuple]] = {}
        for k in keys:
            below.setdefault(k[:depth], set()).add(k[: depth + 1])
        for k in keys:
            weights[k] /= len(below[k[:depth]])
    return weights


def seed_std(group: pd.DataFrame, pooling: str) -> float | None:
    """Standard deviation over seeds of the split-averaged score, when there are several seeds."""
    rows = group[group["pooling"] == pooling]
    if rows["seed"].nunique() < 2:
        return None
    return float(rows.groupby("seed")["score"].mean().std())


def varying(frame: pd.DataFrame) -> dict[str, bool]:
    return {k: frame[k].nunique() > 1 for k in ("model", "max_length", "strategy")}


def split_pivots(frame: pd.DataFrame, pattern: re.Pattern, scale: float) -> list[Panel]:
    """Per row key, score by split value (length in tokens or depth fraction) x pooling."""
    vary = varying(frame)
    out = []
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        matched = group[group["split"].str.match(pattern)]
        if not matched.empty:
            x = matched["split"].str.extract(pattern)[0].astype(float) * scale
            table = matched.assign(x=x).pivot_table(index="x", columns="pooling", values="score")
            out.append(
                Panel(
                    row_label(key, vary),
                    key[1],
                    table.sort_index(),
                    construction=construction_of(matched),
                )
            )
    return out


BANDS = ((0, 512, "<= 512"), (513, 2048, "1,024-2,048"), (2049, 10**9, ">= 4,096"))


def reference_strategy(frame: pd.DataFrame) -> str:
    """What other strategies are compared with: the model's own reading (truncate), else windows."""
    present = set(frame["strategy"])
    return next((s for s in reference_order() if s in present), sorted(present)[0])


def reading_of(frame: pd.DataFrame) -> pd.Series:
    """How each row read its documents: the strategy, with its max_length where the frame has
    several (truncate@256 and truncate@512 are two readings, never averaged into one)."""
    if frame["max_length"].nunique() < 2:
        return frame["strategy"]
    return frame["strategy"] + "@" + frame["max_length"].astype(str)


def strategy_pivots(frame: pd.DataFrame) -> list[Panel]:
    """Per (model, task): score by document length x (pooling, reading), for one panel each."""
    vary = varying(frame)
    out = []
    for (model, task), group in frame.groupby(["model", "task"], sort=False):
        matched = group[group["split"].str.match(LENGTH_SPLIT)]
        if matched.empty or matched["strategy"].nunique() < 2:
            continue
        x = matched["split"].str.extract(LENGTH_SPLIT)[0].astype(float)
        table = matched.assign(x=x, reading=reading_of(matched)).pivot_table(
            index="x", columns=["pooling", "reading"], values="score"
        )
        out.append(
            Panel(
                f"{model}: {task}" if vary["model"] else task,
                task,
                table.sort_index(),
                construction=construction_of(matched),
            )
        )
    return out


def reference_length(lengths: list[int], length: int) -> int | None:
    """The reference strategy's max_length a candidate at ``length`` is paired with: the same, else
    the longest below it (truncate stops at the model's positions), else none."""
    if length in lengths:
        return length
    below = [n for n in lengths if n < length]
    return max(below) if below else None


def max_length_pivots(frame: pd.DataFrame) -> list[Panel]:
    """Single-split tasks run at several max_lengths: score against max_length."""
    vary = varying(frame)
    out = []
    for (model, task, strategy), group in frame.groupby(["model", "task", "strategy"], sort=False):
        if group["max_length"].nunique() > 1 and group["split"].nunique() == 1:
            label = f"{task}/{strategy}" if vary["strategy"] else task
            label = f"{model}: {label}" if vary["model"] else label
            table = group.pivot_table(index="max_length", columns="pooling", values="score")
            out.append(Panel(f"{label} (max_length)", task, table, "max_length (tokens)"))
    return out


def reference_for(panel: Panel) -> dict | None:
    """The published curve a panel's bundled task is calibrated against, if its cells were
    computed on that calibrated construction (cells that record none, or another, get none)."""
    from lmk_eval.retrieval.task_registry import reference_curve

    return reference_curve(panel.task, panel.construction)
