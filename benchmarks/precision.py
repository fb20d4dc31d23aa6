"""Precision benchmark: the machine's own peak, and how close the harness comes to it, per dtype.

Run with ``make benchmark`` (or ``.venv/bin/python benchmarks/precision.py``); writes
``reports/precision.md``. Numbers live here and in the report, never in tests. Per dtype:

  1. the measured matrix-multiply peak (best of several 2048 x 2048 and 4096 x 4096 matmuls);
  2. the model's FLOPs per token at the benchmark's lengths, from its config: per layer
     8 h^2 (Q, K, V, output projections) + 4 h i (feed-forward) + 4 L h (scores and weighted sum);
  3. raw AutoModel forward vs the harness's encode (tokenise + forward + pool) on the same
     512- and 256-token inputs, as tokens/s and effective GFLOP/s, and the ratio to the peak;
  4. the quick suite end to end (`lmk-eval run --config quick`) per dtype: wall time and the
     largest |difference| of any main score from float32;
  5. full SciFact, mean pooling at 256 tokens, per dtype, against the reference 0.6451.

The device is named in the report; on a GPU machine the same script measures the GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import forward_tokens_per_s, matmul_peak  # noqa: E402
from lmk_eval.common.hardware import (  # noqa: E402
    cpu_description,
    cpu_flags,
    default_device,
    flops_per_token,
    resolve_dtype,
    torch_dtype,
)
from lmk_eval.config.options import EncodeOptions  # noqa: E402
from lmk_eval.config.variants import make_variant  # noqa: E402
from lmk_eval.model.batching import pad_windows, token_budget_batches  # noqa: E402
from lmk_eval.model.encoding import TextEncoder  # noqa: E402

SCIFACT_REFERENCE = 0.6451


def haystack_texts(n: int, words: int) -> list[str]:
    from lmk_eval.retrieval.synthetic import haystack_words

    hay = haystack_words()
    return [" ".join(hay[k * words : (k + 1) * words]) for k in range(n)]


def throughput(encoder: TextEncoder, texts: list[str], length: int, repeats: int = 2) -> dict:
    """Raw forward and harness tokens/s on the same windows (mean pooling, truncated), each the
    best of ``repeats`` runs after a warm-up pass, alternating so neither runs cold."""
    variant = make_variant("mean", max_length=length)
    windows = encoder.tokenisation.windows(texts, variant)
    batches = [
        pad_windows(b, w)[:2] for w, b in token_budget_batches(windows, encoder.token_budget)
    ]
    real = sum(int(m.sum()) for _, m in batches)

    def raw_pass() -> float:
        return forward_tokens_per_s(encoder.model, batches, encoder.device)

    def harness_pass() -> float:
        started = time.perf_counter()
        encoder.encode(texts, [variant])
        return real / (time.perf_counter() - started)

    raw_pass()  # warm-up: kernels, caches, allocator
    raw, harness = 0.0, 0.0
    for _ in range(repeats):
        raw = max(raw, raw_pass())
        harness = max(harness, harness_pass())
    return {"raw": raw, "harness": harness, "tokens": real}


def run_suite(
    config: str | None, dtype: str, out: Path, flags: dict | None = None
) -> tuple[float, dict]:
    """Wall time and main scores of a sweep computed afresh at ``dtype``."""
    from lmk_eval.config.sweep import read_sweep_file
    from lmk_eval.report.gate import main_scores
    from lmk_eval.run.runner import run_sweep
    from lmk_eval.run.sweeps import sweep_from_dict

    data, name, where = read_sweep_file(config) if config else (flags, flags["name"], "flags")
    sweep = sweep_from_dict({**data, "dtype": dtype}, name, where)  # validated once, dtype in
    started = time.perf_counter()
    run_sweep(sweep, out, progress=False, log=lambda m: None)
    return time.perf_counter() - started, main_scores(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,bfloat16", help="dtypes to compare")
    parser.add_argument(
        "--parts",
        default="throughput,suite,scifact",
        help="what to measure now; the rest is read from the last run's JSON",
    )
    parser.add_argument("--output", default=str(ROOT / "reports" / "precision.md"))
    args = parser.parse_args()
    device = default_device()
    dtypes, parts = args.dtypes.split(","), set(args.parts.split(","))
    auto, why = resolve_dtype("auto", device)
    name = torch.cuda.get_device_name() if device == "cuda" else cpu_description()
    cache = Path(args.output).with_suffix(".json")
    saved = (
        json.loads(cache.read_text())
        if cache.exists() and parts != {"throughput", "suite", "scifact"}
        else {}
    )
    rows, suite, scifact = saved.get("rows", []), saved.get("suite", {}), saved.get("scifact", {})
    if "throughput" in parts:
        rows = []
    texts = haystack_texts(96, 420)  # ~560 tokens each: every input fills 512 positions
    for dtype in dtypes:
        if "throughput" in parts:
            peak = matmul_peak(torch_dtype(dtype), device) / 1e9  # GFLOP/s
            encoder = TextEncoder(None, options=EncodeOptions(dtype=dtype)).load()
            config = encoder.model.config
            for length in (512, 256):
                t = throughput(encoder, texts, length)
                fpt = flops_per_token(config, length)
                rows.append(
                    [
                        dtype,
                        f"{peak:,.0f}",
                        str(length),
                        f"{fpt / 1e6:.1f}",
                        f"{t['raw']:,.0f}",
                        f"{t['harness']:,.0f}",
                        f"{t['harness'] / t['raw']:.3f}",
                        f"{t['harness'] * fpt / 1e9:,.1f}",
                        f"{t['harness'] * fpt / 1e9 / peak:.1%}",
                    ]
                )
                print(" | ".join(rows[-1]), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            if "suite" in parts:
                suite[dtype] = run_suite("quick", dtype, Path(tmp) / "quick")
                print(f"quick suite {dtype}: {suite[dtype][0]:.1f} s", flush=True)
            if "scifact" in parts:
                flags = {
                    "name": "scifact-mean",
                    "poolings": ["mean"],
                    "tasks": ["scifact"],
                    "max_length": [256],
                }
                scifact[dtype] = run_suite(None, dtype, Path(tmp) / "scifact", flags)
                print(f"scifact {dtype}: {next(iter(scifact[dtype][1].values())):.4f}", flush=True)
    cache.write_text(json.dumps({"rows": rows, "suite": suite, "scifact": scifact}, indent=1))
    write_report(Path(args.output), device, name, auto, why, dtypes, rows, suite, scifact)


def _per_task(scores: dict[str, float]) -> dict[str, float]:
    """model|task|pooling|length|strategy -> mean over splits (the key's last field)."""
    groups: dict[str, list[float]] = {}
    for key, value in sorted(scores.items()):
        groups.setdefault(key.rsplit("|", 1)[0], []).append(value)
    return {k: sum(v) / len(v) for k, v in groups.items()}


def write_report(path, device, name, auto, why, dtypes, rows, suite, scifact) -> None:
    base = dtypes[0]
    lines = [
        "# Precision benchmark",
        "",
        f"Device: **{device}, {name}**; torch {torch.__version__}. CPU flags relevant to bf16:"
        f" {', '.join(sorted(f for f in cpu_flags() if 'bf16' in f or 'amx' in f)) or 'none'}."
        f" `--dtype auto` picks **{auto}** here: {why}.",
        "",
        "Written by `benchmarks/precision.py`. FLOPs per token from the model's config (per layer"
        " 8h² + 4hi + 4Lh); effective GFLOP/s = harness tokens/s x FLOPs per token; peak = best"
        " measured 2048² / 4096² matmul in that dtype.",
        "",
        "| dtype | matmul peak GFLOP/s | input tokens | MFLOP/token | raw forward tok/s | harness tok/s"
        " | harness / raw | harness GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Quick suite end to end (`lmk-eval run --config quick`, computed afresh):",
        "",
        "| dtype | wall time | vs " + base + " | largest |Δ| of a task's main score (mean over"
        " its splits) | largest |Δ| of one split's score |",
        "|---|---|---|---|---|",
    ]
    for dtype in dtypes:
        seconds, scores = suite[dtype]
        split_delta = max(abs(scores[k] - suite[base][1][k]) for k in scores)
        task_delta = max(
            abs(a - b)
            for a, b in zip(
                _per_task(scores).values(), _per_task(suite[base][1]).values(), strict=True
            )
        )
        lines.append(
            f"| {dtype} | {seconds:.1f} s | {suite[base][0] / seconds:.2f} x | {task_delta:.4f}"
            f" | {split_delta:.4f} |"
        )
    lines += [
        "",
        "A split of the quick suite has 10 to 100 queries, so one query answered differently"
        " moves its score by 0.01 to 0.1; a task's main score averages its splits.",
    ]
    if scifact:
        lines += [
            "",
            f"Full SciFact test, mean pooling, 256 tokens (reference {SCIFACT_REFERENCE}):",
            "",
            "| dtype | nDCG@10 | vs reference | wall time |",
            "|---|---|---|---|",
        ]
        for dtype in dtypes:
            seconds, scores = scifact[dtype]
            value = next(iter(scores.values()))
            lines.append(
                f"| {dtype} | {value:.4f} | {value - SCIFACT_REFERENCE:+.4f} | {seconds / 60:.1f} min |"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
