"""Service KPIs as time series, read from what the catalog already records: every request's audit
row (route, status, latency, tokens, key, the rails that acted) and every piece of feedback.

Why from the catalog and not from Prometheus: the audit log is durable, per key and per model
version, and survives restarts; ``/metrics`` (Prometheus) carries the same quantities live for
dashboards and alerts. A window is read in one pass, in bounded batches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from lamina.core.catalog.models import ApiKey, AuditEvent, Feedback
from lamina.core.workspace import Workspace

SERVED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/images/generations")


@dataclass
class Window:
    start: datetime
    end: datetime
    bucket: timedelta

    @property
    def edges(self) -> list[datetime]:
        out, at = [], self.start
        while at < self.end:
            out.append(at)
            at += self.bucket
        return out

    def index(self, at: datetime) -> int:
        return int((at - self.start) / self.bucket)


@dataclass
class Series:
    """Per bucket of ``window``: counts and latency quantiles; per key: totals."""

    window: Window
    requests: list[int] = field(default_factory=list)
    client_errors: list[int] = field(default_factory=list)  # 4xx
    server_errors: list[int] = field(default_factory=list)  # 5xx
    latency_p50_ms: list[float | None] = field(default_factory=list)
    latency_p95_ms: list[float | None] = field(default_factory=list)
    tokens_in: list[int] = field(default_factory=list)
    tokens_out: list[int] = field(default_factory=list)
    rails: dict[str, list[int]] = field(default_factory=dict)  # action → per bucket
    thumbs_up: list[int] = field(default_factory=list)
    thumbs_down: list[int] = field(default_factory=list)
    per_key: dict[str, dict[str, Any]] = field(default_factory=dict)

    def thumbs_up_rate(self) -> list[float | None]:
        return [u / (u + d) if u + d else None for u, d in zip(self.thumbs_up, self.thumbs_down, strict=True)]

    def totals(self) -> dict[str, Any]:
        served = sum(self.requests)
        up, down = sum(self.thumbs_up), sum(self.thumbs_down)
        seconds = (self.window.end - self.window.start).total_seconds()
        return {
            "requests": served,
            "requests_per_s": served / seconds if seconds else 0.0,
            "error_rate": (sum(self.client_errors) + sum(self.server_errors)) / served if served else 0.0,
            "server_error_rate": sum(self.server_errors) / served if served else 0.0,
            "tokens_in": sum(self.tokens_in),
            "tokens_out": sum(self.tokens_out),
            "rail_actions": {action: sum(v) for action, v in self.rails.items()},
            "thumbs_up": up,
            "thumbs_down": down,
            "thumbs_up_rate": up / (up + down) if up + down else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "bucket_seconds": self.window.bucket.total_seconds(),
            "buckets": [e.isoformat() for e in self.window.edges],
            "requests": self.requests,
            "client_errors": self.client_errors,
            "server_errors": self.server_errors,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "rails": self.rails,
            "thumbs_up_rate": self.thumbs_up_rate(),
            "totals": self.totals(),
            "per_key": self.per_key,
        }


def collect(
    ws: Workspace,
    since: timedelta = timedelta(hours=24),
    bucket: timedelta | None = None,
    now: datetime | None = None,
    price_per_1k_tokens: float | None = None,
) -> Series:
    """The KPIs of the last ``since`` in buckets (default: about 48 of them, at least a minute)."""
    import sqlalchemy as sa

    end = now or datetime.now(UTC)
    bucket = bucket or max(timedelta(minutes=1), since / 48)
    window = Window(end - since, end, bucket)
    n = len(window.edges)
    series = Series(window, [0] * n, [0] * n, [0] * n, [], [], [0] * n, [0] * n, {}, [0] * n, [0] * n)
    latencies: list[list[float]] = [[] for _ in range(n)]
    keys: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "errors": 0, "tokens_in": 0,
                                                            "tokens_out": 0})  # fmt: skip
    with ws.catalog.session() as session:
        names = dict(session.execute(sa.select(ApiKey.id, ApiKey.name)).all())
        rows = session.execute(
            sa.select(AuditEvent.at, AuditEvent.key_id, AuditEvent.route, AuditEvent.status_code,
                      AuditEvent.latency_ms, AuditEvent.tokens_in, AuditEvent.tokens_out, AuditEvent.detail)
            .where(AuditEvent.at >= window.start, AuditEvent.at < window.end)
            .execution_options(yield_per=2000)
        )  # fmt: skip
        for at, key_id, route, status, latency, t_in, t_out, detail in rows:
            i = window.index(_aware(at))
            if not 0 <= i < n or route not in SERVED:
                continue
            series.requests[i] += 1
            series.client_errors[i] += 400 <= status < 500
            series.server_errors[i] += status >= 500
            if latency is not None and status < 400:
                latencies[i].append(float(latency))
            series.tokens_in[i] += t_in or 0
            series.tokens_out[i] += t_out or 0
            for verdict in (detail or {}).get("rails", []):
                action = str(verdict.get("action"))
                series.rails.setdefault(action, [0] * n)[i] += 1
            who = names.get(key_id, key_id or "(server admin key)")
            k = keys[who]
            k["requests"] += 1
            k["errors"] += status >= 400
            k["tokens_in"] += t_in or 0
            k["tokens_out"] += t_out or 0
        votes = session.execute(
            sa.select(Feedback.at, Feedback.label).where(
                Feedback.at >= window.start, Feedback.at < window.end,
                Feedback.label.in_(("thumbs_up", "thumbs_down")),
            )
        )  # fmt: skip
        for at, label in votes:
            i = window.index(_aware(at))
            if 0 <= i < n:
                (series.thumbs_up if label == "thumbs_up" else series.thumbs_down)[i] += 1
    for values in latencies:
        series.latency_p50_ms.append(float(np.percentile(values, 50)) if values else None)
        series.latency_p95_ms.append(float(np.percentile(values, 95)) if values else None)
    if price_per_1k_tokens is not None:
        for k in keys.values():
            k["cost"] = round((k["tokens_in"] + k["tokens_out"]) / 1000 * price_per_1k_tokens, 6)
    series.per_key = dict(sorted(keys.items(), key=lambda kv: -kv[1]["requests"]))
    return series


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
