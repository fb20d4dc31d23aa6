"""Where a sweep's work runs: in this process (the default), or on a Ray cluster.

Work units are the plan's cell groups (the cells that share one forward pass). With Ray, each group
is a task asking for one accelerator (or one CPU where the cluster has none); a controlled sweep's
checkpoints are tasks too, and the groups of a checkpoint wait for its training. Workers compute
and return cell payloads; the driver alone writes the results store, atomically as ever, so no
shared filesystem is needed for results, an interrupted driver leaves only whole cells, and
re-running the same command resumes. A worker that dies mid-task is retried by Ray.

``--encoders N`` instead keeps the groups in order on the driver and splits each corpus over N Ray
actors, each holding one model replica: for a few very large cells rather than many small ones.
Texts are split at the encoder's own slice boundaries, so every text is batched exactly as in a
single process and the embeddings are identical.

Ray is imported only here, and only when asked for (``pip install 'lmk-eval[ray]'``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .encoding import Encoded, TextEncoder, text_slices
from .errors import LmkEvalError
from .variants import Variant

EXECUTORS = ("local", "ray")  # where a sweep's work runs (`lmk-eval run --executor`)
RETRIES = 3  # a task whose worker process dies is run again this many times


def check_ray(address: str | None, encoders: int | None) -> None:
    """Refuse, before anything else, a Ray run that cannot start."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise LmkEvalError(
            "--executor ray needs Ray: pip install 'lmk-eval[ray]' (the dev extra includes it)"
        ) from None
    if encoders is not None and encoders < 1:
        raise LmkEvalError(f"--encoders must be >= 1, got {encoders}")


def _init(address: str | None, cpus: int | None) -> bool:
    """Join the cluster at ``address``, or start a local one; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    elif cpus:
        kwargs["num_cpus"] = cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise LmkEvalError(
            f"cannot start or join {where}: {str(exc).splitlines()[0][:160]}"
        ) from None
    return True


def _resources() -> dict[str, float]:
    """One accelerator per work unit where the cluster has accelerators, one CPU otherwise."""
    import ray

    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


def _group_task(sweep, group, missing, _trained=None):
    """On a worker: one group's cells, scored with a model loaded here; payloads go back."""
    from .runner import compute_group, make_encoder, quiet_libraries

    quiet_libraries()
    return list(compute_group(group, missing, make_encoder(sweep, group.model)))


def _train_task(cfg, pooling: str, seed: int) -> dict[str, Any]:
    from .train import ensure_trained, load_pairs

    return ensure_trained(cfg, pooling, seed, load_pairs(cfg), log=lambda m: None)


def run_on_ray(sweep, todo, sink, log: Callable[[str], None], *, address: str | None = None,
               cpus: int | None = None, encoders: int | None = None) -> None:  # fmt: skip
    """Run the missing cells on Ray; the driver (this process) writes every result."""
    import ray

    started_here = _init(address, cpus)
    try:
        resources = _resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        log(f"ray: {nodes} node(s), {ray.cluster_resources()}; each work unit asks for {resources}")
        if encoders:
            _run_sharded(sweep, todo, sink, log, encoders, resources)
        else:
            _run_grid(sweep, todo, sink, resources)
    finally:
        if started_here:
            ray.shutdown()


def _run_grid(sweep, todo, sink, resources: dict[str, float]) -> None:
    """Every group a task (a checkpoint's groups wait for its training task); results are stored
    as they arrive, whichever worker finishes first."""
    import ray

    group_task = ray.remote(max_retries=RETRIES, **resources)(_group_task)
    trained: dict[str, Any] = {}
    if sweep.train is not None:
        from .train import checkpoint_jobs

        train_task = ray.remote(max_retries=RETRIES, **resources)(_train_task)
        jobs = checkpoint_jobs(sweep.train)
        for model in (m for m in dict.fromkeys(g.model for g, _ in todo) if m in jobs):
            pooling, seed = jobs[model]
            trained[model] = train_task.remote(sweep.train, pooling, seed)
    pending = {group_task.remote(sweep, g, missing, trained.get(g.model)): g for g, missing in todo}
    waiting_training = {ref: model for model, ref in trained.items()}
    while pending or waiting_training:
        done, _ = ray.wait([*pending, *waiting_training], num_returns=1)
        ref = done[0]
        if ref in waiting_training:
            sink.trained(waiting_training.pop(ref), ray.get(ref))
            continue
        group = pending.pop(ref)
        for cell in group.cells:
            sink.started(cell)
        for payload in ray.get(ref):
            sink.save(payload)


class _EncoderActor:
    """One model replica on a worker: encodes whole slices for the driver."""

    def __init__(self, sweep, model: str, slice_tokens: int) -> None:
        from .runner import make_encoder

        self.encoder = make_encoder(sweep, model, slice_tokens=slice_tokens)

    def encode(self, texts: list[str], variants: list[Variant], prompt: str) -> Encoded:
        return self.encoder.encode_all(texts, variants, prompt)

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

    def encode_all(self, texts: Sequence[str], variants: Sequence[Variant], prompt: str = "") -> Encoded:
        import ray

        variants = list(dict.fromkeys(variants))
        slices = list(text_slices(texts, self.slice_tokens))
        refs = [self.actors[i % len(self.actors)].encode.remote(list(texts[lo:hi]), variants, prompt)
                for i, (lo, hi) in enumerate(slices)]  # fmt: skip
        parts = ray.get(refs)
        self.stats.texts += len(texts)
        if not parts:
            return Encoded({v: np.zeros((0, 0), np.float32) for v in variants}, {})
        return Encoded({v: np.concatenate([p.vectors[v] for p in parts]) for v in variants},
                       {v: [c for p in parts for c in p.chunks[v]] for v in parts[0].chunks})  # fmt: skip


def encoder_pool(sweep, model: str, n: int, resources: dict[str, float], slice_tokens: int):
    import ray

    actor = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES, **resources)(_EncoderActor)
    return [actor.remote(sweep, model, slice_tokens) for _ in range(n)]


def _run_sharded(sweep, todo, sink, log, n: int, resources: dict[str, float]) -> None:
    """Groups in order on the driver; each corpus split over ``n`` actors of its model."""
    import ray

    from .encoding import SLICE_TOKENS
    from .runner import _checkpoint_trainer, compute_group

    train_checkpoint = _checkpoint_trainer(sweep, sink, log)
    pools: dict[str, list] = {}
    try:
        for group, missing in todo:
            train_checkpoint(group.model)
            if group.model not in pools:
                for actors in pools.values():  # one model's replicas at a time
                    for a in actors:
                        ray.kill(a)
                pools = {group.model: encoder_pool(sweep, group.model, n, resources, SLICE_TOKENS)}
            encoder = ShardedTextEncoder(group.model, pools[group.model], options=sweep.encode_options(),
                                         device="cpu", token_budget=sweep.token_budget)  # fmt: skip
            for payload in compute_group(group, missing, encoder, sink.started):
                sink.save(payload)
    finally:
        for actors in pools.values():
            for a in actors:
                ray.kill(a)
