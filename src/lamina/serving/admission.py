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
# refuse at the door a request whose estimated wait is over this many budgets. At 1 the queue holds
# about what can start within the budget; the refused come back by appointment (``retry_after``)
# and keep the batch full. 3 was chosen when every refused client was told "1 s" (refusing at 1 then
# cut goodput at 64 streams by a third); with appointments, bench/soak.py measured 1 at 104 % of the
# 64-stream goodput at 128 streams (results/soak.md; changed together with the load generator fixes).
DOOR_FACTOR = 1.0
MAX_RETRY_AFTER_S = 30.0
# the shortest appointment; whole seconds in Retry-After, exact in retry-after-ms (the openai client reads it)
MIN_RETRY_AFTER_S = 0.1
UNKNOWN_RETRY_AFTER_S = 1.0  # no recent finishes to estimate from


class WaitEstimate:
    def __init__(self) -> None:
        self._finishes: collections.deque[float] = collections.deque()
        self._next_appointment = 0.0  # when the last refused client was told to come back
        self._lock = threading.Lock()

    def finished(self, now: float | None = None) -> None:
        """A running request ended (its place in the batch is free)."""
        with self._lock:
            self._finishes.append(time.monotonic() if now is None else now)

    def _rate(self, now: float) -> float | None:
        """Places freed per second lately (the caller holds the lock), or None without history."""
        while self._finishes and self._finishes[0] < now - WINDOW_S:
            self._finishes.popleft()
        if len(self._finishes) < MIN_FINISHES:
            return None
        # over the span the finishes cover, not the whole window: load that began a moment ago
        # must not look like a slow engine
        return len(self._finishes) / max(now - self._finishes[0], 0.05)

    def expected_wait(self, ahead: int, now: float | None = None) -> float | None:
        """Seconds until a request with ``ahead`` requests waiting before it would start, or None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            rate = self._rate(now)
        return None if rate is None else (ahead + 1) / rate

    def retry_after(self, ahead: int, now: float | None = None) -> float:
        """Seconds a refused client should stay away: an appointment of its own.

        The first refused client comes back when the queue ahead of it has drained; each one refused
        after it one freed place later (up to ``MAX_RETRY_AFTER_S``), so refused clients return at
        the rate the engine takes them. Told all the same time (1 s, or the drain time), they came
        back together: the queue overflowed and most were refused again.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            rate = self._rate(now)
            if rate is None:
                return UNKNOWN_RETRY_AFTER_S
            slot = max(now + (ahead + 1) / rate, self._next_appointment + 1 / rate)
            self._next_appointment = min(slot, now + MAX_RETRY_AFTER_S)
            return max(MIN_RETRY_AFTER_S, self._next_appointment - now)

    def refuses(self, ahead: int, budget: float | None, full: bool) -> bool:
        """Whether a request with ``ahead`` waiting before it should be refused now.

        Only while the batch is ``full``: otherwise the requests "waiting" are only on their way to
        a free place, and a low finish rate means little traffic, not a slow engine.
        """
        if budget is None or ahead == 0 or not full:
            return False
        wait = self.expected_wait(ahead)
        return wait is not None and wait > DOOR_FACTOR * budget
