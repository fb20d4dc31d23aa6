"""Computing one cell group: encode once, score each missing cell through mteb, per-query scores
by pytrec_eval, the cell payload. Whoever runs it (this process, a Ray worker), the payload goes
back to the driver, whose sink alone writes the store."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.sweep import Sweep
from lmk_eval.retrieval.mteb_tasks import context_of, scored_tasks
from lmk_eval.run.plan import CellGroup
from lmk_eval.store.records import Cell, Part

if TYPE_CHECKING:
    from lmk_eval.model.encoding import EncodeStats, TextEncoder


class ResultSink(Protocol):
    """Where computed work goes: the driver's single writer (``runner.Sink``)."""

    def started(self, cell: Cell) -> None: ...

    def save(self, payload: CellPayload) -> None: ...

    def trained(self, model: str, record: dict[str, Any]) -> None: ...


PER_QUERY_PREFIX = {
    "ndcg_at_": "ndcg_cut_",
    "map_at_": "map_cut_",
    "recall_at_": "recall_",
    "precision_at_": "P_",
}


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


def per_query_scores(
    task, rankings: dict[tuple[str, str], dict[str, dict[str, float]]], main_score: str
) -> dict[tuple[str, str], dict[str, float]]:
    """(subset, split) -> per-query main-metric values of the rankings the search gave mteb, by
    pytrec_eval (what mteb itself averages), so the mean over a part's queries is its mteb score."""
    import pytrec_eval

    key = pytrec_measure(main_score)
    if key is None:
        return {}
    request = ".".join(key.rsplit("_", 1))  # ndcg_cut_10 -> ndcg_cut.10
    out: dict[tuple[str, str], dict[str, float]] = {}
    for (subset, split), results in rankings.items():
        qrels = task.dataset[subset][split]["relevant_docs"]
        if task.ignore_identical_ids:
            results = {q: {d: s for d, s in docs.items() if d != q} for q, docs in results.items()}
        evaluated = pytrec_eval.RelevanceEvaluator(qrels, {request}).evaluate(results)
        out[(subset, split)] = {q: m[key] for q, m in evaluated.items()}
    return out


def saved_rankings(predictions_file: Path) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """(subset, split) -> rankings from mteb's predictions file (for searches that keep none)."""
    if not predictions_file.exists():
        return {}
    saved = json.loads(predictions_file.read_text(encoding="utf-8"))
    return {
        (subset, split): results
        for subset, splits in saved.items()
        if subset != "mteb_model_meta"
        for split, results in splits.items()
    }


def load(task) -> None:
    """Load a task's data once (an aggregate: each sub-task's; it has no dataset of its own)."""
    for part in scored_tasks(task):
        part.load_data()


def unload(task) -> None:
    """Free what ``load`` read: mteb keeps one instance of an aggregate's sub-tasks per process."""
    for part in scored_tasks(task):
        if part.data_loaded:
            part.unload_data()


def zero_grade_queries(task) -> dict[str, int]:
    """Per part (split, subset/split, sub-task/split), the queries whose judgements are all grade
    0 or less. mteb keeps them (it drops only queries with no judgement at all) and scores them 0;
    so does lmk-eval, to stay comparable with mteb's numbers, and says how many. A split with no
    positive judgement is refused."""
    out: dict[str, int] = {}
    own = task.metadata.name
    for part in scored_tasks(task):
        for subset, splits in part.dataset.items():
            for split, data in splits.items():
                if split not in part.metadata.eval_splits:
                    continue
                qrels = data["relevant_docs"]
                zero = sum(1 for docs in qrels.values() if not any(g > 0 for g in docs.values()))
                name = Part(task=part.metadata.name, subset=subset, split=split, scores={}).label(
                    own
                )
                if qrels and zero == len(qrels):
                    raise LmkEvalError(
                        f"{own} {name}: no query has a relevant document (every judgement is grade"
                        " 0), so every score would be 0; check the task's qrels"
                    )
                if zero:
                    out[name] = out.get(name, 0) + zero
    return out


