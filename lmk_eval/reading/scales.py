"""Attention scales and SelfExtend's parameters as values: parsing and LongEmbed's defaults.

Pure and free of torch, so that variants, sweeps and ``lmk-eval list`` can check and show them
without loading a tensor library; ``attention.py`` applies them.
"""

from __future__ import annotations

import math

NONE, LOGN, TEMPERATURE = "none", "logn", "temperature"


def parse_scale(value: str) -> tuple[str, float | None]:
    """('none' | 'logn' | 'temperature', T or None) from 'none', 'logn' or 'temperature:T'."""
    if value in (NONE, LOGN):
        return value, None
    kind, _, number = value.partition(":")
    if kind == TEMPERATURE:
        try:
            t = float(number)
        except ValueError:
            t = float("nan")
        if math.isfinite(t) and t > 0:
            return TEMPERATURE, t
    raise ValueError(
        f"attention scale {value!r} is not one of none, logn, temperature:T (T > 0, e.g. temperature:0.8)"
    )


def self_extend_defaults(length: int, positions: int) -> tuple[int, int]:
    """(group g, neighbour window w) for reading ``length`` tokens with ``positions`` trained:
    LongEmbed's Table 6 (ratio up to 2 / 4 / 8: g 3 / 5 / 9, w P/2, P/4, P/8); past 8x, w = P/8
    and the smallest g whose grouped positions stay below P."""
    ratio = length / positions
    for limit, group, share in ((2, 3, 2), (4, 5, 4), (8, 9, 8)):
        if ratio <= limit:
            return group, max(1, positions // share)
    window = max(1, positions // 8)
    group = 9
    while (length - 1) // group + window - window // group >= positions:
        group += 1
    return group, window
