"""The API's shared dependencies, as ``Annotated`` aliases: what a route needs, by name.

Everything lives on ``app.state`` (built once by ``api.create_app``, in its lifespan order), so
routes never import globals and tests can build several apps side by side.

The getters are ``async`` although they never wait: FastAPI runs a plain ``def`` dependency in its
thread pool, a thread hop per request for an attribute read, which in a server busy with streams
waits its turn for the GIL. An ``async`` one runs in the event loop at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from lamina.core.settings import ServerSettings
from lamina.core.workspace import Workspace
from lamina.gateway.metrics import Metrics
from lamina.serving.media_service import MediaService
from lamina.serving.pool import ModelPool
from lamina.serving.text_service import TextService


async def _pool(request: Request) -> ModelPool:
    return request.app.state.pool


async def _workspace(request: Request) -> Workspace:
    return request.app.state.workspace


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def _server(request: Request) -> ServerSettings:
    return request.app.state.server


async def _text(request: Request) -> TextService:
    return request.app.state.text


async def _media(request: Request) -> MediaService:
    return request.app.state.media


async def _principal(request: Request) -> dict[str, Any] | None:
    """The caller's key as the gateway found it (id, role, limits, name); None without the gateway."""
    return getattr(request.state, "key", None)


PoolDep = Annotated[ModelPool, Depends(_pool)]
WorkspaceDep = Annotated[Workspace, Depends(_workspace)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ServerDep = Annotated[ServerSettings, Depends(_server)]
TextDep = Annotated[TextService, Depends(_text)]
MediaDep = Annotated[MediaService, Depends(_media)]
PrincipalDep = Annotated[dict[str, Any] | None, Depends(_principal)]


async def audit_written(request: Request) -> None:
    """Wait until the audit writer has committed every request answered so far (it batches): a route
    that reads the audit log (feedback, review, the console's monitoring and audit pages) sees them."""
    import asyncio

    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        await asyncio.to_thread(audit.flush)
