"""Peak memory of a sweep against corpus size and the number of poolings sharing its forward pass.

Run with ``.venv/bin/python benchmarks/memory.py`` (about 10 minutes on 2 cores); writes
``reports/memory.md``. Each measurement is a fresh process running ``run_sweep`` on a synthetic
BEIR folder (N documents of 64 tokens, 100 queries) with a small random model (1 BERT layer,
width 384, MiniLM's tokenizer), and reports its peak RSS. Not part of the test suite.

``--code DIR`` measures another checkout (a worktree of an older commit, say) for before/after.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOLINGS = {1: ["mean"], 6: ["cls", "mean", "max", "weightedmean", "mean_every_k", "lmk"]}
SIZES = [20_000, 80_000, 320_000]
QUERIES = 100


def build_model(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    sys.path.insert(0, str(ROOT))
    from lmk_eval.model.loading import packaged_model_path

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=384,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_corpus(folder: Path, n_docs: int) -> Path:
    """N documents of ~64 word-piece tokens from a fixed word list, 100 queries with one relevant each."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for i in range(n_docs):
            f.write(
                json.dumps(
                    {"_id": f"d{i}", "title": "", "text": " ".join(rng.choices(words, k=40))}
                )
                + "\n"
            )
    with (folder / "queries.jsonl").open("w") as f, (folder / "qrels" / "test.tsv").open("w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for i in range(QUERIES):
            f.write(json.dumps({"_id": f"q{i}", "text": " ".join(rng.choices(words, k=8))}) + "\n")
            q.write(f"q{i}\td{rng.randrange(n_docs)}\t1\n")
    return folder


def measure_one(code: Path, model: Path, corpus: Path, poolings: list[str], output: Path) -> None:
    """In this (fresh) process: run the sweep, print seconds and peak RSS as JSON."""
    sys.path.insert(0, str(code))
    from lmk_eval.config.sweep import Sweep
    from lmk_eval.run.runner import run_sweep

    sweep = Sweep.model_validate(
        {
            "name": "memory",
            "models": [str(model)],
            "poolings": [{"pooling": p} for p in poolings],
            "grid": [{"tasks": [str(corpus)], "max_length": [64]}],
        }
    )
    started = time.perf_counter()
    run_sweep(sweep, output, progress=False, log=lambda m: None)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="checkout to measure (default: this one)"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument(
        "--label", default="after", help="column name in the report (before / after)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "reports" / "memory.json",
        help="measurements, kept between calls",
    )
    parser.add_argument(
        "--one", nargs=4, metavar=("MODEL", "CORPUS", "POOLINGS", "OUTPUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        model, corpus, poolings, output = args.one
        return measure_one(args.code, Path(model), Path(corpus), poolings.split(","), Path(output))
    found = json.loads(args.json.read_text()) if args.json.exists() else {}
    with tempfile.TemporaryDirectory(prefix="lmk-memory-") as tmp:
        model = build_model(Path(tmp) / "model")
        for n in map(int, args.sizes.split(",")):
            corpus = build_corpus(Path(tmp) / f"corpus-{n}", n)
            for k, poolings in POOLINGS.items():
                out = Path(tmp) / f"run-{n}-{k}"
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--code",
                        str(args.code),
                        "--one",
                        str(model),
                        str(corpus),
                        ",".join(poolings),
                        str(out),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                found.setdefault(args.label, {})[f"{n}x{k}"] = result
                print(
                    f"{args.label}: {n:,} documents x {k} poolings: {result['peak_mb']:,.0f} MB peak RSS,"
                    f" {result['seconds']:.0f} s",
                    flush=True,
                )
    sys.path.insert(0, str(ROOT))
    from lmk_eval.common.hardware import cpu_description

    found["cpu"] = cpu_description()
    args.json.write_text(json.dumps(found, indent=1) + "\n")
    write_report(found, ROOT / "reports" / "memory.md")


def write_report(found: dict, path: Path) -> None:
    labels = [k for k in ("before", "after") if k in found]
    keys = sorted(
        {key for label in labels for key in found[label]},
        key=lambda s: tuple(map(int, s.split("x"))),
    )
    lines = [
        "# Peak memory against corpus size and poolings",
        "",
        "`.venv/bin/python benchmarks/memory.py` (`--code` an older checkout and `--label before` for the"
        " first column): each cell a fresh process running one sweep on a synthetic BEIR folder"
        " (N documents of 64 tokens, 100 queries) with a random 1-layer BERT of width 384 and"
        f" MiniLM's tokenizer, truncated at 64 tokens; peak RSS of that process (wall seconds are in reports/memory.json; other work shared the machine, so they are not a speed figure). CPU: {found.get('cpu')}.",
        "",
        "| documents x poolings | " + " | ".join(f"{x}: peak RSS (MB)" for x in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for key in keys:
        n, k = key.split("x")
        cells = []
        for x in labels:
            r = found[x].get(key)
            cells.append(f"{r['peak_mb']:,.0f}" if r else "")
        lines.append(f"| {int(n):,} x {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Chunks are sized by bytes (64 MB of vectors for all poolings together), so a one-pooling run"
        " encodes six times as many documents per chunk as a six-pooling one and holds more tokenised"
        " text at once: after the change, K = 1 can peak above K = 6.",
        "",
        "Derived (peak RSS):",
        "",
    ]
    for x in labels:
        r = found[x]
        if "20000x6" in r and "80000x6" in r:
            growth = (r["80000x6"]["peak_mb"] - r["20000x6"]["peak_mb"]) / 0.6
            ratio = (
                r["80000x6"]["peak_mb"] / r["80000x1"]["peak_mb"]
                if "80000x1" in r
                else float("nan")
            )
            lines.append(
                f"- {x}: growth per 100k documents with 6 poolings (20k to 80k) {growth:,.0f} MB;"
                f" 80k x 6 is {r['80000x6']['peak_mb'] - r['20000x6']['peak_mb']:,.0f} MB above 20k x 6"
                f" and {ratio:.2f} x the 80k x 1 run"
            )
    for x in labels:
        r = found[x]
        if "320000x6" in r and "20000x6" in r:
            lines.append(
                f"- {x}: 320k x 6 is {r['320000x6']['peak_mb'] - r['20000x6']['peak_mb']:,.0f} MB above 20k x 6"
            )
    missing = [x for x in labels if "320000x6" not in found[x]]
    if missing:
        lines.append(
            f"- not measured at 320k: {', '.join(missing)} (the previous code needs over an hour for it on 2 cores)"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
