"""Matched fine-tuning: one checkpoint per (pooling, seed) from the same base, data, steps and seeds.

Training uses sentence-transformers' own trainer and MultipleNegativesRankingLoss (in-batch
negatives) on (query, relevant document) pairs of a BEIR folder's train split. LMK trains with
``variable`` granularity (an interval drawn per text from 32/64/128/256, as the authors do) and is
saved with the fixed interval used for evaluation. A finished checkpoint is skipped on re-run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.files import atomic_write_text, honour_umask
from lmk_eval.common.provenance import digest, files_digest, tree_files
from lmk_eval.config.training import TrainConfig, evaluation_pooling
from lmk_eval.config.variants import make_variant
from lmk_eval.model import loading as models
from lmk_eval.retrieval.beir import beir_files, read_beir_folder
from lmk_eval.retrieval.task_registry import data_dir

DONE_FILE = "lmk_eval_training.json"
# Bump when train_one's recipe changes (loss, sampler, warm-up, how lmk draws its intervals):
# checkpoints are named by a hash that includes it, so a changed recipe trains new checkpoints.
TRAINING_RECIPE = 1


def data_folder(cfg: TrainConfig) -> Path:
    """The BEIR folder the checkpoints train on: the section's ``data``, else bundled SciFact."""
    return Path(cfg.data) if cfg.data else data_dir("scifact")


def training_pairs(folder: Path, split: str) -> list[dict[str, str]]:
    """(query, relevant document) pairs; the folder must have qrels/<split>.tsv."""
    data = read_beir_folder(folder, split)
    docs = {d["id"]: (d["title"] + " " + d["text"]).strip() for d in data.corpus}
    queries = {q["id"]: q["text"] for q in data.queries}
    return [
        {"anchor": queries[q], "positive": docs[d]}
        for q, rel in data.qrels.items()
        for d, score in rel.items()
        if score > 0
    ]


def training_identity(cfg: TrainConfig, pooling: str, seed: int) -> dict[str, Any]:
    """Everything that makes one checkpoint what it is: base model and training data by content,
    every hyper-parameter, the pooling, the seed and the recipe version."""
    folder = data_folder(cfg)
    # defaults add nothing, so checkpoints trained before these options keep their names
    return (
        {
            "base": models.identity(models.resolve_model(cfg.base)),
            "data": files_digest(folder, beir_files(folder, cfg.split)),
            "split": cfg.split,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "max_seq_length": cfg.max_seq_length,
            "eval_interval": cfg.eval_interval,
            "pooling": pooling,
            "seed": seed,
            "recipe": TRAINING_RECIPE,
        }
        | ({"precision": cfg.precision} if cfg.precision != "float32" else {})
        | (
            {"pooler": cfg.pooler}
            if cfg.pooler and make_variant(pooling).spec.weights == "trainable"
            else {}
        )
    )


def checkpoint_dir(cfg: TrainConfig, pooling: str, seed: int) -> Path:
    """``<output>/<pooling>-seed<N>-<hash>``: a changed training setup gets a new directory."""
    return (
        Path(cfg.output)
        / f"{pooling}-seed{seed}-{digest(training_identity(cfg, pooling, seed), 8)}"
    )


