"""Matched fine-tuning: a few real steps on a tiny generated folder."""

import json
import os
import shutil
import statistics
from pathlib import Path

import pytest
import torch

import lmk_eval
from lmk_eval.config.training import TrainConfig
from lmk_eval.model.loading import packaged_model_path
from lmk_eval.retrieval.synthetic import needles
from lmk_eval.train.trainer import checkpoint_dir, train_all, training_pairs
from tests.conftest import write_beir

pytestmark = pytest.mark.e2e  # whole sweeps, subprocesses, servers: `make test` runs them


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory):
    """16 needle facts as documents, their questions as queries, split 'train'."""
    facts = needles()[:16]
    corpus = [{"id": f"d{i}", "text": fact} for i, (fact, _) in enumerate(facts)]
    queries = [{"id": f"q{i}", "text": q} for i, (_, q) in enumerate(facts)]
    folder = write_beir(
        tmp_path_factory.mktemp("train") / "facts",
        corpus,
        queries,
        [(f"q{i}", f"d{i}", 1) for i in range(16)],
    )
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "train.tsv")
    return folder


def in_batch_loss(model, pairs) -> float:
    """MultipleNegativesRankingLoss over all pairs at once, from the model's own embeddings."""
    a = torch.tensor(model.encode([p["anchor"] for p in pairs]))
    b = torch.tensor(model.encode([p["positive"] for p in pairs]))
    scores = 20.0 * a @ b.T
    return float(torch.nn.functional.cross_entropy(scores, torch.arange(len(pairs))))


@pytest.fixture(scope="module")
def trained(train_folder, tmp_path_factory):
    cfg = TrainConfig(
        poolings=["lmk"],
        data=str(train_folder),
        steps=8,
        batch_size=8,
        learning_rate=1e-4,
        max_seq_length=64,
        output=str(tmp_path_factory.mktemp("ckpt")),
    )
    (record,) = train_all(cfg, log=lambda m: None)
    return cfg, record


def test_training_lowers_the_loss_on_its_data(train_folder, trained):
    from sentence_transformers import SentenceTransformer

    from lmk_eval.model.st_modules import build_model

    cfg, record = trained
    pairs = training_pairs(train_folder, "train")
    before = in_batch_loss(build_model(str(packaged_model_path()), "lmk", max_seq_length=64), pairs)
    model = SentenceTransformer(
        str(checkpoint_dir(cfg, "lmk", 0)), device="cpu", trust_remote_code=True
    )
    after = in_batch_loss(model, pairs)
    assert after < before
    assert len(record["losses"]) == 8 and record["saved_granularity"] == "fixed"


def test_checkpoint_round_trips_through_the_harness_encoder(trained):
    from sentence_transformers import SentenceTransformer

    cfg, _ = trained
    path = str(checkpoint_dir(cfg, "lmk", 0))
    texts = ["What colour is the door?", "Landmark pooling for dense embeddings. " * 20, "short"]
    st = SentenceTransformer(path, device="cpu", trust_remote_code=True).encode(texts)
    ours = lmk_eval.encoder(path, "lmk", interval=32, max_length=64).encode(texts)
    assert (st * ours).sum(axis=1).min() > 0.9999
    card = (Path(path) / "TRAINING.md").read_text()
    assert "pooling: lmk" in card and "variable" in card and "seed 0" in card


def test_checkpoint_files_follow_the_umask(trained):
    cfg, _ = trained
    umask = os.umask(0o022)
    os.umask(umask)  # read back: the checkpoint was written under this process's umask
    modes = {
        p.relative_to(checkpoint_dir(cfg, "lmk", 0)).as_posix(): p.stat().st_mode & 0o777
        for p in checkpoint_dir(cfg, "lmk", 0).rglob("*")
        if p.is_file()
    }
    assert "model.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_finished_checkpoints_are_skipped(trained):
    cfg, record = trained
    messages = []
    (again,) = train_all(cfg, log=messages.append)
    assert again["losses"] == record["losses"] and "already trained" in messages[0]


