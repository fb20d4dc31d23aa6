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
    prompt_mask: Tensor | None = None  # (batch, seq) bool, the special tokens + prompt in front
    pooler: torch.nn.Module | None = None  # the pooling's own weights (lmk_eval.poolers), if any

    def pooled(self, v: Variant) -> Tensor:
        """Positions a pooling may average over: real tokens, less the prompt's when the variant
        does not include it (sentence-transformers' include_prompt=False)."""
        if v.include_prompt or self.prompt_mask is None:
            return self.attention_mask
        return self.attention_mask * (~self.prompt_mask).to(self.attention_mask.dtype)


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
    needs_checkpoint: bool = False  # its initial weights mean nothing: only a trained one runs

    @property
    def chunked(self) -> bool:
        return self.tokenisation != "plain"


def _count(mask: Tensor, like: Tensor) -> Tensor:
    return mask.sum(dim=1).to(like.dtype)


def _token_weighted(fn: Callable[[Tensor, Tensor], Tensor]) -> PoolFn:
    """A pooling over real tokens; its windows weigh by how many tokens they pooled."""

    def pool(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
        mask = x.pooled(v)
        return fn(x.hidden, mask), _count(mask, x.hidden)

    return pool


def _weightedmean(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
    mask = x.pooled(v)
    return pooling.weightedmean(x.hidden, x.attention_mask, mask), _count(mask, x.hidden)


def _marked(marks: Callable[[PoolInputs, Variant], Tensor]) -> PoolFn:
    """Mean over marked positions; a window weighs by how many it pooled (all tokens on fallback)."""

    def pool(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
        mask = x.pooled(v)
        marked = marks(x, v) & mask.bool()
        count = _count(marked, x.hidden)
        vec = pooling.marked_mean(x.hidden, mask, marked)
        return vec, torch.where(count > 0, count, _count(mask, x.hidden))

    return pool


def _layer_mean(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
    mask = x.pooled(v)
    stack = torch.stack(x.layers[-v.layers :])
    return pooling.layer_mean(stack, mask), _count(mask, x.hidden)


def _layer_max_cls(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
    mask = x.pooled(v)
    return pooling.layer_max_cls(torch.stack(x.layers[-v.layers :]), mask), _count(mask, x.hidden)


def _weighted(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
    """A pooling with weights: its module (loaded from the checkpoint) does the pooling."""
    mask = x.pooled(v)
    return x.pooler(x.hidden, mask, x.layers), _count(mask, x.hidden)


def _unresolved(x: PoolInputs, v: Variant) -> tuple[Tensor, Tensor]:
    raise RuntimeError("'native' is resolved to the model's own pooling before encoding")


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
        Pooling("weightedmean", "mean weighted by token position (1, 2, 3, ...)", _weightedmean),
        Pooling("mean_sqrt_len_tokens", "sum of token states divided by sqrt(number of tokens)",
                _token_weighted(pooling.mean_sqrt_len_tokens)),
        Pooling("lmk", "mean of landmark ([SEP]/</s>/EOS) states inserted after every chunk; [CLS] not pooled",
                _marked(lambda x, v: x.markers), (*_CHUNKING, "placement"), tokenisation="landmark"),
        Pooling("mean_every_k", "mean of every k-th token state, no special token inserted (control for lmk)",
                _marked(lambda x, v: pooling.every_kth_mask(x.attention_mask, v.interval)),
                ("interval",)),
        Pooling("multi_cls", "a [CLS] before every chunk; mean of those [CLS] states",
                _marked(lambda x, v: x.markers), _CHUNKING, tokenisation="multi_cls"),
        Pooling("layer_mean", "mean pooling averaged over the last N layers", _layer_mean,
                ("layers",), needs_layers=True),
        Pooling("layer_max_cls", "MaxPoolBERT: element-wise max of the [CLS] state over the last N layers",
                _layer_max_cls, ("layers",), needs_layers=True),
        Pooling("latent_attention", "NV-Embed latent attention (trained): token states cross-attend to 64"
                " learned latents, then the mean", _weighted, weights="trainable", needs_checkpoint=True),
        Pooling("multilayer_attention", "trained cross-attention of learned queries over every hidden"
                " layer's mean state", _weighted, weights="trainable", needs_layers=True,
                needs_checkpoint=True),
        Pooling("gem", "generalized mean with a learnable exponent p (3 until trained)", _weighted,
                weights="trainable"),
        Pooling("native", "the model as published: the pooling, normalisation and similarity of its"
                " own sentence-transformers config", _unresolved),
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
