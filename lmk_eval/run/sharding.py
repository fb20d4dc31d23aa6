"""One corpus over several model replicas (``--encoders N``): Ray actors that each hold a model,
and a TextEncoder whose forward passes they run. Imported only when a sharded run starts."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmk_eval.config.variants import Variant
from lmk_eval.model.batching import SLICE_TOKENS, text_slices
from lmk_eval.model.encoding import Encoded, EncodeStats, TextEncoder


class _EncoderActor:
    """One model replica on a worker: encodes whole slices for the driver."""

    def __init__(self, sweep, model: str, slice_tokens: int) -> None:
        from lmk_eval.run.work import make_encoder

        self.encoder = make_encoder(sweep, model, slice_tokens=slice_tokens)

    def encode(
        self, texts: list[str], variants: list[Variant], prompt: str
    ) -> tuple[Encoded, EncodeStats]:
        """The slice's vectors and what encoding it counted (inputs shared, tokens run)."""
        before = dataclasses.replace(self.encoder.stats)
        encoded = self.encoder.encode_all(texts, variants, prompt)
        return encoded, self.encoder.stats.since(before)

    def pid(self) -> int:
        return os.getpid()


class ShardedTextEncoder(TextEncoder):
    """A TextEncoder whose forward passes run on a pool of Ray actors, one model replica each.

    Texts are cut at the encoder's own slice boundaries and each slice goes whole to one actor, so
    every text is tokenised and batched exactly as in one process: identical embeddings, in order.
    Tokenizer, configuration and prompts are read here, without loading the weights.
    """

    def __init__(self, model: str | None, actors: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.actors = list(actors)

    def encode_all(
        self, texts: Sequence[str], variants: Sequence[Variant], prompt: str = ""
    ) -> Encoded:
        import ray

        variants = list(dict.fromkeys(variants))
        slices = list(text_slices(texts, self.slice_tokens))
        refs = [
            self.actors[i % len(self.actors)].encode.remote(list(texts[lo:hi]), variants, prompt)
            for i, (lo, hi) in enumerate(slices)
        ]
        parts = []
        for encoded, counted in ray.get(refs):
            parts.append(encoded)
            self.stats.add(counted)  # the texts, inputs shared and tokens run, on the replicas
        if not parts:
            return Encoded({v: np.zeros((0, 0), np.float32) for v in variants}, {})
        return Encoded(
            {v: np.concatenate([p.vectors[v] for p in parts]) for v in variants},
            {v: [c for p in parts for c in p.chunks[v]] for v in parts[0].chunks},
        )


def encoder_pool(
    sweep, model: str, n: int, resources: dict[str, float], slice_tokens: int, retries: int = 3
):
    """``n`` actors holding ``model``, each restarted (and its task retried) ``retries`` times."""
    import ray

    actor = ray.remote(max_restarts=retries, max_task_retries=retries, **resources)(_EncoderActor)
    return [actor.remote(sweep, model, slice_tokens) for _ in range(n)]


class ShardedEncoders:
    """One pool of ``n`` replicas of one model at a time (the previous model's are killed when the
    next one's groups start), and a ShardedTextEncoder over it."""

    def __init__(self, sweep, n: int, resources: dict[str, float], retries: int) -> None:
        self.sweep, self.n, self.resources, self.retries = sweep, n, resources, retries
        self.model: str | None = None
        self.encoder: ShardedTextEncoder | None = None

    def __call__(self, model: str) -> ShardedTextEncoder:
        if model != self.model:
            self._kill()
            actors = encoder_pool(
                self.sweep, model, self.n, self.resources, SLICE_TOKENS, self.retries
            )
            self.model = model
            self.encoder = ShardedTextEncoder(
                model,
                actors,
                options=self.sweep.encode_options(),
                device="cpu",
                token_budget=self.sweep.token_budget,
            )
        return self.encoder

    def close(self, _log) -> None:
        self._kill()

    def _kill(self) -> None:
        import ray

        for actor in self.encoder.actors if self.encoder else []:
            ray.kill(actor)
        self.model, self.encoder = None, None
