"""LongEmbed-style synthetic retrieval: passkey, needle, and needle at controlled depths.

Construction follows LongEmbed: per length L, documents of 0.75 x L words; each document carries
one personalised fact; queries ask for the fact of one document; the score is nDCG@1 (Acc@1).
Everything derives from ``random.Random(seed)``, so a fresh generation equals the shipped one.
"""

from __future__ import annotations

import csv
import gzip
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from lmk_eval.retrieval.beir import RetrievalSplit

LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DEPTHS = tuple(round(i / 10, 1) for i in range(11))
WORDS_PER_TOKEN = 0.75
PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
FIRST_NAMES = (
    "Ada Bruno Celia Dmitri Elena Farid Greta Hiro Imani Jonas Kira Luca Mei Nils Olga Pablo "
    "Quinn Rosa Sami Tara Umar Vera Wren Xavi Yara Zane Amos Bea Cyrus Dalia"
).split()
LAST_NAMES = (
    "Abbott Brennan Castillo Dubois Eriksen Fontaine Garcia Hoffmann Ivanova Jensen Kowalski "
    "Lindqvist Moreau Nakamura Okafor Petrov Quintero Rossi Sato Tanaka Ueda Valdez Weber Xu "
    "Yilmaz Zhang"
).split()


def word_budget(length: int) -> int:
    return int(length * WORDS_PER_TOKEN)


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of a generated task; ``quick`` presets shrink it for a few-minute run."""

    kind: str  # passkey | needle | needle-depth
    lengths: tuple[int, ...] = LENGTHS
    queries: int = 50
    documents: int = 100
    # fits 512 BERT positions whole, so depth is not confounded by truncation
    depth_length: int = 368
    seed: int = 42
    # needle: the 100 candidates of one length share one haystack passage and differ only by their
    # needle and where it sits (LongEmbed's construction, as far as its published curve shows);
    # False is the construction shipped before, a different passage per document
    shared_haystack: bool = True

    def split_names(self) -> list[str]:
        if self.kind == "needle-depth":
            return [depth_split(d) for d in DEPTHS]
        return [f"test_{n}" for n in self.lengths]


def depth_split(depth: float) -> str:
    return f"depth_{int(round(depth * 100)):03d}"


@lru_cache(maxsize=1)
def haystack_words() -> tuple[str, ...]:
    """All words of the bundled public-domain books, in a fixed order."""
    folder = resources.files("lmk_eval") / "data" / "haystack"
    words: list[str] = []
    for name in ("alice_in_wonderland.txt.gz", "peter_pan.txt.gz", "moby_dick.txt.gz"):
        with gzip.open(folder / name, "rt", encoding="utf-8") as f:
            words.extend(f.read().split())
    return tuple(words)


@lru_cache(maxsize=1)
def needles() -> tuple[tuple[str, str], ...]:
    path = resources.files("lmk_eval") / "data" / "synthetic" / "needles.tsv"
    with path.open(encoding="utf-8") as f:
        return tuple((r["needle"], r["question"]) for r in csv.DictReader(f, delimiter="\t"))


def insert_words(haystack: list[str], fact: str, position: int) -> str:
    return " ".join(haystack[:position] + fact.split() + haystack[position:])


def _passkey_split(rng: random.Random, length: int, spec: SyntheticSpec) -> RetrievalSplit:
    people = rng.sample([f"{f} {s}" for f in FIRST_NAMES for s in LAST_NAMES], spec.documents)
    filler = PASSKEY_FILLER.split()
    split = RetrievalSplit()
    for i, person in enumerate(people):
        key = rng.randint(10000, 99999)
        fact = f"{person}'s passkey is {key}. Remember it. {key} is the passkey for {person}."
        room = max(word_budget(length) - len(fact.split()), 0)
        hay = (filler * (room // len(filler) + 1))[:room]
        sentence_ends = [j + 1 for j, w in enumerate(hay) if w.endswith(".")] or [0]
        position = rng.choice([0] + sentence_ends[:-1]) if room else 0
        doc_id = f"passkey-{length}-{i:03d}"
        split.corpus.append({"id": doc_id, "title": "", "text": insert_words(hay, fact, position)})
        if i < spec.queries:
            qid = f"q-{doc_id}"
            split.queries.append({"id": qid, "text": f"What is the pass key for {person}?"})
            split.qrels[qid] = {doc_id: 1}
    return split


def _needle_doc(
    rng: random.Random, fact: str, length: int, depth: float | None, start: int | None = None
) -> str:
    """A haystack of the length's word budget with ``fact`` inserted; ``start`` fixes the passage
    (shared by the candidates of one length), else each document draws its own."""
    words = haystack_words()
    room = max(word_budget(length) - len(fact.split()), 0)
    if start is None:
        start = rng.randrange(0, len(words) - room)
    hay = list(words[start : start + room])
    if depth is None:
        position = rng.randint(0, room)
    else:
        position = round(depth * room)
    return insert_words(hay, fact, position)


def _needle_split(
    rng: random.Random, length: int, spec: SyntheticSpec, depth: float | None, tag: str
) -> RetrievalSplit:
    chosen = rng.sample(range(len(needles())), spec.documents)
    shared = spec.shared_haystack and depth is None
    start = rng.randrange(0, len(haystack_words()) - word_budget(length)) if shared else None
    split = RetrievalSplit()
    for i, n in enumerate(chosen):
        fact, question = needles()[n]
        doc_id = f"{tag}-{i:03d}"
        split.corpus.append(
            {"id": doc_id, "title": "", "text": _needle_doc(rng, fact, length, depth, start)}
        )
        if i < spec.queries:
            qid = f"q-{doc_id}"
            split.queries.append({"id": qid, "text": question})
            split.qrels[qid] = {doc_id: 1}
    return split


def generate(spec: SyntheticSpec) -> dict[str, RetrievalSplit]:
    """All splits of a synthetic task; identical for identical specs."""
    if spec.documents > len(needles()) and spec.kind != "passkey":
        raise ValueError(f"at most {len(needles())} documents: one needle each")
    rng = random.Random(f"{spec.kind}:{spec.seed}")
    if spec.kind == "needle-depth":
        return {
            depth_split(d): _needle_split(
                rng, spec.depth_length, spec, d, f"depth{int(d * 100):03d}"
            )
            for d in DEPTHS
        }
    out = {}
    for length in spec.lengths:
        if spec.kind == "passkey":
            out[f"test_{length}"] = _passkey_split(rng, length, spec)
        else:
            out[f"test_{length}"] = _needle_split(rng, length, spec, None, f"needle-{length}")
    return out
