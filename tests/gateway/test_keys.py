"""API keys (hash-only storage, revocation, limits) and the role × route permission matrix."""

from __future__ import annotations

import json

import pytest

from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace
from lamina.gateway.keys import create_key, hash_key, list_keys, revoke_key, verify_key
from lamina.gateway.permissions import ROLES, PermissionTable, UndeclaredRoute, permit
from tests.conftest import run_lamina


def test_a_key_is_stored_only_as_its_hash(workspace: Workspace) -> None:
    made = create_key(workspace, "ci-bot", "developer", {"requests_per_minute": 60})
    assert made.secret.startswith("lam-") and len(made.secret) > 40
    assert made.key.key_hash == hash_key(made.secret) and made.secret not in made.key.key_hash
    workspace.catalog.close()
    raw = b"".join(p.read_bytes() for p in workspace.root.glob("lamina.db*"))
    assert made.secret.encode() not in raw and made.key.key_hash.encode() in raw
    ws = Workspace.open(workspace.root)
    found = verify_key(ws, made.secret)
    assert found is not None and found.id == made.key.id and found.role == "developer"
    assert verify_key(ws, made.secret + "x") is None and verify_key(ws, None) is None
    assert verify_key(ws, "Bearer nonsense") is None
    ws.close()


def test_revoked_keys_stop_working_and_stay_listed(workspace: Workspace) -> None:
    a = create_key(workspace, "alice", "user")
    b = create_key(workspace, "bob", "admin")
    revoked = revoke_key(workspace, a.key.prefix)
    assert revoked.id == a.key.id and revoked.revoked_at is not None
    assert verify_key(workspace, a.secret) is None and verify_key(workspace, b.secret) is not None
    again = revoke_key(workspace, a.key.id)  # idempotent
    assert again.revoked_at == revoked.revoked_at
    rows = {r["id"]: r for r in list_keys(workspace)}
    assert rows[a.key.id]["revoked_at"] and rows[b.key.id]["revoked_at"] is None
    assert [r["id"] for r in list_keys(workspace, include_revoked=False)] == [b.key.id]
    assert all("secret" not in r and "key_hash" not in r for r in rows.values())
    with pytest.raises(NotFound):
        revoke_key(workspace, "key-nope")


