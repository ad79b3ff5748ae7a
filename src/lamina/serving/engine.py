"""Inference engine for causal LMs: KV cache, continuous (iteration-level) batching, streaming.

Why our own scheduler: transformers' continuous batching (``generate_batch``) runs on this CPU, but
takes one generation config for the whole batch, and OpenAI-style requests each bring their own
temperature, top-p, penalties, stop sequences and seed. So the engine schedules requests itself,
and a *runner* holds the model and its KV cache:

- ``llama_runner.SlotRunner`` for Llama-architecture models (what Lamina trains): its own forward
  pass over a static slot cache, fused projections and packed weights (several times less
  per-token overhead than transformers' modules on this CPU);
- ``dynamic_runner.DynamicRunner`` for any other causal LM, over transformers' ``DynamicCache``.

Each iteration decodes one token for every running request in one forward pass; requests that
arrived meanwhile are prefilled (together, on the fast path) and join at the next iteration;
finished or cancelled rows leave at once.
Sampling runs on the whole batch at once (``sampling.sample``); only per-request bookkeeping
(text, stop sequences, limits) is a Python loop, and events reach each asyncio loop in one
callback per iteration. The engine runs in one background thread (torch releases the GIL).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from lamina.core.errors import LaminaError
from lamina.serving.admission import WaitEstimate
from lamina.serving.detokenize import Detokenizer, piece_table
from lamina.serving.grammar import Grammars
from lamina.serving.interfaces import LoneRunner, Runner
from lamina.serving.sampling import (
    SamplingParams,
    StopMatcher,
    apply_penalties,
    choice_knobs,
    needs_penalties,
    penalty_knobs,
    sample,
    top_alternatives,
)

log = logging.getLogger(__name__)
# tokens a lone request makes per runner call: the engine's per-token work is paid once per call;
# a request arriving meanwhile waits at most this many steps (~2–4 ms) to be admitted
ALONE_STEPS = 8


class ContextTooLong(LaminaError):
    """The prompt does not fit the model's context (HTTP 400)."""

    exit_code = 2
    http_status = 400
    code = "context_length_exceeded"


class EngineBusy(LaminaError):
    """The waiting queue is full: back off and retry (HTTP 429)."""

    http_status = 429
    code = "rate_limit_exceeded"
    retry_after = 1.0  # seconds, for the Retry-After header

    def waiting(self, seconds: float) -> EngineBusy:
        self.retry_after = seconds
        return self


@dataclass(slots=True)
class TokenEvent:
    """One step of one request: new text (possibly empty while a stop sequence may be forming)."""

    text: str
    token_id: int | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    # on the last event: "stop", "length", "cancelled", "error", or "overloaded" (never started:
    # the queue's wait budget ran out)
    finish_reason: str | None = None
    # on the first event, when asked (prompt_logprobs): each prompt token, its log-probability
    # given the tokens before it (None for the first) and its top alternatives
    prompt: list[tuple[int, float | None, list[tuple[int, float]]]] | None = None


