"""The guardrails in the serving path: input rails before the model, output rails on the answer and
on its stream (``lamina.guardrails`` does the checking; this module applies it to OpenAI shapes).

A blocked input is a 400 with code ``content_filter`` naming the rail; a blocked answer ends with
``finish_reason: "content_filter"`` (what OpenAI's clients expect from Azure's filters), its text
withheld. Every verdict that acted goes to ``request.state.rails`` (the audit record) and to the
metrics. Log-probabilities are refused while output rails run: they would spell out the very
tokens a rail redacts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from lamina.core.errors import LaminaError
from lamina.guardrails.guard import Guard, StreamGuard
from lamina.guardrails.verdict import Verdict


class ContentFiltered(LaminaError):
    """A rail blocked the request."""

    http_status = 400
    code = "content_filter"

    def __init__(self, verdict: Verdict, stage: str = "input") -> None:
        why = "; ".join(verdict.reasons) or verdict.action
        super().__init__(
            f"the {stage} was blocked by the {verdict.rail!r} rail ({why})",
            hint="rephrase the request; an operator can adjust rails: in lamina.yaml",
        )
        self.param = "messages" if stage == "input" else None
        self.rail = verdict.rail


def guard_for(policies: Any, request: Request, model: str) -> Guard | None:
    if policies is None:
        return None
    key = getattr(request.state, "key", None) or {}
    guard: Guard = policies.guard(request.url.path, model, str(key.get("role") or ""))
    return guard if guard.active else None


def context(request: Request, model: str, sources: list[str] | None = None) -> dict[str, Any]:
    key = getattr(request.state, "key", None) or {}
    return {"route": request.url.path, "model": model, "role": key.get("role"), "sources": sources or []}


def record(request: Request, stage: str, verdicts: list[Verdict]) -> None:
    acted = [v for v in verdicts if v.acted or v.error]
    if acted:
        noted = getattr(request.state, "rails", None)
        if noted is None:
            noted = request.state.rails = []
        noted.extend({"stage": stage, **v.summary()} for v in acted)


async def check_input(
    guard: Guard | None, texts: list[str], request: Request, model: str, only: list[Any] | None = None
) -> list[str]:
    """The texts after the input rails (or ``only`` these; redacted where a rail redacts); raises
    when one blocks."""
    if guard is None or not guard.input or not texts or only == []:
        return texts
    checked = await asyncio.to_thread(guard.check, texts, context(request, model), "input", True, only)
    record(request, "input", checked.verdicts)
    if checked.blocked is not None:
        raise ContentFiltered(checked.blocked)
    return checked.texts


@contextlib.asynccontextmanager
async def speculating(pending: asyncio.Future[Any] | None) -> AsyncIterator[None]:
    """Around the work done while the input rails still run: if it fails, the rails' answer is awaited
    first, so a blocked input is still answered as blocked (and no rail task is left unawaited)."""
    try:
        yield
    except BaseException:
        if pending is not None:
            await pending  # raises ContentFiltered when a rail blocked
        raise


def refuse_logprobs(guard: Guard | None, asked: bool) -> None:
    if guard is not None and guard.output and asked:
        from lamina.serving.protocol import UnsupportedParameter

        raise UnsupportedParameter(
            "logprobs", "output rails are on for this request, and log-probabilities would reveal text they "
            "redact (a rails: rule can turn output rails off for a role or model)",
        )  # fmt: skip


async def check_output(
    guard: Guard | None, text: str, request: Request, model: str, sources: list[str] | None = None
) -> tuple[str, bool]:
    """(the answer after the output rails, whether a rail blocked it)."""
    if guard is None or not guard.output:
        return text, False
    checked = await asyncio.to_thread(guard.check, [text], context(request, model, sources), "output")
    record(request, "output", checked.verdicts)
    if checked.blocked is not None:
        return "", True
    return checked.texts[0], False


async def moderate(policies: Any, body: Any, request: Request) -> dict[str, Any]:
    """``POST /v1/moderations``: each input through the stage's rails, as OpenAI's moderation answer
    (``flagged``, ``categories`` and ``category_scores`` by rail) plus the action, the redacted text
    and the verdicts."""
    import uuid

    from lamina.core.errors import ConfigError
    from lamina.guardrails.verdict import strongest

    model = body.model or "*"
    guard = guard_for(policies, request, model)
    if guard is None or not (guard.input if body.stage == "input" else guard.output):
        raise ConfigError(f"no {body.stage} rails apply to this request",
                          hint="configure rails: in lamina.yaml (docs/guardrails.md)")  # fmt: skip
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    results = []
    for text in texts:
        checked = await asyncio.to_thread(guard.check, [text], context(request, model), body.stage)
        verdicts = checked.verdicts
        results.append({
            "flagged": any(v.acted for v in verdicts),
            "categories": {v.rail: v.acted for v in verdicts},
            "category_scores": {v.rail: round(float(v.score), 4) for v in verdicts},
            "action": strongest(verdicts), "text": None if checked.blocked else checked.texts[0],
            "rails": [v.summary() for v in verdicts],
        })  # fmt: skip
        record(request, body.stage, verdicts)
    return {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": body.model or "lamina-rails", "results": results}


class GuardedStreams:
    """One ``StreamGuard`` per choice of a streamed answer; ``release`` turns a batch of token events
    into the text to send for each (``None`` once that choice was blocked and closed)."""

    def __init__(self, guard: Guard | None, request: Request, model: str, sources: list[str] | None = None,
                 jobs: list[tuple[int, Any]] | None = None) -> None:  # fmt: skip
        self.request, self.model, self.sources = request, model, sources
        self.guard = guard if guard is not None and guard.output else None
        self.active = self.guard is not None
        self.guards: dict[int, StreamGuard] = {}
        self.closed: set[int] = set()
        self.jobs = dict(jobs or [])

    async def release(self, events: list[tuple[int, Any]], only_prompt: bool = False) -> list[str | None]:
        if not self.active:
            return [None if i in self.closed else ("" if only_prompt else e.text) for i, e in events]
        return await asyncio.to_thread(self._release, events, only_prompt)

    def _release(self, events: list[tuple[int, Any]], only_prompt: bool) -> list[str | None]:
        out: list[str | None] = []
        for index, event in events:
            if index in self.closed:
                out.append(None)
                continue
            sg = self._guard(index)
            text = sg.feed("" if only_prompt else event.text)
            if event.finish_reason is not None and sg.blocked is None:
                text += sg.finish()
            if event.finish_reason is not None or sg.blocked is not None:
                record(self.request, "output", list(sg.verdicts.values()))
            out.append("" if sg.blocked is not None else text)
        return out

    def blocked(self, index: int) -> bool:
        return index in self.guards and self.guards[index].blocked is not None

    def close(self, index: int) -> None:
        """The choice has sent its last chunk; a blocked one stops generating."""
        self.closed.add(index)
        job = self.jobs.get(index)
        if self.blocked(index) and job is not None:
            job.cancel()

    def _guard(self, index: int) -> StreamGuard:
        if index not in self.guards:
            assert self.guard is not None
            self.guards[index] = self.guard.stream(context(self.request, self.model, self.sources))
        return self.guards[index]
