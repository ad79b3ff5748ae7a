"""The embedded store's dense search: exact, in memory, one matrix per access group.

Why not LanceDB's own vector search: on the 2-core machines this runs on, every LanceDB query
costs about 5 ms before any vector is read (measured with no filter and an HNSW index), and its
exact scan of 100k rows with an access filter 90-180 ms (bench/rag_scale.py). Exact search over
only the rows a reader may see is cheaper than both: a collection version's vectors are loaded
once into one contiguous float32 matrix per group (a chunk in two groups is in both), a query
multiplies only the matrices of the caller's groups, and the best k are merged. Recall is exact,
access control is by construction (a reader's query never touches another group's rows), and the
cost grows with the rows a reader may see. Memory: 1.5 KB per chunk and group (150 MB for 100k
single-group chunks); past a few hundred thousand chunks, use the server store (pgvector, HNSW).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.rag.chunking import Chunk

ALL = "\x00all"  # the matrix of every row, for callers that read every group


class DenseIndex:
    def __init__(self, table: Any) -> None:
        data = table.to_arrow()
        n = data.num_rows
        self.rows = data.drop_columns(["vector"]).combine_chunks()  # one chunk: take() is fast
        flat = data["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = (
            np.ascontiguousarray(flat, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 1), np.float32)
        )
        members: dict[str, list[int]] = {}
        for row, groups in enumerate(self.rows["groups"].to_pylist()):
            for group in groups or ():
                members.setdefault(group, []).append(row)
        self.groups: dict[str, tuple[np.ndarray, np.ndarray]] = {
            group: (np.asarray(rows, dtype=np.int64), np.ascontiguousarray(vectors[rows]))
            for group, rows in members.items()
        }
        self.groups[ALL] = (np.arange(n, dtype=np.int64), vectors)
        self._columns: dict[str, np.ndarray] = {}

    def search(self, vector: np.ndarray, k: int, groups: list[str] | None,
               filters: list[tuple[str, list[Any]]]) -> list[tuple[Chunk, float]]:  # fmt: skip
        """The ``k`` rows most similar to ``vector`` among ``groups``' rows (None: all) that pass
        ``filters`` (column, allowed values), best first."""
        query = np.asarray(vector, dtype=np.float32)
        found_rows, found_scores = [], []
        for group in [ALL] if groups is None else groups:
            if group not in self.groups:
                continue
            rows, matrix = self.groups[group]
            scores = matrix @ query
            if filters:
                keep = np.ones(len(rows), dtype=bool)
                for column, values in filters:
                    keep &= np.isin(self._column(column)[rows], values)
                scores = np.where(keep, scores, -np.inf)
            top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
            top = top[np.isfinite(scores[top])]
            found_rows.append(rows[top])
            found_scores.append(scores[top])
        if not found_rows:
            return []
        best: dict[int, float] = {}  # a row in two of the caller's groups is found twice
        for row, score in zip(np.concatenate(found_rows).tolist(), np.concatenate(found_scores).tolist(),
                              strict=True):  # fmt: skip
            best[row] = max(best.get(row, -np.inf), score)
        chosen = sorted(best, key=lambda r: (-best[r], r))[:k]
        if not chosen:
            return []
        picked = self.rows.take(chosen).to_pylist()
        return [(Chunk.from_row(row), best[r]) for r, row in zip(chosen, picked, strict=True)]

    def _column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            self._columns[name] = np.asarray(self.rows[name].to_pylist(), dtype=object)
        return self._columns[name]
