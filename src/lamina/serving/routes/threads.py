"""Threads Lamina keeps (``POST /v1/chat/completions`` with ``thread``; logic: ``lamina.rag.memory``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request

from lamina.gateway.permissions import ANY_KEY
from lamina.serving.deps import WorkspaceDep
from lamina.serving.protocol import KEYED, NewThreadRequest, errors

router = APIRouter(prefix="/v1/threads")


@router.post("", status_code=201, openapi_extra=ANY_KEY, responses=errors(*KEYED))
async def create_thread(body: NewThreadRequest, request: Request, ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.rag import memory

    made = await asyncio.to_thread(memory.create, ws, getattr(request.state, "key", None), body.title)
    return made.as_dict()


@router.get("", openapi_extra=ANY_KEY, responses=errors(*KEYED))
async def list_threads(
    request: Request, ws: WorkspaceDep, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    from lamina.rag import memory

    rows = await asyncio.to_thread(memory.listing, ws, getattr(request.state, "key", None), limit)
    return {"object": "list", "data": rows}


@router.get("/{thread_id}", openapi_extra=ANY_KEY, responses=errors(*KEYED, 404))
async def get_thread(thread_id: str, request: Request, ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.rag import memory

    found = await asyncio.to_thread(memory.load, ws, thread_id, getattr(request.state, "key", None))
    return found.as_dict()


@router.delete("/{thread_id}", openapi_extra=ANY_KEY, responses=errors(*KEYED, 404))
async def delete_thread(thread_id: str, request: Request, ws: WorkspaceDep) -> dict[str, Any]:
    from lamina.rag import memory

    await asyncio.to_thread(memory.delete, ws, thread_id, getattr(request.state, "key", None))
    return {"id": thread_id, "object": "thread.deleted", "deleted": True}
