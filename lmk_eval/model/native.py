"""A model as its authors publish it: the pooling, prompts and similarity of its own
sentence-transformers configuration (or, for a hub model mteb knows, mteb's prompts for it).

``native`` is then one row beside cls/mean/lmk, computed by the harness's own code path and equal
to ``SentenceTransformer(dir).encode`` (tested). Only what the harness can reproduce exactly is
accepted: a Transformer, one Pooling mode, an optional Normalize. Anything else (Dense layers,
several concatenated pooling modes, euclidean similarity) is refused in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import Variant, make_variant

LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
TRANSFORMERS = {"Transformer", "LandmarkTransformer"}
POOLERS = {"Pooling", "HarnessPooling"}
SIMILARITIES = {"cosine", "dot"}


@dataclass(frozen=True)
class NativeSpec:
    """What the model's own configuration says about turning token states into one vector."""

    pooling: str
    options: dict[str, Any] = field(default_factory=dict)  # e.g. lmk's granularity and interval
    include_prompt: bool = True
    normalize: bool = False
    similarity: str = "cosine"
    max_seq_length: int | None = None  # informational: the sweep's max_length is what runs
    source: str = ""  # where it was read

    def to_dict(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            **self.options,
            "include_prompt": self.include_prompt,
            "normalize": self.normalize,
            "similarity": self.similarity,
            "max_seq_length": self.max_seq_length,
            "source": self.source,
        }

    def concrete(self, variant: Variant) -> Variant:
        """The variant that computes ``native`` for this model, at the variant's length and strategy."""
        return make_variant(
            self.pooling,
            **self.options,
            max_length=variant.max_length,
            strategy=variant.strategy,
            normalize=self.normalize,
            include_prompt=self.include_prompt,
        )


def _read_json(read, name: str) -> dict | list | None:
    text = read(name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise LmkEvalError(f"the model's {name} is not valid JSON") from None


def _pooling_mode(config: dict) -> str:
    mode = config.get("pooling_mode")
    if mode is None:
        active = [name for key, name in LEGACY_MODES.items() if config.get(key)]
        mode = active if len(active) != 1 else active[0]
        if not active:
            mode = "mean"  # sentence-transformers' own default
    if isinstance(mode, list | tuple):
        if len(mode) != 1:
            raise LmkEvalError(
                f"native: the model concatenates several pooling modes ({', '.join(mode)}), which"
                " the harness does not reproduce; choose one pooling"
            )
        mode = mode[0]
    if mode not in LEGACY_MODES.values():
        raise LmkEvalError(f"native: unknown sentence-transformers pooling mode {mode!r}")
    return mode


def read_native(read) -> NativeSpec | None:
    """The native pooling from a model's sentence-transformers files; ``read(relative path)``
    returns a file's text or None. None when the model has no sentence-transformers config."""
    modules = _read_json(read, "modules.json")
    if not modules:
        return None
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    unsupported = [k for k in kinds if k not in TRANSFORMERS | POOLERS | {"Normalize"}]
    if unsupported or not any(k in POOLERS for k in kinds):
        what = ", ".join(unsupported) or "no Pooling module"
        raise LmkEvalError(
            f"native: the model's sentence-transformers pipeline has {what}, which the harness"
            " does not apply; choose a pooling (cls, mean, lmk, ...) or evaluate it with"
            " sentence-transformers directly"
        )
    st_config = _read_json(read, "config_sentence_transformers.json") or {}
    similarity = st_config.get("similarity_fn_name") or "cosine"
    if similarity not in SIMILARITIES:
        raise LmkEvalError(f"native: similarity {similarity!r} is not supported (cosine or dot)")
    at = next(i for i, k in enumerate(kinds) if k in POOLERS)
    pool_config = _read_json(read, f"{modules[at].get('path', '')}/config.json".lstrip("/")) or {}
    transformer_config = _read_json(read, "sentence_bert_config.json") or {}
    options: dict[str, Any] = {}
    if kinds[at] == "HarnessPooling":  # a checkpoint lmk-eval trained: its transformer says how
        pooling = transformer_config.get("pooling") or pool_config.get("pooling", "mean")
        for key in ("granularity", "interval", "intervals", "seed"):
            if key in transformer_config:
                options[key] = transformer_config[key]
        include_prompt = True
    else:
        pooling = _pooling_mode(pool_config)
        include_prompt = bool(pool_config.get("include_prompt", True))
    return NativeSpec(
        pooling,
        options,
        include_prompt,
        normalize="Normalize" in kinds,
        similarity=similarity,
        max_seq_length=transformer_config.get("max_seq_length"),
        source="sentence-transformers config",
    )


def read_pooler(read) -> dict | None:
    """A checkpoint's trained pooler, from its lmk-eval pooling module: {"path", "config"}."""
    modules = _read_json(read, "modules.json") or []
    for m in modules:
        if str(m.get("type", "")).rsplit(".", 1)[-1] == "HarnessPooling":
            path = str(m.get("path", ""))
            return {
                "path": path,
                "config": _read_json(read, f"{path}/config.json".lstrip("/")) or {},
            }
    return None


def read_prompts(read) -> dict[str, str]:
    st_config = _read_json(read, "config_sentence_transformers.json") or {}
    prompts = st_config.get("prompts") or {}
    return {str(k): str(v) for k, v in prompts.items() if v is not None}


def local_reader(directory: Path):
    def read(name: str) -> str | None:
        path = directory / name
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return read


def hub_reader(repo_id: str, revision: str):
    def read(name: str) -> str | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(hf_hub_download(repo_id, name, revision=revision)).read_text(
                encoding="utf-8"
            )
        except EntryNotFoundError:
            return None

    return read


def mteb_prompts(name: str) -> dict[str, str]:
    """The prompts mteb's own implementation of a hub model uses, if mteb knows the model."""
    import mteb

    try:
        meta = mteb.get_model_meta(name)
    except (KeyError, ValueError):
        return {}
    prompts = (meta.loader_kwargs or {}).get("model_prompts") or {}
    return {str(k): str(v) for k, v in prompts.items()}


def merge_prompts(model: dict[str, str], query: str | None, document: str | None) -> dict[str, str]:
    """The model's prompts with the user's query/document prompts on top ('' removes one)."""
    out = dict(model)
    for key, value in (("query", query), ("document", document)):
        if value is None:
            continue
        if value:
            out[key] = value
        else:
            out.pop(key, None)
    return out
