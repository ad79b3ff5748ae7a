"""Per-key limits: requests per minute, tokens per minute, requests in flight.

Sliding 60-second windows (exact, unlike fixed windows that allow 2× bursts at the boundary).
A refused request learns how long to wait (``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

WINDOW = 60.0


@dataclass
class Refusal:
    reason: str
    retry_after: float


class KeyLimiter:
    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def acquire(self, key_id: str, limits: dict[str, int], now: float | None = None) -> Refusal | None:
        """Admit one request for ``key_id`` (and count it), or say why not and for how long."""
        now = time.monotonic() if now is None else now
        with self._lock:
            requests, tokens = self._requests[key_id], self._tokens[key_id]
            while requests and requests[0] <= now - WINDOW:
                requests.popleft()
            while tokens and tokens[0][0] <= now - WINDOW:
                tokens.popleft()
            concurrency = limits.get("max_concurrency")
            if concurrency and self._in_flight[key_id] >= concurrency:
                return Refusal(f"{concurrency} requests already in flight for this key", 1.0)
            rpm = limits.get("requests_per_minute")
            if rpm and len(requests) >= rpm:
                return Refusal(f"limit of {rpm} requests per minute reached", requests[0] + WINDOW - now)
            tpm = limits.get("tokens_per_minute")
            if tpm and sum(n for _, n in tokens) >= tpm:
                return Refusal(f"limit of {tpm} tokens per minute reached", tokens[0][0] + WINDOW - now)
            requests.append(now)
            self._in_flight[key_id] += 1
            return None

    def release(self, key_id: str, tokens: int = 0, now: float | None = None) -> None:
        with self._lock:
            self._in_flight[key_id] = max(0, self._in_flight[key_id] - 1)
            if tokens:
                self._tokens[key_id].append((time.monotonic() if now is None else now, tokens))


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, as HTTP defines it) and ``retry-after-ms`` (the precise wait,
    which the openai client reads first): both, so sub-second appointments reach clients that can
    keep them."""
    return {"retry-after": retry_after_header(seconds), "retry-after-ms": str(max(1, round(seconds * 1000)))}
