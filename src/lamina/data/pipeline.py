"""Build a DatasetVersion from a recipe: the data layer's one entry point.

```
pass 1  source ─batches─► steps (clean, dedup, transform, augment) ─► staging Parquet chunks
        (+ per-row split key and label/group, a few bytes per row)
pass 2  split assignment ─► seeded shuffle (windowed) ─► data/<split>.parquet + stats
        (+ tokenizer trained on the train split)
then    report + checks ─► one atomic commit (nothing is committed if anything fails)
```

Memory is bounded by the batch size, the shuffle window and a few bytes per row, so inputs larger
than RAM build fine. An unchanged recipe on unchanged input returns the existing version.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from lamina.core.catalog import DatasetVersion
from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace

# Importing the step modules registers their steps.
from lamina.data import augment, cleaning, dedup, transforms  # noqa: F401
from lamina.data.distributed import ray_batches, split_row_local
from lamina.data.recipe import Recipe
from lamina.data.records import Batch, DataError, ErrorLog, OnError, row_hash, rows_to_table
from lamina.data.report import StatsCollector, drift, render_html
from lamina.data.sources import SourceSpec, make_source
from lamina.data.splits import assign_build, row_key, split_names
from lamina.data.steps import Step, StepContext, StepStats, make_step, run_steps

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
STAGING_CHUNK_ROWS = 20_000  # bounds pass-1 memory: rows are held as Python objects until flushed
Progress = Callable[[str, int], None]  # (phase, rows so far)


@dataclass
class BuildResult:
    version: DatasetVersion
    reused: bool
    report: dict[str, Any]


def recipe_fingerprint(recipe: Recipe, input_fingerprint: str) -> str:
    canonical = json.dumps(recipe.model_dump(mode="json", exclude={"description", "license"}), sort_keys=True)
    digest = xxhash.xxh3_128(f"{FORMAT_VERSION}\0{canonical}\0{input_fingerprint}".encode())
    return "xxh3:" + digest.hexdigest()


def _existing(ws: Workspace, name: str, fingerprint: str) -> DatasetVersion | None:
    for artifact in ws.catalog.find("dataset_version", name):
        if isinstance(artifact, DatasetVersion) and artifact.fingerprint == fingerprint:
            return artifact
    return None


def _to_table(batch: Batch, errors: ErrorLog) -> pa.Table | None:
    """Arrow table of a batch; records whose field types disagree with the rest are reported and dropped."""
    try:
        return rows_to_table(batch)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    kinds: dict[str, Counter[str]] = {}
    for record in batch:
        for key, value in record.items():
            kinds.setdefault(key, Counter())[type(value).__name__ if value is not None else "null"] += 1
    majority = {k: next((t for t, _ in c.most_common() if t != "null"), "null") for k, c in kinds.items()}
    good = []
    for record in batch:
        wrong = [
            k
            for k, v in record.items()
            if v is not None
            and type(v).__name__ != majority[k]
            and not (majority[k] == "float" and isinstance(v, int))
        ]
        if wrong:
            errors.bad(
                str(record.get("_origin", "?")),
                "wrong schema",
                f"field {wrong[0]!r} is {type(record[wrong[0]]).__name__}, expected {majority[wrong[0]]}",
            )
        else:
            good.append(record)
    return rows_to_table(good) if good else None


def _artifact_source(ws: Workspace, spec: str | dict[str, Any]) -> tuple[str | dict[str, Any], str | None]:
    """``{artifact: REF, path: FILE-IN-IT, ...}`` reads a catalogued artifact's files (lineage recorded)."""
    if not isinstance(spec, dict) or "artifact" not in spec:
        return spec, None
    artifact = ws.resolve(str(spec["artifact"]))
    folder = ws.artifact_path(artifact)
    rest = {k: v for k, v in spec.items() if k != "artifact"}
    if not rest.get("path") and artifact.uri is not None:
        manifest = ws.store.manifest(artifact.id)
        rest["path"] = manifest.files[0].path if manifest.single_file else ""
    rest["path"] = str(folder / rest["path"]) if rest.get("path") else str(folder)
    if rest.get("labels"):
        rest["labels"] = str(folder / rest["labels"])
    return rest, artifact.id


def row_identity(record: dict[str, Any]) -> bytes:
    """The row's content hash (``records.row_hash``) as the bytes its split key is seeded from."""
    return row_hash(record).to_bytes(8, "big")


