"""Structure-aware chunking by tokens: a chunk never spans two pages or two sections, prefers to end
where a paragraph ends, holds at most ``max_tokens`` of the embedding model's tokens (what the model
reads: MiniLM truncates at 256), and repeats the last ``overlap`` tokens of the one before it.

Every chunk keeps its provenance (document, page, character span, heading path) and the document's
access groups, so a citation points at the exact text and a query can filter by group.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any

from lamina.core.errors import ConfigError
from lamina.rag.documents import Document

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 32


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str  # stable for the same document content: "<content hash prefix>-<ordinal>"
    source: str
    title: str
    text: str
    start: int  # character span in the document's text
    end: int
    page: int | None
    headings: tuple[str, ...]
    groups: tuple[str, ...]
    document_hash: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Chunk:
        """A chunk from a store's row (the embedded store's columns have the fields' names)."""
        return cls(
            id=row["id"], source=row["source"], title=row["title"], text=row["text"], start=row["start"],
            end=row["end"], page=row["page"], headings=tuple(row["headings"] or ()),
            groups=tuple(row["groups"] or ()), document_hash=row["document_hash"],
        )  # fmt: skip

    def citation(self) -> dict[str, Any]:
        return {
            "chunk_id": self.id, "document": self.source, "title": self.title, "page": self.page,
            "start": self.start, "end": self.end, "headings": list(self.headings),
        }  # fmt: skip


def chunk(document: Document, tokenizer: Any, max_tokens: int = DEFAULT_MAX_TOKENS,
          overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:  # fmt: skip
    """The document's chunks, in reading order."""
    if max_tokens < 8:
        raise ConfigError(f"chunk size must be at least 8 tokens, got {max_tokens}")
    if not 0 <= overlap < max_tokens // 2:
        raise ConfigError(f"overlap must be in [0, {max_tokens // 2}), got {overlap}")
    out: list[Chunk] = []
    for (page, headings), section in groupby(document.blocks, key=lambda b: (b.page, b.headings)):
        spans: list[tuple[int, int]] = []  # each token's character span in the document
        starts: set[int] = set()  # token indices where a block begins
        for block in section:
            encoded = tokenizer(
                block.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            offsets = [(a, b) for a, b in encoded["offset_mapping"] if b > a]
            starts.add(len(spans))
            spans.extend((block.start + a, block.start + b) for a, b in offsets)
        for first, last in _windows(spans, starts, max_tokens, overlap):
            start, end = spans[first][0], spans[last - 1][1]
            out.append(Chunk(
                id=f"{document.content_hash[:16]}-{len(out)}", source=document.source, title=document.title,
                text=document.text[start:end], start=start, end=end, page=page, headings=headings,
                groups=document.groups, document_hash=document.content_hash,
            ))  # fmt: skip
    return out


def _windows(
    spans: list[tuple[int, int]], starts: set[int], size: int, overlap: int
) -> list[tuple[int, int]]:
    """Token windows [first, last) of at most ``size``: a window that does not reach the end stops at
    the last block start in its second half when there is one; the next begins ``overlap`` earlier."""
    windows = []
    first = 0
    while first < len(spans):
        last = min(first + size, len(spans))
        if last < len(spans):
            boundary = max((s for s in starts if first + size // 2 < s <= last), default=None)
            if boundary is not None:
                last = boundary
        windows.append((first, last))
        if last >= len(spans):
            break
        first = max(last - overlap, first + 1)
    return windows
