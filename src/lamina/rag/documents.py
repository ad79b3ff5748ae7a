"""Documents in: txt, md, html, pdf, docx → one ``Document`` with its structure kept.

A document is its text plus *blocks* (paragraphs, list items, table cells, code) that know their
page and heading path and where they sit in the text, so a chunk can cite exactly what it came from.
Each format is read by the library that knows it (pypdf, python-docx, selectolax); the markdown and
plain-text readers are a few lines of line handling, not worth a parser dependency.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lamina.core.errors import LaminaError


class DocumentError(LaminaError):
    """A document cannot be read (corrupt, empty, an unknown format)."""

    exit_code = 2
    http_status = 400
    code = "invalid_document"


@dataclass(frozen=True, slots=True)
class Block:
    text: str
    start: int  # character span in ``Document.text``
    end: int
    page: int | None = None  # 1-based, for paged formats
    headings: tuple[str, ...] = ()  # the heading path above the block, outermost first


@dataclass(slots=True)
class Document:
    source: str  # where it came from (a path or a URI): its identity inside a collection
    title: str
    text: str
    blocks: list[Block]
    content_hash: str  # sha256 of the bytes read: re-ingest replaces a document only when it changed
    groups: tuple[str, ...] = ()  # who may read it (API-key groups); empty means nobody but admins
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A block before it has a place in the text."""

    text: str
    page: int | None
    headings: tuple[str, ...]


def _assemble(
    source: str, title: str, raw: bytes, pieces: Iterable[_Piece], groups: tuple[str, ...]
) -> Document:
    blocks: list[Block] = []
    parts: list[str] = []
    at = 0
    for piece in pieces:
        text = piece.text.strip()
        if not text:
            continue
        if parts:
            at += 2  # the blank line between blocks
        blocks.append(Block(text, at, at + len(text), piece.page, piece.headings))
        parts.append(text)
        at += len(text)
    if not blocks:
        raise DocumentError(
            f"{source} has no text", hint="is it empty, or a scanned PDF without a text layer?"
        )
    return Document(source, title, "\n\n".join(parts), blocks, hashlib.sha256(raw).hexdigest(), groups)


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _markdown(text: str) -> tuple[str | None, list[_Piece]]:
    """Paragraphs, list items and fenced code under their ``#`` headings."""
    pieces: list[_Piece] = []
    path: list[str] = []
    title = None
    paragraph: list[str] = []
    fence: list[str] | None = None

    def flush() -> None:
        if paragraph:
            pieces.append(_Piece("\n".join(paragraph), None, tuple(path)))
            paragraph.clear()

    for line in text.splitlines():
        if fence is not None:
            fence.append(line)
            if line.strip().startswith("```"):
                pieces.append(_Piece("\n".join(fence), None, tuple(path)))
                fence = None
            continue
        if line.strip().startswith("```"):
            flush()
            fence = [line]
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level, name = len(heading.group(1)), heading.group(2)
            del path[level - 1 :]
            path.extend([""] * (level - 1 - len(path)))
            path.append(name)
            title = title or name
            continue
        if not line.strip():
            flush()
        elif (
            re.match(r"^\s*([-*+]|\d+[.)])\s+", line)
            and paragraph
            and not re.match(r"^\s*([-*+]|\d+[.)])\s+", paragraph[0])
        ):
            flush()
            paragraph.append(line)
        else:
            paragraph.append(line)
    flush()
    if fence:
        pieces.append(_Piece("\n".join(fence), None, tuple(path)))
    return title, [_Piece(p.text, p.page, tuple(h for h in p.headings if h)) for p in pieces]


def _plain(text: str) -> list[_Piece]:
    return [_Piece(p, None, ()) for p in re.split(r"\n\s*\n", text)]


