"""A sweep costs its distinct inputs: every length and reading of a (model, task) shares one pass,
and every cell is bit for bit what its own length alone computes.

The texts straddle the lengths (some fit all of them, some only the longest, some none), so some
inputs are shared and some are not; each variant of the shared call is compared with the variant
encoded alone, with ``np.array_equal``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from lmk_eval.config.variants import make_variant
from lmk_eval.model.encoding import TextEncoder
from lmk_eval.report.sections import sharing_lines
from lmk_eval.run.runner import run_sweep
from lmk_eval.run.sweeps import sweep_from_dict
from lmk_eval.store.cells import RunStore

SENTENCE = "Landmark pooling keeps one separator state per chunk of the long document. "


def straddling_texts() -> list[str]:
    """Texts from a few tokens to about 1,500: under, across and past every length tested."""
    return [
        "short",
        "What is the capital of France?",
        SENTENCE * 4,  # ~60 tokens
        SENTENCE * 9,  # ~130: straddles 128
        SENTENCE * 17,  # ~250: straddles 256
        SENTENCE * 40,  # ~600: past 512
        SENTENCE * 100,  # ~1,500: past 1,024
    ]


def assert_each_alone_equal(encoder: TextEncoder, texts: list[str], variants: list) -> None:
    before = encoder.stats.shared_windows
    together = encoder.encode(texts, variants)
    assert encoder.stats.shared_windows > before  # inputs really were shared across cells
    for v in variants:
        alone = encoder.encode(texts, [v])[v]
        assert np.array_equal(together[v], alone), (v.label(), v.max_length, v.reading())


@pytest.mark.parametrize("pooling", ["mean", "lmk", "late_chunking"])
def test_minilm_lengths_strategies_and_scales_share_and_stay_bit_identical(text_encoder, pooling):
    variants = [
        make_variant(pooling, max_length=n, strategy=s, attention_scale=a)
        for n in (128, 256, 512)
        for s in ("truncate", "window")
        for a in (None,)
    ] + [
        make_variant(pooling, max_length=1024, strategy=s, attention_scale=a)
        for s in ("window", "grouped", "interpolate")
        for a in ("none", "logn")
    ]
    assert_each_alone_equal(text_encoder, straddling_texts(), list(dict.fromkeys(variants)))


@pytest.fixture(scope="module")
def modernbert(tmp_path_factory):
    """A tiny random ModernBERT of 512 positions, so that 1,024 and 2,048 read past them."""
    from tests.tiny_models import build_modernbert

    folder = build_modernbert(tmp_path_factory.mktemp("sharing") / "modernbert", positions=512)
    return TextEncoder(str(folder)).load()


@pytest.mark.parametrize("pooling", ["cls", "mean", "lmk"])
def test_modernbert_rope_readings_share_and_stay_bit_identical(modernbert, pooling):
    variants = [make_variant(pooling, max_length=n) for n in (128, 256, 512)] + [
        make_variant(pooling, max_length=n, strategy=s, attention_scale=a)
        for n in (1024, 2048)
        for s in ("window", "rope-ntk", "rope-yarn", "self-extend")
        for a in ("none", "logn")
    ]
    assert_each_alone_equal(modernbert, straddling_texts(), list(dict.fromkeys(variants)))


def test_a_sweep_over_lengths_is_one_group_with_each_lengths_own_scores(tiny_beir, tmp_path):
    """Through the run: one sweep over three lengths stores, cell by cell, exactly the scores of
    three sweeps of one length each, and puts fewer tokens through the model."""

    def sweep(lengths: list[int], name: str):
        return sweep_from_dict(
            {
                "name": name,
                "poolings": ["mean", "lmk"],
                "grid": [{"tasks": [str(tiny_beir)], "max_length": lengths, "strategy": "window"}],
            },
            name,
        )

    lines: list[str] = []
    run_sweep(sweep([64, 128, 256], "all"), tmp_path / "all", progress=False, log=lines.append)
    shared = [
        int(m[1].replace(",", ""))
        for x in lines
        if (m := re.search(r": ([\d,]+) inputs shared", x))
    ]
    assert len(shared) == 1 and shared[0] > 0  # one group, and it shared inputs
    records = RunStore(tmp_path / "all").records()
    assert {r.sharing["asked"] - r.sharing["run"] for r in records} >= {shared[0]}
    # the report's Compute section says the same figure (the group's last, not a sum over cells)
    said = " ".join(sharing_lines(records))
    assert f"Inputs shared across lengths and readings: {shared[0]:,} of the" in said
    together = {r.key: r.main for r in records}
    alone = {}
    for n in (64, 128, 256):
        out = tmp_path / f"alone-{n}"
        run_sweep(sweep([n], f"alone-{n}"), out, progress=False, log=lambda m: None)
        alone.update({r.key: r.main for r in RunStore(out).records()})
    assert len(together) == 6 and together == alone
