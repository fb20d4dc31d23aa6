"""Every pooling on hand-computed tensors, with padding on the right, the left and both sides."""

import math

import pytest
import torch

from lmk_eval.pooling import functions as pooling

PAD = 100.0
HIDDEN = torch.tensor(
    [
        [[1, 2], [3, 4], [5, 6], [PAD, PAD]],  # right padding
        [[PAD, PAD], [1, 0], [0, 1], [2, 2]],  # left padding
        [[PAD, PAD], [2, 0], [4, 2], [PAD, PAD]],  # padding on both sides
    ],
    dtype=torch.float32,
)
MASK = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [0, 1, 1, 0]])


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_cls_takes_first_real_token():
    close(pooling.cls(HIDDEN, MASK), [[1, 2], [1, 0], [2, 0]])


def test_lasttoken_takes_last_real_token():
    close(pooling.lasttoken(HIDDEN, MASK), [[5, 6], [2, 2], [4, 2]])


def test_mean_ignores_padding():
    close(pooling.mean(HIDDEN, MASK), [[3, 4], [1, 1], [3, 1]])


def test_max_ignores_padding():
    close(pooling.max(HIDDEN, MASK), [[5, 6], [2, 2], [4, 2]])


def test_mean_sqrt_len_tokens():
    r3, r2 = math.sqrt(3), math.sqrt(2)
    close(
        pooling.mean_sqrt_len_tokens(HIDDEN, MASK),
        [[9 / r3, 12 / r3], [3 / r3, 3 / r3], [6 / r2, 2 / r2]],
    )


def test_weightedmean_weighs_by_rank_among_real_tokens():
    close(pooling.weightedmean(HIDDEN, MASK), [[22 / 6, 28 / 6], [7 / 6, 8 / 6], [10 / 3, 4 / 3]])


def test_marked_mean_pools_markers_and_falls_back_to_mean():
    # row 2: markers on padding only
    markers = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 1]])
    close(pooling.marked_mean(HIDDEN, MASK, markers), [[4, 5], [2, 2], [3, 1]])


def test_every_kth_mask_counts_real_tokens_only():
    assert pooling.every_kth_mask(MASK, 2).int().tolist() == [
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 1, 0],
    ]


def test_mean_every_k_and_fallback_when_row_is_shorter_than_k():
    close(pooling.mean_every_k(HIDDEN, MASK, 2), [[3, 4], [0, 1], [4, 2]])
    close(pooling.mean_every_k(HIDDEN, MASK, 5), [[3, 4], [1, 1], [3, 1]])
    with pytest.raises(ValueError):
        pooling.every_kth_mask(MASK, 0)


def test_layer_mean_averages_mean_pooling_over_layers():
    layers = torch.stack([HIDDEN, HIDDEN * 3])
    close(pooling.layer_mean(layers, MASK), [[6, 8], [2, 2], [6, 2]])


def test_normalize():
    close(pooling.normalize(torch.tensor([[3.0, 4.0]])), [[0.6, 0.8]])
