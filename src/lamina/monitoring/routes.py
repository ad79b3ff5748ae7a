"""``/v1/feedback`` and ``/v1/review``: thin routes over ``feedback`` and ``review`` (mounted by the
serving app through ``core.extensions.API_ROUTERS``)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from lamina.core.extensions import API_ROUTERS
from lamina.gateway.permissions import ANY_KEY, REVIEWERS
from lamina.serving.deps import audit_written
from lamina.serving.protocol import KEYED, errors

router = APIRouter()


class FeedbackBody(BaseModel):
    """Feedback on one answer, named by the ``x-request-id`` header of its response."""

    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64)
    thumbs: Literal["up", "down"] | None = None
    rating: int | None = Field(None, ge=1, le=5)
    comment: str | None = Field(None, min_length=1, max_length=32_000)
    correction: str | None = Field(None, min_length=1, max_length=32_000)
    preferred_over: str | None = Field(
        None, min_length=1, max_length=64, description="another request id: this answer was the better one"
    )


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject", "correct"]
    correction: str | None = Field(None, min_length=1, max_length=32_000)


def _context(request: Request) -> tuple[Any, dict[str, Any], Any]:
    from lamina.core.crypto import cipher_for

    state = request.app.state
    return state.workspace, getattr(request.state, "key", None) or {}, cipher_for(state.settings)


@router.post("/v1/feedback", status_code=201, openapi_extra=ANY_KEY, responses=errors(*KEYED, 404, 409))
async def give_feedback(body: FeedbackBody, request: Request) -> dict[str, Any]:
    from lamina.monitoring.feedback import FeedbackIn, record

    ws, caller, cipher = _context(request)
    await audit_written(request)  # the judged request's audit row may still be in the writer's queue
    stored = await asyncio.to_thread(record, ws, FeedbackIn(**body.model_dump()), caller, cipher)
    request.app.state.metrics.observe_feedback(stored["label"] or ("rating" if stored["rating"] else None))
    return stored


@router.get("/v1/feedback", openapi_extra=ANY_KEY, responses=errors(*KEYED))
async def list_feedback(
    request: Request, status: str | None = None, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    """Your feedback (reviewers and admins: everyone's), newest first; text only for reviewers."""
    from lamina.monitoring.feedback import JUDGES, listing

    ws, caller, cipher = _context(request)
    judge = caller.get("role") in JUDGES
    rows = await asyncio.to_thread(
        listing, ws, cipher if judge else None, key_id=None if judge else caller.get("id"), status=status,
        limit=limit,
    )  # fmt: skip
    return {"object": "list", "data": rows}


@router.get("/v1/review", openapi_extra=REVIEWERS, responses=errors(*KEYED))
async def review_queue(request: Request, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    """Items waiting for a reviewer: thumbs-down, low ratings, corrections, preferences, rail flags."""
    from lamina.monitoring.review import queue

    ws, _, cipher = _context(request)
    await audit_written(request)  # rail flags enter the queue as their audit rows are written
    return {"object": "list", "data": await asyncio.to_thread(queue, ws, cipher, limit)}


@router.post("/v1/review/{item_id}", openapi_extra=REVIEWERS, responses=errors(*KEYED, 404, 409))
async def review_item(
    body: ReviewBody, request: Request, item_id: int = Path(ge=1, le=2**63 - 1)
) -> dict[str, Any]:
    from lamina.monitoring.review import decide

    ws, caller, cipher = _context(request)
    return await asyncio.to_thread(decide, ws, item_id, body.decision, caller, cipher, body.correction)


API_ROUTERS.add("monitoring", router)
