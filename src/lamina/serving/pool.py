"""The models a server holds, found by hub reference, following aliases as they move.

Every request names a ref (``shakes@champion``). The pool resolves it in the catalog (at most once
per ``REF_TTL_S`` per ref) and keeps one engine per *version*: when ``champion`` moves, new requests go to an
engine for the new version at once, while requests already running finish on the old engine, which
is closed once it has nothing left to do. No restart, no dropped streams.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lamina.core.catalog import ModelVersion
from lamina.core.errors import LaminaError, NotFound
from lamina.core.machine import defaults
from lamina.core.workspace import Workspace
from lamina.serving.engine import Engine
from lamina.serving.interfaces import TextEngine
from lamina.serving.quantize import resolve_precision

log = logging.getLogger(__name__)
TEXT_FAMILIES = {"causal_lm"}
IMAGE_FAMILIES = {"vae", "gan", "diffusion", "latent-diffusion"}
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
REF_TTL_S = 1.0  # how long a ref's resolution is reused (an alias move shows within this)


class ModelNotFound(NotFound):
    http_status = 404
    code = "model_not_found"


class WrongModelKind(LaminaError):
    exit_code = 2
    http_status = 400
    code = "invalid_model"


@dataclass
class _Pending:
    """A load in progress: others asking for the same key wait on ``done``."""

    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class Loaded:
    version: ModelVersion
    engine: TextEngine
    last_used: float
    precision: str = "fp32"


def serving_tokenizer(folder: Path) -> tuple[Any, int]:
    """A model folder's tokenizer and context length, without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer

    from lamina.training.sft import base_folder

    base = base_folder(folder)  # a LoRA adapter's tokenizer and architecture are its base model's
    config = AutoConfig.from_pretrained(str(base))
    return AutoTokenizer.from_pretrained(str(base)), int(config.max_position_embeddings)


