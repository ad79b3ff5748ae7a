"""The ``thread`` extension of chat: Lamina keeps the conversation (``lamina.rag.memory``).

The request sends only its new messages; the thread's earlier turns (and, once they no longer fit
the model's context, the summary they were folded into) go before them. When the answer is
complete, streamed or not, the new messages and the answer are stored in the thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from lamina.rag import memory
from lamina.serving.protocol import ChatMessage, ChatRequest, UnsupportedParameter

if TYPE_CHECKING:
    from lamina.serving.text_service import TextService


async def chat_in_thread(service: TextService, body: ChatRequest, request: Request) -> Any:
    from lamina.rag.embeddings import Embedder
    from lamina.serving.text_service import context_budget, prompt_tokens

    if body.n != 1:
        raise UnsupportedParameter("n", "a thread keeps one conversation (n = 1)")
    ws = service.pool.ws
    principal = getattr(request.state, "key", None)
    conversation = await asyncio.to_thread(memory.load, ws, str(body.thread), principal)
    engine, _ = await service._engine(body.model)
    new = [{"role": m.role, "content": m.text()} for m in body.messages]
    budget = context_budget(body, engine)

    def messages(summary: str | None) -> list[ChatMessage]:
        earlier = [ChatMessage(role=m["role"], content=m["content"]) for m in conversation.unfolded]
        said = (
            [ChatMessage(role="system", content=f"Earlier in this conversation: {summary}")]
            if summary
            else []
        )
        return [*said, *earlier, *body.messages]

    while conversation.unfolded and prompt_tokens(engine, body, messages(conversation.summary)) > budget:
        count = max(1, len(conversation.unfolded) // 2)  # the older half goes into the summary
        await asyncio.to_thread(memory.fold, ws, conversation, count, Embedder())
    # a summary longer than the room left is sent shortened, newest sentences kept (stored whole)
    summary = conversation.summary
    while summary and prompt_tokens(engine, body, messages(summary)) > budget:
        summary = memory.drop_oldest_sentence(summary)
    result = await service.chat(
        body.model_copy(update={"messages": messages(summary), "thread": None}), request
    )
    request_id = getattr(request.state, "request_id", None)
    info = {"id": conversation.id, "summarized": conversation.summarized}

    async def remember(answer: str) -> None:
        turns = [*new, {"role": "assistant", "content": answer}]
        await asyncio.to_thread(memory.append, ws, conversation, turns, request_id)

    if isinstance(result, StreamingResponse):
        original = result.body_iterator

        async def stream() -> AsyncIterator[Any]:
            # hold each part back one step: the answer is stored before the client sees the last
            # part ([DONE]), so a client that reads the thread next finds its turn there
            held = None
            async for part in original:
                if held is not None:
                    yield held
                held = part
            await remember(getattr(request.state, "response_text", "") or "")
            if held is not None:
                yield held

        result.body_iterator = stream()
        return result
    await remember(result["choices"][0]["message"].get("content") or "")
    return result | {"thread": info | {"messages": len(conversation.messages)}}
