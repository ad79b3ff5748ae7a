"""The console's routes: sign-in, the pages, their plots. Thin: ``views`` reads, templates render;
every change a page makes is a call from ``static/console.js`` to the public API."""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lamina.console import views
from lamina.core.errors import NotFound
from lamina.core.extensions import API_ROUTERS
from lamina.gateway.permissions import ADMIN_ONLY, ANY_KEY, ANYONE, OPERATORS, REVIEWERS
from lamina.gateway.sessions import clear_cookie_header, cookie_token, set_cookie_header
from lamina.serving.deps import audit_written

router = APIRouter()
HTML: dict[str, Any] = {"response_class": HTMLResponse, "include_in_schema": False}
RunIds = Annotated[list[str], Query(default_factory=list, max_length=8)]

# (path, label): the pages in the navigation; a role sees those its permissions open
PAGES = [
    ("/console/", "Chat"), ("/console/images", "Images"), ("/console/datasets", "Datasets"),
    ("/console/runs", "Runs"), ("/console/models", "Registry"), ("/console/monitoring", "Monitoring"),
    ("/console/review", "Review"), ("/console/rails", "Rails"), ("/console/prompts", "Prompts"),
    ("/console/audit", "Audit"), ("/console/admin", "Admin"),
]  # fmt: skip
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


@cache
def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("lamina.console", "templates"), autoescape=select_autoescape())
    env.filters["fmt"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v
    return env


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    state = request.app.state
    key = getattr(request.state, "key", None) or {}
    role = key.get("role")
    session = getattr(request.state, "session", None)
    allowed = state.permissions.allowed if role else (lambda *_: False)
    nav = [(path, label) for path, label in PAGES if role and allowed(role, "GET", path)]
    page = _templates().get_template(template).render(
        request=request, path=request.url.path, role=role, key_name=key.get("name"), nav=nav,
        csrf=session.csrf if session else "", **context,
    )  # fmt: skip
    return HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"})


def _ws(request: Request) -> Any:
    return request.app.state.workspace


# -- sign-in -----------------------------------------------------------------------------------------
@router.get("/", openapi_extra=ANYONE, **HTML)
async def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=303)


@router.get("/console/login", openapi_extra=ANYONE, **HTML)
async def login_page(request: Request, next: str = Query("/console/", max_length=500)) -> HTMLResponse:
    return render(request, "login.html.j2", next=_safe_next(next), error=None)


@router.post("/console/session", openapi_extra=ANYONE, **HTML)
async def sign_in(request: Request) -> Response:
    """The sign-in form: an API key in, a session cookie out (the key itself is never stored)."""
    from lamina.gateway.keys import principal_for

    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    secret, target = (form.get("key") or [""])[0], _safe_next((form.get("next") or ["/console/"])[0])
    admin = request.app.state.settings.server.admin_key
    key = await asyncio.to_thread(
        principal_for, _ws(request), secret, admin.get_secret_value() if admin else None
    )
    if not secret.strip():
        return render(request, "login.html.j2", 400, next=target, error="Enter an API key to sign in.")
    if key is None:
        return render(
            request, "login.html.j2", 401, next=target, error="That key is not valid (or was revoked)."
        )
    sessions = request.app.state.sessions
    token, _ = sessions.open(key)
    secure = request.url.scheme == "https"
    return Response(status_code=303, headers={
        "location": target, "set-cookie": set_cookie_header(token, int(sessions.ttl_s), secure),
    })  # fmt: skip


@router.post("/console/session/end", openapi_extra=ANY_KEY, include_in_schema=False)
async def sign_out(request: Request) -> Response:
    request.app.state.sessions.close(cookie_token(request.headers.get("cookie", "")))
    return Response(status_code=204, headers={"set-cookie": clear_cookie_header()})


def _safe_next(target: str) -> str:
    """Only a path of this site (no open redirect to another)."""
    return (
        target
        if target.startswith("/") and not target.startswith("//") and "\\" not in target
        else "/console/"
    )


@router.get("/console/static/{name}", openapi_extra=ANYONE, include_in_schema=False)
async def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFound(f"no console file {name!r}")
    body = resources.files("lamina.console").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"cache-control": "max-age=300"})


# -- pages -------------------------------------------------------------------------------------------
@router.get("/console/", openapi_extra=ANY_KEY, **HTML)
async def chat_page(request: Request) -> HTMLResponse:
    context = await asyncio.to_thread(views.chat, _ws(request), request.app.state.pool)
    return render(request, "chat.html.j2", **context)


@router.get("/console/images", openapi_extra=ANY_KEY, **HTML)
async def images_page(request: Request) -> HTMLResponse:
    context = await asyncio.to_thread(views.images, _ws(request), request.app.state.pool)
    return render(request, "images.html.j2", **context)


@router.get("/console/datasets", openapi_extra=OPERATORS, **HTML)
async def datasets_page(request: Request) -> HTMLResponse:
    return render(request, "datasets.html.j2", **await asyncio.to_thread(views.datasets, _ws(request)))


@router.get("/console/datasets/{ref}", openapi_extra=OPERATORS, **HTML)
async def dataset_page(
    request: Request, ref: str, compare: str | None = Query(None, max_length=160)
) -> HTMLResponse:
    context = await asyncio.to_thread(views.dataset, _ws(request), ref, compare or None)
    return render(request, "dataset.html.j2", **context)


