"""Capacity model: measure a replica, simulate a cluster, check the simulation against two real replicas.

Model: the serving benchmark's 4.2M-parameter Llama (char-level Tiny Shakespeare, trained here).
Requests: streamed completions, 64 new tokens, temperature 0.8, prompts from held-out paragraphs.

1. **Profile.** Two real ``lamina serve`` replicas of the model run side by side on this machine
   (``server.threads`` 1 each, the engine in its own process, each replica pinned to a core of its
   own unless ``--no-pin``: how a node packs replicas). Both get the same closed-loop load, c = 1, 2,
   4, 8, 16, 32 streams each: at each c the time from sending to the first token (TTFT) and the
   time per output token, per replica, and the answer lengths. This is a
   ``lamina.serving.capacity.ReplicaProfile``.
2. **Check.** Open-loop Poisson traffic at 20-80 % of the two replicas' peak; this script dispatches
   each request to the replica with fewer requests in flight (join-the-shortest-queue, which is what
   the simulated power-of-two-choices gateway does with two replicas), twice per load, recording
   each run's arrivals and answer lengths. Four profiles drive the simulation: client-measured
   service times from the closed loops of step 1 or from open-loop traffic at other loads
   (30-85 %), and two that replay the engine's loop with the iteration times the engines reported
   on ``/metrics`` (during the closed loops, or during the open-loop traffic). Each measured run is
   replayed (``simulate(..., trace=)``: its own arrivals and answer lengths), and mean TTFT, median
   TTFT, mean latency, throughput and the share refused are compared with the measurement (target:
   within 15 % at the loads where neither run refused a request; the two runs' own gap is printed
   beside it, and so is a long Poisson simulation at the same rate). The profile that agrees best
   is written to ``bench/results/NAME_profile.json`` and plans step 3.
3. **Plan.** Replicas and nodes (two replicas per node, as measured) for 10 to 10,000 requests/s at
   p95 TTFT objectives, each checked by a simulation of that cluster.

    .venv/bin/python bench/capacity.py [--train-steps 200] [--seconds 30] [--no-pin] [--name NAME]

Writes bench/results/NAME.json, NAME.md and NAME_profile.json: NAME is ``capacity`` on the
avx512-bf16 class and ``capacity-CLASS`` elsewhere (the two classes serve at different speeds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results"

from machine import machine_info, machine_line, save  # noqa: E402
from serve import ADMIN, setup, start_server  # noqa: E402

from lamina.gateway.metrics import read_engine_timings  # noqa: E402
from lamina.serving.capacity import ReplicaProfile, Trace, plan, simulate  # noqa: E402

NEW_TOKENS = 64
LEVELS = (1, 2, 4, 8, 16, 32)
TEXT = re.compile(rb'"text":\s*"[^"]')  # a chunk that carries text (the role chunk has none)
USAGE = re.compile(rb'"completion_tokens":\s*(\d+)')
REPLICA_SETTINGS = {"LAMINA_SERVER__THREADS": "1"}
PLAN_RATES = (10, 100, 1_000, 10_000)
CALIBRATE = (0.3, 0.5, 0.7, 0.85)  # open-loop loads (shares of the closed-loop peak) the profile is fitted on
CHECK = (0.2, 0.4, 0.6, 0.8)  # other loads, where the simulation is compared with the measurement
COMPARED = (
    "ttft_mean",
    "ttft_p50",
    "latency_mean",
    "throughput",
)  # relative gaps (and refused: a difference)
MEASURED = (*COMPARED, "rate", "ttft_p95", "rejected", "client_cores", "requests")
TARGET = 0.15  # the simulation within 15 % of the measurement (issue 19)
REPLAYS = 5  # seeds per replayed run (the service times the simulation draws)


def errors(sim: dict, real: dict) -> dict[str, float]:
    """Relative gaps of the simulation to the measurement, and the difference of the shares refused."""
    error = {k: sim[k] / real[k] - 1 for k in COMPARED}
    error["rejected"] = sim["rejected"] - real["rejected"]  # a difference of shares
    return error


def mean_rows(rows: list[dict]) -> dict[str, float]:
    """The mean of simulated results, figure by figure (the ones compared, and p95 TTFT)."""
    return {k: statistics.fmean(r[k] for r in rows) for k in (*COMPARED, "rejected", "ttft_p95")}


def gap(check: dict, profile: str) -> float:
    """The largest gap of one profile's simulation at one checked load."""
    return max(abs(v) for v in check["error"][profile].values())


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, seed: int) -> dict:
    """One streamed completion: TTFT, time per output token, tokens (from the usage chunk).

    The bytes are scanned, not parsed: on two cores the load generator shares the CPU with the
    replicas, and decoding every SSE chunk as JSON cost it about a core at 32 streams per replica.
    """
    body = {"model": "bench@champion", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0.8,
            "top_p": 0.95, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    started = time.perf_counter()
    first = None
    tail = b""
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            if first is None and TEXT.search(chunk):
                first = time.perf_counter()
            tail = (tail + chunk)[-4096:]
    end = time.perf_counter()
    found = USAGE.findall(tail)
    tokens = int(found[-1]) if found else 0
    first = first or end
    return {"sent": started, "ttft": first - started, "latency": end - started,
            "tpot": (end - first) / max(1, tokens - 1), "tokens": tokens}  # fmt: skip


def client(streams: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=600,
        limits=httpx.Limits(max_connections=streams + 8),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )


async def closed_loop(urls: list[str], prompts: list[str], streams: int, seconds: float) -> list[list[dict]]:
    """``streams`` back-to-back streams on every replica at once, for ``seconds``; results per replica."""
    out: list[list[dict]] = [[] for _ in urls]
    async with client(streams * len(urls)) as http:
        until = time.perf_counter() + seconds
        seed = iter(range(10**9))

        async def stream(i: int) -> None:
            while time.perf_counter() < until:
                out[i].append(await one_request(http, urls[i], random.choice(prompts), next(seed)))

        await asyncio.gather(*(stream(i) for i in range(len(urls)) for _ in range(streams)))
    return out


async def open_loop(urls: list[str], prompts: list[str], rate: float, seconds: float, seed: int) -> dict:
    """Poisson arrivals at ``rate``; each request to the replica with fewer in flight (ties at random)."""
    rng = random.Random(seed)
    in_flight = [0] * len(urls)
    timeline: list[list[tuple[float, int]]] = [[(0.0, 0)] for _ in urls]  # (time, in flight) per replica
    results: list[dict] = []
    refused: list[int] = []
    sent: dict[int, float] = {}  # request -> when it went out (s from the start): the trace to replay
    answered: dict[int, int] = {}  # request -> tokens in its answer
    cpu = time.process_time()
    async with client(256) as http:

        def moved(target: int, by: int) -> None:
            in_flight[target] += by
            timeline[target].append((time.perf_counter(), in_flight[target]))

        async def send(i: int) -> None:
            target = min(range(len(urls)), key=lambda k: (in_flight[k], rng.random()))
            moved(target, +1)
            admitted_with = in_flight[target]
            sent[i] = time.perf_counter() - start
            try:
                result = await one_request(http, urls[target], rng.choice(prompts), i)
                results.append(result | {"replica": target, "admitted_with": admitted_with})
                answered[i] = result["tokens"]
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 429:
                    raise
                refused.append(i)  # load shedding: waited past server.max_queue_wait
            finally:
                moved(target, -1)

        tasks = []
        start = time.perf_counter()
        at = 0.0
        i = 0
        while at < seconds:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
            i += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    client_cpu = (time.process_time() - cpu) / wall  # cores this load generator itself used
    skip = len(results) // 10  # the cluster starts empty: leave the first tenth out, as the simulation does
    kept = sorted(results, key=lambda r: r["sent"])[skip:]
    span = max(r["sent"] for r in kept) - min(r["sent"] for r in kept)
    for r in kept:  # the mean number in flight on its replica while it decoded: its batch size
        r["batch_mean"] = mean_in_flight(
            timeline[r["replica"]], r["sent"] + r["ttft"], r["sent"] + r["latency"]
        )
    ttft = [r["ttft"] for r in kept]
    # a refused request never got an answer: replayed, it asks for the usual length
    usual = int(statistics.median(answered.values())) if answered else NEW_TOKENS
    order = sorted(sent, key=sent.__getitem__)
    trace = Trace(arrivals=[sent[i] for i in order], tokens=[max(1, answered.get(i, usual)) for i in order])
    return {
        "rate": rate, "requests": len(kept),
        "ttft_mean": statistics.fmean(ttft), "ttft_p50": float(np.percentile(ttft, 50)),
        "ttft_p95": float(np.percentile(ttft, 95)),
        "latency_mean": statistics.fmean(r["latency"] for r in kept),
        "throughput": len(kept) / span if span else float("nan"),
        "rejected": len(refused) / (len(results) + len(refused)), "client_cores": client_cpu,
        "records": kept, "trace": trace,
    }  # fmt: skip


def mean_in_flight(steps: list[tuple[float, int]], start: float, end: float) -> float:
    """Time average of a step function (``(time, value)`` from then on) over ``[start, end]``."""
    if end <= start:
        return float(steps[bisect_right([t for t, _ in steps], start) - 1][1])
    total = 0.0
    for (t0, value), (t1, _) in zip(steps, [*steps[1:], (math.inf, 0)], strict=True):
        lo, hi = max(t0, start), min(t1, end)
        if hi > lo:
            total += value * (hi - lo)
    return total / (end - start)


BINS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def nearest_bin(b: float) -> int:
    return min(BINS, key=lambda x: abs(math.log(x) - math.log(max(b, 1.0))))


def profile_from_traffic(runs: list[dict], source: str) -> ReplicaProfile:
    """Service times as open-loop traffic met them: TTFT by the batch a request joined, time per
    token by the mean batch while it decoded (both binned)."""
    ttft: dict[int, list[float]] = {}
    tpot: dict[int, list[float]] = {}
    lengths = []
    for run in runs:
        for r in run["records"]:
            ttft.setdefault(nearest_bin(r["admitted_with"]), []).append(r["ttft"])
            if r["tokens"] > 1:
                tpot.setdefault(nearest_bin(r["batch_mean"]), []).append(r["tpot"])
            lengths.append(r["tokens"])
    return ReplicaProfile(
        ttft_s=ttft, tpot_s=tpot, output_tokens=[n for n in lengths if n > 0], source=source
    )


def engine_counters(urls: list[str]) -> dict[tuple[str, int], list[float]]:
    """Every replica's ``lamina_engine_iteration*`` counters from ``/metrics``, summed:
    (phase, size) -> [iterations, seconds]."""
    totals: dict[tuple[str, int], list[float]] = {}
    for url in urls:
        page = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        read_engine_timings(page.text, into=totals)
    return totals


def iteration_times(
    before: dict[tuple[str, int], list[float]], after: dict[tuple[str, int], list[float]], phase: str
) -> dict[int, list[float]]:
    """Mean seconds per iteration by size, over what the engines did between two readings (sizes
    seen at least 20 times: fewer is noise)."""
    out = {}
    for (kind, size), (n, seconds) in after.items():
        n0, s0 = before.get((kind, size), [0.0, 0.0])
        if kind == phase and n - n0 >= 20:
            out[size] = [(seconds - s0) / (n - n0)]
    return out


def engine_profile(
    base: ReplicaProfile, before: dict, after: dict, overhead: list[float], source: str
) -> ReplicaProfile:
    """``base`` (client-measured) plus the engines' own iteration times: ``simulate`` then replays
    the engine's loop."""
    steps, prefills = iteration_times(before, after, "decode"), iteration_times(before, after, "prefill")
    return replace(base, step_s=steps, prefill_s=prefills, overhead_s=overhead, source=source)


def profile_of(levels: dict[int, list[list[dict]]], source: str) -> ReplicaProfile:
    ttft = {c: [r["ttft"] for rs in per for r in rs] for c, per in levels.items()}
    tpot = {c: [r["tpot"] for rs in per for r in rs if r["tokens"] > 1] for c, per in levels.items()}
    lengths = [r["tokens"] for per in levels.values() for rs in per for r in rs if r["tokens"] > 0]
    return ReplicaProfile(ttft_s=ttft, tpot_s=tpot, output_tokens=lengths, source=source)


def write_profile(profile: ReplicaProfile, path: Path) -> None:
    """Compact JSON, times to the microsecond (the clocks measured no finer)."""
    data = profile.to_json()
    for table in ("ttft_s", "tpot_s"):
        data[table] = {b: [round(t, 6) for t in samples] for b, samples in data[table].items()}
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30, help="per load level and per checked rate")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each replica (server and engine) on a core of its own, as a node with CPU pinning runs "
        "them; the load generator runs anywhere (default). --no-pin lets the OS move them: on 2 cores "
        "the two runs of one load then differed by up to 45 %% (docs/scale.md)",
    )
    parser.add_argument(
        "--name", help="results name (default: capacity on the avx512-bf16 class, capacity-CLASS elsewhere)"
    )
    args = parser.parse_args()
    info = machine_info()
    cpu_class = info["cpu"]["class"]
    stem = args.name or ("capacity" if cpu_class == "avx512-bf16" else f"capacity-{cpu_class}")
    with tempfile.TemporaryDirectory() as tmp:
        ws, prompts, _ = setup(Path(tmp) / "ws", args.train_steps)
        ws.close()
        cores = sorted(os.sched_getaffinity(0))
        servers = [
            start_server(
                Path(tmp) / "ws",
                settings=REPLICA_SETTINGS,
                cores={cores[i % len(cores)]} if args.pin else None,
            )
            for i in range(2)
        ]
        urls = [url for _, url in servers]
        try:
            for url in urls:  # warm-up (compiled steps, caches)
                asyncio.run(closed_loop([url], prompts, 4, 3))
            levels: dict[int, list[list[dict]]] = {}
            measured_levels = []
            counters = [engine_counters(urls)]  # before each level, and after the last
            for c in LEVELS:
                per = asyncio.run(closed_loop(urls, prompts, c, args.seconds / 2))
                counters.append(engine_counters(urls))
                levels[c] = per
                everything = [r for rs in per for r in rs]
                measured_levels.append({
                    "streams_per_replica": c, "requests": len(everything),
                    "ttft_p50_ms": 1000 * float(np.percentile([r["ttft"] for r in everything], 50)),
                    "tpot_ms": 1000 * statistics.median(r["tpot"] for r in everything),
                    "requests_per_s": len(everything) / (args.seconds / 2),
                })  # fmt: skip
                print(measured_levels[-1], flush=True)
            closed = profile_of(levels, f"bench/capacity.py closed loops, {machine_line(info)}")
            peak = 2 * closed.peak_rate()
            before_calibration = engine_counters(urls)
            calibration = [
                asyncio.run(
                    open_loop(urls, prompts, round(share * peak, 1), args.seconds, seed=int(share * 100))
                )
                for share in CALIBRATE
            ]
            after_calibration = engine_counters(urls)
            # what the client waits beyond the engine's prefill when nothing else runs (HTTP, the
            # server, the hop to the engine process): one stream per replica, so each request
            # arrives at an idle engine and is prefilled alone
            lone_prefill = iteration_times(counters[0], counters[1], "prefill")[1][0]
            overhead = [max(0.0, r["ttft"] - lone_prefill) for rs in levels[LEVELS[0]] for r in rs]
            for run in calibration:
                print("calibration", run["rate"], run["requests"], round(run["rejected"], 3), flush=True)
            traffic = profile_from_traffic(
                calibration, f"bench/capacity.py open-loop traffic, {machine_line(info)}"
            )
            line = machine_line(info)
            profiles = {
                "closed loops": closed,
                "open-loop traffic": traffic,
                "engine iterations, closed loops": engine_profile(
                    closed, counters[0], counters[-1], overhead,
                    f"bench/capacity.py engine, closed loops, {line}",
                ),
                "engine iterations, open-loop traffic": engine_profile(
                    closed, before_calibration, after_calibration, overhead,
                    f"bench/capacity.py engine, open-loop traffic, {line}",
                ),
            }  # fmt: skip
            print("engine step times (ms):", {
                name: {b: round(1000 * v[0], 2) for b, v in sorted(p.step_s.items())}
                for name, p in profiles.items() if p.iterates}, "prefill:", {
                name: {k: round(1000 * v[0], 2) for k, v in sorted(p.prefill_s.items())}
                for name, p in profiles.items() if p.iterates}, flush=True)  # fmt: skip
            checks = []
            for share in CHECK:
                rate = round(share * peak, 1)
                # twice, with other arrivals: how far the two measurements differ is what the arrivals'
                # chance and the machine's noise do to one run; the simulation replays both runs
                twice = [
                    asyncio.run(open_loop(urls, prompts, rate, args.seconds, seed=int(share * 100) + k))
                    for k in (1, 2)
                ]
                real = {k: statistics.fmean(run[k] for run in twice) for k in MEASURED}
                real["refused_any"] = max(run["rejected"] for run in twice)
                repeat = max(abs(twice[0][k] / twice[1][k] - 1) for k in COMPARED)
                row: dict = {
                    "share": share,
                    "measured": real,
                    "repeat_gap": repeat,
                    "simulated": {},
                    "error": {},
                }
                row["stationary"], row["stationary_error"], row["run_gaps"] = {}, {}, {}
                for name, profile in profiles.items():
                    # each measured run replayed: its own arrivals and answer lengths (the service times
                    # drawn with REPLAYS seeds), so the arrivals' chance, which makes two runs at one rate
                    # differ, is the same on both sides of the comparison
                    replays = [
                        [
                            simulate(profile, 2, rate, trace=run["trace"], seed=seed).row()
                            for seed in range(REPLAYS)
                        ]
                        for run in twice
                    ]
                    sim = mean_rows([r for rows in replays for r in rows])
                    row["simulated"][name], row["error"][name] = sim, errors(sim, real)
                    row["run_gaps"][name] = [  # each run against its own replays
                        max(map(abs, errors(mean_rows(rows), run).values()))
                        for rows, run in zip(replays, twice, strict=True)
                    ]
                    # and the planner's view: a long Poisson run at the same rate
                    steady_sim = simulate(profile, 2, rate, requests=20_000, seed=1).row()
                    row["stationary"][name] = steady_sim
                    row["stationary_error"][name] = errors(steady_sim, real)
                    print(share, rate, name, {k: round(v, 3) for k, v in row["error"][name].items()},
                          "stationary", round(max(map(abs, row["stationary_error"][name].values())), 3),
                          flush=True)  # fmt: skip
                checks.append(row)
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=30)
    # judged where the two replicas kept up (neither run refused a request): past that the measured
    # and the simulated cluster no longer overlap (both shed load, each by its own rule of thumb)
    steady = [c for c in checks if c["measured"]["refused_any"] == 0] or checks
    worst = {n: max(gap(c, n) for c in steady) for n in profiles}
    within = {n: sum(gap(c, n) <= TARGET for c in steady) for n in profiles}
    chosen = min(profiles, key=lambda n: (-within[n], worst[n]))  # the one that agrees best plans
    profile = profiles[chosen]
    write_profile(profile, RESULTS / f"{stem}_profile.json")
    floor = float(np.percentile(profile.ttft_s[min(profile.ttft_s)], 95))
    slos = (round(max(2 * floor, 0.05), 3), 0.25)
    plans = []
    for slo in slos:
        for rate in PLAN_RATES:
            started = time.perf_counter()
            p = plan(profile, rate, slo, replicas_per_node=2)
            plans.append({"rate": rate, "ttft_p95_slo": slo, "replicas": p.replicas, "nodes": p.nodes,
                          "result": p.result.row(), "below": p.below.row() if p.below else None,
                          "seconds": time.perf_counter() - started})  # fmt: skip
            print(plans[-1]["rate"], slo, p.replicas, p.nodes, round(p.result.ttft_p95 * 1000, 1), flush=True)
    report = {"new_tokens": NEW_TOKENS, "peak_per_replica": closed.peak_rate(), "chosen": chosen,
              "worst": worst, "within": within, "steady": [c["share"] for c in steady],
              "pinned": args.pin, "name": stem, "levels": measured_levels, "checks": checks,
              "plans": plans}  # fmt: skip
    save(stem, report, render(report, info))


