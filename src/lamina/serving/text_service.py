"""Completions and chat: an OpenAI request → engine jobs → an OpenAI answer (or its stream).

The logic behind ``POST /v1/completions`` and ``POST /v1/chat/completions``; the routes only call
it. What it adds to the engine: prompts × ``n`` as jobs, ``echo`` with prompt log-probabilities,
chat templating, structured output and tool calls (``grammar``), usage, and the answer shapes
(``shaping``). How a job ends (time limit, shed, client gone) is ``generation``'s concern.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from lamina.gateway.metrics import Metrics
from lamina.serving import generation, railing, shaping
from lamina.serving.engine import Stream, encode
from lamina.serving.experiments import assign as assign_arm
from lamina.serving.experiments import parse as parse_experiments
from lamina.serving.grammar import GrammarError, GrammarSpec, response_format_spec, tool_call_schema
from lamina.serving.grounding import Grounder, Grounding, extractive_text
from lamina.serving.interfaces import TextEngine
from lamina.serving.pool import ModelPool
from lamina.serving.protocol import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    UnsupportedParameter,
)


@dataclass
class ToolMode:
    """How a chat request's tools shape the answer."""

    forced: bool  # the grammar makes the model call a tool (tool_choice required, or named)
    parse: bool  # read the answer as tool calls when it is one (tool_choice auto)