@router.get("/console/datasets/{ref}/report", openapi_extra=OPERATORS, **HTML)
async def dataset_report(request: Request, ref: str) -> HTMLResponse:
    """The version's own quality report (the HTML file in its artifact folder)."""
    from lamina.data.versions import resolve_version

    ws = _ws(request)
    version = await asyncio.to_thread(resolve_version, ws, ref)
    page = ws.artifact_path(version) / "report.html"
    if not page.is_file():
        raise NotFound(f"{ref} has no HTML report")
    return HTMLResponse(page.read_text(encoding="utf-8"))


@router.get("/console/runs", openapi_extra=OPERATORS, **HTML)
async def runs_page(request: Request) -> HTMLResponse:
    return render(request, "runs.html.j2", **await asyncio.to_thread(views.runs, _ws(request)))


@router.get("/console/runs/compare", openapi_extra=OPERATORS, **HTML)
async def compare_page(request: Request, run: RunIds) -> HTMLResponse:
    """Declared before ``/console/runs/{run_id}``, which would take "compare" for a run id."""
    if len(run) < 2:
        from lamina.core.errors import ConfigError

        raise ConfigError("pick at least two runs to compare", hint="tick them on /console/runs")
    context = await asyncio.to_thread(views.compare, _ws(request), run)
    return render(request, "compare.html.j2", ids=run, **context)


@router.get("/console/runs/compare.png", openapi_extra=OPERATORS, include_in_schema=False)
async def compare_plot(request: Request, run: RunIds) -> Response:
    png = await asyncio.to_thread(views.compare_png, _ws(request), run)
    return Response(png, media_type="image/png", headers={"cache-control": "no-store"})


@router.get("/console/runs/{run_id}", openapi_extra=OPERATORS, **HTML)
async def run_page(request: Request, run_id: str) -> HTMLResponse:
    return render(request, "run.html.j2", **await asyncio.to_thread(views.run, _ws(request), run_id))


@router.get("/console/runs/{run_id}/curve.png", openapi_extra=OPERATORS, include_in_schema=False)
async def run_curve(request: Request, run_id: str) -> Response:
    png = await asyncio.to_thread(views.curve, _ws(request), run_id)
    return Response(png, media_type="image/png", headers={"cache-control": "no-store"})


@router.get("/console/models", openapi_extra=OPERATORS, **HTML)
async def models_page(request: Request) -> HTMLResponse:
    return render(request, "models.html.j2", **await asyncio.to_thread(views.models, _ws(request)))


@router.get("/console/models/{ref}", openapi_extra=OPERATORS, **HTML)
async def model_page(request: Request, ref: str) -> HTMLResponse:
    return render(request, "model.html.j2", **await asyncio.to_thread(views.model, _ws(request), ref))


@router.get("/console/monitoring", openapi_extra=OPERATORS, **HTML)
async def monitoring_page(
    request: Request,
    hours: float = Query(24, gt=0, le=24 * 90),
    reference: str | None = Query(None, max_length=160, description="a dataset version: check drift from it"),
    window: int = Query(500, ge=20, le=5000),
    sample: int = Query(2000, ge=20, le=20000, description="reference texts to sample (seeded)"),
) -> HTMLResponse:
    from lamina.core.crypto import cipher_for

    cipher = cipher_for(request.app.state.settings)
    await audit_written(request)
    context = await asyncio.to_thread(
        views.monitoring, _ws(request), hours, reference or None, window, cipher, sample
    )
    return render(request, "monitoring.html.j2", **context)


@router.get("/console/monitoring/plot.png", openapi_extra=OPERATORS, include_in_schema=False)
async def monitoring_plot(request: Request, hours: float = Query(24, gt=0, le=24 * 90)) -> Response:
    png = await asyncio.to_thread(views.monitoring_png, _ws(request), hours)
    return Response(png, media_type="image/png", headers={"cache-control": "no-store"})


@router.get("/console/review", openapi_extra=REVIEWERS, **HTML)
async def review_page(request: Request, request_id: str | None = Query(None, max_length=64)) -> HTMLResponse:
    from lamina.core.crypto import cipher_for

    cipher = cipher_for(request.app.state.settings)
    await audit_written(request)
    context = await asyncio.to_thread(views.review, _ws(request), cipher, request_id or None)
    return render(request, "review.html.j2", **context)


@router.get("/console/rails", openapi_extra=OPERATORS, **HTML)
async def rails_page(request: Request) -> HTMLResponse:
    served = request.app.state.text.rails
    return render(request, "rails.html.j2", policy=served is not None)


@router.get("/console/prompts", openapi_extra=OPERATORS, **HTML)
async def prompts_page(request: Request) -> HTMLResponse:
    return render(request, "prompts.html.j2", **await asyncio.to_thread(views.prompts, _ws(request)))


@router.get("/console/audit", openapi_extra=OPERATORS, **HTML)
async def audit_page(
    request: Request,
    request_id: str | None = Query(None, max_length=64),
    route: str | None = Query(None, max_length=255),
    key_id: str | None = Query(None, max_length=40),
    status: str | None = Query(None, max_length=3),
) -> HTMLResponse:
    from lamina.gateway.audit import AuditQuery

    code = int(status) if status and status.isdigit() else None
    query = AuditQuery(request_id=request_id or None, route=route or None, key_id=key_id or None, status=code)
    await audit_written(request)
    return render(request, "audit.html.j2", **await asyncio.to_thread(views.audit, _ws(request), query))


@router.get("/console/admin", openapi_extra=ADMIN_ONLY, **HTML)
async def admin_page(request: Request) -> HTMLResponse:
    return render(request, "admin.html.j2", **await asyncio.to_thread(views.admin, _ws(request)))


API_ROUTERS.add("console", router)