def _done_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((path / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_trained(path: Path, identity: dict[str, Any] | None = None) -> bool:
    """A finished checkpoint (and, given one, trained with exactly this identity)."""
    record = _done_record(path)
    return record is not None and (identity is None or record.get("identity") == identity)


def checkpoint_files_digest(path: Path) -> str:
    """sha256 over a checkpoint's files (weights, config, tokenizer, modules), not its record:
    the checkpoint by content, as every other model is known."""
    return files_digest(path, [f for f in tree_files(path) if f.name != DONE_FILE])


def found_checkpoint(cfg: TrainConfig, pooling: str, seed: int) -> dict[str, Any] | None:
    """The training record of this setup's finished checkpoint, verified by content; None when
    its folder does not exist. A folder that holds something else (no record, another setup's,
    files changed since training) is refused, never trained over."""
    target = checkpoint_dir(cfg, pooling, seed)
    if not target.exists():
        return None
    record = _done_record(target)
    if record is None or record.get("identity") != training_identity(cfg, pooling, seed):
        raise LmkEvalError(
            f"'{target}' exists but is not the checkpoint this training makes (no {DONE_FILE}, or"
            " another setup's); move it away or choose another --output"
        )
    if record.get("files") != checkpoint_files_digest(target):
        raise LmkEvalError(
            f"checkpoint '{target}' holds files that differ from its training record (changed after"
            " training, or trained by an lmk-eval that recorded no digest); move it away to train it again"
        )
    return record


def train_one(
    cfg: TrainConfig, pooling: str, seed: int, pairs: list[dict[str, str]]
) -> dict[str, Any]:
    """Train one checkpoint into ``<name>.partial`` and rename it into place once whole."""
    from lmk_eval.model.st_modules import build_model

    base = models.resolve_model(cfg.base)
    saved = evaluation_pooling(cfg, pooling)  # what the checkpoint is evaluated with
    options = {k: v for k, v in saved.items() if k != "pooling"}
    if saved.get("granularity") == "fixed":  # landmarks train with per-text intervals
        options["granularity"] = "variable"
    if make_variant(pooling).spec.weights == "trainable":
        options["pooler_options"] = dict(cfg.pooler)
    import torch

    torch.manual_seed(seed)  # a trained pooler's initial weights are part of the seed's run
    model = build_model(base.ref, pooling, max_seq_length=cfg.max_seq_length, seed=seed, **options)
    target = checkpoint_dir(cfg, pooling, seed)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    losses_seen = _fit(cfg, model, pairs, seed, staging / "trainer")
    seconds = time.perf_counter() - started
    transformer = model[0]
    for key in ("granularity", "interval"):  # saved as evaluated, as the authors do
        if key in saved:
            setattr(transformer, key, saved[key])
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    model.save(str(staging))
    honour_umask(staging)
    record = {
        "identity": training_identity(cfg, pooling, seed),
        "base": base.name,
        "base_path": base.ref,
        "pooling": pooling,
        "trained_granularity": options.get("granularity", "none"),
        "saved_granularity": transformer.granularity,
        "seed": seed,
        "pairs": len(pairs),
        "seconds": round(seconds, 1),
        "losses": losses_seen,
        "config": cfg.model_dump(),
    }
    record["files"] = checkpoint_files_digest(staging)  # relative paths: the same once renamed
    atomic_write_text(staging / "TRAINING.md", model_card(record))
    atomic_write_text(staging / DONE_FILE, json.dumps(record, indent=1))
    os.replace(staging, target)  # refused (not replaced) if another process made it meanwhile
    return record


def _fit(
    cfg: TrainConfig, model, pairs: list[dict[str, str]], seed: int, scratch: Path
) -> list[float]:
    """sentence-transformers' trainer, MultipleNegativesRankingLoss over no-duplicate batches;
    the loss of every step."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = SentenceTransformerTrainingArguments(
        output_dir=str(scratch),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=max(1, cfg.steps // 10),
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        use_cpu=not _cuda(),
        bf16=cfg.precision == "bfloat16",
        disable_tqdm=os.environ.get("CI") == "true",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        loss=MultipleNegativesRankingLoss(model),
    )
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def model_card(r: dict[str, Any]) -> str:
    c = r["config"]
    losses = r["losses"]
    return "\n".join(
        [
            f"# {r['pooling']} checkpoint (seed {r['seed']}) trained by lmk-eval",
            "",
            f"- base: {r['base']} ({r['base_path']})",
            f"- pooling: {r['pooling']}; landmark granularity in training: {r['trained_granularity']};"
            f" saved for evaluation with: {r['saved_granularity']}"
            + (f" (interval {c['eval_interval']})" if r["saved_granularity"] == "fixed" else ""),
            f"- data: {c['data'] or 'bundled SciFact'} split {c['split']}: {r['pairs']} (query, document) pairs",
            "- loss: MultipleNegativesRankingLoss, in-batch negatives, no-duplicates batches",
            f"- steps {c['steps']}, batch size {c['batch_size']}, learning rate {c['learning_rate']},"
            f" 10% warm-up, max_seq_length {c['max_seq_length']}, seed {r['seed']},"
            f" precision {c.get('precision', 'float32')}",
            f"- loss first/last step: {losses[0]:.4f} / {losses[-1]:.4f}"
            if losses
            else "- no loss logged",
            f"- wall time: {r['seconds']} s",
            "",
            "Load with `SentenceTransformer(dir, trust_remote_code=True)` (sentence-transformers 6 asks",
            "that for any module outside its namespace) or `lmk_eval.encoder(dir, pooling=...)`.",
            "",
        ]
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def checkpoint_jobs(cfg: TrainConfig) -> dict[str, tuple[str, int]]:
    """Checkpoint directory -> (pooling, seed), seed-major: the order a controlled sweep runs."""
    return {str(checkpoint_dir(cfg, p, s)): (p, s) for s in cfg.seeds for p in cfg.poolings}


def load_pairs(cfg: TrainConfig) -> list[dict[str, str]]:
    """The training pairs, checked before any training starts."""
    cfg.check_poolings()
    folder = data_folder(cfg)
    pairs = training_pairs(folder, cfg.split)
    if len(pairs) < cfg.batch_size:
        raise LmkEvalError(f"only {len(pairs)} training pairs in {folder}; lower --batch-size")
    return pairs


def ensure_trained(
    cfg: TrainConfig, pooling: str, seed: int, pairs: list[dict[str, str]], log=print
) -> dict[str, Any]:
    """The checkpoint's training record, training it first unless a finished one is on disk."""
    target = checkpoint_dir(cfg, pooling, seed)
    record = found_checkpoint(cfg, pooling, seed)
    if record is not None:
        log(f"{target}: already trained (files match its record), skipped")
        return record
    log(f"training {pooling} seed {seed} on {len(pairs)} pairs -> {target}")
    return train_one(cfg, pooling, seed, pairs)


def train_all(cfg: TrainConfig, log=print) -> list[dict[str, Any]]:
    pairs = load_pairs(cfg)
    return [ensure_trained(cfg, p, s, pairs, log) for p, s in checkpoint_jobs(cfg).values()]
