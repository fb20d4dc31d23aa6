"""Attention past the trained length: LongEmbed's log-n scaling, a fixed temperature, SelfExtend.

All three change only the attention of inputs longer than the model's P trained positions, and
they do it through transformers' attention interface: a registered attention function
(``lmk_eval_<base>``) wraps the implementation the model already uses (sdpa or eager; flash and
flex kernels may pack rows, so they are refused) and reads what to do for the current batch from
``planned(...)``; with no plan it calls the base with the same arguments. The encoder switches a model to the wrapper only for the forward pass of
its long inputs, so inputs that fit never touch it (bit-identical by construction, tested).

- ``logn``: queries x max(1, ln n / ln P), n each input's real token count (LongEmbed's
  ``custom_bert_attn_forward`` with base 512, its Mistral attention with base 4096: both the
  model's trained length).
- ``temperature:T``: softmax(QK^T / (sqrt(d) T)) in every layer ("Length-Induced Embedding
  Collapse", TempScale): queries x 1 / T.
- SelfExtend (LongEmbed's ``self_extend_patch.py``): a pair of tokens closer than the neighbour
  window w attends with its true relative position; farther pairs with grouped positions
  floor(i / g) - floor(j / g) +- (w - floor(w / g)) (the sign of i - j), so the two regions join.
  Bidirectional for encoders, causal for decoders; only on layers with global attention (a
  sliding-window layer never sees a pair w apart). Computed eagerly (O(n^2) per head), as
  LongEmbed's encoder path does.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.reading.scales import LOGN, TEMPERATURE, parse_scale

PREFIX = "lmk_eval_"
# one padded row per input; flash and flex kernels may pack rows together
WRAPPABLE = (
    "sdpa",
    "eager",
)
BLOCK_SCORES = 2**24  # attention scores held at once by SelfExtend (x3 float32 matrices, 192 MiB)


def scale_factors(lengths: torch.Tensor, positions: int, scale: str) -> torch.Tensor:
    """Per input, what its queries are multiplied by: exactly 1 for an input of at most
    ``positions`` tokens, else max(1, ln n / ln P) (``logn``) or 1 / T (``temperature:T``)."""
    kind, t = parse_scale(scale)
    n = lengths.to(torch.float64)
    long = n > positions
    if kind == LOGN:
        factor = torch.clamp(torch.log(n.clamp(min=1)) / math.log(positions), min=1.0)
    elif kind == TEMPERATURE:
        factor = torch.full_like(n, 1.0 / t)
    else:
        factor = torch.ones_like(n)
    return torch.where(long, factor, torch.ones_like(n))


@dataclass(frozen=True)
class SelfExtend:
    group: int
    window: int
    inv_freq: torch.Tensor  # the rotary frequencies of the model's global-attention layers


@dataclass(frozen=True)
class Plan:
    """What the wrapped attention does for one batch (every row longer than the positions)."""

    mask: torch.Tensor  # (batch, seq) 1 = real token (right padding)
    scale: torch.Tensor | None = None  # (batch,) query multipliers
    self_extend: SelfExtend | None = None


_PLAN: ContextVar[Plan | None] = ContextVar("lmk_eval_attention_plan", default=None)


def check_implementation(attn_implementation: str | None) -> None:
    """One line, before any work, when an attention scale or SelfExtend meets a kernel it cannot wrap."""
    if attn_implementation is not None and attn_implementation not in WRAPPABLE:
        raise LmkEvalError(
            f"attention scaling and self-extend run through sdpa or eager attention, not"
            f" {attn_implementation}; drop --attn-implementation or use sdpa"
        )


def global_frequencies(model) -> torch.Tensor:
    """The rotary inverse frequencies SelfExtend re-rotates queries and keys with: those of the
    global-attention layers (ModernBERT keeps one set per layer type), else the model's one set."""
    rotary = getattr(getattr(model, "base_model", model), "rotary_emb", None)
    if rotary is None:
        raise LmkEvalError(
            "--strategy self-extend needs a rotary (RoPE) model; this one has no rotary embedding"
        )
    found = getattr(rotary, "full_attention_inv_freq", None)
    found = getattr(rotary, "inv_freq", None) if found is None else found
    if found is None:
        raise LmkEvalError(
            "--strategy self-extend: the model's rotary embedding exposes no frequencies"
        )
    return found


