"""What a sweep will cost, before any forward pass: documents, queries and tokens per cell, the
forward passes its poolings share, and wall time and peak memory here and on a named accelerator.

Local data (bundled tasks, BEIR folders) is counted exactly with the harness's own tokenisation;
mteb's hub tasks are estimated from the descriptive statistics mteb ships with each task (4
characters a token). Time here comes from a short measured forward of the model on this device and
dtype; on an accelerator, from its bf16 peak, the model's FLOPs per token and an assumed
utilisation (both printed). Estimates, to decide whether to start: the run measures itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .errors import LmkEvalError
from .hardware import ACCELERATORS, flops_per_token
from .mteb_tasks import CHARS_PER_TOKEN, count
from .plan import CellGroup
from .search import CHUNK_BYTES
from .sweep import Sweep

UTILISATION = 0.4  # assumed share of an accelerator's bf16 peak an encoder forward reaches
TOP_K = 1000  # mteb's retrieval keeps this many documents per query


@dataclass
class GroupCost:
    """One cell group: what it encodes once per tokenisation, shared by its cells."""

    model: str
    task: str
    max_length: int
    strategy: str
    cells: int
    tokenisations: int  # forward passes over the corpus, shared between the cells' poolings
    documents: int
    queries: int
    tokens: int  # through the model: documents and queries, as windows, once per tokenisation
    counted: str  # "counted" (local data) or "estimated" (mteb's statistics)
    unshared: int = 0  # tokens if every cell ran its own forward pass
    seconds_here: float | None = None
    seconds_on: float | None = None
    peak_gb: float = 0.0
    notes: list[str] = field(default_factory=list)


def _local_texts(group: CellGroup) -> tuple[list[str], list[str]]:
    task = group.task.build()
    splits = task._load_splits()  # noqa: SLF001 - our own local task class, as it loads its data
    docs, queries = [], []
    for name in group.task.splits:
        s = splits[name]
        docs += [f"{d.get('title', '')} {d['text']}".strip() for d in s.corpus]
        queries += [q["text"] for q in s.queries]
    return docs, queries


def _hub_counts(group: CellGroup, max_length: int, strategy: str) -> tuple[int, int, int]:
    """Documents, queries and tokens from mteb's descriptive statistics of what the cell scores
    (its splits and subsets; an aggregate's sub-tasks)."""
    found = group.task.statistics() if group.task.statistics else None
    if not found:
        raise LmkEvalError(f"mteb ships no statistics for {group.task.name} ({'+'.join(group.task.splits)});"
                           " cannot estimate it (plan a local copy of its data instead)")  # fmt: skip
    docs = queries = tokens = 0
    for s in found:
        doc_stats, query_stats = s.get("documents_text_statistics") or {}, s.get("queries_text_statistics") or {}
        n_docs, n_queries = count(s, "num_documents", doc_stats), count(s, "num_queries", query_stats)
        doc_tokens = doc_stats.get("average_text_length", 0) / CHARS_PER_TOKEN
        query_tokens = query_stats.get("average_text_length", 0) / CHARS_PER_TOKEN
        per_doc = doc_tokens if strategy != "truncate" else min(doc_tokens, max_length)
        docs, queries = docs + n_docs, queries + n_queries
        tokens += int(n_docs * per_doc + n_queries * min(query_tokens, max_length))
    return docs, queries, tokens


def _measured_tokens_per_s(encoder, max_length: int) -> float:
    """Tokens/s of the harness on this device and dtype: one warm-up, then a few full windows."""
    from .variants import make_variant

    text = "the quick brown fox jumps over the lazy dog " * (max_length // 8 + 1)
    texts = [text] * max(2, min(32, 16_384 // max_length))
    v = make_variant("mean", max_length=max_length)
    encoder.encode(texts[:2], [v])
    started, before = time.perf_counter(), encoder.stats.real_tokens
    encoder.encode(texts, [v])
    return (encoder.stats.real_tokens - before) / (time.perf_counter() - started)


def estimate(sweep: Sweep, groups: list[CellGroup], on: str | None = None,
             measure: bool = True) -> list[GroupCost]:  # fmt: skip
    """Every group's cost; nothing is written, no corpus is encoded."""
    from . import models
    from .encoding import TextEncoder

    if on is not None and on not in ACCELERATORS:
        raise LmkEvalError(f"--on {on!r} is not one of {', '.join(ACCELERATORS)}")
    out, speeds, encoders = [], {}, {}  # a model loads once, whatever the lengths it is measured at
    for g in groups:
        facts = models.inspect_model(models.resolve_model(g.model), sweep.encode_options())
        concrete = [facts.concrete(c.variant) for c in g.cells]
        v = concrete[0]
        by_key = {c.tokenisation_key(): c for c in concrete}  # one forward pass per tokenisation
        if g.task.source == "mteb":
            docs, queries, tokens = _hub_counts(g, v.max_length, v.strategy)
            per_key = dict.fromkeys(by_key, tokens)
            counted = "estimated"
        else:
            doc_texts, query_texts = _local_texts(g)
            docs, queries, counted = len(doc_texts), len(query_texts), "counted"
            per_key = {k: sum(len(w.ids) for w in facts.tokenisation.windows(doc_texts + query_texts, c))
                       for k, c in by_key.items()}  # fmt: skip
        cost = GroupCost(g.model, g.task.name, v.max_length, v.reading(), len(g.cells), len(by_key), docs,
                         queries, sum(per_key.values()), counted,
                         unshared=sum(per_key[c.tokenisation_key()] for c in concrete))  # fmt: skip
        config = facts.config
        if measure:
            key = (g.model, min(v.max_length, facts.tokenisation.max_positions))
            if key not in speeds:
                try:
                    if g.model not in encoders:
                        encoders[g.model] = TextEncoder(g.model, options=sweep.encode_options(), device=sweep.device)
                    speeds[key] = _measured_tokens_per_s(encoders[g.model], key[1])
                except LmkEvalError as exc:
                    speeds[key] = None
                    cost.notes.append(f"not measured here: {exc}")
            if speeds[key]:
                cost.seconds_here = cost.tokens / speeds[key]
        if on is not None:
            _name, peak = ACCELERATORS[on]
            length = min(v.max_length, facts.tokenisation.max_positions)
            cost.seconds_on = cost.tokens * flops_per_token(config, length) / (peak * UTILISATION)
        params = flops_per_token(config, 0) / 2 + config.vocab_size * config.hidden_size
        dtype_bytes = 2 if sweep.dtype in ("bfloat16", "float16") else 4
        results = queries * len(g.cells) * TOP_K * 16  # score and id per kept document
        activations = (sweep.token_budget or 8192) * config.hidden_size * 4 * 12
        cost.peak_gb = (params * dtype_bytes + CHUNK_BYTES + results + activations) / 2**30
        out.append(cost)
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def render(costs: list[GroupCost], on: str | None, device: str, dtype: str) -> str:
    """The plan as a markdown table, with totals and what each estimate assumes."""
    here = f"here ({device}, {dtype})"
    there = f"on {ACCELERATORS[on][0]}" if on else None
    head = ["model", "task", "length", "strategy", "cells", "corpus passes", "documents", "queries", "tokens",
            "count", f"time {here}", *([f"time {there}"] if there else []), "peak GB"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in costs:
        row = [c.model, c.task, str(c.max_length), c.strategy, str(c.cells), str(c.tokenisations), f"{c.documents:,}",
               f"{c.queries:,}", f"{c.tokens:,}", c.counted, _duration(c.seconds_here),
               *([_duration(c.seconds_on)] if there else []), f"{c.peak_gb:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    total_tokens = sum(c.tokens for c in costs)
    cells = sum(c.cells for c in costs)
    shared = sum(c.unshared for c in costs)
    lines.append("")
    lines.append(f"{cells} cells in {len(costs)} groups; {total_tokens:,} tokens through the model"
                 f" ({shared:,} if every pooling ran its own pass).")  # fmt: skip
    if all(c.seconds_here is not None for c in costs):
        lines.append(f"Time {here}: {_duration(sum(c.seconds_here for c in costs))} (measured throughput).")
    if there:
        lines.append(f"Time {there}: {_duration(sum(c.seconds_on for c in costs))}, from its bf16 peak"
                     f" {ACCELERATORS[on][1] / 1e12:.0f} TFLOP/s at an assumed {UTILISATION:.0%} utilisation"
                     " and the model's FLOPs per token (weights and attention).")  # fmt: skip
    lines.append("Peak memory: weights + one corpus chunk (64 MB of vectors) + one batch's activations +"
                 f" queries x poolings x top-{TOP_K} results; 'estimated' counts come from mteb's"
                 f" statistics at {CHARS_PER_TOKEN} characters a token.")  # fmt: skip
    for c in costs:
        lines += [f"- {c.task}: {n}" for n in c.notes]
    return "\n".join(lines)
