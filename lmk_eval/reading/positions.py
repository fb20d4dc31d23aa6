"""Reading more tokens than an encoder was trained on (LongEmbed's methods).

For an input of n tokens and a model with P trained positions, absolute-position encoders:

- ``grouped``:     position id = pid // ceil(n / P)   (neighbours share a position)
- ``recurrent``:   position id = pid % P              (positions start over every P tokens)
- ``interpolate``: the position-embedding table linearly interpolated from P rows to n rows

and rotary (RoPE) encoders, through transformers' own rotary embedding with a config that reads
max_length = L tokens (factor f = L / P):

- ``rope-ntk``:  NTK-aware base scaling, rope_theta x f^(d / (d - 2)) for rotary dimension d
- ``rope-yarn``: transformers' ``yarn`` rope type with factor f and P original positions

An input that fits (n <= P) keeps positions 0..n-1 and the original rotary frequencies, so every
strategy gives exactly ``truncate``'s embedding there (tested): remaps are per input, by its own
length, and rotary scaling applies only to inputs longer than P (the encoder runs those through a
second copy of the model built with the scaled config). Landmarks and chunk markers are positions
in the token sequence, inserted before any remapping, so every pooling runs under every strategy.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.reading.strategies import Strategy

# positions start at padding_idx + 1
OFFSET_TYPES = {
    "roberta",
    "xlm-roberta",
    "camembert",
    "mpnet",
}


def remap(n: int, positions: int, strategy: Strategy) -> list[int]:
    """Integer position ids (0-based, before any model offset) of an n-token input; empty for a
    long input whose embeddings are interpolated instead."""
    if n <= positions:
        return list(range(n))
    return strategy.remap(n, positions) if strategy.remap else []


def interpolated(table: torch.Tensor, n: int) -> torch.Tensor:
    """(P, dim) position embeddings stretched linearly to (n, dim), first and last rows kept."""
    stretched = F.interpolate(table.T.unsqueeze(0), size=n, mode="linear", align_corners=True)
    return stretched.squeeze(0).T


def position_table(model) -> tuple[torch.nn.Embedding, int] | None:
    """(the model's absolute position-embedding table, offset of position 0), or None for a model
    without one (RoPE, ALiBi, relative-only)."""
    embeddings = getattr(model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, torch.nn.Embedding):
        return None
    kind = getattr(model.config, "model_type", "")
    offset = (model.config.pad_token_id or 0) + 1 if kind in OFFSET_TYPES else 0
    return table, offset


def rope_config(config, strategy: Strategy, length: int, positions: int):
    """A copy of ``config`` whose rotary embedding reads ``length`` tokens. Where attention types
    have their own rope (ModernBERT's global and sliding-window layers), only the global
    (full-attention) one is scaled: a sliding window never sees more than its own span."""
    factor = length / positions
    cfg = copy.deepcopy(config)
    params = copy.deepcopy(cfg.rope_parameters)
    targets = [params["full_attention"]] if "full_attention" in params else [params]
    heads = cfg.num_attention_heads
    dim = int(
        (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        * getattr(cfg, "partial_rotary_factor", 1.0)
    )
    for rope in targets:
        if strategy.rope == "ntk":
            rope["rope_theta"] = rope["rope_theta"] * factor ** (dim / (dim - 2))
        else:
            rope.update(rope_type="yarn", factor=factor, original_max_position_embeddings=positions)
    cfg.rope_parameters = params
    cfg.max_position_embeddings = max(cfg.max_position_embeddings, length)
    return cfg


@contextmanager
def remapped(model, attention_mask: torch.Tensor, strategy: Strategy, positions: int):
    """Forward keyword arguments (position_ids, token_type_ids) for one batch under ``strategy``;
    for ``interpolate`` rows longer than the model, a hook swaps in interpolated position
    embeddings for the duration of the forward pass."""
    found = position_table(model)
    if found is None:
        raise LmkEvalError(
            f"--strategy {strategy.name}: this model has no absolute position embeddings"
        )
    table, offset = found
    batch, width = attention_mask.shape
    lengths = attention_mask.sum(dim=1).tolist()
    ids = torch.zeros((batch, width), dtype=torch.long)
    long_rows = []
    for row, n in enumerate(int(x) for x in lengths):
        mapped = remap(n, positions, strategy)
        if mapped:
            ids[row, :n] = torch.tensor(mapped) + offset
        else:
            long_rows.append((row, n))
    kwargs = {"position_ids": ids.to(attention_mask.device)}
    if getattr(model.config, "type_vocab_size", 0):  # the buffered token types stop at P
        kwargs["token_type_ids"] = torch.zeros_like(kwargs["position_ids"])
    if not long_rows:
        yield kwargs
        return
    base = table.weight[offset : offset + positions]

    def swap(module, inputs, output):
        output = output.clone()
        for row, n in long_rows:
            output[row, :n] = interpolated(base, n).to(output.dtype)
        return output

    handle = table.register_forward_hook(swap)
    try:
        yield kwargs
    finally:
        handle.remove()
