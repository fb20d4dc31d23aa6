"""From windows to padded batches: token-budget batching, identical inputs shared (within a cell and
across the cells of a sweep), texts cut into slices that encode the same anywhere. Pure host-side
work; ``encoding.py`` runs the model on it.

A window is padded to a width that depends on its own length only (``padded_width``), never on the
windows it shares a batch with. A row's output does not depend on the other rows of a batch of the
same width (``tests/test_sharing.py`` holds it bit for bit on the CPU), so an input computes to the
same bits whether a sweep runs its cell alone or shares it with every length and reading."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch

from lmk_eval.model.tokenisation import Window

MAX_BATCH_ROWS = 256
MIN_BATCH_TOKENS = 1024  # see ``filled``
SLICE_TOKENS = 1_000_000  # texts are tokenised this many (approximate) tokens at a time


PLAIN = ("plain",)  # the route of an input that fits the model's positions, whatever the reading


@dataclass
class Uses:
    """Where the rows of one batch go for one tokenisation group (the cells reading alike)."""

    single_rows: torch.Tensor  # rows whose window is a whole text (one entry per such text)
    single_owners: np.ndarray  # ... and those texts, by index in the slice
    merged: list[tuple[int, int]]  # (row, text) for texts read in several windows


@dataclass
class PreparedBatch:
    """One padded batch of distinct inputs, and where each row's pooled vector goes."""

    route: tuple  # PLAIN, or the reading of an input past the positions (``encoding.route_of``)
    reader: int | None  # the tokenisation group whose reading runs an extended batch
    rows: int
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # pad_windows' four
    uses: dict[int, Uses]  # tokenisation group -> its rows in this batch


@dataclass
class Sharing:
    """How many inputs one slice asked for and how many ran: ``windows`` over every tokenisation
    group, ``own`` after each group shared its own identical windows (what separate passes run),
    ``distinct`` after sharing across groups (what runs)."""

    windows: int = 0
    own: int = 0
    distinct: int = 0
    distinct_tokens: int = 0
    group_tokens: list[int] = field(default_factory=list)  # each group's own distinct tokens

    @property
    def own_tokens(self) -> int:
        return sum(self.group_tokens)

    @property
    def reused(self) -> int:
        """Windows served by an identical window of the same cell (passkey filler)."""
        return self.windows - self.own

    @property
    def shared(self) -> int:
        """Inputs served by another cell's identical input (another length or reading)."""
        return self.own - self.distinct


@dataclass
class Prepared:
    """One slice of texts (starting at ``lo``), tokenised and batched."""

    lo: int
    batches: list[PreparedBatch]
    sharing: Sharing
    multi_window: list[dict[int, int]]  # per group: text -> its windows, for texts read in several


@dataclass
class Input:
    """One distinct model input: its route, its first window, every (group, window) it serves."""

    route: tuple
    window: Window
    users: list[tuple[int, Window]]


def shared_inputs(
    per_group: Sequence[Sequence[Window]], routes: Sequence[Callable[[Window], tuple]]
) -> tuple[list[Input], Sharing]:
    """The distinct inputs of several tokenisation groups' windows: identical tokens, markers,
    prompt length and route run once and serve every window equal to them, in any group.

    A window's pooled parts depend on those alone, so identical windows need one forward pass;
    LongEmbed-style passkey documents repeat the same filler windows many times, and a document
    that fits is read identically at every length and by every strategy."""
    first: dict[tuple, Input] = {}
    sharing = Sharing()
    for g, (windows, route_of) in enumerate(zip(per_group, routes, strict=True)):
        seen: set[tuple] = set()
        sharing.group_tokens.append(0)
        for w in windows:
            route = route_of(w)
            key = (route, tuple(w.ids), tuple(w.markers), w.prompt)
            found = first.get(key)
            if found is None:
                found = first[key] = Input(route, w, [])
                sharing.distinct_tokens += len(w.ids)
            found.users.append((g, w))
            if key not in seen:
                seen.add(key)
                sharing.group_tokens[-1] += len(w.ids)
        sharing.windows += len(windows)
        sharing.own += len(seen)
    sharing.distinct = len(first)
    return list(first.values()), sharing


def filled(windows: Sequence[Window], width: int, budget: int) -> list[Window]:
    """``windows`` and copies of the first, so that the batch holds at least ``MIN_BATCH_TOKENS``
    padded tokens (or the budget). Below about 256 rows (tokens x batch) the CPU's matrix
    kernels are chosen by the row count, and a row's last bits then depend on how many windows
    share its batch; from there on they do not (checked on MiniLM, ModernBERT and Qwen2, float32
    and bfloat16). Costs one small batch's worth of tokens per width and call at most."""
    floor = min(MIN_BATCH_TOKENS, budget)
    missing = -(-floor // width) - len(windows)
    return [*windows, *[windows[0]] * missing] if missing > 0 else list(windows)


def padded_width(n: int, cap: int | None = None) -> int:
    """The width a window of ``n`` tokens is padded to: ``n`` rounded up to a step of about 1/16 of
    it (at least 8), so padding stays under about 6% and the width depends on nothing else;
    ``cap`` (the positions the route allows) bounds it."""
    step = max(8, 1 << max(0, n.bit_length() - 5))
    width = -(-n // step) * step
    return min(width, cap) if cap is not None and n <= cap else width


def pad_windows(
    windows: Sequence[Window], width: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, marker_mask, prompt_mask) tensors for one batch,
    each built in one array operation, ``width`` columns wide (at least the longest window).
    Right padding keeps a causal model's real tokens at positions 0..n-1, as if unpadded."""
    n = len(windows)
    lengths = np.fromiter((len(w.ids) for w in windows), dtype=np.int64, count=n)
    total = int(lengths.sum())
    columns = np.arange(max(width, int(lengths.max())))
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
    windows: Sequence[Window],
    budget: int,
    max_rows: int = MAX_BATCH_ROWS,
    cap: int | None = None,
) -> Iterator[tuple[int, list[Window]]]:
    """(width, windows) batches, longest first, each of windows of one ``padded_width`` (capped at
    ``cap``), whose padded size stays within ``budget`` tokens."""
    widths = [padded_width(len(w.ids), cap) for w in windows]
    order = sorted(range(len(windows)), key=lambda i: (-widths[i], -len(windows[i].ids), i))
    batch: list[Window] = []
    width = 0
    for i in order:
        if batch and (
            widths[i] != width or width * (len(batch) + 1) > budget or len(batch) >= max_rows
        ):
            yield width, batch
            batch = []
        width = widths[i]
        batch.append(windows[i])
    if batch:
        yield width, batch


def unique_windows(windows: Sequence[Window]) -> list[Window]:
    """The distinct windows of one tokenisation (one route): what its forward passes run."""
    inputs, _ = shared_inputs([windows], [lambda w: PLAIN])
    return [i.window for i in inputs]


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