class Stream:
    """What a caller holds for one generation: its events as they come, its output, ``cancel()``.

    Events go to exactly one place, chosen before the generation starts: a thread queue (read with
    ``events()``), an asyncio loop (``bind_loop``; read with ``aevents()``/``abatches()``), or a
    sink function that takes each engine iteration's events at once (the engine-process pipe).
    """

    def __init__(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        self.id, self.prompt_ids, self.params = request_id, prompt_ids, params
        self.generated: list[int] = []
        # of the generated tokens whose log-probability the backend reports: ``confidence``
        self.logprob_sum, self.logprob_count = 0.0, 0
        self.cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self._parts: list[str] = []
        self._queue: queue.Queue[TokenEvent] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aqueue: asyncio.Queue[TokenEvent] | None = None
        self._held: list[TokenEvent] = []  # read ahead by first(), handed out next by abatches()
        self._sink: Callable[[list[tuple[Stream, TokenEvent]]], None] | None = None

    @property
    def text(self) -> str:
        """The text sent so far (usage and the audit log use it)."""
        return "".join(self._parts)

    @property
    def confidence(self) -> float | None:
        """The geometric mean of the generated tokens' probabilities (None before any token): low
        answers go to the review queue when ``monitoring.review_below_confidence`` is set."""
        if not self.logprob_count:  # no token yet, or a backend that does not report them (vLLM)
            return None
        return math.exp(self.logprob_sum / self.logprob_count)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events to an asyncio queue on ``loop`` instead of the thread queue."""
        self._loop, self._aqueue = loop, asyncio.Queue()

    def bind_sink(self, sink: Callable[[list[tuple[Stream, TokenEvent]]], None]) -> None:
        """Hand each iteration's events to ``sink`` (called on the engine thread)."""
        self._sink = sink

    def emit(self, event: TokenEvent) -> None:
        """Deliver one event now (the engine batches its per-iteration events with ``Outbox``)."""
        Outbox().add(self, event).send()

    def _stamp(self, event: TokenEvent) -> None:
        if self.first_token_at is None and event.token_id is not None:
            self.first_token_at = time.perf_counter()
        if event.text:
            self._parts.append(event.text)

    def cancel(self) -> None:
        """Stop generating (the client went away); the engine drops the row at its next step."""
        self.cancelled.set()

    def events(self, timeout: float | None = None) -> Iterator[TokenEvent]:
        while True:
            event = self._queue.get(timeout=timeout)
            yield event
            if event.finish_reason is not None:
                return

    async def aevents(self) -> Any:
        """Events as they come, one at a time."""
        async for batch in self.abatches():
            for event in batch:
                yield event

    async def abatches(self) -> Any:
        """Events in the groups that are ready together (fewer wake-ups for a streaming writer)."""
        while True:
            batch = self._held or await self._next_batch()
            self._held = []
            yield batch
            if batch[-1].finish_reason is not None:
                return

    async def first(self) -> TokenEvent:
        """Wait for the first event (the request started, or ended before starting) without
        consuming it: ``abatches`` still yields it. The API waits for this before it answers, so a
        request the queue sheds gets a 429, not a stream that says 200 and then nothing."""
        if not self._held:
            self._held = await self._next_batch()
        return self._held[0]

    async def _next_batch(self) -> list[TokenEvent]:
        assert self._aqueue is not None, "bind_loop() first"
        batch = [await self._aqueue.get()]
        while not self._aqueue.empty():
            batch.append(self._aqueue.get_nowait())
        return batch


class Request(Stream):
    """One sequence inside the engine: adds what decoding needs (detokenizer, seed, stop matcher)."""

    def __init__(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        eos_ids: set[int],
        tokenizer: Any,
        pieces: dict[int, str] | None = None,
        matcher: Any = None,
    ) -> None:
        super().__init__(request_id, prompt_ids, params)
        self.matcher = matcher  # the grammar's state (grammar.Grammars.matcher), when constrained
        self.prompt_scores: list[tuple[int, float | None, list[tuple[int, float]]]] | None = None
        self.eos_ids = eos_ids
        self.detokenizer = Detokenizer(tokenizer, pieces)
        # any integer is a valid seed (OpenAI sets no range); torch takes 64 bits of it
        seed = None if params.seed is None else params.seed % 2**64
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.stop = StopMatcher(params.stop)


class Outbox:
    """Events of one engine iteration: one hand-off per asyncio loop or sink, not one per token."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Stream, TokenEvent]]] = {}
        self._by_sink: dict[Callable[..., None], list[tuple[Stream, TokenEvent]]] = {}

    def add(self, request: Stream, event: TokenEvent) -> Outbox:
        request._stamp(event)
        if request._sink is not None:
            self._by_sink.setdefault(request._sink, []).append((request, event))
        elif request._loop is not None:
            self._by_loop.setdefault(request._loop, []).append((request, event))
        else:
            request._queue.put(event)
        return self

    def send(self) -> None:
        for loop, items in self._by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop has closed: nobody is listening any more
                pass
        for sink, items in self._by_sink.items():
            sink(items)
        self._by_loop.clear()
        self._by_sink.clear()


def _deliver(items: list[tuple[Stream, TokenEvent]]) -> None:
    for request, event in items:
        assert request._aqueue is not None
        request._aqueue.put_nowait(event)


def new_stats() -> dict[str, Any]:
    """An engine's counters, plus per phase (``decode``, ``prefill``) and size ``[iterations,
    seconds]``: what ``GET /metrics`` exports as ``lamina_engine_iteration_seconds`` and what
    ``bench/capacity.py`` simulates a replica with."""
    return {"steps": 0, "tokens": 0, "max_batch_seen": 0, "decode": {}, "prefill": {}}


def encode(tokenizer: Any, prompt: str) -> list[int]:
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not ids and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id)]
    return ids


def checked_ids(tokenizer: Any, prompt: str | list[int], context: int) -> list[int]:
    """The prompt's token ids, or ``ContextTooLong`` (400) when it leaves no room to generate."""
    ids = encode(tokenizer, prompt) if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise ContextTooLong("the prompt is empty and the tokenizer has no BOS token to start from")
    if len(ids) >= context:
        raise ContextTooLong(
            f"the prompt has {len(ids)} tokens; this model's context is {context} tokens "
            "(prompt plus at least one generated token)",
            hint="shorten the prompt",
        )
    return ids


