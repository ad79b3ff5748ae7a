"""Capacity planning past one machine: from one replica's measured service times to the replicas and
nodes that N requests/s need at a time-to-first-token objective, by discrete-event simulation.

A continuous-batching replica is not an M/M/c queue: every request in its batch advances one token
per iteration, an iteration takes longer the larger the batch, and a request that finds the batch
full waits (and gets 429 once it has waited ``max_queue_wait``). So the model here is a
processor-sharing server with a batch-size-dependent rate, driven by what ``bench/capacity.py``
measures on a real ``lamina serve``:

- ``ttft_s[b]``: time from admission to the first token when the batch holds ``b`` requests;
- ``tpot_s[b]``: time per output token at batch ``b`` (every running request gets one per iteration);
- ``output_tokens``: how long answers are.

The gateway in front dispatches by "power of two choices" (two replicas drawn at random, the one
with fewer requests in flight wins), as Envoy's and nginx's least-request balancers do; with two
replicas that is join-the-shortest-queue.

Why hand-written (about 200 lines) rather than SimPy or Ciw: both model a server as slots with one
service time per customer; here every running request's speed changes whenever the batch grows or
shrinks, which is a short event loop of its own. It is checked against queueing theory where that
holds exactly (M/M/1, M/D/1, an uncongested batch: ``tests/serving/test_capacity.py``) and against a
real two-replica run (``bench/capacity.py``, ``docs/scale.md``).

Serving layer (4): numpy only; nothing here imports torch.
"""

from __future__ import annotations

import heapq
import json
import math
from bisect import bisect_left
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamina.core.errors import ConfigError


@dataclass(frozen=True)
class ReplicaProfile:
    """One replica's measured service times (seconds), by the batch size they were measured at."""

    ttft_s: dict[int, list[float]]  # admission → first token, per batch size
    tpot_s: dict[int, list[float]]  # per output token, per batch size
    output_tokens: list[int]
    max_batch: int = 32  # server.max_batch
    max_waiting: int = 256  # server.max_waiting: beyond it, 429
    max_queue_wait: float = 0.5  # server.max_queue_wait: a request waiting longer gets 429
    source: str = ""  # where and how it was measured

    def __post_init__(self) -> None:
        for name, table in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s)):
            if not table or any(not samples for samples in table.values()):
                raise ConfigError(f"capacity profile: {name} needs samples for at least one batch size")
            if any(b < 1 or any(s < 0 or not math.isfinite(s) for s in v) for b, v in table.items()):
                raise ConfigError(f"capacity profile: {name} has a bad batch size or a negative time")
        if not self.output_tokens or min(self.output_tokens) < 1:
            raise ConfigError("capacity profile: output_tokens needs samples of at least one token")
        object.__setattr__(self, "_sizes", sorted(self.tpot_s))
        object.__setattr__(self, "_tpot", [float(np.median(self.tpot_s[b])) for b in sorted(self.tpot_s)])
        object.__setattr__(self, "_ttft_sizes", sorted(self.ttft_s))

    def tpot(self, batch: int) -> float:
        """Median time per token at ``batch``, linear between measured sizes (and past the last two)."""
        sizes: list[int] = self._sizes  # type: ignore[attr-defined]
        medians: list[float] = self._tpot  # type: ignore[attr-defined]
        if len(sizes) == 1 or batch <= sizes[0]:
            return medians[0]
        i = min(bisect_left(sizes, batch), len(sizes) - 1)
        b0, b1, t0, t1 = sizes[i - 1], sizes[i], medians[i - 1], medians[i]
        return max(1e-9, t0 + (t1 - t0) * (batch - b0) / (b1 - b0))

    def ttft_samples(self, batch: int) -> list[float]:
        """The TTFTs measured at the batch size nearest ``batch`` (on a log scale, as sizes double)."""
        sizes: list[int] = self._ttft_sizes  # type: ignore[attr-defined]
        return self.ttft_s[min(sizes, key=lambda b: abs(math.log(b) - math.log(max(batch, 1))))]

    def ttft(self, batch: int, rng: np.random.Generator) -> float:
        """One measured admission-to-first-token time at the measured batch size nearest ``batch``."""
        samples = self.ttft_samples(batch)
        return float(samples[int(rng.integers(len(samples)))])

    def peak_rate(self) -> float:
        """Requests/s one replica finishes with its batch full: the throughput ceiling."""
        batch = self.max_batch
        first = float(np.mean(self.ttft_samples(batch)))
        per_request = first + (float(np.mean(self.output_tokens)) - 1) * self.tpot(batch)
        return batch / per_request

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaProfile:
        def table(name: str) -> dict[int, list[float]]:
            return {int(b): [float(x) for x in v] for b, v in data[name].items()}

        return cls(
            ttft_s=table("ttft_s"),
            tpot_s=table("tpot_s"),
            output_tokens=[int(t) for t in data["output_tokens"]],
            max_batch=int(data.get("max_batch", 32)),
            max_waiting=int(data.get("max_waiting", 256)),
            max_queue_wait=float(data.get("max_queue_wait", 0.5)),
            source=str(data.get("source", "")),
        )

    @classmethod
    def load(cls, path: Path) -> ReplicaProfile:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot read the capacity profile {path}: {exc}",
                hint="write one with `python bench/capacity.py` (it measures a real lamina serve)",
            ) from exc


