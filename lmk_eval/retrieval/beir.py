"""BEIR-layout data: reading and validating folders, and serving them to mteb as retrieval tasks.

Validation runs before any model is loaded: every malformed line, unknown id, empty text and
duplicate id is reported with its file and line number.
"""

from __future__ import annotations

import functools
import gzip
import json
import lzma
import math
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmk_eval.common.errors import LmkEvalError

MAX_PROBLEMS_SHOWN = 3


@dataclass
class RetrievalSplit:
    """One evaluation split: documents, queries and graded relevance, all ids as str."""

    corpus: list[dict] = field(default_factory=list)  # {"id", "title", "text"}
    queries: list[dict] = field(default_factory=list)  # {"id", "text"}
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"corpus": self.corpus, "queries": self.queries, "qrels": self.qrels}

    @classmethod
    def from_json(cls, d: dict) -> RetrievalSplit:
        return cls(d["corpus"], d["queries"], d["qrels"])


def open_text(path: Path):
    """Open .jsonl/.tsv/.txt, or the same compressed with .gz or .xz, as UTF-8 text."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


READ_ERRORS = (UnicodeDecodeError, EOFError, OSError, zlib.error, lzma.LZMAError)


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; undecodable or corrupt files become one clear line."""
    n = 0
    try:
        with open_text(path) as f:
            for n, line in enumerate(f, start=1):
                yield n, line
    except READ_ERRORS as exc:
        if isinstance(exc, UnicodeDecodeError):
            why = f"is not UTF-8 text (near line {n + 1})"
        elif isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.strerror:
            why = f"cannot be read ({exc.strerror})"
        else:
            why = f"is a corrupt or truncated {path.suffix} file (near line {n + 1})"
        raise LmkEvalError(f"'{path}' {why}; fix or replace the file") from None


def find_file(folder: Path, name: str) -> Path | None:
    for candidate in (name, name + ".gz", name + ".xz"):
        if (folder / candidate).exists():
            return folder / candidate
    return None


class _Problems:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.items: list[str] = []

    def add(self, path: Path, line: int, what: str) -> None:
        self.items.append(f"{path.relative_to(self.folder)} line {line}: {what}")

    def raise_if_any(self) -> None:
        if self.items:
            shown = "; ".join(self.items[:MAX_PROBLEMS_SHOWN])
            more = len(self.items) - MAX_PROBLEMS_SHOWN
            tail = f" (and {more} more)" if more > 0 else ""
            raise LmkEvalError(f"invalid BEIR folder {self.folder}: {shown}{tail}; fix and re-run")


def _read_jsonl(path: Path, problems: _Problems, *, with_title: bool) -> dict[str, dict]:
    records: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(path, n, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict) or "_id" not in obj:
            problems.add(path, n, 'missing "_id"')
            continue
        doc_id = str(obj["_id"])
        title = obj.get("title") or ""
        text = obj.get("text")
        if not isinstance(text, str) or not isinstance(title, str):
            problems.add(path, n, f'"text"/"title" of \'{doc_id}\' must be strings')
            continue
        if blank(text) and not (with_title and not blank(title)):
            problems.add(path, n, f"empty text for '{doc_id}'")
            continue
        if doc_id in first_line:
            problems.add(path, n, f"duplicate _id '{doc_id}' (first on line {first_line[doc_id]})")
            continue
        first_line[doc_id] = n
        records[doc_id] = (
            {"id": doc_id, "title": title, "text": text}
            if with_title
            else {
                "id": doc_id,
                "text": text,
            }
        )
    return records


