"""The gateway fails closed: every route × every role over HTTP, through the real middleware.

The routes come from the app itself (``app.routes``), so a route added later is walked too, and
one without a declared permission fails the test (the app refuses to build).
"""

from __future__ import annotations

import json

import httpx
import pytest

from lamina.core.workspace import Workspace
from lamina.gateway.permissions import PUBLIC, ROLES, flat_routes
from lamina.serving.api import create_app
from tests.conftest import lamina_here
from tests.serving.conftest import ADMIN, Server


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str | None]:
    made = lamina_here(
        "--workspace", str(server.workspace), "keys", "create", "--role", "developer", "--name", "walk",
        "--json",
    )  # fmt: skip
    return {"anonymous": None, "user": server.user_key, "developer": json.loads(made.stdout)["key"],
            "admin": ADMIN}  # fmt: skip


def test_every_route_answers_every_role_as_its_permission_says(server: Server, keys: dict) -> None:
    ws = Workspace.open(server.workspace)
    try:
        app = create_app(ws)
        table = app.state.permissions
        routes = [
            (m, r.path) for r in flat_routes(app.routes) for m in sorted(set(r.methods or ()) - {"HEAD"})
        ]
    finally:
        ws.close()
    assert len(routes) >= 12 and {route for _, route in routes} >= {"/v1/chat/completions", "/docs"}
    for method, route in routes:
        assert (method, route) in table.entries, f"{method} {route} declares no permission"
        roles = table.entries[(method, route)]
        path = route.replace("{key_id}", "key-nope")
        for who, key in keys.items():
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = httpx.request(method, f"{server.url}{path}", headers=headers, json={}, timeout=30)
            if PUBLIC in roles:
                expected_denial = None
            elif who == "anonymous":
                expected_denial = 401
            else:
                expected_denial = None if who in roles else 403
            if expected_denial is None:
                assert r.status_code not in (401, 403), (method, route, who, r.status_code, r.text[:200])
            else:
                assert r.status_code == expected_denial, (method, route, who, r.status_code)
                assert r.json()["error"]["code"] in ("invalid_api_key", "permission_denied")


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc", "/nowhere", "/v1/nothing", "/admin"])
def test_docs_and_unknown_paths_need_a_key(server: Server, path: str) -> None:
    anonymous = httpx.get(f"{server.url}{path}", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    known = httpx.get(f"{server.url}{path}", headers=server.headers(), timeout=10)
    assert known.status_code == (200 if path in ("/docs", "/openapi.json", "/redoc") else 404)
    wrong_method = httpx.put(f"{server.url}/v1/models", headers=server.headers(), timeout=10)
    assert wrong_method.status_code == 405


def test_public_docs_setting_opens_only_the_docs(tmp_path) -> None:
    ws, _ = Workspace.init(tmp_path / "ws")
    try:
        settings = ws.settings.model_copy(
            update={"server": ws.settings.server.model_copy(update={"public_docs": True})}
        )
        table = create_app(ws, settings).state.permissions
        assert table.is_public("GET", "/openapi.json") and table.is_public("GET", "/docs")
        assert not table.is_public("GET", "/v1/models") and not table.is_public("GET", "/metrics")
        assert all(r in ROLES or r == "public" for roles in table.entries.values() for r in roles)
    finally:
        ws.close()
