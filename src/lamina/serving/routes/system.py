"""Health, readiness, the model list and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from lamina.core.errors import LaminaError
from lamina.gateway.permissions import ANY_KEY, ANYONE, OPERATORS
from lamina.serving.deps import MetricsDep, PoolDep, WorkspaceDep
from lamina.serving.protocol import KEYED, ModelList, answers, errors

router = APIRouter()


class NotReady(LaminaError):
    """The catalog cannot be reached: do not send traffic here yet (HTTP 503)."""

    http_status = 503
    code = "not_ready"


@router.get("/health", openapi_extra=ANYONE, responses=errors(413))
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", openapi_extra=ANYONE, responses=errors(413, 503))
async def ready(ws: WorkspaceDep, pool: PoolDep) -> JSONResponse:
    """Whether the catalog answers, and each loaded engine (model, precision, runner, process).

    Reads no lock a loading model holds: a model that loads or compiles slowly never delays it.
    """
    try:
        await asyncio.to_thread(ws.catalog.counts)
    except LaminaError as exc:
        raise NotReady(f"not ready: {exc.message}", hint=exc.hint) from None
    engines = [
        {"model": e.version.ref, "version": e.version.id, "precision": e.precision, **e.engine.describe()}
        for e in pool.engines()
    ]
    return JSONResponse({"status": "ready", "loaded": [e["model"] for e in engines], "engines": engines})


@router.get("/v1/models", openapi_extra=ANY_KEY, responses=answers(ModelList, *KEYED))
async def models(pool: PoolDep) -> dict:
    rows = await asyncio.to_thread(pool.listing)
    return ModelList(
        data=[{"id": r["id"], "created": r["created"], "family": r["family"]} for r in rows]
    ).model_dump()


@router.get(
    "/metrics", openapi_extra=OPERATORS, response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, **errors(*KEYED)},
)  # fmt: skip
async def prometheus(metrics: MetricsDep, pool: PoolDep) -> PlainTextResponse:
    metrics.observe_engines(pool)
    return PlainTextResponse(metrics.render(), media_type=metrics.content_type)
