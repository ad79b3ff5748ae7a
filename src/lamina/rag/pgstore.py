"""The server store: a collection's chunks in PostgreSQL with pgvector, for teams past one machine.

The same interface and guarantees as the embedded LanceDB store (``store.py``), the same tests:

- **Access control in the query**: ``groups && $caller_groups`` is part of the ``WHERE`` of both
  rankings. The vector ranking uses an HNSW index with pgvector's iterative index scans
  (``hnsw.iterative_scan``), so a filter that rejects most rows makes the scan go on rather than
  return fewer than k rows.
- **Versions**: PostgreSQL has no table versions, so rows carry them: ``added_in`` and
  ``removed_in``. Reading version V sees rows added by V and not removed by V; an ingest writes
  version latest+1 under an advisory lock (one writer per collection), and rolling back to V deletes
  what later versions added and restores what they removed. So ``NAME@v1`` still reads as it was,
  and a failed ingest leaves no trace, exactly as with LanceDB.
- **Lexical ranking**: PostgreSQL full-text search (English stemming) with any query word
  matching, ranked by ``ts_rank_cd`` (cover density). It is not BM25; bench/rag.py measures both
  stores side by side.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

from lamina.core.errors import ConfigError
from lamina.rag.chunking import Chunk
from lamina.rag.store import Hit, access

COLUMNS = "id, source, title, text, start_char, end_char, page, headings, groups, document_hash"
EF_SEARCH = 100  # HNSW candidates per query (pgvector's default is 40); bench/rag.py measures recall


def table_name(collection: str) -> str:
    """A fixed-length identifier per collection (names may hold '.' and '-', and run to 64 chars)."""
    return "rag_" + hashlib.sha256(collection.encode()).hexdigest()[:20]


class PgStore:
    """A collection's chunks in one PostgreSQL table (created on first write)."""

    def __init__(self, url: str, collection: str, dimension: int) -> None:
        self.dimension, self.table = dimension, table_name(collection)
        self._lock_key = int(hashlib.sha256(collection.encode()).hexdigest()[:15], 16)
        self._pool = connection_pool(url)
        self._read: int | None = None  # the checked-out version (None: the latest)
        self._writing: int | None = None  # the version an ingest in progress writes
        self._writer: Any = None  # the connection that holds the writer's advisory lock
        self._wrote = False  # whether the ingest in progress changed any row
        self._exists = self._table_exists()

    # -- versions --------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        if self._writing is not None:
            return self._writing
        return self._read if self._read is not None else self._latest()

    def checkout(self, version: int) -> None:
        self._read = version or None

    def prepare_writes(self, committed: int) -> None:
        """Take the collection's writer lock; undo versions written after ``committed`` (an ingest that
        died before the catalog recorded it), then write ``committed + 1``."""
        self._create()
        self._writer = self._pool.getconn()
        self._writer.execute("SELECT pg_advisory_lock(%s)", (self._lock_key,))
        self._undo_after(committed)
        self._read, self._writing, self._wrote = None, committed + 1, False

    def rollback(self, version: int) -> None:
        try:
            if self._exists:
                self._undo_after(version)
        finally:
            self._release_writer()
            self._writing, self._read = None, version or None

    def finish_writes(self) -> None:
        """The version written becomes readable; the writer's lock is released."""
        written = self._writing if self._wrote else (self._writing or 1) - 1
        self._release_writer()
        self._writing, self._read = None, written or None

    def _undo_after(self, version: int) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(f"DELETE FROM {self.table} WHERE added_in > %s", (version,))
            conn.execute(f"UPDATE {self.table} SET removed_in = NULL WHERE removed_in > %s", (version,))

    def _release_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
            finally:
                self._pool.putconn(self._writer)
                self._writer = None

    def _latest(self) -> int:
        if not self._exists:
            return 0
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT coalesce(max(greatest(added_in, coalesce(removed_in, 0))), 0) FROM {self.table}"
            ).fetchone()
        return int(row[0]) if row else 0

    def _visible(self) -> tuple[str, list[Any]]:
        """The predicate for rows visible at the version being read (or written)."""
        version = self.version
        return "added_in <= %s AND (removed_in IS NULL OR removed_in > %s)", [version, version]

    # -- writing ---------------------------------------------------------------------------------------
    def _table_exists(self) -> bool:
        with self._pool.connection() as conn:
            return conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()[0] is not None

    def _create(self) -> None:
        if self._exists:
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            conn.execute(f"""
                CREATE TABLE IF NOT EXISTS {self.table} (
                    id text NOT NULL, added_in integer NOT NULL, removed_in integer,
                    source text NOT NULL, title text NOT NULL, text text NOT NULL,
                    start_char integer NOT NULL, end_char integer NOT NULL, page integer,
                    headings text[] NOT NULL, groups text[] NOT NULL, document_hash text NOT NULL,
                    vector vector({self.dimension}) NOT NULL,
                    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
                    PRIMARY KEY (id, added_in)
                )""")  # fmt: skip
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_hnsw ON {self.table} "
                "USING hnsw (vector vector_cosine_ops)"
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_tsv ON {self.table} USING gin (tsv)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_groups ON {self.table} USING gin (groups)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_doc ON {self.table} (document_hash)")
        self._exists = True

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if not chunks:
            return
        self._require_writing()
        ids = [c.id for c in chunks]
        rows = [
            (c.id, self._writing, c.source, c.title, c.text, c.start, c.end, c.page, list(c.headings),
             list(c.groups), c.document_hash, np.asarray(v, dtype=np.float32))
            for c, v in zip(chunks, vectors, strict=True)
        ]  # fmt: skip
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                f"UPDATE {self.table} SET removed_in = %s WHERE id = ANY(%s) AND removed_in IS NULL",
                (self._writing, ids),
            )
            conn.execute(
                f"DELETE FROM {self.table} WHERE id = ANY(%s) AND added_in = %s", (ids, self._writing)
            )
            with conn.cursor() as cursor, cursor.copy(
                f"COPY {self.table} (id, added_in, {COLUMNS.replace('id, ', '', 1)}, vector) FROM STDIN"
            ) as copy:  # fmt: skip
                for row in rows:
                    copy.write_row(row)

    def delete_documents(self, document_hashes: list[str]) -> None:
        if not document_hashes or not self._exists:
            return
        self._require_writing()
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE {self.table} SET removed_in = %s "
                "WHERE document_hash = ANY(%s) AND removed_in IS NULL",
                (self._writing, document_hashes),
            )

    def _require_writing(self) -> None:
        if self._writing is None:
            raise RuntimeError("call prepare_writes before writing to a PgStore")
        self._wrote = True

    # -- reading ---------------------------------------------------------------------------------------
    def count(self) -> int:
        if not self._exists:
            return 0
        visible, params = self._visible()
        with self._pool.connection() as conn:
            return int(
                conn.execute(f"SELECT count(*) FROM {self.table} WHERE {visible}", params).fetchone()[0]
            )

    def documents(self) -> dict[str, str]:
        if not self._exists:
            return {}
        visible, params = self._visible()
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT source, document_hash FROM {self.table} WHERE {visible}", params
            ).fetchall()
        return dict(rows)

    def _where(self, groups: list[str] | None, filters: dict[str, Any]) -> tuple[str, list[Any]]:
        groups, checked = access(groups, filters)
        visible, params = self._visible()
        parts = [visible]
        if groups is not None:
            parts.append("groups && %s::text[]")
            params.append(groups)
        for column, values in checked:
            parts.append(f"{column} = ANY(%s)")
            params.append(values)
        return " AND ".join(parts), params

    def dense(
        self, vector: np.ndarray, k: int, groups: list[str] | None, filters: dict[str, Any]
    ) -> list[Hit]:
        if not self._exists:
            return []
        where, params = self._where(groups, filters)
        query = np.asarray(vector, dtype=np.float32)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}")
            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")  # filters never cut it short
            rows = conn.execute(
                f"SELECT {COLUMNS}, vector <=> %s AS distance FROM {self.table} WHERE {where} "
                "ORDER BY vector <=> %s LIMIT %s",
                [query, *params, query, k],
            ).fetchall()
        hits = [Hit(_chunk(row), 1.0 - float(row[-1])) for row in rows]
        return sorted(hits, key=lambda h: -h.score)  # relaxed order: nearly sorted, so sort

    def lexical(self, query: str, k: int, groups: list[str] | None, filters: dict[str, Any]) -> list[Hit]:
        if not self._exists or not query.strip():
            return []
        where, params = self._where(groups, filters)
        # any query word may match (plainto_tsquery alone would require all of them)
        any_word = "(SELECT replace(plainto_tsquery('english', %s)::text, '&', '|')::tsquery AS q) AS query"
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS}, ts_rank_cd(tsv, q) AS score FROM {self.table}, {any_word} "
                f"WHERE tsv @@ q AND {where} ORDER BY score DESC, id LIMIT %s",
                [query, *params, k],
            ).fetchall()
        return [Hit(_chunk(row), float(row[-1])) for row in rows]


