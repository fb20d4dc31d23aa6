"""What a report shows, computed once from a run directory before anything is rendered."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lmk_eval.report.frames import (
    DEPTH_SPLIT,
    LENGTH_SPLIT,
    Names,
    Panel,
    display_names,
    main_frame,
    matched_seeds,
    max_length_pivots,
    pooling_order,
    split_pivots,
    strategy_pivots,
)
from lmk_eval.report.stats import Family, RowIntervals, comparison_family, score_intervals
from lmk_eval.store.cells import RunStore
from lmk_eval.store.records import CellRecord


@dataclass(frozen=True)
class ReportData:
    store: RunStore
    sweep: dict  # the stored sweep.json
    training: dict[str, dict]  # checkpoint name -> training record
    records: list[CellRecord]
    every_seed: pd.DataFrame  # main scores of every stored cell
    frame: pd.DataFrame  # the same, seeds matched across each row's poolings
    unmatched: list[str]  # the seeds left out of ``frame``, said in words
    names: Names
    poolings: list[str]  # variant keys, the baseline first
    baseline: str
    family: Family
    intervals: list[RowIntervals]  # each row's bootstrap interval per pooling
    lengths: list[Panel]  # scores by document length
    depths: list[Panel]  # scores by needle depth
    panels: list[Panel]  # what the length figure draws

    @property
    def name(self) -> str:
        return self.store.root.name

    @property
    def seeded(self) -> bool:
        return bool(self.frame["seed"].notna().any())


def report_data(store: RunStore, baseline: str | None = None) -> ReportData:
    """Read the store once and compute everything the report's sections and figures show."""
    from lmk_eval.config.sweep import resolve_baseline

    sweep = store.sweep() or {}
    training = store.training_records()
    records = store.records(training)
    every_seed = main_frame(records, store.root)
    names = display_names(every_seed)
    variants = {r.variant.key(): r.variant for r in records}
    declared = pooling_order(every_seed, None, sweep)
    baseline = resolve_baseline(baseline or sweep.get("baseline"), [variants[k] for k in declared])
    frame, unmatched = matched_seeds(every_seed)
    poolings = sorted(declared, key=lambda p: p != baseline)  # stable: the baseline first
    lengths = split_pivots(frame, LENGTH_SPLIT, 1)
    return ReportData(
        store,
        sweep,
        training,
        records,
        every_seed,
        frame,
        unmatched,
        names,
        poolings,
        baseline,
        comparison_family(frame, poolings, baseline, names),
        score_intervals(frame, poolings),
        lengths,
        split_pivots(frame, DEPTH_SPLIT, 0.01),
        strategy_pivots(frame) or [*lengths, *max_length_pivots(frame)],
    )
