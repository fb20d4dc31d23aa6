"""A sweep as a run reads it: its checkpoints named, its variants listed, its models and
baseline checked before any work. The schema itself (``lmk_eval.config.sweep``) loads nothing;
naming a checkpoint hashes its base model and training data, so it happens here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmk_eval.config.sweep import Sweep, parse_sweep, read_sweep_file, resolve_baseline
from lmk_eval.config.variants import Variant, make_variant


def checkpoints(sweep: Sweep) -> dict[str, tuple[str, int]]:
    """Checkpoint directory -> (pooling, seed) of the [train] section (empty without one)."""
    if sweep.train is None:
        return {}
    from lmk_eval.train.trainer import checkpoint_jobs

    return checkpoint_jobs(sweep.train)


def model_poolings(sweep: Sweep) -> list[tuple[str, list[dict[str, Any]]]]:
    """(model, poolings) pairs: every model x every pooling, then (with a [train] section)
    each checkpoint x its own pooling. A controlled sweep without poolings has checkpoints only."""
    pairs = [(m, sweep.poolings) for m in sweep.models] if sweep.poolings else []
    if sweep.train is None:
        return pairs
    from lmk_eval.config.training import evaluation_pooling

    return pairs + [
        (path, [evaluation_pooling(sweep.train, pooling)])
        for path, (pooling, _seed) in checkpoints(sweep).items()
    ]


def sweep_variants(sweep: Sweep) -> list[Variant]:
    """Every variant of the sweep (each at its length and strategy), in the sweep's order."""
    out = [
        make_variant(**{**p, **reading})
        for grid in sweep.grids
        for _model, poolings in model_poolings(sweep)
        for p in poolings
        if grid.runs(p)
        for reading in grid.readings()
    ]
    return list(dict.fromkeys(out))


def validate(sweep: Sweep) -> None:
    """Name every model, check the device, the training poolings and the baseline now, so a typo
    fails before any work. Tasks are checked by ``plan``, which also runs before any model loads.
    Changes nothing: a sweep is what its file and flags say."""
    from lmk_eval.model import loading as models

    if sweep.device is not None:
        from lmk_eval.common.hardware import check_device

        check_device(sweep.device)
    if sweep.train is not None:
        sweep.train.check_poolings()  # checkpoints do not exist yet: training makes them
        models.resolve_model(sweep.train.base)
    if sweep.poolings:
        for model in sweep.models:
            models.resolve_model(model)
    resolve_baseline(sweep.baseline, sweep_variants(sweep))


def sweep_from_dict(
    d: Any, default_name: str, where: str = "sweep", names: dict[str, str] | None = None
) -> Sweep:
    """A sweep checked against its schema, then against the models and checkpoints it names."""
    sweep = parse_sweep(d, default_name, where, names)
    validate(sweep)
    return sweep


def load_sweep(spec: str | Path) -> Sweep:
    """A sweep file (a path or a shipped sweep's name), validated."""
    return sweep_from_dict(*read_sweep_file(spec))
