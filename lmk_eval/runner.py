"""Executing a sweep: plan, check, skip what the store has, encode once per group, score, store.

Order matters for trust: everything that can refuse the sweep (config, tasks, data files, model
tokenizers and positions, landmark tokens, the output path, training data) is checked before the
output directory is touched, and a stored cell is reused only if its recorded identity (model and
data by content, splits, options, scoring version) equals the current one. The model is loaded
only when a cell is missing, so re-running a finished sweep reads the store and nothing else.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import models
from .errors import LmkEvalError
from .files import check_writable_dir
from .hardware import default_device, resolve_dtype
from .native import merge_prompts
from .provenance import scoring_identity
from .store import STORE_FOLDERS, RunStore
from .sweep import Cell, CellGroup, Sweep, plan
from .variants import Variant

if TYPE_CHECKING:
    from .encoding import TextEncoder

PER_QUERY_PREFIX = {"ndcg_at_": "ndcg_cut_", "map_at_": "map_cut_", "recall_at_": "recall_",
                    "precision_at_": "P_"}  # fmt: skip


@dataclass
class RunSummary:
    total: int
    computed: int
    seconds: float
    model_loaded: bool
    set_aside: int = 0


def quiet_libraries() -> None:
    """mteb and datasets log and draw bars per split; the harness draws its own."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("mteb", "datasets", "transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def pytrec_measure(main_score: str) -> str | None:
    """mteb's metric name -> pytrec_eval's per-query key (ndcg_at_10 -> ndcg_cut_10)."""
    for prefix, measure in PER_QUERY_PREFIX.items():
        if main_score.startswith(prefix):
            return measure + main_score[len(prefix) :]
    return None


def per_query_scores(task, predictions_file: Path, main_score: str) -> dict[str, dict[str, float]]:
    """Per-query main-metric values of mteb's saved rankings, by pytrec_eval (what mteb itself
    averages), so the mean over queries is mteb's main score."""
    import pytrec_eval

    key = pytrec_measure(main_score)
    if key is None or not predictions_file.exists():
        return {}
    request = ".".join(key.rsplit("_", 1))  # ndcg_cut_10 -> ndcg_cut.10
    saved = json.loads(predictions_file.read_text(encoding="utf-8"))
    out: dict[str, dict[str, float]] = {}
    for subset, splits in saved.items():
        if subset == "mteb_model_meta":
            continue
        for split, results in splits.items():
            qrels = task.dataset[subset][split]["relevant_docs"]
            if task.ignore_identical_ids:
                results = {q: {d: s for d, s in docs.items() if d != q} for q, docs in results.items()}
            evaluated = pytrec_eval.RelevanceEvaluator(qrels, {request}).evaluate(results)
            out[split] = {q: m[key] for q, m in evaluated.items()}
    return out


def zero_grade_queries(task) -> dict[str, int]:
    """Per split, the queries whose judgements are all grade 0 or less. mteb keeps them (it drops
    only queries with no judgement at all) and scores them 0; so does lmk-eval, to stay comparable
    with mteb's numbers, and says how many. A split with no positive judgement is refused."""
    out: dict[str, int] = {}
    for subset, splits in task.dataset.items():
        for split, data in splits.items():
            if split not in task.metadata.eval_splits:
                continue
            qrels = data["relevant_docs"]
            zero = sum(1 for docs in qrels.values() if not any(g > 0 for g in docs.values()))
            if qrels and zero == len(qrels):
                raise LmkEvalError(
                    f"{task.metadata.name} split {split}: no query has a relevant document (every"
                    " judgement is grade 0), so every score would be 0; check the task's qrels"
                )
            if zero:
                name = split if subset == "default" else f"{subset}/{split}"
                out[name] = out.get(name, 0) + zero
    return out


def evaluate_cell(task, encoder) -> tuple[object, dict[str, dict[str, float]]]:
    import mteb

    with tempfile.TemporaryDirectory(prefix="lmk-eval-pred-") as folder:
        result = mteb.evaluate(encoder, task, cache=None, prediction_folder=folder,
                               show_progress_bar=False, co2_tracker=False, raise_error=True)  # fmt: skip
        task_result = result.task_results[0]
        main = task.metadata.main_score
        per_query = per_query_scores(
            task, Path(folder) / f"{task.metadata.name}_predictions.json", main
        )
    return task_result, per_query


