"""Late chunking: chunk means by hand, chunk ends in the token sequence, best-chunk scoring, and
the search path against mteb's own where every document is one chunk."""

import numpy as np
import pytest
import torch
from mteb.models.search_wrappers import SearchEncoderWrapper

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import make_variant
from lmk_eval.pooling.functions import chunk_means
from lmk_eval.retrieval.mteb_adapter import LmkEncoder, model_meta
from lmk_eval.retrieval.search import GroupSearch
from lmk_eval.retrieval.task_registry import _folder
from lmk_eval.run.work import evaluate_cell

TEXT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"


def test_chunk_means_on_hand_built_states():
    hidden = torch.arange(14, dtype=torch.float32).view(1, 7, 2)  # position p holds (2p, 2p + 1)
    text = torch.tensor([[0, 1, 1, 1, 1, 1, 0]])  # [CLS] and [SEP] belong to no chunk
    ends = torch.tensor([[0, 0, 1, 0, 0, 1, 0]])  # chunks: positions 1-2 and 3-5
    means, counts = chunk_means(hidden, text, ends)
    assert counts.tolist() == [[2.0, 3.0]]
    assert means.tolist() == [[[3.0, 4.0], [8.0, 9.0]]]
    none, empty = chunk_means(hidden, text, torch.zeros_like(ends))
    assert none.shape == (1, 0, 2) and empty.shape == (1, 0)


def test_chunk_ends_mark_the_plain_token_sequence(text_encoder):
    tok = text_encoder.tokenisation
    late = make_variant("late_chunking", interval=4, max_length=12)
    (plain,) = tok.windows([TEXT], make_variant("mean", max_length=12))
    (w,) = tok.windows([TEXT], late)
    assert w.ids == plain.ids  # nothing inserted: the model reads exactly mean's input
    # every 4 text tokens, the cut one closed
    assert [i for i, m in enumerate(w.markers) if m] == [
        4,
        8,
        10,
    ]
    assert w.prompt == 1  # the [CLS] in front belongs to no chunk
    windows = tok.windows(
        [TEXT], make_variant("late_chunking", interval=4, max_length=8, strategy="window")
    )
    assert all(x.markers[-2] for x in windows)  # windows are cut at chunk ends: none straddles two
    assert sum(len(x.ids) - 2 for x in windows) == len(tok.content_ids([TEXT])[0])


def test_late_chunking_vectors_are_the_chunk_means_of_one_forward_pass(text_encoder):
    v = make_variant("late_chunking", interval=4, max_length=64, normalize=False)
    got = text_encoder.encode_all([TEXT], [v])
    (w,) = text_encoder.tokenisation.windows([TEXT], v)
    with torch.no_grad():
        hidden = text_encoder.model(input_ids=torch.tensor([w.ids])).last_hidden_state[0]
    ends = [i for i, m in enumerate(w.markers) if m]
    starts = [1] + [e + 1 for e in ends[:-1]]
    expected = torch.stack(
        [hidden[a : b + 1].mean(dim=0) for a, b in zip(starts, ends, strict=True)]
    )
    np.testing.assert_allclose(got.chunks[v][0], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        got.vectors[v][0], hidden[1 : ends[-1] + 1].mean(dim=0).numpy(), atol=1e-5
    )


def test_best_chunk_scores_take_each_documents_maximum(text_encoder):
    v = make_variant("late_chunking", max_length=64)
    group = GroupSearch(text_encoder, [v])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    chunks = [np.array([[0.6, 0.8], [1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)]
    scores = group.best_chunk_scores(v, queries, chunks)
    np.testing.assert_allclose(scores.numpy(), [[1.0, 0.0], [0.8, 1.0]], atol=1e-6)


def test_one_chunk_per_document_searches_exactly_as_mteb_ranks_its_vectors(text_encoder, tiny_beir):
    """With an interval longer than any document every document is one chunk, so the best-chunk
    search must give exactly mteb's own ranking of the single vectors (as leader and as sibling)."""
    task = _folder(str(tiny_beir), "test").build()
    task.load_data()
    late = make_variant("late_chunking", interval=10_000, max_length=128)
    alone = LmkEncoder(text_encoder, late, model_meta(text_encoder, late))
    reference = evaluate_cell(task, SearchEncoderWrapper(alone))
    for variants in ([late], [make_variant("mean", max_length=128), late]):
        # several corpus chunks
        group = GroupSearch(text_encoder, variants, chunk_bytes=2 * 384 * 4 * 5)
        result = evaluate_cell(task, group.view(late))
        assert (
            result.task_result.scores == reference.task_result.scores
            and result.scores == reference.scores
        )


def test_several_chunks_change_the_ranking_and_reranking_is_refused(text_encoder, tiny_beir):
    task = _folder(str(tiny_beir), "test").build()
    task.load_data()
    one, many = (make_variant("late_chunking", interval=k, max_length=128) for k in (10_000, 8))
    scores = {
        v: evaluate_cell(task, GroupSearch(text_encoder, [v]).view(v)).task_result.scores
        for v in (one, many)
    }
    assert scores[one] != scores[many]
    group = GroupSearch(text_encoder, [many])
    with pytest.raises(LmkEvalError, match="reranking"):
        group.search(
            many,
            None,
            None,
            task_metadata=task.metadata,
            hf_split="test",
            hf_subset="default",
            top_k=10,
            encode_kwargs={},
            top_ranked={"q": ["d"]},
        )
