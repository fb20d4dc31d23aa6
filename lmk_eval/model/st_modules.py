"""lmk-eval's tokenisation and pooling as sentence-transformers modules.

A model built from ``LandmarkTransformer`` + ``HarnessPooling`` (+ ST's ``Normalize``) tokenises
with the harness's code path (landmarks, multi-CLS or plain) and pools with its pure functions, so
a checkpoint trained with sentence-transformers saves with ``model.save(dir)``, loads back with
``SentenceTransformer(dir, trust_remote_code=True)`` wherever ``lmk_eval`` is installed
(sentence-transformers 6 asks that for any module class outside its own package), and encodes
exactly as ``lmk_eval.encoder(dir, pooling=...)`` does.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module, Transformer

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import Variant, make_variant
from lmk_eval.model.batching import pad_windows
from lmk_eval.model.loading import is_causal, max_positions
from lmk_eval.model.tokenisation import Tokenisation
from lmk_eval.pooling import poolers, registry
from lmk_eval.pooling.registry import PoolInputs

MARKERS = "lmk_markers"


class LandmarkTransformer(Transformer):
    """ST's Transformer with the harness's landmark-aware tokenisation in ``preprocess``."""

    config_keys = [
        *Transformer.config_keys,
        "pooling",
        "granularity",
        "interval",
        "intervals",
        "seed",
    ]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        pooling: str = "lmk",
        granularity: str = "fixed",
        interval: int = 32,
        intervals: list[int] | tuple[int, ...] = (32, 64, 128, 256),
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.pooling = pooling
        self.granularity = granularity
        self.interval = interval
        self.intervals = list(intervals)
        self.seed = seed
        make_variant(
            pooling, granularity=granularity, interval=interval, intervals=intervals, seed=seed
        )
        self._tokenisation: Tokenisation | None = None

    @property
    def tokenisation(self) -> Tokenisation:
        if self._tokenisation is None:
            config = self.model.config
            self._tokenisation = Tokenisation(
                self.tokenizer, max_positions(config), causal=is_causal(config)
            )
        return self._tokenisation

    def variant(self) -> Variant:
        max_length = self.max_seq_length or self.tokenisation.max_positions
        return make_variant(
            self.pooling,
            granularity=self.granularity,
            interval=self.interval,
            intervals=self.intervals,
            seed=self.seed,
            max_length=min(max_length, self.tokenisation.max_positions),
        )

    def preprocess(self, inputs, prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        if not inputs:
            return {}
        windows = self.tokenisation.windows(list(inputs), self.variant(), prompt or "")
        ids, mask, markers, _prompt = pad_windows(windows)
        return {"input_ids": ids, "attention_mask": mask, MARKERS: markers}


class HarnessPooling(Module):
    """Pools token embeddings with the harness's registry (landmark markers from the input module).
    A pooling with weights of its own (latent_attention, multilayer_attention, gem) keeps them in
    ``self.pooler``, trained with the encoder and saved with the checkpoint."""

    config_keys = [
        "pooling",
        "interval",
        "embedding_dimension",
        "layers",
        "n_layers",
        "pooler_options",
    ]

    def __init__(
        self,
        embedding_dimension: int,
        pooling: str = "lmk",
        interval: int = 32,
        layers: int = 4,
        n_layers: int | None = None,
        pooler_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pooling in ("layer_mean", "native"):
            raise LmkEvalError(f"{pooling} is evaluation-only; train with another pooling")
        self.embedding_dimension = embedding_dimension
        self.pooling = pooling
        self.interval = interval
        self.layers = layers
        self.n_layers = n_layers
        self.pooler_options = dict(pooler_options or {})
        self._variant = make_variant(pooling, interval=interval, layers=layers)
        self.pooler = None
        if self._variant.spec.weights == "trainable":
            if n_layers is None:
                raise LmkEvalError(f"{pooling} needs the encoder's layer count (n_layers)")
            self.pooler = poolers.build(pooling, embedding_dimension, n_layers, self.pooler_options)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden = features["token_embeddings"]
        mask = features["attention_mask"]
        markers = features.get(MARKERS)
        if markers is None:
            markers = torch.zeros_like(mask, dtype=torch.bool)
        layers = features.get("all_layer_embeddings")
        inputs = PoolInputs(hidden, mask, markers.bool(), layers, None, self.pooler)
        features["sentence_embedding"] = registry.pool_batch(self._variant, inputs)[0]
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(
        self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        self.save_config(output_path)
        if self.pooler is not None:
            self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any):
        hub = {
            k: kwargs[k]
            for k in ("token", "cache_folder", "revision", "local_files_only")
            if k in kwargs
        }
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        module = cls(**config)
        if module.pooler is not None:
            cls.load_torch_weights(model_name_or_path, subfolder=subfolder, model=module, **hub)
        return module


def build_model(base: str, pooling: str, *, max_seq_length: int = 256, **options: Any):
    """A SentenceTransformer of ``base`` (a local dir or hub id) pooled with ``pooling``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize

    pooler_options = options.pop("pooler_options", None) or {}
    layers = options.pop("layers", 4)
    transformer = LandmarkTransformer(
        base, pooling=pooling, max_seq_length=max_seq_length, **options
    )
    variant = make_variant(pooling)
    if variant.spec.needs_layers:  # sentence-transformers then passes all_layer_embeddings on
        transformer.model.config.output_hidden_states = True
    pool = HarnessPooling(
        transformer.get_embedding_dimension(),
        pooling=pooling,
        interval=options.get("interval", 32),
        layers=layers,
        n_layers=transformer.model.config.num_hidden_layers + 1,
        pooler_options=pooler_options,
    )
    return SentenceTransformer(modules=[transformer, pool, Normalize()], device="cpu")
