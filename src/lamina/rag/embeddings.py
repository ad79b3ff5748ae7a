"""Embeddings for retrieval: the packaged all-MiniLM-L6-v2 by default, or any local
sentence-transformers folder; batched, bf16 where this CPU has it natively, and cached by content
hash so re-ingesting unchanged text costs nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lamina.core.errors import ConfigError

PACKAGED = "all-MiniLM-L6-v2"


class Embedder:
    """Texts → L2-normalised float32 vectors, one model, one cache file."""

    def __init__(self, model: str = PACKAGED, cache: Path | None = None, batch_size: int = 64) -> None:
        self.name, self.batch_size = model, batch_size
        self._model = _load(model)
        self.dimension = int(self._model.get_embedding_dimension())
        self.tokenizer = self._model.tokenizer
        self.max_tokens = int(self._model.max_seq_length)
        self._cache = _Cache(cache, self.name) if cache is not None else None

    def encode(self, texts: list[str], progress: Any = None, remember: bool = True) -> np.ndarray:
        """(len(texts), dimension) float32; ``progress(n)`` is called as batches finish.
        ``remember=False`` leaves the cache out, for texts that will not come again (traffic)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        cache = self._cache if remember else None
        known = cache.get(keys) if cache is not None else {}
        missing = [i for i, key in enumerate(keys) if key not in known]
        for i, key in enumerate(keys):
            if key in known:
                out[i] = known[key]
        for begin in range(0, len(missing), self.batch_size):
            rows = missing[begin : begin + self.batch_size]
            vectors = self._model.encode(
                [texts[i] for i in rows], batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )  # fmt: skip
            out[rows] = np.asarray(vectors, dtype=np.float32)
            if cache is not None:
                cache.put([keys[i] for i in rows], out[rows])
            if progress is not None:
                progress(len(rows))
        if progress is not None and len(missing) < len(texts):
            progress(len(texts) - len(missing))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def pin_model(ws: Any, model: str) -> str:
    """What a collection records as its embedding model: the packaged name, a local folder, or a
    registered embedding model pinned to its version (``name@vN``), so a later version of that
    model never silently changes how a collection's queries are embedded."""
    if model == PACKAGED or Path(model).is_dir():
        return model
    return str(_registered(ws, model).ref)


def model_source(ws: Any, model: str) -> str:
    """The name or folder ``Embedder`` loads for a collection's recorded model."""
    if model == PACKAGED or Path(model).is_dir():
        return model
    from lamina.hub.registry import model_path

    return str(model_path(ws, _registered(ws, model)))


def registered_model(ws: Any, model: str) -> Any:
    """The model version a collection's recorded model names, or None (packaged, or a folder)."""
    return None if model == PACKAGED or Path(model).is_dir() else _registered(ws, model)


def _registered(ws: Any, ref: str) -> Any:
    from lamina.core.errors import NotFound

    try:
        version = ws.resolve(ref, kind="model_version")
    except NotFound:
        raise ConfigError(
            f"{ref!r} is not {PACKAGED!r}, a local sentence-transformers folder or a registered model",
            hint="import one with 'lamina models import FOLDER --name NAME'; nothing is downloaded",
        ) from None
    if version.family != "embedding":
        raise ConfigError(f"{ref} is a {version.family} model, not an embedding model")
    return version


_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _load(model: str) -> Any:
    with _LOCK:
        if model not in _MODELS:
            _MODELS[model] = _load_uncached(model)
        return _MODELS[model]


def _load_uncached(model: str) -> Any:
    import torch

    from lamina.core.machine import defaults

    if model == PACKAGED:
        from lamina.models.text_encoder import load_encoder

        loaded = load_encoder()
    else:
        folder = Path(model)
        if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
            raise ConfigError(
                f"{model!r} is neither {PACKAGED!r} nor a local sentence-transformers folder",
                hint="pass a folder with modules.json (a saved SentenceTransformer); nothing is downloaded",
            )
        from sentence_transformers import SentenceTransformer

        loaded = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    if defaults().precision == "bf16":  # native bf16 only: emulated bf16 is slower than fp32
        loaded = loaded.to(torch.bfloat16)
    return loaded


class _Cache:
    """sha256(text) → vector, per model, in one SQLite file (one writer at a time)."""

    def __init__(self, path: Path, model: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vector BLOB, "
                         "PRIMARY KEY (model, key))")  # fmt: skip
        self._model = model
        self._lock = threading.Lock()

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for begin in range(0, len(keys), 500):
                part = keys[begin : begin + 500]
                marks = ",".join("?" * len(part))
                sql = f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({marks})"
                rows = self._db.execute(sql, [self._model, *part]).fetchall()
                found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return found

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [
                    (self._model, k, v.astype(np.float32).tobytes())
                    for k, v in zip(keys, vectors, strict=True)
                ],
            )
