"""Where a whole run's time goes, against the raw forward over the same texts.

Run with ``.venv/bin/python benchmarks/end_to_end.py [--documents N] [--profile] [--before DIR]``;
prints a table and writes ``reports/end-to-end.md``. One machine; each measurement a fresh process
with the model loaded before any timing: a random 1-layer BERT of width 384 with MiniLM's tokenizer
(``benchmarks/memory.py``'s), N synthetic documents of 64 tokens and 100 queries (a BEIR folder),
truncated at 64 tokens. ``--before`` an older checkout (``git worktree add``) measures it in turn
with this one.

- raw forward: the texts pre-tokenised (not timed), sorted by length, in batches of the harness's
  token budget, through ``AutoModel`` alone in the run's dtype: the best a run could do;
- a whole run: ``run_sweep`` on that folder (mteb drives the search and scores every cell), for one
  pooling and for six sharing one pass, its tokens through the model (the encoder's count) over its
  wall time; ``--profile`` adds where that time went (cProfile, by the project's stages);
- the host alone: the same run with the model's forward replaced by zeros of the right shape
  (``benchmarks/throughput.py``'s), the seconds a device that computed instantly would still wait;
  on a CPU, where preparation runs in turn with the forward, it bounds the ratio a faster forward
  could reach.

The tokenizer runs as the CLI leaves it (``TOKENIZERS_PARALLELISM`` as set here; unset: every core).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "--code" in sys.argv:  # a measuring child: lmk_eval from the checkout it was given
    sys.path.insert(0, sys.argv[sys.argv.index("--code") + 1])

from benchmarks.memory import POOLINGS, build_corpus, build_model  # noqa: E402
from benchmarks.throughput import zero_forward  # noqa: E402
from benchmarks.timing import forward_tokens_per_s  # noqa: E402
from lmk_eval.common.hardware import cpu_description  # noqa: E402
from lmk_eval.run.executors import LocalEncoders, LocalExecutor  # noqa: E402
from lmk_eval.run.runner import run_sweep  # noqa: E402
from lmk_eval.run.sweeps import sweep_from_dict  # noqa: E402
from lmk_eval.store.cells import atomic_write_text  # noqa: E402

LENGTH = 64
BAR = 0.8
# where a profile's cumulative time is read, by the stage it measures (file:function, summed)
STAGES = {
    "model forward and pooling": ["encoding.py:_forward_and_pool"],
    "tokenise and batch (lmk-eval)": ["ahead.py:_prepare"],
    "corpus rows to texts (mteb's dataloader)": ["_create_dataloaders.py:create_dataloader"],
    "similarity and top-k": ["search.py:add", "abs_encoder.py:similarity"],
    "metrics (mteb's, per-query pytrec_eval)": [
        "retrieval_evaluator.py:evaluate",
        "work.py:per_query_scores",
    ],
    "storing the cell": ["cells.py:save"],
}


def sweep(model: Path, corpus: Path, poolings: list[str], dtype: str):
    return sweep_from_dict(
        {
            "name": "end-to-end",
            "models": [str(model)],
            "poolings": [{"pooling": p} for p in poolings],
            "dtype": dtype,
            "grid": [{"tasks": [str(corpus)], "max_length": [LENGTH]}],
        },
        "end-to-end",
    )


def texts_of(corpus: Path) -> list[str]:
    rows = [json.loads(line) for line in (corpus / "corpus.jsonl").open()]
    rows += [json.loads(line) for line in (corpus / "queries.jsonl").open()]
    return [(r.get("title", "") + " " + r["text"]).strip() for r in rows]


def raw_forward(encoder, texts: list[str]) -> float:
    """Tokens/s of the model alone, texts tokenised beforehand and sorted by length."""
    tokenizer = encoder.tokenisation.tokenizer
    ids = tokenizer(texts, truncation=True, max_length=LENGTH)["input_ids"]
    ids.sort(key=len)
    per_batch = rows_per_batch(encoder)
    batches = []
    for start in range(0, len(ids), per_batch):
        rows = ids[start : start + per_batch]
        width = max(map(len, rows))
        tensor = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            tensor[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        batches.append((tensor, mask))
    return forward_tokens_per_s(encoder.model, batches, str(encoder.device))


def rows_per_batch(encoder) -> int:
    return max(1, encoder.token_budget // LENGTH)


def transformers_as_used(encoder, texts: list[str]) -> float:
    """Tokens/s of the tokenizer and the model as a transformers user runs them: each batch of
    texts (in the corpus's order) tokenised with padding and truncation, then forwarded."""
    tokenizer, model = encoder.tokenisation.tokenizer, encoder.model
    per_batch, real = rows_per_batch(encoder), 0
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), per_batch):
            batch = tokenizer(
                texts[start : start + per_batch],
                padding=True,
                truncation=True,
                max_length=LENGTH,
                return_tensors="pt",
            ).to(encoder.device)
            model(**batch)
            real += int(batch["attention_mask"].sum())
    return real / (time.perf_counter() - started)


