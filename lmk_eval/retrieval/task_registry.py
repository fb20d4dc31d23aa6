"""Task specs to mteb tasks: bundled offline data, local BEIR folders, and mteb's own tasks and
benchmarks (``mteb_tasks.py``).

A spec is ``name``, ``name:split1+split2``, ``Name[subset1+subset2]:split`` (mteb's language
subsets), an mteb benchmark (``beir``, ``longembed``, ``BEIR``, ``CoIR``, ...), or a BEIR folder
path (``path[:split]``)."""

from __future__ import annotations

import json
import lzma
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.common.files import atomic_write_bytes
from lmk_eval.common.provenance import digest, files_digest
from lmk_eval.retrieval.beir import RetrievalSplit, beir_files, read_beir_folder
from lmk_eval.retrieval.synthetic import SyntheticSpec
from lmk_eval.retrieval.taskref import TaskRef


def data_dir(name: str) -> Path:
    return Path(str(resources.files("lmk_eval") / "data" / name))


# -- bundled data ----------------------------------------------------------------------------
SYNTHETIC_KINDS = ("passkey", "needle", "needle-depth")
QUICK_LENGTHS = (256, 512, 1024, 2048, 4096)


def synthetic_path(kind: str) -> Path:
    return data_dir("synthetic") / f"{kind}.jsonl.xz"


