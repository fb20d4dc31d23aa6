"""What a sweep will cost, before any forward pass: documents, queries and tokens per cell, the
forward passes its poolings share, and wall time and peak memory here and on a named accelerator.

Local data (bundled tasks, BEIR folders) is counted exactly: the run's own path drives an encoder
that tokenises instead of running the model, so identical windows are counted once as the encoder
shares them; mteb's hub tasks are estimated from the descriptive statistics mteb ships with each
task (4 characters a token). Time here is the counted tokens at a throughput measured on the task's
own texts on this device and dtype; on an accelerator, from its bf16 peak, the model's FLOPs per
token and an assumed utilisation (both printed). Cells already stored are not planned.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.hardware import ACCELERATORS, flops_per_token
from lmk_eval.config.options import EncodeOptions
from lmk_eval.config.sweep import Sweep
from lmk_eval.model.batching import text_slices
from lmk_eval.model.encoding import Encoded, TextEncoder
from lmk_eval.reading.strategies import strategy_of
from lmk_eval.retrieval.mteb_tasks import CHARS_PER_TOKEN, count
from lmk_eval.retrieval.search import CHUNK_BYTES
from lmk_eval.run.plan import CellGroup
from lmk_eval.run.sweeps import checkpoints
from lmk_eval.store.records import Cell

UTILISATION = 0.4  # assumed share of an accelerator's bf16 peak an encoder forward reaches
TOP_K = 1000  # mteb's retrieval keeps this many documents per query
SAMPLE_TEXTS = 64  # the task's own texts a throughput is measured on, at most ...
SAMPLE_TOKENS = 8_192  # ... and about this many tokens of them


@dataclass
class GroupCost:
    """One cell group (a model on a task, every length and reading the sweep asks for): what its
    shared pass puts through the model, and what separate passes would."""

    model: str
    task: str
    lengths: list[int]
    readings: list[str]
    cells: int
    tokenisations: int  # ways the group's cells read a text (one per length, reading, scheme)
    documents: int
    queries: int
    tokens: int  # through the model: distinct inputs of documents and queries, run once
    counted: str  # "counted" (local data) or "estimated" (mteb's statistics)
    separate: int = 0  # tokens if each length and reading ran its own pass (as before sharing)
    unshared: int = 0  # tokens if every cell ran its own forward pass
    seconds_here: float | None = None
    seconds_on: float | None = None
    peak_gb: float = 0.0
    notes: list[str] = field(default_factory=list)


def _local_counts(group: CellGroup) -> tuple[int, int]:
    """Documents and queries of a local task's scored splits."""
    splits = group.task.build()._load_splits()  # noqa: SLF001 - our own local task class, as it loads its data
    return (
        sum(len(splits[n].corpus) for n in group.task.splits),
        sum(len(splits[n].queries) for n in group.task.splits),
    )


def _hub_counts(group: CellGroup, max_length: int, strategy: str) -> tuple[int, int, int, float]:
    """Documents, queries, tokens and the documents' mean characters from mteb's descriptive
    statistics of what the cell scores (its splits and subsets; an aggregate's sub-tasks)."""
    found = group.task.statistics() if group.task.statistics else None
    if not found:
        raise LmkEvalError(
            f"mteb ships no statistics for {group.task.name} ({'+'.join(group.task.splits)});"
            " cannot estimate it (plan a local copy of its data instead)"
        )
    docs = queries = tokens = characters = 0
    for s in found:
        doc_stats, query_stats = (
            s.get("documents_text_statistics") or {},
            s.get("queries_text_statistics") or {},
        )
        n_docs, n_queries = (
            count(s, "num_documents", doc_stats),
            count(s, "num_queries", query_stats),
        )
        doc_tokens = doc_stats.get("average_text_length", 0) / CHARS_PER_TOKEN
        query_tokens = query_stats.get("average_text_length", 0) / CHARS_PER_TOKEN
        per_doc = (
            doc_tokens
            if strategy_of(strategy).reads_past_positions
            else min(doc_tokens, max_length)
        )
        docs, queries = docs + n_docs, queries + n_queries
        tokens += int(n_docs * per_doc + n_queries * min(query_tokens, max_length))
        characters += n_docs * doc_stats.get("average_text_length", 0)
    return docs, queries, tokens, characters / docs if docs else 0.0


WORDS = (
    "the of and to in is was for on that with as by at from his an were are which this be or has had"
    " one their first also its new after who they two her she been other when there all during into"
    " school time may years more most only over city some world would where later up such used many"
    " can state about national out known university united then made"
).split()


def stand_in_texts(characters: float, n: int = SAMPLE_TEXTS) -> list[str]:
    """``n`` different texts of about ``characters`` each, to time a hub task whose documents are
    not loaded by a plan (different, so that no window is shared: a fair throughput)."""
    import random

    out = []
    for i in range(n):
        pick = random.Random(i)
        words, size = [], 0
        while size < max(characters, 1):
            words.append(pick.choice(WORDS))
            size += len(words[-1]) + 1
        out.append(" ".join(words))
    return out


