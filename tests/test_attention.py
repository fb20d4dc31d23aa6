"""Attention past the positions: the scale formulas, log-n against a reference with scaled query
weights, SelfExtend against a per-pair reference written here, and the flags."""

import math

import numpy as np
import pytest
import torch

from lmk_eval.config.variants import make_variant
from lmk_eval.reading.attention import scale_factors
from lmk_eval.reading.scales import parse_scale, self_extend_defaults

TEXT = " ".join(["Call me Ishmael, said the narrator of the long book about the whale."] * 30)


def test_scale_factors_on_hand_built_lengths():
    lengths = torch.tensor([100, 512, 513, 1024, 4096])
    logn = scale_factors(lengths, 512, "logn").tolist()
    assert logn[:2] == [1.0, 1.0]  # inputs that fit: exactly 1
    assert logn[2:] == pytest.approx([math.log(513) / math.log(512), 10 / 9, 4 / 3])
    assert scale_factors(lengths, 512, "temperature:0.8").tolist() == [1.0, 1.0, 1.25, 1.25, 1.25]
    assert scale_factors(lengths, 512, "none").tolist() == [1.0] * 5
    assert parse_scale("temperature:0.9") == ("temperature", 0.9)
    for bad in ("temperature:0", "temperature:x", "log", "temperature:-1"):
        with pytest.raises(ValueError, match="none, logn, temperature:T"):
            parse_scale(bad)


def test_self_extend_defaults_follow_longembed_table_6():
    assert [self_extend_defaults(n, 512) for n in (1024, 2048, 4096)] == [
        (3, 256),
        (5, 128),
        (9, 64),
    ]
    assert [self_extend_defaults(n, 4096) for n in (8192, 16384, 32768)] == [
        (3, 2048),
        (5, 1024),
        (9, 512),
    ]
    g, w = self_extend_defaults(65536, 4096)  # past the table: the grouped positions still fit
    assert w == 512 and (65536 - 1) // g + w - w // g < 4096 <= (65536 - 1) // (g - 1) + w - w // (
        g - 1
    )


