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
    # The engine's own iteration times (``lamina_engine_iteration_seconds`` on ``/metrics``): with
    # them, ``simulate`` replays the engine's loop iteration by iteration (see ``_simulate_engine``)
    step_s: dict[int, list[float]] = field(default_factory=dict)  # one decode iteration, per batch size
    prefill_s: dict[int, list[float]] = field(default_factory=dict)  # prefilling k requests together
    overhead_s: list[float] = field(default_factory=list)  # client's TTFT beyond the engine's (HTTP, hops)
    alone_steps: int = 8  # tokens a lone request makes per iteration (engine.ALONE_STEPS)

    def __post_init__(self) -> None:
        for name, table in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s)):
            if not table or any(not samples for samples in table.values()):
                raise ConfigError(f"capacity profile: {name} needs samples for at least one batch size")
            if any(b < 1 or any(s < 0 or not math.isfinite(s) for s in v) for b, v in table.items()):
                raise ConfigError(f"capacity profile: {name} has a bad batch size or a negative time")
        if not self.output_tokens or min(self.output_tokens) < 1:
            raise ConfigError("capacity profile: output_tokens needs samples of at least one token")
        if bool(self.step_s) != bool(self.prefill_s):
            raise ConfigError("capacity profile: step_s and prefill_s come together (both from /metrics)")
        for name, table in (("step_s", self.step_s), ("prefill_s", self.prefill_s)):
            if any(b < 1 or not v or any(t < 0 or not math.isfinite(t) for t in v) for b, v in table.items()):
                raise ConfigError(f"capacity profile: {name} has a bad size, no samples or a negative time")
        if any(t < 0 or not math.isfinite(t) for t in self.overhead_s) or self.alone_steps < 1:
            raise ConfigError("capacity profile: overhead_s needs non-negative times, alone_steps ≥ 1")
        for name, table in (("tpot", self.tpot_s), ("step", self.step_s), ("prefill", self.prefill_s)):
            sizes = sorted(table)
            object.__setattr__(self, f"_{name}", (sizes, [float(np.median(table[b])) for b in sizes]))
        object.__setattr__(self, "_ttft_sizes", sorted(self.ttft_s))

    @property
    def iterates(self) -> bool:
        """Whether the engine's iteration times are known (then the simulation replays its loop)."""
        return bool(self.step_s)

    def _curve(self, name: str, size: int) -> float:
        """Median of table ``name`` at ``size``, linear between measured sizes (and past the last two)."""
        sizes, medians = getattr(self, f"_{name}")
        if len(sizes) == 1 or size <= sizes[0]:
            return float(medians[0])
        i = min(bisect_left(sizes, size), len(sizes) - 1)
        b0, b1, t0, t1 = sizes[i - 1], sizes[i], medians[i - 1], medians[i]
        return max(1e-9, t0 + (t1 - t0) * (size - b0) / (b1 - b0))

    def tpot(self, batch: int) -> float:
        """Median time per token at ``batch``, as clients measured it."""
        return self._curve("tpot", batch)

    def step(self, batch: int) -> float:
        """One decode iteration of ``batch`` rows, as the engine measured it."""
        return self._curve("step", batch)

    def prefill(self, joining: int) -> float:
        """Prefilling ``joining`` requests together, as the engine measured it."""
        return self._curve("prefill", joining)

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
            return {int(b): [float(x) for x in v] for b, v in data.get(name, {}).items()}

        return cls(
            ttft_s=table("ttft_s"),
            tpot_s=table("tpot_s"),
            output_tokens=[int(t) for t in data["output_tokens"]],
            max_batch=int(data.get("max_batch", 32)),
            max_waiting=int(data.get("max_waiting", 256)),
            max_queue_wait=float(data.get("max_queue_wait", 0.5)),
            source=str(data.get("source", "")),
            step_s=table("step_s"),
            prefill_s=table("prefill_s"),
            overhead_s=[float(x) for x in data.get("overhead_s", [])],
            alone_steps=int(data.get("alone_steps", 8)),
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


@dataclass(frozen=True)
class Trace:
    """Traffic as it was sent: each request's arrival (seconds from the start, in order) and how many
    tokens its answer had. ``simulate(..., trace=)`` replays it, so a simulation can be compared with
    the very run it models instead of with other random arrivals at the same rate."""

    arrivals: list[float]
    tokens: list[int]

    def __post_init__(self) -> None:
        a = np.asarray(self.arrivals, dtype=float)
        if len(a) < 10 or len(self.tokens) != len(a):
            raise ConfigError("a trace needs at least 10 arrivals and one answer length per arrival")
        if not np.isfinite(a).all() or (np.diff(a) < 0).any() or a[0] < 0:
            raise ConfigError("a trace's arrivals must be finite, non-negative and in order")
        if min(self.tokens) < 1:
            raise ConfigError("a trace's answers need at least one token each")
        if a[-1] <= a[0]:
            raise ConfigError("a trace's arrivals must span some time")

    @property
    def rate(self) -> float:
        """Mean arrivals per second over the trace."""
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])


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
    trace: Trace | None = None,
) -> SimResult:
    """Poisson arrivals at ``rate`` over ``replicas`` behind a power-of-two-choices gateway, or the
    arrivals and answer lengths of recorded traffic (``trace``; then ``rate`` and ``requests`` come
    from it).

    The first ``warmup`` share of requests is left out of the statistics (the cluster starts empty).
    """
    if trace is not None:
        rate, requests = trace.rate, len(trace.arrivals)
    if replicas < 1 or rate <= 0 or requests < 10:
        raise ConfigError("simulate needs replicas ≥ 1, rate > 0 and at least 10 requests")
    if profile.iterates:
        return _simulate_engine(
            profile, replicas, rate, requests=requests, seed=seed, warmup=warmup, trace=trace
        )
    rng = np.random.default_rng(seed)
    arrivals, lengths, picks = _traffic(profile, replicas, rate, requests, rng, trace)
    nodes = [_Replica() for _ in range(replicas)]
    events: list[
        tuple[float, int, int, int]
    ] = []  # (time, kind 0 = replica event / 1 = arrival, index, version)
    skip = int(requests * warmup)
    ttfts: list[float] = []
    latencies: list[float] = []
    rejected = 0
    tokens = 0
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
                    tokens += r.tokens
            else:
                still.append(r)
        node.active = still
        admit(node, now)
        schedule(index, node)
    return _summary(
        replicas, rate, arrivals, skip, ttfts, latencies, rejected, tokens, area / (last_t or 1e-9)
    )


