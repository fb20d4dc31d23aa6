"""``lmk-eval``: list poolings and tasks, run sweeps, write reports, gate CI on a baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmk_eval.cli.parser import build_parser
from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.options import RayOptions
from lmk_eval.config.variants import (
    ATTENTION_SCALES,
    GRANULARITIES,
    PLACEMENTS,
    POOLINGS,
    STRATEGIES,
)


def cmd_list() -> int:
    from lmk_eval.pooling.registry import POOLINGS as REGISTRY

    width = max(map(len, [*POOLINGS, *GRANULARITIES, *STRATEGIES, *PLACEMENTS]))
    merges = {name: p.under_window for name, p in REGISTRY.items()}
    for title, table in (
        ("poolings", POOLINGS),
        ("granularities (lmk, multi_cls)", GRANULARITIES),
        ("landmark placements (lmk)", PLACEMENTS),
        ("context strategies", STRATEGIES),
        ("attention scales (--attention-scale)", ATTENTION_SCALES),
        ("under --strategy window: how a text's windows become one vector", merges),
    ):
        print(f"{title}:")
        for name, text in table.items():
            print(f"  {name:<{width}}  {text}")
    return 0


def cmd_tasks() -> int:
    from lmk_eval.retrieval.mteb_tasks import ALIASES, LONG_CONTEXT_CHARS
    from lmk_eval.retrieval.task_registry import BUNDLED

    print("bundled (offline):")
    width = max(map(len, BUNDLED))
    for name, task in BUNDLED.items():
        print(f"  {name:<{width}}  {task.description}")
    print("mteb tasks and benchmarks (need the Hugging Face hub, or its cache offline):")
    for alias in ("beir", "longembed"):
        print(f"  {alias:<{width}}  mteb's benchmark {ALIASES[alias]}")
    print(
        "  any mteb benchmark of retrieval tasks (BEIR, LongEmbed, CoIR, 'BRIGHT (long)', NanoBEIR, ...)"
    )
    print(
        "  any mteb retrieval or reranking task; aggregates (CQADupstackRetrieval) run their sub-tasks"
    )
    print(
        "  NAME:split1+split2 picks splits, NAME[en+de] language subsets: MultiLongDocRetrieval[en]:test"
    )
    print("local folders: a path to a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv);")
    print("  PATH:split picks another qrels file")
    print(
        f"context: long where the documents evaluated average {LONG_CONTEXT_CHARS:,} characters or more (mteb's statistics"
    )
    print("  for its tasks; the documents themselves for bundled data and folders), else short")
    return 0


TRAIN_FLAGS = {
    "base": "base",
    "pooling": "poolings",
    "data": "data",
    "split": "split",
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "seeds": "seeds",
    "max_seq_length": "max_seq_length",
    "output": "output",
    "precision": "precision",
}


def cmd_run(args: argparse.Namespace) -> int:
    from lmk_eval.cli.flags import sweep_from_args
    from lmk_eval.run.executors import make_executor
    from lmk_eval.run.runner import run_sweep

    sweep = sweep_from_args(args)
    if args.dry_run:
        return cmd_plan(args, sweep)
    output = Path(args.output or f"results/{sweep.name}")
    reports = Path(args.report_dir)
    if not args.no_report:
        from lmk_eval.report import check_report_paths

        check_report_paths(output, reports)
    executor = make_executor(args.executor, progress=not args.no_progress, ray=_ray_options(args))
    summary = run_sweep(
        sweep, output, executor, recompute=args.recompute, progress=not args.no_progress, log=_info
    )
    _info(
        f"{summary.computed} cells computed, {summary.total} in store, {summary.seconds:.1f}s"
        f" -> {output / 'scores.csv'}"
    )
    if not args.no_report:
        from lmk_eval.report import write_report

        path = write_report(output, reports, baseline=sweep.baseline)  # None: the sweep's default
        _info(f"report: {path}")
    return 0


def _ray_options(args: argparse.Namespace) -> RayOptions:
    """The Ray flags as one typed value; an unset --ray-timeout takes the model's default."""
    given = {
        "address": args.ray_address,
        "cpus": args.ray_cpus,
        "encoders": args.encoders,
        "timeout": args.ray_timeout,
        "show_logs": args.ray_logs or None,
    }
    return RayOptions(**{k: v for k, v in given.items() if v is not None})


