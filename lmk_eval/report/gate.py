"""The CI regression gate: a run's main scores against a committed baseline (or another run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from lmk_eval.common.errors import LmkEvalError, schema_error
from lmk_eval.common.files import atomic_write_text, check_writable_file
from lmk_eval.common.provenance import SCORING_VERSION
from lmk_eval.store.cells import RunStore

KEY = "model|task|variant|max_length|strategy|subset|split"  # variant: Variant.key(), never a label; strategy: Variant.reading()
KEY_BEFORE_SUBSETS = "model|task|variant|max_length|strategy|split"  # read as subset "default"


class BaselineFile(BaseModel):
    """What `lmk-eval baseline` writes: finite main scores by cell key."""

    model_config = ConfigDict(extra="allow", strict=True)
    scores: dict[str, FiniteFloat] = Field(min_length=1)
    key: str | None = None  # how a score's key is built (KEY); older files say another
    # the SCORING_VERSION it was scored under (None: written before baselines recorded it)
    scoring_version: int | None = None


def how_to_fill(run_dir: Path) -> str:
    """The command that computes a run folder: its shipped sweep where the folder is named after
    one (``make ci-gate`` for results/ci, ``make demo`` for results/demo), else a sweep to name."""
    from lmk_eval.config.sweep import shipped_sweeps

    name = Path(run_dir).name
    if name == "demo":
        return "`make demo` (the quick sweep into results/demo)"
    if name in shipped_sweeps():
        also = " (or `make ci-gate` in a checkout)" if name == "ci" else ""
        return f"`lmk-eval run --config {name} --output {run_dir}`{also}"
    return f"`lmk-eval run --config SWEEP --output {run_dir}`"


def main_scores(run_dir: Path) -> dict[str, float]:
    """``model|task|variant|max_length|strategy|subset|split`` -> main score, for every cell of
    the run and every (subset, split) of mteb's result (an aggregate's: its combined ones)."""
    records = RunStore(run_dir).records()
    if not records:
        raise LmkEvalError(
            f"no finished cells in '{run_dir}'; compute them first: {how_to_fill(run_dir)}"
        )
    out = {}
    for r in records:
        v = r.variant
        for part in r.scores:
            key = "|".join(
                str(x)
                for x in (
                    r.cell.model,
                    r.task,
                    v.key(),
                    v.max_length,
                    v.reading(),
                    part.subset,
                    part.split,
                )
            )
            score = part.scores[r.main_score]
            if not math.isfinite(score):  # NaN compares false with everything: it would pass
                raise LmkEvalError(
                    f"cell '{r.key}' of '{run_dir}' has a main score {r.main_score} of {score} on"
                    f" {part.label(part.task)}; nothing is gated on it: find why (lmk-eval report"
                    f" {run_dir}) and recompute it"
                )
            out[key] = score
    return out


def write_baseline(run_dir: Path, path: Path) -> int:
    check_writable_file(path, "baseline file")
    scores = main_scores(run_dir)
    doc = {
        "about": "main scores per cell, subset and split; `lmk-eval check RUN --baseline THIS` compares",
        "key": KEY,
        "scoring_version": SCORING_VERSION,
        "scores": dict(sorted(scores.items())),
    }
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return len(scores)


def read_baseline(path: Path) -> dict[str, float]:
    """Scores from a baseline JSON, or from a run directory used as the reference."""
    if path.is_dir():
        return main_scores(path)
    if not path.is_file():
        raise LmkEvalError(
            f"baseline '{path}' does not exist; write one with `lmk-eval baseline` or give a run directory"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LmkEvalError(
            f"baseline '{path}' is not JSON; write one with `lmk-eval baseline`"
        ) from None
    try:
        baseline = BaselineFile.model_validate(data)
    except ValidationError as exc:
        raise schema_error(exc, f"baseline '{path}' is not a baseline file") from None
    if baseline.scoring_version not in (None, SCORING_VERSION):
        raise LmkEvalError(
            f"baseline '{path}' was scored under scoring version {baseline.scoring_version}, this"
            f" lmk-eval scores under {SCORING_VERSION} (its numbers moved by design); write it"
            " again with `lmk-eval baseline RUN -o FILE`"
        )
    if baseline.key == KEY_BEFORE_SUBSETS:  # one subset per task then: mteb's "default"
        return {
            f"{k.rsplit('|', 1)[0]}|default|{k.rsplit('|', 1)[1]}": v
            for k, v in baseline.scores.items()
        }
    if baseline.key not in (None, KEY):
        raise LmkEvalError(
            f"baseline '{path}' keys its scores as {baseline.key} (an older lmk-eval, by pooling"
            " label); write it again with `lmk-eval baseline RUN -o FILE`"
        )
    return baseline.scores


def check(
    run_dir: Path,
    baseline_path: Path,
    tolerance: float,
    both_ways: bool = False,
    decimals: int | None = None,
) -> tuple[list[str], int]:
    """Lines naming each baseline cell that is missing or dropped by more than ``tolerance``.

    ``both_ways`` also names cells that rose beyond it: the harness is deterministic, so in a
    correctness gate an unexplained gain (a landmark lost, a fallback taken) is as suspect as a loss.
    ``decimals`` instead asks for equality to that many decimals (a reproduction check), both
    ways: |actual - reference| < 0.5 x 10^-decimals, so two values a rounding boundary apart but
    1e-12 from each other agree.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise LmkEvalError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if decimals is not None and not 0 <= decimals <= 12:
        raise LmkEvalError(f"decimals must be between 0 and 12, got {decimals}")
    expected = read_baseline(baseline_path)
    actual = main_scores(run_dir)
    failures = []
    for key, want in sorted(expected.items()):
        if key not in actual:
            failures.append(f"{key}: missing from {run_dir}")
        elif decimals is not None:
            if not abs(actual[key] - want) < 0.5 * 10.0**-decimals:
                failures.append(
                    f"{key}: {actual[key]:.{decimals}f} != reference {want:.{decimals}f}"
                )
        elif actual[key] < want - tolerance:
            failures.append(f"{key}: {actual[key]:.4f} < baseline {want:.4f} - {tolerance}")
        elif both_ways and actual[key] > want + tolerance:
            failures.append(
                f"{key}: {actual[key]:.4f} > baseline {want:.4f} + {tolerance}"
                " (refresh the baseline if the change is intended)"
            )
    return failures, len(expected)
