"""What produced (or will produce) each cell, and the checks that refuse a sweep before any
work: model and data by content, encoding options, the scoring version; tokenizers, positions,
special tokens and training data checked before the output directory is touched."""

from __future__ import annotations

import json
from typing import Any

from lmk_eval.common.hardware import default_device, resolve_dtype
from lmk_eval.common.provenance import scoring_identity
from lmk_eval.config.sweep import Sweep
from lmk_eval.config.variants import Variant
from lmk_eval.model import loading as models
from lmk_eval.model.native import merge_prompts
from lmk_eval.run.plan import CellGroup
from lmk_eval.run.sweeps import checkpoints


def model_identities(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """Model as the sweep names it -> what it is by content (a checkpoint: how it is trained)."""
    out = (
        {m: models.identity(models.resolve_model(m)) for m in sweep.models}
        if sweep.poolings
        else {}
    )
    if sweep.train is not None:
        out |= {
            path: checkpoint_identity(sweep.train, p, s)
            for path, (p, s) in checkpoints(sweep).items()
        }
    return out


def checkpoint_identity(
    cfg, pooling: str, seed: int, record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A checkpoint by its training setup and by content (its files' digest, verified against its
    training record); ``files`` is None until it is trained, so no stored cell matches it."""
    from lmk_eval.train.trainer import found_checkpoint, training_identity

    record = record if record is not None else found_checkpoint(cfg, pooling, seed)
    return {
        "kind": "checkpoint",
        "training": training_identity(cfg, pooling, seed),
        "files": (record or {}).get("files"),
    }


def _facts(sweep: Sweep, model: str) -> models.ModelFacts:
    """Tokenizer and configuration of a sweep's model (a checkpoint's base, before training)."""
    ref = sweep.train.base if model in checkpoints(sweep) else model
    return models.inspect_model(models.resolve_model(ref), sweep.encode_options())


def encoding_identity(sweep: Sweep, model: str, variant: Variant) -> dict[str, Any]:
    """How the model is loaded and fed for this cell: the options, the prompts it will apply and,
    for ``native``, what the model's own configuration resolves to."""
    options = sweep.encode_options()
    out: dict[str, Any] = {"options": options.identity(), "dtype": _dtype(sweep)}
    if model not in checkpoints(sweep):
        # cached by the model's content
        facts = models.summary(models.resolve_model(model), options)
        out["prompts"] = merge_prompts(
            facts["prompts"], options.query_prompt, options.document_prompt
        )
        if variant.pooling == "native" and facts["native"] is not None:
            out["native"] = facts["native"]
        if variant.strategy_spec.self_extend:  # the Table 6 values its defaults resolve to
            group, window = variant.self_extend_options(facts["max_positions"])
            out["self_extend"] = {"group": group, "window": window}
    return out


def _dtype(sweep: Sweep) -> str:
    """The dtype cells run in; only ``auto`` asks which device there is (and so imports torch)."""
    name = sweep.encode_options().dtype
    device = sweep.device or (default_device() if name == "auto" else "cpu")
    return resolve_dtype(name, device)[0]


def cell_identities(sweep: Sweep, groups: list[CellGroup]) -> dict[str, dict[str, Any]]:
    """Cell key -> everything that produced (or will produce) its numbers."""
    by_model = model_identities(sweep)
    scoring = scoring_identity()
    out = {}
    for g in groups:
        data = g.task.data_identity()
        for c in g.cells:
            out[c.key()] = {
                "slot": json.loads(c.slot),
                "model": by_model[g.model],
                "data": data,
                "encoding": encoding_identity(sweep, g.model, c.variant),
                "scoring": scoring,
            }
    return out


def preflight(sweep: Sweep, groups: list[CellGroup]) -> None:
    """Refuse now, in one line, what would fail later: each model's tokenizer and config load,
    and every variant (``native`` resolved) fits its positions and finds its special tokens.
    Loads no weights."""
    for g in groups:
        facts = _facts(sweep, g.model)
        trained = g.model in checkpoints(sweep)  # a checkpoint will carry what it trains
        for c in g.cells:
            facts.check_runs(c.variant, sweep.attn_implementation, g.model, weights=not trained)
    if sweep.train is not None:
        from lmk_eval.train.trainer import load_pairs

        load_pairs(sweep.train)  # a bad training folder fails before any work