class TokenCounter(TextEncoder):
    """The run's encoder without its model: counts the tokens ``encode_all`` would put through the
    model (identical inputs once per slice, across lengths and readings, as the encoder shares
    them) and answers with random vectors, so that the run's own path (``work.compute_group``:
    mteb, the group's search, its corpus chunks and prompts) drives it and the count is exactly
    the run's. Keeps the texts of its longest call (documents, as a rule) to time the model on."""

    def __init__(self, model: str, options: EncodeOptions, bar) -> None:
        super().__init__(model, options=options, device="cpu")
        self.bar = bar
        self.by_key: dict[tuple, int] = defaultdict(int)  # tokens per tokenisation, run alone
        self.longest: tuple[list[str], str] = ([], "")
        self._random = np.random.default_rng(0)

    def encode_all(self, texts, variants, prompt: str = "") -> Encoded:
        concrete, groups = self.tokenisation_groups(variants)
        for lo, hi in text_slices(texts, self.slice_tokens):
            _windows, _inputs, sharing = self.distinct_inputs(texts[lo:hi], groups, prompt)
            for group, tokens in zip(groups, sharing.group_tokens, strict=True):
                self.by_key[group[0].tokenisation_key()] += tokens
            self._count(sharing)
            self.stats.real_tokens += sharing.distinct_tokens
            self.stats.windows += sharing.distinct
        self.stats.texts += len(texts)
        self.bar.update(len(texts))
        if texts and _mean_length(texts) > _mean_length(self.longest[0]):
            self.longest = (list(texts[:SAMPLE_TEXTS]), prompt)
        dim = self.facts.config.hidden_size
        vectors = {
            c: self._random.standard_normal((len(texts), dim)).astype(np.float32)
            for group in groups
            for c in group
        }
        chunks = {
            c: [v[i : i + 1] for i in range(len(texts))]
            for c, v in vectors.items()
            if c.spec.multi_vector
        }
        return Encoded(
            {v: vectors[c] for v, c in concrete.items()},
            {v: chunks[c] for v, c in concrete.items() if c in chunks},
        )


def _mean_length(texts) -> float:
    return sum(map(len, texts)) / len(texts) if texts else 0.0


def _measured_tokens_per_s(encoder, variants: list, texts: list[str], prompt: str) -> float:
    """Tokens/s of the harness on this device and dtype over the task's own texts (distinct, at
    their own length, read as the group reads them): one warm-up text, then up to about
    ``SAMPLE_TOKENS`` tokens of them."""
    whole = any(v.strategy_spec.windows for v in variants)  # windows read a text to its end
    limit = max(v.max_length or encoder.max_positions for v in variants)
    sample, size = [], 0.0
    for text in texts:
        sample.append(text)
        size += len(text) / CHARS_PER_TOKEN if whole else min(len(text) / CHARS_PER_TOKEN, limit)
        if size >= SAMPLE_TOKENS:
            break
    encoder.encode(sample[:1], variants, prompt)
    started, before = time.perf_counter(), encoder.stats.real_tokens
    encoder.encode(sample, variants, prompt)
    return (encoder.stats.real_tokens - before) / (time.perf_counter() - started)


