"""The report's comparisons: pooling vs baseline, strategy vs reference, scaled vs unscaled, as
one family adjusted once by Holm."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lmk_eval.report.frames import (
    ROW_KEYS,
    Names,
    part_weights,
    pooled_queries,
    reference_length,
    reference_strategy,
    row_label,
    varying,
)
from lmk_eval.report.significance import (
    Comparison,
    adjust,
    bootstrap_ci,
    paired_test,
)


def compare_rows(frame: pd.DataFrame, poolings: list[str], baseline: str):
    """Every pooling against the baseline on every row: [(row label, pooling, Comparison)],
    unadjusted (``comparison_family`` adjusts the report's comparisons together)."""
    vary = varying(frame)
    found = []
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        if baseline not in set(group["pooling"]):
            continue
        base_q = pooled_queries(group, baseline)
        for p in poolings:
            if p == baseline or p not in set(group["pooling"]):
                continue
            cand = pooled_queries(group, p)
            cmp = paired_test(cand, base_q, part_weights(set(cand) & set(base_q)))
            if cmp.reported:
                found.append((row_label(key, vary), p, cmp))
    return found


def compare_strategies(frame: pd.DataFrame, poolings: list[str], names: Names):
    """Every other strategy against the reference one at a paired max_length (see
    ``reference_length``), per (model, task, pooling): [(label naming both lengths, Comparison)]."""
    if frame["strategy"].nunique() < 2:
        return []
    reference = reference_strategy(frame)
    vary = varying(frame)
    out = []
    for (model, task), group in frame.groupby(["model", "task"], sort=False):
        ref_rows = group[group["strategy"] == reference]
        ref_lengths = sorted(int(n) for n in ref_rows["max_length"].unique())
        for pooling in poolings:
            for (strategy, length), rows in group[group["strategy"] != reference].groupby(
                ["strategy", "max_length"], sort=False
            ):
                ref_length = reference_length(ref_lengths, int(length))
                if ref_length is None:
                    continue
                cmp = _paired(rows, ref_rows[ref_rows["max_length"] == ref_length], pooling)
                if cmp is not None:
                    name = f"{model}: {task}" if vary["model"] else task
                    out.append(
                        (
                            f"{name}: {names[pooling]} {strategy}@{length} vs {reference}@{ref_length}",
                            cmp,
                        )
                    )
    return out


def _paired(candidate: pd.DataFrame, base: pd.DataFrame, pooling: str) -> Comparison | None:
    """One pooling's paired test of two readings' rows on their common queries (None: untestable)."""
    cand, ref = pooled_queries(candidate, pooling), pooled_queries(base, pooling)
    if not cand or not ref:
        return None
    cmp = paired_test(cand, ref, part_weights(set(cand) & set(ref)))
    return cmp if cmp.reported else None


def compare_scales(frame: pd.DataFrame, poolings: list[str], names: Names):
    """Every reading with an attention scale (``grouped+logn``) against the same strategy without
    one (``grouped``), per (model, task, max_length, pooling): [(label, Comparison)]."""
    scaled = frame[frame["scaled"]]
    if scaled.empty:
        return []
    vary = varying(frame)
    out = []
    keys = ["model", "task", "max_length", "strategy", "unscaled"]
    for (model, task, length, reading, plain), rows in scaled.groupby(keys, sort=False):
        base_rows = frame[
            (frame["model"] == model)
            & (frame["task"] == task)
            & (frame["max_length"] == length)
            & (frame["strategy"] == plain)
        ]
        for pooling in poolings:
            cmp = _paired(rows, base_rows, pooling)
            if cmp is not None:
                name = f"{model}: {task}" if vary["model"] else task
                out.append(
                    (f"{name}: {names[pooling]} {reading}@{length} vs {plain}@{length}", cmp)
                )
    return out


@dataclass(frozen=True)
class Family:
    """The report's comparisons, Holm-adjusted together as one family."""

    rows: list[tuple[str, str, Comparison]]  # (row label, pooling, vs the baseline)
    strategies: list[tuple[str, Comparison]]  # each strategy vs the reference strategy
    scales: list[tuple[str, Comparison]]  # each scaled reading vs the same strategy unscaled

    @property
    def size(self) -> int:
        """The comparisons tested (an untested one carries no p-value)."""
        return sum(c.p_value is not None for c in self.all())

    def all(self) -> list[Comparison]:
        return [c for _, _, c in self.rows] + [c for _, c in self.strategies + self.scales]

    def __bool__(self) -> bool:
        return bool(self.rows or self.strategies or self.scales)


def comparison_family(
    frame: pd.DataFrame, poolings: list[str], baseline: str, names: Names
) -> Family:
    """Every comparison the report makes, and the one Holm adjustment over all of them."""
    rows = compare_rows(frame, poolings, baseline)
    strategies = compare_strategies(frame, poolings, names)
    scales = compare_scales(frame, poolings, names)
    adjusted = iter(adjust(Family(rows, strategies, scales).all()))
    return Family(
        [(r, p, next(adjusted)) for r, p, _ in rows],
        [(label, next(adjusted)) for label, _ in strategies],
        [(label, next(adjusted)) for label, _ in scales],
    )


@dataclass(frozen=True)
class RowIntervals:
    """One report row's 95% bootstrap interval per pooling (None: no per-query scores)."""

    key: tuple
    queries: int  # the baseline's (seed-averaged) queries
    intervals: dict[str, tuple[float, float] | None]


def score_intervals(frame: pd.DataFrame, poolings: list[str]) -> list[RowIntervals]:
    """Each main score's 95% bootstrap interval over (seed-averaged) queries, row by row."""
    out = []
    for key, group in frame.groupby(ROW_KEYS, sort=False):
        present = set(group["pooling"])
        intervals = {}
        for p in poolings:
            scores = pooled_queries(group, p) if p in present else {}
            intervals[p] = bootstrap_ci(scores, part_weights(set(scores))) if scores else None
        out.append(RowIntervals(key, len(pooled_queries(group, poolings[0])), intervals))
    return out
