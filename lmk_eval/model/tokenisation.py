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

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import Variant


@dataclass
class Window:
    """One model input for text ``owner``: ``ids``, ``markers`` (same length, True = a pooled
    landmark or chunk [CLS]) and ``prompt``, how many leading positions hold the special tokens
    and prompt in front of the text (what sentence-transformers' ``include_prompt=False`` leaves
    out of pooling)."""

    owner: int
    ids: list[int]
    markers: list[bool]
    prompt: int = 0


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


def fast_backend(tokenizer):
    """A copy of the fast tokenizer's Rust ``Tokenizer`` without truncation or padding, or None for
    a slow tokenizer or an old ``tokenizers``. A copy: the tokenizer's own call with padding or
    truncation leaves them set on its backend for every later caller, which would pad our ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    backend = type(backend).from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def landmark_id(tokenizer, token: str | None = None) -> int | None:
    """The landmark: a named token, else the tokenizer's [SEP] (BERT-likes; </s> for RoBERTa and
    MPNet), else its EOS (decoder LLMs)."""
    if token is not None:
        tid = tokenizer.convert_tokens_to_ids(token)
        unk = tokenizer.unk_token_id
        if tid is None or (tid == unk and token != tokenizer.unk_token) or isinstance(tid, list):
            raise LmkEvalError(
                f"landmark token {token!r} is not a single token of this tokenizer's vocabulary"
            )
        return int(tid)
    for tid in (tokenizer.sep_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def check_fits(variant: Variant, max_positions: int) -> None:
    """One line, before any encoding, when ``truncate`` asks the model for more positions than it
    has (``window`` and the extension strategies are what reads past them)."""
    n = variant.max_length
    if n is None or n <= max_positions or variant.strategy_spec.reads_past_positions:
        return
    raise LmkEvalError(
        f"max_length {n} exceeds the model's {max_positions} positions; use --strategy window"
        " (or grouped, recurrent, interpolate) for longer inputs, or a smaller --max-length"
    )


class Tokenisation:
    """Builds windows for a variant from a Hugging Face tokenizer.

    ``causal`` models (decoder LLMs) have no [CLS]: a landmark input is the tokenizer's own prefix
    (BOS, if any), the prompt, then the chunks with their landmarks; [CLS]-based poolings are
    refused for them, since a causal model's first token sees nothing after it.
    """

    def __init__(
        self,
        tokenizer,
        max_positions: int,
        *,
        causal: bool = False,
        landmark_token: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        self.causal = causal
        self.cls_id = tokenizer.cls_token_id
        if self.cls_id is None:
            self.cls_id = tokenizer.bos_token_id
        self.landmark_id = landmark_id(tokenizer, landmark_token)
        self.prefix, self.suffix = special_token_template(tokenizer)
        self.n_special = len(self.prefix) + len(self.suffix)
        self._backend = fast_backend(tokenizer)

    def check(self, variant: Variant) -> None:
        """Everything about this tokenizer and model that could refuse ``variant``, checked before
        any encoding: positions, and for landmark or multi-CLS poolings the special tokens."""
        check_fits(variant, self.max_positions)
        if self.causal and variant.pooling in ("cls", "multi_cls"):
            raise LmkEvalError(
                f"{variant.pooling} pooling on a causal (decoder) model reads states that saw only"
                " the tokens before them; use lasttoken, mean or lmk with this model"
            )
        if variant.scheme in ("plain", "chunk_ends"):  # no special token inserted
            return
        if self.landmark_id is None:
            raise LmkEvalError(
                "this tokenizer has neither a sep_token nor an eos_token to use as landmark;"
                " name one with --landmark-token, or use a non-landmark pooling (e.g. mean)"
            )
        if self.cls_id is None and not self.causal:
            raise LmkEvalError(
                "this tokenizer has neither a cls_token nor a bos_token to start a landmark sequence"
            )

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens: the Rust tokenizer's batch API (outside the
        GIL, no offsets or masks built; on every core unless ``TOKENIZERS_PARALLELISM=false``,
        which lmk-eval leaves to the user: on a CPU the forward waits for it, and one core took
        twice as long) where there is one, else the tokenizer's call."""
        if not texts:
            return []
        if self._backend is not None:
            return [
                e.ids
                for e in self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
            ]
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def split(self, texts: Sequence[str], prompt: str) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, text ids) per text. Prompt and text are tokenised together, as
        sentence-transformers does (a BPE merge across the seam stays as it would there); the
        prompt's share is its length when tokenised alone."""
        if not prompt:
            return [([], ids) for ids in self.content_ids(texts)]
        n = len(self.content_ids([prompt])[0])
        return [(ids[:n], ids[n:]) for ids in self.content_ids([prompt + t for t in texts])]

    def windows(
        self,
        texts: Sequence[str],
        variant: Variant,
        prompt: str = "",
        split: list[tuple[list[int], list[int]]] | None = None,
    ) -> list[Window]:
        """The model inputs for ``texts``. ``truncate`` and the position-extension strategies give
        one input per text of at most max_length tokens (the encoder remaps positions past the
        model's); ``window`` gives windows of max_length tokens over the whole text or, when
        max_length exceeds the model's positions, windows of the model's size over the first
        max_length text tokens. ``split`` is ``self.split(texts, prompt)`` when the caller reads
        the same texts several ways (the tokenizer then runs once)."""
        max_length = variant.max_length or self.max_positions
        self.check(variant)
        windowed = variant.strategy_spec.windows
        if split is None:
            split = self.split(texts, prompt)
        limit = None
        if windowed and max_length > self.max_positions:
            limit = max_length  # the context read: the first max_length text tokens
            split = [(p, t[:limit]) for p, t in split]
            max_length = self.max_positions
        if variant.scheme == "plain":
            return self._plain(split, max_length, windowed)
        out: list[Window] = []
        chunked = self._chunks(texts, split, variant, limit)
        for owner, ((p_ids, _), chunks) in enumerate(zip(split, chunked, strict=True)):
            if variant.scheme == "landmark":
                lead = (self.prefix if self.causal else [self.cls_id]) + p_ids
                out.extend(self._landmark(owner, lead, chunks, max_length, variant, windowed))
            elif variant.scheme == "chunk_ends":
                out.extend(
                    self._chunk_ends(owner, self.prefix + p_ids, chunks, max_length, windowed)
                )
            else:
                lead = [self.cls_id] + p_ids if p_ids else []
                out.extend(self._multi_cls(owner, lead, chunks, max_length, windowed))
        return out

    @staticmethod
    def _room(lead: list[int], max_length: int, needed: int) -> int:
        room = max_length - len(lead)
        if room < needed:
            raise LmkEvalError(
                f"the prompt and special tokens take {len(lead)} of max_length {max_length} tokens,"
                " leaving no room for the text; raise --max-length or shorten the prompt"
            )
        return room

    # -- plain: [CLS] prompt text [SEP], the tokenizer's own special tokens ------------------
    def _plain(self, split, max_length: int, windowed: bool) -> list[Window]:
        room = self._room(self.prefix + self.suffix, max_length, 1)
        out = []
        for owner, (p_ids, t_ids) in enumerate(split):
            if not windowed:
                body = (p_ids + t_ids)[:room]
                ids = self.prefix + body + self.suffix
                n = len(self.prefix) + min(len(p_ids), room)
                out.append(Window(owner, ids, [False] * len(ids), n if p_ids else 0))
                continue
            text_room = self._room(self.prefix + p_ids + self.suffix, max_length, 1)
            for piece in fixed_chunks(t_ids, text_room) or [[]]:
                ids = self.prefix + p_ids + piece + self.suffix
                n = len(self.prefix) + len(p_ids) if p_ids else 0
                out.append(Window(owner, ids, [False] * len(ids), n))
        return out

    # -- chunking shared by landmark and multi-CLS schemes ----------------------------------
    def _chunks(
        self, texts: Sequence[str], split, variant: Variant, limit: int | None = None
    ) -> list[list[list[int]]]:
        if variant.granularity == "sentence":
            per_text = [split_sentences(t) for t in texts]
            flat = self.content_ids([s for sents in per_text for s in sents])
            out, i = [], 0
            for sents in per_text:
                chunks, budget = [], limit
                for c in (c for c in flat[i : i + len(sents)] if c):
                    if budget is not None:  # a window context cut: no more text than that
                        if budget <= 0:
                            break
                        c = c[:budget]
                        budget -= len(c)
                    chunks.append(c)
                out.append(chunks)
                i += len(sents)
            return out
        out = []
        for text, (_p, ids) in zip(texts, split, strict=True):
            interval = variant.interval
            if variant.granularity == "variable":
                interval = draw_interval(text, variant.intervals, variant.seed)
            out.append(fixed_chunks(ids, interval))
        return out

    def _landmark(
        self,
        owner: int,
        lead: list[int],
        chunks: list[list[int]],
        max_length: int,
        variant: Variant,
        windowed: bool,
    ) -> list[Window]:
        """``lead c1 [L] c2 [L] ... cn [L]`` (placement 'after'; 'before' puts each landmark in
        front of its chunk). With 'after', a truncated input ends with exactly one landmark."""
        before = variant.placement == "before"
        L = self.landmark_id
        units = [
            ([L] + c, [True] + [False] * len(c)) if before else (c + [L], [False] * len(c) + [True])
            for c in chunks or [[]]
        ]
        if not windowed:
            self._room(lead, max_length, 2)
            ids = lead + [t for u in units for t in u[0]]
            marks = [False] * len(lead) + [m for u in units for m in u[1]]
            if len(ids) > max_length:
                end = max_length
                if not before:
                    # the last kept slot becomes a landmark, unless the slot before it already
                    # is one: then the input ends there, one token short, not with two landmarks
                    end = max_length - 1 if marks[max_length - 2] else max_length
                ids, marks = ids[:end], marks[:end]
                if not before:
                    ids[-1], marks[-1] = L, True
            return [Window(owner, ids, marks, len(lead))]
        room = self._room(lead, max_length, 2)
        split_unit = self._split_before_unit if before else self._split_landmark_unit
        return [
            Window(owner, lead + ids, [False] * len(lead) + marks, len(lead))
            for ids, marks in self._pack(units, room, split_unit)
        ]

    def _multi_cls(
        self, owner: int, lead: list[int], chunks: list[list[int]], max_length: int, windowed: bool
    ) -> list[Window]:
        """``[CLS] c1 [CLS] c2 ... [CLS] cn`` closed by the tokenizer's own suffix ([SEP], </s>);
        every chunk [CLS] is a marker. With a prompt, an unmarked ``[CLS] prompt`` leads. A
        truncated input never ends with a chunk [CLS] that has no content after it."""
        units = [([self.cls_id] + c, [True] + [False] * len(c)) for c in chunks] or [
            ([self.cls_id], [True])
        ]
        close, lead_marks = list(self.suffix), [False] * len(lead)
        room = self._room(lead + close, max_length, 2)
        if not windowed:
            body = [t for u in units for t in u[0]][:room]
            marks = [m for u in units for m in u[1]][:room]
            while len(marks) > 1 and marks[-1]:  # a chunk [CLS] cut off from its chunk
                body, marks = body[:-1], marks[:-1]
            return [
                Window(
                    owner, lead + body + close, lead_marks + marks + [False] * len(close), len(lead)
                )
            ]
        return [
            Window(owner, lead + ids + close, lead_marks + marks + [False] * len(close), len(lead))
            for ids, marks in self._pack(units, room, self._split_cls_unit)
        ]

    def _chunk_ends(
        self, owner: int, lead: list[int], chunks: list[list[int]], max_length: int, windowed: bool
    ) -> list[Window]:
        """Late chunking: the tokenizer's own ``prefix prompt text suffix`` with nothing inserted,
        the last token of every chunk marked; ``prompt`` counts the whole lead, which belongs to
        no chunk. A truncated input's last text token closes its last (partial) chunk."""
        units = [(c, [False] * (len(c) - 1) + [True]) for c in chunks if c]
        close = list(self.suffix)
        room = self._room(lead + close, max_length, 1)
        lead_marks, close_marks = [False] * len(lead), [False] * len(close)
        if not windowed:
            body = [t for u in units for t in u[0]][:room]
            marks = [m for u in units for m in u[1]][:room]
            if marks:
                marks[-1] = True
            return [Window(owner, lead + body + close, lead_marks + marks + close_marks, len(lead))]
        return [
            Window(owner, lead + ids + close, lead_marks + marks + close_marks, len(lead))
            for ids, marks in self._pack(units, room, self._split_chunk_end_unit)
        ] or [Window(owner, lead + close, lead_marks + close_marks, len(lead))]

    @staticmethod
    def _split_chunk_end_unit(ids, marks, room):
        """An over-long chunk becomes several, each closed by its own end mark."""
        return [(piece, [False] * (len(piece) - 1) + [True]) for piece in fixed_chunks(ids, room)]

    def _split_landmark_unit(self, ids, marks, room):
        """An over-long chunk becomes several, each closed by its own landmark."""
        return [
            (piece + [self.landmark_id], [False] * len(piece) + [True])
            for piece in fixed_chunks(ids[:-1], room - 1)
        ]

    def _split_before_unit(self, ids, marks, room):
        """An over-long chunk becomes several, each opened by its own landmark."""
        return [
            ([self.landmark_id] + piece, [True] + [False] * len(piece))
            for piece in fixed_chunks(ids[1:], room - 1)
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