class TextService:
    def __init__(self, pool: ModelPool, metrics: Metrics, server: Any, rails: Any = None) -> None:
        self.pool, self.metrics, self.server = pool, metrics, server
        self.rails = rails  # lamina.guardrails.policy.Policies, or None when no rails are configured
        self.grounder = Grounder(pool.ws)
        self._lookups: dict[str, asyncio.Future[tuple[TextEngine, Any]]] = {}
        self.experiments = parse_experiments(getattr(server, "experiments", None) or [])  # A/B splits

    def _arm(self, body: Any, request: Request) -> Any:
        """The request with its model replaced by its A/B arm's version, when an experiment covers it."""
        if not self.experiments:
            return body
        key = getattr(request.state, "key", None) or {}
        rid = str(getattr(request.state, "request_id", "") or "")
        ref, arm = assign_arm(self.experiments, body.model, request.url.path, key.get("id"), rid)
        if arm is None:
            return body
        request.state.experiment = arm
        return body.model_copy(update={"model": ref})

    # -- completions ---------------------------------------------------------------------------------
    async def complete(self, body: CompletionRequest, request: Request) -> Any:
        body.check_supported()
        body = self._arm(body, request)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        guard = railing.guard_for(self.rails, request, body.model)
        railing.refuse_logprobs(guard, body.logprobs is not None)
        prompts = await railing.check_input(guard, list(prompts), request, body.model)
        engine, version = await self._engine(body.model)
        only_prompt = body.max_tokens == 0  # echo, scoring the prompt alone
        echo_logprobs = body.logprobs if body.echo and body.logprobs is not None else None
        jobs = []
        for i, prompt in enumerate(prompts):
            for j in range(body.n):
                params = body.sampling(16, body.logprobs, j).model_copy(
                    update={"prompt_logprobs": echo_logprobs, **({"max_tokens": 1} if only_prompt else {})}
                )
                jobs.append((i * body.n + j, _submit(engine, prompt, params, request)))
        request.state.model_version = version.id
        created, rid, deadline = int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}", self._deadline()
        echoed = {index: prompts[index // body.n] if body.echo else "" for index, _ in jobs}
        if body.stream:
            await generation.started(jobs, request, deadline, engine.retry_after)
            streams = railing.GuardedStreams(guard, request, body.model, jobs=jobs)
            chunks = self._completion_chunks(
                jobs, rid, created, body, request, engine, echoed, deadline, streams
            )
            return shaping.sse(chunks, jobs)
        results = await generation.collect(jobs, request, deadline, engine.retry_after)
        choices: list[dict[str, Any]] = []
        for (index, _), events in zip(jobs, results, strict=True):
            made = [] if only_prompt else events
            scored = shaping.generated(made)
            if echo_logprobs is not None:
                scored = (events[0].prompt or []) + scored
            text, blocked = await railing.check_output(
                guard, "" if only_prompt else "".join(e.text for e in events), request, body.model
            )
            choices.append(
                {
                    "index": index,
                    "text": echoed[index] + text,
                    "logprobs": None
                    if body.logprobs is None
                    else shaping.completion_logprobs(engine.tokenizer, scored),
                    "finish_reason": "content_filter"
                    if blocked
                    else "length"
                    if only_prompt
                    else shaping.finish_reason(events),
                }
            )
        usage = self._usage(request, jobs, body.n, 0 if only_prompt else None)
        if guard is not None and guard.output:
            request.state.response_text = "\n".join(c["text"] for c in choices)
        return Completion(
            id=rid, created=created, model=body.model, system_fingerprint=version.id, choices=choices,
            usage=usage,
        ).model_dump()  # fmt: skip

    async def _completion_chunks(
        self, jobs: generation.Jobs, rid: str, created: int, body: CompletionRequest, request: Request,
        engine: TextEngine, echoed: dict[int, str], deadline: float, streams: railing.GuardedStreams,
    ) -> AsyncIterator[list[dict[str, Any]]]:  # fmt: skip
        base = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
        only_prompt = body.max_tokens == 0
        first = {index: True for index, _ in jobs}
        sent: dict[int, list[str]] = {index: [] for index, _ in jobs}
        async for batch in generation.batches(jobs, deadline):
            group = []
            events = batch if body.logprobs is not None else shaping.coalesce(batch)
            released = await streams.release(events, only_prompt)
            for (index, event), text in zip(events, released, strict=True):
                if text is None:  # blocked earlier: nothing more from this choice
                    continue
                sent[index].append(text)
                scored = [] if only_prompt else shaping.generated([event])
                if first[index]:
                    first[index] = False
                    text = echoed[index] + text
                    if body.echo and body.logprobs is not None:
                        scored = (event.prompt or []) + scored
                if not text and event.finish_reason is None and not scored and not streams.blocked(index):
                    continue
                logprobs = (
                    None if body.logprobs is None else shaping.completion_logprobs(engine.tokenizer, scored)
                )
                finish = None
                if event.finish_reason is not None or streams.blocked(index):
                    finish = "length" if only_prompt else shaping.finish_reason([event])
                    finish = "content_filter" if streams.blocked(index) else finish
                    streams.close(index)
                choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
                group.append({**base, "choices": [choice]})
            yield group
        usage = self._usage(request, jobs, body.n, 0 if only_prompt else None)
        if streams.active:
            request.state.response_text = "\n".join("".join(parts) for parts in sent.values())
        if body.include_usage:
            yield [{**base, "choices": [], "usage": usage}]

    # -- chat ----------------------------------------------------------------------------------------
    async def chat(self, body: ChatRequest, request: Request) -> Any:
        body.check_supported()
        body = self._arm(body, request)
        if body.server_tools is not None:
            from lamina.serving.tool_loop import run_tools

            return await run_tools(self, body, request)
        if body.thread is not None:
            from lamina.serving.conversation import chat_in_thread

            return await chat_in_thread(self, body, request)
        guard = railing.guard_for(self.rails, request, body.model)
        railing.refuse_logprobs(guard, bool(body.logprobs))
        if body.rag is None and guard is not None and guard.input and self.rails.overlap_prefill:
            # the rails that may rewrite a message (redactors) run first; those that only judge it
            # (the injection classifier: the slow one) run beside the model's prefill. Nothing reaches
            # the client before they pass; a block cancels the early start
            rewriting, judging = guard.input_parts()
            asked = body
            body = await self._railed_messages(guard, body, request, rewriting)
            pending = asyncio.ensure_future(self._railed_messages(guard, asked, request, judging))
            return await self._chat(body, request, guard, pending)
        body = await self._railed_messages(guard, body, request)
        return await self._chat(body, request, guard)

    async def _chat(
        self, body: ChatRequest, request: Request, guard: Any, pending: asyncio.Future[Any] | None = None
    ) -> Any:
        """The answer to a chat whose messages passed the input rails, or are still being judged by
        ``pending`` (rails that block or flag, never rewrite: only its outcome matters)."""
        async with railing.speculating(pending):  # an error before the model starts: a block wins
            prepared = await self._prepare_chat(body, request, guard)
            if not isinstance(prepared, tuple):
                return prepared  # answered without the model (RAG found nothing, or extractive)
            body, engine, version, prompt, spec, tools, grounding, extra = prepared
            jobs = self._submit_chat(engine, prompt, body, spec, request)
        if pending is not None:
            try:
                await pending  # raises when a judge blocked
            except BaseException:
                generation.cancel(jobs)
                raise
        request.state.model_version = version.id
        created, rid, deadline = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}", self._deadline()
        sources = shown_sources(grounding)
        if body.stream:
            await generation.started(jobs, request, deadline, engine.retry_after)
            streams = railing.GuardedStreams(guard, request, body.model, sources, jobs)
            return shaping.sse(
                self._chat_chunks(jobs, rid, created, body, request, engine, tools, deadline, extra, streams),
                jobs,
            )
        return await self._chat_answer(jobs, body, request, engine, version, tools, extra, sources, guard,
                                       created, rid, deadline)  # fmt: skip

    async def _prepare_chat(self, body: ChatRequest, request: Request, guard: Any) -> Any:
        """(body, engine, version, prompt, grammar, tools, grounding, extra) for the model; or the answer
        when none is needed (RAG found nothing to say, or answers extractively)."""
        extra: dict[str, Any] = {}  # the rag extension's citations and grounding, when asked for
        grounding = None
        if body.rag is not None:
            principal = getattr(request.state, "key", None)
            grounding = await asyncio.to_thread(self.grounder.ground, body, principal)
            request.state.citations = _cited(grounding.citations)
            if grounding.final:
                extra = {"citations": grounding.citations, "rag": grounding.info}
                return await self._answer_without_model(body, request, grounding, extra, guard)
        engine, version = await self._engine(body.model)
        tokenizer = engine.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise UnsupportedParameter("messages", f"{body.model} has no chat template; use /v1/completions")
        if grounding is not None:
            body = body.model_copy(update={"messages": fit_sources(grounding, body, engine)})
            extra = {"citations": grounding.citations, "rag": grounding.info}
            request.state.citations = _cited(grounding.citations)
        spec, tools = chat_grammar(body)
        prompt = render_chat(tokenizer, body)
        limit = body.max_completion_tokens or body.max_tokens
        if limit:
            body = body.model_copy(update={"max_tokens": limit})
        return body, engine, version, prompt, spec, tools, grounding, extra

    @staticmethod
    def _submit_chat(
        engine: TextEngine, prompt: str, body: ChatRequest, spec: GrammarSpec | None, request: Request
    ) -> generation.Jobs:
        grammar = spec.encode() if spec else None
        top = (body.top_logprobs or 0) if body.logprobs else None
        return [
            (j, _submit(engine, prompt, body.sampling(256, top, j).model_copy(update={"grammar": grammar}),
                        request))
            for j in range(body.n)
        ]  # fmt: skip

    async def _chat_answer(
        self, jobs: generation.Jobs, body: ChatRequest, request: Request, engine: TextEngine, version: Any,
        tools: ToolMode, extra: dict[str, Any], sources: list[str] | None, guard: Any, created: int, rid: str,
        deadline: float,
    ) -> Any:  # fmt: skip
        """The whole (non-streamed) answer: every choice through the output rails."""
        results = await generation.collect(jobs, request, deadline, engine.retry_after)
        choices: list[dict[str, Any]] = []
        for (index, _), events in zip(jobs, results, strict=True):
            text, blocked = await railing.check_output(
                guard, "".join(e.text for e in events), request, body.model, sources
            )
            finish = "content_filter" if blocked else shaping.finish_reason(events)
            calls = shaping.tool_calls_from(text) if tools.parse and not blocked else None
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message, finish = {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
            choices.append(
                {
                    "index": index, "message": message, "finish_reason": finish,
                    "logprobs": shaping.chat_logprobs(engine.tokenizer, events) if body.logprobs else None,
                }
            )  # fmt: skip
        usage = self._usage(request, jobs, body.n)
        if guard is not None and guard.output:
            request.state.response_text = "\n".join(c["message"]["content"] or "" for c in choices)
        return ChatCompletion(
            id=rid, created=created, model=body.model, system_fingerprint=version.id, choices=choices,
            usage=usage,
        ).model_dump(exclude_unset=False) | extra  # fmt: skip

    async def _railed_messages(
        self, guard: Any, body: ChatRequest, request: Request, only: list[Any] | None = None
    ) -> ChatRequest:
        """The request with every message but the assistant's through the input rails (or ``only``
        these; a blocked one raises): what users send, and what tools and earlier turns put in the
        conversation."""
        if guard is None or not guard.input:
            return body
        checked = [i for i, m in enumerate(body.messages) if m.role != "assistant" and m.text()]
        texts = await railing.check_input(
            guard, [body.messages[i].text() for i in checked], request, body.model, only
        )
        messages = list(body.messages)
        for i, text in zip(checked, texts, strict=True):
            if text != messages[i].text():
                messages[i] = messages[i].model_copy(update={"content": text})
        if messages == list(body.messages):
            return body  # nothing redacted: no copy
        return body.model_copy(update={"messages": messages})

    async def _answer_without_model(
        self, body: ChatRequest, request: Request, grounding: Grounding, extra: dict[str, Any], guard: Any
    ) -> Any:
        """An extractive answer, or "not found": the same shapes as a generated one, no model call."""
        text, blocked = await railing.check_output(
            guard, extractive_text(grounding), request, body.model, shown_sources(grounding)
        )
        finish = "content_filter" if blocked else "stop"
        request.state.usage, request.state.response_text = (0, 0), text
        created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not body.stream:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                for i in range(body.n)
            ]
            return (
                ChatCompletion(
                    id=rid, created=created, model=body.model, choices=choices, usage=usage
                ).model_dump()
                | extra
            )

        async def chunks() -> AsyncIterator[list[dict[str, Any]]]:
            base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model}
            group: list[dict[str, Any]] = []
            for i in range(body.n):
                for delta, end in (({"role": "assistant", "content": ""}, None), ({"content": text}, None),
                                   ({}, finish)):  # fmt: skip
                    chunk = {**base, "choices": [{"index": i, "delta": delta, "finish_reason": end}]}
                    group.append(chunk | extra if not group else chunk)
            if body.include_usage:
                group.append({**base, "choices": [], "usage": usage})
            yield group

        return shaping.sse(chunks(), [])

    async def _chat_chunks(
        self, jobs: generation.Jobs, rid: str, created: int, body: ChatRequest, request: Request,
        engine: TextEngine, tools: ToolMode, deadline: float, extra: dict[str, Any],
        streams: railing.GuardedStreams,
    ) -> AsyncIterator[list[dict[str, Any]]]:  # fmt: skip
        """Content deltas as tokens come; a forced tool call is sent whole once it is complete
        (one ``tool_calls`` delta per call, as OpenAI's clients accumulate them). ``extra`` (the rag
        extension's citations) rides on the first chunk, before any content."""
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model}
        yield [
            {
                **base,
                "choices": [
                    {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
                **(extra if i == jobs[0][0] else {}),
            }
            for i, _ in jobs
        ]
        held: dict[int, list[str]] = {index: [] for index, _ in jobs}
        sent: dict[int, list[str]] = {index: [] for index, _ in jobs}
        async for batch in generation.batches(jobs, deadline):
            group = []
            events = batch if body.logprobs else shaping.coalesce(batch)
            # a forced tool call is judged whole at its end, not streamed through the rails
            released = [e.text for _, e in events] if tools.forced else await streams.release(events)
            for (index, event), text in zip(events, released, strict=True):
                if text is None:  # blocked earlier: nothing more from this choice
                    continue
                logprobs = shaping.chat_logprobs(engine.tokenizer, [event]) if body.logprobs else None
                if tools.forced:
                    held[index].append(text)
                elif text or (logprobs and logprobs["content"]):
                    sent[index].append(text)
                    content = {"content": text}
                    choice = {"index": index, "delta": content, "logprobs": logprobs, "finish_reason": None}
                    group.append({**base, "choices": [choice]})
                if streams.blocked(index):
                    group.append(
                        {
                            **base,
                            "choices": [{"index": index, "delta": {}, "finish_reason": "content_filter"}],
                        }
                    )
                    streams.close(index)
                elif event.finish_reason is not None:
                    finish = shaping.finish_reason([event])
                    if tools.forced:
                        text, blocked = await railing.check_output(
                            streams.guard, "".join(held[index]), request, body.model
                        )
                        finish = "content_filter" if blocked else finish
                        calls = shaping.tool_calls_from(text) if not blocked else None
                        if calls:
                            finish = "tool_calls"
                            deltas = [{"index": k, **call} for k, call in enumerate(calls)]
                            delta: dict[str, Any] = {"tool_calls": deltas}
                        else:  # cut short (length): what was written, as content
                            delta = {"content": text}
                        group.append(
                            {**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
                        )
                    group.append(
                        {**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}
                    )
            yield group
        usage = self._usage(request, jobs, body.n)
        if streams.active:
            request.state.response_text = "\n".join("".join(parts) for parts in sent.values())
        if body.include_usage:
            yield [{**base, "choices": [], "usage": usage}]

    # -- shared --------------------------------------------------------------------------------------
    async def _engine(self, ref: str) -> tuple[TextEngine, Any]:
        """The engine for ``ref``: at once when loaded and freshly resolved, else from one lookup in
        a thread that requests arriving meanwhile share (not one catalog query each, all at once,
        every ``REF_TTL_S``)."""
        found = self.pool.cached_engine(ref)
        if found is not None:
            return found
        pending = self._lookups.get(ref)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self.pool.engine, ref))
            self._lookups[ref] = pending
            pending.add_done_callback(lambda done: (self._lookups.pop(ref, None), done.exception()))
        return await asyncio.shield(pending)  # a waiter that leaves does not cancel the others' lookup

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.server.request_timeout_s

    def _usage(
        self, request: Request, jobs: generation.Jobs, n: int, completion: int | None = None
    ) -> dict[str, int]:
        """Usage of the whole request (each distinct prompt counted once); records it for the
        gateway (audit, token budgets) and the metrics."""
        streams = [job for _, job in jobs]
        prompt = sum(len(job.prompt_ids) for index, job in jobs if index % n == 0)
        made = sum(len(job.generated) for job in streams) if completion is None else completion
        request.state.usage = (prompt, made)
        request.state.response_text = "\n".join(job.text for job in streams)
        confidences = [c for c in (job.confidence for job in streams) if c is not None]
        if confidences:  # the least confident choice speaks for the request (audit, review queue)
            request.state.confidence = min(confidences)
        for job in streams:
            self.metrics.observe_generation(job)
        return {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made}


def shown_sources(grounding: Grounding | None) -> list[str]:
    """The source texts a grounded answer was written from (what the grounding rail checks against)."""
    if grounding is None:
        return []
    return [c["text"][: c.get("shown_chars", len(c["text"]))] for c in grounding.citations]


def _submit(engine: TextEngine, prompt: str, params: Any, request: Request) -> Stream:
    rid = getattr(request.state, "request_id", "req")
    return engine.submit(prompt, params, request_id=rid, loop=asyncio.get_running_loop())


def chat_grammar(body: ChatRequest) -> tuple[GrammarSpec | None, ToolMode]:
    """The grammar a chat request asks for (forced tool calls, else ``response_format``)."""
    choice = body.tool_choice
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    if choice not in (None, "none") and not tools:
        raise UnsupportedParameter("tool_choice", "tool_choice needs tools")
    if tools and choice == "required":
        parallel = body.parallel_tool_calls is not False
        return GrammarSpec("json_schema", tool_call_schema(tools, parallel)), ToolMode(True, True)
    if tools and isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if choice.get("type") != "function" or not chosen:
            raise GrammarError(
                f"tool_choice names the function {name!r}, which is not among the tools",
                hint="name one of: " + ", ".join(t["function"]["name"] for t in tools),
            )
        return GrammarSpec("json_schema", tool_call_schema(chosen, parallel=False)), ToolMode(True, True)
    return response_format_spec(body.response_format), ToolMode(False, bool(tools) and choice != "none")


def context_budget(body: ChatRequest, engine: TextEngine) -> int:
    """Prompt tokens a chat may use: the context less room for the answer."""
    return engine.context - min(body.max_completion_tokens or body.max_tokens or 256, engine.context // 2)


def prompt_tokens(engine: TextEngine, body: ChatRequest, messages: list[Any]) -> int:
    prompt = render_chat(engine.tokenizer, body.model_copy(update={"messages": messages}))
    return len(encode(engine.tokenizer, prompt))


def fit_sources(grounding: Grounding, body: ChatRequest, engine: TextEngine) -> list[Any]:
    """The rag prompt fitted to the engine's context, leaving room for the answer."""
    return grounding.fit(
        body, lambda messages: prompt_tokens(engine, body, messages), context_budget(body, engine)
    )


def render_chat(tokenizer: Any, body: ChatRequest) -> str:
    """The prompt for ``body.messages`` by the model's chat template (tools passed to templates that
    use them). An assistant's earlier tool calls are written as the JSON it would have produced."""
    import json

    messages = []
    for m in body.messages:
        content = m.text()
        if m.role == "assistant" and m.tool_calls and not content:
            calls = [
                {
                    "name": c["function"]["name"],
                    "arguments": json.loads(c["function"].get("arguments") or "{}"),
                }
                for c in m.tool_calls
                if c.get("function")
            ]
            content = json.dumps(calls[0] if len(calls) == 1 else calls, separators=(",", ":"))
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []] or None
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)


def _cited(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the audit record keeps of the sources an answer used (for `lamina explain`): where each
    came from and its score, not its text."""
    return [{k: v for k, v in c.items() if k not in ("text", "shown_chars")} for c in citations]
