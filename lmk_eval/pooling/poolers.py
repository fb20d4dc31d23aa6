"""Poolers with weights of their own, from the pooling literature.

- ``latent_attention`` (NV-Embed; the LMK authors' learned baseline, with their defaults): token
  states, layer-normed, cross-attend to a trainable array of 64 latents (12 heads of the model's
  width), then a GEGLU feed-forward (x4), both residual; then the mean over real tokens.
- ``multilayer_attention`` ("Pooling and Attention: What Are Effective Designs for LLM-Based
  Embedding Models?"): the mean-pooled state of every hidden layer, plus a learned layer embedding,
  is attended by trainable queries (cross-attention over layers, then a feed-forward); the mean of
  the query outputs is the embedding.
- ``gem`` (generalized mean): a learnable exponent p, initialised at 3: sign(m) |m|^(1/p) with
  m the mean of sign(x) |x|^p over real tokens (sign-preserving, since transformer states are not
  non-negative like the CNN activations GeM was made for).

Each is a torch module so that sentence-transformers trains and saves its weights with the
checkpoint; the arithmetic is plain tensor operations on (states, mask). ``layer_max_cls``
(MaxPoolBERT) needs no weights and lives with the other pure poolings in ``pooling.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.pooling import functions as pooling

Tensor = torch.Tensor


class _CrossAttention(nn.Module):
    """Multi-head attention of ``x`` onto ``context`` (pre-norm on both, no bias), as the authors'."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, inner = heads, heads * dim_head
        self.norm, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b = x.shape[0]
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(self.norm_context(context)).chunk(2, dim=-1)
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.to_out(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class _FeedForward(nn.Module):
    """Pre-norm GEGLU feed-forward, width x ``mult``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.inner = nn.Linear(dim, dim * mult * 2)
        self.outer = nn.Linear(dim * mult, dim)

    def forward(self, x: Tensor) -> Tensor:
        h, gates = self.inner(self.norm(x)).chunk(2, dim=-1)
        return self.outer(h * F.gelu(gates))


class LatentAttention(nn.Module):
    def __init__(
        self, dim: int, latents: int = 64, heads: int = 12, dim_head: int | None = None
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim))
        self.attend = _CrossAttention(dim, heads, dim_head or dim)
        self.feed = _FeedForward(dim)

    def forward(self, hidden: Tensor, mask: Tensor, layers: Any = None) -> Tensor:
        context = self.latents.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        x = self.attend(hidden, context) + hidden
        x = self.feed(x) + x
        return pooling.mean(x, mask)


class MultiLayerAttention(nn.Module):
    def __init__(self, dim: int, layers: int, queries: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.layer_embedding = nn.Parameter(torch.zeros(layers, dim))
        self.queries = nn.Parameter(torch.randn(queries, dim) * dim**-0.5)
        self.attend = _CrossAttention(dim, heads, dim // heads)
        self.feed = _FeedForward(dim)

    def forward(self, hidden: Tensor, mask: Tensor, layers: tuple[Tensor, ...]) -> Tensor:
        per_layer = torch.stack([pooling.mean(h, mask) for h in layers], dim=1)  # (batch, L, dim)
        per_layer = per_layer + self.layer_embedding[: per_layer.shape[1]].to(per_layer.dtype)
        q = self.queries.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        x = self.attend(q, per_layer) + q
        x = self.feed(x) + x
        return x.mean(dim=1)


class GeM(nn.Module):
    def __init__(self, p: float = 3.0) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))

    def forward(self, hidden: Tensor, mask: Tensor, layers: Any = None) -> Tensor:
        return pooling.gem(hidden, mask, self.p)


POOLERS: dict[str, type[nn.Module]] = {
    "latent_attention": LatentAttention,
    "multilayer_attention": MultiLayerAttention,
    "gem": GeM,
}


def option_names(name: str) -> list[str]:
    """The architecture options a pooler takes (its constructor's keyword arguments)."""
    params = inspect.signature(POOLERS[name].__init__).parameters
    return [p for p in params if p not in ("self", "dim", "layers")]  # those come from the model


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an option the pooler does not take, before any training starts."""
    unknown = sorted(set(options) - set(option_names(name)))
    if unknown:
        raise LmkEvalError(
            f"[train] pooler option(s) {unknown} are not options of {name} "
            f"(it takes {option_names(name)}); train poolers with different "
            "options in separate [train] runs"
        )


def build(name: str, dim: int, n_layers: int, options: dict[str, Any]) -> nn.Module:
    """A freshly initialised pooler (its options are saved with the checkpoint and read back)."""
    if name not in POOLERS:
        raise ValueError(f"{name} has no weights")
    check_options(name, options)
    params = inspect.signature(POOLERS[name].__init__).parameters
    shape = {k: v for k, v in {"dim": dim, "layers": n_layers}.items() if k in params}
    return POOLERS[name](**shape, **options)
