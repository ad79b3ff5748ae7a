"""The OpenAI-compatible HTTP API (FastAPI): the app, its error handling, and the gateway around it.

Clients written for OpenAI work unchanged: the same paths, bodies, SSE stream format (``data:``
chunks, the role in the first delta, ``finish_reason`` on the last, then ``data: [DONE]``) and
error body (``{"error": {"message", "type", "param", "code"}}``). ``model`` is a hub reference;
see ``pool.py`` for how aliases move without a restart. Every route sits behind the gateway
(``lamina.gateway.middleware``): keys, roles, limits, audit, metrics.

Layout (vLLM's ``entrypoints/openai``, the FastAPI full-stack template): ``protocol`` holds the
request, response and error schemas; ``text_service`` and ``media_service`` the logic;
``routes/`` the thin routers; ``deps`` the shared dependencies. Errors are always raised, as
``LaminaError``s carrying their HTTP status, and rendered here by one handler.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lamina.core.errors import LaminaError
from lamina.core.settings import Settings
from lamina.core.workspace import Workspace
from lamina.gateway.limits import retry_headers
from lamina.gateway.metrics import Metrics
from lamina.gateway.permissions import PermissionTable
from lamina.serving.admission import MAX_RETRY_AFTER_S
from lamina.serving.media_service import MediaService
from lamina.serving.pool import ModelPool
from lamina.serving.protocol import error_body
from lamina.serving.routes import admin, media, system, text, threads
from lamina.serving.text_service import TextService

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, **headers: str
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers or None)


def create_app(
    ws: Workspace, settings: Settings | None = None, pool: ModelPool | None = None, *, gateway: bool = True
) -> FastAPI:
    """The app; ``gateway=False`` exists only for bench/serve.py to measure what the gateway costs."""
    from lamina.gateway.middleware import Gateway

    settings = settings or ws.settings
    server = settings.server
    pool = pool or ModelPool.from_settings(ws, server)
    from lamina.core.energy import EnergyMeter

    metrics = Metrics(EnergyMeter.from_settings(settings))
    rails = build_rails(ws, settings, metrics)
    if settings.security.redact_log_pii:
        redact_logs()
    app = FastAPI(title="Lamina", version="1", summary="OpenAI-compatible API over the Lamina hub")
    app.state.pool, app.state.metrics, app.state.workspace, app.state.server = pool, metrics, ws, server
    app.state.settings = settings
    from lamina.gateway.sessions import SessionStore

    app.state.sessions = SessionStore(ttl_s=server.console_session_hours * 3600)
    app.state.text, app.state.media = TextService(pool, metrics, server, rails), MediaService(pool)
    from lamina.core.extensions import API_ROUTERS

    # the layers above serving register theirs (lamina.monitoring: feedback and review)
    extra = [API_ROUTERS.get(name) for name in API_ROUTERS.names()]
    for router in (system.router, admin.router, text.router, media.router, threads.router, *extra):
        app.include_router(router)
    install_error_handlers(app)
    if gateway:
        from lamina.gateway.audit import AuditWriter

        app.state.audit = AuditWriter(
            ws,
            protect=audit_protection(settings),
            retention_days=settings.security.audit_retention_days,
            review_below=settings.monitoring.review_below_confidence,
        )
        docs = docs_paths(app)
        # every route's declared permission, read once; a route that declares none stops the build
        permissions = PermissionTable.from_routes(app.routes, docs_paths=docs, public_docs=server.public_docs)
        app.state.permissions = permissions
        app.add_middleware(
            Gateway, settings=settings, workspace=ws, metrics=metrics, audit=app.state.audit,
            permissions=permissions, docs_paths=docs, sessions=app.state.sessions,
        )  # fmt: skip
    return app


def build_rails(ws: Workspace, settings: Settings, metrics: Metrics) -> Any:
    """The guardrails policy of ``lamina.yaml``, every rail built now: a bad policy stops start-up."""
    from lamina.guardrails.policy import Policies

    return Policies.build(settings.rails, ws, observe=metrics.observe_rail)


def redact_logs() -> None:
    """PII is redacted from what the server logs (once per process)."""
    from lamina.guardrails.pii import RedactingFilter

    for handler in logging.getLogger("lamina").handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def audit_protection(settings: Settings) -> Any:
    """How audit text is stored: PII-redacted and encrypted. Storing text needs a key (refused at
    start-up without one, so text is never written in the clear by accident)."""
    from lamina.core.crypto import cipher_for
    from lamina.core.errors import ConfigError
    from lamina.gateway.audit import stored_text

    if not settings.server.audit_text:
        return None
    cipher = cipher_for(settings)
    if cipher is None:
        raise ConfigError(
            "server.audit_text stores request and response text, and no encryption key is set",
            hint="set LAMINA_SECURITY__ENCRYPTION_KEYS='[\"KEY\"]' (make a key: lamina audit new-key)",
        )
    redactor = None
    if settings.security.redact_audit_pii:
        from lamina.guardrails.pii import redact_pii

        redactor = redact_pii
    return stored_text(redactor, cipher)


def install_error_handlers(app: FastAPI) -> None:
    """One rendering of every error as OpenAI's error body (a test pins the shape)."""

    @app.exception_handler(LaminaError)
    async def _lamina_error(request: Request, exc: LaminaError) -> JSONResponse:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        headers = retry_headers(getattr(exc, "retry_after", 1.0)) if status == 429 else {}
        return error_response(status, message, exc.code, getattr(exc, "param", None), **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid"))
        )
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON (or not UTF-8)"
        if first.get("type") == "extra_forbidden":
            message = f"{where}: not a field of this request (OpenAI's schema has no such field)"
        return error_response(400, message, "invalid_request", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # Starlette could not parse the body (bad UTF-8, bad JSON)
            return error_response(400, f"the request body could not be read: {exc.detail}", "invalid_request")
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, str(exc.detail), codes.get(exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__}", "internal_error")


def docs_paths(app: FastAPI) -> set[str]:
    """The paths FastAPI serves its docs and schema at (they need a key unless public_docs)."""
    paths = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    return {p for p in paths if p}


def shutdown(app: FastAPI) -> None:
    """Finish what is in flight on the way out: audit rows are flushed, engines stopped."""
    audit = getattr(app.state, "audit", None)
    if audit is not None:
        audit.close()
    app.state.pool.close()


# idle connections stay open longer than the longest Retry-After: a client told to come back in N s
# finds its connection still there. At uvicorn's 5 s default, clients that kept an appointment
# reused a connection the server had just closed: ReadError (bench/soak.py, 400 streams)
KEEP_ALIVE_S = int(MAX_RETRY_AFTER_S) + 5


def run(app: FastAPI, host: str, port: int, grpc_port: int | None = None) -> None:
    """Serve ``app`` until interrupted (``lamina serve`` and the quickstart); with ``grpc_port``, the
    gRPC generation service too, in the same event loop (``grpc_service.py``)."""
    import asyncio

    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
    )  # fmt: skip
    server = uvicorn.Server(config)
    if grpc_port is None:
        server.run()
        return

    async def both() -> None:
        from lamina.serving import grpc_service

        loopback = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        started, service = await grpc_service.start(host, grpc_port, f"http://{loopback}:{port}")
        try:
            await server.serve()
        finally:
            await started.stop(grace=5)
            await service.close()

    asyncio.run(both())
