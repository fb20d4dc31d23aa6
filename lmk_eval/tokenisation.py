"""Turning texts into model inputs: landmark insertion, truncation and context windows.

The output is a list of ``Window``s (token ids plus which positions are markers). Pooling never
sees a tokenizer, and the model never sees a chunking rule: this module is the only place that
knows both the text and the special tokens.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .errors import LmkEvalError
from .variants import Variant


@dataclass
class Window:
    """One model input: ``ids`` with ``markers`` (same length, True = pooled marker) for text ``owner``."""

    owner: int
    ids: list[int]
    markers: list[bool]


@lru_cache(maxsize=1)
def _sentence_splitter():
    from sentence_splitter import SentenceSplitter

    return SentenceSplitter(language="en")


def split_sentences(text: str) -> list[str]:
    return [s for s in _sentence_splitter().split(text) if s.strip()]


def draw_interval(text: str, intervals: Sequence[int], seed: int) -> int:
    """A per-text interval that depends only on (seed, text), never on batch order."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
    return random.Random(f"{seed}:{digest}").choice(list(intervals))


def fixed_chunks(ids: list[int], interval: int) -> list[list[int]]:
    return [ids[i : i + interval] for i in range(0, len(ids), interval)]


def special_token_template(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text ([CLS]/[SEP], <s>/</s>, ...)."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise LmkEvalError("cannot tell where this tokenizer puts its special tokens")


def check_fits(variant: Variant, max_positions: int) -> None:
    """One line, before any encoding, when a variant asks the model for more positions than it has."""
    n = variant.max_length
    if n is None or n <= max_positions:
        return
    if variant.strategy == "window":
        raise LmkEvalError(
            f"window size (max_length) {n} exceeds the model's {max_positions} positions;"
            f" with --strategy window use --max-length {max_positions} or less"
        )
    raise LmkEvalError(
        f"max_length {n} exceeds the model's {max_positions} positions; use --strategy window"
        " for longer inputs or a smaller --max-length"
    )


class Tokenisation:
    """Builds windows for a variant from a Hugging Face tokenizer."""

    def __init__(self, tokenizer, max_positions: int) -> None:
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        self.cls_id = tokenizer.cls_token_id
        if self.cls_id is None:
            self.cls_id = tokenizer.bos_token_id
        self.landmark_id = tokenizer.sep_token_id
        if self.landmark_id is None:
            self.landmark_id = tokenizer.eos_token_id
        self.prefix, self.suffix = special_token_template(tokenizer)
        self.n_special = len(self.prefix) + len(self.suffix)

    def check(self, variant: Variant) -> None:
        """Everything about this tokenizer and model that could refuse ``variant``, checked before
        any encoding: positions, and for landmark or multi-CLS poolings the special tokens."""
        check_fits(variant, self.max_positions)
        if variant.scheme == "plain":
            return
        if self.landmark_id is None:
            raise LmkEvalError(
                "this tokenizer has neither a sep_token nor an eos_token to use as landmark;"
                " use a non-landmark pooling (e.g. mean) with this model"
            )
        if self.cls_id is None:
            raise LmkEvalError(
                "this tokenizer has neither a cls_token nor a bos_token to start a landmark sequence"
            )

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def windows(self, texts: Sequence[str], variant: Variant) -> list[Window]:
        max_length = variant.max_length or self.max_positions
        self.check(variant)
        if variant.scheme == "plain":
            return self._plain(texts, max_length, variant.strategy)
        out: list[Window] = []
        for owner, chunks in enumerate(self._chunks(texts, variant)):
            if variant.scheme == "landmark":
                out.extend(self._landmark(owner, chunks, max_length, variant.strategy))
            else:
                out.extend(self._multi_cls(owner, chunks, max_length, variant.strategy))
        return out

    # -- plain: [CLS] text [SEP], the tokenizer's own special tokens -------------------------
    def _plain(self, texts: Sequence[str], max_length: int, strategy: str) -> list[Window]:
        room = max_length - self.n_special
        out = []
        for owner, ids in enumerate(self.content_ids(texts)):
            pieces = [ids[:room]] if strategy == "truncate" else fixed_chunks(ids, room) or [[]]
            for piece in pieces:
                full = self.prefix + piece + self.suffix
                out.append(Window(owner, full, [False] * len(full)))
        return out

    # -- chunking shared by landmark and multi-CLS schemes ----------------------------------
    def _chunks(self, texts: Sequence[str], variant: Variant) -> list[list[list[int]]]:
        if variant.granularity == "sentence":
            per_text = [split_sentences(t) for t in texts]
            flat = self.content_ids([s for sents in per_text for s in sents])
            out, i = [], 0
            for sents in per_text:
                out.append([c for c in flat[i : i + len(sents)] if c])
                i += len(sents)
            return out
        out = []
        for text, ids in zip(texts, self.content_ids(texts), strict=True):
            interval = variant.interval
            if variant.granularity == "variable":
                interval = draw_interval(text, variant.intervals, variant.seed)
            out.append(fixed_chunks(ids, interval))
        return out

    def _landmark(
        self, owner: int, chunks: list[list[int]], max_length: int, strategy: str
    ) -> list[Window]:
        """``[CLS] c1 [L] c2 [L] ... cn [L]``; a truncated input ends with exactly one landmark."""
        units = [(c, [False] * len(c)) for c in chunks] or [([], [])]
        units = [(ids + [self.landmark_id], marks + [True]) for ids, marks in units]
        if strategy == "truncate":
            ids = [self.cls_id] + [t for u in units for t in u[0]]
            marks = [False] + [m for u in units for m in u[1]]
            if len(ids) > max_length:
                # the last kept slot becomes a landmark, unless the slot before it already is one:
                # then the input ends there, one token short, rather than with two landmarks
                end = max_length - 1 if marks[max_length - 2] else max_length
                ids, marks = ids[:end], marks[:end]
                ids[-1], marks[-1] = self.landmark_id, True
            return [Window(owner, ids, marks)]
        return [
            Window(owner, [self.cls_id] + ids, [False] + marks)
            for ids, marks in self._pack(units, max_length - 1, self._split_landmark_unit)
        ]

    def _multi_cls(
        self, owner: int, chunks: list[list[int]], max_length: int, strategy: str
    ) -> list[Window]:
        """``[CLS] c1 [CLS] c2 ... [CLS] cn [SEP]``; every [CLS] is a marker."""
        units = [([self.cls_id] + c, [True] + [False] * len(c)) for c in chunks] or [
            ([self.cls_id], [True])
        ]
        if strategy == "truncate":
            ids = [t for u in units for t in u[0]][: max_length - 1] + [self.landmark_id]
            marks = [m for u in units for m in u[1]][: max_length - 1] + [False]
            return [Window(owner, ids, marks)]
        return [
            Window(owner, ids + [self.landmark_id], marks + [False])
            for ids, marks in self._pack(units, max_length - 1, self._split_cls_unit)
        ]

    def _split_landmark_unit(self, ids, marks, room):
        """An over-long chunk becomes several, each closed by its own landmark."""
        return [
            (piece + [self.landmark_id], [False] * len(piece) + [True])
            for piece in fixed_chunks(ids[:-1], room - 1)
        ]

    def _split_cls_unit(self, ids, marks, room):
        """An over-long chunk becomes several, each opened by its own [CLS]."""
        return [
            ([self.cls_id] + piece, [True] + [False] * len(piece))
            for piece in fixed_chunks(ids[1:], room - 1)
        ]

    @staticmethod
    def _pack(units, room: int, split_unit) -> list[tuple[list[int], list[bool]]]:
        """Greedily pack whole chunks into windows of ``room`` tokens; oversize chunks are split."""
        windows: list[tuple[list[int], list[bool]]] = []
        cur_ids: list[int] = []
        cur_marks: list[bool] = []
        for ids, marks in units:
            pieces = [(ids, marks)] if len(ids) <= room else split_unit(ids, marks, room)
            for p_ids, p_marks in pieces:
                if cur_ids and len(cur_ids) + len(p_ids) > room:
                    windows.append((cur_ids, cur_marks))
                    cur_ids, cur_marks = [], []
                cur_ids.extend(p_ids)
                cur_marks.extend(p_marks)
        if cur_ids:
            windows.append((cur_ids, cur_marks))
        return windows
