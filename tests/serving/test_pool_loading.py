"""Loading a model holds no lock that other work waits on: while one model loads slowly, another
model answers, and /ready and /metrics respond."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
from pydantic import SecretStr

from lamina.core.workspace import Workspace
from lamina.serving.api import create_app, shutdown
from lamina.serving.pool import ModelPool
from tests.serving.conftest import ADMIN, Server


def test_a_slow_load_blocks_nothing_else(server: Server) -> None:
    ws = Workspace.open(server.workspace)
    pool = ModelPool(ws, engine_process=False, compile=False)
    pool.deploy("shakes@champion", "fp32")  # loaded before: this one must keep answering
    build, loading = pool._build, threading.Event()

    def slow_build(version, precision):  # injected delay: the one thing a test cannot make slow
        if precision == "int8":
            loading.set()
            time.sleep(4)
        return build(version, precision)

    pool._build = slow_build
    pool._precisions["shakes@v1"] = "int8"
    settings = ws.settings.model_copy(
        update={"server": ws.settings.server.model_copy(update={"admin_key": SecretStr(ADMIN)})}
    )
    app = create_app(ws, settings, pool)
    headers = {"Authorization": f"Bearer {ADMIN}"}

    async def scenario() -> tuple[float, list[tuple[str, int, float]]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
            body = {"model": "shakes@v1", "prompt": "ROMEO:", "max_tokens": 4}
            slow = asyncio.create_task(c.post("/v1/completions", json=body, headers=headers))
            while not loading.is_set():
                await asyncio.sleep(0.01)
            timings = []
            for path, kwargs in (
                ("/ready", {}),
                ("/metrics", {}),
                (
                    "/v1/completions",
                    {"json": {"model": "shakes@champion", "prompt": "ROMEO:", "max_tokens": 4}},
                ),
            ):
                started = time.perf_counter()
                method = c.post if "json" in kwargs else c.get
                r = await method(path, headers=headers, **kwargs)
                timings.append((path, r.status_code, time.perf_counter() - started))
            started = time.perf_counter()
            assert (await slow).status_code == 200
            return time.perf_counter() - started, timings

    try:
        slow_rest, timings = asyncio.run(scenario())
        for path, status, seconds in timings:
            assert status == 200 and seconds < 2.0, (path, status, seconds)
        assert slow_rest > 1.0  # the slow load was still going on while the others answered
    finally:
        shutdown(app)
        ws.close()
