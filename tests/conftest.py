"""Shared fixtures: the real packaged model, loaded once, and a tiny real BEIR folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "LMK_EVAL_CACHE" not in os.environ:  # file digests: a cache of the test session's own
    import tempfile

    os.environ["LMK_EVAL_CACHE"] = tempfile.mkdtemp(prefix="lmk-eval-test-cache-")


# Fixtures that load or build a model, a data folder or a finished run: a test asking for one is
# an integration test unless marked e2e (see the markers in pyproject.toml).
INTEGRATION_FIXTURES = {
    "text_encoder",
    "tiny",
    "tiny_beir",
    "tokenizer",
    "finished",
    "finished_run",
}
INTEGRATION_CALLS = {"main", "run_sweep", "TextEncoder", "encoder"}  # the CLI, a sweep, a model
KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets one kind: its own marker, else integration when it asks for a model or a
    data folder (or drives the command line), else unit."""
    for item in items:
        if any(item.get_closest_marker(k) for k in KINDS):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        calls = set(item.function.__code__.co_names) if hasattr(item, "function") else set()
        integration = fixtures & INTEGRATION_FIXTURES or calls & INTEGRATION_CALLS
        kind = "integration" if integration else "unit"
        item.add_marker(kind)


@pytest.fixture(autouse=True)
def every_computed_cell_satisfies_the_invariant(monkeypatch):
    """Every cell a run of any test computes and stores (in this process) is checked as it is
    stored: its per-query means are its parts' scores, its main score mteb's TaskResult's."""
    from lmk_eval.run.runner import Sink
    from lmk_eval.store.cells import read_record
    from tests.invariants import check_cell

    stored = Sink.save

    def save(self, payload):
        stored(self, payload)
        folder = self.store.cell_dir(payload.key)
        check_cell(read_record(folder / "cell.json"), folder)

    monkeypatch.setattr(Sink, "save", save)


@pytest.fixture(scope="session")
def text_encoder():
    from lmk_eval.model.encoding import TextEncoder

    return TextEncoder(None).load()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny random ModernBERT, RoBERTa and Qwen2 directories, and each as a sentence-transformers
    directory with prompts and its family's usual pooling."""
    from tests.tiny_models import NATIVE, as_sentence_transformer, build_all

    root = tmp_path_factory.mktemp("tiny-models")
    dirs = build_all(root)
    st = {
        name: as_sentence_transformer(d, root / f"{name}-st", NATIVE[name])
        for name, d in dirs.items()
    }
    return dirs, st


@pytest.fixture(scope="session")
def tokenizer(text_encoder):
    return text_encoder.tokenisation.tokenizer


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple]) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for d in corpus:
            f.write(
                json.dumps({"_id": d["id"], "title": d.get("title", ""), "text": d["text"]}) + "\n"
            )
    with (folder / "queries.jsonl").open("w") as f:
        for q in queries:
            f.write(json.dumps({"_id": q["id"], "text": q["text"]}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d, s in qrels:
            f.write(f"{q}\t{d}\t{s}\n")
    return folder


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    """8 real SciFact claims, their abstracts and 12 distractors, as a BEIR folder."""
    from lmk_eval.retrieval.task_registry import _beir_loader

    split = _beir_loader("scifact", (8, 20))()["test"]
    qrels = [(q, d, s) for q, docs in split.qrels.items() for d, s in docs.items()]
    return write_beir(
        tmp_path_factory.mktemp("tiny") / "tiny_scifact", split.corpus, split.queries, qrels
    )
