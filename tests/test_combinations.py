"""Every combination of options computes what it says, however the variants of a sweep are grouped.

For every pooling of the registry x placement x granularity x include_prompt x strategy (window,
truncate) that a model accepts, the embeddings computed together with all the others (one
encode call, which shares forward passes between variants of equal tokens) must equal those
computed alone. A variant that shares a forward pass it should not (two placements on one
tokenisation) differs from itself alone.
"""

import itertools

import numpy as np
import pytest

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import GRANULARITIES, PLACEMENTS, make_variant
from lmk_eval.model.encoding import TextEncoder
from lmk_eval.pooling import registry
from lmk_eval.reading.strategies import strategy_of

PROMPT = "query: "
TEXTS = [
    "Landmark pooling keeps one state per chunk. It was tested on long documents. " * 6,
    "What is the capital of France?",
    "short",
    "Mean pooling averages every token. CLS pooling keeps the first state. Both are baselines.",
]


def accepted_variants(encoder: TextEncoder) -> list:
    """Every combination the model accepts (refusals are the preflight's, tested elsewhere)."""
    facts = encoder.facts
    out = []
    for pooling, granularity, placement, include_prompt, strategy in itertools.product(
        registry.POOLINGS, GRANULARITIES, PLACEMENTS, (True, False), ("window", "truncate")
    ):
        v = make_variant(
            pooling,
            granularity=granularity,
            placement=placement,
            interval=8,
            intervals=(4, 8, 16),
            include_prompt=include_prompt,
            max_length=40,
            strategy=strategy,
        )
        try:
            concrete = facts.concrete(v)
            facts.tokenisation.check(concrete)
            facts.check_weights(concrete)
        except LmkEvalError:
            continue
        if strategy_of(strategy).unsupported(facts.config) is None:
            out.append(v)
    return list(dict.fromkeys(out))  # canonical variants: irrelevant options collapse


@pytest.fixture(scope="module")
def decoder(tiny):
    dirs, _ = tiny
    return TextEncoder(str(dirs["qwen2"]))


@pytest.mark.parametrize("model", ["minilm", "decoder"])
def test_every_variant_together_equals_it_alone(model, text_encoder, decoder):
    encoder = text_encoder if model == "minilm" else decoder
    variants = accepted_variants(encoder)
    placements = {v.placement for v in variants if v.pooling == "lmk"}
    assert placements == {"after", "before"}  # both placements are in the sweep
    assert len({v.tokenisation_key() for v in variants}) > 4
    together = encoder.encode(TEXTS, variants, PROMPT)
    for v in variants:
        alone = encoder.encode(TEXTS, [v], PROMPT)[v]
        assert np.abs(alone - together[v]).max() < 1e-5, v.label()


def test_labels_and_keys_tell_every_variant_apart(text_encoder, decoder):
    for encoder in (text_encoder, decoder):
        variants = accepted_variants(encoder)
        per_reading = {}
        for v in variants:
            per_reading.setdefault((v.max_length, v.strategy), []).append(v)
        for group in per_reading.values():
            assert len({v.label() for v in group}) == len(group)
            assert len({v.key() for v in group}) == len(group)


def test_placements_differ_and_prompt_inclusion_differs(text_encoder):
    after, before = (
        make_variant("lmk", interval=8, max_length=40, placement=p) for p in PLACEMENTS
    )
    mean, no_prompt = (make_variant("mean", max_length=40, include_prompt=i) for i in (True, False))
    out = text_encoder.encode(TEXTS, [after, before, mean, no_prompt], PROMPT)
    assert np.abs(out[after] - out[before]).max() > 1e-3
    assert np.abs(out[mean] - out[no_prompt]).max() > 1e-3
    assert {after.label(), before.label(), mean.label(), no_prompt.label()} == {
        "lmk[fixed/8]",
        "lmk[fixed/8/before]",
        "mean",
        "mean[no-prompt]",
    }
