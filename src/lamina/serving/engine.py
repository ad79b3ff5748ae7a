"""Inference engine for causal LMs: KV cache, continuous (iteration-level) batching, streaming.

Why our own scheduler: transformers' continuous batching (``generate_batch``) runs on this CPU, but
takes one generation config for the whole batch, and OpenAI-style requests each bring their own
temperature, top-p, penalties, stop sequences and seed. So this engine keeps the model's own
``DynamicCache`` and schedules around it, the way text-generation-inference's Python ``CausalLMBatch``
did (``concatenate`` / ``filter``):

- A new request is prefilled alone (its prompt in one forward pass, its own cache), then joins the
  running batch: caches of different lengths are left-padded to a common length and an attention
  mask hides the padding; position ids count each row's real tokens.
- Every iteration decodes one token for every running request in one forward pass; finished or
  cancelled rows are dropped from the cache at once (``batch_select_indices``), and padding columns
  no row needs any more are trimmed, so a long request leaving frees its memory.
- The engine runs in one background thread (torch releases the GIL); requests stream events to
  their own queue, which an asyncio consumer or a plain thread can read.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from lamina.core.errors import LaminaError
from lamina.serving.sampling import SamplingParams, StopMatcher, apply_penalties, sample

log = logging.getLogger(__name__)


class ContextTooLong(LaminaError):
    """The prompt does not fit the model's context (HTTP 400)."""

    exit_code = 2
    http_status = 400
    code = "context_length_exceeded"


class EngineBusy(LaminaError):
    """The waiting queue is full: back off and retry (HTTP 429)."""

    http_status = 429
    code = "rate_limit_exceeded"


@dataclass
class TokenEvent:
    """One step of one request: new text (possibly empty while a stop sequence may be forming)."""

    text: str
    token_id: int | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length", "cancelled", "error" on the last event


