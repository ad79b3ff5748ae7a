"""Conversation threads kept in the catalog, with summarising memory.

A thread belongs to the key that made it (an admin reads every thread; anyone else gets 404 for a
thread that is not theirs, so ids reveal nothing). Every turn is stored. When a thread no longer
fits the model's context, its oldest turns are *folded* into a summary that is sent in their place,
and the summary, the count of folded turns and every turn stay in the catalog.

The summary is extractive: the sentences of the folded turns (and of the summary before) closest
to their centroid in MiniLM's embedding space, in their original order. Why not ask the model to
summarise: the small models trained here cannot yet write a faithful summary, and a summary they
invent would be fed back to them as fact; chosen sentences are the user's and the model's own words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from lamina.core.catalog.models import Thread, ThreadMessage, utcnow
from lamina.core.errors import NotFound
from lamina.core.logging import new_id
from lamina.core.workspace import Workspace

SUMMARY_SENTENCES = 6
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
ROLES = ("system", "user", "assistant", "developer", "tool")


class ThreadNotFound(NotFound):
    code = "thread_not_found"


@dataclass
class Conversation:
    id: str
    title: str | None
    summary: str | None
    summarized: int
    messages: list[dict[str, str]] = field(default_factory=list)  # every turn, oldest first

    @property
    def unfolded(self) -> list[dict[str, str]]:
        return self.messages[self.summarized :]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "thread", "title": self.title, "summary": self.summary,
                "summarized": self.summarized, "messages": self.messages}  # fmt: skip


def _owner(principal: dict[str, Any] | None) -> tuple[str | None, bool]:
    """(key id, reads every thread)."""
    if principal is None or principal.get("role") == "admin":
        return (principal or {}).get("id"), True
    return principal.get("id"), False


def create(ws: Workspace, principal: dict[str, Any] | None, title: str | None = None) -> Conversation:
    key_id, _ = _owner(principal)
    row = Thread(id=new_id("thr"), key_id=key_id, title=title, summary=None, summarized=0,
                 created_at=utcnow(), updated_at=utcnow())  # fmt: skip
    with ws.catalog.session() as session:
        session.add(row)
    return Conversation(row.id, title, None, 0)


def load(ws: Workspace, thread_id: str, principal: dict[str, Any] | None) -> Conversation:
    key_id, everyone = _owner(principal)
    with ws.catalog.session() as session:
        row = session.get(Thread, thread_id)
        if row is None or (not everyone and row.key_id != key_id):
            raise ThreadNotFound(f"there is no thread {thread_id!r}", hint="create one with POST /v1/threads")
        messages = session.scalars(
            sa.select(ThreadMessage)
            .where(ThreadMessage.thread_id == thread_id)
            .order_by(ThreadMessage.position)
        ).all()
        return Conversation(row.id, row.title, row.summary, row.summarized,
                            [{"role": m.role, "content": m.content} for m in messages])  # fmt: skip


def listing(ws: Workspace, principal: dict[str, Any] | None, limit: int = 50) -> list[dict[str, Any]]:
    """The caller's own threads, most recently used first (id, title, when)."""
    key_id = (principal or {}).get("id")
    owner = Thread.key_id.is_(None) if key_id is None else Thread.key_id == key_id
    with ws.catalog.session() as session:
        rows = session.scalars(sa.select(Thread).where(owner).order_by(Thread.updated_at.desc()).limit(limit))
        return [{"id": r.id, "object": "thread", "title": r.title, "updated_at": r.updated_at.isoformat()}
                for r in rows]  # fmt: skip


def delete(ws: Workspace, thread_id: str, principal: dict[str, Any] | None) -> None:
    load(ws, thread_id, principal)  # the same 404 for a thread that is not the caller's
    with ws.catalog.session() as session:
        session.execute(sa.delete(ThreadMessage).where(ThreadMessage.thread_id == thread_id))
        session.execute(sa.delete(Thread).where(Thread.id == thread_id))


def append(
    ws: Workspace, conversation: Conversation, messages: list[dict[str, str]], request_id: str | None
) -> None:
    """Store new turns after the ones the conversation holds."""
    with ws.catalog.session() as session:
        start = len(conversation.messages)
        for offset, message in enumerate(messages):
            session.add(
                ThreadMessage(
                    thread_id=conversation.id, position=start + offset, role=message["role"],
                    content=message["content"], request_id=request_id, at=utcnow(),
                )
            )  # fmt: skip
        session.execute(sa.update(Thread).where(Thread.id == conversation.id).values(updated_at=utcnow()))
    conversation.messages.extend(messages)


def fold(ws: Workspace, conversation: Conversation, count: int, embedder: Any) -> None:
    """Fold the ``count`` oldest unfolded turns into the summary (stored; the turns stay)."""
    folded = conversation.unfolded[:count]
    if not folded:
        return
    texts = ([conversation.summary] if conversation.summary else []) + [
        f"{m['role']}: {m['content']}" for m in folded
    ]
    conversation.summary = summarize(texts, embedder)
    conversation.summarized += len(folded)
    with ws.catalog.session() as session:
        session.execute(
            sa.update(Thread).where(Thread.id == conversation.id)
            .values(summary=conversation.summary, summarized=conversation.summarized, updated_at=utcnow())
        )  # fmt: skip


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text) if len(s.strip()) > 3]


def drop_oldest_sentence(summary: str) -> str:
    return " ".join(_sentences(summary)[1:])


def summarize(texts: list[str], embedder: Any, sentences: int = SUMMARY_SENTENCES) -> str:
    """The sentences closest to the centroid of all of them, in their original order."""
    pieces = [piece for text in texts for piece in _sentences(text)]
    if len(pieces) <= sentences:
        return " ".join(pieces)
    vectors = embedder.encode(pieces)
    centroid = vectors.mean(axis=0)
    chosen = sorted(np.argsort(-(vectors @ centroid))[:sentences])
    return " ".join(pieces[i] for i in chosen)
