"""Prometheus metrics for ``GET /metrics``: latency, TTFT, time per output token, tokens, queue
depth, batch size and errors by status code. One registry per app, so tests and several servers
in one process do not collide."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from lamina.core.energy import EnergyMeter

FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, energy: EnergyMeter | None = None) -> None:
        r = self.registry = CollectorRegistry()
        # the server's energy since it started (RAPL or CPU time × W/core: the `method` label says
        # which) and per 1,000 generated tokens: the whole process, idle time and HTTP included
        self.energy_meter = (energy or EnergyMeter()).start()
        self.energy = Gauge("lamina_energy_joules", "Energy of this server process since start", ["method"],
                            registry=r)  # fmt: skip
        self.energy_per_1k = Gauge(
            "lamina_energy_joules_per_1k_output_tokens", "Energy since start per 1,000 generated tokens",
            ["method"], registry=r,
        )  # fmt: skip
        self.co2 = Gauge("lamina_co2_grams", "CO2 of this server's energy since start", registry=r)
        self.requests = Counter(
            "lamina_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self.errors = Counter("lamina_errors", "Error responses by status code", ["code"], registry=r)
        self.latency = Histogram(
            "lamina_request_seconds", "Request latency", ["route"], buckets=FAST, registry=r
        )
        self.ttft = Histogram(
            "lamina_time_to_first_token_seconds", "Time to first token", buckets=FAST, registry=r
        )
        self.tpot = Histogram(
            "lamina_time_per_output_token_seconds",
            "Time per output token after the first",
            buckets=FAST,
            registry=r,
        )
        self.tokens = Counter("lamina_output_tokens", "Generated tokens", registry=r)
        self.tokens_per_s = Gauge(
            "lamina_tokens_per_second", "Output tokens/s of the last finished request", registry=r
        )
        self.queue = Gauge(
            "lamina_queue_depth", "Requests waiting per model version", ["version"], registry=r
        )
        self.batch = Gauge(
            "lamina_batch_size", "Sequences decoding together per model version", ["version"], registry=r
        )

        self.rail_verdicts = Counter(
            "lamina_rail_verdicts",
            "Guardrail verdicts by rail, stage and action",
            ["rail", "stage", "action"],
            registry=r,
        )
        self.rail_errors = Counter("lamina_rail_errors", "Rails that failed (and failed closed or flagged)",
                                   ["rail"], registry=r)  # fmt: skip
        self.rail_seconds = Histogram(
            "lamina_rail_seconds", "Time a rail takes per check", ["rail", "stage"], buckets=FAST, registry=r
        )

        self.engine_timings = EngineTimings()
        r.register(self.engine_timings)

        self.feedback = Counter(
            "lamina_feedback", "Feedback given on answers (thumbs_up, thumbs_down, preferred, …)", ["label"],
            registry=r,
        )  # fmt: skip

    def observe_feedback(self, label: str | None) -> None:
        self.feedback.labels(label or "other").inc()

    def observe_rail(self, stage: str, rail: str, verdict: Any, seconds: float) -> None:
        self.rail_verdicts.labels(rail, stage, verdict.action).inc()
        self.rail_seconds.labels(rail, stage).observe(seconds)
        if verdict.error:
            self.rail_errors.labels(rail).inc()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()

    def observe_generation(self, job: Any) -> None:
        n = len(job.generated)
        if not n or job.first_token_at is None:
            return
        now = time.perf_counter()
        self.ttft.observe(job.first_token_at - job.submitted)
        if n > 1:
            self.tpot.observe((now - job.first_token_at) / (n - 1))
        self.tokens.inc(n)
        self.tokens_per_s.set(n / max(now - job.submitted, 1e-9))

    def observe_engines(self, pool: Any) -> None:
        for loaded in pool.engines():
            self.queue.labels(loaded.version.ref).set(loaded.engine.queue_depth)
            self.batch.labels(loaded.version.ref).set(loaded.engine.running)
        self.engine_timings.engines = [
            (e.version.ref, getattr(e.engine, "stats", {})) for e in pool.engines()
        ]

    def observe_energy(self) -> dict[str, float | str | None]:
        """Set the energy gauges; also what `/metrics` readers and the report show."""
        used = self.energy_meter.read()
        tokens = self.tokens._value.get()
        per_1k = used.joules / tokens * 1000 if tokens else None
        self.energy.labels(used.method).set(used.joules)
        if per_1k is not None:
            self.energy_per_1k.labels(used.method).set(per_1k)
        self.co2.set(used.co2_g)
        return {"joules": used.joules, "per_1k_tokens_j": per_1k, "co2_g": used.co2_g, "method": used.method}

    def render(self) -> bytes:
        self.observe_energy()
        return generate_latest(self.registry)


class EngineTimings(Collector):
    """Each engine's iterations and their time, by phase (``decode``, ``prefill``) and size (rows in
    the batch, or requests prefilled together): the replica's service times, as the engine itself
    measured them. ``sum(seconds) / sum(iterations)`` per size is its step-time curve (the capacity
    model's input, ``bench/capacity.py``). Exported as counters, read at scrape time."""

    def __init__(self) -> None:
        self.engines: list[tuple[str, dict[str, Any]]] = []

    def collect(self) -> Any:
        seconds = CounterMetricFamily(
            "lamina_engine_iteration_seconds", "Engine time spent in iterations, by phase and size",
            labels=["version", "phase", "size"],
        )  # fmt: skip
        count = CounterMetricFamily(
            "lamina_engine_iterations",
            "Engine iterations, by phase and size",
            labels=["version", "phase", "size"],
        )
        for ref, stats in self.engines:
            for phase in ("decode", "prefill"):
                for size, (n, total) in sorted(stats.get(phase, {}).items()):
                    count.add_metric([ref, phase, str(size)], n)
                    seconds.add_metric([ref, phase, str(size)], total)
        yield seconds
        yield count


def read_engine_timings(
    text: str, into: dict[tuple[str, int], list[float]] | None = None
) -> dict[tuple[str, int], list[float]]:
    """``EngineTimings`` back from a ``/metrics`` page (prometheus_client's own parser), summed over
    model versions and added to ``into``: (phase, size) -> [iterations, seconds]."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {} if into is None else into
    for family in text_string_to_metric_families(text):
        if family.name in ("lamina_engine_iterations", "lamina_engine_iteration_seconds"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["phase"], int(sample.labels["size"]))
                    found.setdefault(key, [0.0, 0.0])[family.name.endswith("seconds")] += sample.value
    return found