def whole_run(s, encoders: LocalEncoders, out: Path, profile: bool) -> dict:
    encoder = encoders(s.models[0])
    before, forward_before = encoder.stats.real_tokens, encoder.stats.forward_seconds
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    run_sweep(s, out, LocalExecutor(encoders=encoders), progress=False, log=lambda m: None)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    tokens = encoder.stats.real_tokens - before
    found = {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "forward_share": (encoder.stats.forward_seconds - forward_before) / seconds,
    }
    if profiler:
        found["stages"] = stages(profiler)
    return found


def stages(profiler: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of each stage's function (the first whose name matches)."""
    table = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    found = {}
    for stage, places in STAGES.items():
        wanted = {tuple(p.split(":")) for p in places}
        found[stage] = sum(
            ct
            for (f, _, n), (_, _, _, ct, _) in table.items()
            if any(f.endswith("/" + file) and n == name for file, name in wanted)
        )
    return found


def measure(args) -> dict:
    """In this (fresh) process, on the code it imported: the raw forward, a whole run of one
    pooling set, the raw forward again; with ``--profile`` a second, profiled run."""
    model, corpus, k = Path(args.one[0]), Path(args.one[1]), int(args.one[2])
    s = sweep(model, corpus, POOLINGS[k], args.dtype)
    encoders = LocalEncoders(s, progress=False)
    encoder = encoders(s.models[0])
    encoder.load()
    import mteb  # noqa: F401  (a one-off ~3 s, like the model load: outside every timing)

    texts = texts_of(corpus)
    raw_forward(encoder, texts[:2000])  # warm up kernels
    # the machine's speed drifts (shared cores): the raw forward just before and after
    raw = [raw_forward(encoder, texts)]
    with tempfile.TemporaryDirectory(prefix="lmk-e2e-run-") as out:
        found = whole_run(s, encoders, Path(out) / "run", profile=False)
        raw.append(raw_forward(encoder, texts))
        found.update(poolings=k, raw=raw, ratio=found["tokens_per_s"] / statistics.mean(raw))
        with zero_forward(encoder.model):
            found["host_seconds"] = whole_run(s, encoders, Path(out) / "host", False)["seconds"]
        if args.profile:  # a second run, profiled: profiling slows what it watches
            again = whole_run(s, encoders, Path(out) / "profiled", profile=True)
            found.update(profiled_seconds=again["seconds"], stages=again["stages"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=80_000)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--profile", action="store_true", help="say where this code's run time went"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (a worktree of an older commit) measured in turn with this one",
    )
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "end-to-end.md")
    parser.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    torch.manual_seed(0)
    rows = []
    codes = [("after", ROOT)] if args.before is None else [("before", args.before), ("after", ROOT)]
    with tempfile.TemporaryDirectory(prefix="lmk-e2e-") as tmp:
        model = build_model(Path(tmp) / "model")
        corpus = build_corpus(Path(tmp) / "corpus", args.documents)
        s = sweep(model, corpus, POOLINGS[1], args.dtype)
        encoder = LocalEncoders(s, progress=False)(s.models[0]).load()
        as_used = transformers_as_used(encoder, texts_of(corpus))
        del encoder
        for k in POOLINGS:
            for label, code in codes:  # in turn, so that both see the machine as it is then
                command = [sys.executable, __file__, "--code", str(code), "--dtype", args.dtype]
                command += ["--one", str(model), str(corpus), str(k)]
                if args.profile and label == "after":
                    command.append("--profile")
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                found = json.loads(done.stdout.strip().splitlines()[-1])
                found.update(code=label, ratio_as_used=found["tokens_per_s"] / as_used)
                rows.append(found)
                print(json.dumps(found), flush=True)
    write_report(args, as_used, rows)


def commit_of(checkout: Path) -> str:
    """The commit a checkout is at, so that a report names what it measured, not a folder."""
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown: not a git checkout"


