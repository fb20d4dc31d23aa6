"""Running the model: token-budget batches, streamed windows, many poolings per forward pass.

``TextEncoder.encode(texts, variants)`` tokenises once per tokenisation group, runs every distinct
window through the model once (identical windows, such as the repeated filler of passkey
haystacks, are computed once and shared), and applies every requested pooling to the same hidden
states. Windows of one text are combined as they stream past, so memory holds one batch of states
at a time.

The host side is built to keep a fast device busy: the Rust tokenizer's batch API, one array
operation per padded batch, texts read in one window written as one normalised block, and, on an
accelerator, the next slice of texts (and the next call's first, when ``expect`` names it)
tokenised and padded on a background thread while the device computes this one (``ahead``).
``benchmarks/throughput.py`` measures its ceiling with the forward replaced by zeros.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lmk_eval.common import hardware
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.options import DEFAULT_OPTIONS, MIN_TOKEN_BUDGET, EncodeOptions
from lmk_eval.config.variants import READING, Variant
from lmk_eval.model import ahead
from lmk_eval.model import loading as models
from lmk_eval.model.ahead import Preparer
from lmk_eval.model.batching import (
    PLAIN,
    SLICE_TOKENS,
    Input,
    Prepared,
    PreparedBatch,
    Sharing,
    Uses,
    filled,
    pad_windows,
    shared_inputs,
    text_slices,
    token_budget_batches,
)
from lmk_eval.model.tokenisation import Tokenisation, Window
from lmk_eval.pooling import functions as pooling
from lmk_eval.pooling import poolers, registry
from lmk_eval.pooling.registry import PoolInputs, WindowPart, merge_windows
from lmk_eval.reading import attention, positions
from lmk_eval.reading.scales import NONE
from lmk_eval.reading.strategies import Strategy

DEFAULT_TOKEN_BUDGET = hardware.CPU_TOKEN_BUDGET


@dataclass
class EncodeStats:
    """Counters a benchmark or report can read back; they only ever grow."""

    texts: int = 0
    windows: int = 0  # windows run through the model
    reused_windows: int = 0  # windows served by an identical window of the same cell
    shared_windows: int = 0  # inputs served by another cell's identical input (length, reading)
    cell_windows: int = 0  # inputs separate passes per tokenisation would have run
    cell_tokens: int = 0  # ... and their tokens
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_passes: int = 0
    forward_seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def padding_waste(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def since(self, before: EncodeStats) -> EncodeStats:
        """What was counted after ``before`` (a copy taken then)."""
        return EncodeStats(
            **{f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self)}
        )

    def add(self, other: EncodeStats) -> None:
        """Count in what another encoder counted (a replica's part of a call)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Encoded(NamedTuple):
    """What one encode call gives: a vector per text and variant and, for multi-vector poolings
    (late_chunking), each text's chunk vectors, (chunks, dim) float32, normalised as the variant is."""

    vectors: dict[Variant, np.ndarray]
    chunks: dict[Variant, list[np.ndarray]]


class TextEncoder:
    """One loaded model; encodes texts for any number of variants. Loads weights on first use."""

    def __init__(
        self,
        model: str | None = None,
        *,
        options: EncodeOptions = DEFAULT_OPTIONS,
        device: str | None = None,
        token_budget: int | None = None,
        progress: bool = False,
        slice_tokens: int = SLICE_TOKENS,
        overlap: bool | None = None,
    ) -> None:
        """``overlap``: prepare inputs on a thread beside the forward (None: where that saves
        time, see ``ahead.overlaps_forward``)."""
        if token_budget is not None and token_budget < MIN_TOKEN_BUDGET:
            raise LmkEvalError(
                f"token_budget must be at least {MIN_TOKEN_BUDGET} padded tokens, got {token_budget}"
            )
        self.source = models.resolve_model(model)
        self.options = options
        self.device = device or hardware.default_device()
        hardware.check_device(self.device)
        self.dtype, self.dtype_reason = hardware.resolve_dtype(options.dtype, self.device)
        self._token_budget = token_budget  # None: sized from the device once the model loads
        self.slice_tokens = slice_tokens
        self.progress = progress
        self.stats = EncodeStats()
        self._loaded = None
        self._extended_models: dict[tuple[str, int], torch.nn.Module] = {}
        self._poolers: dict[str, torch.nn.Module] = {}
        self.preparer = Preparer(
            self.prepare, ahead.overlaps_forward(self.device) if overlap is None else overlap
        )

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> TextEncoder:
        """Load weights now (they load on first use otherwise); errors are LmkEvalError."""
        self._load()
        return self

    def _load(self):
        if self._loaded is None:
            facts, model = models.load(self.source, self.options, self.dtype)
            self._loaded = (facts, model.to(self.device), facts.tokenisation)
        return self._loaded

    @property
    def token_budget(self) -> int:
        if self._token_budget is None:
            budget, why = hardware.default_token_budget(
                self.device, self.facts.config, self.dtype, self.max_positions
            )
            self._token_budget, self.token_budget_reason = budget, why
        return self._token_budget

    @property
    def facts(self) -> models.ModelFacts:
        """Tokenizer, positions, native pooling and prompts: read without loading the weights."""
        return models.inspect_model(self.source, self.options)

    @property
    def tokenisation(self) -> Tokenisation:
        return self.facts.tokenisation

    @property
    def max_positions(self) -> int:
        return self.tokenisation.max_positions

    @property
    def model(self):
        return self._load()[1]

    def resolve(self, variant: Variant) -> Variant:
        """Fill in max_length from the model when the variant leaves it open."""
        if variant.max_length is None:
            return variant.with_max_length(self.max_positions)
        return variant

    def encode(
        self, texts: Sequence[str], variants: Sequence[Variant], prompt: str = ""
    ) -> dict[Variant, np.ndarray]:
        """Embeddings (len(texts), dim) float32 per variant, in input order, each text read as
        ``prompt + text`` (landmarks go into the text only)."""
        return self.encode_all(texts, variants, prompt).vectors

    def encode_all(
        self, texts: Sequence[str], variants: Sequence[Variant], prompt: str = ""
    ) -> Encoded:
        """``encode``'s vectors and, for multi-vector poolings, every text's chunk vectors. The
        variants may read at any length and strategy: each input they have in common (the same
        tokens, read the same way) runs through the model once and serves them all."""
        started = time.perf_counter()
        concrete, groups = self.tokenisation_groups(variants)
        got = self._encode_groups(texts, groups, prompt)
        self.stats.texts += len(texts)
        self.stats.encode_seconds += time.perf_counter() - started
        return Encoded(
            {v: got.vectors[c] for v, c in concrete.items()},
            {v: got.chunks[c] for v, c in concrete.items() if c in got.chunks},
        )

    def tokenisation_groups(
        self, variants: Sequence[Variant]
    ) -> tuple[dict[Variant, Variant], list[list[Variant]]]:
        """Each variant made concrete for this model, and the concrete variants grouped by what they
        read (``tokenisation_key``): the windows of one group are built once."""
        concrete = {v: self.facts.concrete(v) for v in dict.fromkeys(variants)}
        groups: dict[tuple, list[Variant]] = defaultdict(list)
        for c in dict.fromkeys(concrete.values()):
            groups[c.tokenisation_key()].append(c)
        return concrete, list(groups.values())

    def route_of(self, variant: Variant, window: Window, positions: int | None = None) -> tuple:
        """How ``window`` runs through the model: an input that fits the positions runs as plain
        truncation whatever the reading (``PLAIN``, shared by every length and strategy); a longer
        one by its variant's reading (strategy, attention scale, SelfExtend, the length the
        rope-scaled copy is built for). ``positions``: the model's, when the caller has read them."""
        if len(window.ids) <= (positions or self.max_positions):
            return PLAIN
        return ("extended", *(getattr(variant, k) for k in READING), variant.scale)

    def _encode_groups(self, texts: Sequence[str], groups: list[list[Variant]], prompt: str):
        budget = self.token_budget  # sized here, never first on the preparing thread
        if not self.device.startswith("cuda"):
            return self._encode_at(budget, texts, groups, prompt)
        from accelerate.utils import find_executable_batch_size

        # the budget from free memory is an estimate: on an out-of-memory error accelerate frees
        # the cache and runs the call again with 10% fewer tokens per batch, until it fits
        return find_executable_batch_size(self._encode_at, starting_batch_size=budget)(
            texts, groups, prompt
        )

    def _encode_at(
        self, budget: int, texts: Sequence[str], groups: list[list[Variant]], prompt: str
    ) -> Encoded:
        _, model, _ = self._load()
        out = _Collected.empty([v for g in groups for v in g], len(texts), model.config.hidden_size)
        bar = self._bar(len(texts) * len(groups), [v for g in groups for v in g])
        for prepared in self._prepared_slices(texts, groups, prompt, budget):
            self._count(prepared.sharing)
            merging = _Merging(groups, prepared.multi_window)
            for batch in prepared.batches:
                variants = [v for g in batch.uses for v in groups[g]]
                pooled = self._forward_and_pool(batch, groups, variants)
                done = 0
                for g, use in batch.uses.items():
                    for v in groups[g]:
                        parts = pooled[v]
                        singles = len(use.single_owners)
                        host = parts.cpu() if use.merged or (singles and v in out.chunks) else None
                        if singles:
                            out.take_single(v, parts, host, use, prepared.lo)
                        for row, owner in use.merged:
                            merging.add(g, v, owner, host.row(row))
                    done += len(use.single_owners)
                    for _row, owner in use.merged:
                        finished = merging.window_done(g, owner)
                        if finished is not None:  # its last window has passed: merge, once
                            for v, text_parts in finished.items():
                                out.take_merged(v, text_parts, prepared.lo + owner)
                            done += 1
                bar.update(done)
        bar.close()
        return Encoded(out.result, out.chunks)

    def _count(self, sharing: Sharing) -> None:
        self.stats.reused_windows += sharing.reused
        self.stats.shared_windows += sharing.shared
        self.stats.cell_windows += sharing.own
        self.stats.cell_tokens += sharing.own_tokens

    def _prepared_slices(
        self, texts: Sequence[str], groups: list[list[Variant]], prompt: str, budget: int
    ) -> Iterator[Prepared]:
        """The slices of ``texts`` made ready for the model, each prepared ahead on a background
        thread while the device computes the one before where that saves time (``ahead``)."""
        bounds = list(text_slices(texts, self.slice_tokens))
        return self.preparer.slices(texts, _frozen(groups), prompt, budget, bounds)

    def expect(self, texts: Sequence[str], variants: Sequence[Variant], prompt: str = "") -> None:
        """Say what the next encode call will (probably) bring, so that its first slice is
        prepared while this call's last one runs (``Preparer.expect`` ignores it where nothing
        overlaps the forward); a wrong guess costs that preparation only."""
        if not texts:
            return
        _, groups = self.tokenisation_groups(variants)
        first = next(text_slices(texts, self.slice_tokens))
        self.preparer.expect(texts, _frozen(groups), prompt, self.token_budget, first)

    def windows(
        self, texts: Sequence[str], groups: list[list[Variant]], prompt: str
    ) -> list[list[Window]]:
        """Each tokenisation group's windows of ``texts``, the tokenizer run once for all."""
        split = self.tokenisation.split(texts, prompt)
        return [self.tokenisation.windows(texts, g[0], prompt, split=split) for g in groups]

    def distinct_inputs(
        self, texts: Sequence[str], groups: list[list[Variant]], prompt: str
    ) -> tuple[list[list[Window]], list[Input], Sharing]:
        """Each group's windows of ``texts``, the distinct inputs among them all, and the count
        (what the run runs and what the plan counts, from one place)."""
        per_group = self.windows(texts, groups, prompt)
        positions = self.max_positions  # read once: a lookup per window costs more than the rest
        routes = [functools.partial(self.route_of, g[0], positions=positions) for g in groups]
        return per_group, *shared_inputs(per_group, routes)

    def prepare(
        self,
        texts: Sequence[str],
        lo: int,
        hi: int,
        groups: list[list[Variant]],
        prompt: str,
        budget: int,
    ) -> Prepared:
        """Tokenise one slice for every group, share identical inputs across them, cut token-budget
        batches of one padded width and pad each one (pinned on CUDA, so the copy to the device
        overlaps the compute)."""
        per_group, inputs, sharing = self.distinct_inputs(texts[lo:hi], groups, prompt)
        counts = [
            np.bincount(
                np.fromiter((w.owner for w in ws), dtype=np.int64, count=len(ws)),
                minlength=hi - lo,
            )
            for ws in per_group
        ]
        by_route: dict[tuple, list[Input]] = defaultdict(list)
        for i in inputs:
            by_route[i.route].append(i)
        batches = []
        for route, routed in by_route.items():
            reader = None if route == PLAIN else routed[0].users[0][0]
            cap = self.max_positions if reader is None else groups[reader][0].max_length
            by_window = {id(i.window): i for i in routed}
            for width, rows in token_budget_batches([i.window for i in routed], budget, cap=cap):
                inputs = [by_window[id(w)] for w in rows]
                batches.append(self._batch(route, reader, width, inputs, counts, budget))
        multi = [{int(o): int(n) for o, n in enumerate(c) if n > 1} for c in counts]
        return Prepared(lo, batches, sharing, multi)

    def _batch(
        self, route: tuple, reader: int | None, width: int, rows: list[Input], counts, budget: int
    ) -> PreparedBatch:
        tensors = pad_windows(filled([i.window for i in rows], width, budget), width)
        if self.device.startswith("cuda"):
            tensors = tuple(t.pin_memory() for t in tensors)
        single: dict[int, list[tuple[int, int]]] = defaultdict(list)
        merged: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for row, i in enumerate(rows):
            for g, w in i.users:
                (single if counts[g][w.owner] == 1 else merged)[g].append((row, w.owner))
        uses = {
            g: Uses(
                torch.tensor([r for r, _ in single.get(g, [])], dtype=torch.long),
                np.array([o for _, o in single.get(g, [])], dtype=np.int64),
                merged.get(g, []),
            )
            for g in sorted({*single, *merged})
        }
        return PreparedBatch(route, reader, len(rows), tensors, uses)

    def _forward_and_pool(self, batch: PreparedBatch, groups, variants: list[Variant]):
        ids, mask, markers, prompt = (t.to(self.device, non_blocking=True) for t in batch.tensors)
        width = ids.shape[1]
        started = time.perf_counter()
        reader = None if batch.reader is None else groups[batch.reader][0]
        model = self._route_model(reader)
        need_layers = any(v.spec.needs_layers for v in variants)
        with (
            torch.inference_mode(),
            self._positions(model, mask, reader) as extra,
            self._attention(model, mask, reader),
        ):
            outputs = model(
                input_ids=ids, attention_mask=mask, output_hidden_states=need_layers, **extra
            )
            hidden = outputs.last_hidden_state.float()  # pooling always runs in float32
            layers = tuple(h.float() for h in outputs.hidden_states) if need_layers else None
            inputs = PoolInputs(hidden, mask, markers, layers, prompt, shared={})
            pooled = {
                v: registry.pool_batch(v, inputs._replace(pooler=self.pooler(v))) for v in variants
            }
        s = self.stats
        s.forward_seconds += time.perf_counter() - started
        s.forward_passes += 1
        s.windows += batch.rows
        s.real_tokens += int(batch.tensors[1][: batch.rows].sum())  # not the filler rows
        s.padded_tokens += width * ids.shape[0]
        return pooled

    def pooler(self, variant: Variant) -> torch.nn.Module | None:
        """The pooling's own weights: a checkpoint's trained pooler, or a fresh one where its
        initial weights are meaningful (gem's p = 3); None for poolings without weights."""
        if variant.spec.weights != "trainable":
            return None
        if variant.pooling not in self._poolers:
            self.facts.check_weights(variant)
            config = self.model.config
            layers = config.num_hidden_layers + 1  # hidden_states: the embeddings, then each layer
            saved = self.facts.pooler
            if saved and saved["config"].get("pooling") == variant.pooling:
                from safetensors.torch import load_file

                module = poolers.build(
                    variant.pooling,
                    config.hidden_size,
                    layers,
                    saved["config"].get("pooler_options") or {},
                )
                state = load_file(str(Path(self.source.ref) / saved["path"] / "model.safetensors"))
                module.load_state_dict({k.removeprefix("pooler."): t for k, t in state.items()})
            else:
                module = poolers.build(variant.pooling, config.hidden_size, layers, {})
            self._poolers[variant.pooling] = module.to(self.device).eval()
        return self._poolers[variant.pooling]

    def _route_model(self, reader: Variant | None):
        """The model an extended batch runs on: the rope-scaled copy under a rotary strategy."""
        if reader is not None and reader.strategy_spec.rope:
            return self._extended(reader.strategy_spec, reader.max_length)
        return self.model

    def _attention(self, model, mask: torch.Tensor, reader: Variant | None):
        """The attention plan of one batch of long inputs (log-n or temperature scaling per row,
        SelfExtend); nothing for inputs that fit."""
        if reader is None or not reader.changes_attention:
            return contextlib.nullcontext()
        scale = None
        if reader.scale != NONE:
            scale = attention.scale_factors(mask.sum(dim=1), self.max_positions, reader.scale).to(
                mask.device
            )
        extend = None
        if reader.strategy_spec.self_extend:
            group, window = reader.self_extend_options(self.max_positions)
            extend = attention.SelfExtend(group, window, attention.global_frequencies(model))
        return attention.planned(model, attention.Plan(mask, scale, extend))

    def _extended(self, strategy: Strategy, length: int):
        key = (strategy.name, length)
        if key not in self._extended_models:
            config = positions.rope_config(self.facts.config, strategy, length, self.max_positions)
            _facts, model = models.load(self.source, self.options, self.dtype, config=config)
            self._extended_models[key] = model.to(self.device)
        return self._extended_models[key]

    def _positions(self, model, mask: torch.Tensor, reader: Variant | None):
        """Position ids (and interpolated embeddings) for inputs longer than the model's positions."""
        if reader is not None and reader.strategy_spec.absolute:
            return positions.remapped(
                model, mask.to(self.device), reader.strategy_spec, self.max_positions
            )
        return contextlib.nullcontext({})

    def _bar(self, total: int, group: list[Variant]):
        from tqdm.auto import tqdm

        names = ",".join(v.label() for v in group)
        return tqdm(
            total=total, desc=f"encode {names}", unit="text", disable=not self.progress, leave=False
        )


@dataclass
class _Collected:
    """The vectors of one encode call as its batches come back, and the chunk vectors of the
    multi-vector poolings among them."""

    result: dict[Variant, np.ndarray]
    chunks: dict[Variant, list[np.ndarray | None]]

    @classmethod
    def empty(cls, group: list[Variant], n: int, width: int) -> _Collected:
        return cls(
            {v: np.zeros((n, width), dtype=np.float32) for v in group},
            {v: [None] * n for v in group if v.spec.multi_vector},
        )

    def take_single(self, v: Variant, parts, host, use: Uses, lo: int) -> None:
        """Texts read in one window: their vector is that window's, as it is."""
        vectors = parts.vector[use.single_rows]
        if v.normalize:
            vectors = pooling.normalize(vectors)
        self.result[v][lo + use.single_owners] = vectors.float().cpu().numpy()
        if v in self.chunks:
            rows, owners = use.single_rows.tolist(), use.single_owners.tolist()
            for row, owner in zip(rows, owners, strict=True):
                at = lo + owner
                self.chunks[v][at] = _chunk_vectors(v, [host.row(row)], self.result[v][at])

    def take_merged(self, v: Variant, text_parts: list[WindowPart], at: int) -> None:
        """A text read in several windows, after its last one: the windows merged into one."""
        vec = merge_windows(v, text_parts)
        if v.normalize:
            vec = pooling.normalize(vec)
        self.result[v][at] = vec.numpy()
        if v in self.chunks:
            self.chunks[v][at] = _chunk_vectors(v, text_parts, self.result[v][at])


class _Merging:
    """The window parts of texts read in several windows, per tokenisation group, until a text's
    last window has passed."""

    def __init__(self, groups: list[list[Variant]], multi_window: list[dict[int, int]]) -> None:
        self.groups = groups
        self.remaining = [dict(m) for m in multi_window]
        self.parts: list[dict[int, dict[Variant, list[WindowPart]]]] = [{} for _ in groups]

    def add(self, g: int, v: Variant, owner: int, part: WindowPart) -> None:
        self.parts[g].setdefault(owner, {u: [] for u in self.groups[g]})[v].append(part)

    def window_done(self, g: int, owner: int) -> dict[Variant, list[WindowPart]] | None:
        """Count one window of ``owner`` done; its parts per variant once it was the last."""
        self.remaining[g][owner] -= 1
        return self.parts[g].pop(owner) if self.remaining[g][owner] == 0 else None


def _chunk_vectors(variant: Variant, parts: Sequence[WindowPart], vector: np.ndarray) -> np.ndarray:
    """A text's chunk vectors from its windows' parts, in reading order, normalised as the variant;
    a text without any chunk (an empty one) has its single ``vector`` as its only one."""
    vectors = torch.cat([p.chunks[p.chunk_counts > 0] for p in parts])
    if not len(vectors):
        return vector[None].copy()
    if variant.normalize:
        vectors = pooling.normalize(vectors)
    return vectors.float().numpy()


def _frozen(groups: Sequence[Sequence[Variant]]) -> tuple[tuple[Variant, ...], ...]:
    return tuple(tuple(g) for g in groups)
