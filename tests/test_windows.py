"""``--strategy window``: each pooling's merge of a text's windows, against a reference written here.

The reference runs every window alone through the model and pools with plain torch, as the README's
"under window" table defines each pooling: nothing of the registry, the encoder's batching or its
merge is used, so a wrong merge (or a wrong weight) fails here.
"""

import math

import numpy as np
import pytest
import torch

from lmk_eval.config.variants import make_variant
from lmk_eval.model.batching import pad_windows
from lmk_eval.pooling import registry

PROMPT = "query: "
MAX_LENGTH = 40
K = 16  # mean_every_k's interval: longer than the tail window below
WORDS = (
    "landmark pooling keeps one state per chunk of text and averages them into the document"
    " vector while mean pooling averages every token state of the whole input"
).split()


@pytest.fixture(scope="module")
def long_text(text_encoder):
    """A text whose plain windows end with a tail shorter than K tokens (checked, not assumed)."""
    tok = text_encoder.tokenisation
    for n in range(60, 200):
        text = " ".join(WORDS[i % len(WORDS)] for i in range(n))
        windows = tok.windows(
            [text], make_variant("mean", max_length=MAX_LENGTH, strategy="window"), PROMPT
        )
        if len(windows) >= 3 and 6 < len(windows[-1].ids) < K:
            return text
    raise AssertionError("no text length gives a short tail window")


def window_states(text_encoder, text: str, variant):
    """Per window: (hidden states, pooled positions, marked positions, every layer's states),
    each window run through the model on its own."""
    out = []
    for w in text_encoder.tokenisation.windows([text], variant, PROMPT):
        ids, mask, _markers, _prompt = pad_windows([w])
        with torch.inference_mode():
            o = text_encoder.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        n = len(w.ids)
        pooled = torch.ones(n, dtype=torch.bool)
        if not variant.include_prompt:
            pooled[: w.prompt] = False
        marks = torch.tensor(w.markers, dtype=torch.bool)
        out.append(
            (o.last_hidden_state[0].float(), pooled, marks, [h[0].float() for h in o.hidden_states])
        )
    return out


def _per_window_mean(windows, fn):
    """The README's rule for poolings that are not exact under windows: each window's vector,
    weighted by the number of positions it pooled."""
    vecs = torch.stack([fn(h, p, layers) for h, p, _m, layers in windows])
    weights = torch.tensor([float(p.sum()) for _h, p, _m, _l in windows]).unsqueeze(-1)
    return (vecs * weights).sum(0) / weights.sum()


def _gem(h, p, p_exp=3.0, eps=1e-6):
    x = h[p]
    m = (torch.sign(x) * x.abs().clamp(min=eps) ** p_exp).mean(0)
    return torch.sign(m) * m.abs().clamp(min=eps) ** (1 / p_exp)


def reference(pooling: str, windows, k: int = K, lead: int = 0) -> torch.Tensor:
    all_pooled = torch.cat([h[p] for h, p, _m, _l in windows])
    # every window's text tokens from after its lead to its last chunk end
    if pooling == "late_chunking":
        return torch.cat(
            [h[lead : int(torch.nonzero(m).max()) + 1] for h, _p, m, _l in windows]
        ).mean(0)
    if pooling == "mean":
        return all_pooled.mean(0)
    if pooling == "max":
        return all_pooled.max(0).values
    if pooling == "mean_sqrt_len_tokens":
        return all_pooled.sum(0) / math.sqrt(len(all_pooled))
    if pooling in ("lmk", "multi_cls"):
        return torch.cat([h[p & m] for h, p, m, _l in windows]).mean(0)
    if pooling == "mean_every_k":
        kth = [h[(torch.arange(1, len(h) + 1) % k == 0) & p] for h, p, _m, _l in windows]
        kept = torch.cat(kth)
        return kept.mean(0) if len(kept) else all_pooled.mean(0)
    if pooling == "layer_mean":
        return torch.stack(
            [
                torch.cat([layers[i][p] for _h, p, _m, layers in windows]).mean(0)
                for i in range(-4, 0)
            ]
        ).mean(0)
    per_window = {
        "cls": lambda h, p, layers: h[p][0],
        "lasttoken": lambda h, p, layers: h[p][-1],
        "weightedmean": lambda h, p, layers: (
            (h * (torch.arange(1, len(h) + 1) * p).unsqueeze(-1)).sum(0)
            / (torch.arange(1, len(h) + 1) * p).sum()
        ),
        "layer_max_cls": lambda h, p, layers: (
            torch.stack([layer[p][0] for layer in layers[-4:]]).max(0).values
        ),
        "gem": lambda h, p, layers: _gem(h, p),
    }[pooling]
    return _per_window_mean(windows, per_window)


