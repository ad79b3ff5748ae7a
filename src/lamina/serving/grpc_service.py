"""The gRPC generation service (``proto/generation.proto``): streamed completions and chat over gRPC.

Each call is served by the same process's OpenAI-compatible routes over loopback HTTP, with the
caller's key: so a gRPC call meets the same gateway (keys, roles, limits, audit, metrics), the same
rails and the same engine as an HTTP call, and the same seed gives the same tokens by construction.
Why this and not a second path into the engine: the gateway, the rails and the streaming shape live
in the ASGI app; a servicer that called the engine directly would have to repeat each of them and
could drift. The cost is one loopback hop per call (tens of microseconds per chunk), against token
steps of milliseconds.

HTTP errors become gRPC status codes (401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 404 →
NOT_FOUND, 400/422 → INVALID_ARGUMENT, 429 → RESOURCE_EXHAUSTED, 503 → UNAVAILABLE, 504 →
DEADLINE_EXCEEDED) with the API's error message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx

from lamina.serving.proto import generation_pb2 as pb
from lamina.serving.proto import generation_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
}  # fmt: skip


def sampling(s: pb.Sampling) -> dict[str, Any]:
    """The request's sampling fields that were set (proto3 ``optional``: unset means the API's default)."""
    out: dict[str, Any] = {
        f: getattr(s, f) for f in ("temperature", "top_p", "max_tokens", "seed") if s.HasField(f)
    }
    if s.stop:
        out["stop"] = list(s.stop)
    return out


class GenerationService(pb_grpc.GenerationServicer):
    """Translates each call into a streamed API request on ``base_url`` (this process's server)."""

    def __init__(self, base_url: str, timeout_s: float = 600) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def Complete(  # noqa: N802 (the names the generated base class declares)
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Chunk]:
        body = {"model": request.model, "prompt": request.prompt, **sampling(request.sampling)}
        async for chunk in self._stream("/v1/completions", body, context, chat=False):
            yield chunk

    async def Chat(  # noqa: N802
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Chunk]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        body = {"model": request.model, "messages": messages, **sampling(request.sampling)}
        async for chunk in self._stream("/v1/chat/completions", body, context, chat=True):
            yield chunk

    async def _stream(
        self, path: str, body: dict[str, Any], context: grpc.aio.ServicerContext, chat: bool
    ) -> AsyncIterator[pb.Chunk]:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        headers = {"authorization": str(metadata.get("authorization", ""))}
        if "x-request-id" in metadata:
            headers["x-request-id"] = str(metadata["x-request-id"])
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with self.http.stream("POST", path, json=payload, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                await context.abort(
                    STATUS.get(response.status_code, grpc.StatusCode.INTERNAL), _message(response)
                )
            request_id = response.headers.get("x-request-id", "")
            usage: dict[str, int] | None = None
            finish = ""
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:  # an error after the stream began (the API's stream shape)
                    await context.abort(grpc.StatusCode.INTERNAL, str(event["error"].get("message")))
                usage = event.get("usage") or usage
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    finish = choice.get("finish_reason") or finish
                    if text:
                        yield pb.Chunk(text=text, request_id=request_id)
            last = pb.Chunk(finish_reason=finish, request_id=request_id)
            if usage:
                last.usage.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                last.usage.completion_tokens = int(usage.get("completion_tokens") or 0)
            yield last

    async def close(self) -> None:
        await self.http.aclose()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


async def start(host: str, port: int, http_url: str) -> tuple[grpc.aio.Server, GenerationService]:
    """Start the gRPC server on ``host:port`` in the running event loop."""
    server = grpc.aio.server()
    service = GenerationService(http_url)
    pb_grpc.add_GenerationServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"could not listen for gRPC on {host}:{port}")
    await server.start()
    return server, service
