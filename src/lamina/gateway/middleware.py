"""The gateway: one ASGI middleware in front of every route.

In order, for each HTTP request: a request id; the body read up to ``server.max_body_bytes`` (413
beyond it, before anything else runs); the route's permission (public, or a key whose role the
matrix allows: 401 without a valid key, 403 without the permission); the key's limits (429 with
``Retry-After``); then the app. The key comes from ``Authorization: Bearer`` or, for the console,
from a session cookie (``sessions.py``: a change made with the cookie needs the CSRF header too);
a browser opening a page without either is sent to the sign-in page. When the response has been
sent in full (streams included) it writes the audit row and the metrics, and charges the tokens to
the key's per-minute budget.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from lamina.core.logging import new_id, request_id_var
from lamina.core.settings import Settings
from lamina.core.workspace import Workspace
from lamina.gateway.audit import AuditWriter
from lamina.gateway.keys import is_live, principal_for
from lamina.gateway.limits import KeyLimiter, retry_headers
from lamina.gateway.metrics import Metrics
from lamina.gateway.permissions import PermissionTable
from lamina.gateway.sessions import CSRF_HEADER, SAFE_METHODS, SessionStore, cookie_token, csrf_ok


class Gateway:
    def __init__(
        self, app: Any, *, settings: Settings, workspace: Workspace, metrics: Metrics, audit: AuditWriter,
        permissions: PermissionTable, docs_paths: set[str], sessions: SessionStore | None = None,
    ) -> None:  # fmt: skip
        self.app, self.settings, self.ws, self.metrics, self.audit = app, settings, workspace, metrics, audit
        self.limiter = KeyLimiter()
        self.permissions, self.docs_paths = permissions, docs_paths
        self.sessions = sessions or SessionStore()
        admin = settings.server.admin_key
        self.admin_secret = admin.get_secret_value() if admin is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id") or new_id("req")
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        method, path = scope["method"], scope["path"]
        route = self.permissions.match(method, path)
        label = "docs" if path in self.docs_paths else (route or "unmatched")
        status = {"code": 500}
        key: dict[str, Any] | None = None
        body: bytes | None = b""
        acquired = False  # whether the limiter counted this request (and must release it)

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            body = await self._read_body(receive, headers)
            if body is None:
                await self._reject(
                    send_wrapped,
                    413,
                    f"the request body is larger than {self.settings.server.max_body_bytes} bytes",
                    "request_too_large",
                )
                return
            # fail closed: every route but a public one needs a key, and so does a path that
            # matches no route (a valid key then gets the app's 404/405; without one: 401)
            if route is None or not self.permissions.is_public(method, route):
                key, session = await self._authenticate(headers)
                if key is None:
                    if _navigation(method, headers):  # a browser opening a page: the sign-in page
                        await _redirect(send_wrapped, "/console/login?next=" + quote(path))
                        return
                    await self._reject(
                        send_wrapped,
                        401,
                        "a valid API key is required (Authorization: Bearer lam-…)",
                        "invalid_api_key",
                    )
                    return
                if (
                    session is not None
                    and method not in SAFE_METHODS
                    and not csrf_ok(session, headers.get(CSRF_HEADER))
                ):
                    await self._reject(
                        send_wrapped, 403,
                        "a console request that changes something needs the page's X-CSRF-Token header",
                        "csrf_failed",
                    )  # fmt: skip
                    return
                if route is not None and not self.permissions.allowed(key["role"], method, route):
                    why = f"the {key['role']} role may not call {method} {route}"
                    if _navigation(method, headers):
                        await _html(send_wrapped, 403, "Not allowed", why)
                    else:
                        await self._reject(send_wrapped, 403, why, "permission_denied")
                    return
                state["key"] = key
                if session is not None:
                    state["session"] = session  # the console's pages put its CSRF token in the page
                if key["id"] is not None:
                    refusal = self.limiter.acquire(key["id"], key["limits"])
                    if refusal is not None:
                        await self._reject(
                            send_wrapped, 429, refusal.reason, "rate_limit_exceeded",
                            [(k.encode(), v.encode()) for k, v in retry_headers(refusal.retry_after).items()],
                        )  # fmt: skip
                        return
                    acquired = True
            await self.app(scope, _replay(body, receive), send_wrapped)
        finally:
            request_id_var.reset(token)
            seconds = time.perf_counter() - started
            audit_text = self.settings.server.audit_text
            prompt_tokens, completion_tokens = state.get("usage", (None, None))
            if acquired and key is not None:  # only a request the limiter admitted gives its slot back
                self.limiter.release(key["id"], (prompt_tokens or 0) + (completion_tokens or 0))
            self.metrics.observe_request(label, status["code"], seconds)
            if label != "docs":
                self.audit.record(
                    request_id=rid, key_id=key.get("id") if key else None, method=method,
                    route=route or path[:255],
                    model_version_id=state.get("model_version"), status_code=status["code"],
                    tokens_in=prompt_tokens, tokens_out=completion_tokens, latency_ms=seconds * 1000,
                    request_text=_clip(body.decode("utf-8", "replace")) if body and audit_text else None,
                    response_text=_clip(state.get("response_text")) if audit_text else None,
                    detail=_detail(key, state),
                )  # fmt: skip

    async def _read_body(self, receive: Any, headers: dict[str, str]) -> bytes | None:
        limit = self.settings.server.max_body_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    async def _authenticate(self, headers: dict[str, str]) -> tuple[dict[str, Any] | None, Any]:
        """(the caller, the console session it came with or None). An ``Authorization`` header is an
        API call and decides alone; without one, the console's session cookie is asked."""
        header = headers.get("authorization")
        if header is not None:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return None, None
            return await asyncio.to_thread(principal_for, self.ws, secret, self.admin_secret), None
        token = cookie_token(headers.get("cookie", ""))
        session = self.sessions.get(token)
        if session is not None and session.needs_check():
            if not await asyncio.to_thread(is_live, self.ws, session.key["id"]):
                self.sessions.close(token)  # the key was revoked (perhaps by another process)
                return None, None
            session.checked_at = time.time()
        return (dict(session.key), session) if session is not None else (None, None)

    @staticmethod
    async def _reject(
        send: Any, status: int, message: str, code: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        from lamina.serving.protocol import error_body

        payload = json.dumps(error_body(status, message, code)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": payload})


def _navigation(method: str, headers: dict[str, str]) -> bool:
    """A browser opening a page (not a script's fetch, which never asks for HTML first)."""
    return method == "GET" and headers.get("accept", "").startswith("text/html")


async def _redirect(send: Any, location: str) -> None:
    headers = [(b"location", location.encode("latin-1", "replace")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _html(send: Any, status: int, title: str, message: str) -> None:
    """A refusal a person reads in the browser (the same refusal the API gives as JSON)."""
    from html import escape

    page = (
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<main><h1>{escape(title)}</h1><p>{escape(message)}.</p><p><a href='/console/'>Back to the "
        "console</a></p></main></html>"
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(page)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": page})


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then passes on (disconnects)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _detail(key: dict[str, Any] | None, state: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {"role": key["role"]} if key else {}
    if state.get("rails"):  # the verdicts of rails that acted (lamina.serving.railing)
        detail["rails"] = state["rails"]
    if state.get("confidence") is not None:  # the answer's mean token probability (text_service)
        detail["confidence"] = round(float(state["confidence"]), 4)
    if state.get("experiment"):  # the A/B experiment and arm that served it (lamina.serving.experiments)
        detail["experiment"] = state["experiment"]
    if state.get("citations"):  # the RAG sources the answer was given (text_service)
        detail["citations"] = state["citations"]
    return detail


def _clip(value: Any) -> str | None:
    return None if value is None else str(value)[:20_000]
