"""``lmk-eval``: list poolings and tasks, run sweeps, write reports, gate CI on a baseline."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .errors import LmkEvalError
from .variants import ATTENTION_SCALES, GRANULARITIES, PLACEMENTS, POOLINGS, STRATEGIES, Variant

DEFAULT_CONFIG = "quick"
FLAG_POOLINGS = ["cls", "mean", "lmk"]  # --pooling's default for a sweep built from flags
FLAG_TASKS = ["scifact-quick"]
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


def build_parser() -> argparse.ArgumentParser:
    from .executors import EXECUTORS
    from .hardware import ACCELERATORS, CPU_TOKEN_BUDGET, DTYPE_CHOICES
    from .options import EncodeOptions
    from .sweep import GridSpec
    from .train import TrainConfig

    def variant_default(name: str) -> str:
        return _shown(_default(Variant, name))

    def train_default(name: str) -> str:
        return _shown(_default(TrainConfig, name))

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
    run.add_argument(
        "--config",
        help="a sweep TOML file, or the name of a shipped one: ci, quick, paper-offline,"
        f" controlled-minilm, ... (default without flags: {DEFAULT_CONFIG})",
    )
    run.add_argument("--model", help="HF id or local dir; 'default' = packaged all-MiniLM-L6-v2")
    run.add_argument("--pooling", type=_csv,
                     help=f"comma-separated poolings (default {_shown(FLAG_POOLINGS)})")  # fmt: skip
    run.add_argument(
        "--tasks",
        type=_csv,
        help="comma-separated task names or BEIR folders (see `lmk-eval tasks`; default"
        f" {_shown(FLAG_TASKS)})",
    )
    run.add_argument(
        "--max-length", type=_ints,
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
        "--attention-scale", type=_csv,
        help="comma-separated attention scales for inputs longer than the model's positions: none, logn,"
        " temperature:T (default: logn under grouped, recurrent, interpolate, rope-* and self-extend, as"
        " LongEmbed runs them; none under truncate and window, where every input fits)",
    )
    run.add_argument("--se-group", type=int,
                     help="self-extend group size g (default: LongEmbed's Table 6 for the extension ratio: 3 / 5 / 9 up to 2x / 4x / 8x)")  # fmt: skip
    run.add_argument("--se-window", type=int,
                     help="self-extend neighbour window w in tokens (default: Table 6, P/2 / P/4 / P/8 up to 2x / 4x / 8x)")  # fmt: skip
    run.add_argument(
        "--granularity", choices=list(GRANULARITIES),
        help=f"landmark chunking (default {variant_default('granularity')})",
    )
    run.add_argument(
        "--interval", type=int,
        help=f"tokens per chunk for fixed granularity / every-k (default {variant_default('interval')})",
    )
    run.add_argument("--intervals",
                     help=f"choices for variable granularity (default {variant_default('intervals')})")
    run.add_argument("--seed", type=int,
                     help=f"seed for variable granularity (default {variant_default('seed')})")
    run.add_argument("--layers", type=int, help="last layers used by layer_mean and layer_max_cls"
                     f" (default {variant_default('layers')})")
    run.add_argument(
        "--placement",
        choices=list(PLACEMENTS),
        help="lmk: a landmark after each chunk or before it (the authors' decoder script); default"
        f" {variant_default('placement')}",
    )  # fmt: skip
    run.add_argument(
        "--exclude-prompt",
        action="store_true",
        help="pool without the prompt's tokens (sentence-transformers' include_prompt=False)",
    )
    model = run.add_argument_group("how every model is loaded and fed (part of each cell's identity)")
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
    cluster.add_argument("--ray-timeout", type=float, default=60.0,
                         help="seconds to wait for --ray-address to answer before giving up (default 60)")  # fmt: skip
    cluster.add_argument("--ray-logs", action="store_true",
                         help="show Ray's own log lines (default: kept out of the terminal)")  # fmt: skip
    cluster.add_argument(
        "--encoders",
        type=int,
        help="instead of one task per group: run groups in order here and split each corpus over"
        " N model replicas (Ray actors), for a few very large cells",
    )

    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (what `lmk-eval plan` prints) and stop before any work")  # fmt: skip
    plan = sub.add_parser(
        "plan", parents=[run], add_help=False, conflict_handler="resolve",
        help="what a sweep will cost, before any forward pass (same arguments as run)",
        description="Per cell group: documents, queries and tokens (counted for local data, from mteb's"
        " statistics for hub tasks), forward passes shared between poolings, and estimated time and"
        " peak memory here (a short measured forward) and on --on ACCELERATOR. Writes nothing.",
    )  # fmt: skip
    for p in (run, plan):
        p.add_argument("--on", choices=sorted(ACCELERATORS), help="also estimate time on this accelerator")
        p.add_argument("--no-measure", action="store_true",
                       help="skip the short measured forward (no time estimate for this machine)")  # fmt: skip

    report = sub.add_parser("report", help="write reports/<run>.md and plots from a run directory")
    report.add_argument("run_dir", help=RUN_DIR_HELP)
    report.add_argument(
        "--output-dir", default="reports", help="where reports go (default reports/)"
    )
    report.add_argument("--baseline", help="pooling to test against (default: the sweep's)")

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

    train = sub.add_parser(
        "train",
        help="fine-tune one checkpoint per (pooling, seed) from the same base and data",
        description="Matched fine-tuning with sentence-transformers (MultipleNegativesRankingLoss, "
        "in-batch negatives) on a BEIR folder's train split. lmk trains with variable intervals "
        "(32/64/128/256 per text) and is saved for evaluation with a fixed interval. Finished "
        "checkpoints are skipped, so an interrupted run resumes.",
    )
    train.add_argument("--base", help=f"base model (default: {train_default('base')}, the packaged"
                       " all-MiniLM-L6-v2)")  # fmt: skip
    train.add_argument("--pooling", type=_csv,
                       help=f"poolings (default {train_default('poolings')})")  # fmt: skip
    train.add_argument(
        "--data", help="BEIR folder with qrels/<split>.tsv (default: bundled SciFact train split)"
    )
    train.add_argument("--split", help=f"qrels split to train on (default {train_default('split')})")
    train.add_argument("--steps", type=int,
                       help=f"optimiser steps per checkpoint (default {train_default('steps')})")  # fmt: skip
    train.add_argument("--batch-size", type=int,
                       help=f"pairs per batch (default {train_default('batch_size')})")  # fmt: skip
    train.add_argument("--lr", type=float,
                       help=f"learning rate (default {train_default('learning_rate')})")  # fmt: skip
    train.add_argument("--seeds", type=_ints,
                       help=f"comma-separated seeds (default {train_default('seeds')})")  # fmt: skip
    train.add_argument("--max-seq-length", type=int,
                       help=f"tokens per text in training (default {train_default('max_seq_length')})")  # fmt: skip
    train.add_argument("--output",
                       help=f"checkpoint directory (default {train_default('output')}/)")  # fmt: skip
    train.add_argument(
        "--precision",
        choices=_choices(TrainConfig, "precision"),
        help=f"training precision (default {train_default('precision')}; bfloat16: the trainer's"
        " bf16 mixed precision, fast only where the CPU or GPU computes bf16 natively)",
    )

    gen = sub.add_parser(
        "generate", help="regenerate the synthetic tasks and compare with the shipped files"
    )
    gen.add_argument("--write", action="store_true", help="overwrite the shipped files")
    return parser


def cmd_list() -> int:
    from .registry import POOLINGS as REGISTRY

    width = max(map(len, [*POOLINGS, *GRANULARITIES, *STRATEGIES, *PLACEMENTS]))
    merges = {name: p.under_window for name, p in REGISTRY.items()}
    for title, table in (("poolings", POOLINGS), ("granularities (lmk, multi_cls)", GRANULARITIES),
                         ("landmark placements (lmk)", PLACEMENTS),
                         ("context strategies", STRATEGIES),
                         ("attention scales (--attention-scale)", ATTENTION_SCALES),
                         ("under --strategy window: how a text's windows become one vector", merges)):  # fmt: skip
        print(f"{title}:")
        for name, text in table.items():
            print(f"  {name:<{width}}  {text}")
    return 0


def cmd_tasks() -> int:
    from .task_registry import BUNDLED, ONLINE_GROUPS

    print("bundled (offline):")
    width = max(map(len, BUNDLED))
    for name, task in BUNDLED.items():
        print(f"  {name:<{width}}  [{task.context}] {task.description}")
    print("mteb tasks (need the Hugging Face hub):")
    for group, names in ONLINE_GROUPS.items():
        print(f"  {group:<{width}}  {', '.join(names)}")
    print("  any mteb retrieval task name; pick splits with NAME:split1+split2")
    print("local folders: a path to a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv);")
    print("  PATH:split picks another qrels file")
    return 0


POOLING_OPTIONS = ("granularity", "interval", "intervals", "seed", "layers", "placement")
ENCODING_FLAGS = ("query_prompt", "document_prompt", "landmark_token", "attn_implementation", "dtype",
                  "device", "token_budget", "baseline")  # fmt: skip
TRAIN_FLAGS = {"base": "base", "pooling": "poolings", "data": "data", "split": "split",
               "steps": "steps", "batch_size": "batch_size", "lr": "learning_rate", "seeds": "seeds",
               "max_seq_length": "max_seq_length", "output": "output", "precision": "precision"}  # fmt: skip


def _flags_name(tasks: list[str], poolings: list[str]) -> str:
    """A readable name from the first task and the poolings; a long one is cut and ends in a
    hash of the whole, so two long flag sets never share a folder."""
    from .provenance import digest
    from .sweep import NAME_LIMIT

    first = tasks[0].rstrip("/").split("/")[-1].split(":")[0]
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", "-".join([first, "+".join(poolings)])).lstrip("._+-") or "sweep"
    if len(name) <= NAME_LIMIT:
        return name
    return f"{name[: NAME_LIMIT - 9].rstrip('._+-')}-{digest(name, 8)}"


def sweep_dict_from_args(args: argparse.Namespace) -> tuple[dict, str, str]:
    """The sweep the command line asks for as one raw dict (--config, else the flags, else the
    shipped quick sweep) with every flag merged in, its default name and how errors name it."""
    from .sweep import pooling_tables, read_sweep_file

    for flag in ("pooling", "tasks", "max_length", "strategy", "attention_scale"):
        if getattr(args, flag) == []:
            raise LmkEvalError(f"--{flag.replace('_', '-')} lists nothing; give at least one value")
    shaping = {"poolings": args.pooling, "tasks": args.tasks, "max_length": args.max_length,
               "strategy": args.strategy, "attention_scale": args.attention_scale,
               "se_group": args.se_group, "se_window": args.se_window}  # fmt: skip
    if args.config and any(v is not None for k, v in shaping.items() if k != "poolings"):
        raise LmkEvalError(
            "--tasks, --max-length, --strategy, --attention-scale and --se-* build a sweep from flags;"
            " with --config, change its [[grid]] blocks (a copy of the file) instead"
        )
    if args.config or (all(v is None for v in shaping.values()) and args.model is None):
        data, name, where = read_sweep_file(args.config or DEFAULT_CONFIG)
        if args.pooling:
            data = {**data, "poolings": args.pooling}
    else:
        shaping["poolings"] = shaping["poolings"] or FLAG_POOLINGS
        shaping["tasks"] = shaping["tasks"] or FLAG_TASKS
        name = args.name or _flags_name(shaping["tasks"], shaping["poolings"])
        data = {"name": name, **{k: v for k, v in shaping.items() if v is not None}}
        where = "flags"
    options = {k: getattr(args, k) for k in POOLING_OPTIONS if getattr(args, k) is not None}
    if args.exclude_prompt:
        options["include_prompt"] = False
    if options and isinstance(data.get("poolings"), list):
        try:
            data["poolings"] = [{**p, **options} for p in pooling_tables(data["poolings"])]
        except ValueError as exc:
            raise LmkEvalError(f"{where}: poolings: {exc}") from None
    if args.model:
        data["models"] = [args.model]
    data |= {k: getattr(args, k) for k in ENCODING_FLAGS if getattr(args, k) is not None}
    if args.trust_remote_code:
        data["trust_remote_code"] = True
    return data, name, where


def sweep_from_args(args: argparse.Namespace):
    """The sweep of a `run` command line, validated once (see ``sweep_dict_from_args``)."""
    from .sweep import sweep_from_dict

    return sweep_from_dict(*sweep_dict_from_args(args))


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_sweep

    sweep = sweep_from_args(args)
    if args.dry_run:
        return cmd_plan(args, sweep)
    output = Path(args.output or f"results/{sweep.name}")
    reports = Path(args.report_dir)
    if not args.no_report:
        from .report import check_report_paths

        check_report_paths(output, reports)
    summary = run_sweep(sweep, output, recompute=args.recompute, progress=not args.no_progress,
                        log=_info, executor=args.executor, ray_address=args.ray_address,
                        ray_cpus=args.ray_cpus, encoders=args.encoders, ray_timeout=args.ray_timeout,
                        ray_logs=args.ray_logs)  # fmt: skip
    _info(f"{summary.computed} cells computed, {summary.total} in store, {summary.seconds:.1f}s"
          f" -> {output / 'scores.csv'}")  # fmt: skip
    if not args.no_report:
        from .report import write_report

        path = write_report(output, reports, baseline=sweep.baseline)  # None: the sweep's default
        _info(f"report: {path}")
    return 0


def cmd_plan(args: argparse.Namespace, sweep=None) -> int:
    from .costs import estimate, render
    from .hardware import default_device, resolve_dtype
    from .runner import preflight
    from .sweep import plan

    sweep = sweep or sweep_from_args(args)
    groups = plan(sweep)
    preflight(sweep, groups)
    device = sweep.device or default_device()
    dtype, _why = resolve_dtype(sweep.dtype, device)
    print(f"plan of sweep '{sweep.name}':")
    print(render(estimate(sweep, groups, on=args.on, measure=not args.no_measure), args.on, device, dtype))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(Path(args.run_dir), Path(args.output_dir), baseline=args.baseline)
    _info(f"report: {path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .gate import write_baseline

    n = write_baseline(Path(args.run_dir), Path(args.output))
    _info(f"baseline of {n} scores written to {args.output}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .gate import check

    failures, checked = check(Path(args.run_dir), Path(args.baseline), args.tolerance,
                              both_ways=args.both_ways, decimals=args.decimals)  # fmt: skip
    for line in failures:
        print(f"FAIL {line}")
    if args.decimals is not None:
        verdict = f"equal to {args.decimals} decimals"
        summary = f"{len(failures)} of {checked} scores not {verdict}" if failures else ""
    else:
        where = "away from" if args.both_ways else "below"
        verdict = f"within {args.tolerance}"
        summary = f"{len(failures)} of {checked} scores {where} baseline (tol. {args.tolerance})"
    if failures:
        print(f"check: {summary} ({args.baseline})")
        return 1
    print(f"check: all {checked} scores {verdict} of {args.baseline}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .synthetic import SyntheticSpec, generate
    from .task_registry import SYNTHETIC_KINDS, load_synthetic, synthetic_path, write_synthetic

    differ = 0
    for kind in SYNTHETIC_KINDS:
        fresh = generate(SyntheticSpec(kind))
        if args.write:
            write_synthetic(kind, fresh, synthetic_path(kind))
            load_synthetic.cache_clear()
            print(f"{kind}: written to {synthetic_path(kind)}")
            continue
        same = {k: v.to_json() for k, v in fresh.items()} == {
            k: v.to_json() for k, v in load_synthetic(kind).items()
        }
        differ += not same
        print(f"{kind}: {'identical to' if same else 'DIFFERS from'} {synthetic_path(kind)}")
    return 1 if differ else 0


def cmd_train(args: argparse.Namespace) -> int:
    from .files import check_writable_dir
    from .train import train_all, train_config

    given = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items()
             if getattr(args, flag) is not None}  # fmt: skip
    flags = {key: "--" + flag.replace("_", "-") for flag, key in TRAIN_FLAGS.items()}
    cfg = train_config(given, "lmk-eval train", flags)
    check_writable_dir(Path(cfg.output), "checkpoint folder")
    for r in train_all(cfg, log=_info):
        last = f"{r['losses'][-1]:.4f}" if r["losses"] else "n/a"
        _info(f"{r['pooling']} seed {r['seed']}: last loss {last}, {r['seconds']}s")
    return 0


def _info(message: str) -> None:
    print(message, file=sys.stderr)


COMMANDS = {"list": cmd_list, "tasks": cmd_tasks, "run": cmd_run, "report": cmd_report,
            "baseline": cmd_baseline, "check": cmd_check, "generate": cmd_generate,
            "train": cmd_train, "plan": cmd_plan}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    handler = COMMANDS[args.command]
    try:
        return handler() if args.command in ("list", "tasks") else handler(args)
    except LmkEvalError as exc:
        print(f"lmk-eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk that filled up or vanished mid-run: still one line
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"lmk-eval: error: cannot read or write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lmk-eval: interrupted; {interrupted_hint(args)}", file=sys.stderr)
        return 130


def interrupted_hint(args: argparse.Namespace) -> str:
    """What to run after Ctrl-C: under --recompute the same command would start over."""
    if args.command not in ("run", "train"):
        return "nothing was written"
    if getattr(args, "recompute", False):
        return ("the cells this run recomputed are saved (those they replaced are in set-aside/);"
                " run the same command without --recompute to resume")  # fmt: skip
    what = "checkpoints" if args.command == "train" else "cells"
    return f"finished {what} are saved, run the same command to resume"


if __name__ == "__main__":
    sys.exit(main())
