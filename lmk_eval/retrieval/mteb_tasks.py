"""mteb's catalogue as lmk-eval runs it: tasks (aggregates and language subsets included) and
benchmarks, resolved offline from mteb's own metadata before the hub is asked anything.

- A task spec ``Name[en+de]:test`` picks subsets (mteb's ``hf_subsets``) and splits; both are
  checked against the task's metadata and passed to ``mteb.get_task``, so only they are loaded.
- An aggregate (``CQADupstackRetrieval``) has no dataset of its own: its identity is each
  sub-task's repo, revision and commit; ``work.py`` runs the sub-tasks and combines their results
  with the aggregate's own ``combine_task_results``.
- A benchmark name (``BEIR``, ``LongEmbed``, ``CoIR``, ...) is ``mteb.get_benchmark``'s task list,
  each task with the splits and subsets the benchmark evaluates.
- Only retrieval and reranking tasks on text run (the search pass and per-query statistics are
  retrieval's); anything else is refused in one line.
- Whether a task is long-context comes from mteb's descriptive statistics of its documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmk_eval.common import hub
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.retrieval.taskref import TaskRef

RETRIEVAL_TYPES = ("Retrieval", "Reranking")
ALIASES = {
    "beir": "BEIR",
    "longembed": "LongEmbed",
    "CQADupstack": "CQADupstackRetrieval",
    "Quora": "QuoraRetrieval",
}
# A task is long-context when the documents it evaluates average at least this many characters
# (1,024 tokens at 4 characters a token): every BEIR task averages under 1,800, MLDR's English
# subset 13,300, the LongEmbed tasks 28,000 and more.
LONG_CONTEXT_CHARS = 4096
CHARS_PER_TOKEN = 4


def context_of(mean_characters: float) -> str:
    return "long" if mean_characters >= LONG_CONTEXT_CHARS else "short"


def scored_tasks(task) -> list:
    """The tasks mteb scores for ``task``: an aggregate's sub-tasks, else the task itself."""
    return list(task.metadata.tasks) if task.is_aggregate else [task]


def _task(name: str):
    import mteb

    try:
        return mteb.get_task(name)
    except (KeyError, ValueError):
        return None


def _benchmark(name: str):
    import mteb

    try:
        return mteb.get_benchmark(name)
    except (KeyError, ValueError):
        return None


def _kind_problem(task) -> str | None:
    """Why lmk-eval cannot run this task, or None: its search pass and per-query statistics are
    retrieval's, on text."""
    m = task.metadata
    if m.type not in RETRIEVAL_TYPES:
        return f"a {m.type} task"
    if set(getattr(m, "modalities", None) or ["text"]) != {"text"}:
        return f"a task on {'+'.join(m.modalities)}"
    return None


def _refuse_kind(name: str, problem: str) -> LmkEvalError:
    return LmkEvalError(
        f"mteb task '{name}' is {problem}: lmk-eval evaluates retrieval (and reranking)"
        " tasks on text only"
    )


def _chosen(
    what: str, asked: tuple[str, ...] | None, available: list[str], name: str
) -> tuple[str, ...] | None:
    """The asked subsets or splits in the task's own order (None: all of them), or one line that
    lists the available ones."""
    if asked is None:
        return None
    unknown = [x for x in asked if x not in available]
    if unknown:
        raise LmkEvalError(
            f"mteb task '{name}' has no {what} {', '.join(unknown)}; it has {', '.join(available)}"
        )
    return tuple(x for x in available if x in asked)


def statistics(task, splits: tuple[str, ...], subsets: tuple[str, ...] | None) -> list[dict] | None:
    """mteb's descriptive statistics of every (scored task, split[, subset]) the cell evaluates,
    or None where mteb ships none for one of them."""
    out = []
    for part in scored_tasks(task):
        for split in splits:
            stats = (part.metadata.descriptive_stats or {}).get(split)
            if not stats:
                return None
            by_subset = stats.get("hf_subset_descriptive_stats") or {}
            if subsets is not None and by_subset:
                if any(s not in by_subset for s in subsets):
                    return None
                out += [by_subset[s] for s in subsets]
            else:
                out.append(stats)
    return out


def count(stats: dict, key: str, text_stats: dict) -> int:
    """A count mteb states, or (older statistics, the LEMB tasks') total / average text length."""
    if stats.get(key) is not None:
        return int(stats[key])
    average = text_stats.get("average_text_length") or 0
    return round(text_stats.get("total_text_length", 0) / average) if average else 0


