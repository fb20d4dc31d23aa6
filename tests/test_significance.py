"""The statistics, on cases small enough to check by hand."""

import math

import pytest

from lmk_eval.report import part_weights
from lmk_eval.report.significance import (
    Comparison,
    adjust,
    bootstrap_ci,
    holm,
    paired_test,
    seed_averaged,
)


def scores(values):
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_sign_flip_test_is_exact_for_few_queries():
    # five queries all +1: of the 2^5 sign patterns only all-plus and all-minus reach |mean| = 1
    assert paired_test(scores([1] * 5), scores([0] * 5)).p_value == pytest.approx(2 / 32)
    # differences +1 +1 -1 +1: |sum| >= 2 in 10 of 16 patterns
    cmp = paired_test(scores([1, 1, 0, 1]), scores([0, 0, 1, 0]))
    assert cmp.p_value == pytest.approx(10 / 16) and cmp.mean_diff == pytest.approx(0.5)
    assert cmp.n == 4


def test_identical_scores_and_too_few_queries():
    same = paired_test(scores([0.3, 0.7, 1.0]), scores([0.3, 0.7, 1.0]))
    assert same.p_value == 1.0 and same.mean_diff == 0.0 and not same.significant
    assert paired_test(scores([1]), scores([0])).p_value is None
    assert paired_test({"a": 1.0}, {"b": 0.0}).n == 0


def test_a_large_consistent_difference_is_significant():
    cmp = paired_test(scores([0.6] * 50 + [0.5] * 50), scores([0.5] * 50 + [0.5] * 50))
    assert cmp.p_value < 0.001 and cmp.ci[0] > 0 and cmp.mean_diff == pytest.approx(0.05)


def test_holm_matches_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    adjusted = holm([0.01, 0.04, 0.03, None, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, None, 0.02], nan_ok=True)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8 x 2 capped at 1; monotone carries it to 0.9


def test_holm_turns_a_lone_significant_result_among_many_into_a_non_significant_one():
    family = [Comparison(100, 0.1, 0.02)] + [Comparison(100, 0.0, 0.5)] * 9
    assert family[0].significant
    assert not adjust(family)[0].significant and adjust(family)[0].p_adjusted == pytest.approx(0.2)


def test_seeds_are_averaged_per_query_before_pairing():
    per_seed = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}]
    assert seed_averaged(per_seed) == pytest.approx({"a": 2 / 3, "b": 1 / 3})


def test_part_weights_make_the_mean_a_mean_of_split_task_and_subset_means():
    keys = [
        ("s1", "t", "default", "a"),
        ("s2", "t", "default", "a"),
        ("s2", "t", "default", "b"),
        ("s2", "t", "default", "c"),
    ]
    w = part_weights(keys)
    values = dict(zip(keys, [1.0, 0.0, 0.0, 0.0], strict=True))
    weighted = sum(values[k] * w[k] for k in keys) / sum(w.values())
    assert weighted == pytest.approx((1.0 + 0.0) / 2)  # not the pooled 1/4
    # one split, two sub-tasks (one with two subsets): (mean(en, de) of t1 + t2) / 2, as mteb
    keys = [
        ("test", "t1", "en", "a"),
        ("test", "t1", "de", "a"),
        ("test", "t1", "de", "b"),
        ("test", "t2", "default", "a"),
    ]
    values = dict(zip(keys, [1.0, 0.0, 1.0, 0.0], strict=True))
    w = part_weights(keys)
    expected = ((1.0 + (0.0 + 1.0) / 2) / 2 + 0.0) / 2
    assert sum(values[k] * w[k] for k in keys) / sum(w.values()) == pytest.approx(expected)


def test_bootstrap_interval_brackets_the_mean_and_handles_constant_scores():
    lo, hi = bootstrap_ci(scores([0, 1] * 50))
    assert lo < 0.5 < hi and 0.35 < lo and hi < 0.65
    assert bootstrap_ci(scores([1, 1, 1])) == (1.0, 1.0)
    assert bootstrap_ci(scores([1])) is None
    assert not math.isnan(bootstrap_ci(scores([0, 0, 1]))[0])