def estimate(
    sweep: Sweep,
    todo: list[tuple[CellGroup, list[Cell]]],
    on: str | None = None,
    measure: bool = True,
    progress: bool = False,
) -> list[GroupCost]:
    """The cost of every group's cells to compute; nothing is written, no model runs to count.

    Local data is counted exactly: the run's own path (mteb, the group's search, its chunks and
    prompts) drives an encoder that tokenises and counts instead of running the model. Hub tasks
    are estimated from mteb's statistics. Time here: the counted tokens at a throughput measured
    on the task's own texts."""
    from tqdm.auto import tqdm

    from lmk_eval.model import loading as models
    from lmk_eval.run.work import compute_group, quiet_libraries

    if on is not None and on not in ACCELERATORS:
        raise LmkEvalError(f"--on {on!r} is not one of {', '.join(ACCELERATORS)}")
    quiet_libraries()
    out, encoders = [], {}  # a model loads once, whatever it is measured at
    for g, missing in todo:
        # tokenised as its base
        base = sweep.train.base if g.model in checkpoints(sweep) else g.model
        facts = models.inspect_model(models.resolve_model(base), sweep.encode_options())
        concrete = [facts.concrete(c.variant) for c in missing]
        v = max(concrete, key=lambda c: c.max_length)
        keys = list(dict.fromkeys(c.tokenisation_key() for c in concrete))
        readings = list(dict.fromkeys((c.max_length, c.strategy) for c in concrete))
        sample: tuple[list[str], str] = ([], "")
        if g.task.source == "mteb":
            per_reading = {r: _hub_counts(g, *r) for r in readings}
            docs, queries, _tokens, characters = per_reading[(v.max_length, v.strategy)]
            per_key = {
                c.tokenisation_key(): per_reading[(c.max_length, c.strategy)][2] for c in concrete
            }
            # the longest reading's inputs hold the shorter ones' where documents fit
            tokens = max(t for _, _, t, _ in per_reading.values())
            counted, sample = "estimated", (stand_in_texts(characters) if measure else [], "")
        else:
            docs, queries = _local_counts(g)
            lengths = "/".join(str(n) for n in sorted({c.max_length for c in concrete}))
            with tqdm(
                desc=f"counting {g.task.name} @{lengths}",
                unit="text",
                leave=False,
                disable=not progress,
            ) as bar:
                counter = TokenCounter(base, sweep.encode_options(), bar)
                for _payload in compute_group(g, missing, counter):
                    pass
            per_key, counted, sample = counter.by_key, "counted", counter.longest
            tokens = counter.stats.real_tokens
        cost = GroupCost(
            g.model,
            g.task.name,
            sorted({c.max_length for c in concrete}),
            list(dict.fromkeys(c.reading() for c in concrete)),
            len(missing),
            len(keys),
            docs,
            queries,
            tokens,
            counted,
            separate=sum(per_key[k] for k in keys),
            unshared=sum(per_key[c.tokenisation_key()] for c in concrete),
        )
        config = facts.config
        if measure and sample[0]:
            try:
                if base not in encoders:
                    encoders[base] = TextEncoder(
                        base, options=sweep.encode_options(), device=sweep.device
                    )
                speed = _measured_tokens_per_s(
                    encoders[base], list(dict.fromkeys(concrete)), *sample
                )
                cost.seconds_here = cost.tokens / speed
            except LmkEvalError as exc:
                cost.notes.append(f"not measured here: {exc}")
        if on is not None:
            _name, peak = ACCELERATORS[on]
            length = min(v.max_length, facts.tokenisation.max_positions)  # the longest reading
            cost.seconds_on = cost.tokens * flops_per_token(config, length) / (peak * UTILISATION)
        params = flops_per_token(config, 0) / 2 + config.vocab_size * config.hidden_size
        dtype_bytes = 2 if sweep.dtype in ("bfloat16", "float16") else 4
        results = queries * len(missing) * TOP_K * 16  # score and id per kept document
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


def render(
    costs: list[GroupCost],
    on: str | None,
    device: str,
    dtype: str,
    stored: int = 0,
    output: str = "",
) -> str:
    """The plan as a markdown table, with totals and what each number is: counted or estimated."""
    here = f"here ({device}, {dtype})"
    there = f"on {ACCELERATORS[on][0]}" if on else None
    head = [
        "model",
        "task",
        "lengths",
        "readings",
        "cells",
        "readings x schemes",
        "documents",
        "queries",
        "tokens",
        "tokens, a pass each",
        "count",
        f"time {here}",
        *([f"time {there}"] if there else []),
        "peak GB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in costs:
        row = [
            c.model,
            c.task,
            ", ".join(map(str, c.lengths)),
            ", ".join(c.readings),
            str(c.cells),
            str(c.tokenisations),
            f"{c.documents:,}",
            f"{c.queries:,}",
            f"{c.tokens:,}",
            f"{c.separate:,}",
            c.counted,
            _duration(c.seconds_here),
            *([_duration(c.seconds_on)] if there else []),
            f"{c.peak_gb:.1f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    total_tokens = sum(c.tokens for c in costs)
    cells = sum(c.cells for c in costs)
    shared = sum(c.unshared for c in costs)
    lines.append("")
    kept = f"; {stored} already stored in {output} are not planned" if stored else ""
    lines.append(f"{cells} cells to compute in {len(costs)} groups{kept}.")
    if not costs:
        return "\n".join(lines[2:])
    separate = sum(c.separate for c in costs)
    lines.append(
        f"Tokens through the model: {total_tokens:,}, each distinct input once across the lengths and"
        f" readings of a group ({separate:,} if each length and reading ran its own pass, {shared:,}"
        " if every pooling did); 'counted' rows tokenised every text as the run will (identical"
        " inputs once, as the encoder shares them), 'estimated' rows come from mteb's statistics"
        " (there the longest reading's tokens)."
    )
    if all(c.seconds_here is not None for c in costs):
        lines.append(
            f"Time {here}: {_duration(sum(c.seconds_here for c in costs))}, estimated: the tokens at"
            " a throughput measured on each task's own texts (the run adds loading and scoring)."
        )
    if there:
        lines.append(
            f"Time {there}: {_duration(sum(c.seconds_on for c in costs))}, from its bf16 peak"
            f" {ACCELERATORS[on][1] / 1e12:.0f} TFLOP/s at an assumed {UTILISATION:.0%} utilisation"
            " and the model's FLOPs per token (weights and attention)."
        )
    lines.append(
        "Peak memory, estimated: weights + one corpus chunk (64 MB of vectors) + one batch's activations +"
        f" queries x poolings x top-{TOP_K} results; 'estimated' counts come from mteb's"
        f" statistics at {CHARS_PER_TOKEN} characters a token."
    )
    for c in costs:
        lines += [f"- {c.task}: {n}" for n in c.notes]
    return "\n".join(lines)
