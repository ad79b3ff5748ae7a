"""The OpenAI-compatible HTTP API (FastAPI): models, completions, chat, embeddings, images.

Clients written for OpenAI work unchanged: the same paths, bodies, SSE stream format (``data:``
chunks, the role in the first delta, ``finish_reason`` on the last, then ``data: [DONE]``) and
error body (``{"error": {"message", "type", "param", "code"}}``). ``model`` is a hub reference;
see ``pool.py`` for how aliases move without a restart. Every route sits behind the gateway
(``lamina.gateway.middleware``): keys, roles, limits, audit, metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from lamina.core.errors import LaminaError
from lamina.core.settings import Settings
from lamina.core.workspace import Workspace
from lamina.gateway.metrics import Metrics
from lamina.gateway.permissions import ADMIN_ONLY, ANY_KEY, ANYONE, OPERATORS, PermissionTable
from lamina.serving import generation
from lamina.serving.engine import Engine, TokenEvent
from lamina.serving.engine import Stream as EngineRequest
from lamina.serving.pool import EMBEDDING_MODEL, ModelPool
from lamina.serving.sampling import LOGPROB_FLOOR
from lamina.serving.schemas import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    NewKeyRequest,
)

log = logging.getLogger(__name__)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape: every error response of the API has this body."""

    error: ErrorDetail


