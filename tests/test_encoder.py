"""The real MiniLM through the encoder and the mteb adapter."""

import mteb
import numpy as np
import pytest
import torch

import lmk_eval
from lmk_eval.config.variants import make_variant
from lmk_eval.model.batching import padded_width, token_budget_batches
from lmk_eval.model.encoding import TextEncoder
from lmk_eval.model.tokenisation import Window
from lmk_eval.retrieval.mteb_adapter import LmkEncoder, model_meta

TEXTS = [
    "A cat sat on the mat.",
    "Landmark tokens are inserted after every chunk of a long document, and their states are averaged.",
    "What is the capital of France?",
    "Mean pooling averages all token states.",
    "CLS pooling keeps only the first state.",
    "Passkeys hidden deep in long documents are hard to find.",
    "The grass is green. The sky is blue. The sun is yellow.",
    "Sentence embeddings map text to vectors.",
    "Short",
    "Ten short texts are enough to test an encoder.",
]
SHARED_POOLINGS = [
    "cls",
    "mean",
    "max",
    "lasttoken",
    "weightedmean",
    "mean_sqrt_len_tokens",
    "mean_every_k",
    "layer_mean",
]


def variants(*names, **options):
    return [make_variant(n, max_length=options.pop("max_length", 128), **options) for n in names]


def test_mean_reproduces_sentence_transformers(text_encoder):
    from sentence_transformers import SentenceTransformer

    from lmk_eval.model.loading import packaged_model_path

    reference = SentenceTransformer(str(packaged_model_path()), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    ours = LmkEncoder(text_encoder, make_variant("mean", max_length=256)).encode(TEXTS)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() > 0.9999


def test_cls_mean_and_lmk_differ_and_are_normalised(text_encoder):
    out = text_encoder.encode(TEXTS, variants("cls", "mean", "lmk"))
    cls_, mean_, lmk_ = out.values()
    for a, b in [(cls_, mean_), (cls_, lmk_), (mean_, lmk_)]:
        assert np.abs(a - b).max() > 1e-3
    for arr in out.values():
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)


def test_shared_forward_pass_is_bit_identical_to_each_pooling_alone(text_encoder):
    before = text_encoder.stats.forward_passes
    together = text_encoder.encode(TEXTS, variants(*SHARED_POOLINGS))
    shared_passes = text_encoder.stats.forward_passes - before
    before = text_encoder.stats.forward_passes
    text_encoder.encode(TEXTS, variants("mean"))
    one_pooling_passes = text_encoder.stats.forward_passes - before
    for v in variants(*SHARED_POOLINGS):
        alone = text_encoder.encode(TEXTS, [v])[v]
        assert np.array_equal(alone, together[v]), v.label()
    assert shared_passes == one_pooling_passes  # eight poolings, the passes of one


def test_order_is_restored_whatever_the_length_sorting(text_encoder):
    v = variants("lmk")[0]
    forward = text_encoder.encode(TEXTS, [v])[v]
    backward = text_encoder.encode(TEXTS[::-1], [v])[v]
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_token_budget_batches_sort_by_length_and_respect_the_budget():
    windows = [Window(i, [0] * n, [False] * n) for i, n in enumerate([5, 50, 7, 49, 3, 48])]
    batches = list(token_budget_batches(windows, budget=120))
    for width, b in batches:
        assert width * len(b) <= 120
        assert {padded_width(len(w.ids)) for w in b} == {width}  # one padded width a batch
    assert [w.owner for _, b in batches for w in b] == [1, 3, 5, 2, 0, 4]
    assert [len(b) for _, b in batches] == [2, 1, 3]  # 50, 49 (width 56) | 48 | 7, 5, 3 (width 8)


def test_a_windows_width_depends_on_its_own_length_only():
    assert [padded_width(n) for n in (1, 8, 9, 64, 100, 337, 512, 5000)] == [
        8,
        8,
        16,
        64,
        104,
        352,
        512,
        5120,
    ]
    assert padded_width(500, cap=500) == 500 and padded_width(600, cap=500) == 608


