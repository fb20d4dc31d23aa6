"""Task names to mteb tasks: bundled offline data, mteb's hub tasks, and local BEIR folders."""

from __future__ import annotations

import json
import lzma
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .beir import RetrievalSplit, local_task, read_beir_folder
from .synthetic import SyntheticSpec
from .variants import LmkEvalError

BEIR = (
    "MSMARCO", "TRECCOVID", "NFCorpus", "NQ", "HotpotQA", "FiQA2018", "ArguAna", "Touche2020",
    "CQADupstackRetrieval", "QuoraRetrieval", "DBPedia", "SCIDOCS", "FEVER", "ClimateFEVER", "SciFact",
)  # fmt: skip
LONGEMBED = (
    "LEMBNarrativeQARetrieval", "LEMBQMSumRetrieval", "LEMBWikimQARetrieval",
    "LEMBSummScreenFDRetrieval", "LEMBPasskeyRetrieval", "LEMBNeedleRetrieval",
)  # fmt: skip
ONLINE_GROUPS = {"beir": BEIR, "longembed": LONGEMBED}
ONLINE_ALIASES = {"CQADupstack": "CQADupstackRetrieval", "Quora": "QuoraRetrieval"}


def data_dir(name: str) -> Path:
    return Path(str(resources.files("lmk_eval") / "data" / name))


@dataclass(frozen=True)
class TaskRef:
    """A resolvable task: its name in the results store, context class, and how to build it."""

    name: str
    context: str  # "short" | "long"
    build: Callable[[], object]
    source: str  # "bundled" | "mteb" | path
    splits: tuple[str, ...] | None = None


# -- bundled data ----------------------------------------------------------------------------
SYNTHETIC_KINDS = ("passkey", "needle", "needle-depth")
QUICK_LENGTHS = (256, 512, 1024, 2048, 4096)


def synthetic_path(kind: str) -> Path:
    return data_dir("synthetic") / f"{kind}.jsonl.xz"