def cmd_plan(args: argparse.Namespace, sweep=None) -> int:
    from lmk_eval.cli.flags import sweep_from_args
    from lmk_eval.common.hardware import default_device, resolve_dtype
    from lmk_eval.run.costs import estimate, render
    from lmk_eval.run.identities import preflight
    from lmk_eval.run.runner import pending, resolve_sweep
    from lmk_eval.store.cells import RunStore

    sweep = sweep or sweep_from_args(args)
    resolved = resolve_sweep(sweep)  # as the run resolves it: what it would refuse is refused here
    preflight(sweep, resolved.groups)
    output = Path(args.output or f"results/{sweep.name}")
    # what the run would compute, no more
    todo = pending(RunStore(output), resolved, args.recompute)
    stored = len(resolved.cells) - sum(len(missing) for _, missing in todo)
    device = sweep.device or default_device()
    dtype, _why = resolve_dtype(sweep.dtype, device)
    # counting a long sweep shows a bar meanwhile
    print(f"plan of sweep '{sweep.name}':", flush=True)
    costs = estimate(
        sweep, todo, on=args.on, measure=not args.no_measure, progress=not args.no_progress
    )
    print(render(costs, args.on, device, dtype, stored, str(output)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lmk_eval.report import write_report

    path = write_report(
        Path(args.run_dir), Path(args.output_dir), baseline=args.baseline, latex=args.latex
    )
    _info(f"report: {path}" + (f" and {path.with_suffix('.tex')}" if args.latex else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lmk_eval.report.export import export_run

    out = export_run(Path(args.run_dir), Path(args.mteb_results))
    _info(
        f"export: {len(out.files)} result files, {len(out.experiments)} experiments (one per model"
        f" revision and variant) under {Path(args.mteb_results) / 'results'}"
    )
    for name, revision, experiment in sorted(out.experiments):
        _info(f"  {name} @ {revision}: experiments/{experiment}")
    for task, why in sorted(out.not_on_leaderboard.items()):
        _info(f"  {task}: mteb's leaderboard will not show it ({why})")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from lmk_eval.report.gate import write_baseline

    n = write_baseline(Path(args.run_dir), Path(args.output))
    _info(f"baseline of {n} scores written to {args.output}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from lmk_eval.report.gate import check

    failures, checked = check(
        Path(args.run_dir),
        Path(args.baseline),
        args.tolerance,
        both_ways=args.both_ways,
        decimals=args.decimals,
    )
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
    from lmk_eval.retrieval.synthetic import SyntheticSpec, generate
    from lmk_eval.retrieval.task_registry import (
        SYNTHETIC_KINDS,
        load_synthetic,
        synthetic_path,
        write_synthetic,
    )

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
    from lmk_eval.common.files import check_writable_dir
    from lmk_eval.config.training import train_config
    from lmk_eval.train.trainer import train_all

    given = {
        key: getattr(args, flag)
        for flag, key in TRAIN_FLAGS.items()
        if getattr(args, flag) is not None
    }
    flags = {key: "--" + flag.replace("_", "-") for flag, key in TRAIN_FLAGS.items()}
    cfg = train_config(given, "lmk-eval train", flags)
    check_writable_dir(Path(cfg.output), "checkpoint folder")
    for r in train_all(cfg, log=_info):
        last = f"{r['losses'][-1]:.4f}" if r["losses"] else "n/a"
        _info(f"{r['pooling']} seed {r['seed']}: last loss {last}, {r['seconds']}s")
    return 0


def _info(message: str) -> None:
    print(message, file=sys.stderr)


COMMANDS = {
    "list": cmd_list,
    "tasks": cmd_tasks,
    "run": cmd_run,
    "report": cmd_report,
    "baseline": cmd_baseline,
    "check": cmd_check,
    "generate": cmd_generate,
    "export": cmd_export,
    "train": cmd_train,
    "plan": cmd_plan,
}


def main(argv: list[str] | None = None) -> int:
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
    # a disk that filled up or vanished mid-run: one line, and not a failed gate's 1
    except OSError as exc:
        where = f" '{exc.filename}'" if exc.filename else ""
        print(
            f"lmk-eval: error: cannot read or write{where}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print(f"lmk-eval: interrupted; {interrupted_hint(args)}", file=sys.stderr)
        return 130


def interrupted_hint(args: argparse.Namespace) -> str:
    """What to run after Ctrl-C: under --recompute the same command would start over."""
    if args.command not in ("run", "train"):
        return "nothing was written"
    if getattr(args, "recompute", False):
        return (
            "the cells this run recomputed are saved (those they replaced are in set-aside/);"
            " run the same command without --recompute to resume"
        )
    what = "checkpoints" if args.command == "train" else "cells"
    return f"finished {what} are saved, run the same command to resume"


if __name__ == "__main__":
    sys.exit(main())
