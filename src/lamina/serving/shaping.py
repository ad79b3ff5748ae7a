"""Engine events → OpenAI's answer shapes: log-probabilities, stream chunks, SSE, tool calls.

Pure functions of events and a tokenizer (no HTTP, no engine state), so the completions and chat
services share them and tests can read them on their own.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from lamina.core.errors import LaminaError
from lamina.serving import generation
from lamina.serving.engine import TokenEvent
from lamina.serving.protocol import error_body
from lamina.serving.sampling import LOGPROB_FLOOR


def finish_reason(events: list[TokenEvent]) -> str:
    """OpenAI's finish reason for a choice's last event; an engine failure raises."""
    reason = events[-1].finish_reason if events else "stop"
    if reason == "error":
        raise generation.GenerationFailed(
            "the engine failed while generating", hint="retry; see the server log"
        )
    return "length" if reason == "length" else "stop"


def coalesce(batch: list[tuple[int, TokenEvent]]) -> list[tuple[int, TokenEvent]]:
    """One event per choice for events that arrived together: their text joined, the last one's
    finish. A stream that keeps up gets one token per chunk; one that fell behind (a loaded server)
    catches up in fewer, larger chunks instead of paying JSON and a write per token. Only for
    requests without logprobs, which are reported per token."""
    merged: dict[int, TokenEvent] = {}
    for index, event in batch:
        if index not in merged:
            merged[index] = TokenEvent(event.text, finish_reason=event.finish_reason, prompt=event.prompt)
        else:
            merged[index].text += event.text
            merged[index].finish_reason = event.finish_reason
    return list(merged.items()) if len(merged) < len(batch) else batch


def finite(logprob: float | None) -> float | None:
    """JSON has no -inf or NaN: report them as ``LOGPROB_FLOOR``."""
    return logprob if logprob is None or math.isfinite(logprob) else LOGPROB_FLOOR


def token_text(tokenizer: Any, token: int | None) -> str:
    return "" if token is None else tokenizer.decode([token])


def completion_logprobs(
    tokenizer: Any, scored: list[tuple[int, float | None, list[tuple[int, float]]]], offset: int = 0
) -> dict[str, Any]:
    """The legacy completions ``logprobs`` block for ``(token, logprob, top alternatives)`` triples."""
    offsets, at = [], offset
    texts = [token_text(tokenizer, token) for token, _, _ in scored]
    for text in texts:
        offsets.append(at)
        at += len(text)
    return {
        "tokens": texts,
        "token_logprobs": [finite(lp) for _, lp, _ in scored],
        "top_logprobs": [
            None if lp is None else {token_text(tokenizer, t): finite(v) for t, v in top}
            for _, lp, top in scored
        ],
        "text_offset": offsets,
    }


def generated(events: list[TokenEvent]) -> list[tuple[int, float | None, list[tuple[int, float]]]]:
    return [(e.token_id, e.logprob, e.top) for e in events if e.token_id is not None]


def chat_logprobs(tokenizer: Any, events: list[TokenEvent]) -> dict[str, Any]:
    content = []
    for e in events:
        if e.token_id is None:
            continue
        text = token_text(tokenizer, e.token_id)
        content.append(
            {
                "token": text, "logprob": finite(e.logprob), "bytes": list(text.encode()),
                "top_logprobs": [_top_entry(token_text(tokenizer, t), lp) for t, lp in e.top],
            }
        )  # fmt: skip
    return {"content": content}


def _top_entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": finite(logprob), "bytes": list(text.encode())}


def tool_calls_from(text: str) -> list[dict[str, Any]] | None:
    """Tool calls written by a constrained (or willing) model: ``{"name", "arguments"}`` or a list of
    them; None when ``text`` is not that (the model answered in words)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("arguments"), dict)
        for c in calls
    ):
        return None
    return [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
        for c in calls
    ]  # fmt: skip


def sse(chunks: AsyncIterator[list[dict[str, Any]]], jobs: generation.Jobs) -> StreamingResponse:
    """Server-sent events; chunks that are ready together go out in one write.

    A stream that fails after it began (time limit, engine error) cannot change its status any
    more: it ends with an ``error`` event in OpenAI's error shape, then ``[DONE]``.
    """

    async def body() -> AsyncIterator[bytes]:
        try:
            async for group in chunks:
                if group:
                    yield b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in group)
        except LaminaError as exc:
            error = error_body(exc.http_status, exc.message, exc.code)
            yield f"data: {json.dumps(error)}\n\n".encode()
        finally:  # the client went away (or we finished): stop generating for it
            generation.cancel(jobs)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
