"""``lamina serve --ray-replicas N``: the server as Ray Serve replicas behind one front deployment.

Two Ray Serve deployments:

- ``lamina-replica`` (N, autoscaled): a whole Lamina server (gateway checks, engine, rails) built
  from this workspace inside a Ray Serve replica. It takes at most ``server.max_batch`` requests at
  once (``max_ongoing_requests``): what its engine decodes together, so it holds no queue of its own.
- ``lamina-front`` (one): the address clients use. It hands each HTTP request to a replica through
  a Ray Serve handle and streams the answer back. Requests beyond the replicas' capacity wait in its
  handle's router.

Why it holds up:

- **Queue-depth autoscaling**: Ray Serve scales the replicas on ongoing requests per replica (running
  plus waiting for it), between ``--ray-replicas`` and ``--max-replicas``, aiming at ``--target-queue``.
- **A dead replica loses no request that had not started streaming**: the front sends nothing to the
  client until the replica's first message (the status line) arrives. If the replica dies before
  that, the front sends the request to another replica (up to ``RETRIES`` times). Streams a dead
  replica had started end early; the client sees the break. Ray Serve's own HTTP proxy answers those
  not-yet-started requests with a 500 instead (measured: 4 of 24 when one of 2 replicas was killed).
- **Each answer says where it ran**: ``x-lamina-replica`` (the replica's host and process id) and
  ``x-lamina-attempt`` (1, or more when a replica died before answering), for logs and for tests
  that must tell which requests a dead replica held without trusting clocks.

Each request crosses one more hop (the front), and each streamed message is a Ray object. The
workspace must be one every replica reaches (one machine, or the cluster profile). This module is in
the CLI layer because each replica registers the console's and the monitoring layer's routes, as
``lamina serve`` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from lamina.core.errors import ConfigError

log = logging.getLogger(__name__)
RETRIES = 3
NO_REPLICA = b'{"error": {"message": "no replica answered; retry", "code": "unavailable"}}'
NO_REPLICA_HEADERS = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
# ASGI scope keys that cross to a replica (the rest hold live objects of the front's server)
SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "root_path",
              "query_string", "headers", "server", "client")  # fmt: skip


class LaminaReplica:
    """One replica: a Lamina app in this process, driven one HTTP request at a time over ASGI."""

    def __init__(self, root: str, preload: list[str], precision: str, backend: str) -> None:
        import torch

        import lamina.console  # noqa: F401 (registers the console at / and /console/)
        import lamina.monitoring  # noqa: F401 (registers /v1/feedback and /v1/review)
        from lamina.core.machine import defaults
        from lamina.core.workspace import Workspace
        from lamina.serving.api import create_app
        from lamina.serving.pool import ModelPool
        from lamina.serving.quantize import parse_deployment

        ws = Workspace.open(root)
        server = ws.settings.server
        torch.set_num_threads(server.threads or defaults().serve_threads)
        pool = ModelPool.from_settings(ws, server, precision, backend)
        self.lamina_app = create_app(ws, ws.settings, pool)
        for spec in preload:
            pool.deploy(*parse_deployment(spec))

    async def handle(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[list[dict[str, Any]]]:
        """Run one request through the app; yield its ASGI messages (status line, then body chunks),
        those ready together in one list: each yield is a Ray object, and under load a stream's
        tokens pile up faster than one object per token crosses."""
        out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        sent_body = False
        finished = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # the client stays connected until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await out.put(message)

        async def run() -> None:
            try:
                await self.lamina_app(dict(scope), receive, send)
            finally:
                finished.set()
                await out.put(None)

        task = asyncio.create_task(run())
        here = f"{socket.gethostname()}:{os.getpid()}".encode()
        try:
            ended = False
            while not ended:
                ready = [await out.get()]
                while not out.empty():
                    ready.append(out.get_nowait())
                ended = ready[-1] is None
                messages = [m for m in ready if m is not None]
                for message in messages:
                    if message["type"] == "http.response.start":
                        message["headers"] = [*message.get("headers", []), (b"x-lamina-replica", here)]
                if messages:
                    yield messages
        finally:
            finished.set()
            if not task.done():
                task.cancel()

    def __del__(self) -> None:
        if getattr(self, "lamina_app", None) is not None:
            from lamina.serving.api import shutdown

            shutdown(self.lamina_app)


def replica_died(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError)


class LaminaFront:
    """The front: every HTTP request to a replica, retried elsewhere if its replica dies first."""

    def __init__(self, replicas: Any) -> None:
        self.replicas = replicas.options(stream=True)

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        wire = {k: scope[k] for k in SCOPE_KEYS if k in scope}
        for attempt in range(1, RETRIES + 1):
            stream = self.replicas.handle.remote(wire, body)
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                if replica_died(exc) and attempt < RETRIES:
                    log.warning("replica died before answering; retrying", extra={"attempt": attempt})
                    continue
                await send(
                    {"type": "http.response.start", "status": 503, "headers": [(b"retry-after", b"1")]}
                )
                await send(
                    {"type": "http.response.body", "body": b'{"error": {"message": "no replica answered"}}'}
                )
                return
            tried = (b"x-lamina-attempt", str(attempt).encode())
            for message in first or []:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), tried]
                await send(message)
            async for messages in stream:  # from here a replica's death ends the stream early
                for message in messages:
                    await send(message)
            return

    async def __serve_build_asgi_app__(self) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # a plain ASGI 3 callable
            await self.asgi(scope, receive, send)

        return app


def serve_on_ray(
    root: str,
    preload: list[str],
    precision: str,
    backend: str,
    *,
    host: str,
    port: int,
    replicas: int,
    max_replicas: int,
    target_queue: float,
    max_batch: int,
    replica_cpus: float = 1.0,
    address: str | None = None,
) -> None:
    """Deploy the front and the replicas; block until interrupted (then Serve shuts down)."""
    if max_replicas < replicas:
        raise ConfigError(
            f"--max-replicas ({max_replicas}) is below --ray-replicas ({replicas})",
            hint="give --max-replicas at least the starting count",
        )
    from lamina.core.cluster import ensure_ray

    ensure_ray(address)
    from ray import serve

    replica = serve.deployment(
        LaminaReplica,
        name="lamina-replica",
        max_ongoing_requests=max_batch,
        autoscaling_config={
            "min_replicas": replicas,
            "initial_replicas": replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_queue,
            "upscale_delay_s": 5,
            "downscale_delay_s": 120,
        },  # fmt: skip
        ray_actor_options={"num_cpus": replica_cpus},  # how Ray packs replicas onto nodes
        health_check_period_s=2,
    )
    front = serve.deployment(
        serve.ingress()(LaminaFront), name="lamina-front", num_replicas=1, max_ongoing_requests=10_000,
        ray_actor_options={"num_cpus": 0},
    )  # fmt: skip
    serve.start(http_options={"host": host, "port": port})
    try:
        app = front.bind(replica.bind(root, preload, precision, backend))
        serve.run(app, name="lamina", route_prefix="/", blocking=True)
    finally:
        serve.shutdown()
