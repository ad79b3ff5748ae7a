"""Administration over HTTP: API keys, the audit log, the registry's aliases and a rails trial (the
console's admin, registry and rails pages call these; the CLI calls the same layer functions)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request

from lamina.gateway.permissions import ADMIN_ONLY, OPERATORS
from lamina.serving.deps import WorkspaceDep
from lamina.serving.protocol import (
    KEYED,
    NewKeyRequest,
    PromoteRequest,
    RailsTestRequest,
    RollbackRequest,
    errors,
)  # fmt: skip

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
async def revoke_key(key_id: str, ws: WorkspaceDep, request: Request) -> dict[str, Any]:
    from lamina.gateway.keys import revoke_key

    row = await asyncio.to_thread(revoke_key, ws, key_id)
    request.app.state.sessions.drop_key(row.id)  # its console sessions end now, not at expiry
    return {"id": row.id, "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


@router.get("/audit", openapi_extra=OPERATORS, responses=errors(*KEYED))
async def audit(
    ws: WorkspaceDep,
    limit: int = Query(100, ge=1, le=1000),
    request_id: str | None = Query(None, max_length=64),
    route: str | None = Query(None, max_length=255, description="a route, or its start (/v1/chat)"),
    key_id: str | None = Query(None, max_length=40),
    status: int | None = Query(None, ge=100, le=599),
) -> dict[str, Any]:
    from lamina.gateway.audit import AuditQuery, recent

    query = AuditQuery(request_id=request_id, route=route, key_id=key_id, status=status)
    return {"object": "list", "data": await asyncio.to_thread(recent, ws, limit, query)}


@router.get("/models", openapi_extra=OPERATORS, responses=errors(*KEYED))
async def list_models(ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.hub.registry import list_models

    return {"object": "list", "data": await asyncio.to_thread(list_models, ws)}


@router.post("/models/promote", openapi_extra=OPERATORS, responses=errors(*KEYED, 404))
async def promote(body: PromoteRequest, ws: WorkspaceDep) -> dict[str, Any]:
    """Serving follows the alias at the next request (no restart)."""
    from lamina.hub.registry import promote

    version, previous = await asyncio.to_thread(promote, ws, body.ref, body.alias, body.reason)
    return {"alias": f"{version.name}@{body.alias}", "to": version.ref, "from_id": previous}


@router.post("/models/rollback", openapi_extra=OPERATORS, responses=errors(*KEYED, 400, 404))
async def rollback(body: RollbackRequest, ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.hub.registry import rollback

    current, target = await asyncio.to_thread(rollback, ws, body.name, body.alias)
    return {"alias": f"{body.name}@{body.alias}", "from_id": current, "to_id": target}


@router.post("/rails/test", openapi_extra=OPERATORS, responses=errors(*KEYED))
async def rails_test(body: RailsTestRequest, ws: WorkspaceDep, request: Request) -> dict[str, Any]:
    """Every verdict of the served policy's rails (or the named ones) on one text, with spans."""
    from lamina.guardrails.policy import configured_policies, trial, trial_guard

    state = request.app.state

    def run() -> dict[str, Any]:
        policies = state.text.rails
        if policies is None and not body.rails:  # no policy served: the configured one, built once per app
            if getattr(state, "trial_policies", None) is None:
                state.trial_policies = configured_policies(ws)
            policies = state.trial_policies
        return trial(trial_guard(ws, body.stage, body.rails, policies), body.text, body.stage, body.sources)

    return await asyncio.to_thread(run)
