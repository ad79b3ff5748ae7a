"""Console sessions: tokens stored only as hashes, expiry, revocation, the CSRF check, the cookie."""

from __future__ import annotations

import time

from lamina.gateway.sessions import (
    COOKIE,
    SessionStore,
    clear_cookie_header,
    cookie_token,
    csrf_ok,
    set_cookie_header,
)  # fmt: skip

KEY = {"id": "key-1", "role": "user", "limits": {}, "name": "alice", "groups": []}


def test_a_session_is_found_by_its_token_and_the_store_keeps_no_token() -> None:
    store = SessionStore(ttl_s=60)
    token, session = store.open(KEY)
    assert store.get(token) is session and session.key == KEY and session.key is not KEY
    assert token not in store._sessions  # only a hash of the token is kept
    assert store.get("not-a-token") is None and store.get(None) is None and store.get("") is None
    store.close(token)
    assert store.get(token) is None


def test_sessions_expire_and_revoking_a_key_ends_its_sessions() -> None:
    store = SessionStore(ttl_s=0.05)
    token, _ = store.open(KEY)
    time.sleep(0.1)
    assert store.get(token) is None
    store = SessionStore(ttl_s=60)
    a, _ = store.open(KEY)
    b, _ = store.open(KEY)
    other, _ = store.open({**KEY, "id": "key-2"})
    assert store.drop_key("key-1") == 2
    assert store.get(a) is None and store.get(b) is None and store.get(other) is not None


def test_csrf_and_cookie_headers() -> None:
    store = SessionStore()
    token, session = store.open(KEY)
    assert csrf_ok(session, session.csrf)
    assert (
        not csrf_ok(session, None) and not csrf_ok(session, "") and not csrf_ok(session, session.csrf + "x")
    )
    header = set_cookie_header(token, 3600, secure=True)
    assert header.startswith(f"{COOKIE}={token};")
    assert all(flag in header for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Max-Age=3600", "Path=/"))
    assert "Secure" not in set_cookie_header(token, 10, secure=False)
    assert "Max-Age=0" in clear_cookie_header()
    assert cookie_token(f"theme=dark; {COOKIE}={token}; other=1") == token
    assert cookie_token("theme=dark") is None and cookie_token('bad="unterminated') is None


def test_a_session_asks_the_catalog_again_whether_its_key_lives(monkeypatch, workspace) -> None:
    from lamina.gateway import sessions
    from lamina.gateway.keys import create_key, is_live, revoke_key

    made = create_key(workspace, "bob", "developer")
    store = SessionStore()
    _, session = store.open({**KEY, "id": made.key.id})
    assert not session.needs_check()  # just signed in: the key was live a moment ago
    monkeypatch.setattr(sessions, "RECHECK_S", -1.0)
    assert session.needs_check()
    _, admin = store.open({**KEY, "id": None})  # the settings' admin key has no row to ask about
    assert not admin.needs_check()
    assert is_live(workspace, made.key.id)
    revoke_key(workspace, made.key.id)
    assert not is_live(workspace, made.key.id) and not is_live(workspace, "key-nope")
