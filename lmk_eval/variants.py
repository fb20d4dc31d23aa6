"""What a pooling variant is: one validated, hashable bundle of options.

A ``Variant`` is the unit the whole harness keys on: the mteb cache key (experiment_kwargs), the
results-store cell, the grouping of variants that can share one forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


class LmkEvalError(ValueError):
    """A user-facing error: one line saying what was wrong and what to do."""


POOLINGS: dict[str, str] = {
    "cls": "hidden state of the leading [CLS] token",
    "mean": "mean of all real token states (sentence-transformers' default)",
    "max": "element-wise max over real token states",
    "lasttoken": "hidden state of the last real token",
    "weightedmean": "mean weighted by token position (1, 2, 3, ...)",
    "mean_sqrt_len_tokens": "sum of token states divided by sqrt(number of tokens)",
    "lmk": "mean of landmark ([SEP]/</s>) states inserted after every chunk; [CLS] not pooled",
    "mean_every_k": "mean of every k-th token state, no special token inserted (control for lmk)",
    "multi_cls": "a [CLS] before every chunk; mean of those [CLS] states",
    "layer_mean": "mean pooling averaged over the last N layers",
}

GRANULARITIES: dict[str, str] = {
    "fixed": "a chunk every `interval` tokens (default 32, the authors' inference setting)",
    "sentence": "a chunk per sentence (sentence-splitter, the authors' choice)",
    "variable": "interval drawn per text from `intervals` (default 32,64,128,256), seeded",
}

STRATEGIES: dict[str, str] = {
    "truncate": "cut the input at max_length (lmk keeps a landmark in the last kept slot)",
    "window": "split into windows of max_length, encode each, pool across windows",
}

CHUNKED_POOLINGS = frozenset({"lmk", "multi_cls"})
DEFAULT_INTERVALS = (32, 64, 128, 256)
MIN_MAX_LENGTH = 3  # [CLS], one content token, one landmark


def _choose(kind: str, value: str, options: dict[str, str]) -> None:
    if value not in options:
        raise LmkEvalError(
            f"unknown {kind} '{value}'; choose one of: {', '.join(options)} (see `lmk-eval list`)"
        )


@dataclass(frozen=True)
class Variant:
    """A pooling operator with every option that changes its embeddings."""

    pooling: str = "lmk"
    granularity: str = "fixed"
    interval: int = 32
    intervals: tuple[int, ...] = field(default=DEFAULT_INTERVALS)
    seed: int = 0
    layers: int = 4
    max_length: int | None = None
    strategy: str = "truncate"
    normalize: bool = True

    def __post_init__(self) -> None:
        _choose("pooling", self.pooling, POOLINGS)
        _choose("granularity", self.granularity, GRANULARITIES)
        _choose("context strategy", self.strategy, STRATEGIES)
        object.__setattr__(self, "intervals", tuple(self.intervals))
        if not isinstance(self.interval, int) or self.interval < 1:
            raise LmkEvalError(f"interval must be an integer >= 1, got {self.interval!r}")
        if not self.intervals or any(not isinstance(k, int) or k < 1 for k in self.intervals):
            raise LmkEvalError(f"intervals must be integers >= 1, got {self.intervals!r}")
        if not isinstance(self.layers, int) or self.layers < 1:
            raise LmkEvalError(f"layers must be an integer >= 1, got {self.layers!r}")
        if self.max_length is not None and (
            not isinstance(self.max_length, int) or self.max_length < MIN_MAX_LENGTH
        ):
            raise LmkEvalError(
                f"max_length {self.max_length!r} is too small to hold [CLS], a token and a landmark;"
                f" use at least {MIN_MAX_LENGTH}"
            )

    @property
    def scheme(self) -> str:
        """How the text is turned into tokens: 'landmark', 'multi_cls' or 'plain'."""
        if self.pooling == "lmk":
            return "landmark"
        if self.pooling == "multi_cls":
            return "multi_cls"
        return "plain"

    def relevant_options(self) -> dict[str, Any]:
        """Only the options that change this pooling's output, so equal variants compare equal."""
        opts: dict[str, Any] = {"pooling": self.pooling}
        if self.pooling in CHUNKED_POOLINGS:
            opts["granularity"] = self.granularity
            if self.granularity == "fixed":
                opts["interval"] = self.interval
            elif self.granularity == "variable":
                opts["intervals"] = list(self.intervals)
                opts["seed"] = self.seed
        elif self.pooling == "mean_every_k":
            opts["interval"] = self.interval
        elif self.pooling == "layer_mean":
            opts["layers"] = self.layers
        opts["max_length"] = self.max_length
        opts["strategy"] = self.strategy
        if not self.normalize:
            opts["normalize"] = False
        return opts

    def canonical(self) -> Variant:
        """The same variant with irrelevant options reset, so it hashes like its equals."""
        opts = self.relevant_options()
        if "intervals" in opts:
            opts["intervals"] = tuple(opts["intervals"])
        return Variant(**opts)

    def tokenisation_key(self) -> tuple:
        """Variants with equal keys see identical token sequences and share one forward pass."""
        c = self.canonical()
        if c.scheme == "plain":
            return ("plain", c.max_length, c.strategy)
        return (c.scheme, c.granularity, c.interval, c.intervals, c.seed, c.max_length, c.strategy)

    def label(self) -> str:
        """Short human name used as a report column, e.g. ``lmk[fixed/32]``."""
        opts = self.relevant_options()
        extra = [
            str(v) if not isinstance(v, list) else "-".join(map(str, v))
            for k, v in opts.items()
            if k in ("granularity", "interval", "intervals", "layers")
        ]
        if "seed" in opts and opts["seed"] != 0:
            extra.append(f"seed{opts['seed']}")
        return self.pooling + (f"[{'/'.join(extra)}]" if extra else "")

    def with_max_length(self, max_length: int) -> Variant:
        return replace(self, max_length=max_length)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["intervals"] = list(self.intervals)
        return d


def parse_intervals(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise LmkEvalError(f"intervals must be comma-separated integers, got '{value}'") from None


def make_variant(pooling: str = "lmk", **options: Any) -> Variant:
    """A Variant from loose keyword options, with a clear error for a misspelt option."""
    known = set(Variant.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise LmkEvalError(
            f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
        )
    if "intervals" in options:
        options["intervals"] = parse_intervals(options["intervals"])
    return Variant(pooling=pooling, **options).canonical()
