"""An engine in its own process, so decoding never waits for the HTTP side's GIL.

Why: in one process, the engine thread and the asyncio loop share one GIL. Every tensor operation
releases it, the loop thread takes it to stream tokens, and the engine waits to get it back; under
load the whole server used 0.9 of a core while its engine alone, in-process, decoded 50 % faster
(bench/serve.py, 32 streams). vLLM splits its engine core into a process for the same reason.

``EngineProcess`` offers ``Engine``'s interface (``submit`` → a ``Stream`` of events, ``cancel``,
``queue_depth``, ``running``, ``tokenizer``, ``close``), so the pool, API, gateway, audit and
metrics are unchanged. The child loads the model from its hub folder and runs an ``Engine``; the
parent keeps only the tokenizer (for prompts, chat templates and context checks). Two one-way
pipes carry messages: ``submit``/``cancel``/``close`` down; one message per engine iteration up
with every row's events. If the child dies, every open stream ends with
an ``error`` event and new requests get a 503.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import multiprocessing as mp
import threading
from pathlib import Path
from typing import Any

from lamina.core.errors import LaminaError
from lamina.serving.admission import WaitEstimate
from lamina.serving.engine import EngineBusy, Outbox, Stream, TokenEvent, checked_ids, new_stats
from lamina.serving.grammar import Grammars
from lamina.serving.sampling import SamplingParams

log = logging.getLogger(__name__)
START_TIMEOUT_S = 600.0  # loading plus compiling; a model that takes longer is reported, not waited on


class EngineUnavailable(LaminaError):
    """The engine process is not running (HTTP 503)."""

    http_status = 503
    code = "engine_unavailable"


class EngineProcess:
    """``Engine``'s interface over an engine running in a child process (see the module docstring)."""

    def __init__(
        self, folder: Path | str, tokenizer: Any, context: int, *, max_batch: int = 32,
        max_waiting: int = 256, max_queue_wait: float | None = None, precision: str = "fp32",
        compile: bool = False, threads: int = 1,
    ) -> None:  # fmt: skip
        self.tokenizer, self.context, self.max_waiting = tokenizer, context, max_waiting
        self.max_batch = max_batch
        self.max_queue_wait, self.admission = max_queue_wait, WaitEstimate()
        self._grammars: Grammars | None = None  # made on the first constrained request
        ctx = mp.get_context("spawn")  # never fork a process that holds torch's thread pools
        commands_out, self._commands = ctx.Pipe(duplex=False)
        self._events, events_in = ctx.Pipe(duplex=False)
        options = {"max_batch": max_batch, "max_waiting": max_waiting, "max_queue_wait": max_queue_wait,
                   "precision": precision,
                   "compile": compile, "threads": threads}  # fmt: skip
        self._process = ctx.Process(
            target=_child,
            args=(str(folder), options, commands_out, events_in),
            name="lamina-engine",
            daemon=True,
        )
        self._process.start()
        commands_out.close()
        events_in.close()
        if not self._events.poll(START_TIMEOUT_S):
            self._process.kill()
            raise EngineUnavailable(f"the engine process for {folder} did not start in {START_TIMEOUT_S:g} s")
        try:
            kind, detail = self._events.recv()
        except EOFError:
            kind, detail = "error", f"it exited with code {self._process.exitcode}"
        if kind != "ready":
            self._process.join(timeout=5)
            raise EngineUnavailable(f"the engine process for {folder} failed to start: {detail}")
        self.runner_kind: str = detail
        self._streams: dict[int, Stream] = {}
        self._ids = itertools.count()
        self._send_lock, self._state_lock = threading.Lock(), threading.Lock()
        self._alive, self._closing = True, False
        self.stats = new_stats()
        self._reader = threading.Thread(target=self._read, name="lamina-engine-events", daemon=True)
        self._reader.start()

    # -- Engine's interface ----------------------------------------------------------------------------
    def start(self) -> EngineProcess:
        return self

    @property
    def running(self) -> int:
        """Streams that have started and not finished (counted here: the child's counters lag)."""
        with self._state_lock:
            return sum(1 for s in self._streams.values() if s.first_token_at is not None)

    @property
    def queue_depth(self) -> int:
        with self._state_lock:
            return sum(1 for s in self._streams.values() if s.first_token_at is None)

    def retry_after(self) -> float:
        """How long a refused client should wait before trying again (``admission``)."""
        return self.admission.retry_after(self.queue_depth)

    def describe(self) -> dict[str, Any]:
        """How this engine runs (for ``/ready``): the runner, and the process it runs in."""
        return {"runner": self.runner_kind, "process": self._process.pid if self._alive else None}

    def encode(self, prompt: str) -> list[int]:
        from lamina.serving.engine import encode

        return encode(self.tokenizer, prompt)

    def submit(
        self, prompt: str | list[int], params: SamplingParams, request_id: str = "req", *,
        loop: asyncio.AbstractEventLoop | None = None, sink: Any = None,
    ) -> Stream:  # fmt: skip
        ids = checked_ids(self.tokenizer, prompt, self.context)
        if params.grammar:  # a schema that cannot compile is the client's 400, found here
            if self._grammars is None:
                self._grammars = Grammars(self.tokenizer, len(self.tokenizer))
            self._grammars.matcher(params.grammar)
        if not self._alive:
            raise EngineUnavailable("the engine process has stopped", hint="restart the server")
        with self._state_lock:
            waiting = sum(1 for s in self._streams.values() if s.first_token_at is None)
            if waiting >= self.max_waiting:  # counted here, so a full queue never reaches the child
                raise EngineBusy(f"{waiting} requests are already waiting", hint="retry shortly")
            running = len(self._streams) - waiting
            if self.admission.refuses(waiting, self.max_queue_wait, running >= self.max_batch):
                raise EngineBusy(
                    f"{waiting} requests are waiting and would not start within {self.max_queue_wait:g} s",
                    hint="retry after the Retry-After seconds",
                ).waiting(self.admission.retry_after(waiting))
            uid = next(self._ids)
            stream = _RemoteStream(request_id, ids, params, self, uid)
            if loop is not None:
                stream.bind_loop(loop)
            if sink is not None:
                stream.bind_sink(sink)
            self._streams[uid] = stream
        try:
            self._send(("submit", uid, ids, params.model_dump()))
        except EngineUnavailable:
            with self._state_lock:
                self._streams.pop(uid, None)
            raise
        return stream

    def generate(self, prompt: str, params: SamplingParams) -> tuple[str, str]:
        """Blocking helper: the whole text and the finish reason."""
        stream = self.submit(prompt, params)
        reason = "stop"
        for event in stream.events():
            reason = event.finish_reason or reason
        return stream.text, reason

    def close(self) -> None:
        self._closing = True
        if self._alive:
            try:
                self._send(("close",))
            except (OSError, EngineUnavailable):
                pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._alive = False

    # -- plumbing ---------------------------------------------------------------------------------------
    def _forget(self, stream: _RemoteStream) -> None:
        """End ``stream`` here with ``cancelled`` unless it already ended (see ``_RemoteStream.cancel``)."""
        with self._state_lock:
            if self._streams.pop(stream._uid, None) is None:
                return
            stream.finish_reason = "cancelled"
            outbox = Outbox().add(stream, TokenEvent("", finish_reason="cancelled"))
        outbox.send()

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._commands.send(message)
            except (OSError, ValueError) as exc:
                raise EngineUnavailable(f"the engine process has stopped ({exc})") from None

    def _read(self) -> None:
        """Hand each iteration's events to their streams (one hand-off per asyncio loop)."""
        while True:
            try:
                message = self._events.recv()
            except (EOFError, OSError):
                break
            _, events, counters = message
            self.stats.update(counters["stats"])
            outbox = Outbox()
            with self._state_lock:
                for uid, text, token_id, logprob, top, reason, prompt in events:
                    stream = self._streams.get(uid)
                    if stream is None:
                        continue
                    if token_id is not None:
                        stream.generated.append(token_id)
                        finite = logprob is not None and math.isfinite(logprob)
                        stream.logprob_sum += logprob if finite else -30.0
                        stream.logprob_count += 1
                    stream.finish_reason = reason
                    outbox.add(stream, TokenEvent(text, token_id, logprob, top, reason, prompt))
                    if reason is not None:
                        del self._streams[uid]
                        if stream.first_token_at is not None:  # a place in the batch is free
                            self.admission.finished()
            outbox.send()
        self._alive = False
        outbox = Outbox()
        with self._state_lock:
            for stream in self._streams.values():
                stream.finish_reason = "error"
                outbox.add(stream, TokenEvent("", finish_reason="error"))
            self._streams.clear()
        outbox.send()
        if not self._closing:  # it died (killed, out of memory, a crash): say so
            log.warning("engine process ended unexpectedly", extra={"exitcode": self._process.exitcode})


