"""The thin layer between mteb's ``encode(DataLoader, ...)`` call and the project's encoder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType
from pydantic import ValidationError
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from lmk_eval.common.errors import schema_error
from lmk_eval.config.options import OPTION_KEYS, EncodeOptions
from lmk_eval.config.variants import Variant, make_variant
from lmk_eval.model import loading as models
from lmk_eval.model.encoding import TextEncoder
from lmk_eval.model.native import merge_prompts


class SharedPass(Protocol):
    """A cell group's one pass over a corpus for all its poolings (``search.GroupSearch``, which
    builds the adapters, so it is named here by what it does rather than imported)."""

    def leading(self, variant: Variant) -> bool: ...

    def encode(self, texts: list[str], prompt: str, prompt_type) -> np.ndarray: ...


def _texts(inputs: Iterable) -> list[str]:
    """Strings from mteb's DataLoader of ``{"text": [...]}`` batches, or from a plain list."""
    column = _text_column(inputs)
    if column is not None:
        return column
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
        else:
            texts.extend(item["text"])
    return texts


def _text_column(inputs: Iterable) -> list[str] | None:
    """The texts of a DataLoader that reads a dataset's text column in order, read as one column:
    what its batches give, without formatting every row one at a time (about 1 s per 100,000
    rows, on the host path of every encode call); None for anything else."""
    if not isinstance(inputs, DataLoader) or not isinstance(inputs.batch_sampler, BatchSampler):
        return None
    sampler, dataset = inputs.batch_sampler.sampler, inputs.dataset
    if type(sampler) is not SequentialSampler or "text" not in getattr(dataset, "column_names", ()):
        return None
    texts = column(dataset, "text")
    return texts if all(isinstance(t, str) for t in texts) else None


def column(rows, name: str) -> list:
    """One column of mteb's rows (a datasets Dataset) as a list, read whole: ``list()`` of a
    datasets column formats every row one at a time, about 1 s per 100,000 rows."""
    return list(rows[name][:])


def model_meta(encoder: TextEncoder, variant: Variant) -> ModelMeta:
    """Full metadata; experiment_kwargs make every variant its own entry in mteb's result cache."""
    source = encoder.source
    native = encoder.facts.native if variant.pooling == "native" else None
    return variant_meta(
        source.name,
        models.revision(source),
        variant,
        encoder.options.identity(),
        similarity=native.similarity if native else "cosine",
        use_instructions=bool(prompts_of(encoder)),
        facts=models.describe(source),
        model_ref=source.ref,
    )


def variant_meta(
    name: str,
    revision: str,
    variant: Variant,
    options: dict[str, Any],
    *,
    similarity: str,
    use_instructions: bool,
    facts: dict[str, Any],
    model_ref: str,
) -> ModelMeta:
    """mteb's ModelMeta of one model revision pooled as ``variant`` with the non-default encoding
    ``options``: the variant is an mteb *experiment* (its options are the experiment_kwargs)."""
    base: dict[str, Any] = {
        "license": None,
        "release_date": None,
        "training_datasets": None,
        "reference": None,
        "languages": None,
    }
    facts = dict(facts)
    if name == models.PACKAGED_NAME:
        import mteb

        known = mteb.get_model_meta(models.PACKAGED_NAME)
        base = {k: getattr(known, k) for k in base}
        facts["n_parameters"] = known.n_parameters
        facts["memory_usage_mb"] = known.memory_usage_mb
    return ModelMeta(
        loader=_load_from_meta,
        loader_kwargs={"model": model_ref, **variant.to_dict(), **options},
        name=name,
        revision=revision,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        similarity_fn_name=ScoringFunction(similarity),
        use_instructions=use_instructions,
        max_tokens=variant.max_length,
        embed_dim=facts.get("embed_dim"),
        n_parameters=facts.get("n_parameters"),
        memory_usage_mb=facts.get("memory_usage_mb"),
        experiment_kwargs={**variant.relevant_options(), **options},
        **base,
    )


def prompts_of(encoder: TextEncoder) -> dict[str, str]:
    """The prompts this encoder applies: the model's own, overridden by the user's."""
    o = encoder.options
    return merge_prompts(encoder.facts.prompts, o.query_prompt, o.document_prompt)


def _load_from_meta(model: str, **options: Any) -> LmkEncoder:
    return encoder(model, **options)


class LmkEncoder(AbsEncoder):
    """One pooling variant of one model, as mteb sees it. Queries and documents pool alike; each
    gets the prompt mteb's own rules pick from the model's prompts (task name, task type, or
    'query'/'document')."""

    def __init__(
        self,
        text_encoder: TextEncoder,
        variant: Variant,
        meta: ModelMeta | None = None,
        group: SharedPass | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.variant = variant
        self.group = group  # a sweep's cell group: one pass over the corpus for all its poolings
        self.model_prompts = prompts_of(text_encoder) or None
        self.mteb_model_meta = meta or model_meta(text_encoder, variant)

    def prompt(self, task_metadata=None, prompt_type=None) -> str:
        """The prompt text for one encode call ('' for none)."""
        if not self.model_prompts or prompt_type is None and task_metadata is None:
            return ""
        if task_metadata is None:
            return self.model_prompts.get(PromptType(prompt_type).value, "")
        name = self.get_prompt_name(task_metadata, PromptType(prompt_type) if prompt_type else None)
        return self.model_prompts.get(name, "") if name else ""

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
        texts, prompt = _texts(inputs), self.prompt(task_metadata, prompt_type)
        if self.group is not None and self.group.leading(self.variant):
            return self.group.encode(texts, prompt, prompt_type)
        return self.text_encoder.encode(texts, [self.variant], prompt)[self.variant]


def encoder(
    model: str | None = None,
    pooling: str = "lmk",
    *,
    progress: bool = False,
    token_budget: int | None = None,
    **options: Any,
) -> LmkEncoder:
    """An mteb encoder for ``model`` (None = packaged all-MiniLM-L6-v2) pooled with ``pooling``.

    ``options`` are Variant fields (granularity, interval, intervals, seed, layers, max_length,
    strategy, normalize, placement, include_prompt) and encoding options (query_prompt,
    document_prompt, landmark_token, trust_remote_code, attn_implementation). max_length
    defaults to the model's position limit; ``token_budget`` is padded tokens per batch (at least
    16; default 8,192 on a CPU, sized from free memory on a GPU).
    """
    encoding = {k: options.pop(k) for k in list(options) if k in OPTION_KEYS}
    try:
        encode_options = EncodeOptions(**encoding)
    except ValidationError as exc:
        raise schema_error(exc, "encoder options") from None
    text_encoder = TextEncoder(
        model, options=encode_options, progress=progress, token_budget=token_budget
    )
    variant = text_encoder.resolve(make_variant(pooling, **options))
    text_encoder.facts.check_runs(
        variant, encode_options.attn_implementation, str(model or "the default model")
    )
    return LmkEncoder(text_encoder, variant)
