"""Browser sessions for the console: an API key is exchanged once for a session cookie.

Why a session and not the key in the browser: a key kept in page storage is readable by any script
that runs there; an ``HttpOnly`` cookie is not. The cookie is ``SameSite=Strict`` (another site's
page cannot make the browser send it) and every state-changing request made with it must also
carry the session's CSRF token in the ``X-CSRF-Token`` header, which only a page of this origin
can read (from its ``<meta name="csrf-token">``). A request with an ``Authorization`` header is an
API call and never looks at the cookie.

Sessions live in the server's memory, keyed by a hash of the cookie's token (a leaked process dump
holds no usable token): a restart signs everyone out; revoking a key through the API ends its
sessions at once, and revoking it anywhere else (``lamina keys revoke``) within ``RECHECK_S``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

COOKIE = "lamina_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


RECHECK_S = 10.0  # how stale a session's word on its key may be (a revocation elsewhere lands by then)


@dataclass
class Session:
    key: dict[str, Any]  # what the gateway puts in request.state.key (id, role, limits, name, groups)
    csrf: str
    expires_at: float
    checked_at: float = 0.0  # when the key was last found live in the catalog

    def needs_check(self) -> bool:
        return self.key.get("id") is not None and time.time() - self.checked_at > RECHECK_S


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Open sessions, each ending ``ttl_s`` after sign-in (sliding windows keep stolen cookies alive)."""

    def __init__(self, ttl_s: float = 12 * 3600) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, key: dict[str, Any]) -> tuple[str, Session]:
        """A new session for ``key``; returns (the cookie's token, the session)."""
        token = secrets.token_urlsafe(32)
        session = Session(dict(key), secrets.token_urlsafe(24), time.time() + self.ttl_s, time.time())
        with self._lock:
            self._expire()
            self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(_digest(token))
            if session is not None and session.expires_at < time.time():
                del self._sessions[_digest(token)]
                return None
            return session

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def drop_key(self, key_id: str) -> int:
        """End every session signed in with ``key_id`` (the key was revoked); returns how many."""
        with self._lock:
            gone = [t for t, s in self._sessions.items() if s.key.get("id") == key_id]
            for token in gone:
                del self._sessions[token]
        return len(gone)

    def _expire(self) -> None:
        now = time.time()
        for token in [t for t, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[token]


def cookie_token(cookie_header: str) -> str | None:
    """The session token in a ``Cookie`` header, if any."""
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def csrf_ok(session: Session, header_value: str | None) -> bool:
    return bool(header_value) and hmac.compare_digest(session.csrf.encode(), (header_value or "").encode())


def set_cookie_header(token: str, max_age: int, secure: bool) -> str:
    flags = f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return f"{COOKIE}={token}{flags}"


def clear_cookie_header() -> str:
    return f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
