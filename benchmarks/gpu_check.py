"""The prepared GPU check: one command, a few minutes, what lmk-eval's encoder does on a device.

    python benchmarks/gpu_check.py                      # on a GPU machine: cuda, full-size models
    python benchmarks/gpu_check.py --device cpu --tiny  # the smoke test (tests/test_gpu_check.py)

No weights travel: both models are randomly initialised from their configs, all-MiniLM-L6-v2's
(BERT, 6 layers, hidden 384, 512 positions) and ModernBERT-base's (22 layers, hidden 768, 8,192
positions), with a WordPiece tokenizer trained here on the bundled haystack books. Random weights
make the scores meaningless and the speed, memory and dtype agreement real. Per model, at 512 and
8,192 tokens (MiniLM reads 8,192 tokens in 512-token windows):

  1. tokens/s of the raw forward (pre-built batches) and of the harness (``TextEncoder.encode``:
     tokenise, batch, pad, forward, pool), float32 vs bfloat16, and the share of the device's
     measured bf16 matmul peak the harness reaches (FLOPs per token from the config);
  2. peak device memory of the harness run against the token budget it chose from free memory;
  3. the embeddings in float32 vs bfloat16, as the cosine per text (min and mean), for every
     pooling that runs without a trained checkpoint.

It imports torch, transformers, tokenizers, numpy and lmk_eval's encoder (which needs pydantic),
never mteb or what mteb brings (datasets, pytrec_eval; the smoke test checks). The H200 image has
no pydantic: carry its wheels as the device README says (pydantic, pydantic-core, annotated-types,
typing-inspection). Writes a markdown report and its JSON beside it (``--output``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import forward_tokens_per_s, matmul_peak  # noqa: E402
from lmk_eval.common.hardware import bytes_per_token, cpu_description, flops_per_token  # noqa: E402
from lmk_eval.config.options import EncodeOptions  # noqa: E402
from lmk_eval.config.variants import make_variant  # noqa: E402
from lmk_eval.model.batching import pad_windows, token_budget_batches  # noqa: E402
from lmk_eval.model.encoding import TextEncoder  # noqa: E402
from lmk_eval.pooling.registry import POOLINGS  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DTYPES = ("float32", "bfloat16")
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def book_words() -> list[str]:
    with gzip.open(
        resources.files("lmk_eval") / "data" / "haystack" / "moby_dick.txt.gz", "rt"
    ) as f:
        return f.read().split()


def wordpiece(words: list[str], vocab: int):
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP]) trained on ``words``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    chunks = (" ".join(words[i : i + 1000]) for i in range(0, len(words), 1000))
    tok.train_from_iterator(
        chunks,
        trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )


def build_models(root: Path, tiny: bool) -> dict[str, Path]:
    """Random-weight MiniLM and ModernBERT-base directories (config, weights, tokenizer)."""
    from transformers import BertConfig, BertModel, ModernBertConfig, ModernBertModel

    words = book_words()
    tokenizer = wordpiece(words, 2000 if tiny else 30522)
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    size = TINY if tiny else {}
    minilm = BertConfig(
        **{
            "hidden_size": 384,
            "intermediate_size": 1536,
            "num_hidden_layers": 6,
            "num_attention_heads": 12,
            "max_position_embeddings": 512,
            **ids,
            **size,
        }
    )
    modernbert = ModernBertConfig(
        **ids,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        max_position_embeddings=8192,
        **size,
    )
    out = {}
    torch.manual_seed(0)
    for name, model in (
        ("minilm", BertModel(minilm)),
        ("modernbert-base", ModernBertModel(modernbert)),
    ):
        folder = root / name
        model.eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        out[name] = folder
    return out


def texts_of(tokens: int, count: int) -> list[str]:
    """``count`` distinct texts of at least ``tokens`` tokens each (about 1.3 WordPiece tokens a word)."""
    words = book_words()
    n = int(tokens / 1.1) + 8
    return [" ".join(words[(i * 997) % (len(words) - n) :][:n]) for i in range(count)]


def variant_for(model_name: str, pooling: str, length: int):
    strategy = "window" if model_name == "minilm" and length > 512 else "truncate"
    return make_variant(pooling, max_length=length, strategy=strategy)


def speed(encoder: TextEncoder, texts: list[str], variant) -> dict:
    """Raw forward and harness tokens/s on the same inputs, and the harness run's peak memory."""
    device = encoder.device
    windows = encoder.tokenisation.windows(texts, variant)
    batches = [
        pad_windows(b, w)[:2] for w, b in token_budget_batches(windows, encoder.token_budget)
    ]
    encoder.encode(texts[:2], [variant])  # warm-up: kernels, allocator
    raw = max(forward_tokens_per_s(encoder.model, batches, device) for _ in range(2))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    before = encoder.stats.real_tokens
    started = time.perf_counter()
    encoder.encode(texts, [variant])
    harness_s = time.perf_counter() - started
    tokens = encoder.stats.real_tokens - before
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "tokens": tokens,
        "raw_tok_s": raw,
        "harness_tok_s": tokens / harness_s,
        "peak_bytes": peak,
    }


