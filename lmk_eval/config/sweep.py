"""Sweeps as data: a TOML file (or CLI flags) becomes a plan of cells.

A cell is one (model, pooling variant, task with its splits, max_length, strategy); cells that
share model, task, max_length and strategy form a group whose variants share forward passes.

    name = "quick"
    models = ["default"]
    baseline = "cls"
    poolings = [{pooling = "cls"}, {pooling = "mean"}, {pooling = "lmk", interval = 32}]

    [[grid]]
    tasks = ["scifact-quick"]
    max_length = [256]      # strategy: truncation unless a block names others

Sweep files are validated by a pydantic schema in strict mode: a wrongly typed value, an unknown
key or an unsafe name is one line naming the key, before anything else happens.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmk_eval.common.errors import LmkEvalError, schema_error
from lmk_eval.config.options import MIN_TOKEN_BUDGET, OPTION_KEYS, EncodeOptions
from lmk_eval.config.training import TrainConfig
from lmk_eval.config.variants import (
    READING,
    Variant,
    check_se_group,
    inapplicable_options,
)
from lmk_eval.reading.strategies import DEFAULT_STRATEGY, takes_self_extend

DEFAULT_MODEL = "default"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
NAME_LIMIT = 120  # characters; a sweep's name is a folder (results/<name>) and a report file name
SHORTHAND = ("tasks", "max_length", "strategy", "attention_scale", "se_group", "se_window")


def pooling_tables(v: Any) -> Any:
    """A sweep's ``poolings`` with every entry a table: ``"cls"`` is ``{pooling = "cls"}``."""
    if not isinstance(v, list):
        return v
    out = []
    for i, p in enumerate(v):
        if isinstance(p, str):
            out.append({"pooling": p})
        elif isinstance(p, dict):
            out.append(p)
        else:
            raise ValueError(
                f"entry {i} is {p!r}: a pooling is a name or a table like"
                ' {pooling = "lmk", interval = 32}'
            )
    return out


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


class GridSpec(BaseModel):
    """One block of the grid: these tasks at these lengths with these strategies."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tasks: list[str] = Field(min_length=1)
    max_length: list[int] = Field(default_factory=lambda: [512], min_length=1)
    strategy: list[str] = Field(default_factory=lambda: [DEFAULT_STRATEGY], min_length=1)
    # None: as LongEmbed runs each strategy
    attention_scale: list[str] | None = Field(default=None, min_length=1)
    se_group: int | None = Field(default=None, ge=1)  # self-extend; None: LongEmbed's Table 6
    se_window: int | None = Field(default=None, ge=1)
    # None: all of the sweep's; else these pooling names
    poolings: list[str] | None = Field(default=None, min_length=1)

    _wrap = field_validator("tasks", "max_length", "strategy", "attention_scale", mode="before")(
        _listify
    )

    _se_group = field_validator("se_group")(check_se_group)

    @field_validator("attention_scale")
    @classmethod
    def _scales(cls, v: list[str] | None) -> list[str] | None:
        from lmk_eval.reading.scales import parse_scale

        for scale in v or []:
            parse_scale(scale)
        return v

    @model_validator(mode="after")
    def _self_extend_values(self) -> GridSpec:
        given = [k for k in ("se_group", "se_window") if getattr(self, k) is not None]
        if given and not takes_self_extend(self.strategy):
            raise ValueError(
                f"{' and '.join(given)} set how self-extend reads; add strategy self-extend or drop them"
            )
        return self

    def runs(self, pooling: dict[str, Any]) -> bool:
        """Whether this block runs one of the sweep's poolings (its table, by pooling name)."""
        return self.poolings is None or pooling.get("pooling") in self.poolings

    def readings(self) -> list[dict[str, Any]]:
        """Every (max_length, strategy, attention scale) of this block as Variant options."""
        scales = self.attention_scale or [None]
        se = {
            k: getattr(self, k) for k in ("se_group", "se_window") if getattr(self, k) is not None
        }
        return [
            {
                "max_length": n,
                "strategy": strategy,
                "attention_scale": scale,
                **(se if takes_self_extend([strategy]) else {}),
            }
            for strategy in self.strategy
            for n in self.max_length
            for scale in scales
        ]


