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

Ray is imported only here and in ``sharding.py`` (the replicas of ``--encoders``), and only when asked
for (``pip install 'lmk-eval[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lmk_eval.common.errors import LmkEvalError, first_line
from lmk_eval.config.options import RayOptions
from lmk_eval.run.work import (
    CellPayload,
    ResultSink,
    Shared,
    checkpoint_trainer,
    compute_group,
    make_encoder,
    quiet_libraries,
)

if TYPE_CHECKING:
    from lmk_eval.config.sweep import Sweep
    from lmk_eval.model.encoding import TextEncoder

EXECUTORS = ("local", "ray")  # where a sweep's work runs (`lmk-eval run --executor`)
RETRIES = 3  # a task whose worker process dies is run again this many times
# A folder where each group task, once started, records its process id (a file named by it):
# which worker holds which group, for an operator or a test that stops one.
WORKER_PIDS_ENV = "LMK_EVAL_WORKER_PIDS"


def check_ray(options: RayOptions) -> None:
    """Refuse, before anything else, a Ray run that cannot start."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise LmkEvalError(
            "--executor ray needs Ray: pip install 'lmk-eval[ray]' (the dev extra includes it)"
        ) from None
    if options.encoders is not None and options.encoders < 1:
        raise LmkEvalError(f"--encoders must be >= 1, got {options.encoders}")
    if not (options.timeout > 0 and math.isfinite(options.timeout)):
        raise LmkEvalError(f"--ray-timeout must be a number of seconds > 0, got {options.timeout}")


Todo = list  # [(CellGroup, [Cell, ...])]: the missing cells of each group, in plan order


class Executor(Protocol):
    """Runs the missing cells of a sweep and hands every payload (and training record) to the sink."""

    def run(
        self, sweep: Sweep, todo: Todo, sink: ResultSink, log: Callable[[str], None]
    ) -> None: ...


class LocalExecutor:
    """This process, group after group; a controlled sweep trains each checkpoint just before
    its first cell (seed by seed, so an interrupted sweep leaves whole checkpoints behind).
    ``encoders`` may be shared between runs (one model load for several sweeps)."""

    def __init__(self, progress: bool = False, encoders: LocalEncoders | None = None) -> None:
        self.progress, self.encoders = progress, encoders

    def run(self, sweep: Sweep, todo: Todo, sink: ResultSink, log: Callable[[str], None]) -> None:
        encoders = self.encoders or LocalEncoders(sweep, self.progress)
        run_groups(sweep, todo, sink, log, encoders)


class LocalEncoders:
    """One TextEncoder per model, kept across its groups; what they did is logged at the end."""

    def __init__(self, sweep: Sweep, progress: bool) -> None:
        self.sweep, self.progress = sweep, progress
        self.encoders: dict[str, TextEncoder] = {}

    def __call__(self, model: str) -> TextEncoder:
        if model not in self.encoders:
            self.encoders[model] = make_encoder(self.sweep, model, self.progress)
        return self.encoders[model]

    def close(self, log: Callable[[str], None]) -> None:
        for name, enc in self.encoders.items():
            s = enc.stats
            if s.forward_passes:
                log(
                    f"{name}: {s.real_tokens:,} tokens in {s.forward_passes} forward passes"
                    f" ({s.forward_seconds:.0f}s), padding waste {s.padding_waste:.1%}"
                )


def run_groups(
    sweep: Sweep, todo: Todo, sink: ResultSink, log: Callable[[str], None], encoders
) -> None:
    """Groups in order on the driver, each scored with ``encoders(model)`` (in this process, or
    over Ray actors with ``--encoders``), a checkpoint trained just before its first group."""
    train_checkpoint = checkpoint_trainer(sweep, sink, log)
    try:
        for group, missing in todo:
            train_checkpoint(group.model)
            payload = None
            for payload in compute_group(group, missing, encoders(group.model), sink.started):
                sink.save(payload)
            log_sharing(payload, log)
    finally:
        encoders.close(log)


def log_sharing(last: CellPayload | None, log: Callable[[str], None]) -> None:
    """Say what a group shared across lengths and readings (its last cell carries the figures)."""
    if last is not None and last.sharing.get("asked"):
        log(Shared(**last.sharing).line())


class RayExecutor:
    """Every group a Ray task (or, with ``encoders``, each corpus over that many model replicas)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        check_ray(self.options)

    def run(self, sweep: Sweep, todo: Todo, sink: ResultSink, log: Callable[[str], None]) -> None:
        run_on_ray(sweep, todo, sink, log, self.options)


def make_executor(name: str, *, progress: bool = False, ray: RayOptions | None = None) -> Executor:
    """The executor a run asks for, refused in one line (before any work) when it cannot run."""
    if name not in EXECUTORS:
        raise LmkEvalError(f"executor {name!r} is not one of {', '.join(EXECUTORS)}")
    if name == "local":
        if ray is not None and (ray.address or ray.cpus or ray.encoders or ray.show_logs):
            raise LmkEvalError(
                "--ray-address, --ray-cpus, --ray-logs and --encoders need --executor ray"
            )
        return LocalExecutor(progress)
    return RayExecutor(ray)


def _probe(address: str, timeout: float) -> None:
    """A head that cannot be reached at all is told in one line at once, before Ray (which would
    retry for minutes, printing its own log lines) is asked to join it."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 10)).close()
    except OSError as exc:
        raise LmkEvalError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; check --ray-address"
            " (the head's host:port, as `ray start --head` printed it)"
        ) from None


@contextlib.contextmanager
def _stderr_to(path: str, quiet: bool):
    """Ray's core worker logs from C++ straight to file descriptor 2; under ``quiet`` those lines
    go to ``path`` instead (``--ray-logs`` shows them)."""
    if not quiet:
        yield
        return
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    hanging = False
    try:
        yield
    except LmkEvalError:  # a join left hanging keeps logging: fd 2 stays on the file, Python's
        hanging = True  # own lines (the error) reach the terminal through the saved descriptor
        sys.stderr = os.fdopen(saved, "w", buffering=1)
        raise
    finally:
        if not hanging:
            os.dup2(saved, 2)
            os.close(saved)


def _init(options: RayOptions) -> bool:
    """Join the cluster at ``address`` within ``timeout`` seconds, or start a local one; True if
    this call started it. A join that does not finish in time is one line, not a hang."""
    import ray

    address, timeout = options.address, options.timeout
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": options.show_logs,
        "logging_level": logging.INFO if options.show_logs else logging.ERROR,
    }
    where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
    if address:
        # before any redirect: an unreachable address leaves nothing behind
        _probe(address, timeout)
    log_file = Path(tempfile.gettempdir()) / f"lmk-eval-ray-{os.getpid()}.log"
    outcome: dict[str, BaseException] = {}

    def join() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    try:
        with _stderr_to(str(log_file), quiet=not options.show_logs):
            if address:
                kwargs["address"] = address
                # a thread only for joining: a local cluster's processes die with the thread that
                # started them (PR_SET_PDEATHSIG), and starting one does not hang
                thread = threading.Thread(target=join, name="lmk-eval-ray-join", daemon=True)
                thread.start()
                thread.join(timeout)
                if thread.is_alive():
                    said = _last_line(log_file)
                    raise LmkEvalError(
                        f"{where} did not answer within {timeout:g} s (--ray-timeout); check --ray-address"
                        " and that the cluster is up" + (f" (Ray: {said})" if said else "")
                    )
            else:
                if options.cpus:
                    kwargs["num_cpus"] = options.cpus
                join()
    finally:  # Ray's lines during the join are in the error or gone: nothing is left in the temp folder
        log_file.unlink(missing_ok=True)
    error = outcome.get("error")
    if isinstance(error, (ConnectionError, RuntimeError, ValueError)):
        raise LmkEvalError(f"cannot start or join {where}: {first_line(error)}") from None
    if error is not None:
        raise error
    return True


def _last_line(path: Path) -> str:
    """The last line Ray wrote to ``path`` (its own log lines while it joined), cut short."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return first_line(lines[-1], 120) if lines else ""


def _resources() -> dict[str, float]:
    """One accelerator per work unit where the cluster has accelerators, one CPU otherwise."""
    import ray

    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


def _group_task(sweep, group, missing, _trained=None):
    """On a worker: one group's cells, scored with a model loaded here; payloads go back."""
    quiet_libraries()
    if os.environ.get(WORKER_PIDS_ENV):
        from lmk_eval.common.files import atomic_write_text

        atomic_write_text(Path(os.environ[WORKER_PIDS_ENV]) / str(os.getpid()), "")
    return list(compute_group(group, missing, make_encoder(sweep, group.model)))


def _train_task(cfg, pooling: str, seed: int) -> dict[str, Any]:
    from lmk_eval.train.trainer import ensure_trained, load_pairs

    return ensure_trained(cfg, pooling, seed, load_pairs(cfg), log=lambda m: None)


def run_on_ray(sweep, todo, sink, log: Callable[[str], None], options: RayOptions) -> None:
    """Run the missing cells on Ray; the driver (this process) writes every result."""
    import ray

    started_here = _init(options)
    try:
        resources = _resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        log(f"ray: {nodes} node(s), {ray.cluster_resources()}; each work unit asks for {resources}")
        if options.encoders:
            _run_sharded(sweep, todo, sink, log, options.encoders, resources)
        else:
            _run_grid(sweep, todo, sink, log, resources)
    finally:
        if started_here:
            ray.shutdown()


def _run_grid(sweep, todo, sink, log, resources: dict[str, float]) -> None:
    """Every group a task (a checkpoint's groups wait for its training task); results are stored
    as they arrive, whichever worker finishes first."""
    import ray

    group_task = ray.remote(max_retries=RETRIES, **resources)(_group_task)
    trained: dict[str, Any] = {}
    if sweep.train is not None:
        from lmk_eval.train.trainer import checkpoint_jobs

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
        payload = None
        for payload in ray.get(ref):
            sink.save(payload)
        log_sharing(payload, log)


def _run_sharded(sweep, todo, sink, log, n: int, resources: dict[str, float]) -> None:
    """Groups in order on the driver; each corpus split over ``n`` actors of its model."""
    from lmk_eval.run.sharding import ShardedEncoders

    run_groups(sweep, todo, sink, log, ShardedEncoders(sweep, n, resources, RETRIES))
