"""Preparing model inputs ahead of the forward pass, within an encode call and across calls.

Tokenising and batching a slice of texts runs on one background thread while the device computes
the slice before it; when the caller says which texts its next call will bring (the search knows
mteb's next corpus chunk), the first slice of that call is prepared beside this call's last one, so
the device does not wait for it. A guess that turns out wrong costs a wasted preparation, never a
wrong input: a prepared slice is used only for exactly the texts, groups, prompt and budget it was
made for.

On a CPU, where the forward already keeps every core torch uses busy, a thread beside it slows it
down more than it saves (measured on 2 cores: the forward 40% slower, the whole call slower), so
there a call's slices are prepared in turn unless torch leaves cores free, and an expected call
is not prepared ahead either: started once this call's forward was done, beside mteb scoring
this chunk and making the next chunk's texts on one core, it saved nothing measurable (20,000
documents, one and six poolings, three alternations each, wall within the runs' own spread).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from lmk_eval.model.batching import Prepared


def overlaps_forward(device: str) -> bool:
    """Whether preparation beside the forward pass saves time on ``device``: on an accelerator
    yes; on a CPU only where torch's threads leave cores free."""
    if not device.startswith("cpu"):
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > torch.get_num_threads()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a slice's many small lists are built: it would walk the
    whole heap (a corpus of documents) again and again for garbage that has no cycles (a quarter
    of the preparation time measured on 30,000 texts)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class _Call:
    """What a slice is prepared for: the texts and everything else that shapes its batches."""

    texts: Sequence[str]
    groups: tuple
    prompt: str
    budget: int
    bounds: tuple[int, int]

    def same(self, other: _Call) -> bool:
        return (
            (self.groups, self.prompt, self.budget, self.bounds)
            == (other.groups, other.prompt, other.budget, other.bounds)
            and len(self.texts) == len(other.texts)
            and list(self.texts) == list(other.texts)
        )


class Preparer:
    """Runs ``prepare(texts, lo, hi, groups, prompt, budget)`` for each slice of a call, ahead of
    its use beside the forward where that saves time (``overlap``), and then the next call's
    first slice, when expected, beside this call's last."""

    def __init__(self, prepare: Callable[..., Prepared], overlap: bool) -> None:
        self.prepare = prepare
        self.overlap = overlap
        self.ahead_used = 0  # calls whose first slice was ready before they came
        self._pool: ThreadPoolExecutor | None = None
        self._expected: _Call | None = None
        self._ahead: tuple[_Call, Future] | None = None

    def expect(
        self,
        texts: Sequence[str],
        groups: tuple,
        prompt: str,
        budget: int,
        bounds: tuple[int, int],
    ) -> None:
        """The next call will (probably) bring ``texts``: prepare its first slice (``bounds``)
        beside the last slice of the call running now. Ignored where nothing overlaps the forward."""
        if self.overlap:
            self._expected = _Call(texts, groups, prompt, budget, tuple(bounds))

    def slices(
        self,
        texts: Sequence[str],
        groups: tuple,
        prompt: str,
        budget: int,
        bounds: Sequence[tuple[int, int]],
    ) -> Iterator[Prepared]:
        if not self.overlap or not bounds:
            for lo, hi in bounds:
                yield self._prepare(texts, lo, hi, groups, prompt, budget)
            return
        pool = self._thread()
        ahead = self._take_ahead(_Call(texts, groups, prompt, budget, tuple(bounds[0])))
        if ahead is None:
            ahead = pool.submit(self._prepare, texts, *bounds[0], groups, prompt, budget)
        try:
            for lo, hi in bounds[1:]:
                current = ahead.result()
                ahead = pool.submit(self._prepare, texts, lo, hi, groups, prompt, budget)
                yield current
            current = ahead.result()
            self._start_expected()
            yield current
        except BaseException:  # Ctrl-C or an error: drop what was not started
            ahead.cancel()
            self._take_ahead(None)
            raise

    def _take_ahead(self, call: _Call | None) -> Future | None:
        """The expected call's prepared slice if ``call`` is it; else it is dropped."""
        found, self._ahead = self._ahead, None
        if found is not None and call is not None and found[0].same(call):
            self.ahead_used += 1
            return found[1]
        if found is not None:
            found[1].cancel()  # a wrong guess: its work is dropped
        return None

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmk-eval-prepare")
        return self._pool

    def _start_expected(self) -> None:
        call, self._expected = self._expected, None
        if call is not None:
            future = self._thread().submit(
                self._prepare, call.texts, *call.bounds, call.groups, call.prompt, call.budget
            )
            self._ahead = (call, future)

    def _prepare(self, texts, lo, hi, groups, prompt, budget) -> Prepared:
        with collector_paused():
            return self.prepare(texts, lo, hi, groups, prompt, budget)
