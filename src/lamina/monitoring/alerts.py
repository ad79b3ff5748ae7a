"""Alert rules on the service KPIs: ``metric op threshold`` over a window, written to the log and
POSTed to a webhook when they fire (``lamina monitor check``, run from cron or a systemd timer).

A rule in ``lamina.yaml``::

    monitoring:
      alerts:
        - {name: errors, metric: error_rate, op: ">", threshold: 0.05, window: 15m, webhook: https://…}
        - {name: unhappy, metric: thumbs_up_rate, op: "<", threshold: 0.6, window: 24h, min_requests: 20}

Metrics are the totals of ``lamina.monitoring.kpis`` over the window (plus ``latency_p95_ms``). A
rule whose metric has no value in the window (no thumbs, no traffic) or fewer than
``min_requests`` requests does not fire: too little evidence is not an alarm.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from lamina.core.errors import ConfigError

log = logging.getLogger("lamina.monitoring.alerts")
METRICS = ("error_rate", "server_error_rate", "latency_p95_ms", "thumbs_up_rate", "requests_per_s",
           "rail_blocks", "rail_flags", "tokens_out")  # fmt: skip


@dataclass
class Fired:
    rule: str
    metric: str
    value: float | None
    op: str
    threshold: float
    window: str
    requests: int
    fired: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_window(text: str, what: str = "alert window") -> timedelta:
    from lamina.core.durations import parse_duration

    return parse_duration(text, what, positive=True)


def validate(rules: list[dict[str, Any]]) -> None:
    """Refuse a bad rule by name before anything runs."""
    for i, rule in enumerate(rules):
        where = f"monitoring.alerts.{i}"
        unknown = set(rule) - {"name", "metric", "op", "threshold", "window", "webhook", "min_requests"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if rule.get("metric") not in METRICS:
            raise ConfigError(f"{where}: metric {rule.get('metric')!r} is not one of {', '.join(METRICS)}")
        if rule.get("op", ">") not in (">", "<"):
            raise ConfigError(f"{where}: op must be '>' or '<'")
        if not isinstance(rule.get("threshold"), int | float):
            raise ConfigError(f"{where}: threshold must be a number")
        parse_window(rule.get("window", "15m"), f"{where}.window")


def metric_value(series: Any, metric: str) -> float | None:
    """The rule's metric over the window (None: no data, e.g. no thumbs or no answers)."""
    totals = series.totals()
    if metric == "latency_p95_ms":  # one bucket spans the window, so this is the window's p95
        values = [v for v in series.latency_p95_ms if v is not None]
        return float(np.max(values)) if values else None
    if metric == "rail_blocks":
        return float(totals["rail_actions"].get("block", 0))
    if metric == "rail_flags":
        return float(totals["rail_actions"].get("flag", 0))
    value = totals.get(metric)
    return None if value is None else float(value)


def evaluate(
    ws: Any, rules: list[dict[str, Any]], now: datetime | None = None, post: Any = None
) -> list[Fired]:
    """Each rule over its window; fired ones are logged and POSTed to their webhook."""
    from lamina.monitoring.kpis import collect

    validate(rules)
    out = []
    for rule in rules:
        window = rule.get("window", "15m")
        span = parse_window(window)
        series = collect(ws, span, bucket=span, now=now)
        requests = sum(series.requests)
        metric = rule["metric"]
        value = metric_value(series, metric)
        op, threshold = rule.get("op", ">"), float(rule["threshold"])
        enough = requests >= int(rule.get("min_requests", 1))
        fired = enough and value is not None and (value > threshold if op == ">" else value < threshold)
        name = rule.get("name") or metric
        result = Fired(name, metric, value, op, threshold, window, requests, bool(fired))
        out.append(result)
        if fired:
            log.warning("alert %s: %s = %s %s %s over %s", result.rule, metric, value, op, threshold, window)
            if rule.get("webhook"):
                (post or _post)(rule["webhook"], {"event": "alert", **result.as_dict()})
    return out


def _post(url: str, payload: dict[str, Any]) -> None:
    import httpx

    try:
        httpx.post(url, content=json.dumps(payload), headers={"content-type": "application/json"},
                   timeout=10).raise_for_status()  # fmt: skip
    except httpx.HTTPError as exc:  # an unreachable hook must not hide the alert: it is logged above
        log.error("alert webhook %s failed: %s", url, exc)
