"""Computing one cell group: encode once, score each missing cell through mteb, per-query scores
by pytrec_eval, the cell payload. Whoever runs it (this process, a Ray worker), the payload goes
back to the driver, whose sink alone writes the store."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import LmkEvalError
from .plan import Cell, CellGroup
from .sweep import Sweep

if TYPE_CHECKING:
    from .encoding import TextEncoder


class ResultSink(Protocol):
    """Where computed work goes: the driver's single writer (``runner.Sink``)."""

    def started(self, cell: Cell) -> None: ...

    def save(self, payload: CellPayload) -> None: ...

    def trained(self, model: str, record: dict[str, Any]) -> None: ...


PER_QUERY_PREFIX = {"ndcg_at_": "ndcg_cut_", "map_at_": "map_cut_", "recall_at_": "recall_",
                    "precision_at_": "P_"}  # fmt: skip


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


def checkpoint_trainer(sweep: Sweep, sink: ResultSink, log: Callable[[str], None]):
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
