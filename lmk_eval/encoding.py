"""Running the model: token-budget batches, streamed windows, many poolings per forward pass.

``TextEncoder.encode(texts, variants)`` tokenises once per tokenisation group, runs every distinct
window through the model once (identical windows, such as the repeated filler of passkey
haystacks, are computed once and shared), and applies every requested pooling to the same hidden
states. Windows of one text are combined as they stream past, so memory holds one batch of states
at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import hardware, models, poolers, pooling, positions, registry
from .options import DEFAULT_OPTIONS, EncodeOptions
from .registry import PoolInputs, WindowPart, merge_windows
from .tokenisation import Tokenisation, Window
from .variants import Variant

DEFAULT_TOKEN_BUDGET = hardware.CPU_TOKEN_BUDGET
MAX_BATCH_ROWS = 256
SLICE_TOKENS = 1_000_000  # texts are tokenised this many (approximate) tokens at a time


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


def pad_windows(
    windows: Sequence[Window],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, marker_mask, prompt_mask) tensors for one batch.
    Right padding keeps a causal model's real tokens at positions 0..n-1, as if unpadded."""
    width = max(len(w.ids) for w in windows)
    ids = torch.zeros((len(windows), width), dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    markers = torch.zeros((len(windows), width), dtype=torch.bool)
    prompt = torch.zeros((len(windows), width), dtype=torch.bool)
    for row, w in enumerate(windows):
        n = len(w.ids)
        ids[row, :n] = torch.tensor(w.ids)
        mask[row, :n] = 1
        markers[row, :n] = torch.tensor(w.markers)
        prompt[row, : w.prompt] = True
    return ids, mask, markers, prompt


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


def text_slices(texts: Sequence[str], slice_tokens: int = SLICE_TOKENS) -> Iterator[tuple[int, int]]:
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
        started = time.perf_counter()
        concrete = {v: self.facts.concrete(v) for v in dict.fromkeys(variants)}
        groups: dict[tuple, list[Variant]] = defaultdict(list)
        for c in dict.fromkeys(concrete.values()):
            groups[c.tokenisation_key()].append(c)
        computed: dict[Variant, np.ndarray] = {}
        for group in groups.values():
            computed.update(self._encode_group(texts, group, prompt))
        out = {v: computed[c] for v, c in concrete.items()}
        self.stats.texts += len(texts)
        self.stats.encode_seconds += time.perf_counter() - started
        return out

    def _encode_group(
        self, texts: Sequence[str], group: list[Variant], prompt: str
    ) -> dict[Variant, np.ndarray]:
        _, model, tokenisation = self._load()
        dim = model.config.hidden_size
        result = {v: np.zeros((len(texts), dim), dtype=np.float32) for v in group}
        need_layers = any(v.spec.needs_layers for v in group)
        bar = self._bar(len(texts), group)
        for lo, hi in text_slices(texts, self.slice_tokens):
            windows = tokenisation.windows(texts[lo:hi], group[0], prompt)
            distinct, users = unique_windows(windows)
            self.stats.reused_windows += len(windows) - len(distinct)
            per_text: dict[Variant, dict[int, list[WindowPart]]] = {v: defaultdict(list) for v in group}
            remaining = defaultdict(int)
            for w in windows:
                remaining[w.owner] += 1
            batches = [(m, b) for m, part in self._routes(model, distinct, group[0])
                       for b in token_budget_batches(part, self.token_budget)]  # fmt: skip
            for run_model, batch in batches:
                pooled = self._forward_and_pool(run_model, batch, group, need_layers)
                for v, parts in pooled.items():
                    for row, u in enumerate(batch):
                        part = parts.row(row)
                        for w in users[id(u)]:
                            per_text[v][w.owner].append(part)
                for w in (w for u in batch for w in users[id(u)]):
                    remaining[w.owner] -= 1
                    if remaining[w.owner] == 0:
                        for v in group:
                            vec = merge_windows(v, per_text[v].pop(w.owner))
                            if v.normalize:
                                vec = pooling.normalize(vec)
                            result[v][lo + w.owner] = vec.numpy()
                        bar.update(1)
        bar.close()
        return result

    def _forward_and_pool(self, model, batch: list[Window], group, need_layers: bool):
        ids, mask, markers, prompt = pad_windows(batch)
        width = ids.shape[1]
        started = time.perf_counter()
        strategy = group[0].strategy  # a group shares its tokenisation, strategy included
        with torch.inference_mode(), self._positions(model, mask, strategy) as extra:
            outputs = model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                output_hidden_states=need_layers,
                **extra,
            )
            hidden = outputs.last_hidden_state.float()  # pooling always runs in float32
            mask_d, markers_d = mask.to(self.device), markers.to(self.device)
            layers = tuple(h.float() for h in outputs.hidden_states) if need_layers else None
            inputs = PoolInputs(hidden, mask_d, markers_d, layers, prompt.to(self.device))
            pooled = {}
            for v in group:
                pooled[v] = registry.pool_batch(v, inputs._replace(pooler=self.pooler(v))).cpu()
        s = self.stats
        s.forward_seconds += time.perf_counter() - started
        s.forward_passes += 1
        s.windows += len(batch)
        s.real_tokens += int(mask.sum())
        s.padded_tokens += width * len(batch)
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

                module = poolers.build(variant.pooling, config.hidden_size, layers,
                                       saved["config"].get("pooler_options") or {})  # fmt: skip
                state = load_file(str(Path(self.source.ref) / saved["path"] / "model.safetensors"))
                module.load_state_dict({k.removeprefix("pooler."): t for k, t in state.items()})
            else:
                module = poolers.build(variant.pooling, config.hidden_size, layers, {})
            self._poolers[variant.pooling] = module.to(self.device).eval()
        return self._poolers[variant.pooling]

    def _routes(self, model, windows: list[Window], variant: Variant):
        """(model, windows) pairs: under a rotary strategy, inputs longer than the model's positions
        go to a copy built with the scaled rope config; everything else to the model as trained."""
        if variant.strategy not in positions.ROPE:
            return [(model, windows)]
        long = [w for w in windows if len(w.ids) > self.max_positions]
        short = [w for w in windows if len(w.ids) <= self.max_positions]
        routes = [(model, short)] if short else []
        if long:
            routes.append((self._extended(variant.strategy, variant.max_length), long))
        return routes

    def _extended(self, strategy: str, length: int):
        key = (strategy, length)
        if key not in self._extended_models:
            config = positions.rope_config(self.facts.config, strategy, length, self.max_positions)
            _facts, model = models.load(self.source, self.options, self.dtype, config=config)
            self._extended_models[key] = model.to(self.device)
        return self._extended_models[key]

    def _positions(self, model, mask: torch.Tensor, strategy: str):
        """Position ids (and interpolated embeddings) for inputs longer than the model's positions."""
        if strategy in positions.ABSOLUTE:
            return positions.remapped(model, mask.to(self.device), strategy, self.max_positions)
        return contextlib.nullcontext({})

    def _bar(self, total: int, group: list[Variant]):
        from tqdm.auto import tqdm

        names = ",".join(v.label() for v in group)
        return tqdm(
            total=total, desc=f"encode {names}", unit="text", disable=not self.progress, leave=False
        )
