"""What a pooling variant is: one validated, hashable bundle of options.

A ``Variant`` is the unit the whole harness keys on: the mteb cache key (experiment_kwargs), the
results-store cell, the grouping of variants that can share one forward pass. Its fields are
validated by pydantic in strict mode (``interval = true`` is not an interval), its meaning comes
from the pooling registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from lmk_eval.common.errors import LmkEvalError, schema_error
from lmk_eval.pooling import registry
from lmk_eval.reading.scales import NONE, parse_scale, self_extend_defaults
from lmk_eval.reading.strategies import DEFAULT_STRATEGY, Strategy, strategy_of
from lmk_eval.reading.strategies import STRATEGIES as strategy_table

__all__ = [
    "LmkEvalError",
    "Variant",
    "make_variant",
    "POOLINGS",
    "GRANULARITIES",
    "STRATEGIES",
    "PLACEMENTS",
    "ATTENTION_SCALES",
]

POOLINGS: dict[str, str] = {name: p.summary for name, p in registry.POOLINGS.items()}

GRANULARITIES: dict[str, str] = {
    "fixed": "a chunk every `interval` tokens (default 32, the authors' inference setting)",
    "sentence": "a chunk per sentence (sentence-splitter, the authors' choice)",
    "variable": "interval drawn per text from `intervals` (default 32,64,128,256), seeded",
}

STRATEGIES: dict[str, str] = {name: s.summary for name, s in strategy_table.items()}
ATTENTION_SCALES: dict[str, str] = {
    "none": "attention as trained",
    "logn": "queries x max(1, ln n / ln P) for an input of n > P tokens (LongEmbed; the default under every"
    " strategy that reads past the positions in one input)",
    "temperature:T": "softmax(QK^T / (sqrt(d) T)) in every layer for inputs longer than P (TempScale), e.g. temperature:0.8",
}

PLACEMENTS: dict[str, str] = {
    "after": "a landmark closes every chunk, the last one included (the authors' encoder layout)",
    "before": "a landmark opens every chunk (the authors' decoder script; on a causal model a text"
    " shorter than one chunk is then seen by no landmark)",
}

NAMED_CHOICES = {
    "pooling": ("pooling", POOLINGS),
    "granularity": ("granularity", GRANULARITIES),
    "strategy": ("context strategy", STRATEGIES),
    "placement": ("landmark placement", PLACEMENTS),
}
SELF_EXTEND_OPTIONS = ("se_group", "se_window")  # SelfExtend's group and neighbour window
DEFAULT_INTERVALS = (32, 64, 128, 256)
# how, not what, it pools
READING = (
    "max_length",
    "strategy",
    "attention_scale",
    "se_group",
    "se_window",
)
MIN_MAX_LENGTH = 3  # [CLS], one content token, one landmark (or the closing [SEP])


def check_se_group(v: int | None) -> int | None:
    if v == 1:
        raise ValueError(
            "a group of 1 groups nothing (self-extend would read as plain truncation); use 2 or more"
        )
    return v


def _choose(kind: str, value: str, options: dict[str, str]) -> str:
    if value not in options:
        raise ValueError(
            f"unknown {kind} '{value}'; choose one of: {', '.join(options)} (see `lmk-eval list`)"
        )
    return value


@dataclass(frozen=True, config=ConfigDict(strict=True))
class Variant:
    """A pooling operator with every option that changes its embeddings."""

    pooling: str = "lmk"
    granularity: str = "fixed"
    interval: int = 32
    intervals: tuple[int, ...] = DEFAULT_INTERVALS
    seed: int = 0
    layers: int = 4
    max_length: int | None = None
    strategy: str = DEFAULT_STRATEGY
    normalize: bool = True
    # lmk: a landmark after each chunk, or before it (authors' decoder script)
    placement: str = "after"
    include_prompt: bool = True  # pool the prompt's positions too (sentence-transformers' default)
    attention_scale: str | None = None  # None: as LongEmbed runs the strategy (see ``scale``)
    # self-extend: None = LongEmbed's Table 6 value for the extension ratio
    se_group: int | None = None
    se_window: int | None = None

    @field_validator("pooling", "granularity", "strategy", "placement")
    @classmethod
    def _named(cls, v: str, info) -> str:
        kind, options = NAMED_CHOICES[info.field_name]
        return _choose(kind, v, options)

    @field_validator("attention_scale")
    @classmethod
    def _scale(cls, v: str | None) -> str | None:
        if v is None:
            return v
        kind, t = parse_scale(v)
        return kind if t is None else f"{kind}:{t:g}"

    @field_validator("interval", "layers", "se_group", "se_window")
    @classmethod
    def _positive(cls, v: int | None, info) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be an integer >= 1, got {v!r}")
        return check_se_group(v) if info.field_name == "se_group" else v

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"intervals must be integers >= 1, got {list(v)!r}")
        return v

    @field_validator("max_length")
    @classmethod
    def _max_length(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v < MIN_MAX_LENGTH:
            pooling = info.data.get("pooling")
            marks = pooling in registry.POOLINGS and registry.POOLINGS[pooling].tokenisation in (
                "landmark",
                "multi_cls",
            )
            holds = (
                "[CLS], a token and a landmark"
                if marks
                else "the special tokens around one token of text"
            )
            raise ValueError(
                f"max_length {v!r} is too small to hold {holds}; use at least {MIN_MAX_LENGTH}"
            )
        return v

    @property
    def scale(self) -> str:
        """The attention scale this variant runs with: none where every input fits (truncate,
        window), else the one asked for, by default LongEmbed's ``logn``."""
        default = self.strategy_spec.default_scale
        return default if default == NONE else self.attention_scale or default

    @property
    def changes_attention(self) -> bool:
        """Whether inputs longer than the positions run through lmk_eval.reading.attention's wrapper."""
        return self.scale != "none" or self.strategy_spec.self_extend

    def reading(self) -> str:
        """How a document is read, for display and keys: the strategy with its attention scale
        and SelfExtend options where they are not the defaults, e.g. ``grouped+logn``."""
        out = self.strategy
        if self.strategy_spec.self_extend:
            values = {k: getattr(self, k) for k in SELF_EXTEND_OPTIONS}
            given = [f"{k.removeprefix('se_')}={v}" for k, v in values.items() if v]
            out += f"({','.join(given)})" if given else ""
        return out + (f"+{self.scale}" if self.scale != "none" else "")

    def unscaled(self) -> Variant:
        """The same variant without an attention scale (what a scaled reading is compared with)."""
        return self if self.scale == "none" else dataclasses.replace(self, attention_scale="none")

    def self_extend_options(self, positions: int) -> tuple[int, int]:
        """(group, window) self-extend runs with on a model of ``positions``: the variant's own,
        else LongEmbed's Table 6 for the ratio max_length / positions."""
        group, window = self_extend_defaults(self.max_length or positions, positions)
        return self.se_group or group, self.se_window or window

    @property
    def strategy_spec(self) -> Strategy:
        """The context strategy's table entry (``lmk_eval.reading.strategies``)."""
        return strategy_of(self.strategy)

    @property
    def spec(self) -> registry.Pooling:
        return registry.get(self.pooling)

    @property
    def scheme(self) -> str:
        """How the text is turned into tokens: 'landmark', 'multi_cls' or 'plain'."""
        return self.spec.tokenisation

    def pooling_option_names(self) -> set[str]:
        """The pooling's own options that change its output here (chunking options only for the
        granularity in use)."""
        wanted = set(self.spec.options)
        if self.spec.chunked:
            wanted -= {"interval", "intervals", "seed"}
            wanted |= {"fixed": {"interval"}, "variable": {"intervals", "seed"}}.get(
                self.granularity, set()
            )
        return wanted

    def relevant_options(self) -> dict[str, Any]:
        """Only the options that change this pooling's output, so equal variants compare equal."""
        opts: dict[str, Any] = {"pooling": self.pooling}
        wanted = self.pooling_option_names()
        for name in ("granularity", "interval", "intervals", "seed", "layers"):
            if name in wanted:
                value = getattr(self, name)
                opts[name] = list(value) if isinstance(value, tuple) else value
        if self.spec.tokenisation == "landmark" and self.placement != "after":
            opts["placement"] = self.placement
        opts["max_length"] = self.max_length
        opts["strategy"] = self.strategy
        if self.scale != "none":  # absent = none, so cells stored before scaling existed stay valid
            opts["attention_scale"] = self.scale
        if self.strategy_spec.self_extend:
            opts |= {
                k: getattr(self, k)
                for k in ("se_group", "se_window")
                if getattr(self, k) is not None
            }
        if not self.normalize:
            opts["normalize"] = False
        if not self.include_prompt:
            opts["include_prompt"] = False
        return opts

    @classmethod
    def from_options(cls, opts: dict[str, Any]) -> Variant:
        """The inverse of ``relevant_options()`` (a stored cell's variant): there an absent
        attention_scale means none, as it did before scales existed, never the strategy's default."""
        return make_variant(**{"attention_scale": "none", **opts})

    def canonical(self) -> Variant:
        """The same variant with irrelevant options reset, so it hashes like its equals."""
        opts = self.relevant_options()
        if "intervals" in opts:
            opts["intervals"] = tuple(opts["intervals"])
        opts["attention_scale"] = self.scale
        return Variant(**opts)

    def tokenisation_key(self) -> tuple:
        """Variants with equal keys see identical token sequences and share one forward pass: the
        tokenisation scheme, length, strategy and every option that changes the tokens (for
        landmarks: granularity, interval(s), seed and placement), as the registry names them."""
        opts = self.relevant_options()
        token_options = tuple((k, getattr(self, k)) for k in self.spec.token_options if k in opts)
        return (self.scheme, self.max_length, self.reading(), token_options)

    def pooling_options(self) -> dict[str, Any]:
        """What this variant is apart from the length and reading it runs at (a report column)."""
        return {k: v for k, v in self.relevant_options().items() if k not in READING}

    def key(self) -> str:
        """The canonical name of ``pooling_options()``, e.g. ``lmk(granularity=fixed,interval=32)``:
        what reports, scores.csv and the gate key a variant by (with length and strategy beside)."""
        opts = self.pooling_options()
        pooling = opts.pop("pooling")
        shown = ",".join(f"{k}={_shown(v)}" for k, v in sorted(opts.items()))
        return f"{pooling}({shown})" if shown else pooling

    def label(self) -> str:
        """Short human name used as a report column, e.g. ``lmk[fixed/32]``. Every option that
        makes two variants differ shows, so two variants of one report never share a label."""
        opts = self.pooling_options()
        extra = [
            _shown(v)
            for k, v in opts.items()
            if k in ("granularity", "interval", "intervals", "layers")
        ]
        if "seed" in opts and opts["seed"] != 0:
            extra.append(f"seed{opts['seed']}")
        if "placement" in opts:
            extra.append(opts["placement"])
        if opts.get("include_prompt") is False:
            extra.append("no-prompt")
        if opts.get("normalize") is False:
            extra.append("unnormalised")
        return self.pooling + (f"[{'/'.join(extra)}]" if extra else "")

    def with_max_length(self, max_length: int) -> Variant:
        return dataclasses.replace(self, max_length=max_length)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["intervals"] = list(self.intervals)
        return d


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value))
    return str(value)


def parse_intervals(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise LmkEvalError(f"intervals must be comma-separated integers, got '{value}'") from None


def make_variant(pooling: str = "lmk", **options: Any) -> Variant:
    """A Variant from loose keyword options, with one clear line for any bad option."""
    known = {f.name for f in dataclasses.fields(Variant)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LmkEvalError(
            f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
        )
    if "intervals" in options:
        options["intervals"] = parse_intervals(options["intervals"])
    try:
        return Variant(pooling=pooling, **options).canonical()
    except ValidationError as exc:
        raise schema_error(exc, f"pooling '{pooling}'") from None


def inapplicable_options(table: dict[str, Any]) -> list[str]:
    """The keys of a pooling table (``{pooling = "cls", interval = 64}``) that would change nothing
    for its pooling, so that a sweep refuses them rather than drop them without a word."""
    variant = make_variant(**table)
    applies = variant.pooling_option_names() | {"pooling", "normalize", "include_prompt"}
    return sorted(k for k in table if k not in applies)
