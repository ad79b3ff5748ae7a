"""The vector store behind one interface, and its embedded default (LanceDB in the workspace).

Access control is part of every query: a search takes the caller's groups and the store filters on
them *before* ranking (LanceDB's prefilter, a SQL ``WHERE`` on the server), so a query never sees,
scores or returns a chunk outside its groups, and never comes back short because the top k were
someone else's.

Why LanceDB for the embedded default: an embedded columnar store with full-text search (BM25) and
SQL filters over the same rows, versioned writes (a failed ingest leaves the last version in place)
and no server. Its dense ranking is exact and in memory, per access group (``dense_index.py``):
faster here than LanceDB's own vector search, with or without an index (bench/rag_scale.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lamina.core.errors import ConfigError, LaminaError
from lamina.core.refs import GROUP_PATTERN
from lamina.rag.chunking import Chunk
from lamina.rag.dense_index import DenseIndex

FILTER_FIELDS = {"source": "source", "title": "title", "page": "page", "document_hash": "document_hash"}


class FilterError(ConfigError):
    http_status = 400
    code = "invalid_filter"


class NoGroups(LaminaError):
    """A caller with no group may read nothing: refused, not answered with an empty result."""

    exit_code = 2
    http_status = 403
    code = "no_groups"


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float  # higher is better; comparable only within one ranking


class VectorStore(Protocol):
    """What a collection needs from a store; the embedded one and the server one implement it.

    Versions: every committed ingest is one store version, which a collection version pins; a
    reader checks out a version, a writer prepares at the committed one and rolls back to it when
    anything fails before the catalog records the new one.
    """

    @property
    def version(self) -> int: ...

    def checkout(self, version: int) -> None: ...

    def prepare_writes(self, committed: int) -> None: ...

    def rollback(self, version: int) -> None: ...

    def finish_writes(self) -> None: ...

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None: ...

    def delete_documents(self, document_hashes: list[str]) -> None: ...

    def dense(
        self, vector: np.ndarray, k: int, groups: list[str] | None, filters: dict[str, Any]
    ) -> list[Hit]: ...

    def lexical(self, query: str, k: int, groups: list[str] | None, filters: dict[str, Any]) -> list[Hit]: ...

    def count(self) -> int: ...

    def documents(self) -> dict[str, str]: ...  # source -> content hash


def _quote(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FilterError(f"filter values must be strings or numbers, got {value!r}")
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


FIELD_TYPES: dict[str, type] = {"page": int}  # every other filter field holds strings


def access(
    groups: list[str] | None, filters: dict[str, Any]
) -> tuple[list[str] | None, list[tuple[str, list[Any]]]]:
    """A caller's groups and metadata filters, checked: (groups, [(column, allowed values)]).

    Every store renders these into its own query language; the checks (and their errors) are one.
    """
    if groups is not None:
        if not groups:
            raise NoGroups(
                "this key belongs to no group, so it may read no document",
                hint="give the key groups (lamina keys create --groups …) or use an admin key",
            )
        for group in groups:
            if not re.fullmatch(GROUP_PATTERN, group):
                raise FilterError(f"invalid group name {group!r}")
    checked = []
    for field, value in filters.items():
        column = FILTER_FIELDS.get(field)
        if column is None:
            raise FilterError(
                f"cannot filter on {field!r}", hint=f"filterable fields: {', '.join(sorted(FILTER_FIELDS))}"
            )
        values = value if isinstance(value, list) else [value]
        if not values:
            raise FilterError(f"filter {field!r} has an empty list")
        wanted = FIELD_TYPES.get(field, str)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, wanted):
                raise FilterError(f"filter {field!r} takes {wanted.__name__} values, got {v!r}")
        checked.append((column, values))
    return groups, checked


def where_clause(groups: list[str] | None, filters: dict[str, Any]) -> str | None:
    """LanceDB's SQL predicate for a caller's groups and metadata filters (values quoted)."""
    groups, checked = access(groups, filters)
    parts = []
    if groups is not None:
        parts.append(f"array_has_any(groups, make_array({', '.join(_quote(g) for g in groups)}))")
    for column, values in checked:
        parts.append(f"{column} IN ({', '.join(_quote(v) for v in values)})")
    return " AND ".join(parts) if parts else None


class LanceStore:
    """A collection's chunks in a LanceDB table at ``folder``."""

    TABLE = "chunks"

    def __init__(self, folder: Path, dimension: int) -> None:
        import lancedb

        folder.mkdir(parents=True, exist_ok=True)
        self.dimension = dimension
        self._db = lancedb.connect(str(folder))
        self._table: Any = None
        if self.TABLE in self._db.list_tables().tables:
            self._table = self._db.open_table(self.TABLE)
        self._fts_stale = True
        self._dense: tuple[int, DenseIndex] | None = None  # the version it holds, and it

    # -- versions (a collection version in the catalog pins one of these) ------------------------------
    @property
    def version(self) -> int:
        return 0 if self._table is None else int(self._table.version)

    def checkout(self, version: int) -> None:
        """Read the table as it was at ``version`` (what the catalog says is committed)."""
        if self._table is not None and version:
            self._table.checkout(version)

    def prepare_writes(self, committed: int) -> None:
        """Writable, at the version the catalog committed: a reader's pinned checkout is left for the
        latest, and versions an ingest wrote but never committed (it died) are undone."""
        if self._table is None:
            return
        self._table.checkout_latest()
        if int(self._table.version) != committed:
            self.rollback(committed)

    def rollback(self, version: int) -> None:
        """Make ``version`` the latest again: a failed ingest leaves no trace."""
        if self._table is None:
            return
        if version == 0:
            self._db.drop_table(self.TABLE)
            self._table = None
            return
        self._table.checkout(version)
        self._table.restore()

    # -- writing ---------------------------------------------------------------------------------------
    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([
            ("id", pa.string()), ("source", pa.string()), ("title", pa.string()), ("text", pa.string()),
            ("start", pa.int64()), ("end", pa.int64()), ("page", pa.int64()),
            ("headings", pa.list_(pa.string())), ("groups", pa.list_(pa.string())),
            ("document_hash", pa.string()), ("vector", pa.list_(pa.float32(), self.dimension)),
        ])  # fmt: skip

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        import pyarrow as pa

        if not chunks:
            return
        columns = {
            "id": [c.id for c in chunks], "source": [c.source for c in chunks],
            "title": [c.title for c in chunks], "text": [c.text for c in chunks],
            "start": [c.start for c in chunks], "end": [c.end for c in chunks],
            "page": [c.page for c in chunks], "headings": [list(c.headings) for c in chunks],
            "groups": [list(c.groups) for c in chunks], "document_hash": [c.document_hash for c in chunks],
        }  # fmt: skip
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        batch = pa.table(
            {**columns, "vector": pa.FixedSizeListArray.from_arrays(flat, self.dimension)},
            schema=self._schema(),
        )
        if self._table is None:
            self._table = self._db.create_table(self.TABLE, batch)
        else:
            self._table.delete(f"id IN ({', '.join(_quote(c.id) for c in chunks)})")
            self._table.add(batch)
        self._fts_stale = True

    def delete_documents(self, document_hashes: list[str]) -> None:
        if self._table is None or not document_hashes:
            return
        self._table.delete(f"document_hash IN ({', '.join(_quote(h) for h in document_hashes)})")
        self._fts_stale = True

    def finish_writes(self) -> None:
        """Rebuild the full-text index after writes (before the version is committed)."""
        if self._table is not None and self._fts_stale:
            from lancedb.index import FTS

            # English stemming and stop words, lower case, ASCII folding (LanceDB's BM25 defaults)
            self._table.create_index("text", config=FTS(), replace=True)
            self._fts_stale = False

    # -- reading ---------------------------------------------------------------------------------------
    def count(self) -> int:
        return 0 if self._table is None else int(self._table.count_rows())

    def documents(self) -> dict[str, str]:
        if self._table is None:
            return {}
        rows = self._table.search().select(["source", "document_hash"]).limit(None).to_arrow()
        return dict(zip(rows["source"].to_pylist(), rows["document_hash"].to_pylist(), strict=True))

    def dense(
        self, vector: np.ndarray, k: int, groups: list[str] | None, filters: dict[str, Any]
    ) -> list[Hit]:
        """Exact search over the rows ``groups`` may read (``dense_index.py`` says why in memory)."""
        if self._table is None:
            return []
        groups, checked = access(groups, filters)
        version = self.version
        if self._dense is None or self._dense[0] != version:
            self._dense = (version, DenseIndex(self._table))
        return [Hit(chunk, score) for chunk, score in self._dense[1].search(vector, k, groups, checked)]

    def lexical(self, query: str, k: int, groups: list[str] | None, filters: dict[str, Any]) -> list[Hit]:
        if self._table is None or not query.strip():
            return []
        search = self._table.search(query, query_type="fts").limit(k)
        where = where_clause(groups, filters)
        if where:
            search = search.where(where, prefilter=True)
        return [Hit(Chunk.from_row(row), float(row["_score"])) for row in search.to_list()]
