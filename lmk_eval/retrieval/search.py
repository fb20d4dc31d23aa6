"""One pass over a corpus for every pooling of a cell group, in memory bounded by a chunk.

mteb scores a retrieval task through a ``SearchProtocol`` (``index`` / ``search``). The group's
first cell to search (the leader) runs mteb's own ``SearchEncoderWrapper`` with chunks sized by
bytes, so queries and documents reach the encoder exactly as mteb prepares them; each chunk (and
the queries) is encoded once for *every* pooling of the group, one forward pass per tokenisation.
Every pooling, the leader too, is ranked by one path here (``TopK``): its queries scored against
each chunk and folded into its top-k (per chunk ``torch.topk`` of top_k + 1, then the top_k
largest (score, document id) pairs overall), which gives what mteb's own search gives; a test holds
the two equal on a corpus full of ties. mteb's wrapper ranks nothing that is used. Scores and
top-k run on the model's device, the queries kept there for the pass. Where the encoder prepares
inputs beside the forward (an accelerator), each encode call tells it the next chunk's texts,
guessed from the corpus rows, so that they are tokenised while this chunk runs (``model.ahead``);
a guess is used only if it is exactly what mteb then brings. Peak memory is
the model, one chunk of vectors and queries x poolings x top_k results, never documents x
poolings x dim. Reranking tasks (a given ``top_ranked``) go through mteb's wrapper alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mteb.models.search_wrappers import SearchEncoderWrapper
from mteb.types import PromptType

from lmk_eval.common.errors import LmkEvalError
from lmk_eval.config.variants import Variant
from lmk_eval.model.encoding import TextEncoder
from lmk_eval.retrieval.mteb_adapter import LmkEncoder, column, model_meta

CHUNK_BYTES = 64 * 2**20  # one corpus chunk's vectors, all poolings together (float32)


def chunk_documents(n_vectors: int, dim: int, budget: int = CHUNK_BYTES) -> int:
    """Documents per corpus chunk so that vectors per document (over all poolings) x chunk x dim
    x 4 bytes stays within budget."""
    return max(1, budget // (max(1, n_vectors) * max(1, dim) * 4))


def vectors_per_document(variant: Variant) -> int:
    """A pooling's vectors per document: 1, or for a multi-vector pooling its chunks at most
    (max_length / interval; a sentence is counted as 32 tokens)."""
    if not variant.spec.multi_vector:
        return 1
    interval = variant.interval if variant.granularity == "fixed" else 32
    return 1 + (variant.max_length or 512) // interval


@dataclass
class TopK:
    """A pooling's running best documents per query: scores (Q, <=k) float32, ids (Q, <=k) str."""

    k: int
    scores: np.ndarray
    ids: np.ndarray

    @classmethod
    def empty(cls, n_queries: int, k: int) -> TopK:
        return cls(k, np.zeros((n_queries, 0), np.float32), np.zeros((n_queries, 0), object))

    def add(self, chunk_scores: torch.Tensor, chunk_ids: Sequence[str]) -> None:
        """Fold one chunk in: its top k + 1 per query (mteb's ``torch.topk`` call), then keep the
        k largest (score, id) pairs, ties at the cut going to the larger id as in mteb's heap."""
        values, index = torch.topk(
            chunk_scores, min(self.k + 1, chunk_scores.shape[1]), dim=1, largest=True
        )
        ids = np.asarray(chunk_ids, dtype=object)[index.cpu().numpy()]
        scores = np.concatenate([self.scores, values.cpu().numpy().astype(np.float32)], axis=1)
        ids = np.concatenate([self.ids, ids], axis=1)
        if scores.shape[1] <= self.k:
            self.scores, self.ids = scores, ids
            return
        order = np.argsort(-scores, axis=1, kind="stable")
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        tied = np.nonzero(scores[:, self.k - 1] == scores[:, self.k])[0]
        for q in tied:  # rare: equal scores across the cut; the heap keeps the larger ids
            cut = scores[q, self.k - 1]
            above = scores[q] > cut
            at = sorted(ids[q][scores[q] == cut], reverse=True)[: self.k - int(above.sum())]
            ids[q, : self.k] = np.concatenate([ids[q][above], np.asarray(at, dtype=object)])
            scores[q, : self.k] = np.concatenate(
                [scores[q][above], np.full(len(at), cut, np.float32)]
            )
        self.scores, self.ids = scores[:, : self.k], ids[:, : self.k]

    def results(self, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        return {
            qid: dict(zip(self.ids[i].tolist(), self.scores[i].tolist(), strict=True))
            for i, qid in enumerate(query_ids)
        }


class GroupSearch:
    """The shared state of one cell group's searches: who leads each (task, subset, split), the poolings'
    query vectors while the leader's pass runs, and their top-k results until their cells ask."""

    def __init__(
        self, encoder: TextEncoder, variants: Sequence[Variant], chunk_bytes: int = CHUNK_BYTES
    ):
        self.encoder = encoder
        self.chunk_bytes = chunk_bytes
        # variant -> its mteb encoder (prompts, similarity, metadata), answering through this group
        self.adapters = {
            v: LmkEncoder(encoder, v, model_meta(encoder, v), group=self)
            for v in dict.fromkeys(variants)
        }
        self._pass: _Pass | None = None
        self._done: dict[tuple[str, str, str], dict[Variant, dict]] = {}

    def view(self, variant: Variant) -> VariantSearch:
        return VariantSearch(self, variant)

    def leading(self, variant: Variant) -> bool:
        """Whether ``variant``'s search is the pass running now (its encode calls serve everyone)."""
        return self._pass is not None and self._pass.leader == variant

    def encode(self, texts: list[str], prompt: str, prompt_type) -> np.ndarray:
        """The leader's encode call, answered for every pooling of the pass at once; scores and
        top-k on the model's device."""
        pass_ = self._pass
        variants = list(dict.fromkeys([pass_.leader, *pass_.ranked]))
        queries = prompt_type is not None and PromptType(prompt_type) is PromptType.query
        self._expect_next_chunk(texts if not queries else None, variants)
        encoded = self.encoder.encode_all(texts, variants, prompt)
        vectors = encoded.vectors
        if queries:
            pass_.queries = {v: self._on_device(vectors[v]) for v in pass_.ranked}
            pass_.top = {v: TopK.empty(len(texts), pass_.top_k) for v in pass_.ranked}
        else:
            for v in pass_.ranked:
                if v in encoded.chunks:  # a document scores as its best chunk
                    scores = self.best_chunk_scores(v, pass_.queries[v], encoded.chunks[v])
                else:
                    scores = torch.as_tensor(
                        self.adapters[v].similarity(pass_.queries[v], self._on_device(vectors[v]))
                    )
                pass_.top[v].add(
                    scores, pass_.document_ids[pass_.offset : pass_.offset + len(texts)]
                )
            pass_.offset += len(texts)
        return vectors[pass_.leader]

    def best_chunk_scores(
        self, variant: Variant, queries: torch.Tensor, chunks: list[np.ndarray]
    ) -> torch.Tensor:
        """(queries, documents): each document's highest similarity over its chunk vectors."""
        sims = torch.as_tensor(
            self.adapters[variant].similarity(queries, self._on_device(np.concatenate(chunks)))
        ).float()
        owners = torch.repeat_interleave(
            torch.arange(len(chunks)), torch.tensor([len(c) for c in chunks])
        ).to(sims.device)
        best = torch.full((sims.shape[0], len(chunks)), float("-inf"), device=sims.device)
        return best.scatter_reduce(1, owners.expand(sims.shape[0], -1), sims, reduce="amax")

    def _on_device(self, vectors: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(vectors).to(self.encoder.device)

    def _expect_next_chunk(self, texts: list[str] | None, variants: list[Variant]) -> None:
        """Tell the encoder which texts mteb's next corpus chunk will bring (after the queries, the
        first), so that they are tokenised ahead: mteb's document text guessed from the corpus
        rows, given up once a chunk has come other than guessed."""
        pass_ = self._pass
        if pass_.corpus is None or not self.encoder.preparer.overlap:
            return
        lo = pass_.offset
        if texts is not None:  # a chunk of documents has come: was it the guess?
            if pass_.guessed is None:
                pass_.guessed = mteb_document_texts(pass_.corpus, lo, lo + len(texts)) == texts
            lo += len(texts)
        if pass_.guessed is not False and lo < len(pass_.corpus):
            upcoming = mteb_document_texts(pass_.corpus, lo, lo + pass_.chunk)
            if upcoming:
                self.encoder.expect(upcoming, variants, pass_.document_prompt)

    def search(
        self,
        variant: Variant,
        corpus,
        queries,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        top_k: int,
        encode_kwargs: dict,
        top_ranked=None,
        num_proc=None,
        **kwargs,
    ):
        # an aggregate's sub-tasks share subset and split
        where = (
            task_metadata.name,
            hf_subset,
            hf_split,
        )
        ready = self._done.get(where, {})
        if variant in ready and top_ranked is None:
            return ready.pop(variant)
        if variant.spec.multi_vector and top_ranked is not None:
            raise LmkEvalError(
                f"{variant.pooling} scores a document by its best chunk; reranking tasks"
                " (a given top_ranked list) are not supported for it yet"
            )
        # every pooling ranked here, the leader first; a reranking task's list is mteb's to rank
        ranked = list(dict.fromkeys([variant, *self.adapters])) if top_ranked is None else []
        dim = self.encoder.facts.config.hidden_size
        per_document = sum(vectors_per_document(v) for v in ranked or [variant])
        chunk = chunk_documents(per_document, dim, self.chunk_bytes)
        wrapper = SearchEncoderWrapper(self.adapters[variant], corpus_chunk_size=chunk)
        wrapper.index(
            corpus,
            task_metadata=task_metadata,
            hf_split=hf_split,
            hf_subset=hf_subset,
            encode_kwargs=encode_kwargs,
            num_proc=num_proc,
        )
        self._pass = _Pass(
            variant,
            ranked,
            top_k,
            column(corpus, "id") if ranked else [],
            corpus=corpus if ranked else None,
            chunk=chunk,
            document_prompt=self.adapters[variant].prompt(task_metadata, PromptType.document),
        )
        try:  # mteb's wrapper drives the pass; its own ranking is used for reranking only (else top_k 1)
            results = wrapper.search(
                queries,
                task_metadata=task_metadata,
                hf_split=hf_split,
                hf_subset=hf_subset,
                top_k=top_k if top_ranked is not None else 1,
                encode_kwargs=encode_kwargs,
                top_ranked=top_ranked,
                num_proc=num_proc,
                **kwargs,
            )
            if ranked:
                query_ids = column(queries, "id")
                found = {v: self._pass.top[v].results(query_ids) for v in ranked}
                results = found.pop(variant)
                self._done.setdefault(where, {}).update(found)
        finally:
            self._pass = None
        return results


@dataclass
class _Pass:
    leader: Variant
    ranked: list[Variant]  # every pooling ranked in this pass (the leader too)
    top_k: int
    document_ids: list[str]
    offset: int = 0
    corpus: Any = None  # the rows mteb cuts its chunks from (to guess the next chunk's texts)
    chunk: int = 0  # documents a chunk
    document_prompt: str = ""
    queries: dict | None = None
    top: dict | None = None
    guessed: bool | None = None  # whether mteb's texts are what mteb_document_texts gives


def mteb_document_texts(corpus, lo: int, hi: int) -> list[str] | None:
    """The texts mteb (2.x) makes of corpus rows lo..hi for the encoder: title and text joined by a
    space and stripped, or the text alone; None for a corpus without text. A guess, checked
    against what mteb brings before it is used."""
    if "text" not in getattr(corpus, "column_names", ()):
        return None
    rows = corpus[lo:hi]
    titles = rows.get("title") or [None] * len(rows["text"])
    return [
        (t + " " + x).strip() if t else x.strip() for t, x in zip(titles, rows["text"], strict=True)
    ]


class VariantSearch:
    """One cell's face to mteb (a ``SearchProtocol``): its variant's results from the group's pass."""

    def __init__(self, group: GroupSearch, variant: Variant) -> None:
        self.group, self.variant = group, variant
        self.mteb_model_meta = group.adapters[variant].mteb_model_meta
        self._corpus = None
        # (task, subset, split) -> the results given to mteb, for per-query scores (no file)
        self.rankings: dict[tuple[str, str, str], dict[str, dict[str, float]]] = {}

    def index(
        self,
        corpus,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        encode_kwargs: dict,
        num_proc: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._corpus = corpus

    def search(
        self,
        queries,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        top_k: int,
        encode_kwargs: dict,
        top_ranked=None,
        num_proc: int | None = None,
        **kwargs: Any,
    ):
        results = self.group.search(
            self.variant,
            self._corpus,
            queries,
            task_metadata=task_metadata,
            hf_split=hf_split,
            hf_subset=hf_subset,
            top_k=top_k,
            encode_kwargs=encode_kwargs,
            top_ranked=top_ranked,
            num_proc=num_proc,
            **kwargs,
        )
        self.rankings[(task_metadata.name, hf_subset, hf_split)] = results
        return results