def test_folder_without_train_split_is_one_clear_error(tmp_path, capsys):
    from lmk_eval.cli.commands import main

    folder = write_beir(
        tmp_path / "f", [{"id": "d", "text": "x"}], [{"id": "q", "text": "y"}], [("q", "d", 1)]
    )
    assert main(["train", "--data", str(folder), "--output", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "lacks qrels/train.tsv (splits present: test)" in err
    assert not (tmp_path / "c").exists()


def test_controlled_sweep_trains_then_evaluates_each_checkpoint_with_its_pooling(
    train_folder, tmp_path
):
    from lmk_eval.report import remaining_seconds, write_report
    from lmk_eval.run.plan import plan
    from lmk_eval.run.runner import run_sweep
    from lmk_eval.run.sweeps import sweep_from_dict
    from lmk_eval.store.cells import RunStore

    sweep = sweep_from_dict(
        {
            "name": "controlled-tiny",
            "train": {
                "poolings": ["mean", "lmk"],
                "seeds": [0, 1],
                "data": str(train_folder),
                "steps": 2,
                "batch_size": 8,
                "max_seq_length": 64,
                "output": str(tmp_path / "ckpt"),
            },
            "tasks": ["needle-depth-quick:depth_000+depth_050"],
            "max_length": [512],
        },
        "controlled-tiny",
    )
    out = tmp_path / "run"
    first_log = []
    summary = run_sweep(sweep, out, progress=False, log=first_log.append)
    assert summary.computed == 4  # 2 poolings x 2 seeds, each checkpoint with its own pooling only
    pairs = {
        (r.cell.checkpoint.pooling, r.cell.checkpoint.seed, r.cell.label)
        for r in RunStore(out).records()
    }
    assert pairs == {
        ("mean", 0, "mean"),
        ("mean", 1, "mean"),
        ("lmk", 0, "lmk[fixed/32]"),
        ("lmk", 1, "lmk[fixed/32]"),
    }
    assert {r.cell.checkpoint.group for r in RunStore(out).records()} == {str(tmp_path / "ckpt")}
    store = RunStore(out)
    trained_in_order = [m.split(" on ")[0] for m in first_log if m.startswith("training ")]
    assert trained_in_order == [
        "training mean seed 0",
        "training lmk seed 0",
        "training mean seed 1",
        "training lmk seed 1",
    ]
    assert len(store.training_records()) == 4  # kept with the results
    assert all(r.seconds > 0 for r in store.records())
    messages = []
    again = run_sweep(sweep, out, progress=False, log=messages.append)
    assert again.computed == 0 and not again.model_loaded
    assert not any("training" in m for m in messages)  # a finished sweep trains nothing
    text = write_report(out, tmp_path / "reports", baseline="mean").read_text()
    assert "seeds: 0, 1" in text and " ± " in text
    # two seeds x (2 splits x 10 queries): each query is averaged over its seeds first, so n = 20
    (line,) = [x for x in text.splitlines() if x.startswith("- needle-depth-quick: lmk")]
    assert line.endswith("n=20 queries")
    assert "- cells: 4;" in text  # every checkpoint's cell, not one per pooling
    assert "## Per seed" in text and "| needle-depth-quick | 1 |" in text
    assert "| needle-depth-quick | ndcg_at_1 |" in text  # one row for all checkpoints and seeds
    training_row = next(line for line in text.splitlines() if line.startswith("| training |"))
    assert training_row.startswith("| training | 4 |")
    assert "Unfinished run" not in text
    gone = next(
        d for d in store.cells_dir.iterdir() if d.name.startswith("needle-depth-quick__mean")
    )
    model = json.loads((gone / "cell.json").read_text())["cell"]["model"].rsplit("/", 1)[-1]
    shutil.rmtree(gone)
    partial = write_report(out, tmp_path / "reports", baseline="mean").read_text()
    assert f"Unfinished run: 3 of 4 planned cells are in the store.** Missing: {model}:" in partial
    assert "the rest needs about" in partial
    # the seed mean now lacks
    other = "lmk[fixed/32] seed " + model.rsplit("seed", 1)[1].split("-")[0]
    assert f"(the store keeps them): {other} (needle-depth-quick)." in partial
    missing = [c.manifest_entry() for g in plan(sweep) for c in g.cells if not store.has(c)]
    cell_mean = statistics.mean(r.seconds for r in store.records())
    assert remaining_seconds(
        store.records(), store.training_records(), missing, trains=True
    ) == pytest.approx(cell_mean)
    trained = store.training_records()
    (store.root / "training" / f"{model}.json").unlink()  # as if that checkpoint never trained
    training_mean = statistics.mean(t["seconds"] for n, t in trained.items() if n != model)
    expected = cell_mean + training_mean
    assert remaining_seconds(
        store.records(), store.training_records(), missing, trains=True
    ) == pytest.approx(expected)
    assert remaining_seconds(
        store.records(), store.training_records(), missing, trains=False
    ) == pytest.approx(cell_mean)


def test_bfloat16_training_runs_and_gets_its_own_checkpoint(train_folder, tmp_path):
    fp32 = TrainConfig(
        poolings=["mean"],
        data=str(train_folder),
        steps=2,
        batch_size=8,
        max_seq_length=64,
        output=str(tmp_path),
    )
    bf16 = fp32.model_copy(update={"precision": "bfloat16"})
    assert checkpoint_dir(bf16, "mean", 0) != checkpoint_dir(fp32, "mean", 0)
    (record,) = train_all(bf16, log=lambda m: None)
    assert record["config"]["precision"] == "bfloat16" and len(record["losses"]) == 2
    card = (checkpoint_dir(bf16, "mean", 0) / "TRAINING.md").read_text()
    assert "precision bfloat16" in card
