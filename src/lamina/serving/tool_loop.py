"""The ``server_tools`` extension of chat: Lamina runs the tools the model calls, in a loop.

Each step is an ordinary chat completion with the tools' specs: the first under the request's own
``tool_choice`` (``required`` forces a call, decoded under the tools' JSON grammar so it always
parses), later ones under ``auto``, and the last one (at ``max_steps``) under ``none`` so the loop
always ends in words. Calls run in worker threads as the caller (``lamina.rag.tools``); every call
and result is returned in ``tool_trace`` and the usage is the sum over the steps.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import Request

from lamina.rag import tools as registry
from lamina.serving.grounding import reader_groups
from lamina.serving.protocol import ChatMessage, ChatRequest, FunctionSpec, Tool, UnsupportedParameter

if TYPE_CHECKING:
    from lamina.serving.text_service import TextService


async def run_tools(service: TextService, body: ChatRequest, request: Request) -> dict[str, Any]:
    options = body.server_tools
    assert options is not None
    if body.stream:
        raise UnsupportedParameter("stream", "server_tools run to completion; ask without stream")
    if body.tools:
        raise UnsupportedParameter("tools", "give your own tools or server_tools, not both")
    if body.rag is not None:
        raise UnsupportedParameter("rag", "with server_tools, retrieval is the retrieve tool")
    if body.n != 1:
        raise UnsupportedParameter("n", "server_tools run one conversation (n = 1)")
    context = registry.ToolContext(
        service.pool.ws, groups=reader_groups(getattr(request.state, "key", None)),
        collection=options.collection, dataset=options.dataset,
        allowed_hosts=list(getattr(service.server, "tool_http_allow", []) or []),
    )  # fmt: skip
    tools = registry.resolve(options.names, context)
    specs = [
        Tool(
            type="function",
            function=FunctionSpec(name=t.name, description=t.description, parameters=t.parameters),
        )
        for t in tools
    ]
    messages, trace = list(body.messages), list[dict[str, Any]]()
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for step in range(options.max_steps + 1):
        choice: Any = body.tool_choice if step == 0 and body.tool_choice is not None else "auto"
        if step == options.max_steps:
            choice = "none"  # the last step answers in words
        step_body = body.model_copy(
            update={"messages": messages, "tools": specs, "tool_choice": choice, "server_tools": None}
        )
        result = await service.chat(step_body, request)
        for key in totals:
            totals[key] += result["usage"][key]
        message = result["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        if not calls:
            request.state.usage = (totals["prompt_tokens"], totals["completion_tokens"])
            return result | {"usage": totals, "tool_trace": trace}
        messages.append(ChatMessage(role="assistant", content=None, tool_calls=calls))
        for made in calls:
            name, arguments = made["function"]["name"], made["function"]["arguments"]
            output = await asyncio.to_thread(registry.call, tools, name, arguments, context)
            trace.append({"step": step + 1, "id": made["id"], "name": name, "arguments": arguments,
                          "result": output})  # fmt: skip
            messages.append(ChatMessage(role="tool", tool_call_id=made["id"], content=output))
    raise AssertionError("unreachable: the last step runs with tool_choice none")
