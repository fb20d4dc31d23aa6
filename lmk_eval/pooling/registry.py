"""The pooling registry: the one place that says what each pooling is.

Per pooling: its pure function (``pooling.py``), the options that change its output, how its text
is tokenised (plain, landmarks, or a [CLS] per chunk), how the windows of one long text are merged,
and whether it carries trainable weights. Variants, the encoder, the sentence-transformers modules
and ``lmk-eval list`` all read this table; adding a pooling means one entry here (and its function).
The table itself imports no torch (``_ops()`` loads the pure functions on the first batch), so
listing, checking or planning poolings stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    import torch
    from torch import Tensor


class Variant(Protocol):
    """What a pooling function reads of a variant (``variants.Variant`` has it all): declared here
    so that the registry, which variants are built from, imports nothing above it."""

    pooling: str
    include_prompt: bool
    interval: int
    layers: int


Tokenisation = Literal["plain", "landmark", "multi_cls", "chunk_ends"]


def _ops():
    """``pooling.py`` (and torch), loaded on first use rather than with the table."""
    from lmk_eval.pooling import functions as pooling

    return pooling


class PoolInputs(NamedTuple):
    """What a pooling may look at for one batch of windows."""

    hidden: Tensor  # (batch, seq, dim) final hidden states
    attention_mask: Tensor  # (batch, seq), 1 = real token
    markers: Tensor  # (batch, seq) bool, positions the tokenisation marked (landmarks, chunk CLS)
    layers: tuple[Tensor, ...] | None  # every layer's states, when the pooling asked for them
    prompt_mask: Tensor | None = None  # (batch, seq) bool, the special tokens + prompt in front
    # the pooling's own weights (lmk_eval.pooling.poolers), if any
    pooler: torch.nn.Module | None = None
    shared: dict | None = None  # results several poolings of this batch need, computed once

    def mean(self, v: Variant) -> Tensor:
        """The all-token mean over ``pooled(v)``: mean pooling, and every marked pooling's
        fallback, read it from one computation per batch."""
        shared = {} if self.shared is None else self.shared
        key = ("mean", v.include_prompt or self.prompt_mask is None)
        if key not in shared:
            shared[key] = _ops().mean(self.hidden, self.pooled(v))
        return shared[key]

    def pooled(self, v: Variant) -> Tensor:
        """Positions a pooling may average over: real tokens, less the prompt's when the variant
        does not include it (sentence-transformers' include_prompt=False)."""
        if v.include_prompt or self.prompt_mask is None:
            return self.attention_mask
        return self.attention_mask * (~self.prompt_mask).to(self.attention_mask.dtype)


class WindowPart(NamedTuple):
    """What one window (a row of the batch) contributes to its text's vector.

    A text read in several windows gets the merge its pooling's ``combine`` names; ``weight`` is
    the window's share in it (0 = the window adds nothing, e.g. no landmark in it), ``fallback``
    what the text gets when none of its windows has any weight (the all-token mean, weighed by
    ``fallback_weight`` tokens): marked poolings fall back per text, never per window.
    """

    vector: Tensor  # (batch, dim) the pooled vector of this window alone (unnormalised)
    weight: Tensor  # (batch,)
    fallback: Tensor | None = None  # (batch, dim)
    fallback_weight: Tensor | None = None  # (batch,)
    # (batch, chunks, dim) a multi-vector pooling's vectors (unnormalised)
    chunks: Tensor | None = None
    # (batch, chunks) tokens in each; 0 = no such chunk in this row
    chunk_counts: Tensor | None = None

    def cpu(self) -> WindowPart:
        return WindowPart(*(None if t is None else t.float().cpu() for t in self))

    def row(self, i: int) -> WindowPart:
        return WindowPart(*(None if t is None else t[i] for t in self))


PoolFn = Callable[[PoolInputs, Variant], WindowPart]

# How the windows of one text (``--strategy window``) become its vector. "weighted_mean": the
# windows' vectors weighted by ``weight``; a pooling whose weight is the number of positions it
# averaged (mean, lmk, multi_cls, mean_every_k, layer_mean) then gives exactly the mean over all
# those positions of all windows, as if they had come from one input. "max": element-wise max
# (exactly the max over all tokens). "sqrt_len": sum over all tokens / sqrt(their number).
Combine = Literal["weighted_mean", "max", "sqrt_len"]


@dataclass(frozen=True)
class Pooling:
    name: str
    summary: str
    pool: PoolFn
    options: tuple[str, ...] = ()  # Variant fields that change the output (besides length/strategy)
    tokenisation: Tokenisation = "plain"
    combine: Combine = "weighted_mean"
    under_window: str = "the pooling per window, then the mean over windows weighted by each window's pooled token count"
    weights: Literal["none", "trainable"] = "none"
    # documents are scored by their best chunk vector (the search keeps the max)
    multi_vector: bool = False
    needs_layers: bool = False
    needs_checkpoint: bool = False  # its initial weights mean nothing: only a trained one runs

    @property
    def chunked(self) -> bool:
        return self.tokenisation != "plain"

    @property
    def token_options(self) -> tuple[str, ...]:
        """The options that change this pooling's token sequence (not only how it pools it)."""
        return tuple(o for o in self.options if o in TOKEN_OPTIONS) if self.chunked else ()


def _count(mask: Tensor, like: Tensor) -> Tensor:
    return mask.sum(dim=1).to(like.dtype)


def _token_weighted(name: str) -> PoolFn:
    """A pooling over the window's real tokens (``pooling.<name>``); its window weighs by how
    many tokens it pooled."""

    def pool(x: PoolInputs, v: Variant) -> WindowPart:
        mask = x.pooled(v)
        return WindowPart(getattr(_ops(), name)(x.hidden, mask), _count(mask, x.hidden))

    return pool


def _mean(x: PoolInputs, v: Variant) -> WindowPart:
    return WindowPart(x.mean(v), _count(x.pooled(v), x.hidden))


def _weightedmean(x: PoolInputs, v: Variant) -> WindowPart:
    mask = x.pooled(v)
    return WindowPart(_ops().weightedmean(x.hidden, x.attention_mask, mask), _count(mask, x.hidden))


def _marked(marks: Callable[[PoolInputs, Variant], Tensor]) -> PoolFn:
    """Mean over marked positions; a window weighs by how many it marked (0 when none), and the
    all-token mean is kept aside for a text none of whose windows has a marked position."""

    def pool(x: PoolInputs, v: Variant) -> WindowPart:
        mask = x.pooled(v)
        marked = marks(x, v) & mask.bool()
        everything = x.mean(v)
        vec = _ops().marked_mean(x.hidden, mask, marked, fallback=everything)
        return WindowPart(vec, _count(marked, x.hidden), everything, _count(mask, x.hidden))

    return pool


def _late_chunks(x: PoolInputs, v: Variant) -> WindowPart:
    """Late chunking: each chunk's text tokens mean-pooled after the pass over the whole input;
    the text's single vector (what a query uses) is the mean over all its chunked tokens."""
    import torch

    text = x.attention_mask.bool()
    if x.prompt_mask is not None:  # the special tokens and prompt in front belong to no chunk
        text = text & ~x.prompt_mask.bool()
    means, counts = _ops().chunk_means(x.hidden, text, x.markers)
    total = counts.sum(dim=1)
    everything = x.mean(v)
    vec = (means * counts.unsqueeze(-1)).sum(dim=1) / total.clamp(min=1).unsqueeze(-1)
    vec = torch.where(total.unsqueeze(-1) > 0, vec, everything)
    return WindowPart(vec, total, everything, _count(x.pooled(v), x.hidden), means, counts)


def _layer_mean(x: PoolInputs, v: Variant) -> WindowPart:
    import torch

    mask = x.pooled(v)
    stack = torch.stack(x.layers[-v.layers :])
    return WindowPart(_ops().layer_mean(stack, mask), _count(mask, x.hidden))


def _layer_max_cls(x: PoolInputs, v: Variant) -> WindowPart:
    import torch

    mask = x.pooled(v)
    stack = torch.stack(x.layers[-v.layers :])
    return WindowPart(_ops().layer_max_cls(stack, mask), _count(mask, x.hidden))


def _weighted(x: PoolInputs, v: Variant) -> WindowPart:
    """A pooling with weights: its module (loaded from the checkpoint) does the pooling."""
    mask = x.pooled(v)
    return WindowPart(x.pooler(x.hidden, mask, x.layers), _count(mask, x.hidden))


def _unresolved(x: PoolInputs, v: Variant) -> WindowPart:
    raise RuntimeError("'native' is resolved to the model's own pooling before encoding")


_CHUNKING = ("granularity", "interval", "intervals", "seed")
TOKEN_OPTIONS = (*_CHUNKING, "placement")  # of a chunked pooling: these change its tokens
_EXACT = "exactly the mean over all {} of all windows (each window weighs by how many it has)"
POOLINGS: dict[str, Pooling] = {
    p.name: p
    for p in [
        Pooling(
            "cls",
            "hidden state of the leading [CLS] token",
            _token_weighted("cls"),
            under_window="each window's [CLS] state, mean over windows weighted by each window's pooled token count",
        ),
        Pooling(
            "mean",
            "mean of all real token states (sentence-transformers' default)",
            _mean,
            under_window=_EXACT.format("pooled tokens"),
        ),
        Pooling(
            "max",
            "element-wise max over real token states",
            _token_weighted("max"),
            combine="max",
            under_window="element-wise max over all pooled tokens of all windows (exact)",
        ),
        Pooling(
            "lasttoken",
            "hidden state of the last real token",
            _token_weighted("lasttoken"),
            under_window="each window's last pooled token state, mean over windows weighted by pooled token count",
        ),
        Pooling(
            "weightedmean",
            "mean weighted by token position (1, 2, 3, ...)",
            _weightedmean,
            under_window="the position-weighted mean per window (positions restart at 1 in each window), mean over windows weighted by pooled token count",
        ),
        Pooling(
            "mean_sqrt_len_tokens",
            "sum of token states divided by sqrt(number of tokens)",
            _token_weighted("mean_sqrt_len_tokens"),
            combine="sqrt_len",
            under_window="sum over all pooled tokens of all windows / sqrt(their number) (exact)",
        ),
        Pooling(
            "lmk",
            "mean of landmark ([SEP]/</s>/EOS) states inserted after every chunk; [CLS] not pooled",
            _marked(lambda x, v: x.markers),
            TOKEN_OPTIONS,
            tokenisation="landmark",
            under_window=_EXACT.format("landmark states") + "; windows are cut at landmarks",
        ),
        Pooling(
            "mean_every_k",
            "mean of every k-th token state, no special token inserted (control for lmk)",
            _marked(lambda x, v: _ops().every_kth_mask(x.attention_mask, v.interval)),
            ("interval",),
            under_window="mean over every k-th token of each window (ranks counted from each window's [CLS]), all windows together;"
            " a window shorter than k adds nothing; the all-token mean only when no window has a k-th token",
        ),
        Pooling(
            "multi_cls",
            "a [CLS] before every chunk; mean of those [CLS] states",
            _marked(lambda x, v: x.markers),
            _CHUNKING,
            tokenisation="multi_cls",
            under_window=_EXACT.format("chunk [CLS] states")
            + "; each window ends with the tokenizer's own suffix",
        ),
        Pooling(
            "late_chunking",
            "late chunking: one pass over the text, each chunk's tokens mean-pooled; a document"
            " scores as its best chunk (multi-vector), a query as the mean of its chunked tokens",
            _late_chunks,
            _CHUNKING,
            tokenisation="chunk_ends",
            multi_vector=True,
            under_window="each window's chunks (windows are cut at chunk ends) kept as the document's"
            " vectors; the single vector is " + _EXACT.format("chunked text tokens"),
        ),
        Pooling(
            "layer_mean",
            "mean pooling averaged over the last N layers",
            _layer_mean,
            ("layers",),
            needs_layers=True,
            under_window=_EXACT.format("pooled tokens") + ", per layer",
        ),
        Pooling(
            "layer_max_cls",
            "MaxPoolBERT: element-wise max of the [CLS] state over the last N layers",
            _layer_max_cls,
            ("layers",),
            needs_layers=True,
        ),
        Pooling(
            "latent_attention",
            "NV-Embed latent attention (trained): token states cross-attend to 64"
            " learned latents, then the mean",
            _weighted,
            weights="trainable",
            needs_checkpoint=True,
        ),
        Pooling(
            "multilayer_attention",
            "trained cross-attention of learned queries over every hidden layer's mean state",
            _weighted,
            weights="trainable",
            needs_layers=True,
            needs_checkpoint=True,
        ),
        Pooling(
            "gem",
            "generalized mean with a learnable exponent p (3 until trained)",
            _weighted,
            weights="trainable",
        ),
        Pooling(
            "native",
            "the model as published: the pooling, normalisation and similarity of its"
            " own sentence-transformers config",
            _unresolved,
            under_window="as the pooling the model's config names",
        ),
    ]
}


def get(name: str) -> Pooling:
    return POOLINGS[name]


def pool_batch(variant: Variant, inputs: PoolInputs) -> WindowPart:
    """Per-window vectors (unnormalised) and what each contributes when windows merge."""
    return POOLINGS[variant.pooling].pool(inputs, variant)


def merge_windows(variant: Variant, parts: Sequence[WindowPart]) -> Tensor:
    """One vector per text from its windows' parts (each one row: vector (dim,), weight ()), as
    the pooling's ``combine`` says; a single window is used as it is."""
    import torch

    if len(parts) == 1:
        return parts[0].vector
    combine = POOLINGS[variant.pooling].combine
    vectors = torch.stack([p.vector for p in parts])
    if combine == "max":
        return vectors.max(dim=0).values
    weights = torch.stack([p.weight for p in parts]).to(vectors.dtype)
    if not bool(weights.sum() > 0) and parts[0].fallback is not None:  # no window marked anything
        vectors = torch.stack([p.fallback for p in parts])
        weights = torch.stack([p.fallback_weight for p in parts]).to(vectors.dtype)
    if combine == "sqrt_len":  # each window is sum/sqrt(n): sum of sums / sqrt(total n)
        return (vectors * weights.sqrt().unsqueeze(-1)).sum(dim=0) / weights.sum().sqrt()
    w = weights.unsqueeze(-1)
    return (vectors * w).sum(dim=0) / w.sum()