class ModelPool:
    def __init__(
        self,
        ws: Workspace,
        *,
        max_batch: int = 32,
        max_waiting: int = 256,
        max_queue_wait: float | None = None,
        precision: str = "fp32",
        backend: str = "lamina",
        compile: bool = False,
        engine_process: bool = False,
        threads: int = 1,
    ) -> None:
        self.ws, self.max_batch, self.max_waiting, self.backend = ws, max_batch, max_waiting, backend
        self.max_queue_wait = max_queue_wait
        self.compile, self.engine_process, self.threads = compile, engine_process, threads
        self.precision = precision  # the default; deploy() sets it per ref
        self._precisions: dict[str, str] = {}
        self._engines: dict[str, Loaded] = {}
        self._images: dict[str, Any] = {}
        self._current: dict[str, str] = {}  # ref → version id it resolved to last
        self._lock = threading.Lock()  # guards the tables only; never held while loading
        self._resolved: dict[str, tuple[float, ModelVersion]] = {}  # ref → (when, version)
        self._loading: dict[str, _Pending] = {}  # key → the load in progress

    @classmethod
    def from_settings(
        cls, ws: Workspace, server: Any, precision: str = "auto", backend: str = "lamina"
    ) -> ModelPool:
        """A pool configured by ``server`` settings (batching, queue, compile, engine process, threads).

        ``precision`` ``auto`` is resolved here (``quantize.resolve_precision``), so every server
        (``lamina serve``, the quickstart's) starts from the same default.
        """

        return cls(
            ws, max_batch=server.max_batch, max_waiting=server.max_waiting,
            max_queue_wait=server.max_queue_wait,
            precision=resolve_precision(precision),
            backend=backend, engine_process=server.engine_process,
            compile=defaults().serve_compile if server.compile is None else server.compile,
            threads=server.threads or defaults().serve_threads,
        )  # fmt: skip

    def resolve(self, ref: str, families: set[str]) -> ModelVersion:
        """The version ``ref`` names now: from the catalog, or from a resolution under ``REF_TTL_S`` old.

        Why the short cache: a catalog query per request was a fifth of the HTTP process's time
        under load (py-spy, 400 streams); an alias that moves is followed within ``REF_TTL_S``.
        """
        hit = self._resolved.get(ref)
        if hit is not None and time.monotonic() - hit[0] < REF_TTL_S and hit[1].family in families:
            return hit[1]
        version = self._lookup(ref, families)
        self._resolved[ref] = (time.monotonic(), version)
        return version

    def cached_engine(self, ref: str) -> tuple[TextEngine, ModelVersion] | None:
        """The loaded engine for ``ref`` when its resolution is fresh: no catalog, no thread hop."""
        hit = self._resolved.get(ref)
        if hit is None or time.monotonic() - hit[0] >= REF_TTL_S or hit[1].family not in TEXT_FAMILIES:
            return None
        key = f"{hit[1].id}:{self._precisions.get(ref, self.precision)}"
        loaded = self._engines.get(key)
        if loaded is None or self._current.get(ref) != key:
            return None
        loaded.last_used = time.monotonic()
        return loaded.engine, loaded.version

    def _lookup(self, ref: str, families: set[str]) -> ModelVersion:
        try:
            version = self.ws.resolve(ref, kind="model_version")
        except NotFound as exc:
            raise ModelNotFound(
                f"the model {ref!r} does not exist", hint=exc.hint or "see GET /v1/models"
            ) from None
        except LaminaError as exc:
            raise ModelNotFound(
                f"the model {ref!r} does not exist: {exc.message}", hint="see GET /v1/models"
            ) from None
        if not isinstance(version, ModelVersion) or version.family not in families:
            family = getattr(version, "family", version.kind)
            wanted = _article(" or ".join(sorted(families)))
            raise WrongModelKind(f"{ref} is a {family} model; this endpoint needs {wanted} model")
        return version

    def deploy(self, ref: str, precision: str | None = None) -> tuple[TextEngine, ModelVersion]:
        """Serve ``ref`` at ``precision`` (fp32, bf16 or int8) from now on, and load it."""
        if precision:
            self._precisions[ref] = resolve_precision(precision)
        return self.engine(ref)

    def engine(self, ref: str) -> tuple[TextEngine, ModelVersion]:
        """The engine serving what ``ref`` names now (loading it on first use).

        Loading (and compiling) runs outside the pool's lock: requests for other models, ``/ready``
        and ``/metrics`` go on meanwhile; requests for the same model wait for that one load.
        """
        version = self.resolve(ref, TEXT_FAMILIES)
        precision = self._precisions.get(ref, self.precision)
        key = f"{version.id}:{precision}"
        with self._lock:
            previous = self._current.get(ref)
            self._current[ref] = key
            retired = self._retire_idle()
        for engine in retired:  # closing joins a thread or a process: never under the lock
            engine.close()
        loaded = self._load_once(
            self._engines,
            key,
            lambda: Loaded(version, self._build(version, precision), time.monotonic(), precision),
        )
        if previous and previous != key:
            log.info("alias moved", extra={"ref": ref, "from": previous, "to": key})
        loaded.last_used = time.monotonic()
        return loaded.engine, loaded.version

    def _build(self, version: ModelVersion, precision: str) -> TextEngine:
        """A started engine for ``version`` (the slow part: loading, packing, compiling)."""
        from lamina.hub.registry import model_path
        from lamina.training.sft import load_any

        folder = model_path(self.ws, version)
        engine: TextEngine
        if self.backend == "vllm":
            from lamina.serving.vllm_backend import VLLMEngine

            _, tokenizer = load_any(folder)
            engine = VLLMEngine(
                str(folder), tokenizer, max_batch=self.max_batch, max_waiting=self.max_waiting,
                max_queue_wait=self.max_queue_wait,
            )  # fmt: skip
        elif self.engine_process:
            from lamina.serving.engine_process import EngineProcess

            tokenizer, context = serving_tokenizer(folder)
            engine = EngineProcess(
                folder, tokenizer, context, max_batch=self.max_batch, max_waiting=self.max_waiting,
                max_queue_wait=self.max_queue_wait, precision=precision, compile=self.compile,
                threads=self.threads,
            )  # fmt: skip
        else:
            model, tokenizer = load_any(folder)
            engine = Engine(
                model, tokenizer, max_batch=self.max_batch, max_waiting=self.max_waiting,
                max_queue_wait=self.max_queue_wait, precision=precision, compile=self.compile,
            )  # fmt: skip
        return engine.start()

    def _load_once(self, table: dict[str, Any], key: str, build: Callable[[], Any]) -> Any:
        """``table[key]``, built by the first caller outside the lock; others for the same key wait
        for that build (and get its error, if it fails)."""
        with self._lock:
            if key in table:
                return table[key]
            pending = self._loading.get(key)
            owner = pending is None
            if owner:
                pending = self._loading[key] = _Pending()
        assert pending is not None
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            with self._lock:
                return table[key]
        try:
            value = build()
        except BaseException as exc:
            pending.error = exc
            raise
        else:
            with self._lock:
                table[key] = value
            return value
        finally:
            with self._lock:
                self._loading.pop(key, None)
            pending.done.set()

    def image(self, ref: str) -> tuple[Any, ModelVersion]:
        from lamina.hub.registry import model_path
        from lamina.models.image_generator import ImageGenerator

        version = self.resolve(ref, IMAGE_FAMILIES)
        generator = self._load_once(
            self._images, version.id, lambda: ImageGenerator.load(model_path(self.ws, version))
        )
        return generator, version

    def _retire_idle(self) -> list[TextEngine]:
        """Take out engines no ref points at any more once they have finished their requests (call
        under the lock; the caller closes what comes back, outside it)."""
        live = set(self._current.values())
        retired = []
        for vid, loaded in list(self._engines.items()):
            if vid not in live and loaded.engine.running == 0 and loaded.engine.queue_depth == 0:
                retired.append(loaded.engine)
                del self._engines[vid]
        return retired

    def engines(self) -> list[Loaded]:
        with self._lock:
            return list(self._engines.values())

    def listing(self) -> list[dict[str, Any]]:
        """Every servable ref: aliases and versions of text, image and embedding models, and the
        packaged embedder."""
        from lamina.hub.registry import list_models

        rows: list[dict[str, Any]] = []
        for m in list_models(self.ws):
            if m["family"] not in TEXT_FAMILIES | IMAGE_FAMILIES | {"embedding"}:
                continue
            stamp = int(datetime.fromisoformat(m["created_at"]).timestamp())
            refs = [m["ref"], *(f"{m['name']}@{a}" for a in m["aliases"])]
            rows.extend({"id": r, "family": m["family"], "created": stamp, "version": m["id"]} for r in refs)
        rows.append({"id": EMBEDDING_MODEL, "family": "embedding", "created": 0, "version": None})
        return rows

    def close(self) -> None:
        with self._lock:
            for loaded in self._engines.values():
                loaded.engine.close()
            self._engines.clear()


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