def write_synthetic(kind: str, splits: dict[str, RetrievalSplit], path: Path) -> None:
    lines = [json.dumps({"split": k, **v.to_json()}, ensure_ascii=False) for k, v in splits.items()]
    path.write_bytes(
        lzma.compress("\n".join(lines).encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    )


@lru_cache(maxsize=8)
def load_synthetic(kind: str) -> dict[str, RetrievalSplit]:
    """The shipped generation (identical to ``synthetic.generate(SyntheticSpec(kind))``)."""
    with lzma.open(synthetic_path(kind), "rt", encoding="utf-8") as f:
        return {d["split"]: RetrievalSplit.from_json(d) for d in (json.loads(line) for line in f)}


def subset(split: RetrievalSplit, n_queries: int, n_docs: int, seed: int = 0) -> RetrievalSplit:
    """First ``n_queries`` queries, their relevant documents, and distractors up to ``n_docs``."""
    queries = split.queries[:n_queries]
    qrels = {q["id"]: split.qrels[q["id"]] for q in queries}
    relevant = {d for docs in qrels.values() for d in docs}
    others = [d for d in split.corpus if d["id"] not in relevant]
    rng = random.Random(seed)
    extra = rng.sample(others, max(0, min(len(others), n_docs - len(relevant))))
    keep = relevant | {d["id"] for d in extra}
    return RetrievalSplit([d for d in split.corpus if d["id"] in keep], queries, qrels)


def _synthetic_loader(kind: str, quick: bool) -> Callable[[], dict[str, RetrievalSplit]]:
    def load() -> dict[str, RetrievalSplit]:
        splits = load_synthetic(kind)
        if not quick:
            return splits
        if kind == "needle-depth":
            return {k: subset(v, 10, 10) for k, v in splits.items()}
        return {f"test_{n}": subset(splits[f"test_{n}"], 20, 30) for n in QUICK_LENGTHS}

    return load


def _beir_loader(name: str, quick: tuple[int, int] | None = None):
    def load() -> dict[str, RetrievalSplit]:
        split = read_beir_folder(data_dir(name), "test")
        return {"test": subset(split, *quick) if quick else split}

    return load


BUNDLED: dict[str, tuple[str, str, Callable, list[str], str]] = {
    # name: (context, description, loader, splits, main score)
    "scifact": ("short", "BEIR SciFact test (300 claims, 5,183 abstracts)",
                _beir_loader("scifact"), ["test"], "ndcg_at_10"),
    "scifact-quick": ("short", "SciFact: first 100 test claims, 400 abstracts (their relevant ones + sampled)",
                      _beir_loader("scifact", (100, 400)), ["test"], "ndcg_at_10"),
    "qmsum": ("long", "QMSum meetings: 1,534 queries -> 232 transcripts (median ~9k words)",
              _beir_loader("qmsum"), ["test"], "ndcg_at_10"),
    "qmsum-quick": ("long", "QMSum: first 200 queries, all 232 transcripts",
                    _beir_loader("qmsum", (200, 232)), ["test"], "ndcg_at_10"),
    "passkey": ("long", "LongEmbed-style passkey, 256..32768 tokens, 50 queries x 100 docs/length",
                _synthetic_loader("passkey", False), [f"test_{n}" for n in SyntheticSpec("passkey").lengths], "ndcg_at_1"),
    "needle": ("long", "LongEmbed-style needle in public-domain books, 256..32768 tokens, 50 x 100",
               _synthetic_loader("needle", False), [f"test_{n}" for n in SyntheticSpec("needle").lengths], "ndcg_at_1"),
    "needle-depth": ("long", "needle at depth 0.0, 0.1, ..., 1.0 of 368-token documents (fit whole), 50 x 100",
                     _synthetic_loader("needle-depth", False), SyntheticSpec("needle-depth").split_names(), "ndcg_at_1"),
    "passkey-quick": ("long", "passkey, 256..4096 tokens, 20 queries x 30 docs/length",
                      _synthetic_loader("passkey", True), [f"test_{n}" for n in QUICK_LENGTHS], "ndcg_at_1"),
    "needle-quick": ("long", "needle, 256..4096 tokens, 20 queries x 30 docs/length",
                     _synthetic_loader("needle", True), [f"test_{n}" for n in QUICK_LENGTHS], "ndcg_at_1"),
    "needle-depth-quick": ("long", "needle at 11 depths of 368-token documents, 10 x 10 per depth",
                           _synthetic_loader("needle-depth", True), SyntheticSpec("needle-depth").split_names(), "ndcg_at_1"),
}  # fmt: skip


def _bundled(name: str, splits: tuple[str, ...] | None = None) -> TaskRef:
    context, description, loader, all_splits, main = BUNDLED[name]
    unknown = set(splits or ()) - set(all_splits)
    if unknown:
        raise LmkEvalError(
            f"task '{name}' has no split {', '.join(sorted(unknown))}; it has {', '.join(all_splits)}"
        )
    chosen = list(splits or all_splits)
    return TaskRef(
        name,
        context,
        lambda: local_task(name, loader, chosen, description=description, main_score=main),
        "bundled",
        tuple(chosen),
    )


def _folder(path: str, split: str) -> TaskRef:
    folder = Path(path).expanduser().resolve()
    read_beir_folder(folder, split)  # validate now, before any model loads
    name = folder.name

    def build():
        return local_task(
            name,
            lambda: {split: read_beir_folder(folder, split)},
            [split],
            description=f"local BEIR folder {folder}",
        )

    return TaskRef(name, "short", build, str(folder), (split,))


# -- mteb hub tasks --------------------------------------------------------------------------
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def ensure_hub(names: list[str]) -> None:
    """One probe for all hub tasks: fail in one line, naming the offline alternatives."""
    if names and not hub_reachable():
        raise LmkEvalError(
            f"the Hugging Face hub is unreachable, so mteb task(s) {', '.join(names)} cannot be"
            f" downloaded; offline alternatives: {', '.join(BUNDLED)}"
        )


def _online(name: str, splits: tuple[str, ...] | None) -> TaskRef:
    import mteb

    canonical = ONLINE_ALIASES.get(name, name)
    try:
        mteb.get_task(canonical)
    except (KeyError, ValueError):
        raise LmkEvalError(unknown_task_message(name)) from None
    context = "long" if canonical in LONGEMBED else "short"

    def build():
        ensure_hub([canonical])
        kwargs = {"eval_splits": list(splits)} if splits else {}
        return mteb.get_task(canonical, **kwargs)

    return TaskRef(canonical, context, build, "mteb", splits)


def unknown_task_message(name: str) -> str:
    return (
        f"unknown task '{name}': not a bundled task ({', '.join(BUNDLED)}), not a group"
        f" ({', '.join(ONLINE_GROUPS)}), not an mteb task and not an existing folder;"
        " see `lmk-eval tasks`"
    )


def resolve(spec: str) -> list[TaskRef]:
    """``name``, ``name:split1+split2``, a group, or a BEIR folder path (``path[:split]``)."""
    name, _, split_part = spec.partition(":")
    splits = tuple(s for s in split_part.split("+") if s) or None
    if name in BUNDLED:
        return [_bundled(name, splits)]
    if name in ONLINE_GROUPS:
        return [_online(n, None) for n in ONLINE_GROUPS[name]]
    if Path(name).expanduser().exists() or "/" in name or name.startswith("."):
        if not Path(name).expanduser().is_dir():
            raise LmkEvalError(f"task folder '{name}' does not exist")
        return [_folder(name, splits[0] if splits else "test")]
    return [_online(name, splits)]


def resolve_all(specs: list[str]) -> list[TaskRef]:
    out: list[TaskRef] = []
    for spec in specs:
        out.extend(resolve(spec))
    return out
