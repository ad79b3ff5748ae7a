"""Soak under load: does the server shed load instead of queueing it without end?

A real ``lamina serve`` process (the serving bench's 4.2M-parameter Llama, the default settings)
gets closed-loop streaming clients for a fixed time: 64 streams (about twice the batch), then 400
(far past it). Each client streams a completion (64 new tokens), and on a 429 waits the
``Retry-After`` it was given, as the openai client does. Reported per run: status codes, TTFT
p50/p99 of admitted requests, goodput (tokens/s of completed answers), and the server's RSS (its
engine processes included) first, last and max.

Compared in the same run against the same server with the queue's wait budget switched off
(``server.max_queue_wait`` huge: every request waits its turn, as before the budget existed).

    .venv/bin/python bench/soak.py [--seconds 60] [--quick]

Writes bench/results/soak.json and soak.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import uvloop  # the load generator's event loop: cheaper than asyncio's on the shared cores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, save  # noqa: E402
from serve import ADMIN, pct, setup, start_server  # noqa: E402

NEW_TOKENS = 64
STREAMS = (64, 128, 400)  # about 2x, 4x and 12x the batch (32)
CONFIGS = [
    ("default (max_queue_wait 0.5 s, refused at the door when it could not start in time)", {}),
    ("no wait budget (before)", {"LAMINA_SERVER__MAX_QUEUE_WAIT": "1000000"}),
]


def retry_after(headers: httpx.Headers) -> float:
    """The wait a 429 asks for, read as the openai client reads it: ``retry-after-ms`` first."""
    if "retry-after-ms" in headers:
        return float(headers["retry-after-ms"]) / 1000
    return float(headers.get("retry-after", "1"))


async def client_loop(client: httpx.AsyncClient, url: str, prompt: str, until: float, out: list) -> None:
    """One closed-loop client with its own connection, as separate users have: one httpx pool shared
    by all the streams cost the generator twice the CPU (60-77 % of a core at 128 streams, against
    ~30 %), on the cores the server needs. It reads the stream cheaply (the first text chunk and the
    usage chunk are parsed, the other lines only looked at) for the same reason."""
    body = {"model": "bench@champion", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0.8,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    async with client:
        while time.perf_counter() < until:
            await one_request(client, url, body, until, out)


async def one_request(client: httpx.AsyncClient, url: str, body: dict, until: float, out: list) -> None:
    started, first, tokens = time.perf_counter(), None, 0
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                out.append({"status": response.status_code, "end": time.perf_counter()})
                # as told, but not past the end of the run (a sleeping client is not load)
                await asyncio.sleep(min(retry_after(response.headers), max(0.0, until - time.perf_counter())))
                return
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: {"):
                    if json.loads(line[6:]).get("choices"):
                        first = time.perf_counter()
                elif line.startswith('data: {"id"') and '"usage": {' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        out.append({"status": type(exc).__name__, "end": time.perf_counter()})
        return
    end = time.perf_counter()
    out.append({"status": 200, "ttft": (first or end) - started, "tokens": tokens, "end": end})


def warm_up(url: str) -> None:
    """A few requests before the clock starts (first-use work: catalog lookup, compiled shapes)."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    body = {"model": "bench@champion", "prompt": "Warm", "max_tokens": NEW_TOKENS, "temperature": 0.8}
    with httpx.Client(timeout=120, headers=headers) as client:
        for _ in range(3):
            client.post(f"{url}/v1/completions", json=body).raise_for_status()


def rss_mb(process: psutil.Process) -> float:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


async def soak(url: str, pid: int, prompts: list[str], streams: int, seconds: float) -> dict:
    server = psutil.Process(pid)
    results: list[dict] = []
    memory: list[float] = [rss_mb(server)]
    # every client made before the clock starts, with one TLS context: httpx loads the CA bundle for
    # each new client (~20 ms, blocking the loop), which stalled the generator for 8 s at 400
    tls = ssl.create_default_context()
    clients = [
        httpx.AsyncClient(timeout=120, verify=tls, headers={"Authorization": f"Bearer {ADMIN}"})
        for _ in range(streams)
    ]
    started = time.perf_counter()
    until = started + seconds
    tasks = [
        asyncio.create_task(client_loop(client, url, prompts[i % len(prompts)], until, results))
        for i, client in enumerate(clients)
    ]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(1.0)
        memory.append(rss_mb(server))
    wall = time.perf_counter() - started
    done = [r for r in results if r["status"] == 200]
    ttfts = [r["ttft"] for r in done] or [float("nan")]
    return {
        "streams": streams, "seconds": round(wall, 1),
        "statuses": dict(Counter(str(r["status"]) for r in results)),
        "ttft_p50_ms": round(1000 * pct(ttfts, 50), 1), "ttft_p99_ms": round(1000 * pct(ttfts, 99), 1),
        "goodput_tokens_per_s": round(sum(r["tokens"] for r in done) / wall, 1),
        "rss_mb": {"first": round(memory[0]), "last": round(memory[-1]), "max": round(max(memory))},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="10 s runs (a smoke run)")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-soak-"))
    ws, prompts, _ = setup(work / "ws", 30)
    runs = []
    for name, settings in CONFIGS:
        process, url = start_server(ws.root, "bench@champion", settings)
        try:
            warm_up(url)
            for streams in STREAMS:
                runs.append({"config": name, **uvloop.run(soak(url, process.pid, prompts, streams, seconds))})
                print(json.dumps(runs[-1]), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    report = {"machine": machine_info(), "new_tokens": NEW_TOKENS, "runs": runs}
    save("soak", report, render(report))
    ws.close()
    shutil.rmtree(work, ignore_errors=True)


def render(r: dict) -> str:
    lines = [
        "# Soak: 64, 128 and 400 streaming clients, closed loop",
        "",
        machine_line(r["machine"]),
        f"Each client streams {r['new_tokens']} new tokens, and waits Retry-After on a 429. "
        "Goodput: tokens/s of completed answers. TTFT: admitted requests only.",
        "",
        "| server | streams | s | statuses | TTFT p50 / p99 (ms) | goodput (tok/s) | vs 64 streams "
        "| RSS first / last / max (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peaks = {run["config"]: run["goodput_tokens_per_s"] for run in r["runs"] if run["streams"] == 64}
    for run in r["runs"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run["statuses"].items()))
        share = run["goodput_tokens_per_s"] / max(peaks.get(run["config"], 0), 1e-9)
        m = run["rss_mb"]
        lines.append(
            f"| {run['config']} | {run['streams']} | {run['seconds']} | {statuses} "
            f"| {run['ttft_p50_ms']} / {run['ttft_p99_ms']} | {run['goodput_tokens_per_s']} | {share:.0%} "
            f"| {m['first']} / {m['last']} / {m['max']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
