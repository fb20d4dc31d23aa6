"""The command line's arguments: one small builder per subcommand (``cli.py`` runs the commands)."""

from __future__ import annotations

import argparse

from lmk_eval.cli.flags import DEFAULT_CONFIG, FLAG_POOLINGS, FLAG_TASKS
from lmk_eval.config.options import RayOptions
from lmk_eval.config.sweep import GridSpec
from lmk_eval.config.variants import GRANULARITIES, PLACEMENTS, STRATEGIES, Variant

RUN_DIR_HELP = "a run directory written by `lmk-eval run` (e.g. results/quick)"
EPILOG = """\
examples:
  lmk-eval run                                    quick offline sweep (cls, mean, lmk) + report
  lmk-eval run --tasks scifact --pooling mean --max-length 256
  lmk-eval run --tasks needle --pooling cls,mean,lmk --max-length 512 --strategy window
  lmk-eval run --config paper-offline           a shipped sweep by name (or any TOML path)
  lmk-eval run --tasks path/to/beir_folder --pooling lmk --interval 64
  lmk-eval run --model path/to/e5 --pooling native,cls,mean,lmk   the model as published + others
  lmk-eval run --model path/to/qwen --pooling lasttoken,lmk --query-prompt "Instruct: ...\nQuery: "
  lmk-eval report results/quick
  lmk-eval baseline results/ci -o tasks/ci.baseline.json
  lmk-eval check results/ci --baseline tasks/ci.baseline.json --tolerance 0.01
  lmk-eval check results/demo --baseline results/quick --decimals 4   reproduction check
"""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{value}'"
        ) from None


def _default(model, name: str):
    """A field's default as its pydantic model (or dataclass) declares it: one source of truth."""
    fields = getattr(model, "model_fields", None) or model.__pydantic_fields__
    return fields[name].get_default(call_default_factory=True)


def _choices(model, name: str) -> list[str]:
    """The values a Literal-typed field of a pydantic model accepts."""
    import typing

    return list(typing.get_args(model.model_fields[name].annotation))


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors in one line and a pointer to --help, not the whole usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def variant_default(name: str) -> str:
    return _shown(_default(Variant, name))


def train_default(name: str) -> str:
    from lmk_eval.config.training import TrainConfig

    return _shown(_default(TrainConfig, name))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lmk-eval",
        description="Which pooling should a text encoder use? Sweeps pooling variants over "
        "short- and long-context retrieval tasks through mteb, stores every score, writes reports.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="every pooling, granularity and context strategy, one line each")
    sub.add_parser("tasks", help="bundled offline tasks, mteb groups, and how to name a folder")
    run = _run_parser(sub)
    _plan_parser(sub, run)
    _gate_parsers(sub)
    _train_parser(sub)
    gen = sub.add_parser(
        "generate", help="regenerate the synthetic tasks and compare with the shipped files"
    )
    gen.add_argument("--write", action="store_true", help="overwrite the shipped files")
    return parser


def _run_parser(sub) -> argparse.ArgumentParser:
    run = sub.add_parser(
        "run",
        help="run a sweep (no arguments: the offline quick suite) and write its report",
        description="Run a sweep of model x pooling x task x max_length. Finished cells are "
        "read from the output directory, so an interrupted run resumes where it stopped. A "
        "config with a [train] section (a controlled sweep) trains each checkpoint just before "
        "its first cell, seed by seed; finished checkpoints are reused.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for add in (
        _shape_arguments,
        _pooling_arguments,
        _model_arguments,
        _output_arguments,
        _cluster_arguments,
    ):
        add(run)
    return run