def render(r: dict, info: dict) -> str:
    ms = lambda s: f"{1000 * s:.1f} ms"  # noqa: E731
    lines = [
        "# Capacity model (`bench/capacity.py`)",
        "",
        f"{machine_line(info)} Two `lamina serve` replicas side by side, one torch thread "
        f"each, the engine in its own process"
        + (", each replica pinned to a core of its own (`--pin`)" if r.get("pinned") else "")
        + f"; streamed completions of {r['new_tokens']} new tokens.",
        "",
        "## 1. One replica's service times (both replicas loaded alike)",
        "",
        "| streams per replica | requests | TTFT p50 | time per output token | requests/s (both) |",
        "|---|---|---|---|---|",
    ]
    for lv in r["levels"]:
        lines.append(f"| {lv['streams_per_replica']} | {lv['requests']} | {lv['ttft_p50_ms']:.1f} ms | "
                     f"{lv['tpot_ms']:.2f} ms | {lv['requests_per_s']:.1f} |")  # fmt: skip
    lines += [
        "",
        f"Peak per replica (batch full): {r['peak_per_replica']:.1f} requests/s.",
        "",
        "## 2. The simulation against two real replicas (open-loop Poisson traffic)",
        "",
        "Four profiles drive the simulation. Two give each request client-measured service times "
        "(processor sharing at the time per token of the current batch): the closed loops above, and "
        f"open-loop traffic at {', '.join(f'{x:.0%}' for x in CALIBRATE)} of the closed-loop peak (TTFT by "
        "the batch a request joined, time per token by the mean batch while it decoded). Two replay "
        "the engine's loop iteration by iteration, with the iteration times the engines themselves "
        "reported on `/metrics` (`lamina_engine_iteration_seconds`, by batch and prefill size) during "
        "the closed loops or the open-loop traffic, plus the client's own overhead at one stream. "
        f"The check runs other loads ({', '.join(f'{x:.0%}' for x in CHECK)}), so no profile saw the "
        "traffic it is compared with. Each check load is measured twice with other arrivals ('real vs "
        "real': how far the two runs differ). The simulation **replays each measured run**: the same "
        f"arrival times and answer lengths, {REPLAYS} seeds for the service times it draws; 'real / sim' "
        "is the mean of both runs against the mean of their replays, and 'each run' is each run against "
        "its own replays. 'Poisson' is the planner's view, a long simulation at the same rate with "
        "arrivals of its own, for contrast. Judged: loads where neither run refused a request.",
        "",
        "| load | rate req/s | profile | TTFT mean real / sim | TTFT p50 real / sim "
        "| latency mean real / sim | throughput real / sim | refused real / sim | load generator "
        "| real vs real | each run | Poisson | largest gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["checks"]:
        m = c["measured"]
        for name in c["simulated"]:
            s, e = c["simulated"][name], c["error"][name]
            gap = max(abs(v) for v in e.values())
            lines.append(
                f"| {c['share']:.0%} | {m['rate']:.1f} | {name} | "
                f"{ms(m['ttft_mean'])} / {ms(s['ttft_mean'])} | "
                f"{ms(m['ttft_p50'])} / {ms(s['ttft_p50'])} | "
                f"{ms(m['latency_mean'])} / {ms(s['latency_mean'])} | "
                f"{m['throughput']:.1f} / {s['throughput']:.1f} | "
                f"{m['rejected']:.1%} / {s['rejected']:.1%} | {m['client_cores']:.2f} cores | "
                f"{c['repeat_gap']:.0%} | {' / '.join(f'{g:.0%}' for g in c['run_gaps'][name])} | "
                f"{max(abs(v) for v in c['stationary_error'][name].values()):.0%} | "
                f"{gap:.0%} {'✓' if gap <= TARGET else '✗'} |"
            )
    lines += [""]
    steady = r["steady"]
    shares = ", ".join(f"{x:.0%}" for x in steady)
    every = ", ".join(f"{c['share']:.0%}" for c in r["checks"])
    lines.append(f"Loads where neither run refused a request (judged): {shares} (of {every}).")
    lines.append("")
    for name, worst in r["worst"].items():
        lines.append(
            f"- {name}: within 15 % on every compared figure at {r['within'][name]} of {len(steady)} of "
            f"those loads (largest gap there {worst:.0%})."
        )
    lines += [
        "",
        f"The plans below use the {r['chosen']} profile (`bench/results/{r['name']}_profile.json`).",
        "",
        "## 3. Replicas and nodes for N requests/s (two replicas per node, as measured)",
        "",
        "| requests/s | p95 TTFT objective | replicas | nodes | simulated p95 TTFT | one replica fewer "
        "| simulated |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r["plans"]:
        below = p["below"]
        fewer = "—" if below is None else (
            f"p95 {ms(below['ttft_p95'])}, {below['rejected']:.1%} refused"
        )  # fmt: skip
        lines.append(
            f"| {p['rate']:,} | {ms(p['ttft_p95_slo'])} | {p['replicas']:,} | {p['nodes']:,} | "
            f"{ms(p['result']['ttft_p95'])} | {fewer} | {p['result']['requests']:,} requests |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