def _finish_report(
    out_dir: Path, recipe: Recipe, report: dict[str, Any], parent_report: dict[str, Any]
) -> list[dict[str, Any]]:
    """Add drift and checks, write report.json/html and recipe.json; return the failed checks."""
    if parent_report.get("stats"):
        report["drift"] = drift(parent_report["stats"], report["stats"])
    report["checks"] = _checks(recipe, report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "report.html").write_text(render_html(report))
    (out_dir / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=1))
    return [c for c in report["checks"] if not c["passed"]]


def build_dataset(
    ws: Workspace,
    name: str,
    recipe: Recipe,
    *,
    base_dir: Path | None = None,
    on_error: OnError | None = None,
    progress: Progress | None = None,
    extra_parents: list[tuple[str, str]] | None = None,
    source: SourceSpec | None = None,
    executor: str = "local",
) -> BuildResult:
    """Run ``recipe`` and commit a new version of dataset ``name`` (or return the identical existing one).

    ``executor="ray"`` runs the recipe's leading row-local steps on Ray workers (lamina.data.distributed);
    the version is the same as the one-process build's.
    """
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}", hint="use local or ray")
    from lamina.core.refs import validate_name

    validate_name(name, "dataset name")
    if on_error:
        recipe = recipe.model_copy(update={"on_error": on_error})
    extra_parents = list(extra_parents or [])
    if source is None:
        spec, parent_id = _artifact_source(ws, recipe.source)
        if parent_id:
            extra_parents.append((parent_id, "derived_from"))
        source = make_source(spec, base_dir or ws.root)
    steps = [make_step(s) for s in recipe.steps]
    ctx = StepContext(text_field=recipe.text_field, seed=recipe.seed)
    input_fp = source.fingerprint()
    if input_fp is not None:
        found = _existing(ws, name, recipe_fingerprint(recipe, input_fp))
        if found is not None:
            return BuildResult(found, True, _read_report(ws, found))
    staging_root = ws.root / ".cache" / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=staging_root))
    try:
        return _build(ws, name, recipe, source, steps, ctx, input_fp, work, progress, extra_parents, executor)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build(
    ws: Workspace,
    name: str,
    recipe: Recipe,
    source: SourceSpec,
    steps: list[Step],
    ctx: StepContext,
    input_fp: str | None,
    work: Path,
    progress: Progress | None,
    extra_parents: list[tuple[str, str]],
    executor: str = "local",
) -> BuildResult:
    errors = ErrorLog(recipe.on_error)
    stats = [StepStats(type(s).name) for s in steps]
    for step in steps:
        step.start(ctx)
    spec = recipe.split
    strata_field = spec.field if spec.by in ("stratified", "group") else None
    raw_digest = xxhash.xxh3_128() if input_fp is None else None

    # -- pass 1: source → steps → staging chunks ------------------------------------------------
    chunks: list[Path] = []
    keys = array("Q")  # split key per real row, 8 bytes each
    strata: list[Any] = []
    synthetic_of = array("q")  # per staged row: -1 for a real row, else the index (in keys) of its original
    pending: Batch = []
    rows_read = 0

    def flush() -> None:
        nonlocal pending
        table = _to_table(pending, errors)
        pending = []
        if table is None or table.num_rows == 0:
            return
        path = work / f"chunk-{len(chunks):05d}.parquet"
        pq.write_table(table, path)
        chunks.append(path)

    remote: list[Step] = []
    if executor == "ray":
        remote, _ = split_row_local(steps)
        if not remote:
            log.info("no row-local step leads the recipe: the build runs in this process")
    source_batches = source.batches(errors, recipe.batch_size)
    pairs = (
        ray_batches(source_batches, remote, stats[: len(remote)], ctx)
        if remote
        else ((batch, batch) for batch in source_batches)
    )
    for batch, partial in pairs:
        rows_read += len(batch)
        if raw_digest is not None:
            for record in batch:
                raw_digest.update(json.dumps(record, sort_keys=True, default=repr).encode())
        kept = run_steps(steps[len(remote) :], stats[len(remote) :], partial) if partial else partial
        for record in kept:
            if record.get("synthetic"):
                # A synthetic copy follows its original (the last real row) and is kept only in train,
                # so no near-copy of a validation row ever sits in train.
                synthetic_of.append(len(keys) - 1)
                continue
            synthetic_of.append(-1)
            identity = row_identity(record)
            keys.append(row_key(spec.seed, identity))
            if strata_field is not None:
                if strata_field not in record:
                    raise DataError(
                        f"split field {strata_field!r} is missing in {record.get('_origin', '?')}",
                        hint="add a 'missing' step that drops or imputes it",
                    )
                strata.append(record[strata_field])
        pending.extend(kept)
        if len(pending) >= STAGING_CHUNK_ROWS:
            flush()
        if progress:
            progress("read", rows_read)
    if pending:
        flush()
    for step, st in zip(steps, stats, strict=True):
        step.finish(st)

    if raw_digest is not None:
        input_fp = "xxh3:" + raw_digest.hexdigest()
        found = _existing(ws, name, recipe_fingerprint(recipe, input_fp))
        if found is not None:
            return BuildResult(found, True, _read_report(ws, found))
    assert input_fp is not None
    fingerprint = recipe_fingerprint(recipe, input_fp)

    # -- pass 2: splits, shuffle, tokenizer, stats → data/<split>.parquet ---------------------------
    names = split_names(spec)
    real_assignment = assign_build(spec, np.frombuffer(keys, dtype=np.uint64), strata or None)
    assignment = np.empty(len(synthetic_of), dtype=np.int16)
    real_index = 0
    for i, original in enumerate(synthetic_of):
        if original < 0:
            assignment[i] = real_assignment[real_index]
            real_index += 1
        else:
            assignment[i] = 0 if original >= 0 and real_assignment[original] == 0 else -1  # -1: not kept
    out_dir = work / "version"
    (out_dir / "data").mkdir(parents=True)
    collector = StatsCollector(recipe.text_field, recipe.seed)
    tokenizer = None
    if recipe.tokenizer is not None:
        tokenizer = transforms.train_tokenizer(
            _texts(chunks, assignment, recipe.text_field, split_index=0),
            recipe.tokenizer,
            out_dir / "tokenizer",
        )
    schema = pa.unify_schemas([pq.read_schema(c) for c in chunks]) if chunks else None
    writers: dict[str, pq.ParquetWriter] = {}
    buffers: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    rng = np.random.default_rng(spec.seed)
    split_counts = {n: 0 for n in names}

    def write(split: str, rows: list[dict[str, Any]]) -> None:
        if spec.shuffle:
            rows = [rows[i] for i in rng.permutation(len(rows))]
        if tokenizer is not None and recipe.tokenizer and recipe.tokenizer.encode:
            for row, enc in zip(
                rows, tokenizer.encode_batch([r.get(recipe.text_field) or "" for r in rows]), strict=True
            ):
                row["input_ids"] = enc.ids
        table = rows_to_table(rows)
        if split not in writers:
            writers[split] = pq.ParquetWriter(out_dir / "data" / f"{split}.parquet", table.schema)
        writers[split].write_table(table.cast(writers[split].schema))
        split_counts[split] += len(rows)

    row_index = 0
    synthetic_outside_train = 0
    try:
        for chunk in chunks:
            table = pq.read_table(chunk)
            if schema is not None:
                table = _conform(table, schema)
            for row in table.to_pylist():
                split_index = assignment[row_index]
                row_index += 1
                if split_index < 0:
                    synthetic_outside_train += 1
                    continue
                split = names[split_index]
                collector.add(row, split)
                buffers[split].append(row)
                if len(buffers[split]) >= spec.shuffle_window:
                    write(split, buffers[split])
                    buffers[split] = []
            if progress:
                progress("write", row_index)
        for split, rows in buffers.items():
            if rows:
                write(split, rows)
    finally:
        for writer in writers.values():
            writer.close()

    # -- report, checks, commit -------------------------------------------------------------------
    parent = ws.catalog.latest("dataset_version", name)
    report = _report(name, recipe, stats, errors, collector, rows_read, split_counts)
    report["synthetic_dropped_outside_train"] = synthetic_outside_train
    # where the steps ran (the version does not depend on it)
    report["executor"] = {"kind": "ray" if remote else "local", "steps_on_workers": [s.name for s in remote]}
    failed = _finish_report(out_dir, recipe, report, _read_report(ws, parent) if parent is not None else {})
    if failed:
        kept = _keep_failed_report(ws, name, out_dir)
        raise DataError(
            "build of dataset {!r} failed its checks: {}".format(
                name, "; ".join(f"{c['check']} = {c['value']:.4g} (limit {c['limit']})" for c in failed)
            ),
            hint=f"nothing was committed; see the report at {kept}",
        )
    rows_total = sum(split_counts.values())
    version = DatasetVersion(
        name=name,
        fingerprint=fingerprint,
        num_rows=rows_total,
        splits={k: v for k, v in split_counts.items() if v},
        data_schema=_schema_json(out_dir / "data"),
        recipe=recipe.model_dump(mode="json"),
        description=recipe.description,
        meta={
            "source": source.describe(),
            "input_fingerprint": input_fp,
            "format": FORMAT_VERSION,
            "synthetic_rows": collector.synthetic,
            "tokenizer": tokenizer is not None,
        },
    )
    parents = list(extra_parents)
    if parent is not None:
        parents.append((parent.id, "previous_version"))
    result = ws.commit(out_dir, version, parents)
    log.info("dataset built", extra={"dataset": name, "version": result.artifact.version, "rows": rows_total})
    return BuildResult(result.artifact, False, report)  # type: ignore[arg-type]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a staging chunk every column of the unified schema (missing ones as nulls)."""
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"records disagree on a field's type across the input: {exc}",
            hint="make the field's type consistent in the source",
        ) from exc


