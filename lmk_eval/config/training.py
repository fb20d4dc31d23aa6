"""A ``[train]`` section: what a controlled sweep trains (the schema only; training is
``lmk_eval.train``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmk_eval.common.errors import LmkEvalError, schema_error
from lmk_eval.config.variants import make_variant


class TrainConfig(BaseModel):
    """A ``[train]`` section or the flags of ``lmk-eval train``; strict types, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True)
    base: str = "default"
    poolings: list[str] = Field(default_factory=lambda: ["cls", "mean", "lmk"], min_length=1)
    data: str | None = None  # BEIR folder; None = bundled SciFact (train split)
    split: str = "train"
    steps: int = Field(default=100, ge=1)
    batch_size: int = Field(default=32, ge=2)  # in-batch negatives need two pairs
    learning_rate: float = Field(default=2e-5, gt=0, allow_inf_nan=False)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    max_seq_length: int = Field(default=256, ge=8)
    eval_interval: int = Field(default=32, ge=1)
    output: str = "checkpoints"
    precision: Literal["float32", "bfloat16"] = "float32"  # bf16: the trainer's mixed precision
    # a trained pooler's architecture, e.g. {latents = 64, heads = 12} for latent_attention
    # (defaults: the LMK authors'), {queries = 1, heads = 4} for multilayer_attention, {p = 3} for gem
    pooler: dict[str, int | float] = Field(default_factory=dict)

    @field_validator("poolings", "seeds")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"lists an entry twice: {v}")
        return v

    def check_poolings(self) -> None:
        for p in self.poolings:
            make_variant(p)
            if p in ("layer_mean", "native") or make_variant(p).spec.multi_vector:
                raise LmkEvalError(f"{p} is evaluation-only; train cls, mean, lmk, ...")
            if self.pooler and make_variant(p).spec.weights == "trainable":
                from lmk_eval.pooling import poolers  # torch: only for a trained pooler's options

                poolers.check_options(p, self.pooler)


def train_config(
    values: dict[str, Any], where: str, names: dict[str, str] | None = None
) -> TrainConfig:
    """``names``: how the caller spells each field (the CLI's flags), for its error lines."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        raise schema_error(exc, where, names) from None


def evaluation_pooling(cfg: TrainConfig, pooling: str) -> dict[str, Any]:
    """How a checkpoint trained with ``pooling`` is evaluated: landmarks at the fixed interval."""
    if pooling in ("lmk", "multi_cls"):
        return {"pooling": pooling, "granularity": "fixed", "interval": cfg.eval_interval}
    if pooling == "mean_every_k":
        return {"pooling": pooling, "interval": cfg.eval_interval}
    return {"pooling": pooling}