def _chunk(row: Any) -> Chunk:
    return Chunk(
        id=row[0], source=row[1], title=row[2], text=row[3], start=row[4], end=row[5], page=row[6],
        headings=tuple(row[7] or ()), groups=tuple(row[8] or ()), document_hash=row[9],
    )  # fmt: skip


_POOLS: dict[str, Any] = {}
_POOLS_LOCK = threading.Lock()


def connection_pool(url: str) -> Any:
    """One pool of connections per server, shared by every collection (and thread) of the process."""
    try:
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise ConfigError(
            "the PostgreSQL vector store needs psycopg, psycopg-pool and pgvector",
            hint="pip install 'lamina[postgres]'",
        ) from None
    import psycopg

    with _POOLS_LOCK:
        if url not in _POOLS:
            with psycopg.connect(_libpq(url), autocommit=True) as conn:  # once, before any pooled one
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            _POOLS[url] = ConnectionPool(
                _libpq(url), min_size=1, max_size=8, open=True, kwargs={"autocommit": True},
                configure=_register_vector,
            )  # fmt: skip
        return _POOLS[url]


def _register_vector(conn: Any) -> None:
    from pgvector.psycopg import register_vector

    register_vector(conn)


def _libpq(url: str) -> str:
    """SQLAlchemy-style URLs (``postgresql+psycopg://``) as libpq takes them."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise ConfigError(f"vector_url must be a postgresql:// URL, got {url!r}")
    return f"postgresql://{rest}"
