"""Context extension: position remapping by hand, exactness where nothing is extended, reports."""

import numpy as np
import pandas as pd
import pytest
import torch

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import make_variant
from lmk_eval.reading.positions import interpolated, remap, remapped
from lmk_eval.reading.strategies import STRATEGIES
from lmk_eval.run.runner import run_sweep
from lmk_eval.run.sweeps import sweep_from_dict

SHORT = ["A cat sat on the mat.", "Landmark pooling averages separator states. " * 8, "short"]
EXTENDING = ["window", "grouped", "recurrent", "interpolate"]
# None: the strategy's default (logn where it extends)
SCALES = [
    None,
    "none",
    "logn",
    "temperature:0.8",
]


def test_remap_formulas_on_hand_built_inputs():
    # pid // ceil(10 / 4)
    assert remap(10, 4, STRATEGIES["grouped"]) == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
        3,
    ]
    assert remap(10, 4, STRATEGIES["recurrent"]) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]  # pid % 4
    # fits: unchanged
    assert remap(3, 4, STRATEGIES["grouped"]) == remap(3, 4, STRATEGIES["recurrent"]) == [0, 1, 2]
    assert remap(8, 4, STRATEGIES["grouped"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    table = torch.tensor([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0]])
    torch.testing.assert_close(
        interpolated(table, 5), torch.tensor([[0, 10], [0.5, 15], [1, 20], [1.5, 25], [2, 30.0]])
    )


def test_position_ids_per_row_by_its_own_length(text_encoder):
    model = text_encoder.model
    mask = torch.zeros((2, 1100), dtype=torch.long)
    mask[0, :1100] = 1
    mask[1, :300] = 1
    with remapped(model, mask, STRATEGIES["grouped"], 512) as kwargs:
        ids = kwargs["position_ids"]
    assert ids[0].tolist() == [i // 3 for i in range(1100)]  # ceil(1100 / 512) = 3
    assert ids[1, :300].tolist() == list(range(300))  # a row that fits keeps its positions
    assert (kwargs["token_type_ids"] == 0).all()


@pytest.mark.parametrize(
    "pooling", ["cls", "mean", "lmk", "multi_cls", "max", "lasttoken", "layer_mean"]
)
def test_every_strategy_equals_truncate_where_the_text_fits(text_encoder, pooling):
    truncate = make_variant(pooling, max_length=512)
    reference = text_encoder.encode(SHORT, [truncate])[truncate]
    variants = [
        make_variant(pooling, max_length=4096, strategy=s, attention_scale=a)
        for s in EXTENDING
        for a in SCALES
    ]
    assert {v.scale for v in variants} == {"none", "logn", "temperature:0.8"}
    out = text_encoder.encode(SHORT, variants)
    for v in variants:
        assert np.array_equal(out[v], reference), (pooling, v.reading())


def test_long_inputs_are_really_extended(text_encoder):
    # ~1,300 tokens
    long = [" ".join(["Call me Ishmael, said the narrator of the long book."] * 120)]
    out = {}
    for strategy in ("grouped", "recurrent", "interpolate"):
        v = make_variant("mean", max_length=1024, strategy=strategy)
        (w,) = text_encoder.tokenisation.windows(long, v)
        assert len(w.ids) == 1024  # one input reads past the model's 512 positions
        out[strategy] = text_encoder.encode(long, [v])[v]
    truncated = text_encoder.encode(long, [make_variant("mean", max_length=512)])
    assert not np.allclose(out["grouped"], out["recurrent"])
    assert not np.allclose(out["interpolate"], out["grouped"])
    assert not np.allclose(out["grouped"], next(iter(truncated.values())))


def test_a_window_above_the_model_reads_that_many_text_tokens_in_model_sized_windows(text_encoder):
    tok = text_encoder.tokenisation
    long = [" ".join(["Call me Ishmael."] * 600)]
    n = len(tok.content_ids(long)[0])
    windows = tok.windows(long, make_variant("mean", max_length=1000, strategy="window"))
    assert n > 1000 and all(len(w.ids) <= 512 for w in windows)
    assert sum(len(w.ids) - 2 for w in windows) == 1000  # [CLS] ... [SEP] around each window
    lmk = tok.windows(long, make_variant("lmk", max_length=1000, strategy="window"))
    assert sum(len(w.ids) - 1 - sum(w.markers) for w in lmk) == 1000 and all(
        len(w.ids) <= 512 for w in lmk
    )


@pytest.mark.e2e
def test_strategies_on_a_sweep_with_an_offset_model_and_the_report(tmp_path):
    """The bar's command on its 256-token split: every strategy scores exactly as window."""
    from lmk_eval.report import write_report

    sweep = sweep_from_dict(
        {
            "name": "ext",
            "poolings": ["mean", "lmk"],
            "tasks": ["passkey-quick:test_256+test_512"],
            "max_length": [1024],
            "strategy": EXTENDING,
        },
        "ext",
    )
    out = tmp_path / "run"
    run_sweep(sweep, out, progress=False, log=lambda m: None)
    frame = pd.read_csv(out / "scores.csv")
    main = frame[frame["main"]]
    at_256 = main[main["split"] == "test_256"].pivot_table(
        index="pooling", columns="reading", values="score"
    )
    assert set(main["strategy"]) == set(EXTENDING)  # strategies alone; the scale has its column
    assert dict(zip(main["strategy"], main["attention_scale"], strict=True)) == {
        "window": "none",
        "grouped": "logn",
        "recurrent": "logn",
        "interpolate": "logn",
    }
    # logn: LongEmbed's default
    readings = [
        "window",
        "grouped+logn",
        "recurrent+logn",
        "interpolate+logn",
    ]
    assert set(at_256.columns) == set(readings)
    for reading in readings:
        assert (at_256[reading] == at_256["window"]).all(), reading
    text = write_report(out, tmp_path / "reports").read_text()
    assert "best strategy per document-length band" in text
    assert "mean grouped+logn@1024 vs window@1024" in text  # the same pooling, at the same length
    assert (tmp_path / "reports" / "run" / "length.png").stat().st_size > 10_000


def test_absolute_strategies_refuse_a_rope_model_before_any_work(tmp_path):
    from tests.tiny_models import build_modernbert

    model = build_modernbert(tmp_path / "mb")
    sweep = sweep_from_dict(
        {
            "name": "r",
            "models": [str(model)],
            "poolings": ["mean"],
            "tasks": ["needle-depth-quick:depth_000"],
            "max_length": [1024],
            "strategy": ["grouped"],
        },
        "r",
    )
    with pytest.raises(LmkEvalError, match="uses rotary positions"):
        run_sweep(sweep, tmp_path / "out", progress=False, log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_roberta_positions_keep_their_offset(tmp_path):
    import lmk_eval
    from tests.tiny_models import build_roberta

    model = build_roberta(tmp_path / "rb")
    long = [" ".join(["the whale and the sea"] * 200)]
    for strategy in ("grouped", "recurrent", "interpolate"):
        enc = lmk_eval.encoder(str(model), "mean", max_length=1024, strategy=strategy)
        assert np.isfinite(enc.encode(long)).all()
    short = ["the whale"]
    a = lmk_eval.encoder(str(model), "mean", max_length=512).encode(short)
    b = lmk_eval.encoder(str(model), "mean", max_length=1024, strategy="grouped").encode(short)
    assert np.array_equal(a, b)  # positions 2.. as RoBERTa's own, not 0..


@pytest.fixture(scope="module")
def rope_model(tmp_path_factory):
    from tests.tiny_models import build_modernbert

    return build_modernbert(tmp_path_factory.mktemp("rope") / "modernbert")  # 4,096 positions


def test_rope_config_scales_the_global_rotary_base_or_sets_yarn(rope_model):
    from transformers import AutoConfig

    from lmk_eval.reading.positions import rope_config

    config = AutoConfig.from_pretrained(rope_model)
    ntk = rope_config(config, STRATEGIES["rope-ntk"], 16384, 4096)
    dim = config.hidden_size // config.num_attention_heads
    theta = config.rope_parameters["full_attention"]["rope_theta"]
    assert ntk.rope_parameters["full_attention"]["rope_theta"] == pytest.approx(
        theta * 4 ** (dim / (dim - 2))
    )
    assert ntk.rope_parameters["sliding_attention"] == config.rope_parameters["sliding_attention"]
    yarn = rope_config(config, STRATEGIES["rope-yarn"], 16384, 4096)
    assert yarn.rope_parameters["full_attention"] | {"rope_theta": 0} == {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 4096,
        "rope_theta": 0,
    }
    # the original is untouched
    assert config.rope_parameters["full_attention"]["rope_type"] == "default"


def test_rope_strategies_extend_long_inputs_and_leave_short_ones_exact(rope_model):
    import lmk_eval

    # ~6,000 tokens
    long = [" ".join(["Call me Ishmael, said the narrator of the long book."] * 500)]
    short = ["A cat sat on the mat.", "short"]
    reference = lmk_eval.encoder(str(rope_model), "mean", max_length=4096)
    got = {}
    for strategy in ("rope-ntk", "rope-yarn"):
        enc = lmk_eval.encoder(
            str(rope_model), "mean", max_length=8192, strategy=strategy, attention_scale="none"
        )
        assert np.array_equal(enc.encode(short), reference.encode(short)), strategy
        got[strategy] = enc.encode(long)
        assert len(enc.text_encoder._extended_models) == 1  # long inputs went to the scaled copy
    assert not np.allclose(got["rope-ntk"], got["rope-yarn"])
    for strategy in ("rope-ntk", "rope-yarn", "self-extend"):
        for scale in (None, "temperature:0.9"):
            enc = lmk_eval.encoder(
                str(rope_model), "mean", max_length=8192, strategy=strategy, attention_scale=scale
            )
            assert np.array_equal(enc.encode(short), reference.encode(short)), (strategy, scale)
    logn = lmk_eval.encoder(str(rope_model), "mean", max_length=8192, strategy="rope-ntk").encode(
        long
    )
    assert not np.allclose(logn, got["rope-ntk"])  # the default logn scales the long input
    with pytest.raises(LmkEvalError, match="this model has none"):
        lmk_eval.encoder(None, "mean", max_length=1024, strategy="rope-ntk")  # MiniLM: absolute


def test_best_strategy_table_names_every_strategy_that_ties():
    from lmk_eval.report import best_strategy_table

    scores = {  # (strategy, length) -> score; at 256 every strategy reads the same input
        ("window", 256): 0.9,
        ("grouped", 256): 0.9,
        ("recurrent", 256): 0.9,
        ("window", 1024): 0.6,
        ("grouped", 1024): 0.8,
        ("recurrent", 1024): 0.8,
        ("window", 4096): 0.7,
        ("grouped", 4096): 0.5,
        ("recurrent", 4096): 0.4,
    }
    frame = pd.DataFrame(
        [
            {
                "model": "m",
                "task": "passkey",
                "split": f"test_{n}",
                "pooling": "mean",
                "strategy": s,
                "max_length": 4096,
                "score": v,
            }
            for (s, n), v in scores.items()
        ]
    )
    row = best_strategy_table(frame, ["mean"], {"mean": "mean"}).splitlines()[-1]
    assert row.split("|")[3:6] == [
        " all tied (90.0) ",
        " grouped = recurrent (80.0) ",
        " window (70.0) ",
    ]


def _strategy_frame(rows):
    """Rows as report.frames.main_frame makes them (a reading ``grouped+logn`` is scaled)."""
    return pd.DataFrame(
        [
            {
                "model": "m",
                "seed": None,
                "task": "passkey",
                "context": "long",
                "max_length": n,
                "strategy": s,
                "scaled": "+" in s,
                "unscaled": s.partition("+")[0],
                "pooling": "mean",
                "label": "mean",
                "split": "test_256",
                "score": sum(q.values()) / len(q),
                "metric": "ndcg_at_1",
                "per_query": {("test_256", "passkey", "default", k): v for k, v in q.items()},
            }
            for s, n, q in rows
        ]
    )


def test_strategy_comparisons_pair_on_max_length_and_name_both():
    from lmk_eval.report import compare_strategies, strategy_pivots

    queries = [f"q{i}" for i in range(20)]
    ones, zeros = dict.fromkeys(queries, 1.0), dict.fromkeys(queries, 0.0)
    frame = _strategy_frame(
        [
            ("truncate", 256, zeros),
            ("truncate", 512, ones),
            ("window", 512, ones),
            ("window", 4096, zeros),
        ]
    )
    found = {label: c for label, c in compare_strategies(frame, ["mean"], {"mean": "mean"})}
    assert set(found) == {
        "passkey: mean window@512 vs truncate@512",
        "passkey: mean window@4096 vs truncate@512",
    }
    assert found["passkey: mean window@512 vs truncate@512"].mean_diff == 0  # not vs truncate@256
    assert found["passkey: mean window@4096 vs truncate@512"].mean_diff == -1
    (panel,) = strategy_pivots(frame)
    readings = set(panel.table.columns.get_level_values(1))
    # never averaged
    assert readings == {
        "truncate@256",
        "truncate@512",
        "window@512",
        "window@4096",
    }


def test_scale_comparisons_pair_each_scaled_reading_with_its_unscaled_strategy():
    from lmk_eval.report import compare_scales

    queries = [f"q{i}" for i in range(20)]
    half = {q: float(i % 2) for i, q in enumerate(queries)}
    ones, zeros = dict.fromkeys(queries, 1.0), dict.fromkeys(queries, 0.0)
    frame = _strategy_frame(
        [
            ("window", 4096, zeros),
            ("grouped", 4096, half),
            ("grouped+logn", 4096, ones),
            ("grouped+temperature:0.8", 4096, zeros),
            ("grouped", 1024, ones),
        ]
    )
    found = {label: c for label, c in compare_scales(frame, ["mean"], {"mean": "mean"})}
    assert set(found) == {
        "passkey: mean grouped+logn@4096 vs grouped@4096",
        "passkey: mean grouped+temperature:0.8@4096 vs grouped@4096",
    }
    logn = found["passkey: mean grouped+logn@4096 vs grouped@4096"]
    # vs grouped@4096, not @1024 or window
    assert logn.mean_diff == pytest.approx(0.5) and logn.ci[0] > 0
    assert found[
        "passkey: mean grouped+temperature:0.8@4096 vs grouped@4096"
    ].mean_diff == pytest.approx(-0.5)
