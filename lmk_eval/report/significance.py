"""Paired significance and confidence intervals over per-query scores.

What a reviewer needs, and exactly what is computed:

- each query's score is first averaged over the seeds a pooling was trained with, so n is the
  number of queries (a query judged under three seeds is one observation, not three);
- a pooling is compared with the baseline by a paired randomization test: the signs of the
  per-query differences are flipped at random (``scipy.stats.permutation_test``), two-sided,
  exact when there are at most 13 queries and 10,000 seeded resamples otherwise. It makes no
  normality assumption, which matters for 0/1 scores such as nDCG@1;
- every main score and every difference gets a 95% percentile bootstrap interval over queries
  (``scipy.stats.bootstrap``, 10,000 seeded resamples);
- the p-values of all comparisons in one report are adjusted together by Holm's step-down method,
  and only an adjusted p below 0.05 counts as significant.

Queries may carry weights, so that a task scored as the mean over several splits (LongEmbed's
lengths) weighs each split equally however many queries it has.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

ALPHA = 0.05
RESAMPLES = 10_000
RNG_SEED = 20260121
TEST_NAME = (
    "paired randomization test (random sign flips of per-query differences, two-sided; exact"
    f" for up to 13 queries, else {RESAMPLES:,} resamples)"
)
CI_NAME = f"95% percentile bootstrap over queries ({RESAMPLES:,} resamples)"
CORRECTION = "Holm-Bonferroni"


@dataclass(frozen=True)
class Comparison:
    n: int  # queries both poolings were scored on
    mean_diff: float  # candidate - baseline (weighted mean over queries)
    p_value: float | None
    ci: tuple[float, float] | None = None  # 95% interval of mean_diff
    p_adjusted: float | None = None  # Holm-adjusted over the report's comparisons
    untested: str | None = None  # why no test was run although both sides have queries

    @property
    def reported(self) -> bool:
        """Tested, or worth a line saying why not."""
        return self.p_value is not None or self.untested is not None

    @property
    def significant(self) -> bool:
        p = self.p_adjusted if self.p_adjusted is not None else self.p_value
        return p is not None and p < ALPHA


def seed_averaged(per_seed: Sequence[Mapping[Hashable, float]]) -> dict[Hashable, float]:
    """Per query, the mean of its scores over the seeds that scored it."""
    sums: dict[Hashable, float] = {}
    counts: dict[Hashable, int] = {}
    for scores in per_seed:
        for q, v in scores.items():
            sums[q] = sums.get(q, 0.0) + float(v)
            counts[q] = counts.get(q, 0) + 1
    return {q: sums[q] / counts[q] for q in sums}


def _weighted_mean(x: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
    return (x * w).sum(axis=axis) / w.sum(axis=axis)


def _arrays(
    scores: Mapping[Hashable, float], keys: list[Hashable], weights: Mapping[Hashable, float] | None
):
    x = np.array([scores[k] for k in keys], dtype=float)
    w = np.array([weights[k] if weights else 1.0 for k in keys], dtype=float)
    return x, w


def bootstrap_ci(
    scores: Mapping[Hashable, float], weights: Mapping[Hashable, float] | None = None
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the (weighted) mean; None for fewer than 2 queries."""
    from scipy.stats import bootstrap

    keys = sorted(scores)
    if len(keys) < 2:
        return None
    x, w = _arrays(scores, keys, weights)
    if not np.isfinite(x).all():
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = bootstrap(
        (x, w),
        _weighted_mean,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(RNG_SEED),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_test(
    candidate: Mapping[Hashable, float],
    baseline: Mapping[Hashable, float],
    weights: Mapping[Hashable, float] | None = None,
) -> Comparison:
    """Compare on the queries both have: identical scores give p = 1, fewer than 2 pairs none."""
    from scipy.stats import permutation_test

    common = sorted(set(candidate) & set(baseline))
    n = len(common)
    if n == 0:
        return Comparison(0, math.nan, None)
    a, w = _arrays(candidate, common, weights)
    b, _ = _arrays(baseline, common, weights)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return Comparison(n, math.nan, None, untested="a side's per-query scores are not finite")
    d = a - b
    diff = float(_weighted_mean(d, w))
    if n < 2:
        return Comparison(n, diff, None)
    if np.all(d == 0):
        return Comparison(n, diff, 1.0, (0.0, 0.0))
    res = permutation_test(
        (d,),
        lambda x, axis=-1: _weighted_mean(x, w, axis),
        vectorized=True,
        permutation_type="samples",
        n_resamples=RESAMPLES,
        rng=np.random.default_rng(RNG_SEED),
    )
    ci = bootstrap_ci(dict(zip(common, d, strict=True)), weights)
    return Comparison(n, diff, min(1.0, float(res.pvalue)), ci)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (None entries are skipped). Written out because scipy has only
    Benjamini-Hochberg and statsmodels is not a dependency: p_(i) * (m - i + 1), made monotone."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons with their Holm-adjusted p-values filled in, as one family."""
    adjusted = holm([c.p_value for c in comparisons])
    return [replace(c, p_adjusted=p) for c, p in zip(comparisons, adjusted, strict=True)]