ERROR_MEANINGS = {
    400: "invalid request (the message names the field)",
    401: "no valid API key",
    403: "the key's role may not call this route",
    404: "no such model or object",
    413: "request body too large",
    429: "rate limit, or the server is at capacity (see Retry-After)",
    503: "the engine or catalog is unavailable",
    504: "generation ran past the server's time limit",
}
KEYED = (400, 401, 403, 413, 429)  # what any route behind a key can answer


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route really returns (all in ``ErrorBody``)."""
    return {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in sorted(set(codes))}


GENERATION: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}, "description": "the answer, or "
          "with stream: true, server-sent events ending with data: [DONE]"},
    **errors(*KEYED, 404, 503, 504),
}  # fmt: skip


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(status: int, message: str, code: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers or None)


def create_app(
    ws: Workspace, settings: Settings | None = None, pool: ModelPool | None = None, *, gateway: bool = True
) -> FastAPI:
    """The app; ``gateway=False`` exists only for bench/serve.py to measure what the gateway costs."""
    from lamina.gateway.middleware import Gateway

    settings = settings or ws.settings
    server = settings.server
    pool = pool or ModelPool.from_settings(ws, server)
    metrics = Metrics()
    app = FastAPI(title="Lamina", version="1", summary="OpenAI-compatible API over the Lamina hub")
    app.state.pool, app.state.metrics, app.state.workspace = pool, metrics, ws

    @app.exception_handler(LaminaError)
    async def _lamina_error(request: Request, exc: LaminaError) -> JSONResponse:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        headers = {"Retry-After": "1"} if status == 429 else {}
        return error_response(status, message, exc.code, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid"))
        )
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON (or not UTF-8)"
        return JSONResponse(error_body(400, message, "invalid_request", where or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # Starlette could not parse the body (bad UTF-8, bad JSON)
            return error_response(400, f"the request body could not be read: {exc.detail}", "invalid_request")
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, str(exc.detail), codes.get(exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__}", "internal_error")

    # -- health and models -------------------------------------------------------------------------
    @app.get("/health", openapi_extra=ANYONE, responses=errors(413))
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", openapi_extra=ANYONE, responses=errors(413, 503))
    async def ready() -> JSONResponse:
        try:
            await asyncio.to_thread(ws.catalog.counts)
        except LaminaError as exc:
            return error_response(503, f"not ready: {exc.message}", "not_ready")
        engines = [
            {"model": e.version.ref, "version": e.version.id, "precision": e.precision, **e.engine.describe()}
            for e in pool.engines()
        ]
        return JSONResponse({"status": "ready", "loaded": [e["model"] for e in engines], "engines": engines})

    @app.get("/v1/models", openapi_extra=ANY_KEY, responses=errors(*KEYED))
    async def models() -> dict[str, Any]:
        rows = await asyncio.to_thread(pool.listing)
        return {
            "object": "list",
            "data": [
                {
                    "id": r["id"],
                    "object": "model",
                    "created": r["created"],
                    "owned_by": "lamina",
                    "family": r["family"],
                }
                for r in rows
            ],
        }

    @app.get(
        "/metrics", openapi_extra=OPERATORS, response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}, **errors(*KEYED)},
    )  # fmt: skip
    async def prometheus() -> PlainTextResponse:
        metrics.observe_engines(pool)
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    # -- administration ------------------------------------------------------------------------------
    @app.get("/admin/keys", openapi_extra=ADMIN_ONLY, responses=errors(*KEYED))
    async def admin_keys() -> dict[str, Any]:
        from lamina.gateway.keys import list_keys

        return {"object": "list", "data": await asyncio.to_thread(list_keys, ws)}

    @app.post("/admin/keys", status_code=201, openapi_extra=ADMIN_ONLY, responses=errors(*KEYED))
    async def admin_create_key(body: NewKeyRequest) -> dict[str, Any]:
        from lamina.gateway.keys import create_key

        made = await asyncio.to_thread(create_key, ws, body.name, body.role, body.limits)
        return {"id": made.key.id, "name": made.key.name, "role": made.key.role, "key": made.secret}

    @app.delete("/admin/keys/{key_id}", openapi_extra=ADMIN_ONLY, responses=errors(*KEYED, 404))
    async def admin_revoke_key(key_id: str) -> dict[str, Any]:
        from lamina.gateway.keys import revoke_key

        row = await asyncio.to_thread(revoke_key, ws, key_id)
        return {"id": row.id, "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}

    @app.get("/admin/audit", openapi_extra=OPERATORS, responses=errors(*KEYED))
    async def admin_audit(limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        from lamina.gateway.audit import recent

        return {"object": "list", "data": await asyncio.to_thread(recent, ws, limit)}

    # -- text ------------------------------------------------------------------------------------------
    @app.post("/v1/completions", response_model=None, openapi_extra=ANY_KEY, responses=GENERATION)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if body.echo or body.suffix:
            return error_response(400, "echo and suffix are not supported", "unsupported_parameter")
        engine, version = await asyncio.to_thread(pool.engine, body.model)
        jobs = [
            (i * body.n + j, _submit(engine, p, body.sampling(16, body.logprobs, j), request))
            for i, p in enumerate(prompts)
            for j in range(body.n)
        ]
        _note(request, version.id)
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"
        deadline = _deadline(server)
        if body.stream:
            await generation.started(jobs, request, deadline)
            chunks = _stream_completion(jobs, rid, created, body, request, engine, metrics, deadline)
            return _sse(chunks, jobs)
        results = await generation.collect(jobs, request, deadline)
        choices = []
        for index, events in zip([i for i, _ in jobs], results, strict=True):
            text = "".join(e.text for e in events)
            choices.append(
                {
                    "index": index,
                    "text": text,
                    "logprobs": _completion_logprobs(engine, events) if body.logprobs is not None else None,
                    "finish_reason": _finish(events),
                }
            )
        usage = _usage(request, [j for _, j in jobs], metrics)
        return {
            "id": rid, "object": "text_completion", "created": created, "model": body.model,
            "system_fingerprint": version.id, "choices": choices, "usage": usage,
        }  # fmt: skip

    @app.post("/v1/chat/completions", response_model=None, openapi_extra=ANY_KEY, responses=GENERATION)
    async def chat(body: ChatRequest, request: Request) -> Any:
        engine, version = await asyncio.to_thread(pool.engine, body.model)
        tokenizer = engine.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return error_response(
                400, f"{body.model} has no chat template; use /v1/completions", "no_chat_template"
            )
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        top = (body.top_logprobs or 0) if body.logprobs else None
        body_max = body.max_completion_tokens or body.max_tokens
        if body_max:
            body = body.model_copy(update={"max_tokens": body_max})
        jobs = [(j, _submit(engine, prompt, body.sampling(256, top, j), request)) for j in range(body.n)]
        _note(request, version.id)
        created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        deadline = _deadline(server)
        if body.stream:
            await generation.started(jobs, request, deadline)
            return _sse(_stream_chat(jobs, rid, created, body, request, engine, metrics, deadline), jobs)
        results = await generation.collect(jobs, request, deadline)
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": "".join(e.text for e in events)},
                "logprobs": _chat_logprobs(engine, events) if body.logprobs else None,
                "finish_reason": _finish(events),
            }
            for (index, _), events in zip(jobs, results, strict=True)
        ]
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": body.model,
            "system_fingerprint": version.id, "choices": choices,
            "usage": _usage(request, [j for _, j in jobs], metrics),
        }  # fmt: skip

    # -- embeddings and images ---------------------------------------------------------------------
    @app.post("/v1/embeddings", openapi_extra=ANY_KEY, responses=errors(*KEYED, 404, 503))
    async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        if body.model not in (EMBEDDING_MODEL, f"sentence-transformers/{EMBEDDING_MODEL}"):
            return error_response(  # type: ignore[return-value]
                404,
                f"the embedding model {body.model!r} does not exist; use {EMBEDDING_MODEL}",
                "model_not_found",
            )
        if body.dimensions not in (None, 384):
            return error_response(400, "all-MiniLM-L6-v2 gives 384 dimensions", "invalid_dimensions")  # type: ignore[return-value]
        texts = [body.input] if isinstance(body.input, str) else body.input
        if any(not t for t in texts):
            return error_response(400, "input strings must not be empty", "invalid_input")  # type: ignore[return-value]
        from lamina.models.text_encoder import embed, load_encoder

        vectors = await asyncio.to_thread(embed, texts)
        tokens = sum(len(load_encoder().tokenizer(t)["input_ids"]) for t in texts)
        request.state.usage = (tokens, 0)
        data = []
        for i, vector in enumerate(vectors):
            value: Any = vector.tolist()
            if body.encoding_format == "base64":
                value = base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/v1/images/generations", openapi_extra=ANY_KEY, responses=errors(*KEYED, 404, 503))
    async def images(body: ImageRequest, request: Request) -> dict[str, Any]:
        if body.response_format == "url":
            return error_response(
                400, "response_format 'url' is not supported; use b64_json", "unsupported_format"
            )  # type: ignore[return-value]
        gen, version = await asyncio.to_thread(pool.image, body.model)
        _note(request, version.id)
        size = gen.info.image_size
        if body.size not in (None, "auto", f"{size}x{size}"):
            return error_response(400, f"{body.model} makes {size}x{size} images", "invalid_size")  # type: ignore[return-value]
        prompt, class_id = _image_condition(gen, body.prompt)
        from lamina.data.media import encode_png
        from lamina.models.grid import to_uint8

        images = await asyncio.to_thread(
            gen.generate, body.n, seed=body.seed, prompt=prompt, class_id=class_id, steps=body.steps,
            guidance=body.guidance,
        )  # fmt: skip
        data = [
            {"b64_json": base64.b64encode(encode_png(p)).decode(), "revised_prompt": body.prompt}
            for p in to_uint8(images)
        ]
        return {"created": int(time.time()), "data": data}

    if gateway:
        from lamina.gateway.audit import AuditWriter

        app.state.audit = AuditWriter(ws)
        docs = docs_paths(app)
        permissions = PermissionTable.from_routes(app.routes, docs_paths=docs, public_docs=server.public_docs)
        app.state.permissions = permissions
        app.add_middleware(
            Gateway, settings=settings, workspace=ws, metrics=metrics, audit=app.state.audit,
            permissions=permissions, docs_paths=docs,
        )  # fmt: skip
    return app


def docs_paths(app: FastAPI) -> set[str]:
    """The paths FastAPI serves its docs and schema at (they need a key unless public_docs)."""
    paths = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    return {p for p in paths if p}


def shutdown(app: FastAPI) -> None:
    """Finish what is in flight on the way out: audit rows are flushed, engines stopped."""
    audit = getattr(app.state, "audit", None)
    if audit is not None:
        audit.close()
    app.state.pool.close()


# -- helpers ---------------------------------------------------------------------------------------------
def _image_condition(gen: Any, prompt: str) -> tuple[str | None, int | None]:
    """Text models take the prompt; class models take a class named (or numbered) by the prompt."""
    info = gen.info
    if info.condition == "text":
        return prompt or None, None
    if info.condition == "class":
        wanted = prompt.strip().lower().removeprefix("a photo of a ").removeprefix("a ").strip()
        for i, name in enumerate(info.class_names):
            if wanted in (name.lower(), str(i)):
                return None, i
        if wanted:
            from lamina.core.errors import ConfigError

            raise ConfigError(
                f"this model draws classes, and {prompt!r} names none of them",
                hint="use one of: " + ", ".join(info.class_names),
            )
        return None, None
    return None, None


def _submit(engine: Engine, prompt: str, params: Any, request: Request) -> EngineRequest:
    rid = getattr(request.state, "request_id", "req")
    return engine.submit(prompt, params, request_id=rid, loop=asyncio.get_running_loop())


def _note(request: Request, version_id: str) -> None:
    request.state.model_version = version_id


def _finish(events: list[TokenEvent]) -> str:
    """OpenAI's finish reason for a choice's last event; an engine failure mid-stream raises."""
    reason = events[-1].finish_reason if events else "stop"
    if reason == "error":
        raise generation.GenerationFailed(
            "the engine failed while generating", hint="retry; see the server log"
        )
    return "length" if reason == "length" else "stop"


def _usage(request: Request, jobs: list[EngineRequest], metrics: Metrics) -> dict[str, int]:
    prompt = sum(len(j.prompt_ids) for j in jobs[:1]) if jobs else 0
    completion = sum(len(j.generated) for j in jobs)
    request.state.usage = (prompt, completion)
    request.state.response_text = "\n".join(j.text for j in jobs)
    for job in jobs:
        metrics.observe_generation(job)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _token_text(engine: Engine, token: int | None) -> str:
    return "" if token is None else engine.tokenizer.decode([token])


def _completion_logprobs(engine: Engine, events: list[TokenEvent]) -> dict[str, Any]:
    tokens = [e for e in events if e.token_id is not None]
    offsets, at = [], 0
    for e in tokens:
        offsets.append(at)
        at += len(_token_text(engine, e.token_id))
    return {
        "tokens": [_token_text(engine, e.token_id) for e in tokens],
        "token_logprobs": [_finite(e.logprob) for e in tokens],
        "top_logprobs": [{_token_text(engine, t): _finite(lp) for t, lp in e.top} for e in tokens],
        "text_offset": offsets,
    }


def _finite(logprob: float | None) -> float | None:
    """JSON has no -inf or NaN: report them as ``LOGPROB_FLOOR``."""
    return logprob if logprob is None or math.isfinite(logprob) else LOGPROB_FLOOR


def _top_entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": _finite(logprob), "bytes": list(text.encode())}


def _chat_logprobs(engine: Engine, events: list[TokenEvent]) -> dict[str, Any]:
    content = []
    for e in events:
        if e.token_id is None:
            continue
        text = _token_text(engine, e.token_id)
        content.append(
            {
                "token": text, "logprob": _finite(e.logprob), "bytes": list(text.encode()),
                "top_logprobs": [_top_entry(_token_text(engine, t), lp) for t, lp in e.top],
            }
        )  # fmt: skip
    return {"content": content}


def _deadline(server: Any) -> float:
    return asyncio.get_running_loop().time() + server.request_timeout_s


def _sse(chunks: AsyncIterator[list[dict[str, Any]]], jobs: generation.Jobs) -> StreamingResponse:
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


async def _stream_completion(
    jobs: list[tuple[int, EngineRequest]], rid: str, created: int, body: CompletionRequest, request: Request,
    engine: Engine, metrics: Metrics, deadline: float,
) -> AsyncIterator[list[dict[str, Any]]]:  # fmt: skip
    base = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
    async for batch in generation.batches(jobs, deadline):
        group = []
        for index, event in batch:
            if not event.text and event.finish_reason is None:
                continue
            logprobs = _completion_logprobs(engine, [event]) if body.logprobs is not None else None
            finish = _finish([event]) if event.finish_reason is not None else None
            choice = {"index": index, "text": event.text, "logprobs": logprobs, "finish_reason": finish}
            group.append({**base, "choices": [choice]})
        yield group
    usage = _usage(request, [j for _, j in jobs], metrics)
    if body.include_usage:
        yield [{**base, "choices": [], "usage": usage}]


async def _stream_chat(
    jobs: list[tuple[int, EngineRequest]], rid: str, created: int, body: ChatRequest, request: Request,
    engine: Engine, metrics: Metrics, deadline: float,
) -> AsyncIterator[list[dict[str, Any]]]:  # fmt: skip
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model}
    yield [
        {
            **base,
            "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
        for i, _ in jobs
    ]
    async for batch in generation.batches(jobs, deadline):
        group = []
        for index, event in batch:
            logprobs = _chat_logprobs(engine, [event]) if body.logprobs else None
            if event.text or (logprobs and logprobs["content"]):
                delta = {"content": event.text}
                choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
                group.append({**base, "choices": [choice]})
            if event.finish_reason is not None:
                finish = _finish([event])
                group.append({**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]})
        yield group
    usage = _usage(request, [j for _, j in jobs], metrics)
    if body.include_usage:
        yield [{**base, "choices": [], "usage": usage}]