@dataclass
class Evaluated:
    """mteb's results of one cell: the task's TaskResult (an aggregate's combined by mteb) and,
    for an aggregate, each sub-task's; every part with its per-query scores."""

    task_result: Any
    subtask_results: list[Any]
    scores: list[Part]
    subtasks: list[Part]

    @property
    def main(self) -> float:
        return float(self.task_result.get_score())


def evaluate_cell(task, encoder) -> Evaluated:
    """One cell as mteb runs it. An aggregate runs its sub-tasks and is scored by its own
    ``combine_task_results`` (mteb's aggregation, what ``mteb.evaluate`` does with it). Per-query
    scores come from the rankings a ``VariantSearch`` keeps in memory; any other encoder or search
    has mteb write its predictions to a temporary file, read back."""
    import mteb

    parts = scored_tasks(task)
    kept = getattr(encoder, "rankings", None)
    with contextlib.ExitStack() as stack:
        folder = None
        if kept is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="lmk-eval-pred-"))
        result = mteb.evaluate(
            encoder,
            parts if task.is_aggregate else task,
            cache=None,
            prediction_folder=folder,
            show_progress_bar=False,
            co2_tracker=False,
            raise_error=True,
        )
        per_query = {}
        for p in parts:
            name = p.metadata.name
            if kept is None:
                rankings = saved_rankings(Path(folder) / f"{name}_predictions.json")
            else:
                rankings = {(sub, split): r for (n, sub, split), r in kept.items() if n == name}
            per_query[name] = per_query_scores(p, rankings, p.metadata.main_score)
        if kept is not None:
            kept.clear()
    results = list(result.task_results)
    if not task.is_aggregate:
        return Evaluated(results[0], [], parts_of(results[0], per_query), [])
    combined = task.combine_task_results(results)
    return Evaluated(
        combined,
        results,
        parts_of(combined, {}),
        [p for r in results for p in parts_of(r, per_query)],
    )


