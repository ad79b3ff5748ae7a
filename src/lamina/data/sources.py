"""Where records come from: files (txt/md/html, jsonl, json, csv, parquet, images, MNIST idx, wav)
on any fsspec URL, a SQL query, a paginated HTTP JSON API, or another artifact.

Every source streams batches (bounded memory) and reports a bad record with its file and line or
byte offset through the ``ErrorLog``. Sources are registered by ``type``; a new one subclasses
``SourceSpec`` and calls ``register_source`` (the built-ins use the same door).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import struct
import wave
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

import fsspec
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from lamina.core.errors import ConfigError
from lamina.core.extensions import SOURCES
from lamina.core.settings import validation_summary
from lamina.core.store import MANIFEST_NAME
from lamina.data.records import Batch, DataError, ErrorLog, Record

TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".html", ".htm"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
AUDIO_EXTENSIONS = {".wav"}
DEFAULT_BATCH = 1000


class SourceSpec(BaseModel):
    """Base of every source: validated options plus ``batches()``."""

    model_config = ConfigDict(extra="forbid")
    type: str

    def batches(self, errors: ErrorLog, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch]:
        raise NotImplementedError  # abstract: every registered source implements it

    def fingerprint(self) -> str | None:
        """A hash of the input known before reading it (files), or None (queries: hashed while read)."""
        return None

    def describe(self) -> str:
        return self.type

    def resolved(self, base: Path) -> SourceSpec:
        """This spec with relative local paths made relative to ``base`` (the workspace)."""
        return self


def register_source(cls: type[SourceSpec]) -> type[SourceSpec]:
    """Make ``type: NAME`` usable in recipes (``lamina.core.extensions.SOURCES``; a taken name is refused)."""
    return SOURCES.add(cls.model_fields["type"].default, cls)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


class FileSource(SourceSpec):
    """A file, a folder (read recursively), or a glob, on any fsspec URL (``s3://…`` needs lamina[s3])."""

    path: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    extensions: ClassVar[set[str]] = set()

    def resolved(self, base: Path) -> FileSource:
        if "://" in self.path or Path(self.path).expanduser().is_absolute():
            return self
        return self.model_copy(update={"path": str((base / self.path).resolve())})

    def _fs(self) -> tuple[Any, str]:
        try:
            return fsspec.core.url_to_fs(self.path, **self.storage_options)
        except ImportError as exc:
            raise ConfigError(f"source {self.path!r} needs an optional package: {exc}") from exc

    def files(self) -> list[str]:
        fs, root = self._fs()
        if any(ch in root for ch in "*?["):
            found = sorted(fs.glob(root))
        elif fs.isdir(root):
            found = sorted(
                p
                for p in fs.find(root)
                if not PurePosixPath(p).name.startswith(".") and _name(p) != MANIFEST_NAME
            )
        elif fs.exists(root):
            found = [root]
        else:
            raise DataError(
                f"source {self.path!r} does not exist", hint="check the path (relative to the workspace)"
            )
        if self.extensions:
            found = [p for p in found if _suffix(p) in self.extensions] if len(found) > 1 else found
        if not found:
            raise DataError(f"source {self.path!r} has no {'/'.join(sorted(self.extensions))} files")
        return found

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        """One record at a time; ``batches`` groups them."""
        raise NotImplementedError  # abstract: each file source reads records (parquet batches natively)

    def batches(self, errors: ErrorLog, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch]:
        batch: Batch = []
        for record in self.records(errors):
            batch.append(record)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def open(self, path: str) -> Any:
        fs, _ = self._fs()
        handle = fs.open(path, "rb")
        return gzip.open(handle) if path.endswith(".gz") else handle

    def fingerprint(self) -> str:
        fs, root = self._fs()
        digest = xxhash.xxh3_128()
        for path in self.files():
            digest.update(f"{PurePosixPath(path).name}\0".encode())
            with fs.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
        return "xxh3:" + digest.hexdigest()

    def describe(self) -> str:
        return f"{self.type} {self.path}"


def _suffix(path: str) -> str:
    name = PurePosixPath(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return PurePosixPath(name).suffix


def _name(path: str) -> str:
    return PurePosixPath(path).name


@register_source
class TextSource(FileSource):
    """Plain text, Markdown or HTML (tags stripped) → one record per file, paragraph or line."""

    type: Literal["text"] = "text"
    split_by: Literal["file", "paragraph", "line"] = "paragraph"
    field: str = "text"
    extensions: ClassVar[set[str]] = TEXT_EXTENSIONS

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        for path in self.files():
            with self.open(path) as fh:
                raw = fh.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.bad(f"{_name(path)} byte {exc.start}", "bad encoding", f"not UTF-8 ({exc.reason})")
                continue
            if _suffix(path) in {".html", ".htm"}:
                text = html_to_text(text)
            for line_no, chunk in self._chunks(text):
                yield {self.field: chunk, "_origin": f"{_name(path)}:{line_no}"}

    def _chunks(self, text: str) -> Iterator[tuple[int, str]]:
        if self.split_by == "file":
            if text.strip():
                yield 1, text
            return
        line_no, start_line, current = 0, 1, []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if self.split_by == "line":
                if line.strip():
                    yield line_no, line
                continue
            if line.strip():
                if not current:
                    start_line = line_no
                current.append(line)
            elif current:
                yield start_line, "\n".join(current)
                current = []
        if current:
            yield start_line, "\n".join(current)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page (scripts and styles dropped), block elements on their own lines."""
    from selectolax.lexbor import LexborHTMLParser as HTMLParser

    tree = HTMLParser(html)
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    root = tree.body or tree.root
    if root is None:
        return ""
    text = root.text(separator="\n", strip=True)
    return "\n\n".join(line for line in text.splitlines() if line.strip())


@register_source
class JsonlSource(FileSource):
    """One JSON object per line."""

    type: Literal["jsonl"] = "jsonl"
    extensions: ClassVar[set[str]] = {".jsonl", ".ndjson"}

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        for path in self.files():
            file_name = _name(path)
            with self.open(path) as fh:
                for line_no, raw in enumerate(fh, start=1):
                    if not raw.strip():
                        continue
                    where = f"{file_name} line {line_no}"
                    try:
                        record = json.loads(raw.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        errors.bad(where, "bad encoding", f"not UTF-8 at byte {exc.start} of the line")
                        continue
                    except json.JSONDecodeError as exc:
                        errors.bad(where, "invalid JSON", f"{exc.msg} (column {exc.colno})")
                        continue
                    if not isinstance(record, dict):
                        errors.bad(
                            where, "wrong schema", f"expected a JSON object, got {type(record).__name__}"
                        )
                        continue
                    record["_origin"] = f"{file_name}:{line_no}"
                    yield record


@register_source
class JsonSource(FileSource):
    """A JSON document holding a list of objects (``records_path`` is a dotted path to the list).

    The whole document is parsed at once (JSON arrays cannot be streamed line by line); use JSONL
    for inputs larger than memory.
    """

    type: Literal["json"] = "json"
    records_path: str = ""
    extensions: ClassVar[set[str]] = {".json"}

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        for path in self.files():
            with self.open(path) as fh:
                try:
                    data = json.loads(fh.read().decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    errors.bad(_name(path), "invalid JSON", str(exc))
                    continue
            for part in [p for p in self.records_path.split(".") if p]:
                data = data.get(part) if isinstance(data, dict) else None
            if not isinstance(data, list):
                errors.bad(_name(path), "wrong schema", f"records_path {self.records_path!r} is not a list")
                continue
            for index, record in enumerate(data):
                if not isinstance(record, dict):
                    errors.bad(f"{_name(path)} item {index}", "wrong schema", "expected an object")
                    continue
                yield {**record, "_origin": f"{_name(path)}#{index}"}


@register_source
class CsvSource(FileSource):
    """CSV/TSV with a header row. Values stay strings; empty cells become None (missing)."""

    type: Literal["csv"] = "csv"
    delimiter: str = ","
    extensions: ClassVar[set[str]] = {".csv", ".tsv"}

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        for path in self.files():
            delimiter = "\t" if _suffix(path) == ".tsv" and self.delimiter == "," else self.delimiter
            with self.open(path) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                reader = csv.reader(text, delimiter=delimiter)
                try:
                    header = next(reader)
                except StopIteration:
                    continue
                except UnicodeDecodeError as exc:
                    errors.bad(f"{_name(path)} header", "bad encoding", str(exc))
                    continue
                header = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    except UnicodeDecodeError as exc:
                        errors.bad(
                            f"{_name(path)} line {reader.line_num + 1}",
                            "bad encoding",
                            f"not UTF-8: {exc.reason}",
                        )
                        break  # the decoder cannot resynchronise inside this file
                    except csv.Error as exc:
                        errors.bad(f"{_name(path)} line {reader.line_num}", "malformed CSV", str(exc))
                        continue
                    if not row:
                        continue
                    where = f"{_name(path)} line {reader.line_num}"
                    if len(row) != len(header):
                        errors.bad(where, "wrong schema", f"expected {len(header)} fields, got {len(row)}")
                        continue
                    record: Record = {k: (v if v != "" else None) for k, v in zip(header, row, strict=True)}
                    record["_origin"] = f"{_name(path)}:{reader.line_num}"
                    yield record


@register_source
class ParquetSource(FileSource):
    """Parquet files, read in record batches."""

    type: Literal["parquet"] = "parquet"
    extensions: ClassVar[set[str]] = {".parquet"}

    def batches(self, errors: ErrorLog, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch]:
        import pyarrow.parquet as pq

        for path in self.files():
            with self.open(path) as fh:
                try:
                    reader = pq.ParquetFile(fh)
                except Exception as exc:  # pyarrow raises ArrowInvalid and OSError variants
                    errors.bad(_name(path), "unreadable parquet", str(exc))
                    continue
                offset = 0
                for rb in reader.iter_batches(batch_size=batch_size):
                    rows = rb.to_pylist()
                    for i, row in enumerate(rows):
                        row.setdefault("_origin", f"{_name(path)}#{offset + i}")
                    offset += len(rows)
                    yield rows


class MediaFileSource(FileSource):
    """One record per media file, labelled by its parent folder; subclasses decode and validate."""

    label_from: Literal["folder", "none"] = "folder"

    def read_media(self, data: bytes) -> Record:
        """Fields describing ``data``; raise ValueError (or OSError) if the file is unreadable."""
        raise NotImplementedError  # abstract: each media source implements it

    error_kind: ClassVar[str] = "unreadable file"

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        for path in self.files():
            with self.open(path) as fh:
                data = fh.read()
            try:
                record = self.read_media(data)
            except (ValueError, OSError, EOFError, SyntaxError) as exc:
                errors.bad(_name(path), self.error_kind, str(exc))
                continue
            record["_origin"] = _name(path)
            if self.label_from == "folder":
                record["label"] = PurePosixPath(path).parent.name
            yield record


@register_source
class ImageFolderSource(MediaFileSource):
    """Image files (png/jpg/...); the label is the parent folder's name (``label_from: folder``)."""

    type: Literal["images"] = "images"
    extensions: ClassVar[set[str]] = IMAGE_EXTENSIONS
    error_kind: ClassVar[str] = "unreadable image"

    def read_media(self, data: bytes) -> Record:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:  # UnidentifiedImageError is an OSError
            img.load()  # decodes fully: a truncated file fails here
            return {"image": data, "width": img.width, "height": img.height, "mode": img.mode}


@register_source
class IdxSource(FileSource):
    """MNIST-style IDX image files (optionally gzipped) with an optional IDX label file."""

    type: Literal["idx"] = "idx"
    labels: str | None = None

    def resolved(self, base: Path) -> IdxSource:
        spec = super().resolved(base)
        if self.labels and "://" not in self.labels and not Path(self.labels).is_absolute():
            spec = spec.model_copy(update={"labels": str((base / self.labels).resolve())})
        return spec  # type: ignore[return-value]

    def fingerprint(self) -> str:
        digest = xxhash.xxh3_128(super().fingerprint().encode())
        if self.labels:
            digest.update(FileSource(type="idx", path=self.labels).fingerprint().encode())
        return "xxh3:" + digest.hexdigest()

    def records(self, errors: ErrorLog) -> Iterator[Record]:
        import numpy as np
        from PIL import Image

        (path,) = self.files()[:1]
        images = self.open(path)
        labels = self.open(self.labels) if self.labels else None
        try:
            magic, count = struct.unpack(">II", images.read(8))
            if magic != 0x00000803:
                raise DataError(
                    f"{_name(path)}: not an IDX image file (magic {magic:#010x}, expected 0x00000803)"
                )
            rows, cols = struct.unpack(">II", images.read(8))
            if labels is not None:
                lmagic, lcount = struct.unpack(">II", labels.read(8))
                if lmagic != 0x00000801:
                    raise DataError(f"{self.labels}: not an IDX label file (magic {lmagic:#010x})")
                if lcount != count:
                    raise DataError(
                        f"{_name(path)} has {count} images but the label file has {lcount} labels"
                    )
            size = rows * cols
            for index in range(count):
                pixels = images.read(size)
                if len(pixels) < size:
                    errors.bad(
                        f"{_name(path)} image {index} (byte {16 + index * size})",
                        "truncated image",
                        f"file ends after {len(pixels)} of {size} bytes",
                    )
                    break
                png = io.BytesIO()
                Image.fromarray(np.frombuffer(pixels, dtype=np.uint8).reshape(rows, cols), mode="L").save(
                    png, "PNG"
                )
                record: Record = {
                    "image": png.getvalue(),
                    "width": cols,
                    "height": rows,
                    "mode": "L",
                    "_origin": f"{_name(path)}#{index}",
                }
                if labels is not None:
                    raw = labels.read(1)
                    if not raw:
                        errors.bad(
                            f"{self.labels} label {index}", "truncated labels", "label file ended early"
                        )
                        break
                    record["label"] = raw[0]
                yield record
        except struct.error as exc:
            raise DataError(f"{_name(path)}: truncated IDX header ({exc})") from exc
        finally:
            images.close()
            if labels is not None:
                labels.close()


@register_source
class WavSource(MediaFileSource):
    """PCM WAV files (stdlib ``wave``); the label is the parent folder's name."""

    type: Literal["wav"] = "wav"
    extensions: ClassVar[set[str]] = AUDIO_EXTENSIONS
    error_kind: ClassVar[str] = "unreadable audio"

    def read_media(self, data: bytes) -> Record:
        try:
            with wave.open(io.BytesIO(data)) as wav:
                rate, channels, frames = wav.getframerate(), wav.getnchannels(), wav.getnframes()
                if len(wav.readframes(frames)) < frames * channels * wav.getsampwidth():
                    raise ValueError("data chunk shorter than its header says (truncated)")
        except wave.Error as exc:
            raise ValueError(str(exc)) from exc
        return {
            "audio": data,
            "sample_rate": rate,
            "channels": channels,
            "duration_s": frames / rate if rate else 0.0,
        }


# --------------------------------------------------------------------------------------------------
# Queries and feeds
# --------------------------------------------------------------------------------------------------


@register_source
class SqlSource(SourceSpec):
    """Rows of a SQL query on any SQLAlchemy URL, streamed with a server-side cursor where supported."""

    type: Literal["sql"] = "sql"
    url: str
    query: str

    def resolved(self, base: Path) -> SqlSource:
        from lamina.core.settings import _resolve_sqlite_relative

        return self.model_copy(update={"url": _resolve_sqlite_relative(self.url, base)})

    def batches(self, errors: ErrorLog, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch]:
        import sqlalchemy as sa

        from lamina.core.catalog.db import create_catalog_engine

        engine = create_catalog_engine(self.url)
        try:
            with engine.connect() as conn:
                try:
                    result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(
                        sa.text(self.query)
                    )
                except sa.exc.SQLAlchemyError as exc:
                    raise DataError(
                        f"SQL source failed: {str(getattr(exc, 'orig', exc)).splitlines()[0]}",
                        hint="check the query and the url",
                    ) from exc
                offset = 0
                for part in result.mappings().partitions(batch_size):
                    rows = [
                        {k: _jsonable(v) for k, v in row.items()} | {"_origin": f"sql#{offset + i}"}
                        for i, row in enumerate(part)
                    ]
                    offset += len(rows)
                    yield rows
        finally:
            engine.dispose()

    def describe(self) -> str:
        from lamina.core.settings import redact_url

        return f"sql {redact_url(self.url)}: {self.query[:60]}"


@register_source
class HttpJsonSource(SourceSpec):
    """A paginated HTTP JSON API. Items come from ``items_field`` (dotted); the next page from
    ``next_field`` (a URL in the body) or, if unset, by incrementing ``page_param`` until a page is empty.
    """

    type: Literal["http"] = "http"
    url: str
    items_field: str = "items"
    next_field: str | None = None
    page_param: str = "page"
    start_page: int = 1
    max_pages: int = Field(10_000, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = 30.0

    def batches(self, errors: ErrorLog, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch]:
        import httpx

        url: str | None = self.url
        page = self.start_page
        with httpx.Client(headers=self.headers, timeout=self.timeout_s, follow_redirects=True) as client:
            for _ in range(self.max_pages):
                if url is None:
                    return
                params = {} if self.next_field else {self.page_param: page}
                try:
                    response = client.get(url, params=params or None)  # params={} would drop the query
                    response.raise_for_status()
                    body = response.json()
                except (httpx.HTTPError, ValueError) as exc:
                    raise DataError(f"HTTP source {url} (page {page}): {exc}") from exc
                items = _dotted(body, self.items_field)
                if not isinstance(items, list):
                    raise DataError(f"HTTP source {url} (page {page}): {self.items_field!r} is not a list")
                rows = []
                for index, item in enumerate(items):
                    if isinstance(item, dict):
                        rows.append({**item, "_origin": f"page {page}#{index}"})
                    else:
                        errors.bad(f"{url} page {page} item {index}", "wrong schema", "expected an object")
                for start in range(0, len(rows), batch_size):
                    yield rows[start : start + batch_size]
                if self.next_field:
                    nxt = _dotted(body, self.next_field)
                    url = str(httpx.URL(url).join(nxt)) if nxt else None
                elif not items:
                    return
                page += 1

    def describe(self) -> str:
        return f"http {self.url}"


def _dotted(data: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


class RecordsSource(SourceSpec):
    """Records handed over in memory (the live append path); not registered for recipes."""

    type: Literal["records"] = "records"
    records: list[dict[str, Any]]

    def batches(self, errors: ErrorLog, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch]:
        for start in range(0, len(self.records), batch_size):
            yield [dict(r) for r in self.records[start : start + batch_size]]

    def fingerprint(self) -> str:
        return (
            "xxh3:"
            + xxhash.xxh3_128(json.dumps(self.records, sort_keys=True, default=str).encode()).hexdigest()
        )


# --------------------------------------------------------------------------------------------------
# Choosing a source
# --------------------------------------------------------------------------------------------------

_BY_SUFFIX: dict[str, str] = {
    **{ext: "text" for ext in TEXT_EXTENSIONS},
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    **{ext: "images" for ext in IMAGE_EXTENSIONS},
    ".wav": "wav",
}


def infer_type(path: str, storage_options: dict[str, Any] | None = None) -> str:
    """The source type for a path, from its extension (or the extensions in a folder)."""
    name = PurePosixPath(path).name.lower()
    if "idx3-ubyte" in name:
        return "idx"
    suffix = _suffix(path)
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    if fs.isdir(root):
        kinds = [_BY_SUFFIX.get(_suffix(p)) for p in fs.find(root) if _name(p) != MANIFEST_NAME]
        kinds = [k for k in kinds if k]
        if kinds:
            return max(set(kinds), key=kinds.count)
    raise DataError(
        f"cannot tell what kind of data {path!r} holds",
        hint=f"name the source type explicitly; known types: {', '.join(SOURCES.names())}",
    )


def make_source(spec: dict[str, Any] | str, base: Path | None = None) -> SourceSpec:
    """Validate a source spec (a dict with ``type``, or a bare path whose type is inferred)."""
    from pydantic import ValidationError

    data: dict[str, Any] = {"path": spec} if isinstance(spec, str) else dict(spec)
    if data.get("type") in (None, "auto"):
        if "path" not in data:
            raise ConfigError("a source needs a 'type' (or a 'path' to infer it from)")
        path = data["path"]
        if base is not None and "://" not in path and not Path(path).is_absolute():
            path = str(base / path)
        data["type"] = infer_type(path, data.get("storage_options"))
    cls = SOURCES.entries.get(data["type"])
    if cls is None:
        raise ConfigError(
            f"unknown source type {data['type']!r}", hint=f"known: {', '.join(SOURCES.names())}"
        )
    try:
        source = cls.model_validate(data)
    except ValidationError as exc:
        problems = validation_summary(exc)
        raise ConfigError(f"invalid {data['type']} source: {problems}") from None
    return source.resolved(base) if base is not None else source


SourceFactory = Callable[[dict[str, Any]], SourceSpec]
