"""`lmk-eval plan`: what a sweep will encode, counted before any forward pass."""

from __future__ import annotations

from lmk_eval.cli.commands import main
from lmk_eval.config.sweep import Sweep
from lmk_eval.run.costs import estimate, flops_per_token
from lmk_eval.run.plan import plan
from lmk_eval.run.work import compute_group, make_encoder


def planned_and_run(sweep: Sweep):
    """The plan's cost of the sweep's one group, and the encoder that then computed it."""
    groups = plan(sweep)
    (cost,) = estimate(sweep, [(groups[0], groups[0].cells)], measure=False)
    encoder = make_encoder(sweep, "default")
    list(compute_group(groups[0], groups[0].cells, encoder))
    return cost, encoder


def test_plan_counts_exactly_the_tokens_the_run_encodes(tiny_beir):
    sweep = Sweep.model_validate(
        {
            "name": "t",
            "poolings": [{"pooling": p} for p in ("cls", "mean", "lmk")],
            "grid": [{"tasks": [str(tiny_beir)], "max_length": [64]}],
        }
    )
    cost, encoder = planned_and_run(sweep)
    assert cost.tokens == encoder.stats.real_tokens  # what the run put through the model
    # lmk has its own
    assert (cost.documents, cost.queries, cost.cells, cost.tokenisations) == (
        20,
        8,
        3,
        2,
    )
    assert cost.unshared > cost.tokens and cost.counted == "counted"


def test_plan_counts_inputs_shared_across_lengths_and_readings_as_the_run_runs_them(tiny_beir):
    """One group over three lengths and two strategies: the plan's tokens are the run's, fewer than
    a pass per length and reading, which it counts beside them."""
    sweep = Sweep.model_validate(
        {
            "name": "t",
            "poolings": [{"pooling": p} for p in ("mean", "lmk")],
            "grid": [
                {
                    "tasks": [str(tiny_beir)],
                    "max_length": [128, 256, 512],
                    "strategy": ["truncate", "window"],
                }
            ],
        }
    )
    cost, encoder = planned_and_run(sweep)
    assert cost.tokens == encoder.stats.real_tokens
    assert cost.separate == encoder.stats.cell_tokens  # a pass per length and reading
    assert cost.lengths == [128, 256, 512] and cost.cells == 12 and cost.tokenisations == 12
    # an abstract that fits 512 is read once for truncate@512 and window@512 (and one that fits
    # 128 once for all six); here that saves a third
    assert cost.tokens < 0.75 * cost.separate


def test_plan_counts_shared_windows_once_as_the_encoder_runs_them():
    """Passkey haystacks repeat one filler: read in windows, most windows are identical."""
    sweep = Sweep.model_validate(
        {
            "name": "t",
            "poolings": [{"pooling": "mean"}, {"pooling": "lmk"}],
            "grid": [
                {"tasks": ["passkey-quick:test_1024"], "max_length": [256], "strategy": ["window"]}
            ],
        }
    )
    cost, encoder = planned_and_run(sweep)
    assert encoder.stats.reused_windows > 0  # the data is repetitive: sharing matters
    assert cost.tokens == encoder.stats.real_tokens


def test_a_dry_run_of_a_finished_sweep_plans_nothing(tiny_beir, tmp_path, capsys):
    args = [
        "--tasks",
        str(tiny_beir),
        "--pooling",
        "mean,cls",
        "--max-length",
        "64",
        "--output",
        str(tmp_path / "out"),
        "--no-report",
        "--no-progress",
    ]
    assert main(["run", "--dry-run", "--no-measure", *args]) == 0
    assert "2 cells to compute in 1 groups." in capsys.readouterr().out
    assert main(["run", *args]) == 0
    capsys.readouterr()
    assert main(["run", "--dry-run", "--no-measure", *args]) == 0
    assert "0 cells to compute in 0 groups; 2 already stored in" in capsys.readouterr().out
    assert main(["run", "--dry-run", "--no-measure", "--recompute", *args]) == 0
    assert "2 cells to compute in 1 groups." in capsys.readouterr().out


def test_the_plan_times_the_tasks_own_texts(tiny_beir):
    sweep = Sweep.model_validate(
        {
            "name": "t",
            "poolings": [{"pooling": "mean"}],
            "grid": [{"tasks": [str(tiny_beir)], "max_length": [64]}],
        }
    )
    groups = plan(sweep)
    (cost,) = estimate(sweep, [(groups[0], groups[0].cells)])
    assert cost.seconds_here is not None and cost.seconds_here > 0


def test_flops_per_token_of_bert_base_are_twice_its_85m_layer_weights():
    from transformers import BertConfig

    assert flops_per_token(BertConfig(), 0) == 2 * 84_934_656
    assert flops_per_token(BertConfig(), 512) > flops_per_token(BertConfig(), 0)
