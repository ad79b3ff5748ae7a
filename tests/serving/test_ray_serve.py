"""``lamina serve --ray-replicas``: Lamina as Ray Serve replicas behind one front (2 local replicas).

Checked with real clients against a real ``lamina serve`` process: the official openai client streams
through the front; a replica killed mid-traffic loses no request that had not started streaming;
sustained queueing adds a replica."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import psutil
import pytest

from tests.conftest import free_port, run_lamina

pytest.importorskip("ray.serve", reason="Ray Serve comes with the dev extra (lamina[ray])")
pytestmark = pytest.mark.slow
MAX_BATCH = 4  # requests a replica takes at once; the rest wait in the front


def replica_processes(server: subprocess.Popen[str]) -> list[psutil.Process]:
    """The live ``lamina-replica`` actor processes of this server's Ray (Ray names its actor processes
    after the class; the local Ray the server started runs under it, so other tests' do not count)."""
    found = []
    for proc in psutil.Process(server.pid).children(recursive=True):
        try:
            cmdline, status = " ".join(proc.cmdline()), proc.status()
        except psutil.Error:  # it ended meanwhile
            continue
        if "ServeReplica:lamina:lamina-replica" in cmdline and status != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def ray_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    from lamina.core.workspace import Workspace
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import Recipe
    from lamina.demo import DEMO_TEXT
    from lamina.training.lm import train_lm
    from lamina.training.loop import TrainConfig

    root = tmp_path_factory.mktemp("ray-serve") / "ws"
    ws = Workspace.init(root)[0]
    build_dataset(ws, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    cfg = TrainConfig(max_steps=20, batch_size=4, eval_every=20, warmup_steps=2)
    train_lm(ws, "text@v1", "tiny", train_cfg=cfg, overrides={"context_length": 256}, track=False)
    ws.close()
    made = run_lamina("-w", str(root), "keys", "create", "--role", "user", "--name", "t", "--json")
    key = json.loads(made.stdout)["key"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "RAY_"))}
    env.update({"LAMINA_SERVER__ENGINE_PROCESS": "false", "LAMINA_SERVER__COMPILE": "false",
                "LAMINA_SERVER__MAX_BATCH": str(MAX_BATCH)})  # fmt: skip
    log = (root.parent / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "lamina", "-w", str(root), "serve", "--port", str(port), "-m", "tiny@v1",
         "--ray-replicas", "2", "--max-replicas", "3", "--target-queue", "4", "--replica-cpus", "0.5"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, (root.parent / "serve.log").read_text()[-3000:]
        try:
            if (
                httpx.get(f"{url}/ready", timeout=2).status_code == 200
                and len(replica_processes(server)) == 2
            ):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(
            "the Ray replicas did not become ready: " + (root.parent / "serve.log").read_text()
        )
    yield url, key, server
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def test_the_openai_client_streams_through_the_front(
    ray_served: tuple[str, str, subprocess.Popen[str]],
) -> None:
    import openai

    url, key, _ = ray_served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    stream = client.chat.completions.create(
        model="tiny@v1", messages=[{"role": "user", "content": "Speak"}], max_tokens=12, stream=True, seed=1
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    with pytest.raises(openai.AuthenticationError):  # each replica still runs Lamina's gateway
        openai.OpenAI(base_url=f"{url}/v1", api_key="lam-wrong").models.list()


class Outcome(NamedTuple):
    result: str  # "ok", "cut" (no [DONE]), "broken: <error>" or "status <code>"
    replica: int | None  # the process id in x-lamina-replica: which replica answered
    attempt: int  # x-lamina-attempt: 2 or more when the front re-sent it after a replica died


async def _streams(url: str, key: str, n: int, kill: object) -> list[Outcome]:
    """``n`` streamed completions at once; ``kill()`` runs once both replicas stream a full batch (so
    the victim is busy, however slow the machine). Each request's outcome says which replica
    answered it, so the test judges by that, not by clocks (a busy client reads seconds behind)."""
    started: list[int] = []

    async def one(i: int, client: httpx.AsyncClient) -> Outcome:
        body = {"model": "tiny@v1", "prompt": "ROMEO:", "max_tokens": 150, "stream": True, "seed": i}
        replica, attempt = None, 0
        try:
            async with client.stream("POST", f"{url}/v1/completions", json=body,
                                     headers={"Authorization": f"Bearer {key}"}) as answer:  # fmt: skip
                where = answer.headers.get("x-lamina-replica", "")
                replica = int(where.rsplit(":", 1)[1]) if ":" in where else None
                attempt = int(answer.headers.get("x-lamina-attempt", "0"))
                if answer.status_code != 200:
                    return Outcome(f"status {answer.status_code}", replica, attempt)
                done = False
                async for line in answer.aiter_lines():
                    if line.startswith("data: ") and i not in started:
                        started.append(i)
                    done = done or line == "data: [DONE]"
                return Outcome("ok" if done else "cut", replica, attempt)
        except httpx.HTTPError as exc:
            return Outcome(f"broken: {type(exc).__name__}", replica, attempt)

    async with httpx.AsyncClient(timeout=180) as client:
        tasks = [asyncio.create_task(one(i, client)) for i in range(n)]
        deadline = time.monotonic() + 120
        while len(started) < 2 * MAX_BATCH and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(started) >= 2 * MAX_BATCH, f"only {len(started)} streams started"
        kill()  # type: ignore[operator]
        return list(await asyncio.gather(*tasks))


def test_a_replica_killed_mid_traffic_loses_no_request_that_had_not_started_streaming(
    ray_served: tuple[str, str, subprocess.Popen[str]],
) -> None:
    url, key, server = ray_served
    victim = replica_processes(server)[0]  # found before the traffic: the kill itself takes microseconds

    def kill() -> None:
        victim.send_signal(signal.SIGKILL)

    # 12 batches: most requests are still waiting in the front when the victim dies
    outcomes = asyncio.run(_streams(url, key, 12 * MAX_BATCH, kill))
    # Every request was answered with a stream, each by a replica that says who it is: one the dead
    # replica had not started was sent to the other (Ray Serve's proxy alone answers those with a 500)
    assert all(not o.result.startswith("status") and o.replica for o in outcomes), outcomes
    assert {o.replica for o in outcomes} >= {victim.pid}, outcomes  # the victim served until it died
    # Only streams the dead replica had started can break, at most one batch of them; every request
    # another replica answered (first, or re-sent there) ran to [DONE]
    broken = [o for o in outcomes if o.result != "ok"]
    assert all(o.replica == victim.pid for o in broken), broken
    assert len(broken) <= MAX_BATCH, broken
    assert all(o.result == "ok" for o in outcomes if o.replica != victim.pid), outcomes
    # the other replica answered the rest (how many the victim finished first depends on how late a
    # busy client reads its streams: 24 of 48 once, under a CPU burner; so no count is asserted)
    assert any(o.replica != victim.pid for o in outcomes), outcomes
    assert victim.pid not in {p.pid for p in replica_processes(server)}  # it did die mid-traffic
    # Ray Serve replaces the dead replica
    deadline = time.monotonic() + 120
    while len(replica_processes(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(replica_processes(server)) >= 2


def test_requests_that_queue_add_a_replica(ray_served: tuple[str, str, subprocess.Popen[str]]) -> None:
    url, key, server = ray_served
    while len(replica_processes(server)) < 2:  # after the previous test's replacement
        time.sleep(0.5)
    counts: list[int] = []

    def watch() -> None:
        counts.append(len(replica_processes(server)))

    async def load() -> None:
        stop = time.monotonic() + 150  # a busy machine (CI runs another test beside) starts it slowly

        async def worker(i: int, client: httpx.AsyncClient) -> None:
            body = {"model": "tiny@v1", "prompt": "ROMEO:", "max_tokens": 200, "seed": i}
            while time.monotonic() < stop and max(counts or [0]) < 3:
                await client.post(f"{url}/v1/completions", json=body,
                                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip

        async def watcher() -> None:
            while time.monotonic() < stop and max(counts or [0]) < 3:
                watch()
                await asyncio.sleep(0.5)

        async with httpx.AsyncClient(timeout=180) as client:
            # 6 × MAX_BATCH at once: 16 waiting beyond 2 replicas' 8 slots, target 4 per replica
            await asyncio.gather(watcher(), *(worker(i, client) for i in range(6 * MAX_BATCH)))

    asyncio.run(load())
    assert max(counts) == 3, counts