def write_synthetic(kind: str, splits: dict[str, RetrievalSplit], path: Path) -> None:
    lines = [json.dumps({"split": k, **v.to_json()}, ensure_ascii=False) for k, v in splits.items()]
    atomic_write_bytes(
        path, lzma.compress("\n".join(lines).encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
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


@dataclass(frozen=True)
class Bundled:
    description: str
    loader: Callable[[], dict[str, RetrievalSplit]]
    splits: list[str]
    main_score: str
    # under lmk_eval/data: what the loader reads (its content is the data's identity)
    files: tuple[str, ...]
    # how the loader builds the task from those files; change it when the code changes
    construction: str
    curve: str | None = None  # the published curve (REFERENCE_CURVES) it is calibrated against


_SCIFACT_FILES = ("scifact/corpus.jsonl.gz", "scifact/queries.jsonl.gz", "scifact/qrels/test.tsv")
_QMSUM_FILES = ("qmsum/corpus.jsonl.gz", "qmsum/queries.jsonl.gz", "qmsum/qrels/test.tsv")
_LENGTH_SPLITS = [f"test_{n}" for n in SyntheticSpec("passkey").lengths]
_QUICK_SPLITS = [f"test_{n}" for n in QUICK_LENGTHS]
_DEPTH_SPLITS = SyntheticSpec("needle-depth").split_names()


def _synth(kind: str) -> tuple[str, ...]:
    return (f"synthetic/{kind}.jsonl.xz",)


BUNDLED: dict[str, Bundled] = {
    "scifact": Bundled(
        "BEIR SciFact test (300 claims, 5,183 abstracts)",
        _beir_loader("scifact"),
        ["test"],
        "ndcg_at_10",
        _SCIFACT_FILES,
        "full",
    ),
    "scifact-quick": Bundled(
        "SciFact: first 100 test claims, 400 abstracts (their relevant ones + sampled)",
        _beir_loader("scifact", (100, 400)),
        ["test"],
        "ndcg_at_10",
        _SCIFACT_FILES,
        "subset(100 queries, 400 docs, seed 0)",
    ),
    "qmsum": Bundled(
        "QMSum meetings: 1,534 queries -> 232 transcripts (median ~9k words)",
        _beir_loader("qmsum"),
        ["test"],
        "ndcg_at_10",
        _QMSUM_FILES,
        "full",
    ),
    "qmsum-quick": Bundled(
        "QMSum: first 200 queries, all 232 transcripts",
        _beir_loader("qmsum", (200, 232)),
        ["test"],
        "ndcg_at_10",
        _QMSUM_FILES,
        "subset(200 queries, 232 docs, seed 0)",
    ),
    "passkey": Bundled(
        "LongEmbed-style passkey, 256..32768 tokens, 50 queries x 100 docs/length",
        _synthetic_loader("passkey", False),
        _LENGTH_SPLITS,
        "ndcg_at_1",
        _synth("passkey"),
        "full",
    ),
    "needle": Bundled(
        "LongEmbed-style needle: 100 candidates per length share one public-domain book passage, 256..32768 tokens, 50 x 100",
        _synthetic_loader("needle", False),
        _LENGTH_SPLITS,
        "ndcg_at_1",
        _synth("needle"),
        "full; shared haystack per length",
        curve="needle",
    ),
    "needle-depth": Bundled(
        "needle at depth 0.0, 0.1, ..., 1.0 of 368-token documents (fit whole), 50 x 100",
        _synthetic_loader("needle-depth", False),
        _DEPTH_SPLITS,
        "ndcg_at_1",
        _synth("needle-depth"),
        "full",
    ),
    "passkey-quick": Bundled(
        "passkey, 256..4096 tokens, 20 queries x 30 docs/length",
        _synthetic_loader("passkey", True),
        _QUICK_SPLITS,
        "ndcg_at_1",
        _synth("passkey"),
        "subset(20 queries, 30 docs, seed 0) per length",
    ),
    "needle-quick": Bundled(
        "needle, 256..4096 tokens, 20 queries x 30 docs/length",
        _synthetic_loader("needle", True),
        _QUICK_SPLITS,
        "ndcg_at_1",
        _synth("needle"),
        "subset(20 queries, 30 docs, seed 0) per length; shared haystack per length",
        curve="needle",
    ),
    "needle-depth-quick": Bundled(
        "needle at 11 depths of 368-token documents, 10 x 10 per depth",
        _synthetic_loader("needle-depth", True),
        _DEPTH_SPLITS,
        "ndcg_at_1",
        _synth("needle-depth"),
        "subset(10 queries, 10 docs, seed 0) per depth",
    ),
}


# Published curves the bundled stand-ins are calibrated against: mteb's results for the same model
# and setting on the real LongEmbed task (nDCG@1 x100 per document length).
REFERENCE_CURVES = {
    "needle": {
        "label": "LongEmbed needle, all-MiniLM-L6-v2 mean@256 (mteb's published results)",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "scores": {256: 70, 512: 44, 1024: 24, 2048: 12, 4096: 4, 8192: 4, 16384: 0, 32768: 2},
    },
}


def reference_curve(task: str, construction: str | None) -> dict | None:
    """The published curve a bundled task (by its name in a run) is calibrated against, for data
    built as the task builds it now (``construction``, as its cells record it)."""
    bundled = BUNDLED.get(task)
    if bundled is None or bundled.curve is None or construction != bundled.construction:
        return None
    return REFERENCE_CURVES[bundled.curve]


def _bundled_identity(name: str) -> Callable[[], dict]:
    def identity() -> dict:
        b = BUNDLED[name]
        root = data_dir("")
        return {
            "kind": "bundled",
            "files": files_digest(root, [root / f for f in b.files]),
            "construction": b.construction,
        }

    return identity


def _build_local(loader, main_score: str, description: str):
    def make(ref: TaskRef):
        from lmk_eval.retrieval.local_tasks import local_task

        return local_task(
            ref.name, loader, list(ref.splits), description=description, main_score=main_score
        )

    return make


def _bundled(name: str, splits: tuple[str, ...] | None = None) -> TaskRef:
    b = BUNDLED[name]
    unknown = set(splits or ()) - set(b.splits)
    if unknown:
        raise LmkEvalError(
            f"task '{name}' has no split {', '.join(sorted(unknown))}; it has {', '.join(b.splits)}"
        )
    chosen = tuple(s for s in b.splits if s in set(splits or b.splits))  # the task's own order
    return TaskRef(
        name,
        "bundled",
        chosen,
        _build_local(b.loader, b.main_score, b.description),
        _bundled_identity(name),
    )


def _folder(path: str, split: str) -> TaskRef:
    folder = Path(path).expanduser().resolve()
    read_beir_folder(folder, split)  # validate now, before any model loads

    def identity() -> dict:
        return {"kind": "folder", "files": files_digest(folder, beir_files(folder, split))}

    return TaskRef(
        folder.name,
        os.path.normpath(path),
        (split,),
        _build_local(
            lambda: {split: read_beir_folder(folder, split)},
            "ndcg_at_10",
            f"local BEIR folder {folder}",
        ),
        identity,
    )


def disambiguate(refs: list[TaskRef]) -> dict[tuple, TaskRef]:
    """spec_key -> the ref under a name no other task of the sweep (or bundled task) has: a local
    folder named like a bundled task, or like another folder, gets '@' and a hash of its path."""
    out: dict[tuple, TaskRef] = {}
    by_name: dict[str, set[tuple]] = {}
    named_by: dict[tuple, tuple[str, ...]] = {}  # a task named alone and by a benchmark: both
    for r in refs:
        by_name.setdefault(r.name, set()).add(r.spec_key)
        named_by[r.spec_key] = tuple(dict.fromkeys([*named_by.get(r.spec_key, ()), *r.benchmarks]))
    for r in refs:
        r = replace(r, benchmarks=named_by[r.spec_key])
        clash = r.name in BUNDLED or len(by_name[r.name]) > 1
        if r.source not in ("bundled", "mteb") and clash:
            out[r.spec_key] = replace(r, name=f"{r.name}@{digest(r.source, 6)}", base_name=r.name)
        else:
            out[r.spec_key] = r
    return out


# -- specs -----------------------------------------------------------------------------------
SPEC = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<subsets>[^\[\]]*)\])?(?::(?P<splits>[^:]*))?$")