def _traffic(
    profile: ReplicaProfile,
    replicas: int,
    rate: float,
    requests: int,
    rng: np.random.Generator,
    trace: Trace | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson arrival times, answer lengths drawn from the measured ones (or both from ``trace``),
    and each request's two replicas for the power-of-two-choices gateway: two different ones (with
    two replicas that is join-the-shortest-queue; drawing the same one twice would dispatch at random
    half the time)."""
    if trace is None:
        arrivals = np.cumsum(rng.exponential(1 / rate, requests))
        lengths = np.asarray(profile.output_tokens)[rng.integers(len(profile.output_tokens), size=requests)]
    else:
        arrivals, lengths = np.asarray(trace.arrivals, dtype=float), np.asarray(trace.tokens)
    first = rng.integers(replicas, size=requests)
    second = (first + 1 + rng.integers(max(replicas - 1, 1), size=requests)) % replicas
    return arrivals, lengths, np.stack([first, second], axis=1)


def _summary(
    replicas: int, rate: float, arrivals: np.ndarray, skip: int, ttfts: list[float], latencies: list[float],
    rejected: int, tokens: int, in_flight: float,
) -> SimResult:  # fmt: skip
    """The statistics of the requests after the warm-up (``in_flight``: mean over the cluster)."""
    counted = len(arrivals) - skip
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
        throughput=len(latencies) / span,
        tokens_per_s=tokens / span,
        busy=in_flight / replicas,
    )


class _Engine:
    """One replica's engine loop: waiting requests (FIFO), the running batch, the iteration under way.

    Every running request gets the same tokens per iteration, so the engine counts tokens given per
    row (``progress``) and keeps the batch as a heap of the progress at which each request is done:
    an iteration costs O(1) plus the requests it ends, not a pass over the batch.
    """

    __slots__ = ("waiting", "running", "busy", "tokens_per_row", "progress")

    def __init__(self) -> None:
        self.waiting: deque[_Request] = deque()
        self.running: list[tuple[float, int, _Request]] = []  # heap of (progress when done, index, request)
        self.busy = False  # an iteration is under way: arrivals wait for the next one
        self.tokens_per_row = 1  # what the iteration under way gives each running request
        self.progress = 0  # tokens given to every row so far

    def in_flight(self) -> int:
        return len(self.waiting) + len(self.running)


def _simulate_engine(
    profile: ReplicaProfile,
    replicas: int,
    rate: float,
    *,
    requests: int,
    seed: int,
    warmup: float,
    trace: Trace | None = None,
) -> SimResult:
    """``simulate`` for a profile with the engine's own iteration times: each replica replays
    ``Engine._run`` — admit every waiting request there is room for and prefill them together (their
    first token comes at its end), then one decode iteration for the whole batch (a lone request
    makes ``alone_steps`` tokens in one, or one when others wait); requests arriving meanwhile wait
    for the next iteration. So a join stalls the batch's decoding, and a request's TTFT includes the
    rest of the iteration it arrived in. Each request's client-side times add one measured overhead.
    """
    rng = np.random.default_rng(seed)
    arrivals, lengths, picks = _traffic(profile, replicas, rate, requests, rng, trace)
    overheads = np.asarray(profile.overhead_s or [0.0])
    extra = overheads[rng.integers(len(overheads), size=requests)]
    sizes = range(profile.max_batch + 1)  # the curves, looked up once: the loop below runs millions of times
    step = [profile.step(max(b, 1)) for b in sizes]
    prefill = [profile.prefill(max(k, 1)) for k in sizes]
    engines = [_Engine() for _ in range(replicas)]
    events: list[tuple[float, int, int]] = []  # (time, 0 = an iteration ends / 1 = an arrival, index)
    skip = int(requests * warmup)
    ttfts: list[float] = []
    latencies: list[float] = []
    rejected = tokens = 0
    area = 0.0  # ∫ requests in flight dt, as the sum of each request's time in the system

    def leave(r: _Request, now: float) -> None:
        nonlocal tokens, area
        area += now - r.arrival
        if r.index >= skip:
            ttfts.append(r.first + extra[r.index])
            latencies.append(now - r.arrival + extra[r.index])
            tokens += r.tokens

    def iterate(index: int, now: float) -> None:
        """Start the engine's next iteration at ``now`` (if it has anything to do)."""
        nonlocal rejected, area
        engine = engines[index]
        waiting, running = engine.waiting, engine.running
        while waiting and now - waiting[0].arrival > profile.max_queue_wait:
            shed = waiting.popleft()  # FIFO: the oldest are first
            rejected += shed.index >= skip
            area += now - shed.arrival
        end = now
        room = min(profile.max_batch - len(running), len(waiting))
        if room > 0:
            end += prefill[room]
            for _ in range(room):
                r = waiting.popleft()
                r.first = end - r.arrival
                if r.tokens > 1:
                    heapq.heappush(running, (engine.progress + r.tokens - 1, r.index, r))
                else:
                    leave(r, end)
        if len(running) == 1 and profile.alone_steps > 1:
            alone = 1 if waiting else profile.alone_steps
            engine.tokens_per_row = int(min(alone, running[0][0] - engine.progress))
            end += engine.tokens_per_row * step[1]
        elif running:
            engine.tokens_per_row = 1
            end += step[len(running)]
        engine.busy = end > now
        if engine.busy:
            heapq.heappush(events, (end, 0, index))

    heapq.heappush(events, (float(arrivals[0]), 1, 0))
    now = 0.0
    while events:
        now, kind, index = heapq.heappop(events)
        if kind == 1:
            r = _Request(index, now, int(lengths[index]))
            a, b = picks[index]
            target = int(a if engines[a].in_flight() <= engines[b].in_flight() else b)
            if len(engines[target].waiting) >= profile.max_waiting:
                rejected += index >= skip
            else:
                engines[target].waiting.append(r)
                if not engines[target].busy:
                    iterate(target, now)
            if index + 1 < requests:
                heapq.heappush(events, (float(arrivals[index + 1]), 1, index + 1))
            continue
        engine = engines[index]
        engine.progress += engine.tokens_per_row
        while engine.running and engine.running[0][0] <= engine.progress:
            leave(heapq.heappop(engine.running)[2], now)
        iterate(index, now)
    last = max(float(arrivals[-1]), now)
    return _summary(replicas, rate, arrivals, skip, ttfts, latencies, rejected, tokens, area / last)


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
