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
        while True:
            item = self._queue.get()
            rows, waiters, stop = [], [], False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    rows.append(item)
                if len(rows) >= self.batch:
                    break
                try:
                    item = self._queue.get(timeout=self.interval if not waiters else 0.001)
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
