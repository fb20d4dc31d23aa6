"""Paired significance over per-query scores: is pooling X really better than the baseline?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

TEST_NAME = "two-sided paired t-test over per-query main scores (scipy.stats.ttest_rel)"
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    n: int
    mean_diff: float  # candidate - baseline
    p_value: float | None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA


def paired_test(candidate: Mapping[str, float], baseline: Mapping[str, float]) -> Comparison:
    """Compare on the queries both have; identical scores give p = 1, fewer than 2 pairs none."""
    from scipy.stats import ttest_rel

    common = sorted(set(candidate) & set(baseline))
    a = [candidate[q] for q in common]
    b = [baseline[q] for q in common]
    n = len(common)
    if n == 0:
        return Comparison(0, math.nan, None)
    diff = sum(x - y for x, y in zip(a, b, strict=True)) / n
    if n < 2:
        return Comparison(n, diff, None)
    if all(x == y for x, y in zip(a, b, strict=True)):
        return Comparison(n, diff, 1.0)
    p = float(ttest_rel(a, b).pvalue)
    return Comparison(n, diff, None if math.isnan(p) else p)
