"""The console's sign-in, session cookie, CSRF and roles, over HTTP against a real ``lamina serve``
(the browser journey is test_console_browser.py)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from contextlib import closing

import httpx

from tests.conftest import lamina_here
from tests.serving.conftest import ADMIN, Server

HTML = {"accept": "text/html,application/xhtml+xml"}


def sign_in(server: Server, key: str) -> tuple[httpx.Client, str]:
    """A client holding a console session, and the page's CSRF token."""
    client = httpx.Client(base_url=server.url, timeout=60)
    made = client.post("/console/session", data={"key": key, "next": "/console/"}, headers=HTML)
    assert made.status_code == 303, made.text
    assert made.headers["location"] == "/console/"
    page = client.get("/console/", headers=HTML)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf, "the page carries its CSRF token"
    return client, csrf.group(1)


def test_a_browser_without_a_session_is_sent_to_sign_in_and_a_script_gets_401(server: Server) -> None:
    assert httpx.get(f"{server.url}/", follow_redirects=False).headers["location"] == "/console/"
    page = httpx.get(f"{server.url}/console/models", headers=HTML, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/models"
    api = httpx.get(f"{server.url}/console/models")
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "invalid_api_key"
    login = httpx.get(f"{server.url}/console/login", headers=HTML)
    assert login.status_code == 200 and 'type="password"' in login.text


def test_sign_in_sets_an_httponly_samesite_cookie_and_refuses_a_bad_key(server: Server) -> None:
    bad = httpx.post(f"{server.url}/console/session", data={"key": "lam-wrong"}, headers=HTML)
    assert bad.status_code == 401
    assert "not valid" in bad.text and "set-cookie" not in bad.headers
    good = httpx.post(f"{server.url}/console/session", data={"key": server.user_key}, headers=HTML)
    cookie = good.headers["set-cookie"]
    assert cookie.startswith("lamina_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert server.user_key not in cookie  # the key itself never goes to the browser
    # no open redirect: only a path of this site
    away = httpx.post(
        f"{server.url}/console/session", data={"key": server.user_key, "next": "//evil.example"}
    )
    assert away.headers["location"] == "/console/"


def test_a_change_made_with_the_cookie_needs_the_csrf_header(server: Server) -> None:
    client, csrf = sign_in(server, server.user_key)
    with closing(client):
        body = {"request_id": "req-does-not-exist", "thumbs": "down"}
        forged = client.post("/v1/feedback", json=body)
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "csrf_failed"
        wrong = client.post("/v1/feedback", json=body, headers={"x-csrf-token": "not-the-token"})
        assert wrong.status_code == 403
        # with the token the request reaches the route (which then finds no such request: 404)
        passed = client.post("/v1/feedback", json=body, headers={"x-csrf-token": csrf})
        assert passed.status_code == 404, passed.text
        # reads need no token; the API's own models list answers through the session
        assert client.get("/v1/models").status_code == 200
        # an API call with a key never looks at the cookie
        assert client.get("/v1/models", headers={"Authorization": "Bearer lam-wrong"}).status_code == 401
        ended = client.post("/console/session/end", headers={"x-csrf-token": csrf})
        assert ended.status_code == 204
        assert client.get("/v1/models").status_code == 401  # the session is gone


def test_a_user_cannot_reach_admin_pages_or_actions(server: Server) -> None:
    client, csrf = sign_in(server, server.user_key)
    with closing(client):
        page = client.get("/console/", headers=HTML)
        nav = re.findall(r'<nav aria-label="Console">(.*?)</nav>', page.text, re.S)[0]
        assert "/console/images" in nav and "/console/admin" not in nav and "/console/models" not in nav
        for path in ("/console/admin", "/console/models", "/console/audit", "/console/review"):
            refused = client.get(path, headers=HTML)
            assert refused.status_code == 403, path
            assert "Not allowed" in refused.text
        token = {"x-csrf-token": csrf}
        for method, path, body in (
            ("POST", "/admin/models/promote", {"ref": "shakes@v1", "alias": "champion"}),
            ("POST", "/admin/models/rollback", {"name": "shakes"}),
            ("POST", "/admin/keys", {"name": "sneaky", "role": "admin"}),
            ("GET", "/admin/audit", None),
        ):
            refused = client.request(method, path, json=body, headers=token)
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "permission_denied"


def test_revoking_a_key_ends_its_console_sessions_at_once(server: Server) -> None:
    made = lamina_here("--workspace", str(server.workspace), "keys", "create", "--role", "developer",
                      "--name", "leaving", "--json")  # fmt: skip
    key = json.loads(made.stdout)
    client, _ = sign_in(server, key["key"])
    with closing(client):
        assert client.get("/console/models", headers=HTML).status_code == 200
        revoked = httpx.delete(
            f"{server.url}/admin/keys/{key['id']}", headers=server.headers(ADMIN), timeout=30
        )
        assert revoked.status_code == 200
        after = client.get("/console/models", headers=HTML, follow_redirects=False)
        assert after.status_code == 303 and after.headers["location"].startswith("/console/login")


def test_admin_api_lists_models_searches_the_audit_and_tries_rails(server: Server) -> None:
    admin = server.headers(ADMIN)
    models = httpx.get(f"{server.url}/admin/models", headers=admin, timeout=30).json()["data"]
    assert any(m["name"] == "shakes" and "champion" in m["aliases"] for m in models)
    asked = httpx.get(f"{server.url}/v1/models", headers=server.headers())
    rid = asked.headers["x-request-id"]
    found = []
    for _ in range(20):  # the audit writer flushes in the background
        found = httpx.get(f"{server.url}/admin/audit", params={"request_id": rid}, headers=admin).json()[
            "data"
        ]
        if found:
            break
    assert [r["route"] for r in found] == ["/v1/models"]
    routed = httpx.get(f"{server.url}/admin/audit", params={"route": "/v1/mod", "limit": 5}, headers=admin)
    assert routed.json()["data"] and all(r["route"].startswith("/v1/mod") for r in routed.json()["data"])
    tried = httpx.post(
        f"{server.url}/admin/rails/test", headers=admin, timeout=120,
        json={"text": "Write to jane.doe@example.com", "stage": "output", "rails": ["pii"]},
    )  # fmt: skip
    assert tried.status_code == 200, tried.text
    verdict = tried.json()["verdicts"][0]
    assert verdict["rail"] == "pii" and verdict["action"] == "redact"
    span = verdict["spans"][0]
    assert "Write to jane.doe@example.com"[span["start"] : span["end"]] == "jane.doe@example.com"
    assert "jane.doe@example.com" not in tried.json()["text"]
    # no rails named and none served (this server runs without them): the policy lamina.yaml sets (the
    # quickstart's default set) is built on the first call and kept for the next
    unnamed = [
        httpx.post(
            f"{server.url}/admin/rails/test",
            headers=admin,
            timeout=120,
            json={"text": "Hello, how are you today?", "stage": "input"},
        )
        for _ in range(2)
    ]
    assert all(r.status_code == 200 for r in unnamed), unnamed[0].text
    first, again = (r.json() for r in unnamed)
    assert {v["rail"] for v in first["verdicts"]} >= {"injection", "pii"} and first == again


def test_the_monitoring_page_checks_drift_of_recent_prompts_from_a_dataset(railed: Server) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{railed.url}/v1", api_key=ADMIN, max_retries=0)
    for i in range(22):  # the drift check needs at least 20 prompts in its window
        asked = [{"role": "user", "content": f"My lord, news from the {i}th gate"}]
        client.chat.completions.create(model="shakes@champion", messages=asked, max_tokens=2)
    cache = railed.workspace / ".cache" / "embeddings.sqlite"
    cache.unlink(missing_ok=True)
    browser, _ = sign_in(railed, ADMIN)
    with closing(browser):
        # the first check embeds the sampled reference (~20 texts a second on 2 AVX2 cores), the next reuse it
        pages = [
            browser.get(
                "/console/monitoring",
                params={"reference": "shakespeare@v1", "window": 22, "sample": 200},
                headers=HTML,
                timeout=240,
            )
            for _ in range(2)
        ]
    verdicts = []
    for page in pages:
        assert page.status_code == 200, page.text
        verdict = re.search(
            r"<strong>(Drift found|No drift found)</strong> \((\d+) prompts against (\d+)", page.text
        )
        assert verdict, page.text[-3000:]
        assert int(verdict.group(2)) == 22 and int(verdict.group(3)) >= 20
        for test in ("meaning", "length", "vocabulary"):
            assert f"<td>{test}</td>" in page.text
        verdicts.append(verdict.groups())
    assert verdicts[0] == verdicts[1]  # the cached reference gives the same check
    with closing(sqlite3.connect(cache)) as db:  # the reference's vectors are kept, the traffic's are not
        kept = {key for (key,) in db.execute("SELECT key FROM vectors")}
    assert int(verdicts[0][2]) == 200 and 20 <= len(kept) <= 200
    assert hashlib.sha256(b"My lord, news from the 0th gate").hexdigest() not in kept


def test_a_model_page_shows_its_card_evaluation_and_alias_moves(server: Server) -> None:
    browser, _ = sign_in(server, ADMIN)
    with closing(browser):
        page = browser.get("/console/models/shakes@v1", headers=HTML)
    assert page.status_code == 200
    assert "shakes-eval@v1" in page.text and "val_perplexity" in page.text  # its eval report
    assert "shakes@champion" in page.text  # how it came to serve
    assert "## Lineage" in page.text  # the model card
