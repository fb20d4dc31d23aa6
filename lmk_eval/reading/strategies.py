"""Context strategies, one table: how each reads a document, which models it runs on, and what
the encoder does with an input longer than the model's positions.

Adding a strategy is one ``Strategy`` entry in ``STRATEGIES`` (and, for a new mechanism, its
function in ``positions.py`` or ``attention.py``). Everything else asks this table; no other
module names a strategy. Pure Python: variants, sweeps and ``lmk-eval list`` read it without
loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from lmk_eval.reading.scales import LOGN, NONE

ONE_INPUT = "one input of up to max_length tokens"


def grouped_ids(n: int, positions: int) -> list[int]:
    """Position id = pid // ceil(n / P): neighbours share a position."""
    factor = math.ceil(n / positions)
    return [i // factor for i in range(n)]


def recurrent_ids(n: int, positions: int) -> list[int]:
    """Position id = pid % P: positions start over every P tokens."""
    return [i % positions for i in range(n)]


@dataclass(frozen=True)
class Strategy:
    """How one context strategy reads a document. An input that fits the model's positions is
    read as truncation under every strategy; the fields say what happens past them."""

    name: str
    summary: str
    windows: bool = False  # the whole text in windows of max_length, pooled across windows
    # one input past the model's positions (attention scaled, by default logn)
    extends: bool = False
    remap: Callable[[int, int], list[int]] | None = None  # absolute position ids of a long input
    interpolates: bool = False  # absolute position embeddings stretched to a long input
    rope: Literal["ntk", "yarn"] | None = None  # a model copy with scaled rotary positions
    self_extend: bool = False  # SelfExtend attention; takes se_group / se_window
    reference: bool = False  # what the report compares other strategies with (first present)

    @property
    def absolute(self) -> bool:
        """Whether it rewrites absolute position embeddings (models without rotary positions)."""
        return self.remap is not None or self.interpolates

    @property
    def reads_past_positions(self) -> bool:
        """Whether max_length may exceed the model's positions."""
        return self.windows or self.extends

    @property
    def default_scale(self) -> str:
        """The attention scale when none is asked for: LongEmbed's logn where one input reads past
        the positions, else none (every input fits)."""
        return LOGN if self.extends else NONE

    def unsupported(self, config: Any) -> str | None:
        """Why this strategy cannot run on a model with ``config`` (None when it can)."""
        rope = getattr(config, "rope_parameters", None)
        if self.absolute and has_rope(config):
            return (
                f"--strategy {self.name} remaps absolute position embeddings, and this model uses"
                " rotary positions; use rope-ntk or rope-yarn (or window)"
            )
        if self.self_extend:
            ropes = (
                list(rope.values())
                if isinstance(rope, dict) and "rope_type" not in rope
                else [rope]
            )
            if not isinstance(rope, dict) or any(
                not isinstance(r, dict) or r.get("rope_type", "default") != "default" for r in ropes
            ):
                return (
                    f"--strategy {self.name} regroups rotary positions, and this model has none (or"
                    " an already scaled rope); use grouped, recurrent or interpolate (or window)"
                )
        if self.rope and not isinstance(rope, dict):
            return (
                f"--strategy {self.name} scales rotary positions, and this model has none (or an"
                " older rope config); use grouped, recurrent or interpolate (or window)"
            )
        return None


def has_rope(config: Any) -> bool:
    return bool(
        getattr(config, "rope_parameters", None)
        or getattr(config, "rope_theta", None)
        or getattr(config, "rope_scaling", None)
    )


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "truncate",
            "cut the input at max_length, at most the model's positions (lmk keeps a landmark in"
            " the last kept slot)",
            reference=True,
        ),
        Strategy(
            "window",
            "parallel windows of max_length tokens over the whole text, pooled across windows;"
            " above the model's positions: the first max_length text tokens in windows of the"
            " model's size",
            windows=True,
            reference=True,
        ),
        Strategy(
            "grouped",
            f"{ONE_INPUT}, position id = pid // ceil(n / P) (absolute positions)",
            extends=True,
            remap=grouped_ids,
        ),
        Strategy(
            "recurrent",
            f"{ONE_INPUT}, position id = pid % P (absolute positions)",
            extends=True,
            remap=recurrent_ids,
        ),
        Strategy(
            "interpolate",
            f"{ONE_INPUT}, position embeddings interpolated to its length",
            extends=True,
            interpolates=True,
        ),
        Strategy(
            "rope-ntk",
            f"{ONE_INPUT}, rotary base scaled NTK-style (RoPE models)",
            extends=True,
            rope="ntk",
        ),
        Strategy(
            "rope-yarn",
            f"{ONE_INPUT}, transformers' YaRN rope scaling (RoPE models)",
            extends=True,
            rope="yarn",
        ),
        Strategy(
            "self-extend",
            f"{ONE_INPUT}, SelfExtend: true relative positions within a neighbour window, grouped"
            " positions beyond it (RoPE models; --se-group / --se-window, default LongEmbed's"
            " Table 6)",
            extends=True,
            self_extend=True,
        ),
    )
}
DEFAULT_STRATEGY = next(iter(STRATEGIES))  # the model's own reading: truncation


def strategy_of(name: str) -> Strategy:
    """The table entry of a strategy name (names are validated where variants are built)."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown context strategy '{name}'; choose one of: {', '.join(STRATEGIES)}"
        ) from None


def takes_self_extend(names: Iterable[str]) -> bool:
    """Whether any of ``names`` reads with SelfExtend (so --se-group / --se-window apply)."""
    return any(STRATEGIES[n].self_extend for n in names if n in STRATEGIES)


def reference_order() -> list[str]:
    """Strategies other strategies are compared with, first present wins."""
    return [s.name for s in STRATEGIES.values() if s.reference]
