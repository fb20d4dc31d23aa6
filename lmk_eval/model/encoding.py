"""Running the model: token-budget batches, streamed windows, many poolings per forward pass.

``TextEncoder.encode(texts, variants)`` tokenises once per tokenisation group, runs every distinct
window through the model once (identical windows, such as the repeated filler of passkey
haystacks, are computed once and shared), and applies every requested pooling to the same hidden
states. Windows of one text are combined as they stream past, so memory holds one batch of states
at a time.

The host side is built to keep a fast device busy: the Rust tokenizer's batch API, one array
operation per padded batch, texts read in one window written as one normalised block, and the
next slice of texts tokenised and padded on a background thread while the device computes this
one. ``benchmarks/throughput.py`` measures its ceiling with the forward replaced by zeros.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lmk_eval.common import hardware
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.options import DEFAULT_OPTIONS, MIN_TOKEN_BUDGET, EncodeOptions
from lmk_eval.config.variants import Variant
from lmk_eval.model import loading as models
from lmk_eval.model.batching import (
    SLICE_TOKENS,
    Prepared,
    PreparedBatch,
    pad_windows,
    text_slices,
    token_budget_batches,
    unique_windows,
)
from lmk_eval.model.tokenisation import Tokenisation, Window
from lmk_eval.pooling import functions as pooling
from lmk_eval.pooling import poolers, registry
from lmk_eval.pooling.registry import PoolInputs, WindowPart, merge_windows
from lmk_eval.reading import attention, positions
from lmk_eval.reading.strategies import Strategy

DEFAULT_TOKEN_BUDGET = hardware.CPU_TOKEN_BUDGET


@dataclass
class EncodeStats:
    """Counters a benchmark or report can read back; they only ever grow."""

    texts: int = 0
    windows: int = 0  # windows run through the model
    reused_windows: int = 0  # windows served from an identical window's forward pass
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_passes: int = 0
    forward_seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def padding_waste(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


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
    ) -> None:
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
        """``encode``'s vectors and, for multi-vector poolings, every text's chunk vectors."""
        started = time.perf_counter()
        concrete, groups = self.tokenisation_groups(variants)
        vectors: dict[Variant, np.ndarray] = {}
        chunks: dict[Variant, list[np.ndarray]] = {}
        for group in groups:
            got = self._encode_group(texts, group, prompt)
            vectors.update(got.vectors)
            chunks.update(got.chunks)
        self.stats.texts += len(texts)
        self.stats.encode_seconds += time.perf_counter() - started
        return Encoded(
            {v: vectors[c] for v, c in concrete.items()},
            {v: chunks[c] for v, c in concrete.items() if c in chunks},
        )

    def tokenisation_groups(
        self, variants: Sequence[Variant]
    ) -> tuple[dict[Variant, Variant], list[list[Variant]]]:
        """Each variant made concrete for this model, and the concrete variants grouped by what they
        read (``tokenisation_key``): one forward pass per group."""
        concrete = {v: self.facts.concrete(v) for v in dict.fromkeys(variants)}
        groups: dict[tuple, list[Variant]] = defaultdict(list)
        for c in dict.fromkeys(concrete.values()):
            groups[c.tokenisation_key()].append(c)
        return concrete, list(groups.values())

    def _encode_group(self, texts: Sequence[str], group: list[Variant], prompt: str) -> Encoded:
        budget = self.token_budget  # sized here, never first on the preparing thread
        if not self.device.startswith("cuda"):
            return self._encode_at(budget, texts, group, prompt)
        from accelerate.utils import find_executable_batch_size

        # the budget from free memory is an estimate: on an out-of-memory error accelerate frees
        # the cache and runs the group again with 10% fewer tokens per batch, until it fits
        return find_executable_batch_size(self._encode_at, starting_batch_size=budget)(
            texts, group, prompt
        )

    def _encode_at(
        self, budget: int, texts: Sequence[str], group: list[Variant], prompt: str
    ) -> Encoded:
        _, model, _ = self._load()
        out = _Collected.empty(group, len(texts), model.config.hidden_size)
        need_layers = any(v.spec.needs_layers for v in group)
        bar = self._bar(len(texts), group)
        for prepared in self._prepared_slices(texts, group, prompt, budget):
            self.stats.reused_windows += prepared.reused
            pending: dict[Variant, dict[int, list[WindowPart]]] = {
                v: defaultdict(list) for v in group
            }
            remaining = dict(prepared.multi_window)
            for batch in prepared.batches:
                pooled = self._forward_and_pool(
                    self._route_model(batch.route, group[0]), batch, group, need_layers
                )
                singles = len(batch.single_owners)
                for v, parts in pooled.items():
                    host = parts.cpu() if batch.merged or (singles and v in out.chunks) else None
                    if singles:
                        out.take_single(v, parts, host, batch, prepared.lo)
                    for row, owner in batch.merged:
                        pending[v][owner].append(host.row(row))
                done = singles
                for _row, owner in batch.merged:
                    remaining[owner] -= 1
                    if remaining[owner] == 0:  # its last window has passed: merge, once per text
                        for v in group:
                            out.take_merged(v, pending[v].pop(owner), prepared.lo + owner)
                        done += 1
                bar.update(done)
        bar.close()
        return Encoded(out.result, out.chunks)

    def _prepared_slices(
        self, texts: Sequence[str], group: list[Variant], prompt: str, budget: int
    ) -> Iterator[Prepared]:
        """The slices of ``texts`` made ready for the model, the next one prepared on a background
        thread while the device computes this one (the Rust tokenizer and numpy release the GIL)."""
        slices = list(text_slices(texts, self.slice_tokens))
        if len(slices) < 2:
            yield from (self._prepare(texts, lo, hi, group, prompt, budget) for lo, hi in slices)
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmk-eval-prepare")
        try:
            ahead = pool.submit(self._prepare, texts, *slices[0], group, prompt, budget)
            for lo, hi in slices[1:]:
                current = ahead.result()
                ahead = pool.submit(self._prepare, texts, lo, hi, group, prompt, budget)
                yield current
            yield ahead.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: drop what was not started

    def _prepare(
        self, texts: Sequence[str], lo: int, hi: int, group: list[Variant], prompt: str, budget: int
    ) -> Prepared:
        """Tokenise one slice, share identical windows, cut token-budget batches and pad each one
        (pinned on CUDA, so the copy to the device overlaps the compute)."""
        windows = self.tokenisation.windows(texts[lo:hi], group[0], prompt)
        distinct, users = unique_windows(windows)
        per_owner = np.bincount(
            np.fromiter((w.owner for w in windows), dtype=np.int64, count=len(windows)),
            minlength=hi - lo,
        )
        pin = self.device.startswith("cuda")
        batches = []
        for route, part in self._routes(distinct, group[0]):
            for rows in token_budget_batches(part, budget):
                tensors = pad_windows(rows)
                if pin:
                    tensors = tuple(t.pin_memory() for t in tensors)
                single, merged = [], []
                for row, u in enumerate(rows):
                    for w in users[id(u)]:
                        (single if per_owner[w.owner] == 1 else merged).append((row, w.owner))
                single_rows = torch.tensor([r for r, _ in single], dtype=torch.long)
                single_owners = np.array([o for _, o in single], dtype=np.int64)
                batches.append(
                    PreparedBatch(route, len(rows), tensors, single_rows, single_owners, merged)
                )
        multi = {int(o): int(n) for o, n in enumerate(per_owner) if n > 1}
        return Prepared(lo, batches, len(windows) - len(distinct), multi)

    def _forward_and_pool(self, model, batch: PreparedBatch, group, need_layers: bool):
        ids, mask, markers, prompt = (t.to(self.device, non_blocking=True) for t in batch.tensors)
        width = ids.shape[1]
        started = time.perf_counter()
        strategy = group[0].strategy_spec  # a group shares its tokenisation, strategy included
        with (
            torch.inference_mode(),
            self._positions(model, mask, strategy) as extra,
            self._attention(model, mask, group[0], batch.route),
        ):
            outputs = model(
                input_ids=ids, attention_mask=mask, output_hidden_states=need_layers, **extra
            )
            hidden = outputs.last_hidden_state.float()  # pooling always runs in float32
            layers = tuple(h.float() for h in outputs.hidden_states) if need_layers else None
            inputs = PoolInputs(hidden, mask, markers, layers, prompt, shared={})
            pooled = {
                v: registry.pool_batch(v, inputs._replace(pooler=self.pooler(v))) for v in group
            }
        s = self.stats
        s.forward_seconds += time.perf_counter() - started
        s.forward_passes += 1
        s.windows += batch.rows
        s.real_tokens += int(batch.tensors[1].sum())
        s.padded_tokens += width * batch.rows
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

    def _routes(self, windows: list[Window], variant: Variant) -> list[tuple[str, list[Window]]]:
        """(route, windows) pairs: inputs longer than the model's positions go "extended" (to the
        copy built with the scaled rope config under a rotary strategy, and through the attention
        plan where the variant scales or self-extends attention); everything else, and every input
        of a variant that needs neither, to the model as "trained"."""
        if variant.strategy_spec.rope is None and not variant.changes_attention:
            return [("trained", windows)]
        long = [w for w in windows if len(w.ids) > self.max_positions]
        short = [w for w in windows if len(w.ids) <= self.max_positions]
        return [(r, ws) for r, ws in (("trained", short), ("extended", long)) if ws]

    def _route_model(self, route: str, variant: Variant):
        if route == "extended" and variant.strategy_spec.rope:
            return self._extended(variant.strategy_spec, variant.max_length)
        return self.model

    def _attention(self, model, mask: torch.Tensor, variant: Variant, route: str):
        """The attention plan of one batch of long inputs (log-n or temperature scaling per row,
        SelfExtend); nothing for inputs that fit."""
        if route != "extended" or not variant.changes_attention:
            return contextlib.nullcontext()
        scale = None
        if variant.scale != "none":
            scale = attention.scale_factors(mask.sum(dim=1), self.max_positions, variant.scale).to(
                mask.device
            )
        extend = None
        if variant.strategy_spec.self_extend:
            group, window = variant.self_extend_options(self.max_positions)
            extend = attention.SelfExtend(group, window, attention.global_frequencies(model))
        return attention.planned(model, attention.Plan(mask, scale, extend))

    def _extended(self, strategy: Strategy, length: int):
        key = (strategy.name, length)
        if key not in self._extended_models:
            config = positions.rope_config(self.facts.config, strategy, length, self.max_positions)
            _facts, model = models.load(self.source, self.options, self.dtype, config=config)
            self._extended_models[key] = model.to(self.device)
        return self._extended_models[key]

    def _positions(self, model, mask: torch.Tensor, strategy: Strategy):
        """Position ids (and interpolated embeddings) for inputs longer than the model's positions."""
        if strategy.absolute:
            return positions.remapped(model, mask.to(self.device), strategy, self.max_positions)
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

    def take_single(self, v: Variant, parts, host, batch, lo: int) -> None:
        """Texts read in one window: their vector is that window's, as it is."""
        vectors = parts.vector[batch.single_rows]
        if v.normalize:
            vectors = pooling.normalize(vectors)
        self.result[v][lo + batch.single_owners] = vectors.float().cpu().numpy()
        if v in self.chunks:
            rows, owners = batch.single_rows.tolist(), batch.single_owners.tolist()
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


def _chunk_vectors(variant: Variant, parts: Sequence[WindowPart], vector: np.ndarray) -> np.ndarray:
    """A text's chunk vectors from its windows' parts, in reading order, normalised as the variant;
    a text without any chunk (an empty one) has its single ``vector`` as its only one."""
    vectors = torch.cat([p.chunks[p.chunk_counts > 0] for p in parts])
    if not len(vectors):
        return vector[None].copy()
    if variant.normalize:
        vectors = pooling.normalize(vectors)
    return vectors.float().numpy()