class _RemoteStream(Stream):
    """A stream whose generation runs in the engine process; ``cancel`` tells that process."""

    def __init__(
        self, request_id: str, ids: list[int], params: SamplingParams, owner: EngineProcess, uid: int
    ) -> None:
        super().__init__(request_id, ids, params)
        self._owner, self._uid = owner, uid

    def cancel(self) -> None:
        """Tell the engine process, and end the stream here at once.

        Ending it here (a ``cancelled`` event, the stream forgotten) means the server's queue and
        running counts never depend on the child answering: a stream the child lost, or one it is
        slow to drop, still gives its place back now. Events that arrive later are ignored.
        """
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        self._owner._forget(self)
        try:
            self._owner._send(("cancel", self._uid))
        except EngineUnavailable:
            pass


def _child(folder: str, options: dict[str, Any], commands: Any, events: Any) -> None:
    """The engine process: load, report ready, then serve commands until told to close."""
    import signal

    # Ctrl-C reaches the whole process group; the server shuts its engines down itself (a closed
    # pipe ends this loop), so the child must not die mid-step with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import torch

        torch.set_num_threads(options["threads"])
        from lamina.serving.engine import Engine
        from lamina.training.sft import load_any

        model, tokenizer = load_any(Path(folder))
        engine = Engine(
            model, tokenizer, max_batch=options["max_batch"], max_waiting=options["max_waiting"],
            max_queue_wait=options["max_queue_wait"], precision=options["precision"],
            compile=options["compile"],
        )  # fmt: skip
    except Exception as exc:  # reported to the parent, which raises it with the folder's name
        events.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    send_lock = threading.Lock()

    def sink(items: list[tuple[Stream, TokenEvent]]) -> None:
        payload = [
            (int(s.id), e.text, e.token_id, e.logprob, e.top, e.finish_reason, e.prompt) for s, e in items
        ]
        counters = {"stats": dict(engine.stats)}
        with send_lock:
            events.send(("events", payload, counters))

    events.send(("ready", type(engine.runner).__name__))
    engine.start()
    open_requests: dict[int, Stream] = {}
    while True:
        try:
            message = commands.recv()
        except (EOFError, OSError):  # the server went away
            break
        kind = message[0]
        if kind == "submit":
            _, uid, ids, params = message
            try:
                open_requests[uid] = engine.submit(ids, SamplingParams(**params), str(uid), sink=sink)
            except Exception as exc:  # checked in the parent already; whatever slips through ends
                # that one stream (never this loop, which every other stream depends on)
                if not isinstance(exc, LaminaError):
                    log.exception("engine process: a request could not be queued")
                reason = "overloaded" if isinstance(exc, EngineBusy) else "error"
                sink([(_Unqueued(uid), TokenEvent("", finish_reason=reason))])  # type: ignore[list-item]
        elif kind == "cancel":
            request = open_requests.get(message[1])
            if request is not None:
                request.cancel()
        elif kind == "close":
            break
        for uid in [u for u, r in open_requests.items() if r.finish_reason is not None]:
            del open_requests[uid]
    engine.close()


class _Unqueued:
    """Stands for a request the child could not queue, so its one error event can be sent."""

    def __init__(self, uid: int) -> None:
        self.id = str(uid)
