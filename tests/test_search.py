"""One pass over the corpus for every pooling: the same results as each pooling through mteb's own
search, whatever the chunking, with ties broken as mteb's heap breaks them."""

from __future__ import annotations

import mteb
import numpy as np
import pytest
import torch
from datasets import Dataset
from mteb.models.search_wrappers import SearchEncoderWrapper, chunked_full_corpus_search

from lmk_eval.mteb_adapter import LmkEncoder, model_meta
from lmk_eval.search import GroupSearch, TopK, chunk_documents
from lmk_eval.task_registry import _folder
from lmk_eval.variants import make_variant
from lmk_eval.work import evaluate_cell


def test_chunks_are_sized_by_bytes():
    assert chunk_documents(6, 768, 64 * 2**20) == 64 * 2**20 // (6 * 768 * 4)
    assert chunk_documents(1, 384, 100) == 1  # never an empty chunk
    assert chunk_documents(6, 384) < chunk_documents(1, 384)


@pytest.mark.parametrize("chunk", [1, 7, 40, 1000])
def test_top_k_folds_chunks_exactly_as_mteb_heap(chunk):
    """Integer scores make many ties, across the cut and across chunks."""
    rng = np.random.default_rng(0)
    queries = torch.tensor(rng.integers(0, 3, (9, 4)), dtype=torch.float32)
    docs = torch.tensor(rng.integers(0, 3, (120, 4)), dtype=torch.float32)
    ids = [f"d{i:03d}" for i in rng.permutation(120)]
    corpus = Dataset.from_dict({"id": ids, "text": [""] * len(ids)})
    calls = iter(range(0, len(ids), chunk))

    def encode(_loader, **_kwargs):
        start = next(calls)
        return docs[start : start + chunk]

    heaps = chunked_full_corpus_search(
        task_corpus=corpus, corpus_chunk_size=chunk, query_idx_to_id=dict(enumerate(f"q{i}" for i in range(9))),
        query_embeddings=queries, task_metadata=mteb.get_task("SciFact").metadata, hf_subset="default", hf_split="test", top_k=10,
        encode_kwargs={"show_progress_bar": False}, encode_fn=encode, similarity_fn=lambda q, d: q @ d.T,
        search_k_offset=1,
    )  # fmt: skip
    top = TopK.empty(9, 10)
    for start in range(0, len(ids), chunk):
        top.add(queries @ docs[start : start + chunk].T, ids[start : start + chunk])
    ours = top.results([f"q{i}" for i in range(9)])
    assert ours == {q: {d: s for s, d in heap} for q, heap in heaps.items()}


def test_one_pass_gives_each_poolings_own_mteb_results(text_encoder, tiny_beir):
    """Several chunks (a tiny byte budget), six poolings over two tokenisations: every cell's mteb
    scores equal those of its pooling searched alone by mteb's wrapper with the same chunks."""
    task = _folder(str(tiny_beir), "test").build()
    task.load_data()
    vs = [make_variant(p, max_length=128) for p in ("cls", "mean", "max", "mean_every_k", "lmk", "multi_cls")]
    dim = text_encoder.facts.config.hidden_size
    budget = 6 * dim * 4 * 3  # three documents a chunk
    group = GroupSearch(text_encoder, vs, chunk_bytes=budget)
    passes = text_encoder.stats.forward_passes
    together = {v: evaluate_cell(task, group.view(v)) for v in vs}
    one_pass = text_encoder.stats.forward_passes - passes
    passes = text_encoder.stats.forward_passes
    for v in vs:
        alone = LmkEncoder(text_encoder, v, model_meta(text_encoder, v))
        result = evaluate_cell(task, SearchEncoderWrapper(alone, corpus_chunk_size=3))
        assert together[v].task_result.scores == result.task_result.scores, v.key()
        assert together[v].scores == result.scores and result.scores[0].per_query  # per-query scores too
    alone_passes = text_encoder.stats.forward_passes - passes
    assert one_pass * 2 == alone_passes  # three tokenisations (lmk, multi_cls, the rest) for six poolings
