"""The thin layer between mteb's ``encode(DataLoader, ...)`` call and the project's encoder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from . import models
from .encoding import SharedEmbeddings, TextEncoder
from .variants import Variant, make_variant


def _texts(inputs: Iterable) -> list[str]:
    """Strings from mteb's DataLoader of ``{"text": [...]}`` batches, or from a plain list."""
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
        else:
            texts.extend(item["text"])
    return texts


def model_meta(encoder: TextEncoder, variant: Variant) -> ModelMeta:
    """Full metadata; experiment_kwargs make every variant its own entry in mteb's result cache."""
    source = encoder.source
    facts = models.describe(source)
    base: dict[str, Any] = {
        "license": None,
        "release_date": None,
        "training_datasets": None,
        "reference": None,
        "languages": None,
    }
    if source.name == models.PACKAGED_NAME:
        import mteb

        known = mteb.get_model_meta(models.PACKAGED_NAME)
        base = {k: getattr(known, k) for k in base}
        facts["n_parameters"] = known.n_parameters
        facts["memory_usage_mb"] = known.memory_usage_mb
    return ModelMeta(
        loader=_load_from_meta,
        loader_kwargs={"model": source.ref, **variant.to_dict()},
        name=source.name,
        revision=models.revision(source),
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False,
        max_tokens=variant.max_length,
        embed_dim=facts["embed_dim"],
        n_parameters=facts["n_parameters"],
        memory_usage_mb=facts["memory_usage_mb"],
        experiment_kwargs=variant.relevant_options(),
        **base,
    )


def _load_from_meta(model: str, **options: Any) -> LmkEncoder:
    return encoder(model, **options)


class LmkEncoder(AbsEncoder):
    """One pooling variant of one model, as mteb sees it. Queries and documents pool alike."""

    def __init__(
        self,
        text_encoder: TextEncoder,
        variant: Variant,
        shared: SharedEmbeddings | None = None,
        meta: ModelMeta | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.variant = variant
        self.shared = shared or SharedEmbeddings(text_encoder, [variant])
        self.mteb_model_meta = meta or model_meta(text_encoder, variant)

    def encode(
        self,
        inputs: Iterable | Sequence[str],
        *,
        task_metadata=None,
        hf_split: str | None = None,
        hf_subset: str | None = None,
        prompt_type=None,
        **kwargs: Any,
    ) -> np.ndarray:
        return self.shared.get(_texts(inputs), self.variant)


def encoder(
    model: str | None = None, pooling: str = "lmk", *, progress: bool = False, **options: Any
) -> LmkEncoder:
    """An mteb encoder for ``model`` (None = packaged all-MiniLM-L6-v2) pooled with ``pooling``.

    ``options`` are Variant fields: granularity, interval, intervals, seed, layers, max_length,
    strategy, normalize. max_length defaults to the model's position limit.
    """
    text_encoder = TextEncoder(model, progress=progress)
    variant = text_encoder.resolve(make_variant(pooling, **options))
    return LmkEncoder(text_encoder, variant)