def _texts(chunks: list[Path], assignment: np.ndarray, field: str, split_index: int) -> Iterator[str]:
    index = 0
    for chunk in chunks:
        column = (
            pq.read_table(chunk, columns=[field])[field].to_pylist()
            if field in pq.read_schema(chunk).names
            else []
        )
        for value in column:
            if assignment[index] == split_index and isinstance(value, str):
                yield value
            index += 1


def _schema_json(data_dir: Path) -> dict[str, str]:
    for path in sorted(data_dir.glob("*.parquet")):
        return {f.name: str(f.type) for f in pq.read_schema(path)}
    return {}


def _report(
    name: str,
    recipe: Recipe,
    stats: list[StepStats],
    errors: ErrorLog,
    collector: StatsCollector,
    rows_read: int,
    split_counts: dict[str, int],
) -> dict[str, Any]:
    dup_dropped = sum(v for st in stats for k, v in st.dropped.items() if "duplicate" in k)
    rows = sum(split_counts.values())
    return {
        "name": name,
        "source": str(recipe.source),
        "rows_read": rows_read,
        "rows": rows,
        "splits": {k: v for k, v in split_counts.items() if v},
        "steps": [st.to_dict() for st in stats],
        "errors": errors.summary(),
        "duplicate_rate": dup_dropped / rows_read if rows_read else 0.0,
        "drop_rate": (rows_read - rows + collector.synthetic) / rows_read if rows_read else 0.0,
        "error_rate": errors.count / (rows_read + errors.count) if rows_read + errors.count else 0.0,
        "stats": collector.summary(),
        "drift": [],
    }


