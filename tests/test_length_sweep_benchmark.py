"""The length-sweep benchmark's SciFact subset reaches the run exactly as chosen."""

from __future__ import annotations

from benchmarks.length_sweep import scifact_subset
from lmk_eval.retrieval.beir import read_beir_folder
from lmk_eval.retrieval.task_registry import data_dir, subset


def test_the_written_subset_reads_back_as_the_subset(tmp_path):
    chosen = subset(read_beir_folder(data_dir("scifact"), "test"), 7, 20)
    back = read_beir_folder(scifact_subset(7, 20, tmp_path / "subset"), "test")
    assert back.qrels == chosen.qrels
    assert [q["id"] for q in back.queries] == [q["id"] for q in chosen.queries]
    key = ("id", "title", "text")
    assert [tuple(d[k] for k in key) for d in back.corpus] == [
        tuple(d[k] for k in key) for d in chosen.corpus
    ]
    assert len(back.corpus) == 20