@pytest.mark.parametrize(
    ("name", "role", "limits", "message"),
    [
        ("x", "root", None, "unknown role"),
        ("  ", "user", None, "needs a name"),
        ("x", "user", {"burst": 3}, "unknown limit"),
        ("x", "user", {"requests_per_minute": 0}, "positive integer"),
    ],
)
def test_bad_key_requests_are_refused(
    workspace: Workspace, name: str, role: str, limits, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_key(workspace, name, role, limits)
    assert list_keys(workspace) == []


# The matrix written out by hand: a change to a route's permit() must change this table too.
ANY = {"admin", "developer", "reviewer", "user"}
EXPECTED = {
    ("GET", "/openapi.json"): ANY,
    ("GET", "/docs"): ANY,
    ("GET", "/docs/oauth2-redirect"): ANY,
    ("GET", "/redoc"): ANY,
    ("GET", "/health"): {*ANY, "anonymous"},
    ("GET", "/ready"): {*ANY, "anonymous"},
    ("GET", "/v1/models"): ANY,
    ("POST", "/v1/completions"): ANY,
    ("POST", "/v1/chat/completions"): ANY,
    ("POST", "/v1/embeddings"): ANY,
    ("POST", "/v1/moderations"): ANY,
    ("POST", "/v1/images/generations"): ANY,
    ("POST", "/v1/images/interpolations"): ANY,  # an extension: a latent walk
    ("POST", "/v1/threads"): ANY,  # each key sees only its own threads
    ("GET", "/v1/threads/{thread_id}"): ANY,
    ("DELETE", "/v1/threads/{thread_id}"): ANY,
    ("POST", "/v1/feedback"): ANY,  # on its own requests; reviewer and admin keys on any
    ("GET", "/v1/feedback"): ANY,  # its own; reviewer and admin keys see everyone's
    ("GET", "/v1/review"): {"admin", "reviewer"},
    ("POST", "/v1/review/{item_id}"): {"admin", "reviewer"},
    ("GET", "/metrics"): {"admin", "developer"},
    ("GET", "/admin/audit"): {"admin", "developer"},
    ("GET", "/admin/keys"): {"admin"},
    ("POST", "/admin/keys"): {"admin"},
    ("DELETE", "/admin/keys/{key_id}"): {"admin"},
    ("GET", "/admin/models"): {"admin", "developer"},
    ("POST", "/admin/models/promote"): {"admin", "developer"},
    ("POST", "/admin/models/rollback"): {"admin", "developer"},
    ("POST", "/admin/rails/test"): {"admin", "developer"},
    ("GET", "/v1/threads"): ANY,
    # the console (lamina.console): sign-in is public, pages follow the API's roles
    ("GET", "/"): {*ANY, "anonymous"},
    ("GET", "/console/login"): {*ANY, "anonymous"},
    ("POST", "/console/session"): {*ANY, "anonymous"},
    ("GET", "/console/static/{name}"): {*ANY, "anonymous"},
    ("POST", "/console/session/end"): ANY,
    ("GET", "/console/"): ANY,
    ("GET", "/console/images"): ANY,
    ("GET", "/console/datasets"): {"admin", "developer"},
    ("GET", "/console/datasets/{ref}"): {"admin", "developer"},
    ("GET", "/console/datasets/{ref}/report"): {"admin", "developer"},
    ("GET", "/console/runs"): {"admin", "developer"},
    ("GET", "/console/runs/compare"): {"admin", "developer"},
    ("GET", "/console/runs/compare.png"): {"admin", "developer"},
    ("GET", "/console/runs/{run_id}"): {"admin", "developer"},
    ("GET", "/console/runs/{run_id}/curve.png"): {"admin", "developer"},
    ("GET", "/console/models"): {"admin", "developer"},
    ("GET", "/console/models/{ref}"): {"admin", "developer"},
    ("GET", "/console/monitoring"): {"admin", "developer"},
    ("GET", "/console/monitoring/plot.png"): {"admin", "developer"},
    ("GET", "/console/review"): {"admin", "reviewer"},
    ("GET", "/console/rails"): {"admin", "developer"},
    ("GET", "/console/prompts"): {"admin", "developer"},
    ("GET", "/console/audit"): {"admin", "developer"},
    ("GET", "/console/admin"): {"admin"},
}


def test_permission_matrix_exhaustively(workspace: Workspace) -> None:
    from lamina.serving.api import create_app

    table: PermissionTable = create_app(workspace).state.permissions  # read from the routes themselves
    assert set(table.entries) == set(EXPECTED)
    for (method, route), who in EXPECTED.items():
        for role in (*ROLES, "anonymous"):
            expected = role in who
            got = (
                table.is_public(method, route) if role == "anonymous" else table.allowed(role, method, route)
            )
            assert got == expected, (method, route, role)
    assert not table.allowed("admin", "GET", "/v1/unknown") and not table.allowed(
        "admin", "PUT", "/v1/models"
    )
    markdown = table.markdown()
    assert markdown.count("\n") == len(EXPECTED) + 1 and "`GET /metrics` | yes | yes | no |" in markdown


def test_a_route_without_a_permission_stops_the_app_from_being_built() -> None:
    from fastapi import FastAPI

    from lamina.serving.api import docs_paths

    app = FastAPI()

    @app.get("/declared", openapi_extra=permit("admin"))
    def declared() -> None: ...

    assert PermissionTable.from_routes(app.routes, docs_paths=docs_paths(app)).entries
    app.get("/forgotten")(declared)
    with pytest.raises(UndeclaredRoute, match="/forgotten"):
        PermissionTable.from_routes(app.routes, docs_paths=docs_paths(app))
    with pytest.raises(ValueError, match="root"):
        permit("root")


def test_keys_cli_shows_the_key_once(workspace: Workspace) -> None:
    ws = ["--workspace", str(workspace.root)]
    made = run_lamina(*ws, "keys", "create", "--role", "user", "--name", "app", "--rpm", "30", "--json")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["key"].startswith("lam-") and info["role"] == "user"
    listed = run_lamina(*ws, "keys", "list", "--json")
    rows = json.loads(listed.stdout)
    assert rows[0]["limits"] == {"requests_per_minute": 30} and info["key"] not in listed.stdout
    human = run_lamina(*ws, "keys", "create", "--role", "admin", "--name", "ops")
    assert "will not be shown again" in human.stdout
    assert run_lamina(*ws, "keys", "revoke", info["id"]).returncode == 0
    bad = run_lamina(*ws, "keys", "create", "--role", "root", "--name", "x")
    assert bad.returncode == 2 and "root" in bad.stderr
    missing = run_lamina(*ws, "keys", "revoke", "key-nope")
    assert missing.returncode == 6 and "lamina keys list" in missing.stderr
