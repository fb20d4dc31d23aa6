"""The pooling registry: the one place that says what each pooling is.

Per pooling: its pure function (``pooling.py``), the options that change its output, how its text
is tokenised (plain, landmarks, or a [CLS] per chunk), how the windows of one long text are merged,
and whether it carries trainable weights. Variants, the encoder, the sentence-transformers modules
and ``lmk-eval list`` all read this table; adding a pooling means one entry here (and its function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from . import pooling

if TYPE_CHECKING:
    from .variants import Variant

Tensor = torch.Tensor
Tokenisation = Literal["plain", "landmark", "multi_cls"]
Combine = Literal["weighted_mean", "max"]


class PoolInputs(NamedTuple):
    """What a pooling may look at for one batch of windows."""

    hidden: Tensor  # (batch, seq, dim) final hidden states
    attention_mask: Tensor  # (batch, seq), 1 = real token
    markers: Tensor  # (batch, seq) bool, positions the tokenisation marked (landmarks, chunk CLS)
    layers: tuple[Tensor, ...] | None  # every layer's states, when the pooling asked for them


# A pooling returns one vector per window and the weight that window gets when the windows of a
# text are merged: the number of positions it pooled, so that a text's vector is the same mean
# whether its positions arrived in one window or in several.
PoolFn = Callable[[PoolInputs, "Variant"], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Pooling:
    name: str
    summary: str
    pool: PoolFn
    options: tuple[str, ...] = ()  # Variant fields that change the output (besides length/strategy)
    tokenisation: Tokenisation = "plain"
    combine: Combine = "weighted_mean"
    weights: Literal["none", "trainable"] = "none"
    needs_layers: bool = False

    @property
    def chunked(self) -> bool:
        return self.tokenisation != "plain"


def _real_tokens(x: PoolInputs) -> Tensor:
    return x.attention_mask.sum(dim=1).to(x.hidden.dtype)


def _token_weighted(fn: Callable[[Tensor, Tensor], Tensor]) -> PoolFn:
    """A pooling over all real tokens; its windows weigh by their token counts."""
    return lambda x, v: (fn(x.hidden, x.attention_mask), _real_tokens(x))


def _marked(marks: Callable[[PoolInputs, Variant], Tensor]) -> PoolFn:
    """Mean over marked positions; a window weighs by how many it pooled (all tokens on fallback)."""

    def pool(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
        marked = marks(x, v) & x.attention_mask.bool()
        count = marked.sum(dim=1).to(x.hidden.dtype)
        vec = pooling.marked_mean(x.hidden, x.attention_mask, marked)
        return vec, torch.where(count > 0, count, _real_tokens(x))

    return pool


def _layer_mean(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
    stack = torch.stack(x.layers[-v.layers :])
    return pooling.layer_mean(stack, x.attention_mask), _real_tokens(x)


_CHUNKING = ("granularity", "interval", "intervals", "seed")
POOLINGS: dict[str, Pooling] = {
    p.name: p
    for p in [
        Pooling("cls", "hidden state of the leading [CLS] token", _token_weighted(pooling.cls)),
        Pooling("mean", "mean of all real token states (sentence-transformers' default)",
                _token_weighted(pooling.mean)),
        Pooling("max", "element-wise max over real token states", _token_weighted(pooling.max),
                combine="max"),
        Pooling("lasttoken", "hidden state of the last real token",
                _token_weighted(pooling.lasttoken)),
        Pooling("weightedmean", "mean weighted by token position (1, 2, 3, ...)",
                _token_weighted(pooling.weightedmean)),
        Pooling("mean_sqrt_len_tokens", "sum of token states divided by sqrt(number of tokens)",
                _token_weighted(pooling.mean_sqrt_len_tokens)),
        Pooling("lmk", "mean of landmark ([SEP]/</s>) states inserted after every chunk; [CLS] not pooled",
                _marked(lambda x, v: x.markers), _CHUNKING, tokenisation="landmark"),
        Pooling("mean_every_k", "mean of every k-th token state, no special token inserted (control for lmk)",
                _marked(lambda x, v: pooling.every_kth_mask(x.attention_mask, v.interval)),
                ("interval",)),
        Pooling("multi_cls", "a [CLS] before every chunk; mean of those [CLS] states",
                _marked(lambda x, v: x.markers), _CHUNKING, tokenisation="multi_cls"),
        Pooling("layer_mean", "mean pooling averaged over the last N layers", _layer_mean,
                ("layers",), needs_layers=True),
    ]
}  # fmt: skip


def get(name: str) -> Pooling:
    return POOLINGS[name]


def pool_batch(variant: Variant, inputs: PoolInputs) -> tuple[Tensor, Tensor]:
    """Per-window vectors (unnormalised) and their merge weights, for one variant."""
    return POOLINGS[variant.pooling].pool(inputs, variant)


def combine_windows(variant: Variant, vectors: list[Tensor], weights: list[float]) -> Tensor:
    """One vector per text: a single window is used as is; several merge as the registry says."""
    if len(vectors) == 1:
        return vectors[0]
    stacked = torch.stack(vectors)
    if POOLINGS[variant.pooling].combine == "max":
        return stacked.max(dim=0).values
    w = torch.tensor(weights, dtype=stacked.dtype).unsqueeze(-1)
    return (stacked * w).sum(dim=0) / w.sum()