def _html(raw: bytes) -> tuple[str | None, list[_Piece]]:
    from selectolax.lexbor import LexborHTMLParser as HTMLParser

    tree = HTMLParser(raw)
    for node in tree.css("script, style, noscript, nav, header, footer"):
        node.decompose()
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else None
    pieces: list[_Piece] = []
    path: list[str] = []
    body = tree.body or tree.root
    if body is None:
        return title, pieces
    for node in body.traverse():
        tag = node.tag
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            level = int(tag[1])
            del path[level - 1 :]
            path.extend([""] * (level - 1 - len(path)))
            path.append(node.text(strip=True, separator=" "))
        elif tag in ("p", "li", "pre", "blockquote", "td", "th", "dd", "dt", "figcaption"):
            # a block inside another block (a <p> in an <li>) is read with its parent
            parent, nested = node.parent, False
            while parent is not None:
                if parent.tag in ("p", "li", "pre", "blockquote", "td", "th", "dd", "dt"):
                    nested = True
                    break
                parent = parent.parent
            if not nested:
                separator = "" if tag == "pre" else " "
                text = node.text(deep=True, separator=separator)
                text = text if tag == "pre" else " ".join(text.split())
                pieces.append(_Piece(text, None, tuple(h for h in path if h)))
    return title, pieces


def _pdf(raw: bytes, source: str) -> tuple[str | None, list[_Piece]]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise DocumentError(f"{source} is an encrypted PDF", hint="decrypt it first (qpdf --decrypt)")
        pieces = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            for paragraph in re.split(r"\n\s*\n", text):
                pieces.append(_Piece(" ".join(paragraph.split()), number, ()))
        title = (reader.metadata.title if reader.metadata else None) or None
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{source} is not a readable PDF ({exc})", hint="is the file complete?") from None
    return title, pieces


def _docx(raw: bytes, source: str) -> tuple[str | None, list[_Piece]]:
    import io
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(raw))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(
            f"{source} is not a readable .docx ({exc})", hint="is the file complete?"
        ) from None
    pieces: list[_Piece] = []
    path: list[str] = []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        if level:
            del path[level - 1 :]
            path.extend([""] * (level - 1 - len(path)))
            path.append(paragraph.text.strip())
        else:
            pieces.append(_Piece(paragraph.text, None, tuple(h for h in path if h)))
    for table in document.tables:
        for row in table.rows:
            pieces.append(
                _Piece(" | ".join(cell.text.strip() for cell in row.cells), None, tuple(h for h in path if h))
            )
    title = document.core_properties.title or None
    return title, pieces


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


READERS: dict[str, str] = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html",
    ".htm": "html", ".pdf": "pdf", ".docx": "docx",
}  # fmt: skip


def parse(raw: bytes, source: str, kind: str, groups: Iterable[str] = ()) -> Document:
    """A document from bytes already read; ``kind`` is one of ``READERS``' values."""
    groups = tuple(sorted(set(groups)))
    fallback = Path(source).stem or source
    if kind in ("text", "markdown", "html"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        if "\x00" in text:
            raise DocumentError(f"{source} looks binary, not {kind}", hint="check the file's extension")
    readers: dict[str, Callable[[], tuple[str | None, list[_Piece]]]] = {
        "text": lambda: (None, _plain(text)),
        "markdown": lambda: _markdown(text),
        "html": lambda: _html(raw),
        "pdf": lambda: _pdf(raw, source),
        "docx": lambda: _docx(raw, source),
    }
    if kind not in readers:
        raise DocumentError(f"unknown document kind {kind!r}", hint=f"use one of {', '.join(readers)}")
    title, pieces = readers[kind]()
    return _assemble(source, title or fallback, raw, pieces, groups)


def load(path: Path | str, groups: Iterable[str] = ()) -> Document:
    """Read one file by its extension."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise DocumentError(
            f"{path} has an unsupported extension {path.suffix!r}",
            hint=f"supported: {', '.join(sorted(READERS))}",
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read {path}: {exc.strerror}") from None
    return parse(raw, str(path), kind, groups)


def discover(paths: Iterable[Path | str]) -> list[Path]:
    """The readable files under ``paths`` (files as given; folders walked, sorted)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(
                p.resolve() for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in READERS
            )
        elif path.exists():
            found.append(path.resolve())
        else:
            raise DocumentError(f"{path} does not exist")
    return found