@dataclass
class SimResult:
    """What the simulated cluster did with ``rate`` requests/s (times in seconds)."""

    replicas: int
    rate: float
    requests: int
    rejected: float  # share answered 429 (queue full or waited past max_queue_wait)
    ttft_mean: float
    ttft_p50: float
    ttft_p95: float
    ttft_p99: float
    latency_mean: float
    latency_p50: float
    throughput: float  # completed requests/s
    tokens_per_s: float
    busy: float = field(default=0.0)  # mean requests in flight per replica

    def row(self) -> dict[str, Any]:
        return asdict(self)


class _Request:
    __slots__ = ("index", "arrival", "tokens", "first", "remaining", "prefill_end")

    def __init__(self, index: int, arrival: float, tokens: int) -> None:
        self.index, self.arrival, self.tokens = index, arrival, tokens
        self.first = 0.0
        self.remaining = 0.0
        self.prefill_end = 0.0


class _Replica:
    """One replica's batch (processor sharing at the measured per-token speed) and its queue."""

    __slots__ = ("queue", "active", "clock", "version")

    def __init__(self) -> None:
        self.queue: deque[_Request] = deque()
        self.active: list[_Request] = []
        self.clock = 0.0  # decode progress is accounted up to here
        self.version = 0  # bumps when the next event moves; stale heap entries are skipped

    def in_flight(self) -> int:
        return len(self.queue) + len(self.active)


def simulate(
    profile: ReplicaProfile,
    replicas: int,
    rate: float,
    *,
    requests: int = 20_000,
    seed: int = 0,
    warmup: float = 0.1,
) -> SimResult:
    """Poisson arrivals at ``rate`` over ``replicas`` behind a power-of-two-choices gateway.

    The first ``warmup`` share of requests is left out of the statistics (the cluster starts empty).
    """
    if replicas < 1 or rate <= 0 or requests < 10:
        raise ConfigError("simulate needs replicas ≥ 1, rate > 0 and at least 10 requests")
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, requests))
    lengths = np.asarray(profile.output_tokens)[rng.integers(len(profile.output_tokens), size=requests)]
    picks = rng.integers(replicas, size=(requests, 2))
    nodes = [_Replica() for _ in range(replicas)]
    events: list[
        tuple[float, int, int, int]
    ] = []  # (time, kind 0 = replica event / 1 = arrival, index, version)
    skip = int(requests * warmup)
    ttfts: list[float] = []
    latencies: list[float] = []
    rejected = 0
    done = tokens = 0
    area = 0.0  # ∫ requests in flight dt, for the mean occupancy
    last_t, in_flight = 0.0, 0

    def advance(node: _Replica, now: float) -> None:
        """Decode progress up to ``now`` at the current batch's speed."""
        if node.active and now > node.clock:
            step = profile.tpot(len(node.active))
            moved = (now - node.clock) / step
            for r in node.active:
                if r.prefill_end <= node.clock:
                    r.remaining -= moved
                elif r.prefill_end < now:  # prefill ended inside the interval
                    r.remaining -= (now - r.prefill_end) / step
        node.clock = now

    def schedule(index: int, node: _Replica) -> None:
        node.version += 1
        if not node.active:
            return
        step = profile.tpot(len(node.active))
        nxt = min(
            r.prefill_end if r.prefill_end > node.clock else node.clock + max(r.remaining, 0.0) * step
            for r in node.active
        )
        heapq.heappush(events, (nxt, 0, index, node.version))

    def admit(node: _Replica, now: float) -> None:
        nonlocal rejected, in_flight
        while node.queue and len(node.active) < profile.max_batch:
            r = node.queue.popleft()
            if now - r.arrival > profile.max_queue_wait:
                rejected += r.index >= skip
                in_flight -= 1
                continue
            r.prefill_end = now + profile.ttft(len(node.active) + 1, rng)
            r.first = r.prefill_end - r.arrival
            r.remaining = r.tokens - 1
            node.active.append(r)

    next_arrival = 0
    heapq.heappush(events, (float(arrivals[0]), 1, 0, 0))
    while events:
        now, kind, index, version = heapq.heappop(events)
        area += in_flight * (now - last_t)
        last_t = now
        if kind == 1:  # an arrival
            r = _Request(index, now, int(lengths[index]))
            a, b = picks[index]
            node_index = int(a if nodes[a].in_flight() <= nodes[b].in_flight() else b)
            node = nodes[node_index]
            if len(node.queue) >= profile.max_waiting:
                rejected += index >= skip
            else:
                in_flight += 1
                advance(node, now)
                node.queue.append(r)
                admit(node, now)
                schedule(node_index, node)
            next_arrival = index + 1
            if next_arrival < requests:
                heapq.heappush(events, (float(arrivals[next_arrival]), 1, next_arrival, 0))
            continue
        node = nodes[index]
        if version != node.version:
            continue  # superseded
        advance(node, now)
        still = []
        for r in node.active:
            if r.prefill_end <= now + 1e-12 and r.remaining <= 1e-6:
                in_flight -= 1
                if r.index >= skip:
                    ttfts.append(r.first)
                    latencies.append(now - r.arrival)
                    done += 1
                    tokens += r.tokens
            else:
                still.append(r)
        node.active = still
        admit(node, now)
        schedule(index, node)
    counted = requests - skip
    span = float(arrivals[-1] - arrivals[skip]) or 1e-9
    t, lat = np.asarray(ttfts or [math.nan]), np.asarray(latencies or [math.nan])
    return SimResult(
        replicas=replicas,
        rate=rate,
        requests=counted,
        rejected=rejected / counted,
        ttft_mean=float(t.mean()),
        ttft_p50=float(np.percentile(t, 50)),
        ttft_p95=float(np.percentile(t, 95)),
        ttft_p99=float(np.percentile(t, 99)),
        latency_mean=float(lat.mean()),
        latency_p50=float(np.percentile(lat, 50)),
        throughput=done / span,
        tokens_per_s=tokens / span,
        busy=area / (last_t or 1e-9) / replicas,
    )


