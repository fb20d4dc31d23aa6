"""Golden embeddings: a fixed probe set embedded by every shipped pooling without trained weights
(the packaged MiniLM, float32), kept with the ``SCORING_VERSION`` they were made under.

``tests/test_golden.py`` fails when pooling output moves and the version does not. After a change
that is meant to move scores: bump ``SCORING_VERSION`` (lmk_eval/common/provenance.py), then
regenerate with ``.venv/bin/python -m tests.golden``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden_embeddings.json")
DIMS = 16  # the first coordinates of each vector: enough to see any change, small to review
PROBES = [
    "Landmark pooling.",
    "Aspirin irreversibly inhibits cyclooxygenase, which reduces the synthesis of prostaglandins"
    " and thromboxanes; low doses are used to prevent heart attacks and strokes.",
    # about 400 tokens: past max_length 128, so truncation and windows differ
    " ".join(
        f"Sentence {i} of a long document about protein folding, measured at {i * 7} degrees."
        for i in range(24)
    ),
]
READINGS = [{"max_length": 128}, {"max_length": 128, "strategy": "window"}]


def golden_vectors(text_encoder) -> dict[str, list[list[float]]]:
    """label@reading -> the first ``DIMS`` coordinates of each probe's vector."""
    from lmk_eval.config.variants import make_variant
    from lmk_eval.pooling.registry import POOLINGS

    names = [n for n, p in POOLINGS.items() if p.weights != "trainable"]
    variants = [make_variant(n, **r) for r in READINGS for n in names]
    out = {}
    for variant, vectors in text_encoder.encode(PROBES, variants).items():
        key = f"{variant.label()}@{variant.reading()}"
        out[key] = np.round(vectors[:, :DIMS].astype(np.float64), 6).tolist()
    return out


if __name__ == "__main__":
    from lmk_eval.common.provenance import SCORING_VERSION
    from lmk_eval.model.encoding import TextEncoder

    vectors = golden_vectors(TextEncoder(None).load())
    doc = {"scoring_version": SCORING_VERSION, "dims": DIMS, "vectors": vectors}
    GOLDEN.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"{GOLDEN}: {len(vectors)} variants x {len(PROBES)} probes, version {SCORING_VERSION}")
