"""One pass over the corpus for every pooling: the same results as each pooling through mteb's own
search, whatever the chunking, with ties broken as mteb's heap breaks them."""

from __future__ import annotations

import numpy as np
import torch
from mteb.models.search_wrappers import SearchEncoderWrapper

from lmk_eval.config.variants import make_variant
from lmk_eval.retrieval.mteb_adapter import LmkEncoder, model_meta
from lmk_eval.retrieval.search import GroupSearch, TopK, chunk_documents, vectors_per_document
from lmk_eval.retrieval.task_registry import _folder
from lmk_eval.run.work import evaluate_cell
from tests.conftest import write_beir


def test_chunks_are_sized_by_bytes():
    assert chunk_documents(6, 768, 64 * 2**20) == 64 * 2**20 // (6 * 768 * 4)
    assert chunk_documents(1, 384, 100) == 1  # never an empty chunk
    assert chunk_documents(6, 384) < chunk_documents(1, 384)


def test_top_k_keeps_the_larger_ids_at_a_tied_cut():
    top = TopK.empty(1, 2)
    top.add(torch.tensor([[1.0, 0.5, 0.5, 0.5]]), ["a", "c", "b", "d"])
    assert top.results(["q"]) == {"q": {"a": 1.0, "d": 0.5}}


def test_every_pooling_ranks_as_mteb_search_does_on_a_corpus_full_of_ties(text_encoder, tmp_path):
    """Six texts, each seven times under shuffled ids, in chunks of five: many documents share a
    score across the top-k cut and across chunks. Every pooling of the group, the leader too, gets
    exactly the ranking mteb's own SearchEncoderWrapper gives that pooling searched alone."""
    texts = [
        "Aspirin lowers the risk of heart attack.",
        "Vitamin D does not prevent fractures.",
        "Sleep loss impairs memory.",
        "Coffee is linked to longer life.",
        "Exercise improves insulin sensitivity.",
        "Salt raises blood pressure.",
    ]
    ids = [f"d{i:02d}" for i in np.random.default_rng(0).permutation(len(texts) * 7)]
    corpus = [{"id": d, "text": texts[i % len(texts)]} for i, d in enumerate(ids)]
    queries = [{"id": f"q{i}", "text": texts[i]} for i in range(4)]
    task = _folder(
        str(
            write_beir(tmp_path / "ties", corpus, queries, [(f"q{i}", ids[i], 1) for i in range(4)])
        ),
        "test",
    ).build()
    task.load_data()
    data = task.dataset["default"]["test"]
    vs = [make_variant(p, max_length=64) for p in ("cls", "mean", "max", "lmk")]
    per_document = sum(vectors_per_document(v) for v in vs)
    dim = text_encoder.facts.config.hidden_size
    chunk = 5
    group = GroupSearch(text_encoder, vs, chunk_bytes=chunk * per_document * dim * 4)
    common = {
        "task_metadata": task.metadata,
        "hf_split": "test",
        "hf_subset": "default",
        "encode_kwargs": {"show_progress_bar": False},
    }
    tied_cuts = 0
    for v in vs:
        ours = group.view(v)
        ours.index(data["corpus"], **common)
        found = ours.search(data["queries"], top_k=4, **common)
        alone = SearchEncoderWrapper(
            LmkEncoder(text_encoder, v, model_meta(text_encoder, v)), corpus_chunk_size=chunk
        )
        alone.index(data["corpus"], **common)
        assert found == alone.search(data["queries"], top_k=4, **common), v.key()
        # four kept at one score that seven copies share: the cut fell inside a tie
        tied_cuts += sum(len(set(found[q].values())) == 1 for q in found)
    # (a copy in another batch can differ in the last bit)
    assert tied_cuts >= len(vs) * len(queries) // 2