def _checks(recipe: Recipe, report: dict[str, Any]) -> list[dict[str, Any]]:
    checks = recipe.checks
    out = [
        {
            "check": "min_rows",
            "value": report["rows"],
            "limit": checks.min_rows,
            "passed": report["rows"] >= checks.min_rows,
        }
    ]
    for key, value in (
        ("max_dup_rate", report["duplicate_rate"]),
        ("max_drop_rate", report["drop_rate"]),
        ("max_error_rate", report["error_rate"]),
    ):
        limit = getattr(checks, key)
        if limit is not None:
            out.append({"check": key, "value": value, "limit": limit, "passed": value <= limit})
    return out


def _keep_failed_report(ws: Workspace, name: str, out_dir: Path) -> Path:
    from datetime import UTC, datetime

    target = ws.root / ".cache" / "failed-builds" / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    target.mkdir(parents=True, exist_ok=True)
    for file in ("report.json", "report.html"):
        shutil.copy(out_dir / file, target / file)
    return target / "report.html"


def _read_report(ws: Workspace, version: Any) -> dict[str, Any]:
    try:
        with ws.store.open(version.id, "report.json") as fh:
            return json.loads(fh.read())
    except (NotFound, OSError, json.JSONDecodeError):  # no report (e.g. made by hand): no drift baseline
        return {}