def split_scores(task_result) -> dict[str, dict[str, float]]:
    out = {}
    for split, entries in task_result.scores.items():
        entry = entries[0]
        out[split] = {
            k: float(v)
            for k, v in entry.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    return out


# -- before anything is written ------------------------------------------------------------------
def model_identities(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """Model as the sweep names it -> what it is by content (a checkpoint: how it is trained)."""
    out = {m: models.identity(models.resolve_model(m)) for m in sweep.models} if sweep.poolings else {}
    if sweep.train is not None:
        out |= {path: checkpoint_identity(sweep.train, p, s) for path, (p, s) in sweep.checkpoints().items()}
    return out


def checkpoint_identity(cfg, pooling: str, seed: int, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint by its training setup and by content (its files' digest, verified against its
    training record); ``files`` is None until it is trained, so no stored cell matches it."""
    from .train import found_checkpoint, training_identity

    record = record if record is not None else found_checkpoint(cfg, pooling, seed)
    return {"kind": "checkpoint", "training": training_identity(cfg, pooling, seed),
            "files": (record or {}).get("files")}  # fmt: skip


def _facts(sweep: Sweep, model: str) -> models.ModelFacts:
    """Tokenizer and configuration of a sweep's model (a checkpoint's base, before training)."""
    ref = sweep.train.base if model in sweep.checkpoints() else model
    return models.inspect_model(models.resolve_model(ref), sweep.encode_options())


def encoding_identity(sweep: Sweep, model: str, variant: Variant) -> dict[str, Any]:
    """How the model is loaded and fed for this cell: the options, the prompts it will apply and,
    for ``native``, what the model's own configuration resolves to."""
    options = sweep.encode_options()
    out: dict[str, Any] = {"options": options.identity(), "dtype": _dtype(sweep)}
    if model not in sweep.checkpoints():
        facts = models.summary(models.resolve_model(model), options)  # cached by the model's content
        out["prompts"] = merge_prompts(facts["prompts"], options.query_prompt, options.document_prompt)
        if variant.pooling == "native" and facts["native"] is not None:
            out["native"] = facts["native"]
        if variant.strategy == "self-extend":  # the Table 6 values its defaults resolve to
            group, window = variant.self_extend_options(facts["max_positions"])
            out["self_extend"] = {"group": group, "window": window}
    return out


def _dtype(sweep: Sweep) -> str:
    """The dtype cells run in; only ``auto`` asks which device there is (and so imports torch)."""
    name = sweep.encode_options().dtype
    device = sweep.device or (default_device() if name == "auto" else "cpu")
    return resolve_dtype(name, device)[0]


def cell_identities(sweep: Sweep, groups: list[CellGroup]) -> dict[str, dict[str, Any]]:
    """Cell key -> everything that produced (or will produce) its numbers."""
    by_model = model_identities(sweep)
    scoring = scoring_identity()
    out = {}
    for g in groups:
        data = g.task.data_identity()
        for c in g.cells:
            out[c.key()] = {"slot": json.loads(c.slot), "model": by_model[g.model], "data": data,
                            "encoding": encoding_identity(sweep, g.model, c.variant),
                            "scoring": scoring}  # fmt: skip
    return out


def preflight(sweep: Sweep, groups: list[CellGroup]) -> None:
    """Refuse now, in one line, what would fail later: each model's tokenizer and config load,
    and every variant (``native`` resolved) fits its positions and finds its special tokens.
    Loads no weights."""
    from .attention import check_implementation
    from .positions import supports

    for g in groups:
        facts = _facts(sweep, g.model)
        for c in g.cells:
            facts.tokenisation.check(facts.concrete(c.variant))
            if g.model not in sweep.checkpoints():  # a checkpoint will carry what it trains
                facts.check_weights(facts.concrete(c.variant))
            why = supports(facts.config, c.variant.strategy)
            if why:
                raise LmkEvalError(why)
            if c.variant.changes_attention:
                check_implementation(sweep.attn_implementation)
    if sweep.train is not None:
        from .train import load_pairs

        load_pairs(sweep.train)  # a bad training folder fails before any work


# -- running ------------------------------------------------------------------------------------


@dataclass
class CellPayload:
    """What computing one cell yields; whoever computed it, the driver alone stores it."""

    key: str
    context: str
    task_result_json: str
    main_score: str
    scores: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, float]]
    seconds: float
    zero_grade_queries: dict[str, int]


