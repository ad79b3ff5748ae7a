"""API keys: created with a role, shown once, stored only as a hash, revocable.

Keys are 32 random bytes (``secrets.token_urlsafe``), so a single SHA-256 is the right hash: slow
password hashes (bcrypt, argon2) defend low-entropy secrets against guessing, and would add tens
of milliseconds to every request here, where the key itself is unguessable.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lamina.core.catalog.models import ApiKey, utcnow
from lamina.core.errors import ConfigError, NotFound
from lamina.core.logging import new_id
from lamina.core.refs import validate_group
from lamina.core.workspace import Workspace
from lamina.gateway.permissions import ROLES

KEY_PREFIX = "lam-"
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrency")


@dataclass
class NewKey:
    key: ApiKey
    secret: str  # the only time the plaintext exists outside the caller's hands


def hash_key(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    ws: Workspace, name: str, role: str, limits: dict[str, int] | None = None, groups: list[str] | None = None
) -> NewKey:
    """A new key; ``groups`` are the document groups it may read through RAG (admins read all)."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
    if not name.strip():
        raise ConfigError("a key needs a name (who or what uses it)", hint="pass --name, e.g. --name ci-bot")
    limits = dict(limits or {})
    for field, value in limits.items():
        if field not in LIMIT_FIELDS:
            raise ConfigError(f"unknown limit {field!r}", hint=f"limits: {', '.join(LIMIT_FIELDS)}")
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"limit {field} must be a positive integer, got {value!r}")
    groups = sorted({validate_group(g.strip()) for g in groups or [] if g.strip()})
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        name=name.strip(),
        role=role,
        key_hash=hash_key(secret),
        prefix=secret[:10],
        limits=limits,
        groups=groups,
        created_at=utcnow(),
    )
    with ws.catalog.session() as session:
        session.add(row)
    return NewKey(row, secret)


def verify_key(ws: Workspace, secret: str | None) -> ApiKey | None:
    """The live key this secret belongs to, or None (unknown, malformed or revoked)."""
    if not secret or not secret.startswith(KEY_PREFIX):
        return None
    with ws.catalog.session() as session:
        row = session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
        if row is None or row.revoked_at is not None:
            return None
        session.expunge(row)
        return row


def is_live(ws: Workspace, key_id: str) -> bool:
    """Whether the key still exists and is not revoked (a console session asks now and then)."""
    with ws.catalog.session() as session:
        row = session.get(ApiKey, key_id)
        return row is not None and row.revoked_at is None


def list_keys(ws: Workspace, include_revoked: bool = True) -> list[dict[str, Any]]:
    with ws.catalog.session() as session:
        rows = session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at)).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "role": r.role,
                "prefix": r.prefix,
                "limits": r.limits,
                "groups": list(r.groups or []),
                "created_at": r.created_at.isoformat(),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
            }
            for r in rows
            if include_revoked or r.revoked_at is None
        ]


def revoke_key(ws: Workspace, key_id_or_prefix: str) -> ApiKey:
    """Revoke by id or by the printed prefix; revoking twice is harmless."""
    with ws.catalog.session() as session:
        matches = session.scalars(
            sa.select(ApiKey).where(sa.or_(ApiKey.id == key_id_or_prefix, ApiKey.prefix == key_id_or_prefix))
        ).all()
        if not matches:
            raise NotFound(f"no API key {key_id_or_prefix!r}", hint="see 'lamina keys list'")
        if len(matches) > 1:
            raise ConfigError(f"{key_id_or_prefix!r} matches {len(matches)} keys", hint="revoke by id")
        row = matches[0]
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        session.flush()
        session.expunge(row)
        return row


ADMIN_PRINCIPAL: dict[str, Any] = {
    "id": None,
    "role": "admin",
    "limits": {},
    "name": "admin key",
    "groups": [],
}


def principal_for(ws: Workspace, secret: str, admin_secret: str | None) -> dict[str, Any] | None:
    """Who a secret signs in as (the settings' admin key, or an active key), or None. One answer for
    the API's ``Authorization`` header and the console's sign-in."""
    import hmac

    secret = secret.strip()
    if not secret:
        return None
    if admin_secret and hmac.compare_digest(secret.encode(), admin_secret.encode()):
        return dict(ADMIN_PRINCIPAL)
    row = verify_key(ws, secret)
    if row is None:
        return None
    return {
        "id": row.id, "role": row.role, "limits": row.limits or {}, "name": row.name,
        "groups": list(row.groups or []),
    }  # fmt: skip
