"""The audit log: one row per request, written by a background thread in small batches.

Writing in the request path would add a database commit (milliseconds on SQLite) to every
request; the writer takes rows from a queue and commits them together instead. ``flush`` waits
until everything queued so far is stored (tests, shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from lamina.core.catalog.models import AuditEvent
from lamina.core.workspace import Workspace

log = logging.getLogger(__name__)


class AuditWriter:
    def __init__(self, ws: Workspace, batch: int = 100, interval: float = 0.2) -> None:
        self.ws, self.batch, self.interval = ws, batch, interval
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
                    with self.ws.catalog.session() as session:
                        session.add_all([AuditEvent(**row) for row in rows])
                except Exception:  # the log must never take the server down
                    log.exception("could not write %d audit rows", len(rows))
            for waiter in waiters:
                waiter.set()
            if stop:
                return


def recent(ws: Workspace, limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit rows, newest first (``GET /admin/audit``)."""
    import sqlalchemy as sa

    with ws.catalog.session() as session:
        rows = session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()
        return [
            {
                "at": r.at.isoformat(), "request_id": r.request_id, "key_id": r.key_id, "method": r.method,
                "route": r.route, "model_version": r.model_version_id, "status": r.status_code,
                "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "latency_ms": r.latency_ms,
            }
            for r in rows
        ]  # fmt: skip
