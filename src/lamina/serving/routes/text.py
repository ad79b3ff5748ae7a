"""Text generation: ``/v1/completions`` and ``/v1/chat/completions`` (logic: ``text_service``), and
``/v1/moderations`` (the rails policy, ``railing``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lamina.gateway.permissions import ANY_KEY
from lamina.serving.deps import TextDep
from lamina.serving.protocol import (
    KEYED,
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    ModerationList,
    ModerationRequest,
    answers,
)

router = APIRouter(prefix="/v1")
GENERATION_ERRORS = (*KEYED, 404, 503, 504)


@router.post(
    "/completions", response_model=None, openapi_extra=ANY_KEY,
    responses=answers(Completion, *GENERATION_ERRORS, stream=True),
)  # fmt: skip
async def completions(body: CompletionRequest, request: Request, text: TextDep) -> Any:
    return await text.complete(body, request)


@router.post(
    "/chat/completions", response_model=None, openapi_extra=ANY_KEY,
    responses=answers(ChatCompletion, *GENERATION_ERRORS, stream=True),
)  # fmt: skip
async def chat_completions(body: ChatRequest, request: Request, text: TextDep) -> Any:
    return await text.chat(body, request)


@router.post("/moderations", openapi_extra=ANY_KEY, responses=answers(ModerationList, *KEYED))
async def moderations(body: ModerationRequest, request: Request, text: TextDep) -> dict[str, Any]:
    """Check texts against the rails policy (``docs/guardrails.md``), as OpenAI's moderation API."""
    from lamina.serving.railing import moderate

    return await moderate(text.rails, body, request)
