"""Other model families (tiny random ModernBERT, RoBERTa, Qwen2 decoder) and prompts, against
sentence-transformers on the same directories."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sentence_transformers import SentenceTransformer

import lmk_eval
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import make_variant
from lmk_eval.model.loading import inspect_model, packaged_model_path, resolve_model
from lmk_eval.run.runner import run_sweep
from lmk_eval.run.sweeps import sweep_from_dict
from tests.tiny_models import NATIVE, PROMPTS, as_sentence_transformer

TEXTS = [
    "The cat sat on the mat and looked at the birds outside.",
    "Rain falls mainly in Spain.",
    "A whale is not a fish, said the narrator, " * 12,
    "short",
]


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def ours(path, pooling, prompt_type=None, **options):
    enc = lmk_eval.encoder(str(path), pooling, max_length=options.pop("max_length", 256), **options)
    return enc.encode(TEXTS, prompt_type=prompt_type)


@pytest.mark.parametrize("family", list(NATIVE))
def test_native_equals_sentence_transformers_with_prompts(tiny, family):
    _, st_dirs = tiny
    st = SentenceTransformer(str(st_dirs[family]), device="cpu")
    for prompt_name in ("query", "document"):
        reference = st.encode(TEXTS, prompt_name=prompt_name)
        got = ours(st_dirs[family], "native", prompt_type=prompt_name)
        assert cosine(got, reference).min() > 0.9999, (family, prompt_name)
    without = ours(st_dirs[family], "native")  # no prompt_type: no prompt, as ST's plain encode
    assert cosine(without, st.encode(TEXTS)).min() > 0.9999
    with_prompt = ours(st_dirs[family], "native", prompt_type="query")
    assert np.abs(without - with_prompt).max() > 1e-4  # the prompt reached the model


@pytest.mark.parametrize("family", list(NATIVE))
@pytest.mark.parametrize("pooling", ["mean", "lasttoken"])
def test_plain_poolings_equal_sentence_transformers(tiny, tmp_path, family, pooling):
    dirs, _ = tiny
    target = as_sentence_transformer(dirs[family], tmp_path / "st", pooling, prompts=None)
    reference = SentenceTransformer(str(target), device="cpu").encode(TEXTS)
    assert cosine(ours(dirs[family], pooling), reference).min() > 0.9999


def test_include_prompt_false_matches_sentence_transformers(tiny, tmp_path):
    dirs, _ = tiny
    for family, mode in [("modernbert", "mean"), ("qwen2", "mean"), ("roberta", "weightedmean")]:
        target = as_sentence_transformer(
            dirs[family], tmp_path / family, mode, include_prompt=False
        )
        st = SentenceTransformer(str(target), device="cpu")
        got = ours(target, "native", prompt_type="query")
        assert cosine(got, st.encode(TEXTS, prompt_name="query")).min() > 0.9999, family
        assert (
            json.loads((target / "1_Pooling" / "config.json").read_text())["include_prompt"]
            is False
        )


def test_prompts_of_a_local_minilm_equal_sentence_transformers(tmp_path):
    """The bar's case: a real model whose config says query: / passage:."""
    target = shutil.copytree(packaged_model_path(), tmp_path / "minilm-prompts")
    cfg_path = target / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prompts": PROMPTS}))
    st = SentenceTransformer(str(target), device="cpu")
    for pooling in ("native", "mean"):
        for name in ("query", "document"):
            got = ours(target, pooling, prompt_type=name)
            assert cosine(got, st.encode(TEXTS, prompt_name=name)).min() > 0.9999, (pooling, name)
    flags = ours(target, "mean", prompt_type="query", query_prompt="")  # '' switches it off
    assert cosine(flags, st.encode(TEXTS)).min() > 0.9999


def test_mteb_picks_the_prompt_by_its_own_rules(tiny):
    import mteb

    _, st_dirs = tiny
    enc = lmk_eval.encoder(
        str(st_dirs["qwen2"]), "lasttoken", max_length=64, query_prompt="Instruct: find it\nQuery: "
    )
    meta = mteb.get_task("SciFact").metadata
    assert enc.prompt(meta, "query") == "Instruct: find it\nQuery: "
    assert enc.prompt(meta, "document") == "passage: "
    assert enc.mteb_model_meta.use_instructions