def compute_group(group: CellGroup, missing: list[Cell], encoder: TextEncoder,
                  on_start: Callable[[Cell], None] | None = None) -> Iterator[CellPayload]:  # fmt: skip
    """Score the missing cells of one group with one encoder, sharing its forward passes."""
    from .search import GroupSearch

    task = group.task.build()
    task.load_data()  # loaded once, kept across the group's variants
    zero_grade: dict[str, int] | None = None
    search = GroupSearch(encoder, [c.variant for c in missing])
    for cell in missing:
        if on_start:
            on_start(cell)
        cell_started = time.perf_counter()
        task_result, per_query = evaluate_cell(task, search.view(cell.variant))
        if zero_grade is None:  # the qrels as mteb scored them (some tasks load them in evaluate)
            zero_grade = zero_grade_queries(task)
        yield CellPayload(cell.key(), group.task.context, task_result.model_dump_json(indent=1),
                          task.metadata.main_score, split_scores(task_result), per_query,
                          time.perf_counter() - cell_started, zero_grade)  # fmt: skip


def make_encoder(sweep: Sweep, model: str, progress: bool = False, **extra: Any) -> TextEncoder:
    from .encoding import TextEncoder  # torch: only once there is something to encode

    return TextEncoder(model, options=sweep.encode_options(), device=sweep.device,
                       token_budget=sweep.token_budget, progress=progress, **extra)  # fmt: skip


class Sink:
    """The driver's side of a run: writes each payload (and training record) to the store, keeps
    the progress bar, and writes the sweep record with the first result."""

    def __init__(self, sweep: Sweep, store: RunStore, identities, all_cells, todo, progress: bool,
                 log: Callable[[str], None] = print):  # fmt: skip
        from tqdm.auto import tqdm

        self.sweep, self.store, self.identities, self.all_cells = sweep, store, identities, all_cells
        self.log, self.said = log, set()
        self.cells = {c.key(): c for _, missing in todo for c in missing}
        self.bar = tqdm(total=len(self.cells), desc="cells", unit="cell", disable=not progress)

    def started(self, cell: Cell) -> None:
        self.bar.set_postfix_str(f"{cell.task} {cell.variant.label()} @{cell.variant.max_length}")

    def save(self, payload: CellPayload) -> None:
        if self.store.saved == 0:  # the sweep record appears with the first result, not before
            self.store.write_sweep(self.sweep.to_dict(), self.all_cells)
        cell = self.cells[payload.key]
        for split, n in payload.zero_grade_queries.items():
            if (cell.task, split) not in self.said:
                self.said.add((cell.task, split))
                total = len(payload.per_query.get(split, {})) or "its"
                self.log(f"{cell.task} {split}: {n} of {total} queries judge no document relevant"
                         " (only grade 0); mteb keeps them and scores them 0, and so does lmk-eval")  # fmt: skip
        fields = {k: v for k, v in vars(payload).items() if k != "key"}
        self.store.save(cell, identity=self.identities[payload.key], **fields)
        self.bar.update(1)

    def trained(self, model: str, record: dict[str, Any]) -> None:
        """Keep the training record; the checkpoint's cells are stored under its files' digest."""
        self.store.save_training(Path(model).name, record)
        now = checkpoint_identity(self.sweep.train, record["pooling"], record["seed"], record)
        for key, cell in self.cells.items():
            if cell.model == model:
                self.identities[key] = {**self.identities[key], "model": now}

    def close(self) -> None:
        self.bar.close()
        if self.store.saved:
            self.store.write_scores_csv()