def test_default_scale_is_logn_where_a_strategy_reads_past_the_positions_and_none_elsewhere():
    assert make_variant("mean", strategy="grouped").scale == "logn"
    assert make_variant("mean", strategy="self-extend").reading() == "self-extend+logn"
    assert make_variant("mean", strategy="grouped", attention_scale="none").reading() == "grouped"
    window = make_variant("mean", strategy="window", attention_scale="logn")
    assert window == make_variant("mean", strategy="window")  # every window fits: nothing to scale
    assert (
        "attention_scale"
        not in make_variant("mean", strategy="grouped", attention_scale="none").relevant_options()
    )
    assert (
        make_variant("mean", strategy="grouped", attention_scale="temperature:0.80").reading()
        == "grouped+temperature:0.8"
    )


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    """A random BERT with 64 positions and MiniLM's tokenizer: 256-token inputs are 4x its length
    (weights drawn wide, so that attention is far from uniform and a scale shows)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from lmk_eval.model.loading import packaged_model_path

    folder = tmp_path_factory.mktemp("bert64")
    tokenizer = BertTokenizerFast.from_pretrained(str(packaged_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.3,
    )
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _mean(hidden: torch.Tensor) -> np.ndarray:
    v = hidden.mean(dim=0)
    return (v / v.norm()).numpy()


@pytest.mark.parametrize("scale", ["logn", "temperature:0.8"])
def test_scaled_attention_equals_an_eager_reference_with_scaled_query_weights(small_bert, scale):
    """Multiplying the queries by s multiplies every attention logit by s: a copy of the model in
    eager attention whose query projections are scaled by the factor computed here by hand."""
    from transformers import BertModel

    from lmk_eval.model.encoding import TextEncoder

    encoder = TextEncoder(str(small_bert), device="cpu")
    variant = make_variant("mean", max_length=256, strategy="grouped", attention_scale=scale)
    plain = make_variant("mean", max_length=256, strategy="grouped", attention_scale="none")
    got = encoder.encode([TEXT], [variant, plain])
    (window,) = encoder.tokenisation.windows([TEXT], variant)
    n = len(window.ids)
    assert n == 256
    factor = math.log(n) / math.log(64) if scale == "logn" else 1 / 0.8
    reference = BertModel.from_pretrained(small_bert, attn_implementation="eager").eval()
    for layer in reference.encoder.layer:
        layer.attention.self.query.weight.data.mul_(factor)
        layer.attention.self.query.bias.data.mul_(factor)
    ids = torch.tensor([window.ids])
    positions = torch.tensor([[i // math.ceil(n / 64) for i in range(n)]])  # grouped, by hand
    with torch.no_grad():  # an explicit mask, as the encoder passes: without one, transformers
        # (5.25 here) reads position ids that do not count up by one as packed sequences
        hidden = reference(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=positions,
            token_type_ids=torch.zeros_like(ids),
        ).last_hidden_state
    np.testing.assert_allclose(got[variant][0], _mean(hidden[0]), atol=2e-6)
    assert not np.allclose(got[plain][0], got[variant][0], atol=1e-4)  # the scale changed something


def _reference_self_extend(group: int, window: int, inv_freq: torch.Tensor):
    """SelfExtend written per pair: each query-key pair's relative position r from LongEmbed's
    formula, the score q . R(-r) k of the unrotated vectors, in float64."""

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        if getattr(module, "sliding_window", None) is not None:
            from transformers import AttentionInterface

            return AttentionInterface._global_mapping["sdpa"](
                module, query, key, value, attention_mask, scaling=scaling, **kwargs
            )
        q, k, v = query.double(), key.double(), value.double()
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        n, half = q.shape[2], q.shape[3] // 2
        theta = inv_freq.double()
        pos = torch.arange(n, dtype=torch.float64)

        def unrotate(x):  # x was rotated by +i at position i
            a = -pos[:, None] * theta[None, :]
            x1, x2 = x[..., :half], x[..., half:]
            return torch.cat((x1 * a.cos() - x2 * a.sin(), x2 * a.cos() + x1 * a.sin()), dim=-1)

        q, k = unrotate(q), unrotate(k)
        i, j = pos[:, None], pos[None, :]
        join = window - window // group
        r = torch.where(
            i - j >= window,
            torch.floor(i / group) - torch.floor(j / group) + join,
            torch.where(
                j - i >= window, torch.floor(i / group) - torch.floor(j / group) - join, i - j
            ),
        )
        angle = r[..., None] * theta  # (n, n, half)
        q1, q2 = q[..., :half].unsqueeze(3), q[..., half:].unsqueeze(3)  # (b, h, n, 1, half)
        k1, k2 = k[..., :half].unsqueeze(2), k[..., half:].unsqueeze(2)  # (b, h, 1, n, half)
        scores = ((q1 * k1 + q2 * k2) * angle.cos() + (q1 * k2 - q2 * k1) * angle.sin()).sum(-1)
        scores = scores * (scaling if scaling is not None else q.shape[-1] ** -0.5)
        if module.is_causal:
            scores = scores.masked_fill(j > i, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    return attention


@pytest.fixture(scope="module")
def small_rope_models(tmp_path_factory):
    """A ModernBERT (global and sliding layers) and a Qwen2 with 64 positions, random weights."""
    from transformers import (
        BertTokenizerFast,
        ModernBertConfig,
        ModernBertModel,
        Qwen2Config,
        Qwen2Model,
    )

    from lmk_eval.model.loading import packaged_model_path

    tokenizer = BertTokenizerFast.from_pretrained(str(packaged_model_path()))
    # wide weights: attention far from uniform, positions matter
    size = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "initializer_range": 0.3,
    }
    torch.manual_seed(0)
    models = {
        "modernbert": ModernBertModel(
            ModernBertConfig(
                vocab_size=tokenizer.vocab_size,
                max_position_embeddings=64,
                pad_token_id=0,
                cls_token_id=101,
                sep_token_id=102,
                bos_token_id=101,
                eos_token_id=102,
                local_attention=16,
                global_attn_every_n_layers=2,
                **size,
            )
        ),
        "qwen2": Qwen2Model(
            Qwen2Config(
                vocab_size=tokenizer.vocab_size,
                max_position_embeddings=64,
                num_key_value_heads=1,
                pad_token_id=0,
                eos_token_id=102,
                **size,
            )
        ),
    }
    out = {}
    for name, model in models.items():
        folder = tmp_path_factory.mktemp(name)
        model.eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out[name] = folder
    return out


@pytest.mark.parametrize("family", ["modernbert", "qwen2"])
def test_self_extend_equals_a_per_pair_reference(small_rope_models, family):
    from transformers import AttentionInterface, AutoModel
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    from lmk_eval.model.encoding import TextEncoder

    folder = small_rope_models[family]
    encoder = TextEncoder(str(folder), device="cpu")
    variant = make_variant("mean", max_length=256, strategy="self-extend", attention_scale="none")
    assert variant.self_extend_options(64) == (5, 16)  # 4x: Table 6's g 5, w P/4
    got = encoder.encode([TEXT, "a short text"], [variant])[variant]
    (window, _) = encoder.tokenisation.windows([TEXT, "a short text"], variant)
    reference = AutoModel.from_pretrained(folder).eval()
    rotary = reference.rotary_emb
    inv_freq = getattr(rotary, "full_attention_inv_freq", None)
    inv_freq = rotary.inv_freq if inv_freq is None else inv_freq
    name = f"test_self_extend_{family}"
    AttentionInterface.register(name, _reference_self_extend(5, 16, inv_freq))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    reference.set_attn_implementation(name)
    ids = torch.tensor([window.ids])
    with torch.no_grad():
        hidden = reference(input_ids=ids).last_hidden_state[0]
        reference.set_attn_implementation("sdpa")
        unextended = reference(input_ids=ids).last_hidden_state[0]  # true positions 0..255
    assert len(window.ids) == 256
    np.testing.assert_allclose(got[0], _mean(hidden), atol=2e-5)
    assert np.abs(got[0] - _mean(unextended)).max() > 1e-2  # the grouped positions changed it
    short = encoder.encode(["a short text"], [make_variant("mean", max_length=64)])
    assert np.array_equal(got[1], next(iter(short.values()))[0])  # fits: exactly the model's own


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["modernbert", "qwen2"])
def test_self_extend_runs_at_four_times_the_tiny_models_positions(tiny, family):
    from lmk_eval.model.encoding import TextEncoder
    from tests.tiny_models import haystack_text

    encoder = TextEncoder(str(tiny[0][family]), device="cpu")
    length = 4 * encoder.max_positions  # ModernBERT 16,384, Qwen2 8,192
    text = " ".join(haystack_text(30_000))
    variants = [make_variant(p, max_length=length, strategy="self-extend") for p in ("mean", "lmk")]
    (window,) = encoder.tokenisation.windows([text], variants[0])
    assert len(window.ids) == length
    out = encoder.encode([text], variants)
    for v in variants:
        assert np.isfinite(out[v]).all() and np.linalg.norm(out[v][0]) == pytest.approx(1, abs=1e-5)


def test_a_stored_variant_reads_back_as_itself_and_an_old_one_as_unscaled():
    from lmk_eval.config.variants import Variant

    variants = [
        make_variant("mean", max_length=4096, strategy=s, attention_scale=a, se_group=g)
        for s in ("window", "grouped", "self-extend")
        for a in (None, "none", "temperature:0.8")
        for g in (None, 7)
    ]
    for v in variants:
        assert Variant.from_options(v.relevant_options()) == v, v.reading()
    # a cell stored before scales existed
    old = {
        "pooling": "mean",
        "max_length": 4096,
        "strategy": "grouped",
    }
    assert Variant.from_options(old).reading() == "grouped"
    assert make_variant(**old).reading() == "grouped+logn"  # asked for now: LongEmbed's default
