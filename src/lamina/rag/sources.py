"""Documents from anywhere the data layer reads, not only local files:

- document files on any fsspec URL (``s3://bucket/handbook/``, ``https://…/guide.pdf``), read by
  the same readers as local ones;
- the records of a data-layer source (a SQL query, a paginated HTTP JSON API, JSONL/CSV/Parquet on
  any URL: ``lamina.data.sources``), one document per record;
- the rows of a dataset version.

Each document's ``source`` starts with a key for where it came from (the URL, or ``sql:…#``), so a
re-ingest from the same place replaces changed documents and deletes the ones gone, and leaves
documents from elsewhere alone. A record's identity is its ``id_field`` when given, else the hash
of its text: reordered rows are not re-embedded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any

from lamina.core.errors import ConfigError
from lamina.rag.documents import READERS, Document, DocumentError, parse


def is_url(path: str) -> bool:
    return "://" in str(path)


def from_urls(urls: Iterable[str], groups: Iterable[str], storage_options: dict[str, Any] | None = None
              ) -> list[Document]:  # fmt: skip
    """Every readable document under each URL (a file, or a folder walked), read before returning."""
    import fsspec

    documents = []
    for url in urls:
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except ImportError as exc:
            raise ConfigError(
                f"{url} needs an optional package: {exc}", hint="pip install 'lamina[s3]'"
            ) from None
        protocol = url.split("://", 1)[0]
        if fs.isdir(root):
            files = sorted(p for p in fs.find(root) if PurePosixPath(p).suffix.lower() in READERS)
        elif fs.exists(root):
            files = [root]
        else:
            raise DocumentError(f"{url} does not exist")
        for path in files:
            kind = READERS.get(PurePosixPath(path).suffix.lower())
            if kind is None:
                raise DocumentError(
                    f"{url} has an unsupported extension", hint=f"supported: {', '.join(READERS)}"
                )
            source = path if is_url(path) else f"{protocol}://{path}"
            documents.append(parse(fs.cat_file(path), source, kind, groups))
    return documents


def from_records(
    records: Iterable[dict[str, Any]], key: str, groups: Iterable[str], *, text_field: str = "text",
    title_field: str | None = None, id_field: str | None = None,
) -> list[Document]:  # fmt: skip
    """One document per record: its ``text_field`` (Markdown headings are read as headings)."""
    documents, seen = [], set()
    for number, record in enumerate(records, 1):
        where = record.get("_origin", f"record {number}")
        text = record.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise DocumentError(
                f"{where}: field {text_field!r} is missing or empty",
                hint=f"fields: {', '.join(k for k in record if not k.startswith('_'))}; pass --text-field",
            )
        ident = record.get(id_field) if id_field else hashlib.sha256(text.encode()).hexdigest()[:16]
        if ident is None:
            raise DocumentError(f"{where}: field {id_field!r} is missing")
        source = f"{key}#{ident}"
        if source in seen:  # the same text twice (or a repeated id): one document
            continue
        seen.add(source)
        document = parse(text.encode(), source, "markdown", groups)
        if title_field and record.get(title_field):
            document.title = str(record[title_field])
        documents.append(document)
    if not documents:
        raise DocumentError(f"{key} gave no records")
    return documents


def from_source(
    spec: dict[str, Any], groups: Iterable[str], base: Any = None, **fields: Any
) -> tuple[list[Document], str]:
    """The records of a data-layer source spec, as documents; and the key that scopes them."""
    from lamina.data.records import ErrorLog
    from lamina.data.sources import make_source

    source = make_source(spec, base)
    key = f"{source.type}:{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]}"
    errors = ErrorLog()

    def records() -> Iterator[dict[str, Any]]:
        for batch in source.batches(errors):
            yield from batch

    return from_records(records(), key, groups, **fields), key  # a bad record raises (policy "fail")


def from_dataset(ws: Any, ref: str, groups: Iterable[str], **fields: Any) -> tuple[list[Document], str]:
    """A dataset version's rows (every split) as documents, keyed by the dataset's name: ingesting a
    newer version replaces changed rows and deletes rows it no longer has."""
    from lamina.data.versions import iter_rows, resolve_version

    version = resolve_version(ws, ref)
    key = f"dataset:{version.name}"
    return from_records(iter_rows(ws, version), key, groups, **fields), key
