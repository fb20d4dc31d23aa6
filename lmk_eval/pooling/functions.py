"""Pooling operators: pure functions from token states to one vector per row.

Every function takes ``hidden`` (batch, seq, dim), ``attention_mask`` (batch, seq; 1 = real token,
padding may sit on either side) and, where it needs one, ``marker_mask`` (batch, seq; 1 = a landmark
or a per-chunk CLS). None of them knows about tokenizers, models, mteb or files; the tokenisation
module decides which positions are markers.

Names and meanings follow sentence-transformers' ``Pooling`` module where they overlap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _real(attention_mask: Tensor, like: Tensor) -> Tensor:
    return attention_mask.to(like.dtype).unsqueeze(-1)


def cls(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """State of the first real token (the [CLS] slot), wherever left padding puts it."""
    first = attention_mask.int().argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0]), first]


def lasttoken(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """State of the last real token, robust to left or right padding."""
    seq = attention_mask.shape[1]
    last = seq - 1 - attention_mask.int().flip(dims=[1]).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0]), last]


def mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean over real tokens ([CLS] and [SEP] included, as sentence-transformers does)."""
    m = _real(attention_mask, hidden)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def mean_sqrt_len_tokens(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Sum over real tokens divided by the square root of their count."""
    m = _real(attention_mask, hidden)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9).sqrt()


def max(hidden: Tensor, attention_mask: Tensor) -> Tensor:  # noqa: A001 - the operator's name
    """Element-wise maximum over real tokens."""
    masked = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf"))
    return masked.max(dim=1).values


def weightedmean(hidden: Tensor, attention_mask: Tensor, pooled: Tensor | None = None) -> Tensor:
    """Position-weighted mean: the i-th real token weighs i (1-based), summed over ``pooled``
    positions (default: all real tokens; without the prompt, the text tokens keep their ranks).

    sentence-transformers weighs by absolute position, which equals this under right padding;
    counting real tokens only keeps the result independent of the padding side.
    """
    m = attention_mask.to(hidden.dtype)
    keep = m if pooled is None else pooled.to(hidden.dtype)
    weights = (m.cumsum(dim=1) * keep).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def marked_mean(
    hidden: Tensor, attention_mask: Tensor, marker_mask: Tensor, fallback: Tensor | None = None
) -> Tensor:
    """Mean over marked real positions; rows without any marker fall back to ``mean`` (pass it as
    ``fallback`` when it is already computed).

    This is LMK pooling (markers = landmark separators, the leading [CLS] unmarked) and
    multi-CLS pooling (markers = the [CLS] in front of every chunk).
    """
    marks = (marker_mask.bool() & attention_mask.bool()).to(hidden.dtype).unsqueeze(-1)
    count = marks.sum(dim=1)
    pooled = (hidden * marks).sum(dim=1) / count.clamp(min=1e-9)
    if fallback is None:
        fallback = mean(hidden, attention_mask)
    return torch.where(count > 0, pooled, fallback)


def chunk_means(hidden: Tensor, text_mask: Tensor, ends: Tensor) -> tuple[Tensor, Tensor]:
    """Late chunking: the mean state of each chunk, (batch, chunks, dim), and each chunk's token
    count, (batch, chunks). A chunk is the run of ``text_mask`` positions up to and including
    its ``ends`` marker; positions after a row's last marker belong to no chunk."""
    ends = ends.bool()
    before = ends.long().cumsum(dim=1) - ends.long()  # the chunk each position falls in
    n_ends = ends.sum(dim=1, keepdim=True)
    width = int(n_ends.max()) if n_ends.numel() else 0
    batch, _, dim = hidden.shape
    if width == 0:
        return hidden.new_zeros((batch, 0, dim)), hidden.new_zeros((batch, 0))
    inside = text_mask.bool() & (before < n_ends)
    index = before * inside  # positions outside any chunk add zero to chunk 0
    weight = inside.to(hidden.dtype)
    sums = hidden.new_zeros((batch, width, dim)).scatter_add_(
        1, index.unsqueeze(-1).expand(-1, -1, dim), hidden * weight.unsqueeze(-1)
    )
    counts = hidden.new_zeros((batch, width)).scatter_add_(1, index, weight)
    return sums / counts.clamp(min=1).unsqueeze(-1), counts


def every_kth_mask(attention_mask: Tensor, k: int) -> Tensor:
    """Marks the k-th, 2k-th, ... real token of each row (the authors' no-special-token control)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = attention_mask.long().cumsum(dim=1) * attention_mask.long()
    return (rank > 0) & (rank % k == 0)


def mean_every_k(hidden: Tensor, attention_mask: Tensor, k: int) -> Tensor:
    """Mean over every k-th real position, falling back to ``mean`` when a row is shorter than k."""
    return marked_mean(hidden, attention_mask, every_kth_mask(attention_mask, k))


def layer_mean(layers: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean pooling of each of the given layers (layers, batch, seq, dim), averaged over layers."""
    return torch.stack([mean(layer, attention_mask) for layer in layers]).mean(dim=0)


def normalize(vectors: Tensor) -> Tensor:
    return F.normalize(vectors, p=2, dim=-1)


def layer_max_cls(layers: Tensor, attention_mask: Tensor) -> Tensor:
    """MaxPoolBERT: element-wise max over the [CLS] state of each given layer (layers, batch, ...)."""
    return torch.stack([cls(layer, attention_mask) for layer in layers]).max(dim=0).values


def gem(hidden: Tensor, attention_mask: Tensor, p: Tensor | float, eps: float = 1e-6) -> Tensor:
    """Generalized mean with exponent p over real tokens, sign-preserving: sign(m) |m|^(1/p) for
    m = mean(sign(x) |x|^p). p = 1 is ``mean``; large p approaches max |x|."""
    powered = torch.sign(hidden) * hidden.abs().clamp(min=eps) ** p
    powered = powered.masked_fill(attention_mask.unsqueeze(-1) == 0, 0.0)  # padding may overflow
    m = mean(powered, attention_mask)
    return torch.sign(m) * m.abs().clamp(min=eps) ** (1.0 / p)