def run_sweep(
    sweep: Sweep,
    output: str | Path,
    *,
    recompute: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    executor: str = "local",
    ray_address: str | None = None,
    ray_cpus: int | None = None,
    encoders: int | None = None,
    ray_timeout: float = 60.0,
    ray_logs: bool = False,
) -> RunSummary:
    started = time.perf_counter()
    from .executors import EXECUTORS, check_ray  # lazily: executors calls back into this module

    if executor not in EXECUTORS:
        raise LmkEvalError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        check_ray(ray_address, encoders, ray_timeout)
    elif ray_address or encoders or ray_cpus or ray_logs:
        raise LmkEvalError("--ray-address, --ray-cpus, --ray-logs and --encoders need --executor ray")
    groups = plan(sweep)
    check_writable_dir(Path(output), "output folder", folders=(*STORE_FOLDERS, ".tmp"))
    identities = cell_identities(sweep, groups)
    all_cells = [c for g in groups for c in g.cells]
    store = RunStore(output)
    if recompute or any(store.lookup(c, identities[c.key()]).state != "ok" for c in all_cells):
        preflight(sweep, groups)  # only work can fail: a finished sweep loads no tokenizer
        if sweep.encode_options().dtype != "float32":
            device = sweep.device or default_device()
            dtype, why = resolve_dtype(sweep.encode_options().dtype, device)
            log(f"dtype {sweep.encode_options().dtype} -> {dtype} on {device}: {why}")
    with store.writing():
        todo, set_aside = _missing_cells(store, groups, identities, recompute, log)
        total, n_missing = len(all_cells), sum(len(m) for _, m in todo)
        if not todo:
            store.write_sweep(sweep.to_dict(), all_cells)
            store.write_scores_csv()
            log(f"all {total} cells already in {store.root}; nothing to compute")
            return RunSummary(total, 0, time.perf_counter() - started, False, set_aside)
        log(f"{n_missing} of {total} cells to compute -> {store.root}")
        quiet_libraries()
        sink = Sink(sweep, store, identities, all_cells, todo, progress, log)
        try:
            if executor == "ray":
                from .executors import run_on_ray

                run_on_ray(sweep, todo, sink, log, address=ray_address, cpus=ray_cpus,
                           encoders=encoders, timeout=ray_timeout, show_logs=ray_logs)  # fmt: skip
            else:
                run_locally(sweep, todo, sink, log, progress)
        finally:
            sink.close()
    return RunSummary(total, n_missing, time.perf_counter() - started, True, set_aside)


def _missing_cells(store: RunStore, groups, identities, recompute: bool, log):
    """Groups with the cells to compute; stale or corrupt cells are set aside with one line each."""
    todo, set_aside = [], 0
    for g in groups:
        missing = []
        for c in g.cells:
            found = store.lookup(c, identities[c.key()])
            if found.state == "ok" and not recompute:
                continue
            if found.state in ("stale", "corrupt"):
                where = store.set_aside(c, found.state)
                set_aside += 1
                log(f"recomputing {c.key()}: {found.why}; the old cell is in {where}")
            missing.append(c)
        if missing:
            todo.append((g, missing))
    return todo, set_aside


def run_locally(sweep: Sweep, todo, sink: Sink, log, progress: bool) -> None:
    """This process, group after group; a controlled sweep trains each checkpoint just before
    its first cell (seed by seed, so an interrupted sweep leaves whole checkpoints behind)."""
    train_checkpoint = _checkpoint_trainer(sweep, sink, log)
    encoders: dict[str, TextEncoder] = {}
    try:
        for group, missing in todo:
            train_checkpoint(group.model)
            encoder = encoders.get(group.model) or make_encoder(sweep, group.model, progress)
            encoders[group.model] = encoder
            for payload in compute_group(group, missing, encoder, sink.started):
                sink.save(payload)
    finally:
        for name, enc in encoders.items():
            s = enc.stats
            if s.forward_passes:
                log(f"{name}: {s.real_tokens:,} tokens in {s.forward_passes} forward passes"
                    f" ({s.forward_seconds:.0f}s), padding waste {s.padding_waste:.1%}")  # fmt: skip


def _checkpoint_trainer(sweep: Sweep, sink: Sink, log: Callable[[str], None]):
    """For a controlled sweep: train a checkpoint just before its first cell and keep its training
    record with the results."""
    cfg = sweep.train
    if cfg is None:
        return lambda model: None
    from .train import checkpoint_jobs, ensure_trained, load_pairs

    jobs = checkpoint_jobs(cfg)
    pairs = load_pairs(cfg)

    def train(model: str) -> None:
        if model in jobs:
            pooling, seed = jobs.pop(model)
            sink.trained(model, ensure_trained(cfg, pooling, seed, pairs, log))

    return train