def mean_document_characters(found: list[dict]) -> float | None:
    total = n = 0
    for s in found:
        text = s.get("documents_text_statistics") or {}
        total += text.get("total_text_length", 0)
        n += count(s, "num_documents", text)
    return total / n if n else None


def _identity(task, subsets: tuple[str, ...] | None) -> Callable[[], dict[str, Any]]:
    def of(part) -> dict[str, Any]:
        dataset = dict(part.metadata.dataset)
        resolved = hub.commit(
            dataset["path"],
            "dataset",
            dataset.get("revision"),
            f" (mteb task {part.metadata.name})",
        )
        chosen = (
            list(subsets)
            if subsets is not None and not task.is_aggregate
            else part.metadata.hf_subsets
        )
        return {"dataset": dataset, "commit": resolved, "subsets": list(chosen)}

    def identity() -> dict[str, Any]:
        """Each scored dataset's repo and revision as mteb pins them, the commit the hub (or the
        cache, offline) resolves it to, and the subsets evaluated: asked before any work, so a
        wrong revision, a missing repo or a dead endpoint ends the run in one line."""
        if task.is_aggregate:
            return {
                "kind": "mteb-aggregate",
                "tasks": {p.metadata.name: of(p) for p in scored_tasks(task)},
            }
        return {"kind": "mteb", **of(task)}

    return identity


def task_ref(
    name: str,
    splits: tuple[str, ...] | None = None,
    subsets: tuple[str, ...] | None = None,
    benchmark: str | None = None,
) -> TaskRef | None:
    """The TaskRef of one mteb task, checked offline: its kind, splits and subsets; None when mteb
    has no task of that name."""
    canonical = ALIASES.get(name, name)
    task = _task(canonical)
    if task is None:
        return None
    problem = _kind_problem(task) or next(
        filter(None, map(_kind_problem, scored_tasks(task))), None
    )
    if problem:
        raise _refuse_kind(canonical, problem)
    m = task.metadata
    chosen_splits = _chosen("split", splits, list(m.eval_splits), canonical) or tuple(m.eval_splits)
    chosen = _chosen("subset", subsets, list(m.hf_subsets), canonical)
    if chosen is not None and (task.is_aggregate or set(chosen) == set(m.hf_subsets)):
        chosen = None  # all of them: the same cells as naming none
    shown = canonical + (f"[{'+'.join(chosen)}]" if chosen else "")
    found = statistics(task, chosen_splits, chosen)
    mean = mean_document_characters(found) if found else None

    def make(ref: TaskRef):
        import mteb

        return mteb.get_task(
            canonical,
            eval_splits=list(ref.splits),
            hf_subsets=list(ref.subsets) if ref.subsets else None,
        )

    return TaskRef(
        shown,
        "mteb",
        chosen_splits,
        make,
        _identity(task, chosen),
        base_name=canonical,
        subsets=chosen,
        context=None if mean is None else context_of(mean),
        statistics=lambda: statistics(task, chosen_splits, chosen),
        benchmarks=(benchmark,) if benchmark else (),
    )


def benchmark_refs(name: str) -> list[TaskRef] | None:
    """The tasks of mteb's benchmark ``name``, each with the splits and subsets the benchmark
    evaluates; None when mteb has no such benchmark."""
    bench = _benchmark(name)
    if bench is None:
        return None
    refused = {t.metadata.name: p for t in bench.tasks if (p := _kind_problem(t))}
    if refused:
        shown = ", ".join(f"{n} ({p.removeprefix('a ')})" for n, p in list(refused.items())[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise LmkEvalError(
            f"mteb benchmark '{bench.name}' has tasks lmk-eval cannot run: {shown}{more};"
            " lmk-eval evaluates retrieval (and reranking) tasks on text only: name its"
            " retrieval tasks instead"
        )
    return [
        task_ref(t.metadata.name, tuple(t.eval_splits), tuple(t.hf_subsets), bench.name)
        for t in bench.tasks
    ]


def resolve(
    name: str, splits: tuple[str, ...] | None, subsets: tuple[str, ...] | None
) -> list[TaskRef] | None:
    """An mteb task (a task name wins over a benchmark of the same name), else a benchmark; None
    when mteb has neither."""
    ref = task_ref(name, splits, subsets)
    if ref is not None:
        return [ref]
    return benchmark_refs(ALIASES.get(name, name)) if splits is None and subsets is None else None
