"""A collection: documents → chunks → vectors in a store, versioned in the catalog.

Each ingest is one collection version (a ``vector_index`` artifact) or nothing: the store's writes
happen first, and if anything fails before the catalog row is written the store goes back to the
version the catalog last recorded. Readers open the store at the version the catalog names, so an
ingest in progress is invisible to them.

Re-ingest is idempotent by content hash: unchanged documents are left alone (their vectors are also
cached), changed ones replaced, and documents no longer among the inputs deleted (``prune``).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.core.catalog.models import Source, VectorIndex
from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace
from lamina.rag.answer import Answer, extractive
from lamina.rag.chunking import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP, chunk
from lamina.rag.documents import Document, discover, load
from lamina.rag.embeddings import PACKAGED, Embedder, model_source, pin_model, registered_model
from lamina.rag.rerank import RERANK_DEPTH, Reranker, reranker_folder
from lamina.rag.retrieval import Retrieved, retrieve
from lamina.rag.sources import from_urls, is_url
from lamina.rag.store import LanceStore, VectorStore

KIND = "vector_index"


class UnknownCollection(NotFound):
    http_status = 404
    code = "collection_not_found"


@dataclass
class IngestReport:
    version: VectorIndex | None  # None when nothing changed (no new version)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks: int = 0


def check_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ConfigError(f"invalid collection name {name!r}", hint="letters, digits, '.', '_' and '-'")
    return name


def _under(source: str, scopes: list[str]) -> bool:
    """Whether a document's source lies under a scope: the scope itself, a path or URL below it, or
    a record of it (``key#id``)."""
    return any(source == scope or source.startswith((scope + "/", scope + "#")) for scope in scopes)


class Collection:
    """One named collection in a workspace, at its latest committed version (or a given one)."""

    def __init__(self, ws: Workspace, name: str, version: VectorIndex | None = None) -> None:
        self.ws, self.name = ws, check_name(name)
        latest = ws.catalog.latest(KIND, self.name)
        self.committed = (
            version if version is not None else latest if isinstance(latest, VectorIndex) else None
        )
        meta = self.committed.meta if self.committed is not None else {}
        self.model = meta.get("embedding_model", PACKAGED)
        self.folder = ws.root / "vectors" / self.name
        self._embedder: Embedder | None = None
        self._store: VectorStore | None = None

    @classmethod
    def open(cls, ws: Workspace, name: str) -> Collection:
        """An existing collection (``name`` or ``name@vN``); a clear error when there is none."""
        base, _, version = name.partition("@")
        collection = cls(ws, base)
        if collection.committed is None:
            known = sorted({a.name for a in ws.catalog.find(kind=KIND)})
            raise UnknownCollection(
                f"there is no collection {base!r}",
                hint=f"known: {', '.join(known)}" if known else "create one with 'lamina rag ingest'",
            )
        if version:
            pinned = ws.resolve(f"{base}@{version}", kind=KIND)
            assert isinstance(pinned, VectorIndex)
            return cls(ws, base, pinned)
        return collection

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            cache = self.ws.root / "vectors" / "embedding-cache.sqlite"
            self._embedder = Embedder(model_source(self.ws, self.model), cache=cache)
        return self._embedder

    @property
    def store_kind(self) -> str:
        """Where the chunks live: recorded per collection; new ones follow ``vector_url``."""
        if self.committed is not None:
            return str(self.committed.meta.get("store", "lancedb"))
        return "pgvector" if self.ws.settings.vector_url else "lancedb"

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            if self.store_kind == "pgvector":
                from lamina.rag.pgstore import PgStore

                url = self.ws.settings.vector_url
                if not url:
                    raise ConfigError(
                        f"collection {self.name!r} lives in PostgreSQL, and no vector_url is set",
                        hint="set vector_url in lamina.yaml (or LAMINA_VECTOR_URL)",
                    )
                self._store = PgStore(url, self.name, self.embedder.dimension)
            else:
                self._store = LanceStore(self.folder, self.embedder.dimension)
            if self.committed is not None:
                self._store.checkout(int(self.committed.meta["table_version"]))
        return self._store

    # -- writing -------------------------------------------------------------------------------------
    def ingest(
        self, paths: Iterable[Path | str], groups: Iterable[str] = (), *, prune: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int = DEFAULT_OVERLAP, model: str | None = None,
        progress: Any = None, storage_options: dict[str, Any] | None = None,
    ) -> IngestReport:  # fmt: skip
        """Bring the collection in line with the documents under ``paths`` (local files and folders,
        or fsspec URLs such as ``s3://bucket/docs/``): one new version, or none.

        With ``prune``, a document of the collection that was under one of ``paths`` and is no
        longer there is deleted; documents ingested from elsewhere are left alone.
        """
        given = [str(p) for p in paths]
        local = [p for p in given if not is_url(p)]
        urls = [p for p in given if is_url(p)]
        groups = list(groups)
        # every document is read before anything is written
        documents = [load(path, groups) for path in discover(local)]
        documents += from_urls(urls, groups, storage_options) if urls else []
        if not documents:
            raise ConfigError(
                "no documents found", hint="pass .txt, .md, .html, .pdf or .docx files or folders"
            )
        scopes = [str(Path(p).resolve()) for p in local] + [u.rstrip("/") for u in urls]
        return self.ingest_documents(documents, scopes, prune=prune, max_tokens=max_tokens,
                                     overlap=overlap, model=model, progress=progress)  # fmt: skip

    def ingest_documents(
        self, documents: list[Document], scopes: list[str], *, prune: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int = DEFAULT_OVERLAP, model: str | None = None,
        progress: Any = None,
    ) -> IngestReport:  # fmt: skip
        """Bring the collection in line with ``documents``; with ``prune``, delete documents whose
        source lies under one of ``scopes`` (a folder, a URL, a record source's key) and is not among
        them. (``sources.py`` makes documents from URLs, data-layer sources and dataset versions.)"""
        if model is not None:
            model = pin_model(self.ws, model)
        if model is not None and self.committed is not None and model != self.model:
            raise ConfigError(
                f"collection {self.name!r} was built with {self.model!r}, not {model!r}",
                hint="use a new collection name for another embedding model",
            )
        self.model = model or self.model
        if not documents:
            raise ConfigError("no documents to ingest")
        store = self.store
        committed_version = int(self.committed.meta["table_version"]) if self.committed else 0
        store.prepare_writes(committed_version)
        before = store.documents()
        report = IngestReport(None)
        changed: list[Document] = []
        for document in documents:
            old = before.get(document.source)
            if old == document.content_hash and self._same_settings(max_tokens, overlap, document):
                report.unchanged.append(document.source)
                continue
            (report.replaced if old else report.added).append(document.source)
            changed.append(document)
        seen = {d.source for d in documents}
        report.removed = sorted(s for s in before if s not in seen and _under(s, scopes)) if prune else []
        if not changed and not report.removed:
            store.finish_writes()  # nothing written: the committed version stays the latest
            report.version = self.committed
            return report
        chunks = [
            c for document in changed for c in chunk(document, self.embedder.tokenizer, max_tokens, overlap)
        ]
        try:
            vectors = self.embedder.encode([c.text for c in chunks], progress=progress)
            store.delete_documents([before[s] for s in [*report.replaced, *report.removed]])
            store.upsert(chunks, vectors)
            store.finish_writes()
            report.chunks = len(chunks)
            report.version = self._commit(documents, store.version, max_tokens, overlap, report)
        except BaseException:
            store.rollback(committed_version)
            raise
        self.committed = report.version
        return report

    def _same_settings(self, max_tokens: int, overlap: int, document: Document) -> bool:
        meta = self.committed.meta if self.committed is not None else {}
        groups = meta.get("groups", {}).get(document.source)
        return (
            meta.get("max_tokens") == max_tokens and meta.get("overlap") == overlap
            and groups == list(document.groups)
        )  # fmt: skip

    def _commit(self, documents: list[Document], table_version: int, max_tokens: int, overlap: int,
                report: IngestReport) -> VectorIndex:  # fmt: skip
        """The documents as a source artifact (lineage), then the collection version that uses them."""
        with tempfile.TemporaryDirectory(prefix="lamina-rag-") as tmp:
            staged = Path(tmp) / "documents"
            staged.mkdir()
            for i, document in enumerate(documents):
                if Path(document.source).is_file():  # the file as it was read
                    shutil.copyfile(document.source, staged / f"{i:05d}-{Path(document.source).name}")
                else:  # a URL or a record: the text that was indexed
                    name = re.sub(r"[^\w.-]+", "_", document.source.rsplit("/", 1)[-1])[-80:]
                    (staged / f"{i:05d}-{name}.txt").write_text(document.text)
            source = self.ws.commit(
                staged, Source(name=f"{self.name}-documents", meta={"collection": self.name}),
                reuse_identical=True,
            ).artifact  # fmt: skip
        # the whole collection after this ingest: what was there (less what was removed) and what came
        previous = self.committed.meta if self.committed is not None else {}
        hashes = {s: h for s, h in previous.get("documents", {}).items() if s not in report.removed}
        groups = {s: g for s, g in previous.get("groups", {}).items() if s not in report.removed}
        hashes.update({d.source: d.content_hash for d in documents})
        groups.update({d.source: list(d.groups) for d in documents})
        version = VectorIndex(
            name=self.name,
            description=f"{len(hashes)} documents, {self.store.count()} chunks",
            meta={
                "table_version": table_version, "store": self.store_kind, "embedding_model": self.model,
                "dimension": self.embedder.dimension, "max_tokens": max_tokens, "overlap": overlap,
                "documents": hashes, "groups": groups,
                "chunks": self.store.count(), "added": report.added, "replaced": report.replaced,
                "removed": report.removed,
            },
        )  # fmt: skip
        parents = [(source.id, "derived_from")]
        if self.committed is not None:
            parents.append((self.committed.id, "previous_version"))
        model = registered_model(self.ws, self.model)
        if model is not None:  # an imported embedding model is an artifact: lineage to it
            parents.append((model.id, "embedded_with"))
        return self.ws.record(version, parents)

    # -- reading -------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, *, groups: list[str] | None = None,
               filters: dict[str, Any] | None = None, mode: str = "hybrid",
               rerank: str | None = None) -> list[Retrieved]:  # fmt: skip
        """The ``k`` best chunks ``groups`` may read; with ``rerank`` (a cross-encoder folder or an
        imported reranker), the top ``RERANK_DEPTH`` re-scored by it."""
        if rerank is None:
            return retrieve(self.store, self.embedder, query, k, groups=groups, filters=filters, mode=mode)
        reranker = Reranker(reranker_folder(self.ws, rerank))
        candidates = retrieve(self.store, self.embedder, query, max(k, RERANK_DEPTH), groups=groups,
                              filters=filters, mode=mode)  # fmt: skip
        return reranker.rerank(query, candidates, k)

    def ask(self, question: str, k: int = 3, *, groups: list[str] | None = None,
            filters: dict[str, Any] | None = None, rerank: str | None = None) -> Answer:  # fmt: skip
        """An extractive, cited answer from the ``k`` best chunks (or "not found")."""
        found = self.search(question, k, groups=groups, filters=filters, rerank=rerank)
        return extractive(question, found, self.embedder)