@dataclass
class Plan:
    """The smallest cluster that meets the objective at ``rate``, and the simulation that shows it."""

    rate: float
    ttft_p95_slo: float
    replicas: int
    nodes: int
    result: SimResult
    below: SimResult | None  # one replica fewer, for contrast (None when one replica suffices)


def plan(
    profile: ReplicaProfile,
    rate: float,
    ttft_p95_slo: float,
    *,
    replicas_per_node: int = 1,
    requests: int | None = None,
    seed: int = 0,
) -> Plan:
    """Fewest replicas whose simulated p95 TTFT meets ``ttft_p95_slo`` with no request refused.

    Starts from the throughput bound (``rate / peak_rate``) and searches upward, then bisects: more
    replicas never make the simulated tail worse at the same seed, up to sampling noise.
    """
    if ttft_p95_slo <= 0 or replicas_per_node < 1:
        raise ConfigError("plan needs a positive TTFT objective and replicas_per_node ≥ 1")
    floor = float(np.percentile(profile.ttft_s[min(profile.ttft_s)], 95))
    if ttft_p95_slo < floor:
        raise ConfigError(
            f"p95 TTFT ≤ {ttft_p95_slo * 1000:g} ms is below what one idle replica gives "
            f"({floor * 1000:.1f} ms p95): no number of replicas meets it",
            hint="raise the objective, or profile a faster replica (smaller model, GPU)",
        )
    n = requests or int(min(200_000, max(5_000, rate * 20)))

    def ok(r: int) -> tuple[bool, SimResult]:
        res = simulate(profile, r, rate, requests=n, seed=seed)
        return res.rejected == 0 and res.ttft_p95 <= ttft_p95_slo, res

    bound = max(1, math.ceil(rate / profile.peak_rate()))
    low = bound
    good, result = ok(low)
    if good:
        high, best = low, result
        low = 0
    else:
        high = low
        while True:
            high = math.ceil(high * 1.25) + 1
            good, best = ok(high)
            if good:
                break
            if high > 50 * bound + 10:
                raise ConfigError(
                    f"even {high} replicas (50× the throughput bound) miss p95 TTFT ≤ "
                    f"{ttft_p95_slo * 1000:g} ms at {rate:g} requests/s",
                    hint="the objective is near one replica's own TTFT; raise it or profile a faster replica",
                )
    while high - low > 1:  # low fails (or is 0), high meets the objective
        mid = (low + high) // 2
        good, res = ok(mid)
        if good:
            high, best = mid, res
        else:
            low = mid
    below = ok(high - 1)[1] if high > 1 else None
    return Plan(rate, ttft_p95_slo, high, math.ceil(high / replicas_per_node), best, below)
