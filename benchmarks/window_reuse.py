"""How many tokens the encoder's identical-window reuse saves on each bundled long task.

Run with ``.venv/bin/python benchmarks/window_reuse.py``; prints a table and writes
``reports/window-reuse.md``. Tokenisation only (no model): forward cost is proportional to the
tokens that reach the model, so the ratio is the saving in encoding time.

A window's pooled vector depends on its tokens and markers only, so ``TextEncoder`` runs each
distinct window once (``batching.unique_windows``). LongEmbed-style passkey documents are one
filler passage repeated around the key, so most of their 512-token windows recur.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmk_eval.config.variants import make_variant  # noqa: E402
from lmk_eval.model.batching import unique_windows  # noqa: E402
from lmk_eval.model.encoding import TextEncoder  # noqa: E402
from lmk_eval.retrieval.task_registry import BUNDLED  # noqa: E402
from lmk_eval.store.cells import atomic_write_text  # noqa: E402

TASKS = ["passkey", "needle", "qmsum"]
POOLINGS = ["mean", "lmk"]  # plain and landmark tokenisation differ, so both are counted
MAX_LENGTH = 512


def split_texts(task: str) -> list[list[str]]:
    """Corpus texts per split: mteb hands the encoder one split's corpus at a time."""
    return [
        [(d.get("title", "") + " " + d["text"]).strip() for d in split.corpus]
        for split in BUNDLED[task].loader().values()
    ]


def main() -> None:
    tokenisation = TextEncoder().tokenisation
    rows = []
    for task in TASKS:
        splits = split_texts(task)
        for name in POOLINGS:
            variant = make_variant(name, max_length=MAX_LENGTH, strategy="window")
            total = forwarded = 0
            for texts in splits:
                windows = tokenisation.windows(texts, variant)
                distinct = unique_windows(windows)
                total += sum(len(w.ids) for w in windows)
                forwarded += sum(len(w.ids) for w in distinct)
            rows.append((task, variant.label(), sum(map(len, splits)), total, forwarded))
            print(rows[-1], flush=True)
    lines = [
        "# Identical-window reuse on the bundled long tasks",
        "",
        f"`benchmarks/window_reuse.py`: corpus documents in {MAX_LENGTH}-token windows, packaged"
        f" all-MiniLM-L6-v2 tokenizer; written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "Windows are deduplicated within one split, as mteb hands the encoder one split's corpus",
        "at a time (passkey/needle: 100 documents per length; QMSum: one split of 232).",
        "",
        "| task | pooling | documents | tokens in windows | tokens run | run / all |",
        "|---|---|---|---|---|---|",
    ]
    for task, label, docs, total, forwarded in rows:
        lines.append(
            f"| {task} | {label} | {docs:,} | {total:,} | {forwarded:,} | {forwarded / total:.3f} |"
        )
    path = ROOT / "reports" / "window-reuse.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(path)


if __name__ == "__main__":
    main()
