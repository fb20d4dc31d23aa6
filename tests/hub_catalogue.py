"""Miniature copies of mteb's datasets, in the layouts mteb's loaders ask for, at the repo ids and
revisions mteb's own task metadata pins (read from the installed mteb, not copied here):

- the retrieval loader's ``default``/``corpus``/``queries`` configs (``tests.fake_hub.beir_repo``),
  one repo per task, an aggregate's (CQADupstack) one per sub-task;
- multilingual tasks (MLDR): ``<lang>-corpus``, ``<lang>-queries``, ``<lang>-qrels`` per subset,
  each language's ids prefixed by it, so a test can tell which languages were loaded;
- ``dwzhu/LongEmbed``: one config per LEMB task its own ``load_data`` reads (passkey and needle
  by ``context_length``).

Texts are real (SciFact abstracts and claims, the bundled passkey and needle documents); a few
per split, so that a whole benchmark runs in seconds. The numbers they give mean nothing.
"""

from __future__ import annotations

from functools import lru_cache

from lmk_eval.retrieval.beir import RetrievalSplit
from lmk_eval.retrieval.task_registry import _beir_loader, load_synthetic, subset
from tests.fake_hub import Repo, _card, _jsonl, beir_repo, longembed_repo

QUERIES, DOCUMENTS = 3, 8  # per split of a short task
TEXT_CHARACTERS = 400  # an abstract's first sentences
LENGTH_QUERIES, LENGTH_DOCUMENTS = 2, 3  # per length split of passkey and needle


@lru_cache(maxsize=1)
def _whole_scifact() -> RetrievalSplit:
    return _beir_loader("scifact")()["test"]


def _scifact(offset: int, prefix: str) -> RetrievalSplit:
    """A SciFact slice (its claims, their abstracts and distractors), ids prefixed."""
    whole = _whole_scifact()
    queries = whole.queries[offset * QUERIES : (offset + 1) * QUERIES]
    picked = RetrievalSplit(whole.corpus, queries, {q["id"]: whole.qrels[q["id"]] for q in queries})
    small = subset(picked, QUERIES, DOCUMENTS, seed=offset)
    return RetrievalSplit(
        [{**d, "id": prefix + d["id"], "text": d["text"][:TEXT_CHARACTERS]} for d in small.corpus],
        [{**q, "id": prefix + q["id"]} for q in small.queries],
        {prefix + q: {prefix + d: g for d, g in docs.items()} for q, docs in small.qrels.items()},
    )


def _by_length(kind: str) -> dict[str, RetrievalSplit]:
    """Every length split, ids prefixed by it; only the longest holds its own (32k-token)
    documents, the others 256-token ones: a forward pass at 8,192 tokens costs seconds here."""
    splits = load_synthetic(kind)
    longest = list(splits)[-1]
    out = {}
    for name in splits:
        s = subset(
            splits[name if name == longest else "test_256"], LENGTH_QUERIES, LENGTH_DOCUMENTS
        )
        out[name] = RetrievalSplit(
            [{**d, "id": f"{name}-{d['id']}"} for d in s.corpus],
            [{**q, "id": f"{name}-{q['id']}"} for q in s.queries],
            {
                f"{name}-{q}": {f"{name}-{d}": g for d, g in docs.items()}
                for q, docs in s.qrels.items()
            },
        )
    return out


def multilingual_repo(
    repo_id: str, commit: str, languages: dict[str, dict[str, RetrievalSplit]]
) -> Repo:
    """mteb's multilingual retrieval layout: per language ``<lang>-corpus`` (split corpus),
    ``<lang>-queries`` (split queries) and ``<lang>-qrels`` (one split per evaluated split)."""
    files, card = {}, {}
    for lang, splits in languages.items():
        corpus = {d["id"]: d for s in splits.values() for d in s.corpus}
        queries = {q["id"]: q for s in splits.values() for q in s.queries}
        files[f"{lang}/corpus.jsonl"] = _jsonl(
            [
                {"_id": d["id"], "title": d.get("title", ""), "text": d["text"]}
                for d in corpus.values()
            ]
        )
        files[f"{lang}/queries.jsonl"] = _jsonl(
            [{"_id": q["id"], "text": q["text"]} for q in queries.values()]
        )
        for name, s in splits.items():
            files[f"{lang}/qrels/{name}.jsonl"] = _jsonl(
                [
                    {"query-id": q, "corpus-id": d, "score": g}
                    for q, docs in s.qrels.items()
                    for d, g in docs.items()
                ]
            )
        card[f"{lang}-corpus"] = {"corpus": f"{lang}/corpus.jsonl"}
        card[f"{lang}-queries"] = {"queries": f"{lang}/queries.jsonl"}
        card[f"{lang}-qrels"] = {name: f"{lang}/qrels/{name}.jsonl" for name in splits}
    files["README.md"] = _card(card)
    return Repo("dataset", repo_id, commit, files)


def repos_for(task_names: list[str]) -> list[Repo]:
    """Every dataset repo mteb reads for these tasks (an aggregate's sub-tasks included)."""
    import mteb

    from lmk_eval.retrieval.mteb_tasks import scored_tasks

    tasks = [part for name in task_names for part in scored_tasks(mteb.get_task(name))]
    out: dict[tuple[str, str], Repo] = {}
    longembed: dict[str, dict] = {}
    revision = None
    for i, task in enumerate(tasks):
        m = task.metadata
        path, commit = m.dataset["path"], m.dataset["revision"]
        if path == "dwzhu/LongEmbed":  # read by the task's own load_data, one config per task
            revision = commit
            kind = m.dataset["name"]
            longembed[kind] = (
                {int(n.split("_")[1]): s for n, s in _by_length(kind).items()}
                if kind in ("passkey", "needle")
                else {0: _scifact(i, f"{kind}-")}
            )
        elif m.name == "LEMBPasskeyRetrieval":
            out[(path, commit)] = beir_repo(path, commit, _by_length("passkey"), per_split=True)
        elif m.is_multilingual:
            languages = {
                lang: {split: _scifact(i + j, f"{lang}-") for split in m.eval_splits}
                for j, lang in enumerate(m.hf_subsets)
            }
            out[(path, commit)] = multilingual_repo(path, commit, languages)
        else:
            out[(path, commit)] = beir_repo(
                path, commit, {split: _scifact(i, "") for split in m.eval_splits}
            )
    if longembed:
        out[("dwzhu/LongEmbed", revision)] = longembed_repo(revision, longembed)
    return list(out.values())


def paper_tasks() -> list[str]:
    """mteb's names of the tasks the shipped `paper` sweep resolves to (through mteb's benchmarks)."""
    from lmk_eval.retrieval.task_registry import resolve_all
    from lmk_eval.run.sweeps import load_sweep

    sweep = load_sweep("paper")
    return list(
        dict.fromkeys(r.base_name or r.name for g in sweep.grids for r in resolve_all(g.tasks))
    )
