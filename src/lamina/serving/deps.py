"""The API's shared dependencies, as ``Annotated`` aliases: what a route needs, by name.

Everything lives on ``app.state`` (built once by ``api.create_app``, in its lifespan order), so
routes never import globals and tests can build several apps side by side.
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


def _pool(request: Request) -> ModelPool:
    return request.app.state.pool


def _workspace(request: Request) -> Workspace:
    return request.app.state.workspace


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _server(request: Request) -> ServerSettings:
    return request.app.state.server


def _text(request: Request) -> TextService:
    return request.app.state.text


def _media(request: Request) -> MediaService:
    return request.app.state.media


def _principal(request: Request) -> dict[str, Any] | None:
    """The caller's key as the gateway found it (id, role, limits, name); None without the gateway."""
    return getattr(request.state, "key", None)


PoolDep = Annotated[ModelPool, Depends(_pool)]
WorkspaceDep = Annotated[Workspace, Depends(_workspace)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ServerDep = Annotated[ServerSettings, Depends(_server)]
TextDep = Annotated[TextService, Depends(_text)]
MediaDep = Annotated[MediaService, Depends(_media)]
PrincipalDep = Annotated[dict[str, Any] | None, Depends(_principal)]
