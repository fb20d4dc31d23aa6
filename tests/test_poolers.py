"""Poolers with weights and multi-layer poolers: math by hand, refusals, training round trips."""

import math

import numpy as np
import pytest
import torch

import lmk_eval
from lmk_eval.cli.commands import main
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.training import TrainConfig
from lmk_eval.pooling import functions as pooling
from lmk_eval.train.trainer import checkpoint_dir, train_all
from tests.test_train import train_folder  # noqa: F401 - the 16-pair training folder fixture

pytestmark = pytest.mark.e2e  # whole sweeps, subprocesses, servers: `make test` runs them

NEW = ["latent_attention", "multilayer_attention", "layer_max_cls", "gem"]
TEXTS = ["What colour is the door?", "Landmark pooling for dense embeddings. " * 20, "short"]


def test_gem_and_layer_max_cls_by_hand():
    hidden = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pooling.gem(hidden, mask, 1.0), pooling.mean(hidden, mask))
    # p = 3: m = mean(1, 27) = 14 -> 14^(1/3); second column mean(-8, 64) = 28 -> 28^(1/3)
    torch.testing.assert_close(
        pooling.gem(hidden, mask, 3.0), torch.tensor([[14 ** (1 / 3), 28 ** (1 / 3)]])
    )
    big = pooling.gem(hidden, mask, 60.0)
    assert math.isclose(float(big[0, 0]), 3.0, rel_tol=0.03)  # towards max |x| of real tokens
    layers = torch.stack([hidden, hidden * -1, hidden * 2])
    # [CLS] rows per layer: (1, -2), (-1, 2), (2, -4) -> element-wise max (2, 2)
    torch.testing.assert_close(pooling.layer_max_cls(layers, mask), torch.tensor([[2.0, 2.0]]))


def test_untrained_poolers_are_refused_and_training_free_ones_run():
    for name in ("latent_attention", "multilayer_attention"):
        with pytest.raises(LmkEvalError, match=f"{name} has trainable weights"):
            lmk_eval.encoder(None, name, max_length=64)
    for name in ("layer_max_cls", "gem"):  # no weights, or meaningful initial ones (p = 3)
        out = lmk_eval.encoder(None, name, max_length=64).encode(TEXTS)
        assert out.shape == (3, 384) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def trained(train_folder, tmp_path_factory):  # noqa: F811
    cfg = TrainConfig(
        poolings=["latent_attention", "multilayer_attention", "gem", "layer_max_cls"],
        data=str(train_folder),
        steps=3,
        batch_size=8,
        learning_rate=1e-4,
        max_seq_length=64,
        pooler={"latents": 16, "heads": 4},
        output=str(tmp_path_factory.mktemp("ckpt")),
    )
    with pytest.raises(
        LmkEvalError, match=r"\['latents'\] are not options of multilayer_attention"
    ):
        train_all(cfg.model_copy(update={"poolings": ["multilayer_attention"]}), log=lambda m: None)
    cfg = cfg.model_copy(update={"pooler": {}})  # each pooler's own defaults
    records = train_all(cfg, log=lambda m: None)
    return cfg, records


@pytest.mark.parametrize("name", NEW)
def test_checkpoints_round_trip_through_sentence_transformers_and_the_harness(trained, name):
    from sentence_transformers import SentenceTransformer

    cfg, _ = trained
    path = str(checkpoint_dir(cfg, name, 0))
    st = SentenceTransformer(path, device="cpu", trust_remote_code=True).encode(TEXTS)
    ours = lmk_eval.encoder(path, name, max_length=64).encode(TEXTS)
    assert (st * ours).sum(axis=1).min() > 0.9999
    native = lmk_eval.encoder(path, "native", max_length=64).encode(TEXTS)
    assert (native * ours).sum(axis=1).min() > 0.9999  # native resolves to the trained pooler


def test_the_trained_pooler_moved_and_was_saved(trained):
    from safetensors.torch import load_file

    cfg, records = trained
    path = checkpoint_dir(cfg, "gem", 0)
    (module_dir,) = [p for p in path.iterdir() if p.is_dir() and "Pooling" in p.name]
    p = load_file(str(module_dir / "model.safetensors"))["pooler.p"]
    assert float(p) != 3.0  # gem's exponent was trained
    assert all(len(r["losses"]) == 3 for r in records)


def test_train_cli_writes_a_latent_attention_checkpoint(train_folder, tmp_path):  # noqa: F811
    from sentence_transformers import SentenceTransformer

    code = main(
        [
            "train",
            "--pooling",
            "latent_attention",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--max-seq-length",
            "64",
            "--data",
            str(train_folder),
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("latent_attention-seed0-")]
    st = SentenceTransformer(str(path), device="cpu", trust_remote_code=True).encode(TEXTS)
    ours = lmk_eval.encoder(str(path), "latent_attention", max_length=64).encode(TEXTS)
    assert (st * ours).sum(axis=1).min() > 0.9999