def _shape_arguments(run: argparse.ArgumentParser) -> None:
    """What the sweep is: a config, or the model, poolings, tasks, lengths and readings as flags."""
    run.add_argument(
        "--config",
        help="a sweep TOML file, or the name of a shipped one: ci, quick, paper-offline,"
        f" controlled-minilm, ... (default without flags: {DEFAULT_CONFIG})",
    )
    run.add_argument("--model", help="HF id or local dir; 'default' = packaged all-MiniLM-L6-v2")
    run.add_argument(
        "--pooling", type=_csv, help=f"comma-separated poolings (default {_shown(FLAG_POOLINGS)})"
    )
    run.add_argument(
        "--tasks",
        type=_csv,
        help="comma-separated task names or BEIR folders (see `lmk-eval tasks`; default"
        f" {_shown(FLAG_TASKS)})",
    )
    run.add_argument(
        "--max-length",
        type=_ints,
        help=f"comma-separated max_length grid (default {_shown(_default(GridSpec, 'max_length'))})",
    )
    run.add_argument(
        "--strategy",
        type=_csv,
        help=f"comma-separated context strategies (default {_shown(_default(GridSpec, 'strategy'))}): "
        + ", ".join(STRATEGIES)
        + " (see `lmk-eval list`)",
    )
    run.add_argument(
        "--attention-scale",
        type=_csv,
        help="comma-separated attention scales for inputs longer than the model's positions: none, logn,"
        " temperature:T (default: logn under grouped, recurrent, interpolate, rope-* and self-extend, as"
        " LongEmbed runs them; none under truncate and window, where every input fits)",
    )
    run.add_argument(
        "--se-group",
        type=int,
        help="self-extend group size g (default: LongEmbed's Table 6 for the extension ratio: 3 / 5 / 9 up to 2x / 4x / 8x)",
    )
    run.add_argument(
        "--se-window",
        type=int,
        help="self-extend neighbour window w in tokens (default: Table 6, P/2 / P/4 / P/8 up to 2x / 4x / 8x)",
    )


def _pooling_arguments(run: argparse.ArgumentParser) -> None:
    """Options of the poolings (landmark chunking, layers, placement, prompt)."""
    run.add_argument(
        "--granularity",
        choices=list(GRANULARITIES),
        help=f"landmark chunking (default {variant_default('granularity')})",
    )
    run.add_argument(
        "--interval",
        type=int,
        help=f"tokens per chunk for fixed granularity / every-k (default {variant_default('interval')})",
    )
    run.add_argument(
        "--intervals",
        help=f"choices for variable granularity (default {variant_default('intervals')})",
    )
    run.add_argument(
        "--seed",
        type=int,
        help=f"seed for variable granularity (default {variant_default('seed')})",
    )
    run.add_argument(
        "--layers",
        type=int,
        help="last layers used by layer_mean and layer_max_cls"
        f" (default {variant_default('layers')})",
    )
    run.add_argument(
        "--placement",
        choices=list(PLACEMENTS),
        help="lmk: a landmark after each chunk or before it (the authors' decoder script); default"
        f" {variant_default('placement')}",
    )
    run.add_argument(
        "--exclude-prompt",
        action="store_true",
        help="pool without the prompt's tokens (sentence-transformers' include_prompt=False)",
    )


def _model_arguments(run: argparse.ArgumentParser) -> None:
    from lmk_eval.common.hardware import CPU_TOKEN_BUDGET, DTYPE_CHOICES
    from lmk_eval.config.options import EncodeOptions

    model = run.add_argument_group(
        "how every model is loaded and fed (part of each cell's identity)"
    )
    model.add_argument(
        "--query-prompt",
        help="prompt put before each query (default: the model's own prompts; '' for none)",
    )
    model.add_argument(
        "--document-prompt",
        help="prompt put before each document (default: the model's own prompts; '' for none)",
    )
    model.add_argument(
        "--landmark-token",
        help="token used as landmark (default: the tokenizer's [SEP], else </s>, else its EOS)",
    )
    model.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code from the model's directory or repository (nomic-bert, jina-bert...)",
    )
    model.add_argument(
        "--dtype",
        choices=list(DTYPE_CHOICES),
        help=f"weights and activations (default {_default(EncodeOptions, 'dtype')}, which reproduces"
        " published fp32 numbers;"
        " auto = the fastest dtype this device computes natively, which it names); pooling and"
        " scoring stay float32",
    )
    model.add_argument(
        "--device",
        help="cpu, cuda or cuda:N (default: the GPU if torch sees one, else the CPU; an absent GPU"
        " is an error, never a silent CPU run)",
    )
    model.add_argument(
        "--token-budget",
        type=int,
        help=f"padded tokens per batch, at least 16 (default: {CPU_TOKEN_BUDGET:,} on a CPU; on a GPU"
        " sized from its free memory)",
    )
    model.add_argument(
        "--attn-implementation",
        help="attention kernel: eager, sdpa, flash_attention_2, ... (default: transformers chooses)",
    )


