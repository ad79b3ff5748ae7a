"""What serving through Ray Serve costs and gives: one ``lamina serve`` process against
``lamina serve --ray-replicas 2`` (the front plus two replicas) on the same machine and model.

Model and requests as in bench/capacity.py: the serving benchmark's 4.2M-parameter Llama, streamed
completions of 64 new tokens. Closed-loop load at 1, 8 and 32 streams; per setup: TTFT p50/p95, time
per output token and requests/s. The single process uses the machine's default serving threads; each
Ray replica one thread (``server.threads``), as replicas pack onto a node.

    .venv/bin/python bench/ray_serve.py [--train-steps 200] [--seconds 15]

Writes bench/results/ray_serve.json and ray_serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from capacity import NEW_TOKENS, closed_loop  # noqa: E402
from machine import machine_info, machine_line, save  # noqa: E402
from serve import ADMIN, setup, start_server  # noqa: E402

LEVELS = (1, 8, 32)


def start_ray(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "RAY_"))}
    env.update({"LAMINA_SERVER__ADMIN_KEY": ADMIN, "LAMINA_SERVER__THREADS": "1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina", "--workspace", str(root), "serve", "--port", str(port),
         "-m", "bench@champion", "--ray-replicas", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the Ray replicas did not become ready")


def measure(url: str, prompts: list[str], seconds: float) -> list[dict]:
    asyncio.run(closed_loop([url], prompts, 4, 3))  # warm-up: compiled steps, caches, both replicas
    rows = []
    for c in LEVELS:
        [runs] = asyncio.run(closed_loop([url], prompts, c, seconds))
        ttft = [r["ttft"] for r in runs]
        rows.append({
            "streams": c, "requests": len(runs),
            "ttft_p50_ms": 1000 * float(np.percentile(ttft, 50)),
            "ttft_p95_ms": 1000 * float(np.percentile(ttft, 95)),
            "tpot_ms": 1000 * statistics.median(r["tpot"] for r in runs),
            "requests_per_s": len(runs) / seconds,
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        ws, prompts, _ = setup(Path(tmp) / "ws", args.train_steps)
        ws.close()
        process, url = start_server(Path(tmp) / "ws")
        try:
            single = measure(url, prompts, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
        process, url = start_ray(Path(tmp) / "ws")
        try:
            on_ray = measure(url, prompts, args.seconds)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    report = {"new_tokens": NEW_TOKENS, "seconds": args.seconds, "single": single, "ray": on_ray}
    save("ray_serve", report, render(report, info))


def render(r: dict, info: dict) -> str:
    lines = [
        "# One process against two Ray Serve replicas behind the front (`bench/ray_serve.py`)",
        "",
        machine_line(info) + f" Streamed completions of {r['new_tokens']} new tokens, closed loop, "
        f"{r['seconds']:g} s per level.",
        "",
        "| streams | setup | TTFT p50 | TTFT p95 | time per token | requests/s |",
        "|---|---|---|---|---|---|",
    ]
    for one, two in zip(r["single"], r["ray"], strict=True):
        for name, row in (("one `lamina serve`", one), ("`--ray-replicas 2`", two)):
            lines.append(
                f"| {row['streams']} | {name} | {row['ttft_p50_ms']:.1f} ms | {row['ttft_p95_ms']:.1f} ms | "
                f"{row['tpot_ms']:.2f} ms | {row['requests_per_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
