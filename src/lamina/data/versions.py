"""Reading dataset versions back: list, show, diff, export (jsonl | parquet | hf), rows, and append."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from lamina.core.catalog import DatasetVersion
from lamina.core.errors import InvalidReference, LaminaError
from lamina.core.workspace import Workspace
from lamina.data.recipe import Recipe
from lamina.data.records import Record, row_hash
from lamina.data.report import drift, strip_samples

ExportFormat = Literal["jsonl", "parquet", "hf"]


def resolve_version(ws: Workspace, ref: str) -> DatasetVersion:
    artifact = ws.resolve(ref, kind="dataset_version")
    if not isinstance(artifact, DatasetVersion):
        raise InvalidReference(f"{ref} is a {artifact.kind}, not a dataset version")
    return artifact


def list_versions(ws: Workspace, name: str | None = None) -> list[dict[str, Any]]:
    return [_summary(v) for v in ws.catalog.find("dataset_version", name) if isinstance(v, DatasetVersion)]


def _summary(version: DatasetVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "ref": version.ref,
        "id": version.id,
        "rows": version.num_rows,
        "splits": version.splits,
        "fingerprint": version.fingerprint,
        "created_at": version.created_at.isoformat() if version.created_at else None,
    }


def data_dir(ws: Workspace, version: DatasetVersion) -> Path:
    return ws.artifact_path(version) / "data"


def read_report(ws: Workspace, version: DatasetVersion) -> dict[str, Any]:
    with ws.store.open(version.id, "report.json") as fh:
        return json.loads(fh.read())


def show(ws: Workspace, ref: str) -> dict[str, Any]:
    """``{"name", "version", "rows", "splits", "steps": [{"name", "rows_in", "rows_out"}], ...}``."""
    version = resolve_version(ws, ref)
    report = read_report(ws, version)
    return {
        **_summary(version),
        "schema": version.data_schema,
        "steps": [{k: s[k] for k in ("name", "rows_in", "rows_out", "dropped")} for s in report["steps"]],
        "duplicate_rate": report["duplicate_rate"],
        "drop_rate": report["drop_rate"],
        "errors": report["errors"],
        "checks": report["checks"],
        "drift": report.get("drift", []),
        "stats": strip_samples(report["stats"]),
        "recipe": version.recipe,
        "report_html": str(ws.artifact_path(version) / "report.html"),
    }


def iter_rows(
    ws: Workspace, ref: str | DatasetVersion, split: str | None = None, columns: list[str] | None = None
) -> Iterator[Record]:
    version = resolve_version(ws, ref) if isinstance(ref, str) else ref
    splits = [split] if split else list(version.splits)
    for name in splits:
        path = data_dir(ws, version) / f"{name}.parquet"
        if not path.exists():
            raise LaminaError(
                f"{version.ref} has no split {name!r}", hint=f"splits: {', '.join(version.splits)}"
            )
        for batch in pq.ParquetFile(path).iter_batches(batch_size=2000, columns=columns):
            yield from batch.to_pylist()


def _row_hashes(ws: Workspace, version: DatasetVersion) -> np.ndarray:
    hashes = np.fromiter((row_hash(row) for row in iter_rows(ws, version)), dtype=np.uint64)
    return np.unique(hashes)


def diff(ws: Workspace, ref_a: str, ref_b: str) -> dict[str, Any]:
    """Rows added/removed (by content), schema and split changes, and drift tests from A to B."""
    a, b = resolve_version(ws, ref_a), resolve_version(ws, ref_b)
    ha, hb = _row_hashes(ws, a), _row_hashes(ws, b)
    schema_a, schema_b = a.data_schema or {}, b.data_schema or {}
    return {
        "a": _summary(a),
        "b": _summary(b),
        "rows_added": int(np.setdiff1d(hb, ha, assume_unique=True).size),
        "rows_removed": int(np.setdiff1d(ha, hb, assume_unique=True).size),
        "rows_common": int(np.intersect1d(ha, hb, assume_unique=True).size),
        "columns_added": sorted(set(schema_b) - set(schema_a)),
        "columns_removed": sorted(set(schema_a) - set(schema_b)),
        "type_changes": {
            c: [schema_a[c], schema_b[c]] for c in set(schema_a) & set(schema_b) if schema_a[c] != schema_b[c]
        },
        "splits": {
            s: [a.splits.get(s, 0), b.splits.get(s, 0)] for s in sorted(set(a.splits) | set(b.splits))
        },
        "recipe_changed": a.recipe != b.recipe,
        "drift": drift(read_report(ws, a)["stats"], read_report(ws, b)["stats"]),
    }


def export(ws: Workspace, ref: str, dest: Path, fmt: ExportFormat) -> Path:
    """Write a version as JSONL (bytes base64-encoded), Parquet, or an HF dataset (``load_from_disk``)."""
    version = resolve_version(ws, ref)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise LaminaError(
            f"{dest} exists and is not empty", hint="choose a new folder; export never overwrites"
        )
    dest.mkdir(parents=True, exist_ok=True)
    source = data_dir(ws, version)
    if fmt == "parquet":
        for split in version.splits:
            shutil.copy(source / f"{split}.parquet", dest / f"{split}.parquet")
    elif fmt == "jsonl":
        for split in version.splits:
            with open(dest / f"{split}.jsonl", "w", encoding="utf-8") as out:
                for row in iter_rows(ws, version, split):
                    encoded = {
                        k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v)
                        for k, v in row.items()
                    }
                    out.write(json.dumps(encoded, ensure_ascii=False) + "\n")
    else:
        import datasets

        splits = {s: datasets.Dataset.from_parquet(str(source / f"{s}.parquet")) for s in version.splits}
        datasets.DatasetDict(splits).save_to_disk(str(dest))
    (dest / "lamina_version.json").write_text(json.dumps(_summary(version), indent=1))
    return dest


def recipe_of(version: DatasetVersion) -> Recipe:
    return Recipe.model_validate(version.recipe)