def test_one_pass_gives_each_poolings_own_mteb_results(text_encoder, tiny_beir):
    """Several chunks (a tiny byte budget), six poolings over two tokenisations: every cell's mteb
    scores equal those of its pooling searched alone by mteb's wrapper with the same chunks."""
    task = _folder(str(tiny_beir), "test").build()
    task.load_data()
    vs = [
        make_variant(p, max_length=128)
        for p in ("cls", "mean", "max", "mean_every_k", "lmk", "multi_cls")
    ]
    dim = text_encoder.facts.config.hidden_size
    budget = 6 * dim * 4 * 3  # three documents a chunk
    group = GroupSearch(text_encoder, vs, chunk_bytes=budget)
    tokens = text_encoder.stats.real_tokens
    together = {v: evaluate_cell(task, group.view(v)) for v in vs}
    one_pass = text_encoder.stats.real_tokens - tokens
    alone_tokens = {}
    for v in vs:
        tokens = text_encoder.stats.real_tokens
        alone = LmkEncoder(text_encoder, v, model_meta(text_encoder, v))
        result = evaluate_cell(task, SearchEncoderWrapper(alone, corpus_chunk_size=3))
        alone_tokens[v.pooling] = text_encoder.stats.real_tokens - tokens
        assert together[v].task_result.scores == result.task_result.scores, v.key()
        # per-query scores too
        assert together[v].scores == result.scores and result.scores[0].per_query
    # three tokenisations (lmk, multi_cls, the rest) for six poolings, each run once
    plain = {alone_tokens[p] for p in ("cls", "mean", "max", "mean_every_k")}
    assert len(plain) == 1
    assert one_pass == plain.pop() + alone_tokens["lmk"] + alone_tokens["multi_cls"]


def test_the_next_chunk_is_prepared_while_this_one_runs(text_encoder, tiny_beir):
    """Where the encoder prepares beside the forward (forced here), each corpus chunk was
    tokenised before mteb brought it (the first during the queries' call), from mteb's texts
    guessed off the corpus rows (SciFact's titles and abstracts); where it prepares in turn,
    nothing is guessed. Every score is what each pooling searched alone by mteb's wrapper gives."""
    from lmk_eval.model.encoding import TextEncoder

    task = _folder(str(tiny_beir), "test").build()
    task.load_data()
    vs = [make_variant(p, max_length=128) for p in ("mean", "lmk")]
    budget = 2 * text_encoder.facts.config.hidden_size * 4 * 6  # six documents a chunk
    chunks = -(-len(task.dataset["default"]["test"]["corpus"]) // 6)
    expected = {}
    for v in vs:
        alone = LmkEncoder(text_encoder, v, model_meta(text_encoder, v))
        expected[v] = evaluate_cell(task, SearchEncoderWrapper(alone, corpus_chunk_size=6)).scores
    for overlap, ahead in ((True, chunks), (False, 0)):
        encoder = TextEncoder(None, overlap=overlap)
        group = GroupSearch(encoder, vs, chunk_bytes=budget)
        for v in vs:
            assert evaluate_cell(task, group.view(v)).scores == expected[v], v.key()
        assert encoder.preparer.ahead_used == ahead


def test_a_wrong_guess_of_the_next_call_is_dropped(text_encoder):
    """An expected call's prepared slice serves only exactly the texts it was made for."""
    from lmk_eval.model.encoding import TextEncoder

    texts = [f"claim {i}: " + "cells divide " * (i % 40) for i in range(60)]
    vs = [make_variant(p, max_length=64) for p in ("mean", "lmk")]
    ahead = TextEncoder(None, overlap=True, slice_tokens=300)
    ahead.expect(texts[30:], vs)
    first = ahead.encode(texts[:30], vs)
    assert ahead.preparer.ahead_used == 0  # not what was expected
    second = ahead.encode(texts[30:], vs)
    assert ahead.preparer.ahead_used == 1
    ahead.expect(texts[31:], vs)
    ahead.encode(texts[:30], vs)
    third = ahead.encode(texts[30:], vs)
    assert ahead.preparer.ahead_used == 1  # the guess was one text off: prepared afresh
    for v in vs:
        assert np.array_equal(first[v], text_encoder.encode(texts[:30], [v])[v])
        assert np.array_equal(second[v], third[v])
        assert np.array_equal(second[v], text_encoder.encode(texts[30:], [v])[v])
