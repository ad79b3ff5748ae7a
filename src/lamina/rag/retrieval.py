"""Hybrid retrieval: dense (embeddings) and lexical (BM25) rankings of the same filtered rows, fused.

The fusion is a convex combination of each ranking's scores after min-max normalisation over its
candidates (Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval", 2023), weighted by
``ALPHA`` toward dense. Plain reciprocal-rank fusion throws the scores away and, on SQuAD, loses to
BM25 alone at k = 1; the score combination keeps how *much* better the best candidate is.
``ALPHA`` was chosen on half the SQuAD articles and checked on the other half (bench/rag.py).

Both rankings run with the caller's groups and filters inside the store's query, so fusion only ever
sees chunks the caller may read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.core.errors import ConfigError
from lamina.rag.chunking import Chunk
from lamina.rag.store import Hit, VectorStore

ALPHA = 0.4  # weight of the dense ranking in the fused score (bench/rag.py)
CANDIDATES = 50  # taken from each ranking before fusing
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al.), for comparison only
MODES = ("hybrid", "dense", "lexical", "rrf")


@dataclass(frozen=True, slots=True)
class Retrieved:
    chunk: Chunk
    score: float  # the mode's score (fused for hybrid); higher is better
    dense: float | None = None  # cosine similarity, when the dense ranking had it
    lexical: float | None = None  # BM25, when the lexical ranking had it

    def as_dict(self) -> dict[str, Any]:
        return {**self.chunk.citation(), "score": round(self.score, 6), "dense": self.dense,
                "lexical": self.lexical, "text": self.chunk.text}  # fmt: skip


def retrieve(
    store: VectorStore, embedder: Any, query: str, k: int = 5, *, groups: list[str] | None = None,
    filters: dict[str, Any] | None = None, mode: str = "hybrid", alpha: float = ALPHA,
    candidates: int = CANDIDATES,
) -> list[Retrieved]:  # fmt: skip
    """The ``k`` best chunks for ``query`` among those ``groups`` may read (None: all)."""
    if mode not in MODES:
        raise ConfigError(f"unknown retrieval mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    if not 1 <= k <= 1000:
        raise ConfigError(f"k must be between 1 and 1000, got {k}")
    filters = filters or {}
    depth = max(k, candidates)
    dense = store.dense(embedder.encode_query(query), depth, groups, filters) if mode != "lexical" else []
    lexical = store.lexical(query, depth, groups, filters) if mode != "dense" else []
    if mode == "dense":
        return [Retrieved(h.chunk, h.score, dense=h.score) for h in dense[:k]]
    if mode == "lexical":
        return [Retrieved(h.chunk, h.score, lexical=h.score) for h in lexical[:k]]
    return fuse(dense, lexical, k, alpha=alpha, rrf=mode == "rrf")


def fuse(
    dense: list[Hit], lexical: list[Hit], k: int, *, alpha: float = ALPHA, rrf: bool = False
) -> list[Retrieved]:
    """One ranking from two; a chunk missing from one ranking scores that ranking's floor (0)."""
    chunks = {h.chunk.id: h.chunk for h in [*lexical, *dense]}
    raw_dense = {h.chunk.id: h.score for h in dense}
    raw_lexical = {h.chunk.id: h.score for h in lexical}
    if rrf:
        rank_d = {h.chunk.id: i for i, h in enumerate(dense)}
        rank_l = {h.chunk.id: i for i, h in enumerate(lexical)}
        fused = {cid: sum(1 / (RRF_K + 1 + r[cid]) for r in (rank_d, rank_l) if cid in r) for cid in chunks}
    else:
        norm_d, norm_l = _minmax(raw_dense), _minmax(raw_lexical)
        fused = {cid: alpha * norm_d.get(cid, 0.0) + (1 - alpha) * norm_l.get(cid, 0.0) for cid in chunks}
    best = sorted(fused, key=lambda cid: (-fused[cid], cid))[:k]
    return [Retrieved(chunks[c], fused[c], raw_dense.get(c), raw_lexical.get(c)) for c in best]


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high - low < 1e-12:
        return {cid: 1.0 for cid in scores}
    return {cid: (s - low) / (high - low) for cid, s in scores.items()}
