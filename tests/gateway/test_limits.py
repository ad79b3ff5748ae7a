"""Per-key limits: sliding windows for requests and tokens, and requests in flight."""

from __future__ import annotations

from lamina.gateway.limits import KeyLimiter, retry_after_header


def test_requests_per_minute_slide() -> None:
    limiter = KeyLimiter()
    limits = {"requests_per_minute": 2}
    assert limiter.acquire("k", limits, now=0) is None
    limiter.release("k", now=0)
    assert limiter.acquire("k", limits, now=10) is None
    limiter.release("k", now=10)
    refused = limiter.acquire("k", limits, now=30)
    assert refused is not None and refused.retry_after == 30 and "2 requests per minute" in refused.reason
    assert limiter.acquire("other", limits, now=30) is None  # keys are separate
    assert limiter.acquire("k", limits, now=60.5) is None  # the first request left the window


def test_tokens_per_minute_count_what_was_used() -> None:
    limiter = KeyLimiter()
    limits = {"tokens_per_minute": 100}
    assert limiter.acquire("k", limits, now=0) is None
    limiter.release("k", tokens=120, now=1)
    refused = limiter.acquire("k", limits, now=2)
    assert (
        refused is not None and refused.retry_after == 59 and retry_after_header(refused.retry_after) == "59"
    )
    assert limiter.acquire("k", limits, now=61.5) is None


def test_concurrency_is_released_when_requests_end() -> None:
    limiter = KeyLimiter()
    limits = {"max_concurrency": 1}
    assert limiter.acquire("k", limits) is None
    assert limiter.acquire("k", limits) is not None
    limiter.release("k")
    assert limiter.acquire("k", limits) is None
    assert retry_after_header(0.2) == "1"
