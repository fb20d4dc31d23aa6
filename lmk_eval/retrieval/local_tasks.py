"""mteb retrieval tasks over data lmk-eval reads itself (bundled, synthetic, BEIR folders).

Apart from ``beir.py`` (which reads and checks the files) so that planning and checking a sweep
never import mteb; only building a task to score does.
"""

from __future__ import annotations

from collections.abc import Callable

from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from lmk_eval.retrieval.beir import RetrievalSplit


class LocalRetrievalTask(AbsTaskRetrieval):
    """An mteb retrieval task whose splits come from a Python callable instead of the hub.

    mteb keeps ``metadata`` on the class (unloading pops an instance copy), so every local task
    is its own subclass: build one with ``local_task``.
    """

    _load_splits: Callable[[], dict[str, RetrievalSplit]]

    def load_data(self, **kwargs) -> None:
        if self.data_loaded:
            return
        from datasets import Dataset

        loaded = self._load_splits()
        self.dataset = {"default": {}}
        for split in self.metadata.eval_splits:
            data = loaded[split]
            self.dataset["default"][split] = {
                "corpus": Dataset.from_dict(
                    {
                        "id": [d["id"] for d in data.corpus],
                        "title": [d.get("title", "") for d in data.corpus],
                        "text": [d["text"] for d in data.corpus],
                    }
                ),
                "queries": Dataset.from_dict(
                    {
                        "id": [q["id"] for q in data.queries],
                        "text": [q["text"] for q in data.queries],
                    }
                ),
                "relevant_docs": {q: dict(docs) for q, docs in data.qrels.items()},
                "top_ranked": None,
            }
        self.data_loaded = True


def local_task(
    name: str,
    load_splits: Callable[[], dict[str, RetrievalSplit]],
    splits: list[str],
    *,
    description: str,
    main_score: str = "ndcg_at_10",
    reference: str | None = None,
) -> LocalRetrievalTask:
    """An mteb task named ``name`` scoring ``splits`` of the data ``load_splits`` returns."""
    metadata = TaskMetadata(
        name=name,
        description=description,
        reference=reference,
        dataset={"path": f"lmk-eval/{name}", "revision": "local"},
        type="Retrieval",
        category="t2t",
        eval_splits=splits,
        eval_langs=["eng-Latn"],
        main_score=main_score,
    )
    cls = type(
        f"Local_{name}",
        (LocalRetrievalTask,),
        {"metadata": metadata, "_load_splits": staticmethod(load_splits)},
    )
    return cls()