class Request:
    """One sequence being generated; read its events with ``events()`` or ``aevents()``."""

    def __init__(self, request_id: str, prompt_ids: list[int], params: SamplingParams, eos_ids: set[int]):
        self.id, self.prompt_ids, self.params, self.eos_ids = request_id, prompt_ids, params, eos_ids
        self.generated: list[int] = []
        self.text = ""
        self.generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        self.stop = StopMatcher(params.stop)
        self.cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self._queue: queue.Queue[TokenEvent] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aqueue: asyncio.Queue[TokenEvent] | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events to an asyncio queue on ``loop`` instead of the thread queue."""
        self._loop, self._aqueue = loop, asyncio.Queue()

    def emit(self, event: TokenEvent) -> None:
        if self.first_token_at is None and event.token_id is not None:
            self.first_token_at = time.perf_counter()
        if self._loop is not None and self._aqueue is not None:
            self._loop.call_soon_threadsafe(self._aqueue.put_nowait, event)
        else:
            self._queue.put(event)

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
        assert self._aqueue is not None, "bind_loop() first"
        while True:
            event = await self._aqueue.get()
            yield event
            if event.finish_reason is not None:
                return


@dataclass
class _Batch:
    requests: list[Request]
    cache: Any  # DynamicCache over all rows, left-padded
    mask: torch.Tensor  # (B, L) 1 for real tokens
    last: torch.Tensor  # (B,) the token to feed next
    seen: torch.Tensor  # (B, V) counts over prompt + output (repetition penalty)
    generated: torch.Tensor  # (B, V) counts over output (frequency / presence penalties)


class Engine:
    """Serve one causal LM. ``submit`` returns a ``Request`` whose events stream as tokens are made."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 32, max_waiting: int = 256) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.context = int(model.config.max_position_embeddings)
        self.vocab = int(model.config.vocab_size)
        self.max_batch, self.max_waiting = max_batch, max_waiting
        eos = tokenizer.eos_token_id
        self.eos_ids = {int(eos)} if eos is not None else set()
        self._waiting: queue.Queue[Request] = queue.Queue()
        self._batch: _Batch | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"steps": 0, "tokens": 0, "max_batch_seen": 0}

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

    @property
    def queue_depth(self) -> int:
        return self._waiting.qsize()

    @property
    def running(self) -> int:
        return len(self._batch.requests) if self._batch else 0

    def encode(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id)]
        return ids

    def submit(self, prompt: str | list[int], params: SamplingParams, request_id: str = "req") -> Request:
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ContextTooLong("the prompt is empty and the tokenizer has no BOS token to start from")
        if len(ids) >= self.context:
            raise ContextTooLong(
                f"the prompt has {len(ids)} tokens; this model's context is {self.context} tokens "
                "(prompt plus at least one generated token)",
                hint="shorten the prompt",
            )
        if self._waiting.qsize() >= self.max_waiting:
            raise EngineBusy(f"{self._waiting.qsize()} requests are already waiting", hint="retry shortly")
        request = Request(request_id, ids, params, self.eos_ids)
        self._waiting.put(request)
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
                self._admit()
                if self._batch is None:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                self._step()
            except Exception as exc:  # a bug must not leave clients waiting forever
                log.exception("engine step failed")
                self._fail_all(f"engine error: {exc}")

    def _admit(self) -> None:
        while self.running < self.max_batch:
            try:
                request = self._waiting.get_nowait()
            except queue.Empty:
                return
            if request.cancelled.is_set():
                request.emit(TokenEvent("", finish_reason="cancelled"))
                continue
            self._join(request, *self._prefill(request))

    @torch.inference_mode()
    def _prefill(self, request: Request) -> tuple[Any, torch.Tensor]:
        ids = torch.tensor([request.prompt_ids])
        out = self.model(input_ids=ids, use_cache=True)
        return out.past_key_values, out.logits[:, -1, :]

    def _join(self, request: Request, cache: Any, logits: torch.Tensor) -> None:
        from transformers import DynamicCache

        n = len(request.prompt_ids)
        seen = torch.zeros(1, self.vocab)
        seen[0].index_add_(0, torch.tensor(request.prompt_ids), torch.ones(n))
        generated = torch.zeros(1, self.vocab)
        token = self._choose([request], logits, seen, generated)[0]
        if token is None:  # finished on its first token
            return
        new_mask = torch.ones(1, n, dtype=torch.long)
        if self._batch is None:
            self._batch = _Batch([request], cache, new_mask, token, seen, generated)
            return
        b = self._batch
        length, new_length = b.mask.shape[1], n
        width = max(length, new_length)
        layers = []
        for old_layer, new_layer in zip(b.cache.layers, cache.layers, strict=True):
            keys = torch.cat([_left_pad(old_layer.keys, width), _left_pad(new_layer.keys, width)])
            values = torch.cat([_left_pad(old_layer.values, width), _left_pad(new_layer.values, width)])
            layers.append((keys, values))
        mask = torch.cat([_left_pad_mask(b.mask, width), _left_pad_mask(new_mask, width)])
        self._batch = _Batch(
            b.requests + [request],
            DynamicCache(ddp_cache_data=layers),
            mask,
            torch.cat([b.last, token]),
            torch.cat([b.seen, seen]),
            torch.cat([b.generated, generated]),
        )

    @torch.inference_mode()
    def _step(self) -> None:
        b = self._batch
        assert b is not None
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(b.requests))
        mask = torch.cat([b.mask, torch.ones(len(b.requests), 1, dtype=torch.long)], dim=1)
        positions = (b.mask.sum(dim=1, keepdim=True)).long()  # each row's next position
        out = self.model(
            input_ids=b.last[:, None], attention_mask=mask, position_ids=positions, past_key_values=b.cache,
            use_cache=True,
        )  # fmt: skip
        b.mask = mask
        self.stats["steps"] += 1
        logits = out.logits[:, -1, :]
        active = []
        for row, request in enumerate(b.requests):
            if request.cancelled.is_set():
                request.finish_reason = "cancelled"
                request.emit(TokenEvent(request.stop.flush(), finish_reason="cancelled"))
            else:
                active.append(row)
        keep: list[int] = []
        next_tokens: list[torch.Tensor] = []
        if active:
            index = torch.tensor(active)
            whole = len(active) == len(b.requests)
            seen, generated = (b.seen, b.generated) if whole else (b.seen[index], b.generated[index])
            chosen = self._choose([b.requests[i] for i in active], logits[index], seen, generated)
            if not whole:  # advanced indexing copied the rows: write the counts back
                b.seen[index], b.generated[index] = seen, generated
            for row, token in zip(active, chosen, strict=True):
                if token is not None:
                    keep.append(row)
                    next_tokens.append(token)
        if not keep:
            self._batch = None
            return
        if len(keep) < len(b.requests):
            index = torch.tensor(keep)
            b.cache.batch_select_indices(index)
            b.requests = [b.requests[i] for i in keep]
            b.mask, b.seen, b.generated = b.mask[index], b.seen[index], b.generated[index]
            unused = int((b.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading all-padding columns
            if unused:
                for layer in b.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
                b.mask = b.mask[:, unused:]
        b.last = torch.cat(next_tokens)

    def _choose(
        self, requests: list[Request], logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor
    ) -> list[torch.Tensor | None]:
        """Sample the next token of every row at once, emit each, and say which requests go on.

        Penalties and sampling run on the whole batch (one sort for top-k/top-p); only the per-request
        bookkeeping (text, stop sequences, limits) is a Python loop. ``seen``/``generated`` are
        updated in place.
        """
        params = [r.params for r in requests]
        logits = apply_penalties(logits, seen, generated, params)
        picked = sample(logits, params, [r.generator for r in requests])
        rows = torch.arange(len(requests))
        seen[rows, picked.tokens] += 1
        generated[rows, picked.tokens] += 1
        self.stats["tokens"] += len(requests)
        tokens, logprobs = picked.tokens.tolist(), picked.logprobs.tolist()
        going_on: list[torch.Tensor | None] = []
        for i, request in enumerate(requests):
            token = tokens[i]
            request.generated.append(token)
            reason = None
            if token in request.eos_ids:
                reason, piece = "stop", ""
            else:
                piece = self._new_text(request)
            out, stopped = request.stop.feed(piece)
            if stopped:
                reason = "stop"
            elif reason is None and (
                len(request.generated) >= request.params.max_tokens
                or len(request.prompt_ids) + len(request.generated) >= self.context
            ):
                reason = "length"
                out += request.stop.flush()
            request.finish_reason = reason
            request.emit(TokenEvent(out, token, logprobs[i], picked.top[i], reason))
            going_on.append(None if reason else picked.tokens[i : i + 1])
        return going_on

    def _new_text(self, request: Request) -> str:
        """Incremental detokenisation: decode the whole output, send what is new and complete."""
        text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is still being assembled
            return ""
        new, request.text = text[len(request.text) :], text
        return new

    def _fail_all(self, message: str) -> None:
        if self._batch is not None:
            for request in self._batch.requests:
                request.emit(TokenEvent("", finish_reason="error"))
            self._batch = None
        log.error(message)


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, L, D) → (B, H, width, D) with zeros on the left."""
    missing = width - x.shape[-2]
    if missing <= 0:
        return x
    return torch.cat([x.new_zeros(*x.shape[:-2], missing, x.shape[-1]), x], dim=-2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1) if missing > 0 else mask