def _output_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--baseline",
        help="pooling the significance test compares against (default cls, or the sweep's first"
        " pooling when it has no cls); an unknown one is refused",
    )
    run.add_argument("--output", help="run directory (default results/<sweep name>)")
    run.add_argument("--name", help="sweep name for flags-built sweeps (default: from the flags)")
    run.add_argument(
        "--recompute",
        action="store_true",
        help="compute every cell again, even those the output directory holds (CI gates use it)",
    )
    run.add_argument(
        "--report-dir", default="reports", help="where the report goes (default reports/)"
    )
    run.add_argument("--no-report", action="store_true", help="skip writing the report")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cluster_arguments(run: argparse.ArgumentParser) -> None:
    from lmk_eval.run.executors import EXECUTORS

    cluster = run.add_argument_group(
        "past one machine (pip install 'lmk-eval[ray]'; the driver alone writes the results)"
    )
    cluster.add_argument(
        "--executor",
        choices=list(EXECUTORS),
        default=EXECUTORS[0],
        help="local: cell groups one after the other in this process (default); ray: every group"
        " a Ray task, one accelerator (or CPU) each",
    )
    cluster.add_argument(
        "--ray-address", help="join this Ray cluster (default: start a local one on this machine)"
    )
    cluster.add_argument(
        "--ray-cpus", type=int, help="CPUs of the local Ray cluster (default: all of them)"
    )
    cluster.add_argument(
        "--ray-timeout",
        type=float,
        help="seconds to wait for --ray-address to answer before giving up"
        f" (default {RayOptions().timeout:g})",
    )
    cluster.add_argument(
        "--ray-logs",
        action="store_true",
        help="show Ray's own log lines (default: kept out of the terminal)",
    )
    cluster.add_argument(
        "--encoders",
        type=int,
        help="instead of one task per group: run groups in order here and split each corpus over"
        " N model replicas (Ray actors), for a few very large cells",
    )


def _plan_parser(sub, run: argparse.ArgumentParser) -> None:
    from lmk_eval.common.hardware import ACCELERATORS

    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (what `lmk-eval plan` prints) and stop before any work",
    )
    plan = sub.add_parser(
        "plan",
        parents=[run],
        add_help=False,
        conflict_handler="resolve",
        help="what a sweep will cost, before any forward pass (same arguments as run)",
        description="Per cell group the run would compute (cells already stored in --output are not"
        " planned): documents, queries and tokens (for local data counted exactly as the run will put"
        " them through the model, identical windows once; from mteb's statistics for hub tasks), forward"
        " passes shared between poolings, and estimated time (a forward measured on the task's own"
        " texts) and peak memory here and on --on ACCELERATOR. Writes nothing.",
    )
    for p in (run, plan):
        p.add_argument(
            "--on", choices=sorted(ACCELERATORS), help="also estimate time on this accelerator"
        )
        p.add_argument(
            "--no-measure",
            action="store_true",
            help="skip the measured forward on the task's texts (no time estimate for this machine)",
        )