def write_report(args, as_used: float, rows: list[dict]) -> None:
    before = f" --before {args.before}" if args.before else ""
    lines = [
        "# A whole run against the raw forward",
        "",
        f"`.venv/bin/python benchmarks/end_to_end.py --documents {args.documents}"
        f"{' --profile' if args.profile else ''}{before}` on {datetime.now(UTC):%Y-%m-%d}; CPU:"
        f" {cpu_description()}; dtype {args.dtype}, torch threads {torch.get_num_threads()}."
        f" A random 1-layer BERT of width 384 (MiniLM's tokenizer), {args.documents:,} synthetic"
        f" documents of {LENGTH} tokens and 100 queries. Each measurement is a fresh process"
        " (the model loaded and mteb imported before any timing): the raw forward, a whole run,"
        " the raw forward again. Raw forward: the same texts tokenised beforehand (not timed),"
        " sorted by length, in batches of the harness's token budget, through the model alone;"
        " this machine's speed drifts (its cores are shared), so each run is held against the"
        " mean of the raw forward just before and just after it. A whole run: `run_sweep`"
        " (mteb's search and metrics, every cell stored), its tokens through the model over its"
        " wall time; the forward's share is the model's forward and pooling (the encoder's own"
        " clock) over that wall time. Transformers as used: the same batches of texts, each"
        " tokenised (padding, truncation) and then forwarded, tokenisation timed:"
        f" **{as_used:,.0f} tokens/s** (measured once, first). Bar: a whole run at least {BAR} x"
        " the raw forward's tokens per second. The host alone: the same whole run with the"
        " model's forward replaced by zeros of the right shape, its wall time; on a CPU, where a"
        " run prepares its inputs in turn with the forward, a run takes about tokens / raw + host,"
        f" so the bar holds while the raw forward is at most tokens x {1 - BAR:.1f} / ({BAR} x"
        " host) tokens per second (last column): a faster forward (a CPU with AMX, a GPU) needs"
        " a smaller host. Tokenizer: "
        + (
            f"`TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}`."
            if "TOKENIZERS_PARALLELISM" in os.environ
            else "every core (`TOKENIZERS_PARALLELISM` unset, as the CLI leaves it)."
        )
        + (
            f" `before` is the checkout at {args.before} (commit {commit_of(args.before)}),"
            " measured in turn with this one"
            " (`after`) for each pooling set."
            if args.before
            else ""
        ),
        "",
        "| code | poolings | tokens through the model | wall (s) | tokens/s | raw forward before,"
        " after (tokens/s) | x raw forward | bar | forward's share of the run |"
        " x transformers as used | host alone (s) | bar holds up to a raw forward of (tokens/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['code']} | {r['poolings']} | {r['tokens']:,} | {r['seconds']:.1f}"
            f" | {r['tokens_per_s']:,.0f} | {r['raw'][0]:,.0f}, {r['raw'][1]:,.0f}"
            f" | {r['ratio']:.2f} | {'met' if r['ratio'] >= BAR else 'not met'}"
            f" | {r['forward_share']:.0%} | {r['ratio_as_used']:.2f} | {r['host_seconds']:.1f}"
            f" | {r['tokens'] * (1 - BAR) / (BAR * r['host_seconds']):,.0f} |"
        )
    profiled = [r for r in rows if "stages" in r]
    if profiled:
        lines += [
            "",
            "Where this code's time went: a second run of each, under cProfile (which slows what"
            " it watches: its wall time is given), cumulative seconds of each stage's functions"
            " on the main thread (work on the preparing thread is not counted); the rest is"
            " everything else (reading and checking the corpus, mteb's own bookkeeping):",
            "",
            "| stage | " + " | ".join(f"{r['poolings']} pooling(s)" for r in profiled) + " |",
            "|---|" + "---:|" * len(profiled),
        ]
        for stage in STAGES:
            lines.append(
                f"| {stage} | " + " | ".join(f"{r['stages'][stage]:.1f}" for r in profiled) + " |"
            )
        rest = [r["profiled_seconds"] - sum(r["stages"].values()) for r in profiled]
        lines.append("| the rest | " + " | ".join(f"{x:.1f}" for x in rest) + " |")
        lines.append(
            "| wall, profiled | "
            + " | ".join(f"{r['profiled_seconds']:.1f}" for r in profiled)
            + " |"
        )
    atomic_write_text(args.report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