def unknown_task_message(name: str) -> str:
    return (
        f"unknown task '{name}': not a bundled task ({', '.join(BUNDLED)}), not an mteb task or"
        " benchmark (beir, longembed, BEIR, LongEmbed, ...) and not an existing folder;"
        " see `lmk-eval tasks`"
    )


def _parts(spec: str) -> tuple[str, tuple[str, ...] | None, tuple[str, ...] | None]:
    """(name, subsets, splits) of ``Name[sub1+sub2]:split1+split2``; a folder path keeps its
    colons but the last."""
    found = SPEC.match(spec)
    if found is None or (
        found.group("subsets") is not None and not found.group("subsets").strip("+")
    ):
        raise LmkEvalError(
            f"task spec '{spec}' is not NAME, NAME:split1+split2 or NAME[subset1+subset2]:split;"
            " see `lmk-eval tasks`"
        )

    def listed(text: str | None) -> tuple[str, ...] | None:
        return (tuple(x for x in text.split("+") if x) or None) if text is not None else None

    return found.group("name"), listed(found.group("subsets")), listed(found.group("splits"))


def resolve(spec: str) -> list[TaskRef]:
    """``name``, ``name:split1+split2``, ``Name[subsets]:splits``, an mteb benchmark, or a BEIR
    folder path (``path[:split]``)."""
    from lmk_eval.retrieval import mteb_tasks

    name, subsets, splits = _parts(spec)
    local = (
        name in BUNDLED or Path(name).expanduser().exists() or "/" in name or name.startswith(".")
    )
    if subsets is not None and local:
        raise LmkEvalError(
            f"task '{name}' has no subsets: [..] picks the language subsets of an mteb task"
        )
    if name in BUNDLED:
        return [_bundled(name, splits)]
    if local:
        if not Path(name).expanduser().is_dir():
            raise LmkEvalError(f"task folder '{name}' does not exist")
        return [_folder(name, splits[0] if splits else "test")]
    found = mteb_tasks.resolve(name, splits, subsets)
    if found is None:
        raise LmkEvalError(unknown_task_message(name))
    return found


def resolve_all(specs: list[str]) -> list[TaskRef]:
    out: list[TaskRef] = []
    for spec in specs:
        out.extend(resolve(spec))
    return out
