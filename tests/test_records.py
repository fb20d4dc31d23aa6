"""Stored cells are typed: variant, label and checkpoint are fields, older records are upgraded."""

import json
from pathlib import Path

import pytest

from lmk_eval.common.provenance import file_sha256
from lmk_eval.config.variants import make_variant
from lmk_eval.store.cells import CorruptCell, RunStore, read_record
from lmk_eval.store.records import CellRecord, upgrade

ROOT = Path(__file__).resolve().parents[1]
SCORES = {"test_256": {"ndcg_at_1": 0.5, "ndcg_at_10": 0.7}}


def v2_record(model: str, identity: dict | None) -> dict:
    """A cell as lmk-eval wrote it before typed records: the label and the path, nothing else."""
    return {
        "cell": {
            "model": model,
            "task": "needle-quick",
            "pooling": "lmk[fixed/32]",
            "variant": {
                "pooling": "lmk",
                "granularity": "fixed",
                "interval": 32,
                "max_length": 4096,
                "strategy": "window",
            },
            "max_length": 4096,
            "strategy": "window",
        },
        **({"identity": identity} if identity else {}),
        "task": "needle-quick",
        "context": "long",
        "main_score": "ndcg_at_1",
        "scores": SCORES,
        "per_query": {"test_256": {"q1": 0.5}},
    }


TRAINING = {"lmk-seed2-0a1b2c3d": {"pooling": "lmk", "seed": 2, "config": {"output": "ckpt/run"}}}


def test_a_provenance_era_checkpoint_cell_takes_its_seed_from_its_training_identity():
    identity = {
        "slot": {},
        "model": {"kind": "checkpoint", "training": {"pooling": "lmk", "seed": 2}},
        "data": {},
        "encoding": {},
        "scoring": {"lmk_eval_scoring": 2},
    }
    record = CellRecord.model_validate(
        upgrade(v2_record("ckpt/run/lmk-seed2-0a1b2c3d", identity), TRAINING)
    )
    assert record.cell.checkpoint.model_dump() == {"group": "ckpt/run", "pooling": "lmk", "seed": 2}
    assert record.variant == make_variant("lmk", interval=32, max_length=4096, strategy="window")
    assert record.cell.label == "lmk[fixed/32]" and record.cell.splits == ["test_256"]


def test_a_cell_without_provenance_takes_its_checkpoint_from_the_runs_training_record():
    record = CellRecord.model_validate(
        upgrade(v2_record("elsewhere/lmk-seed2-0a1b2c3d", None), TRAINING)
    )
    assert (record.cell.row_model, record.cell.seed) == ("ckpt/run", 2)
    plain = CellRecord.model_validate(upgrade(v2_record("path/to/my-model-seed3", None), TRAINING))
    assert plain.cell.checkpoint is None and plain.cell.row_model == "path/to/my-model-seed3"


def test_a_record_round_trips_through_its_json(tmp_path):
    record = CellRecord.model_validate(upgrade(v2_record("m", None), {}))
    path = tmp_path / "c" / "cell.json"
    path.parent.mkdir()
    (path.parent / f"{record.task}.json").write_text("{}")  # mteb's JSON must be beside it
    path.write_text(record.model_dump_json())
    # the current format is written with them
    with pytest.raises(CorruptCell, match="has no digests"):
        read_record(path)
    record.digests = {
        "scores": record.scored_digest(),
        "task_result": file_sha256(path.parent / f"{record.task}.json"),
    }
    path.write_text(record.model_dump_json())
    again = read_record(path)
    assert again.model_dump() == record.model_dump() and json.loads(path.read_text())["format"] == 4


def test_the_shipped_pre_provenance_run_reads_with_its_seeds():
    records = RunStore(ROOT / "results" / "controlled-minilm").records()
    seeds = {(r.cell.row_model, r.cell.checkpoint.pooling, r.cell.seed) for r in records}
    assert seeds == {
        ("checkpoints/controlled-minilm", p, s) for p in ("cls", "mean", "lmk") for s in (0, 1, 2)
    }


@pytest.mark.e2e
def test_a_published_curve_is_shown_only_beside_cells_of_its_calibrated_construction(tmp_path):
    from lmk_eval.report import write_report
    from lmk_eval.retrieval.task_registry import BUNDLED, reference_curve

    assert (
        reference_curve("needle-quick", BUNDLED["needle-quick"].construction)["scores"][256] == 70
    )
    assert reference_curve("needle", "full") is None  # the construction before calibration
    assert reference_curve("needle", None) is None  # cells that record none
    assert reference_curve("passkey", BUNDLED["passkey"].construction) is None  # no curve
    legacy = write_report(ROOT / "results" / "controlled-minilm", tmp_path).read_text()
    calibrated = write_report(ROOT / "results" / "needle-calibration", tmp_path).read_text()
    assert "published:" not in legacy and "| published: LongEmbed needle" in calibrated


def test_a_format_3_cell_is_checked_against_the_digest_it_was_written_with(tmp_path):
    """Scores by split, digested as lmk-eval wrote them then (pydantic's compact JSON of main_score,
    scores, per_query, here written by json.dumps), read as one `default` subset."""
    import hashlib

    record = {**v2_record("m", None), "format": 3}
    record["cell"] = {
        "model": "m",
        "task": "needle-quick",
        "splits": ["test_256"],
        "label": "lmk[fixed/32]",
        "variant": record["cell"]["variant"],
    }
    scored = {k: record[k] for k in ("main_score", "scores", "per_query")}
    record["digests"] = {
        "scores": hashlib.sha256(json.dumps(scored, separators=(",", ":")).encode()).hexdigest()
    }
    path = tmp_path / "c" / "cell.json"
    path.parent.mkdir()
    (path.parent / "needle-quick.json").write_text("{}")
    path.write_text(json.dumps(record))
    read = read_record(path)
    assert [(p.subset, p.split, p.per_query) for p in read.scores] == [
        ("default", "test_256", {"q1": 0.5})
    ]
    assert read.main == 0.5 and read.scores[0].scores == SCORES["test_256"]
    record["scores"]["test_256"]["ndcg_at_1"] = 0.9
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptCell, match="differ from the digest written with them"):
        read_record(path)