def test_variants_never_collide_in_mteb_cache(text_encoder):
    kwargs = [
        model_meta(text_encoder, v).experiment_kwargs
        for v in variants("cls", "mean", "lmk")
        + variants("lmk", interval=64)
        + variants("lmk", max_length=256)
        + variants("lmk", strategy="window")
    ]
    assert len({str(sorted(k.items())) for k in kwargs}) == len(kwargs)
    meta = model_meta(text_encoder, variants("lmk")[0])
    assert "/" in meta.name and meta.embed_dim == 384 and meta.similarity_fn_name is not None


def test_encoder_satisfies_mteb_protocol_and_runs_end_to_end(tiny_beir):
    from lmk_eval.retrieval.task_registry import resolve

    task = resolve(str(tiny_beir))[0].build()
    task.load_data()
    scores = {}
    for name in ("cls", "mean", "lmk"):
        enc = lmk_eval.encoder(None, name, max_length=256)
        assert isinstance(enc, mteb.EncoderProtocol)
        result = mteb.evaluate(enc, task, cache=None, show_progress_bar=False, co2_tracker=False)
        scores[name] = result.task_results[0].get_score()
    assert all(0.0 < s <= 1.0 for s in scores.values())


def test_mteb_loaders_texts_are_read_whole_in_the_order_their_batches_give():
    from datasets import Dataset
    from torch.utils.data import DataLoader

    from lmk_eval.retrieval.mteb_adapter import _texts

    data = Dataset.from_dict({"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS})
    assert _texts(DataLoader(data, batch_size=3)) == TEXTS

    def shuffled():
        return DataLoader(
            data, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(1)
        )

    in_batches = [t for batch in shuffled() for t in batch["text"]]
    assert sorted(in_batches) == sorted(TEXTS) and in_batches != TEXTS
    assert _texts(shuffled()) == in_batches  # a loader that reorders is read batch by batch


def test_encoder_accepts_hub_ids_and_local_dirs_without_loading(tmp_path):
    from lmk_eval.model.loading import packaged_model_path, resolve_model

    local = resolve_model(str(packaged_model_path()))
    assert local.local and local.name.startswith("local/")
    hub = resolve_model("BAAI/bge-small-en-v1.5")
    assert not hub.local and hub.name == "BAAI/bge-small-en-v1.5"


def test_hub_model_offline_gives_one_clear_line():
    enc = TextEncoder("nonexistent-org/nonexistent-model")
    with pytest.raises(
        lmk_eval.LmkEvalError,
        match="HF_HUB_OFFLINE is set and hub model .* not in the Hugging Face cache",
    ):
        enc.load()


def test_bfloat16_weights_pool_in_float32_and_stay_close(text_encoder):
    from lmk_eval.config.options import EncodeOptions

    bf16 = TextEncoder(None, options=EncodeOptions(dtype="bfloat16"))
    assert bf16.dtype == "bfloat16"
    for name in ("mean", "lmk", "cls"):
        v = make_variant(name, max_length=128)
        low = bf16.encode(TEXTS, [v])[v]
        full = text_encoder.encode(TEXTS, [v])[v]
        assert low.dtype == np.float32 and not np.array_equal(low, full)  # it really ran in bf16
        assert (low * full).sum(axis=1).min() > 0.99, name
    assert next(bf16.model.parameters()).dtype == torch.bfloat16


def test_token_budget_is_sized_from_memory_per_token(text_encoder):
    from lmk_eval.common import hardware

    config = text_encoder.facts.config  # MiniLM: hidden 384, intermediate 1536, 12 heads
    per = hardware.bytes_per_token(config, "float32", 512)
    assert per == 4 * (8 * 384 + 2 * 1536) + 4 * 12 * 512  # 49,152 bytes
    assert (
        hardware.bytes_per_token(config, "bfloat16", 512) == 2 * (8 * 384 + 2 * 1536) + 4 * 12 * 512
    )
    assert hardware.token_budget_for(70 * 2**30, per) == 764_586  # half of 70 GiB
    assert hardware.token_budget_for(10 * 2**40, per) == 1 << 20  # capped
    assert hardware.token_budget_for(2**20, per) == 8192  # never below the CPU budget
    assert text_encoder.token_budget == 8192 and text_encoder.device == "cpu"
