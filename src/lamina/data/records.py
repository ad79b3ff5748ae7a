"""Records, batches and the bad-record policy shared by every source and step.

A record is a plain ``dict`` (column → value); a batch is a list of records. Sources stream
batches, so memory stays bounded by the batch size whatever the input size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from lamina.core.errors import LaminaError

Record = dict[str, Any]
Batch = list[Record]
OnError = Literal["skip", "fail"]
MAX_ERROR_EXAMPLES = 50


class DataError(LaminaError):
    """Bad input data: the message names the file and line/offset."""

    exit_code = 7
    http_status = 422
    code = "invalid_data"


def row_hash(record: Record) -> int:
    """The one hash of a row's content (not where it came from, ``_origin``): 64-bit xxh3 of its
    canonical JSON. It seeds the row's split key, tells a diff which rows two versions share, and
    chains an appended version's fingerprint."""
    import json

    import xxhash

    content = {k: v for k, v in record.items() if k != "_origin"}
    return xxhash.xxh3_64_intdigest(json.dumps(content, sort_keys=True, default=repr).encode())


def rows_to_table(rows: Batch) -> Any:
    """An Arrow table with a column for every key in any row (``pa.Table.from_pylist`` takes its
    columns from the first row only, silently dropping fields that appear later)."""
    import pyarrow as pa

    names = dict.fromkeys(key for row in rows for key in row)
    return pa.table({name: [row.get(name) for row in rows] for name in names})


@dataclass
class ErrorLog:
    """Bad records seen while reading: ``fail`` raises on the first, ``skip`` counts them for the report."""

    policy: OnError = "fail"
    count: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)

    def bad(self, where: str, kind: str, detail: str) -> None:
        if self.policy == "fail":
            raise DataError(
                f"{where}: {kind}: {detail}",
                hint="fix the record, or pass --on-error skip to skip bad records (the report counts them)",
            )
        self.count += 1
        self.by_kind[kind] += 1
        if len(self.examples) < MAX_ERROR_EXAMPLES:
            self.examples.append({"where": where, "kind": kind, "detail": detail[:300]})

    def summary(self) -> dict[str, Any]:
        return {"skipped": self.count, "by_kind": dict(self.by_kind), "examples": self.examples}