def blank(text: str) -> bool:
    """Nothing a reader would see: whitespace and invisible format characters (zero-width space
    and joiners, BOM, soft hyphen: Unicode category Cf) only."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def _read_qrels(path: Path, problems: _Problems, queries: dict, corpus: dict) -> dict:
    qrels: dict[str, dict[str, int]] = {}
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if n == 1 and parts[0].lower() in {"query-id", "query_id", "qid"}:
            continue
        if len(parts) != 3:
            problems.add(path, n, f"expected 3 tab-separated fields, got {len(parts)}")
            continue
        qid, did, score = parts
        value = relevance_grade(score)
        if value is None:
            problems.add(path, n, f"score '{score}' is not an integer relevance grade")
            continue
        if qid not in queries:
            problems.add(path, n, f"unknown query-id '{qid}'")
            continue
        if did not in corpus:
            problems.add(path, n, f"unknown corpus-id '{did}'")
            continue
        qrels.setdefault(qid, {})[did] = value
    return qrels


def relevance_grade(text: str) -> int | None:
    """A qrels score as an int ('2', '2.0'); None for anything else ('0.5', 'inf', 'x')."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def beir_files(folder: Path, split: str) -> list[Path]:
    """The files one split of a BEIR folder reads: corpus, queries and that split's qrels."""
    found = [
        find_file(folder, "corpus.jsonl"),
        find_file(folder, "queries.jsonl"),
        find_file(folder / "qrels", f"{split}.tsv"),
    ]
    return [p for p in found if p is not None]


def available_splits(folder: Path) -> list[str]:
    qdir = folder / "qrels"
    if not qdir.is_dir():
        return []
    names = {p.name.split(".")[0] for p in qdir.iterdir() if ".tsv" in p.name}
    return sorted(names)


def read_beir_folder(folder: str | Path, split: str = "test") -> RetrievalSplit:
    """Load and validate one split; raise LmkEvalError listing the problems found.

    The split read last is kept while its files stay as they were (path, size, modification
    time): a sweep checks a folder before any model work and mteb loads it again to score, and
    the second read is then free. Callers treat the split as read-only.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LmkEvalError(f"BEIR folder '{folder}' does not exist")
    stats = [(str(p), p.stat()) for p in beir_files(folder, split)]
    stamps = tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)
    return _read_split(folder, split, stamps)


@functools.lru_cache(maxsize=1)
def _read_split(folder: Path, split: str, stamps: tuple) -> RetrievalSplit:
    """One split read and checked, for ``read_beir_folder`` (``stamps`` key the cache only)."""
    corpus_path = find_file(folder, "corpus.jsonl")
    queries_path = find_file(folder, "queries.jsonl")
    qrels_path = find_file(folder / "qrels", f"{split}.tsv")
    missing = [
        name
        for name, p in (("corpus.jsonl", corpus_path), ("queries.jsonl", queries_path))
        if p is None
    ]
    if qrels_path is None:
        have = ", ".join(available_splits(folder)) or "none"
        missing.append(f"qrels/{split}.tsv (splits present: {have})")
    if missing:
        raise LmkEvalError(f"BEIR folder '{folder}' lacks {', '.join(missing)}")
    problems = _Problems(folder)
    corpus = _read_jsonl(corpus_path, problems, with_title=True)
    queries = _read_jsonl(queries_path, problems, with_title=False)
    for path, records in ((corpus_path, corpus), (queries_path, queries)):
        if not records and not problems.items:  # else every qrels line would name an unknown id
            raise LmkEvalError(
                f"'{path}' holds no records (empty, or an empty archive); fix or replace the file"
            )
    qrels = _read_qrels(qrels_path, problems, queries, corpus)
    problems.raise_if_any()
    if not qrels:
        raise LmkEvalError(f"BEIR folder '{folder}': qrels/{split}.tsv lists no judgements")
    if not any(grade > 0 for docs in qrels.values() for grade in docs.values()):
        raise LmkEvalError(
            f"BEIR folder '{folder}': qrels/{split}.tsv judges no document relevant (every grade is 0"
            " or less), so every query would score 0; give the split's positive judgements"
        )
    return RetrievalSplit(
        corpus=list(corpus.values()),
        queries=[queries[q] for q in queries if q in qrels],
        qrels=qrels,
    )
