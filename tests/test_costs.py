"""`lmk-eval plan`: what a sweep will encode, counted before any forward pass."""

from __future__ import annotations

from lmk_eval.costs import estimate, flops_per_token
from lmk_eval.plan import plan
from lmk_eval.sweep import Sweep
from lmk_eval.work import compute_group, make_encoder


def test_plan_counts_exactly_the_tokens_the_run_encodes(tiny_beir):
    sweep = Sweep.model_validate({"name": "t", "poolings": [{"pooling": p} for p in ("cls", "mean", "lmk")],
                                  "grid": [{"tasks": [str(tiny_beir)], "max_length": [64]}]})  # fmt: skip
    groups = plan(sweep)
    (cost,) = estimate(sweep, groups, measure=False)
    encoder = make_encoder(sweep, "default")
    list(compute_group(groups[0], groups[0].cells, encoder))
    assert cost.tokens == encoder.stats.real_tokens  # what the run put through the model
    assert (cost.documents, cost.queries, cost.cells, cost.tokenisations) == (20, 8, 3, 2)  # lmk has its own
    assert cost.unshared > cost.tokens and cost.counted == "counted"


def test_flops_per_token_of_bert_base_are_twice_its_85m_layer_weights():
    from transformers import BertConfig

    assert flops_per_token(BertConfig(), 0) == 2 * 84_934_656
    assert flops_per_token(BertConfig(), 512) > flops_per_token(BertConfig(), 0)
