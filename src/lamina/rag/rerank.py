"""Optional reranking: a local cross-encoder reads each (question, chunk) pair and re-scores the
fused candidates, which a bi-encoder and BM25 can only approximate.

The model is a sentence-transformers ``CrossEncoder`` folder (nothing is downloaded): a path, or an
imported model (``lamina models import FOLDER --name NAME`` registers a sequence-classification
folder as family ``reranker``). It re-scores the top ``RERANK_DEPTH`` candidates, after access
control and filters have already been applied in the store.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lamina.core.errors import ConfigError
from lamina.hub.registry import is_cross_encoder
from lamina.rag.retrieval import Retrieved

RERANK_DEPTH = 20  # candidates the cross-encoder reads per query

_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


class Reranker:
    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        if not is_cross_encoder(folder):
            raise ConfigError(
                f"{folder} is not a cross-encoder folder (config.json of a *ForSequenceClassification)",
                hint="save one with sentence_transformers.CrossEncoder(…).save(FOLDER) (no downloads)",
            )
        key = str(folder.resolve())
        with _LOCK:
            if key not in _LOADED:
                from sentence_transformers import CrossEncoder

                _LOADED[key] = CrossEncoder(key, device="cpu", local_files_only=True)
        self.model, self.name = _LOADED[key], key

    def rerank(self, query: str, candidates: list[Retrieved], k: int) -> list[Retrieved]:
        """The ``k`` best candidates by the cross-encoder's score (kept as ``score``; the rankings'
        own scores stay in ``dense`` and ``lexical``)."""
        if not candidates:
            return []
        scores = self.model.predict([(query, c.chunk.text) for c in candidates], show_progress_bar=False)
        order = sorted(range(len(candidates)), key=lambda i: (-float(scores[i]), candidates[i].chunk.id))
        return [
            Retrieved(candidates[i].chunk, float(scores[i]), candidates[i].dense, candidates[i].lexical)
            for i in order[:k]
        ]


def reranker_folder(ws: Any, ref: str) -> Path:
    """A folder given directly, or the folder of an imported ``reranker`` model."""
    if Path(ref).is_dir():
        return Path(ref)
    from lamina.core.errors import NotFound
    from lamina.hub.registry import model_path

    try:
        version = ws.resolve(ref, kind="model_version")
    except NotFound:
        raise ConfigError(f"{ref!r} is neither a cross-encoder folder nor an imported model") from None
    if version.family != "reranker":
        raise ConfigError(f"{ref} is a {version.family} model, not a reranker")
    return Path(model_path(ws, version))
