"""Pooling output is pinned to ``SCORING_VERSION``: a change that moves any shipped pooling's
vectors must bump the version (stored cells then recompute), and the golden file says so."""

from __future__ import annotations

import json

import numpy as np

from lmk_eval.common.provenance import SCORING_VERSION
from tests.golden import GOLDEN, golden_vectors

TOLERANCE = 1e-4  # float32 on any CPU; a pooling change moves coordinates by far more


def test_pooling_output_moves_only_with_the_scoring_version(text_encoder):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["scoring_version"] == SCORING_VERSION, (
        f"SCORING_VERSION is {SCORING_VERSION}, the golden vectors were made under"
        f" {golden['scoring_version']}: regenerate them with `python -m tests.golden`"
    )
    current = golden_vectors(text_encoder)
    assert set(current) == set(golden["vectors"]), "a shipped pooling was added or removed"
    moved = [
        key
        for key, vectors in golden["vectors"].items()
        if not np.allclose(current[key], vectors, atol=TOLERANCE, rtol=0)
    ]
    assert not moved, (
        f"pooling output moved for {', '.join(moved)} while SCORING_VERSION is still"
        f" {SCORING_VERSION}: bump it (lmk_eval/common/provenance.py) and run `python -m tests.golden`"
    )