RUNNABLE = [n for n, p in registry.POOLINGS.items() if not p.needs_checkpoint and n != "native"]


@pytest.mark.parametrize("pooling", RUNNABLE)
@pytest.mark.parametrize("include_prompt", [True, False])
def test_window_merge_is_the_documented_one(text_encoder, long_text, pooling, include_prompt):
    v = make_variant(
        pooling,
        interval=K if pooling == "mean_every_k" else 8,
        max_length=MAX_LENGTH,
        strategy="window",
        include_prompt=include_prompt,
    )
    windows = window_states(text_encoder, long_text, v)
    assert len(windows) >= 3  # the text really was split
    lead = 1 + len(text_encoder.tokenisation.content_ids([PROMPT])[0])  # [CLS] and the prompt
    want = torch.nn.functional.normalize(reference(pooling, windows, lead=lead), dim=-1).numpy()
    got = text_encoder.encode([long_text, "a short one"], [v], PROMPT)[v][0]
    assert np.abs(got - want).max() < 1e-5


def test_mean_every_k_tail_window_adds_nothing(text_encoder, long_text):
    """The tail window is shorter than k: it has no k-th token, so it must not pull the vector
    towards its own token mean."""
    v = make_variant(
        "mean_every_k", interval=K, max_length=MAX_LENGTH, strategy="window", normalize=False
    )
    windows = window_states(text_encoder, long_text, v)
    assert len(windows[-1][0]) < K
    full = windows[:-1]
    want = torch.cat([h[torch.arange(1, len(h) + 1) % K == 0] for h, _p, _m, _l in full]).mean(0)
    got = text_encoder.encode([long_text], [v], PROMPT)[v][0]
    assert np.abs(got - want.numpy()).max() < 1e-5


def test_mean_every_k_falls_back_to_all_tokens_only_when_no_window_has_a_kth_token(
    text_encoder, long_text
):
    k = MAX_LENGTH + 1  # no window reaches it
    v = make_variant(
        "mean_every_k", interval=k, max_length=MAX_LENGTH, strategy="window", normalize=False
    )
    mean = make_variant("mean", max_length=MAX_LENGTH, strategy="window", normalize=False)
    out = text_encoder.encode([long_text], [v, mean], PROMPT)
    windows = window_states(text_encoder, long_text, v)
    want = torch.cat([h for h, _p, _m, _l in windows]).mean(0).numpy()
    assert np.abs(out[v][0] - want).max() < 1e-5
    assert np.abs(out[mean][0] - want).max() < 1e-5


def test_identical_windows_run_once_and_give_the_reference(text_encoder):
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. " * 12
    texts = [filler + f"The pass key is {key}. Remember it. " + filler for key in (123, 98765)]
    v = make_variant("lmk", interval=8, max_length=64, strategy="window")
    windows = text_encoder.tokenisation.windows(texts, v, PROMPT)
    before = (text_encoder.stats.windows, text_encoder.stats.reused_windows)
    got = text_encoder.encode(texts, [v], PROMPT)[v]
    ran = text_encoder.stats.windows - before[0]
    assert text_encoder.stats.reused_windows - before[1] == len(windows) - ran > 0
    for text, vec in zip(texts, got, strict=True):
        want = torch.nn.functional.normalize(
            reference("lmk", window_states(text_encoder, text, v)), dim=-1
        )
        assert np.abs(vec - want.numpy()).max() < 1e-5