def _gate_parsers(sub) -> None:
    """report, baseline and check: what is read from a finished run directory."""
    report = sub.add_parser("report", help="write reports/<run>.md and plots from a run directory")
    report.add_argument("run_dir", help=RUN_DIR_HELP)
    report.add_argument(
        "--output-dir", default="reports", help="where reports go (default reports/)"
    )
    report.add_argument("--baseline", help="pooling to test against (default: the sweep's)")
    report.add_argument(
        "--latex",
        action="store_true",
        help="also write the main and per-length tables as LaTeX (booktabs, best in bold) beside it",
    )

    export = sub.add_parser(
        "export",
        help="write a run's results in mteb's results layout, one experiment per pooling variant",
        description="Write every finished cell of RUN as mteb's results repository lays them out: "
        "results/<org__model>/<revision>/experiments/<variant's options>/<Task>.json with a "
        "model_meta.json, which mteb's ResultCache reads back and `mteb submit-results` submits. "
        "mteb's leaderboard takes a result only when it was computed on the dataset revision "
        "the task's metadata names; lmk-eval's own bundled data never is.",
    )
    export.add_argument("run_dir", help=RUN_DIR_HELP)
    export.add_argument(
        "--mteb-results",
        required=True,
        metavar="DIR",
        help="a clone of mteb's results repository (or any folder); files go under DIR/results/",
    )

    base = sub.add_parser("baseline", help="write a baseline JSON of a run's main scores")
    base.add_argument("run_dir", help=RUN_DIR_HELP)
    base.add_argument("-o", "--output", required=True, help="baseline file to write")

    check = sub.add_parser(
        "check", help="exit 1 naming every cell whose score dropped below the baseline"
    )
    check.add_argument("run_dir", help=RUN_DIR_HELP)
    check.add_argument(
        "--baseline",
        required=True,
        help="baseline JSON from `lmk-eval baseline`, or a run directory to compare against",
    )
    check.add_argument("--tolerance", type=float, default=0.01, help="allowed drop (default 0.01)")
    check.add_argument(
        "--decimals",
        type=int,
        help="instead of a tolerance: every score must equal the baseline's to this many decimals",
    )
    check.add_argument(
        "--both-ways", action="store_true", help="also fail on rises beyond the tolerance"
    )


def _train_parser(sub) -> None:
    from lmk_eval.config.training import TrainConfig

    train = sub.add_parser(
        "train",
        help="fine-tune one checkpoint per (pooling, seed) from the same base and data",
        description="Matched fine-tuning with sentence-transformers (MultipleNegativesRankingLoss, "
        "in-batch negatives) on a BEIR folder's train split. lmk trains with variable intervals "
        "(32/64/128/256 per text) and is saved for evaluation with a fixed interval. Finished "
        "checkpoints are skipped, so an interrupted run resumes.",
    )
    train.add_argument(
        "--base",
        help=f"base model (default: {train_default('base')}, the packaged all-MiniLM-L6-v2)",
    )
    train.add_argument(
        "--pooling", type=_csv, help=f"poolings (default {train_default('poolings')})"
    )
    train.add_argument(
        "--data", help="BEIR folder with qrels/<split>.tsv (default: bundled SciFact train split)"
    )
    train.add_argument(
        "--split", help=f"qrels split to train on (default {train_default('split')})"
    )
    train.add_argument(
        "--steps",
        type=int,
        help=f"optimiser steps per checkpoint (default {train_default('steps')})",
    )
    train.add_argument(
        "--batch-size", type=int, help=f"pairs per batch (default {train_default('batch_size')})"
    )
    train.add_argument(
        "--lr", type=float, help=f"learning rate (default {train_default('learning_rate')})"
    )
    train.add_argument(
        "--seeds", type=_ints, help=f"comma-separated seeds (default {train_default('seeds')})"
    )
    train.add_argument(
        "--max-seq-length",
        type=int,
        help=f"tokens per text in training (default {train_default('max_seq_length')})",
    )
    train.add_argument(
        "--output", help=f"checkpoint directory (default {train_default('output')}/)"
    )
    train.add_argument(
        "--precision",
        choices=_choices(TrainConfig, "precision"),
        help=f"training precision (default {train_default('precision')}; bfloat16: the trainer's"
        " bf16 mixed precision, fast only where the CPU or GPU computes bf16 natively)",
    )