class Sweep(BaseModel):
    """A sweep file's schema; ``grid`` may be written as top-level tasks/max_length/strategy."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str
    description: str = ""
    models: list[str] = Field(default_factory=lambda: [DEFAULT_MODEL], min_length=1)
    poolings: list[dict[str, Any]] = Field(default_factory=list)
    grids: list[GridSpec] = Field(alias="grid", min_length=1)
    baseline: str | None = None  # None: cls, or the sweep's first pooling when it has no cls
    # None: 8,192 on a CPU, sized from free GPU memory
    token_budget: int | None = Field(default=None, ge=MIN_TOKEN_BUDGET)
    # None: the GPU if torch sees one, else the CPU (never a silent fallback)
    device: str | None = None
    train: TrainConfig | None = None  # a controlled sweep: train, then evaluate each checkpoint
    # how every model is loaded and fed (lmk_eval.config.options.EncodeOptions)
    query_prompt: str | None = None
    document_prompt: str | None = None
    landmark_token: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    dtype: str = "float32"

    _wrap = field_validator("models", mode="before")(_listify)

    @model_validator(mode="before")
    @classmethod
    def _shorthand_grid(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in SHORTHAND):
            if "grid" in data:
                raise ValueError(
                    "give either [[grid]] blocks or top-level tasks/max_length/strategy, not both"
                )
            data = dict(data)
            data["grid"] = [{k: data.pop(k) for k in SHORTHAND if k in data}]
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if len(v) > NAME_LIMIT:
            raise ValueError(
                f"{len(v)} characters long; at most {NAME_LIMIT} (it names results/<name>/)"
            )
        if not NAME.match(v):
            raise ValueError(
                f"name {v!r} must be letters, digits, '.', '_', '+' or '-' (it names results/<name>/)"
            )
        return v

    _tables = field_validator("poolings", mode="before")(pooling_tables)

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> Sweep:
        if not self.poolings and self.train is None:
            raise ValueError("no poolings given")
        named = {p.get("pooling") for p in self.poolings}
        for i, grid in enumerate(self.grids):
            unknown = sorted(set(grid.poolings or []) - named)
            if unknown:
                raise ValueError(
                    f"grid {i}: poolings {', '.join(unknown)} are not among the sweep's poolings"
                    f" ({', '.join(sorted(n for n in named if n))})"
                )
        return self

    def encode_options(self) -> EncodeOptions:
        try:
            return EncodeOptions(**{k: getattr(self, k) for k in OPTION_KEYS})
        except ValidationError as exc:
            raise schema_error(exc, "sweep") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# -- loading ---------------------------------------------------------------------------------
def shipped_sweeps() -> dict[str, Path]:
    """The sweep files that ship with the package (tasks/*.toml), by name."""
    folder = resources.files("lmk_eval.tasks")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def find_sweep_file(spec: str | Path) -> Path:
    """A path to a sweep file, or the name of a shipped one ('quick', 'ci', ...)."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = shipped_sweeps()
    if str(spec) in shipped:
        return shipped[str(spec)]
    if path.suffix != ".toml" and path.name in shipped and len(path.parts) <= 2:
        return shipped[path.name]
    if path.parent == Path("tasks") and path.stem in shipped:
        return shipped[path.stem]
    raise LmkEvalError(
        f"sweep config '{spec}' does not exist; give a TOML path or a shipped sweep:"
        f" {', '.join(sorted(shipped))}"
    )


def parse_sweep(
    d: Any, default_name: str, where: str = "sweep", names: dict[str, str] | None = None
) -> Sweep:
    """A sweep checked against its schema (nothing loaded: models and checkpoints are checked by
    ``lmk_eval.run.sweeps``); ``names`` renames schema fields in errors (to the flags that set them)."""
    if isinstance(d, dict) and "name" not in d:
        d = {**d, "name": default_name}
    try:
        sweep = Sweep.model_validate(d)
    except ValidationError as exc:
        raise schema_error(exc, where, names) from None
    sweep.encode_options()
    check_pooling_tables(sweep.poolings, where)
    return sweep


def read_sweep_file(spec: str | Path) -> tuple[dict[str, Any], str, str]:
    """A sweep file as its raw dict (not yet validated), its default name and how errors name it."""
    path = find_sweep_file(spec)
    try:
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise LmkEvalError(
            f"sweep config '{spec}' is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise LmkEvalError(f"sweep config '{spec}' is not valid TOML: {exc}") from None
    except OSError as exc:
        raise LmkEvalError(f"cannot read sweep config '{spec}': {exc.strerror}") from None
    return data, path.stem, f"sweep config '{spec}'"


def check_pooling_tables(poolings: list[dict[str, Any]], where: str) -> None:
    """Every pooling table builds, and sets only what changes its pooling (a length or strategy
    belongs in [[grid]], ``interval`` on ``cls`` changes nothing): refused, not dropped."""
    for i, table in enumerate(poolings):
        try:
            extra = inapplicable_options(table)
        except LmkEvalError as exc:
            raise LmkEvalError(f"{where}: poolings.{i}: {exc}") from None
        reading = [k for k in extra if k in READING]
        if reading:
            raise LmkEvalError(
                f"{where}: poolings.{i}: {', '.join(reading)} is how a document is read, not"
                " a pooling option; set it in [[grid]] (or the top-level shorthand)"
            )
        if extra:
            pooling = table.get("pooling", "lmk")
            raise LmkEvalError(
                f"{where}: poolings.{i}: {', '.join(extra)} does not apply to {pooling}"
                f" (it changes nothing there); remove it"
            )


def resolve_baseline(baseline: str | None, variants: Sequence[Variant]) -> str:
    """The key (``Variant.key()``) of the variant a baseline names: its key or label exactly, or
    the one variant of that pooling; by default cls, else the first variant."""
    by_key = {v.key(): v for v in variants}  # in order, one per pooling variant
    if not by_key:
        raise LmkEvalError("the sweep has no pooling to compare against")
    if baseline is None:
        return next((k for k, v in by_key.items() if v.pooling == "cls"), next(iter(by_key)))
    for key, v in by_key.items():
        if baseline in (key, v.label()):
            return key
    matches = [k for k, v in by_key.items() if v.pooling == baseline]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(by_key[k].label() for k in matches)
        raise LmkEvalError(f"baseline '{baseline}' is ambiguous: say which of {shown}")
    raise LmkEvalError(
        f"baseline '{baseline}' is not a pooling of this sweep; choose one of:"
        f" {', '.join(sorted(v.label() for v in by_key.values()))}"
    )