def parts_of(
    task_result, per_query: dict[str, dict[tuple[str, str], dict[str, float]]]
) -> list[Part]:
    """The entries of an mteb TaskResult as Parts, each with its per-query scores."""
    name = task_result.task_name
    out = []
    for split, entries in task_result.scores.items():
        for entry in entries:
            subset = entry.get("hf_subset", "default")
            numbers = {
                k: float(v)
                for k, v in entry.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            queries = per_query.get(name, {}).get((subset, split), {})
            out.append(
                Part(task=name, subset=subset, split=split, scores=numbers, per_query=queries)
            )
    return out


def document_context(task) -> str:
    """Short or long from the documents the cell evaluates (their mean length in characters,
    title and text as mteb's statistics count them), for a task mteb ships no statistics for:
    local folders, bundled data."""
    total = n = 0
    for part in scored_tasks(task):
        for splits in part.dataset.values():
            for split, data in splits.items():
                if split not in part.metadata.eval_splits:
                    continue
                characters, documents = _characters(data["corpus"])
                total, n = total + characters, n + documents
    return context_of(total / n if n else 0)


def _characters(corpus) -> tuple[int, int]:
    """(characters of title + " " + text, documents) of a corpus: an mteb Dataset, counted in
    Arrow (a million documents take a second), or id -> {text} from older loaders."""
    if isinstance(corpus, dict):
        return sum(
            len(f"{d.get('title') or ''} {d['text']}".strip()) for d in corpus.values()
        ), len(corpus)
    import pyarrow.compute as pc

    arrow = corpus.with_format("arrow")
    total = pc.sum(pc.utf8_length(arrow["text"])).as_py() or 0
    if "title" in corpus.column_names:
        titles = pc.utf8_length(pc.fill_null(arrow["title"], ""))
        total += (pc.sum(titles).as_py() or 0) + (pc.sum(pc.greater(titles, 0)).as_py() or 0)
    return total, len(corpus)


@dataclass
class CellPayload:
    """What computing one cell yields; whoever computed it, the driver alone stores it."""

    key: str
    context: str
    task_result_json: str
    subtask_results: dict[str, str]  # an aggregate's sub-tasks: name -> mteb's TaskResult JSON
    main_score: str
    main: float
    scores: list[Part]
    subtasks: list[Part]
    seconds: float
    zero_grade_queries: dict[str, int]
    machine: str  # where it was computed (the seconds' machine): accelerator or CPU
    sharing: dict[str, int | str]  # the group's inputs so far (``Shared.as_dict``)


@dataclass
class Shared:
    """What one group put through the model: ``asked`` inputs (and ``asked_tokens``) its lengths
    and readings would run in separate passes, ``run`` (and ``tokens``) what ran, each distinct
    input once."""

    group: str
    asked: int
    run: int
    asked_tokens: int
    tokens: int

    @classmethod
    def since(cls, group: str, encoder: TextEncoder, before: EncodeStats) -> Shared:
        now = encoder.stats
        return cls(
            group,
            now.cell_windows - before.cell_windows,
            now.windows - before.windows,
            now.cell_tokens - before.cell_tokens,
            now.real_tokens - before.real_tokens,
        )

    def as_dict(self) -> dict[str, int | str]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        return (
            f"{self.group}: {self.asked - self.run:,} inputs shared across lengths and readings"
            f" ({self.run:,} run of {self.asked:,}); {self.tokens:,} tokens through the model"
            f" ({self.asked_tokens:,} in a pass per length and reading)"
        )


def compute_group(
    group: CellGroup,
    missing: list[Cell],
    encoder: TextEncoder,
    on_start: Callable[[Cell], None] | None = None,
) -> Iterator[CellPayload]:
    """Score the missing cells of one group with one encoder, sharing its forward passes."""
    from lmk_eval.retrieval.search import GroupSearch

    task = group.task.build()
    load(task)  # loaded once, kept across the group's variants
    try:
        from lmk_eval.common.hardware import machine_description

        machine = machine_description(encoder.device)
        context = group.task.context or document_context(task)
        zero_grade: dict[str, int] | None = None
        search = GroupSearch(encoder, [c.variant for c in missing])
        before = dataclasses.replace(encoder.stats)
        name = f"{group.model} {group.task.name}"
        for cell in missing:
            if on_start:
                on_start(cell)
            cell_started = time.perf_counter()
            found = evaluate_cell(task, search.view(cell.variant))
            # the qrels as mteb scored them (some tasks load them in evaluate)
            if zero_grade is None:
                zero_grade = zero_grade_queries(task)
            subtasks = {r.task_name: r.model_dump_json(indent=1) for r in found.subtask_results}
            yield CellPayload(
                cell.key(),
                context,
                found.task_result.model_dump_json(indent=1),
                subtasks,
                task.metadata.main_score,
                found.main,
                found.scores,
                found.subtasks,
                time.perf_counter() - cell_started,
                zero_grade,
                machine,
                Shared.since(name, encoder, before).as_dict(),
            )
    finally:
        unload(task)


def make_encoder(sweep: Sweep, model: str, progress: bool = False, **extra: Any) -> TextEncoder:
    from lmk_eval.model.encoding import TextEncoder  # torch: only once there is something to encode

    return TextEncoder(
        model,
        options=sweep.encode_options(),
        device=sweep.device,
        token_budget=sweep.token_budget,
        progress=progress,
        **extra,
    )


def checkpoint_trainer(sweep: Sweep, sink: ResultSink, log: Callable[[str], None]):
    """For a controlled sweep: train a checkpoint just before its first cell and keep its training
    record with the results."""
    cfg = sweep.train
    if cfg is None:
        return lambda model: None
    from lmk_eval.train.trainer import checkpoint_jobs, ensure_trained, load_pairs

    jobs = checkpoint_jobs(cfg)
    pairs = load_pairs(cfg)

    def train(model: str) -> None:
        if model in jobs:
            pooling, seed = jobs.pop(model)
            sink.trained(model, ensure_trained(cfg, pooling, seed, pairs, log))

    return train
