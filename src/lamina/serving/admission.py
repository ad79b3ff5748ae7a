"""Admission at the door: refuse at once a request that could not start within the wait budget.

The engine sheds a request that has waited past ``server.max_queue_wait``; under heavy overload
that still means hundreds of connections held for the whole budget, each costing the server work
for nothing. So the engine (and the engine process's parent, which counts the queue) estimates
how long a new request would wait from how fast places in the batch have been freeing up, and
refuses it at submit (429, ``Retry-After``) when that is far longer than the budget
(``DOOR_FACTOR``). With no recent history it admits: the budget still sheds what waits too long.
"""

from __future__ import annotations

import collections
import threading
import time

WINDOW_S = 5.0  # how far back finishes count towards the rate
MIN_FINISHES = 8  # fewer than this in the window: no estimate (admit)
# refuse at the door only a request whose estimated wait is this many budgets: nearer the budget,
# admitting it keeps the batch full (the budget still sheds it if it waits too long). Measured with
# bench/soak.py: refusing at 1x the budget cut goodput at 64 streams by a third (clients told to
# retry after 1 s left places empty); without any door, 400 streams drowned the server in requests
# held for the whole budget.
DOOR_FACTOR = 3.0
MAX_RETRY_AFTER_S = 30.0


class WaitEstimate:
    def __init__(self) -> None:
        self._finishes: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def finished(self, now: float | None = None) -> None:
        """A running request ended (its place in the batch is free)."""
        with self._lock:
            self._finishes.append(time.monotonic() if now is None else now)

    def expected_wait(self, ahead: int, now: float | None = None) -> float | None:
        """Seconds until a request with ``ahead`` requests waiting before it would start, or None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._finishes and self._finishes[0] < now - WINDOW_S:
                self._finishes.popleft()
            if len(self._finishes) < MIN_FINISHES:
                return None
            # over the span the finishes cover, not the whole window: load that began a moment
            # ago must not look like a slow engine
            rate = len(self._finishes) / max(now - self._finishes[0], 0.05)
        return (ahead + 1) / rate

    def retry_after(self, ahead: int) -> float:
        """Seconds a refused client should wait before it tries again: the queue's expected drain
        time (1 to ``MAX_RETRY_AFTER_S``). Telling every client "1 s" brought them all back at once:
        under heavy overload the server spent its time refusing the same clients again."""
        wait = self.expected_wait(ahead)
        return min(MAX_RETRY_AFTER_S, max(1.0, wait if wait is not None else 1.0))

    def refuses(self, ahead: int, budget: float | None, full: bool) -> bool:
        """Whether a request with ``ahead`` waiting before it should be refused now.

        Only while the batch is ``full``: otherwise the requests "waiting" are only on their way to
        a free place, and a low finish rate means little traffic, not a slow engine.
        """
        if budget is None or ahead == 0 or not full:
            return False
        wait = self.expected_wait(ahead)
        return wait is not None and wait > DOOR_FACTOR * budget