def agreement(
    encoders: dict[str, TextEncoder], texts: list[str], model_name: str, length: int
) -> dict:
    """Cosine of float32 and bfloat16 embeddings per text, for every pooling without a checkpoint."""
    poolings = [p for p, spec in POOLINGS.items() if not spec.needs_checkpoint and p != "native"]
    variants = [variant_for(model_name, p, length) for p in poolings]
    vectors = {d: e.encode(texts, variants) for d, e in encoders.items()}
    out = {}
    for p, v in zip(poolings, variants, strict=True):
        a, b = vectors["float32"][v], vectors["bfloat16"][v]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)
        out[p] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out


def run(device: str, tiny: bool, tokens_per_case: int) -> dict:
    lengths = (128, 1024) if tiny else (512, 8192)
    facts = {
        "device": torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else cpu_description(),
        "torch": torch.__version__,
        "tiny": tiny,
        "lengths": lengths,
    }
    if device.startswith("cuda"):
        facts["free_bytes"], facts["total_bytes"] = torch.cuda.mem_get_info(torch.device(device))
    size = 1024 if tiny or not device.startswith("cuda") else 8192
    facts["bf16_peak"] = matmul_peak(torch.bfloat16, device, sizes=(size,))
    rows, cosines = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in build_models(Path(tmp), tiny).items():
            encoders = {
                d: TextEncoder(str(folder), options=EncodeOptions(dtype=d), device=device).load()
                for d in DTYPES
            }
            for length in lengths:
                variant = variant_for(name, "mean", length)
                texts = texts_of(length, max(2, tokens_per_case // length))
                for dtype, encoder in encoders.items():
                    r = speed(encoder, texts, variant)
                    config = encoder.model.config
                    window = min(length, encoder.max_positions)
                    r.update(
                        model=name,
                        length=length,
                        dtype=dtype,
                        token_budget=encoder.token_budget,
                        budget_bytes=encoder.token_budget * bytes_per_token(config, dtype, window),
                        flops_per_token=flops_per_token(config, window),
                    )
                    r["share_of_bf16_peak"] = (
                        r["harness_tok_s"] * r["flops_per_token"] / facts["bf16_peak"]
                    )
                    rows.append(r)
                    print(
                        f"{name} @{length} {dtype}: raw {r['raw_tok_s']:,.0f} tok/s, harness "
                        f"{r['harness_tok_s']:,.0f} tok/s, peak {r['peak_bytes'] / 2**30:.2f} GiB",
                        flush=True,
                    )
                cosines[f"{name}@{length}"] = agreement(encoders, texts[:8], name, length)
            del encoders
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return {"facts": facts, "speed": rows, "cosine": cosines}


def render(result: dict) -> str:
    f = result["facts"]
    lines = [
        "# GPU check",
        "",
        f"`benchmarks/gpu_check.py` on **{f['device']}**, torch {f['torch']}"
        f"{' (tiny configs: a smoke run, not a measurement)' if f['tiny'] else ''}; measured bf16 matmul peak"
        f" {f['bf16_peak'] / 1e12:,.1f} TFLOP/s"
        + (
            f"; {f['free_bytes'] / 2**30:.1f} of {f['total_bytes'] / 2**30:.1f}"
            " GiB free at the start"
            if "free_bytes" in f
            else ""
        )
        + ". Random-weight models from their configs.",
        "",
        "| model | tokens | dtype | raw forward tok/s | harness tok/s | harness / raw | share of bf16 peak"
        " | token budget | peak memory | budget's estimate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["speed"]:
        lines.append(
            f"| {r['model']} | {r['length']:,} | {r['dtype']} | {r['raw_tok_s']:,.0f} | {r['harness_tok_s']:,.0f}"
            f" | {r['harness_tok_s'] / r['raw_tok_s']:.2f} | {r['share_of_bf16_peak']:.1%} | {r['token_budget']:,}"
            f" | {r['peak_bytes'] / 2**30:.2f} GiB | {r['budget_bytes'] / 2**30:.2f} GiB |"
        )
    lines += [
        "",
        "Embeddings float32 vs bfloat16: 1 - cosine per text over 8 texts (largest / mean):",
        "",
        "| pooling | " + " | ".join(result["cosine"]) + " |",
        "|---|" + "---|" * len(result["cosine"]),
    ]
    poolings = next(iter(result["cosine"].values()))
    for p in poolings:
        cells = [
            f"{1 - c[p]['min']:.1e} / {1 - c[p]['mean']:.1e}" for c in result["cosine"].values()
        ]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cuda, cuda:N or cpu (default: cuda when torch sees one)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="2-layer, 32-wide configs at 128 / 1,024 tokens"
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="tokens per measured case (default 1,000,000 on cuda, 8,192 tiny, 65,536 otherwise)",
    )
    parser.add_argument(
        "--output",
        default=str(Path(os.environ.get("OUT") or ROOT / "reports") / "gpu-check.md"),
        help="markdown report; its JSON goes beside it (default: $OUT/ or reports/)",
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: torch {torch.__version__} sees no CUDA device; run with --device cpu",
            file=sys.stderr,
        )
        return 2
    tokens = args.tokens or (
        8192 if args.tiny else 1_000_000 if args.device.startswith("cuda") else 65_536
    )
    result = run(args.device, args.tiny, tokens)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(f"written {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
