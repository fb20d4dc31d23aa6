"""From windows to padded batches: token-budget batching, identical windows shared, texts cut into
slices that encode the same anywhere. Pure host-side work; ``encoding.py`` runs the model on it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from lmk_eval.model.tokenisation import Window

MAX_BATCH_ROWS = 256
SLICE_TOKENS = 1_000_000  # texts are tokenised this many (approximate) tokens at a time


@dataclass
class PreparedBatch:
    """One padded batch of distinct windows, and where each row's pooled vector goes."""

    route: str  # "trained" or "extended" (the rope-scaled copy, for inputs past the positions)
    rows: int
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # pad_windows' four
    single_rows: torch.Tensor  # rows whose window is a whole text (one entry per such text)
    single_owners: np.ndarray  # ... and those texts, by index in the slice
    merged: list[tuple[int, int]]  # (row, text) for texts read in several windows


@dataclass
class Prepared:
    """One slice of texts (starting at ``lo``), tokenised and batched."""

    lo: int
    batches: list[PreparedBatch]
    reused: int  # windows served by an identical window's forward pass
    multi_window: dict[int, int]  # text -> its number of windows, for texts read in several


def pad_windows(
    windows: Sequence[Window],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, marker_mask, prompt_mask) tensors for one batch,
    each built in one array operation. Right padding keeps a causal model's real tokens at
    positions 0..n-1, as if unpadded."""
    n = len(windows)
    lengths = np.fromiter((len(w.ids) for w in windows), dtype=np.int64, count=n)
    total = int(lengths.sum())
    columns = np.arange(int(lengths.max()))
    real = columns < lengths[:, None]  # row-major order of the real slots = the windows' order
    ids = np.zeros(real.shape, dtype=np.int64)
    ids[real] = np.fromiter(
        chain.from_iterable(w.ids for w in windows), dtype=np.int64, count=total
    )
    markers = np.zeros(real.shape, dtype=bool)
    markers[real] = np.fromiter(
        chain.from_iterable(w.markers for w in windows), dtype=bool, count=total
    )
    prompt = columns < np.fromiter((w.prompt for w in windows), dtype=np.int64, count=n)[:, None]
    return (
        torch.from_numpy(ids),
        torch.from_numpy(real.astype(np.int64)),
        torch.from_numpy(markers),
        torch.from_numpy(prompt),
    )


def token_budget_batches(
    windows: Sequence[Window], budget: int, max_rows: int = MAX_BATCH_ROWS
) -> Iterator[list[Window]]:
    """Length-sorted batches whose padded size stays within ``budget`` tokens."""
    order = sorted(range(len(windows)), key=lambda i: (-len(windows[i].ids), i))
    batch: list[Window] = []
    for i in order:
        width = len(batch[0].ids) if batch else 0  # sorted longest first: the first sets the width
        if batch and (width * (len(batch) + 1) > budget or len(batch) >= max_rows):
            yield batch
            batch = []
        batch.append(windows[i])
    if batch:
        yield batch


def unique_windows(windows: Sequence[Window]) -> tuple[list[Window], dict[int, list[Window]]]:
    """Distinct inputs, and for each (by ``id``) every window that is identical to it.

    A window's pooled vector depends on its tokens and markers only, so identical windows need one
    forward pass; LongEmbed-style passkey documents repeat the same filler windows many times.
    """
    first: dict[tuple, Window] = {}
    users: dict[int, list[Window]] = defaultdict(list)
    for w in windows:
        u = first.setdefault((tuple(w.ids), tuple(w.markers), w.prompt), w)
        users[id(u)].append(w)
    return list(first.values()), users


def text_slices(
    texts: Sequence[str], slice_tokens: int = SLICE_TOKENS
) -> Iterator[tuple[int, int]]:
    """(start, end) of the consecutive runs of texts the encoder tokenises and batches together
    (about ``slice_tokens`` tokens each, counted as 4 characters a token). A text's batches depend
    only on its slice, so slices can be encoded anywhere and the embeddings stay identical."""
    chars_per_slice = slice_tokens * 4
    start, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= chars_per_slice:
            yield start, i + 1
            start, size = i + 1, 0
    if start < len(texts):
        yield start, len(texts)
