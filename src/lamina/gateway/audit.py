"""The audit log: one row per request, written by a background thread in small batches.

Writing in the request path would add a database commit (milliseconds on SQLite) to every
request; the writer takes rows from a queue and commits them together instead. ``flush`` waits
until everything queued so far is stored (tests, shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lamina.core.catalog.models import AuditEvent, Feedback
from lamina.core.workspace import Workspace

log = logging.getLogger(__name__)


class AuditWriter:
    """``protect`` turns request and response text into what is stored (PII redacted, then
    encrypted: ``stored_text``); it runs here, on the writer's thread, not in the request path.
    ``retention_days`` purges older rows about once an hour."""

    def __init__(self, ws: Workspace, batch: int = 100, interval: float = 0.2,
                 protect: Callable[[str | None], str | None] | None = None,
                 retention_days: float | None = None, review_below: float | None = None) -> None:  # fmt: skip
        self.ws, self.batch, self.interval, self.review_below = ws, batch, interval, review_below
        self.protect, self.retention_days = protect, retention_days
        self._purged_at = 0.0
        self._queue: queue.Queue[dict[str, Any] | threading.Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lamina-audit", daemon=True)
        self._thread.start()

    def record(self, **fields: Any) -> None:
        self._queue.put(fields)

    def flush(self, timeout: float = 10) -> None:
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import time

        while True:
            item = self._queue.get()
            rows: list[dict[str, Any]] = []
            waiters: list[threading.Event] = []
            stop = False
            deadline = (
                time.monotonic() + self.interval
            )  # a steady stream of requests must not delay the write
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    rows.append(item)
                left = deadline - time.monotonic()
                if len(rows) >= self.batch or waiters or stop or left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if rows:
                try:
                    if self.protect is not None:
                        for row in rows:
                            for name in ("request_text", "response_text"):
                                if row.get(name):
                                    row[name] = self.protect(row[name])
                    with self.ws.catalog.session() as session:
                        session.add_all([AuditEvent(**row) for row in rows])
                        session.add_all(review_items(rows, self.review_below))
                except Exception:  # the log must never take the server down
                    log.exception("could not write %d audit rows", len(rows))
            if self.retention_days and time.monotonic() - self._purged_at > 3600:
                self._purged_at = time.monotonic()
                try:
                    purge(self.ws, self.retention_days)
                except Exception:
                    log.exception("could not purge audit rows older than %s days", self.retention_days)
            for waiter in waiters:
                waiter.set()
            if stop:
                return


@dataclass
class AuditQuery:
    """What an audit search matches (every given field; ``route`` by its start)."""

    request_id: str | None = None
    route: str | None = None
    key_id: str | None = None
    status: int | None = None


def recent(ws: Workspace, limit: int = 100, query: AuditQuery | None = None) -> list[dict[str, Any]]:
    """The newest audit rows matching ``query``, newest first (``GET /admin/audit``)."""
    import sqlalchemy as sa

    q = query or AuditQuery()
    select = sa.select(AuditEvent).order_by(AuditEvent.id.desc())
    if q.request_id:
        select = select.where(AuditEvent.request_id == q.request_id)
    if q.route:
        select = select.where(AuditEvent.route.startswith(q.route, autoescape=True))
    if q.key_id:
        select = select.where(AuditEvent.key_id == q.key_id)
    if q.status is not None:
        select = select.where(AuditEvent.status_code == q.status)
    with ws.catalog.session() as session:
        rows = session.scalars(select.limit(limit)).all()
        return [
            {
                "at": r.at.isoformat(), "request_id": r.request_id, "key_id": r.key_id, "method": r.method,
                "route": r.route, "model_version": r.model_version_id, "status": r.status_code,
                "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "latency_ms": r.latency_ms,
            }
            for r in rows
        ]  # fmt: skip


def review_items(rows: list[dict[str, Any]], below_confidence: float | None = None) -> list[Feedback]:
    """A review-queue item for each request a rail flagged or blocked (a false block and a missed
    attack are both worth a person's look) and, when ``below_confidence`` is set, each answer less
    confident than that (``lamina.monitoring.review`` shows them to reviewers)."""
    items = []
    for row in rows:
        confidence = (row.get("detail") or {}).get("confidence")
        if below_confidence is not None and confidence is not None and confidence < below_confidence:
            items.append(
                Feedback(
                    request_id=row["request_id"],
                    key_id=row.get("key_id"),
                    model_version_id=row.get("model_version_id"),
                    label=f"confidence {confidence:.3f}",
                    status="new",
                    origin="confidence",
                )  # fmt: skip
            )
        acted = [
            v for v in (row.get("detail") or {}).get("rails", []) if v.get("action") in ("flag", "block")
        ]
        if acted:
            rails = ",".join(sorted({f"{v['rail']}:{v['action']}" for v in acted}))
            items.append(
                Feedback(
                    request_id=row["request_id"],
                    key_id=row.get("key_id"),
                    model_version_id=row.get("model_version_id"),
                    label=f"rail {rails}"[:64],
                    status="new",
                    origin="rail",
                )  # fmt: skip
            )
    return items


def stored_text(redactor: Callable[[str], str] | None, cipher: Any) -> Callable[[str | None], str | None]:
    """What the audit log keeps of a text: PII redacted (when a redactor is given), then encrypted
    (when a cipher is)."""

    def protect(text: str | None) -> str | None:
        if text is None:
            return None
        if redactor is not None:
            text = redactor(text)
        return cipher.encrypt(text) if cipher is not None else text

    return protect


def purge(ws: Workspace, older_than_days: float) -> int:
    """Delete audit rows older than ``older_than_days``, and feedback as old that no training batch
    has taken (its text is personal data too); returns how many audit rows went."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    with ws.catalog.session() as session:
        session.execute(sa.delete(Feedback).where(Feedback.at < cutoff, Feedback.batch_id.is_(None)))
        result = session.execute(sa.delete(AuditEvent).where(AuditEvent.at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


def rotate(ws: Workspace, cipher: Any, batch: int = 500) -> int:
    """Re-encrypt every stored text under the first key (plain text gets encrypted); returns rows changed."""
    import sqlalchemy as sa

    changed, last = 0, 0
    while True:
        with ws.catalog.session() as session:
            rows = session.scalars(
                sa.select(AuditEvent).where(AuditEvent.id > last).order_by(AuditEvent.id).limit(batch)
            ).all()
            if not rows:
                return changed + _rotate_feedback(session, cipher)
            for row in rows:
                last = row.id
                if row.request_text is None and row.response_text is None:
                    continue
                row.request_text = cipher.rotate(row.request_text)
                row.response_text = cipher.rotate(row.response_text)
                changed += 1


def _rotate_feedback(session: Any, cipher: Any) -> int:
    """Feedback comments and corrections under the first key too (they are few: one pass)."""
    import sqlalchemy as sa

    changed = 0
    texts = sa.or_(Feedback.comment.is_not(None), Feedback.correction.is_not(None))
    for row in session.scalars(sa.select(Feedback).where(texts)).all():
        row.comment, row.correction = cipher.rotate(row.comment), cipher.rotate(row.correction)
        changed += 1
    return changed


def texts(ws: Workspace, cipher: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest rows with their stored text decrypted (``lamina audit list --text``)."""
    import sqlalchemy as sa

    with ws.catalog.session() as session:
        rows = session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()
        decrypt = cipher.decrypt if cipher is not None else (lambda value: value)
        return [
            {"at": r.at.isoformat(), "request_id": r.request_id, "route": r.route, "status": r.status_code,
             "rails": (r.detail or {}).get("rails", []), "request_text": decrypt(r.request_text),
             "response_text": decrypt(r.response_text)}
            for r in rows
        ]  # fmt: skip