@contextmanager
def planned(model, plan: Plan) -> Iterator[None]:
    """Run ``model``'s forward passes under ``plan``: its attention switched to the wrapper of
    the implementation it uses now, and back afterwards."""
    base = model.config._attn_implementation or "eager"
    check_implementation(base)
    name = _register(base)
    token = _PLAN.set(plan)
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(base)
        _PLAN.reset(token)


def _register(base: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = PREFIX + base
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _wrapper(base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def _base_function(module, base: str):
    if base == "eager":  # each modeling file keeps its own eager function
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers import AttentionInterface

    return AttentionInterface._global_mapping[base]


def _wrapper(base: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        plan = _PLAN.get()
        if plan is not None and plan.scale is not None:
            query = query * plan.scale.to(query.dtype).view(-1, 1, 1, 1)
        if (
            plan is not None
            and plan.self_extend is not None
            and getattr(module, "sliding_window", None) is None
        ):
            return self_extended(module, query, key, value, plan, kwargs.get("scaling"))
        return _base_function(module, base)(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = PREFIX + base
    return attention


def _rotate(x: torch.Tensor, shift: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """``x`` (batch, heads, seq, dim), already rotated at its true positions, rotated further by
    ``shift`` (seq,) positions (RoPE's rotate-half layout): R(p + s) x = R(s) R(p) x."""
    angles = shift.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    half = x.shape[-1] // 2
    rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * emb.cos() + rotated_half * emb.sin()


def self_extended(module, query, key, value, plan: Plan, scaling: float | None):
    """SelfExtend attention for one layer; queries and keys arrive rotated at positions 0..n-1.
    Computed in float32, a block of query rows at a time so memory stays O(block x n)."""
    se = plan.self_extend
    inv_freq = se.inv_freq
    dtype = query.dtype
    q, k, v = query.float(), key.float(), value.float()
    if k.shape[1] != q.shape[1]:  # grouped-query attention: share each key/value head
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    batch, heads, seq, _ = q.shape
    pos = torch.arange(seq, device=q.device)
    g, w = se.group, se.window
    join = w - w // g  # shifts the grouped positions so they continue the neighbour window's
    grouped = pos // g - pos  # rotates position i on to floor(i / g)
    # key before query
    q_lower, k_lower = (
        _rotate(q, grouped + join, inv_freq),
        _rotate(k, grouped, inv_freq),
    )
    # key after query
    q_upper, k_upper = (
        _rotate(q, grouped, inv_freq),
        _rotate(k, grouped + join, inv_freq),
    )
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    keys_allowed = plan.mask.bool()[:, None, None, :seq]
    causal = bool(getattr(module, "is_causal", False))
    block = max(1, BLOCK_SCORES // max(1, batch * heads * seq))
    out = torch.empty_like(q)
    for lo in range(0, seq, block):
        rows = slice(lo, min(seq, lo + block))
        distance = pos[rows, None] - pos[None, :]  # i - j
        scores = (
            torch.where(
                distance >= w,
                q_lower[:, :, rows] @ k_lower.transpose(-1, -2),
                torch.where(
                    distance <= -w,
                    q_upper[:, :, rows] @ k_upper.transpose(-1, -2),
                    q[:, :, rows] @ k.transpose(-1, -2),
                ),
            )
            * scale
        )
        allowed = keys_allowed & (distance >= 0) if causal else keys_allowed
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        out[:, :, rows] = torch.softmax(scores, dim=-1) @ v
    return out.to(dtype).transpose(1, 2).contiguous(), None
