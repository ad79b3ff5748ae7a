"""Administration over HTTP: API keys and the audit log."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query

from lamina.gateway.permissions import ADMIN_ONLY, OPERATORS
from lamina.serving.deps import WorkspaceDep
from lamina.serving.protocol import KEYED, NewKeyRequest, errors

router = APIRouter(prefix="/admin")


@router.get("/keys", openapi_extra=ADMIN_ONLY, responses=errors(*KEYED))
async def list_keys(ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.gateway.keys import list_keys

    return {"object": "list", "data": await asyncio.to_thread(list_keys, ws)}


@router.post("/keys", status_code=201, openapi_extra=ADMIN_ONLY, responses=errors(*KEYED))
async def create_key(body: NewKeyRequest, ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.gateway.keys import create_key

    made = await asyncio.to_thread(create_key, ws, body.name, body.role, body.limits, body.groups)
    return {
        "id": made.key.id, "name": made.key.name, "role": made.key.role, "groups": made.key.groups,
        "key": made.secret,
    }  # fmt: skip


@router.delete("/keys/{key_id}", openapi_extra=ADMIN_ONLY, responses=errors(*KEYED, 404))
async def revoke_key(key_id: str, ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.gateway.keys import revoke_key

    row = await asyncio.to_thread(revoke_key, ws, key_id)
    return {"id": row.id, "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


@router.get("/audit", openapi_extra=OPERATORS, responses=errors(*KEYED))
async def audit(ws: WorkspaceDep, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    from lamina.gateway.audit import recent

    return {"object": "list", "data": await asyncio.to_thread(recent, ws, limit)}