def make_runner(
    model: Any, precision: str = "fp32", slots: int = 32, path: str = "auto", compile: bool = False
) -> Runner:
    """The fast Llama runner where it applies (``path="auto"``), else the generic cache runner.

    ``compile`` puts the fast runner's single-row step (fp32 and bf16) through ``torch.compile``.
    """
    from lamina.serving import llama_runner
    from lamina.serving.dynamic_runner import DynamicRunner
    from lamina.serving.quantize import with_precision

    if path not in ("auto", "generic"):
        raise ValueError(f"unknown engine path {path!r}: use auto or generic")
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter: serve its merged weights
        model = model.merge_and_unload()
    if path == "auto" and llama_runner.supports(model, slots):
        fast = with_precision(llama_runner.FastLlama(model.eval()), precision)
        # int8 (dynamically quantized Linears) stays eager: inductor does not take those modules
        return llama_runner.SlotRunner(
            fast, slots, pack=precision != "int8", compile=compile and precision != "int8"
        )
    return DynamicRunner(with_precision(model, precision).eval())


class Engine:
    """Serve one causal LM. ``submit`` returns a ``Request`` whose events stream as tokens are made.

    ``precision`` (fp32, bf16, int8) applies to the engine's copy of the weights; ``path="generic"``
    forces the transformers-cache runner even for a Llama model (tests and benchmarks compare them);
    ``compile`` compiles the fast path's decode step (see ``llama_runner``).
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, max_batch: int = 32, max_waiting: int = 256,
        max_queue_wait: float | None = None, precision: str = "fp32", path: str = "auto",
        compile: bool = False,
    ) -> None:  # fmt: skip
        self.tokenizer = tokenizer
        self.context = int(model.config.max_position_embeddings)
        self.vocab = int(model.config.vocab_size)
        self.max_batch, self.max_waiting = max_batch, max_waiting
        # seconds a request may wait for a place in the batch; past it, it ends "overloaded" (the
        # API answers 429) rather than waiting on: load is shed, and admitted requests start soon
        self.max_queue_wait = max_queue_wait
        self.admission = WaitEstimate()  # refuses at submit what could not start in time
        self.runner = make_runner(model, precision, max_batch, path, compile)
        eos = tokenizer.eos_token_id
        self.eos_ids = {int(eos)} if eos is not None else set()
        self._pieces = piece_table(tokenizer)
        self.grammars = Grammars(tokenizer, self.vocab)
        self._waiting: collections.deque[Request] = collections.deque()  # FIFO; appended under _lock
        self._lock = threading.Lock()
        self._requests: list[Request] = []  # the running batch, in the runner's row order
        self._joining: list[Request] = []  # taken from the queue, being prefilled
        self._since = 0.0  # when this pass of the loop began (see ``_run``)
        self._last = torch.zeros(0, dtype=torch.long)  # (B,) the token each row feeds next
        self._seen = torch.zeros(0, self.vocab)  # (B, V) counts over prompt + output (repetition)
        self._generated = torch.zeros(0, self.vocab)  # (B, V) counts over output (frequency, presence)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = new_stats()

    # -- public ------------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lamina-engine", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def describe(self) -> dict[str, Any]:
        """How this engine runs (for ``/ready``)."""
        return {"runner": type(self.runner).__name__, "process": None}

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> float:
        """How long a refused client should wait before trying again (``admission``)."""
        return self.admission.retry_after(len(self._waiting))

    @property
    def running(self) -> int:
        return len(self._requests)

    def encode(self, prompt: str) -> list[int]:
        return encode(self.tokenizer, prompt)

    def check(self, prompt: str | list[int]) -> list[int]:
        return checked_ids(self.tokenizer, prompt, self.context)

    def submit(
        self, prompt: str | list[int], params: SamplingParams, request_id: str = "req", *,
        loop: asyncio.AbstractEventLoop | None = None, sink: Callable[..., None] | None = None,
    ) -> Request:  # fmt: skip
        """Queue a generation; its events go to ``loop`` or ``sink`` if given (bound before it runs)."""
        ids = self.check(prompt)
        matcher = self.grammars.matcher(params.grammar) if params.grammar else None  # GrammarError: 400
        request = Request(request_id, ids, params, self.eos_ids, self.tokenizer, self._pieces, matcher)
        if loop is not None:
            request.bind_loop(loop)
        if sink is not None:
            request.bind_sink(sink)
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                raise EngineBusy(f"{len(self._waiting)} requests are already waiting", hint="retry shortly")
            if self.admission.refuses(
                len(self._waiting), self.max_queue_wait, self.running >= self.max_batch
            ):
                raise EngineBusy(
                    f"{len(self._waiting)} requests are waiting and would not start within "
                    f"{self.max_queue_wait:g} s",
                    hint="retry after the Retry-After seconds",
                ).waiting(self.admission.retry_after(len(self._waiting)))
            self._waiting.append(request)
        self._wake.set()
        return request

    def generate(self, prompt: str, params: SamplingParams) -> tuple[str, str]:
        """Blocking helper: the whole text and the finish reason."""
        request = self.start().submit(prompt, params)
        parts, reason = [], "stop"
        for event in request.events():
            parts.append(event.text)
            reason = event.finish_reason or reason
        return "".join(parts), reason

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            try:
                # a decode iteration's time runs from the end of the one before (less this pass's
                # prefill): what the loop costs between steps, and time the OS gave other
                # processes, delay tokens as much as the forward pass does
                self._since = time.perf_counter()
                self._admit()
                if not self._requests:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                self._step()
            except Exception as exc:  # a bug must not leave clients waiting forever
                log.exception("engine step failed")
                self._fail_all(f"engine error: {exc}")
        # closed: whatever is still running or waiting ends now, not never
        with self._lock:
            self._joining.extend(self._waiting)
            self._waiting.clear()
        if self._requests or self._joining:
            self._fail_all("the engine was closed")

    def _admit(self) -> None:
        """Prefill every waiting request there is room for, together, and let them join the batch."""
        joining: list[Request] = []
        self._shed()
        while self.running + len(joining) < self.max_batch and self._waiting:
            with self._lock:
                request = self._waiting.popleft()
            if request.cancelled.is_set():
                request.finish_reason = "cancelled"
                request.emit(TokenEvent("", finish_reason="cancelled"))
                continue
            joining.append(request)
        if joining:
            self._joining = joining  # until they join or finish: a failure must reach them too
            started = time.perf_counter()
            self._join(joining)
            spent = time.perf_counter() - started
            self._timed("prefill", len(joining), spent)
            self._since += spent
            self._joining = []

    def _timed(self, phase: str, size: int, seconds: float, iterations: int = 1) -> None:
        """Add one iteration's time to ``stats[phase][size]`` (size: rows decoded or prefilled)."""
        entry = self.stats[phase].setdefault(size, [0, 0.0])
        entry[0] += iterations
        entry[1] += seconds

    def _shed(self) -> None:
        """End waiting requests that were cancelled or have waited past ``max_queue_wait``.

        Runs every iteration, also when the batch is full: a request that cannot start in time is
        told so (``overloaded``) then, not when a place finally frees up.
        """
        if not self._waiting:
            return
        now = time.perf_counter()
        budget = self.max_queue_wait
        with self._lock:
            keep: collections.deque[Request] = collections.deque()
            ended: list[tuple[Request, str]] = []
            for request in self._waiting:
                if request.cancelled.is_set():
                    ended.append((request, "cancelled"))
                elif budget is not None and now - request.submitted > budget:
                    ended.append((request, "overloaded"))
                else:
                    keep.append(request)
            if ended:
                self._waiting = keep
        if ended:
            outbox = Outbox()
            for request, reason in ended:
                request.finish_reason = reason
                outbox.add(request, TokenEvent("", finish_reason=reason))
            outbox.send()

    def _join(self, requests: list[Request]) -> None:
        """Prefill ``requests`` in one pass; those whose first token does not end them join."""
        for request in requests:
            if request.params.prompt_logprobs is not None:
                request.prompt_scores = self._score_prompt(request)
        logits = self.runner.prefill([r.prompt_ids for r in requests])
        seen = torch.zeros(len(requests), self.vocab)
        for row, request in enumerate(requests):
            seen[row].index_add_(0, torch.tensor(request.prompt_ids), torch.ones(len(request.prompt_ids)))
        generated = torch.zeros(len(requests), self.vocab)
        outbox = Outbox()
        tokens, going_on = self._choose(requests, logits, seen, generated, outbox)
        outbox.send()
        self.runner.commit(going_on)
        if any(going_on):
            index = torch.tensor([row for row, going in enumerate(going_on) if going])
            self._requests.extend(r for r, going in zip(requests, going_on, strict=True) if going)
            self._last = torch.cat([self._last, tokens[index]])
            self._seen = torch.cat([self._seen, seen[index]])
            self._generated = torch.cat([self._generated, generated[index]])

    def _score_prompt(self, request: Request) -> list[tuple[int, float | None, list[tuple[int, float]]]]:
        """Each prompt token's log-probability given the ones before it, and its alternatives."""
        ids = request.prompt_ids
        logprobs = torch.log_softmax(
            self.runner.score(ids)[:-1].float(), dim=-1
        )  # (T-1, V): predicts ids[1:]
        picked = logprobs.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
        scores: list[tuple[int, float | None, list[tuple[int, float]]]] = [(ids[0], None, [])]
        for position, token in enumerate(ids[1:]):
            top = top_alternatives(logprobs[position], request.params.model_copy(
                update={"logprobs": request.params.prompt_logprobs}))  # fmt: skip
            scores.append((token, picked[position], top))
        return scores

    def _step(self) -> None:
        batch, started = len(self._requests), self._since
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], batch)
        if batch == 1 and isinstance(self.runner, LoneRunner):
            request = self._requests[0]
            # the lone step samples inside its compiled graph: rows whose logits need editing
            # (grammar masks, logit bias) take the batched path, which samples here
            if not request.cancelled.is_set() and not request.params.constrained:
                steps = self._step_alone(request)
                self._timed("decode", 1, time.perf_counter() - started, steps)
                return
        logits = self.runner.decode(self._last)
        self.stats["steps"] += 1
        outbox = Outbox()
        active = []
        for row, request in enumerate(self._requests):
            if request.cancelled.is_set():
                request.finish_reason = "cancelled"
                outbox.add(request, TokenEvent(request.stop.flush(), finish_reason="cancelled"))
            else:
                active.append(row)
        keep: list[int] = []
        next_tokens = torch.zeros(0, dtype=torch.long)
        if active:
            whole = len(active) == len(self._requests)
            index = None if whole else torch.tensor(active)
            seen = self._seen if index is None else self._seen[index]
            generated = self._generated if index is None else self._generated[index]
            rows = self._requests if index is None else [self._requests[i] for i in active]
            chosen, going_on = self._choose(
                rows, logits if index is None else logits[index], seen, generated, outbox
            )
            if index is not None:  # advanced indexing copied the rows: write the counts back
                self._seen[index], self._generated[index] = seen, generated
            keep = [row for row, going in zip(active, going_on, strict=True) if going]
            next_tokens = chosen if all(going_on) else chosen[torch.tensor(going_on)]
        outbox.send()
        if len(keep) < len(self._requests):
            self.runner.keep(keep)
            self._requests = [self._requests[i] for i in keep]
            index = torch.tensor(keep, dtype=torch.long)
            self._seen, self._generated = self._seen[index], self._generated[index]
        self._last = next_tokens
        self._timed("decode", batch, time.perf_counter() - started)

    def _choose(
        self, requests: list[Request], logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor,
        outbox: Outbox,
    ) -> tuple[torch.Tensor, list[bool]]:  # fmt: skip
        """Sample the next token of every row at once, queue each one's event, say which go on.

        ``seen``/``generated`` are updated in place.
        """
        params = [r.params for r in requests]
        penalties = needs_penalties(params)
        if penalties:
            logits = apply_penalties(logits, seen, generated, params)
        alive = [True] * len(requests)
        if any(p.constrained for p in params):
            logits = logits.float().clone()  # edited in place below
            for row, p in enumerate(params):
                if p.logit_bias:
                    ids = torch.tensor(
                        [i for i in p.logit_bias if 0 <= i < logits.shape[-1]], dtype=torch.long
                    )
                    bias = torch.tensor([b for i, b in p.logit_bias.items() if 0 <= i < logits.shape[-1]])
                    logits[row, ids] += bias
            alive = self.grammars.apply(logits, [r.matcher for r in requests])
        picked = sample(logits, params, [r.generator for r in requests])
        if penalties:  # only a row with penalties reads its counts, and then they are kept for all rows
            rows = torch.arange(len(requests))
            seen[rows, picked.tokens] += 1
            generated[rows, picked.tokens] += 1
        self.stats["tokens"] += len(requests)
        tokens, logprobs = picked.tokens.tolist(), picked.logprobs.tolist()
        going_on = [
            self._emit(request, tokens[i], logprobs[i], picked.top[i], outbox, alive[i])
            for i, request in enumerate(requests)
        ]
        return picked.tokens, going_on

    def _emit(
        self, request: Request, token: int, logprob: float, top: list[tuple[int, float]], outbox: Outbox,
        alive: bool = True,
    ) -> bool:  # fmt: skip
        """Record ``token`` for ``request`` and queue its event; whether the request goes on.

        ``alive`` False: the row's grammar allowed no token at all (a vocabulary that cannot write
        what it asks for): the request ends with ``error`` instead of emitting a token it forbade.
        """
        if not alive:
            request.finish_reason = "error"
            outbox.add(request, TokenEvent(request.stop.flush(), finish_reason="error"))
            return False
        if request.matcher is not None and not request.matcher.accept_token(token):
            request.finish_reason = "error"  # the mask allowed it, so this is a bug: say so, stop
            log.error("the grammar refused a token its own mask allowed", extra={"token": token})
            outbox.add(request, TokenEvent(request.stop.flush(), finish_reason="error"))
            return False
        request.generated.append(token)
        request.logprob_sum += logprob if math.isfinite(logprob) else -30.0
        request.logprob_count += 1
        reason = None
        if token in request.eos_ids:
            reason, piece = "stop", ""
        else:
            piece = request.detokenizer.add(token)
        out, stopped = request.stop.feed(piece) if request.stop.stops else (piece, False)
        if stopped:
            reason = "stop"
        elif reason is None and (
            len(request.generated) >= request.params.max_tokens
            or len(request.prompt_ids) + len(request.generated) >= self.context
        ):
            reason = "length"
            out += request.stop.flush()
        request.finish_reason = reason
        if reason is not None:
            self.admission.finished()
        prompt, request.prompt_scores = request.prompt_scores, None  # the first event carries them
        outbox.add(request, TokenEvent(out, token, logprob, top, reason, prompt))
        return reason is None

    def _step_alone(self, request: Request) -> int:
        """The one running request: several tokens in one runner call (``ALONE_STEPS``); returns
        how many steps the call made.

        Each step decodes and samples in one graph, and the engine's per-token bookkeeping runs
        once per call, not once per token. With requests waiting, one step, so they join at once.
        Tokens past one that ends the request are dropped with it (the row leaves the cache).
        """
        room = self.context - (len(request.prompt_ids) + len(request.generated) - 1)
        left = request.params.max_tokens - len(request.generated)
        steps = max(1, min(1 if self._waiting else ALONE_STEPS, room, left))
        params = request.params
        sampled = params.temperature > 0
        if not sampled:  # greedy: no random numbers drawn
            uniform = torch.zeros(steps)
        else:
            uniform = torch.rand(steps, generator=request.generator)
        knobs = torch.cat([choice_knobs([params], self.vocab), penalty_knobs([params])], dim=1)
        count = needs_penalties([params])
        assert isinstance(self.runner, LoneRunner)
        tokens, rows = self.runner.decode_alone(
            self._last, steps, self._seen, self._generated, knobs, uniform, count
        )
        self.stats["steps"] += steps
        chosen = tokens.tolist()
        picked = rows.gather(1, tokens[:, None])[:, 0].tolist()
        outbox = Outbox()
        going = True
        for step, token in enumerate(chosen):
            self.stats["tokens"] += 1
            top = top_alternatives(rows[step], params)
            going = self._emit(request, token, picked[step], top, outbox)
            if not going:
                break
        outbox.send()
        if going:
            self._last = tokens[-1:]
        else:
            self.runner.keep([])
            self._requests = []
            self._last = torch.zeros(0, dtype=torch.long)
            self._seen, self._generated = torch.zeros(0, self.vocab), torch.zeros(0, self.vocab)
        return steps

    def _fail_all(self, message: str) -> None:
        """End every request the engine holds (running, or being prefilled) with an ``error`` event.

        Every request must get a last event: one that got none would wait for ever, and its slot in
        the server's queue would never come back.
        """
        outbox = Outbox()
        for request in [*self._requests, *self._joining]:
            if request.finish_reason is None:
                request.finish_reason = "error"
                outbox.add(request, TokenEvent("", finish_reason="error"))
        outbox.send()
        self._requests, self._joining = [], []
        self.runner.keep([])
        self._last = torch.zeros(0, dtype=torch.long)
        self._seen, self._generated = torch.zeros(0, self.vocab), torch.zeros(0, self.vocab)
        log.error(message)
