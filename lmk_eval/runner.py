"""Executing a sweep: plan, skip what the store has, encode once per group, score with mteb, store.

The model is loaded only when a cell is missing, so re-running a finished sweep reads the store
and nothing else.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .encoding import SharedEmbeddings, TextEncoder
from .store import RunStore
from .sweep import Cell, CellGroup, Sweep, plan
from .task_registry import ensure_hub

PER_QUERY_PREFIX = {"ndcg_at_": "ndcg_cut_", "map_at_": "map_cut_", "recall_at_": "recall_",
                    "precision_at_": "P_"}  # fmt: skip


@dataclass
class RunSummary:
    total: int
    computed: int
    seconds: float
    model_loaded: bool


def quiet_libraries() -> None:
    """mteb and datasets log and draw bars per split; the harness draws its own."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("mteb", "datasets", "transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def pytrec_measure(main_score: str) -> str | None:
    for prefix, measure in PER_QUERY_PREFIX.items():
        if main_score.startswith(prefix):
            return measure + main_score[len(prefix) :]
    return None


def per_query_scores(task, predictions_file: Path, main_score: str) -> dict[str, dict[str, float]]:
    """Per-query main-metric values from mteb's saved rankings, scored by mteb's own evaluator."""
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    measure = pytrec_measure(main_score)
    if measure is None or not predictions_file.exists():
        return {}
    saved = json.loads(predictions_file.read_text(encoding="utf-8"))
    out: dict[str, dict[str, float]] = {}
    for subset, splits in saved.items():
        if subset == "mteb_model_meta":
            continue
        for split, results in splits.items():
            qrels = task.dataset[subset][split]["relevant_docs"]
            if task.ignore_identical_ids:
                results = {
                    q: {d: s for d, s in docs.items() if d != q} for q, docs in results.items()
                }
            evaluated = calculate_retrieval_scores(results, qrels, task.k_values)
            out[split] = {q: m[measure] for q, m in evaluated.all_scores.items()}
    return out


def evaluate_cell(task, encoder) -> tuple[object, dict[str, dict[str, float]]]:
    import mteb

    with tempfile.TemporaryDirectory(prefix="lmk-eval-pred-") as folder:
        result = mteb.evaluate(
            encoder,
            task,
            cache=None,
            prediction_folder=folder,
            show_progress_bar=False,
            co2_tracker=False,
            raise_error=True,
        )
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


def run_sweep(
    sweep: Sweep,
    output: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    started = time.perf_counter()
    store = RunStore(output)
    store.clean_staging()
    groups = plan(sweep)
    todo = [(g, [c for c in g.cells if not store.has(c)]) for g in groups]
    todo = [(g, missing) for g, missing in todo if missing]
    ensure_hub(list(dict.fromkeys(g.task.name for g, _ in todo if g.task.source == "mteb")))
    store.write_sweep(sweep.to_dict())
    total = sum(len(g.cells) for g in groups)
    n_missing = sum(len(m) for _, m in todo)
    if not todo:
        store.write_scores_csv()
        log(f"all {total} cells already in {store.root}; nothing to compute")
        return RunSummary(total, 0, time.perf_counter() - started, False)
    log(f"{n_missing} of {total} cells to compute -> {store.root}")
    train_checkpoint = _checkpoint_trainer(sweep, store, log)
    quiet_libraries()
    from tqdm.auto import tqdm

    encoders: dict[str, TextEncoder] = {}
    bar = tqdm(total=n_missing, desc="cells", unit="cell", disable=not progress)
    try:
        for group, missing in todo:
            train_checkpoint(group.model)
            encoder = encoders.get(group.model)
            if encoder is None:
                encoder = TextEncoder(
                    group.model, token_budget=sweep.token_budget, progress=progress
                )
                encoders[group.model] = encoder
            _run_group(store, group, missing, encoder, bar)
    finally:
        bar.close()
        store.write_scores_csv()
        for name, enc in encoders.items():
            s = enc.stats
            if s.forward_passes:
                log(f"{name}: {s.real_tokens:,} tokens in {s.forward_passes} forward passes"
                    f" ({s.forward_seconds:.0f}s), padding waste {s.padding_waste:.1%}")  # fmt: skip
    return RunSummary(total, n_missing, time.perf_counter() - started, bool(encoders))


def _checkpoint_trainer(
    sweep: Sweep, store: RunStore, log: Callable[[str], None]
) -> Callable[[str], None]:
    """For a controlled sweep: train a checkpoint just before its first cell (seed by seed, so an
    interrupted sweep leaves whole checkpoints behind) and keep its training record with the results."""
    cfg = sweep.train_config()
    if cfg is None:
        return lambda model: None
    from .train import checkpoint_jobs, ensure_trained, load_pairs

    jobs = checkpoint_jobs(cfg)
    pairs = load_pairs(cfg)  # a bad training folder fails before any work

    def train(model: str) -> None:
        if model in jobs:
            pooling, seed = jobs.pop(model)
            record = ensure_trained(cfg, pooling, seed, pairs, log)
            store.save_training(Path(model).name, record)

    return train


def _run_group(
    store: RunStore, group: CellGroup, missing: list[Cell], encoder: TextEncoder, bar
) -> None:
    from .mteb_adapter import LmkEncoder, model_meta

    task = group.task.build()
    task.load_data()  # loaded once, kept across the group's variants
    shared = SharedEmbeddings(encoder, [c.variant for c in missing])
    for cell in missing:
        bar.set_postfix_str(f"{cell.task} {cell.variant.label()} @{cell.variant.max_length}")
        adapter = LmkEncoder(encoder, cell.variant, shared, model_meta(encoder, cell.variant))
        cell_started = time.perf_counter()
        task_result, per_query = evaluate_cell(task, adapter)
        store.save(
            cell,
            context=group.task.context,
            task_result_json=task_result.model_dump_json(indent=1),
            main_score=task.metadata.main_score,
            scores=split_scores(task_result),
            per_query=per_query,
            seconds=time.perf_counter() - cell_started,
        )
        bar.update(1)
    shared.clear()
