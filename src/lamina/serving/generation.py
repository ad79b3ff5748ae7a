"""One HTTP request's generations from submit to their last event: the part that must never hang.

Every way a generation can end is handled here, once, for completions and chat alike:

- it finishes: its events are collected (or streamed);
- it never starts: the engine sheds a request that waited past ``server.max_queue_wait``
  (``overloaded``) and the client gets 429 with ``Retry-After``; an engine that failed or stopped
  gives 503;
- it runs past ``server.request_timeout_s``: it is cancelled and the client gets 504 (or, once a
  stream has begun, an ``error`` event and ``[DONE]``);
- the client goes away: its generations are cancelled at once, so they free their place in the
  batch and the queue (a stream notices through Starlette; a plain request through a watcher on
  the connection).

A request's jobs are the ``(choice index, engine stream)`` pairs of its prompts × ``n``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from lamina.core.errors import LaminaError
from lamina.serving.engine import Stream, TokenEvent

Jobs = list[tuple[int, Stream]]


class Timeout(LaminaError):
    """The generation ran past the server's time limit (HTTP 504)."""

    http_status = 504
    code = "timeout"


class Overloaded(LaminaError):
    """The request could not start within the queue's wait budget (HTTP 429, with Retry-After)."""

    http_status = 429
    code = "server_overloaded"
    retry_after = 1.0


class GenerationFailed(LaminaError):
    """The engine failed or stopped while serving the request (HTTP 503)."""

    http_status = 503
    code = "engine_error"


class ClientGone(LaminaError):
    """The client closed the connection before the answer (logged as 499, as nginx does)."""

    http_status = 499
    code = "client_closed_request"


def cancel(jobs: Jobs) -> None:
    for _, job in jobs:
        job.cancel()


def check_started(jobs: Jobs, retry_after: Callable[[], float] | None = None) -> None:
    """Raise for a job that ended before it made a token: shed by the queue (``retry_after``: how
    long the client should stay away, from the engine), or failed."""
    for _, job in jobs:
        if job.finish_reason == "overloaded":
            cancel(jobs)
            shed = Overloaded(
                "the server is at capacity: this request could not start within the queue's wait budget",
                hint="retry after the Retry-After seconds, or lower the request rate",
            )
            shed.retry_after = retry_after() if retry_after is not None else 1.0
            raise shed
        if job.finish_reason == "error" and not job.generated:
            cancel(jobs)
            raise GenerationFailed(
                "the engine could not serve this request", hint="retry; see the server log"
            )


async def started(
    jobs: Jobs, request: Any, deadline: float, retry_after: Callable[[], float] | None = None
) -> None:
    """Wait until every job has its first event (started, or ended before starting).

    Streams call this before answering, so a shed request gets 429 and a failed one 503 instead
    of a 200 stream that says nothing.
    """

    async def firsts() -> None:
        await asyncio.gather(*(job.first() for _, job in jobs))

    await _until(firsts(), jobs, request, deadline)
    check_started(jobs, retry_after)


async def collect(
    jobs: Jobs, request: Any, deadline: float, retry_after: Callable[[], float] | None = None
) -> list[list[TokenEvent]]:
    """Every job's events, in the jobs' order; raises ``Timeout``/``Overloaded``/``GenerationFailed``."""
    events: dict[int, list[TokenEvent]] = {index: [] for index, _ in jobs}

    async def gather() -> None:
        async for batch in batches(jobs, deadline):
            for index, event in batch:
                events[index].append(event)

    await _until(gather(), jobs, request, deadline)
    check_started(jobs, retry_after)
    if any(job.finish_reason == "error" for _, job in jobs):
        raise GenerationFailed("the engine failed while generating", hint="retry; see the server log")
    return [events[index] for index, _ in jobs]


async def batches(jobs: Jobs, deadline: float) -> AsyncIterator[list[tuple[int, TokenEvent]]]:
    """The jobs' events in the groups they arrive in, until each has ended; ``Timeout`` at ``deadline``
    (loop time), after cancelling them all."""
    loop = asyncio.get_running_loop()
    if len(jobs) == 1:
        index, job = jobs[0]
        groups = job.abatches()
        while True:
            try:
                batch = await asyncio.wait_for(anext(groups), deadline - loop.time())
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _timed_out(jobs) from None
            yield [(index, event) for event in batch]
            if batch[-1].finish_reason is not None:
                return
    queue: asyncio.Queue[tuple[int, list[TokenEvent] | None]] = asyncio.Queue()

    async def pump(index: int, job: Stream) -> None:
        async for batch in job.abatches():
            await queue.put((index, batch))
        await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, j)) for i, j in jobs]
    try:
        remaining = len(tasks)
        while remaining:
            try:
                index, got = await asyncio.wait_for(queue.get(), deadline - loop.time())
            except TimeoutError:
                raise _timed_out(jobs) from None
            if got is None:
                remaining -= 1
            else:
                yield [(index, event) for event in got]
    finally:
        for task in tasks:
            task.cancel()


def _timed_out(jobs: Jobs) -> Timeout:
    cancel(jobs)
    return Timeout(
        "generation ran past the server's time limit and was cancelled", hint="ask for fewer tokens"
    )


async def _until(work: Any, jobs: Jobs, request: Any, deadline: float) -> None:
    """Run ``work`` until it ends, the deadline passes (``Timeout``) or the client leaves
    (``ClientGone``); whatever ends it early cancels the jobs."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(asyncio.wait_for(work, max(0.0, deadline - loop.time())))
    gone = asyncio.ensure_future(_disconnected(request) if request is not None else asyncio.Event().wait())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                task.result()
            except TimeoutError:
                raise _timed_out(jobs) from None
            return
        cancel(jobs)
        raise ClientGone("the client closed the connection; its generation was cancelled")
    except asyncio.CancelledError:  # the server is shutting down, or the handler was cancelled
        cancel(jobs)
        raise
    finally:
        gone.cancel()
        task.cancel()


async def _disconnected(request: Any) -> None:
    """Return when the client has closed the connection (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