def test_landmarks_per_family(tiny):
    dirs, _ = tiny
    text = ["one two three four five six seven eight nine ten eleven twelve thirteen"]
    for family in ("modernbert", "roberta"):
        tok = inspect_model(resolve_model(str(dirs[family]))).tokenisation
        (w,) = tok.windows(text, make_variant("lmk", interval=4, max_length=64))
        assert not tok.causal and w.ids[0] == tok.tokenizer.cls_token_id
        # [SEP] for BERT-likes, </s> for RoBERTa
        assert tok.landmark_id == tok.tokenizer.sep_token_id
        marked = [i for i, m in enumerate(w.markers) if m]
        assert marked[:2] == [5, 10] and w.markers[-1] and w.ids[-1] == tok.landmark_id
    tok = inspect_model(resolve_model(str(dirs["qwen2"]))).tokenisation
    n = len(tok.content_ids(text)[0])
    (after,) = tok.windows(text, make_variant("lmk", interval=4, max_length=64))
    assert tok.causal and tok.landmark_id == tok.tokenizer.eos_token_id
    assert after.ids[:4] == tok.content_ids(text)[0][:4]  # no [CLS], no BOS: the text starts
    assert [i for i, m in enumerate(after.markers) if m][:2] == [4, 9] and after.markers[-1]
    assert sum(after.markers) == -(-n // 4)
    (before,) = tok.windows(
        text, make_variant("lmk", interval=4, max_length=64, placement="before")
    )
    assert before.markers[0] and before.ids[0] == tok.landmark_id and not before.markers[-1]
    pad = tok.tokenizer.pad_token_id
    assert pad == tok.landmark_id  # pad is EOS here: landmarks are marked by position, never by id


def test_decoder_refuses_cls_poolings_before_any_work(tiny, tmp_path):
    dirs, _ = tiny
    for pooling in ("cls", "multi_cls"):
        with pytest.raises(LmkEvalError, match="causal .decoder. model"):
            lmk_eval.encoder(str(dirs["qwen2"]), pooling, max_length=64)
    sweep = sweep_from_dict(
        {
            "name": "d",
            "models": [str(dirs["qwen2"])],
            "poolings": ["mean", "cls"],
            "tasks": ["needle-depth-quick:depth_000"],
            "max_length": [64],
        },
        "d",
    )
    with pytest.raises(LmkEvalError, match="cls pooling on a causal"):
        run_sweep(sweep, tmp_path / "out", progress=False, log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_landmark_token_override(tiny):
    dirs, _ = tiny
    tok = inspect_model(resolve_model(str(dirs["roberta"]))).tokenisation
    enc = lmk_eval.encoder(str(dirs["roberta"]), "lmk", max_length=64, landmark_token="<mask>")
    assert enc.text_encoder.tokenisation.landmark_id == tok.tokenizer.mask_token_id
    with pytest.raises(LmkEvalError, match="is not a single token"):
        lmk_eval.encoder(
            str(dirs["roberta"]), "lmk", max_length=64, landmark_token="not-a-token-xyz"
        )


@pytest.mark.parametrize("family", list(NATIVE))
def test_each_family_runs_a_sweep_end_to_end(tiny, tiny_beir, tmp_path, family):
    _, st_dirs = tiny
    poolings = ["native", "mean", "lmk"] + (["lasttoken"] if family == "qwen2" else ["cls"])
    sweep = sweep_from_dict(
        {
            "name": family,
            "models": [str(st_dirs[family])],
            "poolings": poolings,
            "grid": [
                {"tasks": [str(tiny_beir)], "max_length": [64, 128]},
                {"tasks": ["passkey-quick:test_1024"], "max_length": [256], "strategy": "window"},
            ],
        },
        family,
    )
    out = tmp_path / "run"
    summary = run_sweep(sweep, out, progress=False, log=lambda m: None)
    assert summary.computed == len(poolings) * 3
    frame = pd.read_csv(out / "scores.csv")
    assert set(frame["pooling"]) == {p if p != "lmk" else "lmk[fixed/32]" for p in poolings}
    record = json.loads(next((out / "cells").glob("*__native__*/cell.json")).read_text())
    assert record["identity"]["encoding"]["prompts"] == PROMPTS
    assert record["identity"]["encoding"]["native"]["pooling"] == NATIVE[family]
    from lmk_eval.report import write_report

    text = write_report(out, tmp_path / "reports").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("- encoding of") and "prompts" in x]
    assert "query 'query: '" in line and "document 'passage: '" in line  # the report shows them
    assert f"native: {NATIVE[family]} pooling, include_prompt True" in text


@pytest.mark.e2e
def test_a_rope_encoder_truncates_at_4096_with_mean_and_lmk(tiny, tmp_path):
    dirs, _ = tiny
    tok = inspect_model(resolve_model(str(dirs["modernbert"]))).tokenisation
    assert tok.max_positions == 4096
    long = " ".join(["Call me Ishmael. Some years ago, never mind how long precisely."] * 400)
    (w,) = tok.windows([long], make_variant("lmk", max_length=4096))
    assert len(w.ids) == 4096 and w.markers[-1] and sum(w.markers) == 4095 // 33 + 1
    sweep = sweep_from_dict(
        {
            "name": "rope",
            "models": [str(dirs["modernbert"])],
            "poolings": ["mean", "lmk"],
            "tasks": ["passkey-quick:test_4096"],
            "max_length": [512, 4096],
        },
        "rope",
    )
    out = tmp_path / "run"
    run_sweep(sweep, out, progress=False, log=lambda m: None)
    frame = pd.read_csv(out / "scores.csv")
    assert sorted(set(frame["max_length"])) == [512, 4096] and len(set(frame["pooling"])) == 2
    with pytest.raises(LmkEvalError, match="max_length 8192 exceeds the model's 4096 positions"):
        lmk_eval.encoder(str(dirs["modernbert"]), "mean", max_length=8192)


def test_native_without_a_sentence_transformers_config_is_refused(tiny):
    dirs, _ = tiny
    with pytest.raises(LmkEvalError, match="no sentence-transformers configuration"):
        lmk_eval.encoder(str(dirs["qwen2"]), "native", max_length=64)


def test_native_refuses_what_it_cannot_reproduce(tiny, tmp_path):
    _, st_dirs = tiny
    target = shutil.copytree(st_dirs["roberta"], tmp_path / "dense")
    modules = json.loads((target / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (target / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(LmkEvalError, match="pipeline has Dense"):
        lmk_eval.encoder(str(target), "native", max_length=64)


def test_trust_remote_code_is_needed_and_recorded(tmp_path, tiny):
    """A model whose config names its own code: refused in one line without the flag."""
    dirs, _ = tiny
    target = shutil.copytree(dirs["roberta"], tmp_path / "remote")
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    config["model_type"] = "custom-remote"
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmkEvalError, match="pass --trust-remote-code if you trust it"):
        lmk_eval.encoder(str(target), "mean", max_length=64)


@pytest.mark.e2e
def test_a_real_model_reproduces_its_own_sentence_transformers_retrieval_score(tmp_path):
    """Offline, the only real pretrained weights are all-MiniLM-L6-v2's, so they are published
    again differently (e5-style prompts, CLS pooling, no Normalize, dot-product similarity) and
    scored two ways on SciFact-quick: mteb's own sentence-transformers wrapper, and `native`."""
    import mteb
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from lmk_eval.retrieval.task_registry import resolve

    transformer = Transformer(str(packaged_model_path()), max_seq_length=256)
    model = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")],
        prompts=PROMPTS,
        similarity_fn_name="dot",
        device="cpu",
    )
    model.save(str(tmp_path / "minilm-e5-style"))
    task = resolve("scifact-quick")[0].build()
    task.load_data()

    def score(encoder) -> float:
        result = mteb.evaluate(
            encoder, task, cache=None, show_progress_bar=False, co2_tracker=False
        )
        return result.task_results[0].get_score()

    reference = score(
        mteb.SentenceTransformerEncoderWrapper(
            SentenceTransformer(str(tmp_path / "minilm-e5-style"), device="cpu")
        )
    )
    harness = lmk_eval.encoder(str(tmp_path / "minilm-e5-style"), "native", max_length=256)
    assert harness.mteb_model_meta.similarity_fn_name == "dot" and harness.model_prompts == PROMPTS
    ours_score = score(harness)
    print(
        f"SciFact-quick nDCG@10: sentence-transformers {reference:.5f}, lmk-eval native {ours_score:.5f}"
    )
    assert round(ours_score, 3) == round(reference, 3)
