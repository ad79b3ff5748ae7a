"""Optional vLLM backend (``lamina serve --backend vllm``): PagedAttention and CUDA kernels on a GPU.

It plugs into the pool in place of the in-process ``Engine`` and offers the same ``submit`` →
``Request`` stream, so the API, gateway, audit and metrics do not change. It needs the ``vllm``
package and a CUDA GPU; anywhere else it refuses with one clear message (CI has neither, and its
GPU test is skipped with that reason). Written against vLLM's ``AsyncLLMEngine`` API; it has not
been run in this project yet (no GPU was lent to the session that wrote it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from lamina.core.errors import ConfigError
from lamina.serving.engine import EngineBusy, Stream, TokenEvent, checked_ids
from lamina.serving.sampling import SamplingParams

log = logging.getLogger(__name__)


def unavailable_reason() -> str | None:
    """Why vLLM cannot run here, or None when it can."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return "torch is missing"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is available"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "the 'vllm' package is not installed (pip install 'lamina[gpu]')"
    return None


class VLLMEngine:
    """The ``Engine`` interface over vLLM's async engine, which runs on its own event-loop thread."""

    def __init__(
        self, model_dir: str, tokenizer: Any, *, max_batch: int = 32, max_waiting: int = 256,
        max_queue_wait: float | None = None,
    ) -> None:  # fmt: skip
        reason = unavailable_reason()
        if reason:
            raise ConfigError(
                f"the vLLM backend cannot start: {reason}", hint="use --backend lamina (the default)"
            )
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.tokenizer = tokenizer
        self.engine = AsyncLLMEngine.from_engine_args(
            AsyncEngineArgs(model=model_dir, max_num_seqs=max_batch)
        )
        # vLLM V1's AsyncLLM carries ``model_config`` itself; the older AsyncLLMEngine on ``.engine``
        config = getattr(self.engine, "model_config", None) or getattr(
            getattr(self.engine, "engine", None), "model_config", None
        )
        self.context = int(getattr(config, "max_model_len", 0) or tokenizer.model_max_length)
        self.max_waiting, self.max_queue_wait = max_waiting, max_queue_wait
        self.eos_ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="lamina-vllm", daemon=True).start()
        self.queue_depth, self.running = 0, 0
        self._counts_lock = threading.Lock()  # counted from the caller's thread and vLLM's

    def _count(self, waiting: int = 0, running: int = 0) -> None:
        with self._counts_lock:
            self.queue_depth += waiting
            self.running += running

    def start(self) -> VLLMEngine:
        return self

    def retry_after(self) -> float:
        return 1.0

    def describe(self) -> dict[str, Any]:
        return {"runner": "vllm", "process": None}

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def submit(
        self, prompt: str | list[int], params: SamplingParams, request_id: str = "req", *,
        loop: asyncio.AbstractEventLoop | None = None, sink: Any = None,
    ) -> Stream:  # fmt: skip
        from vllm import SamplingParams as VParams

        ids = checked_ids(self.tokenizer, prompt, self.context)
        for name in ("grammar", "prompt_logprobs", "logit_bias"):
            if getattr(params, name):
                raise ConfigError(
                    f"the vLLM backend does not take {name} from Lamina yet",
                    hint="serve this model with --backend lamina for structured output, echo and logit_bias",
                )
        if self.queue_depth >= self.max_waiting:  # the same limits as Lamina's engine
            raise EngineBusy(f"{self.queue_depth} requests are already waiting", hint="retry shortly")
        request = Stream(request_id, ids, params)
        if loop is not None:
            request.bind_loop(loop)
        if sink is not None:
            request.bind_sink(sink)
        vparams = VParams(
            n=1, max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k or -1, repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty,
            stop=params.stop or None, seed=params.seed, logprobs=params.logprobs,
        )  # fmt: skip

        uid = f"{request_id}-{id(request)}"

        async def run() -> None:
            """Relay vLLM's outputs; every way out ends the stream with a last event."""
            sent, started, reason = 0, False, "error"
            outputs = self.engine.generate({"prompt_token_ids": ids}, vparams, uid)
            try:
                while True:
                    # not started within the queue's wait budget: shed it (429), as Lamina's engine does
                    budget = None if started else self.max_queue_wait
                    try:
                        out = await asyncio.wait_for(anext(outputs), budget)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        reason = "overloaded"
                        await self.engine.abort(uid)
                        return
                    if not started:
                        started = True
                        self._count(waiting=-1, running=1)
                    if request.cancelled.is_set():
                        reason = "cancelled"
                        await self.engine.abort(uid)
                        return
                    choice = out.outputs[0]
                    new_ids = choice.token_ids[len(request.generated) :]
                    request.generated.extend(new_ids)
                    text, sent = choice.text[sent:], len(choice.text)
                    done = choice.finish_reason if out.finished else None
                    request.emit(TokenEvent(text, new_ids[-1] if new_ids else None, None, [], done))
                    if done is not None:
                        reason = ""
                        return
            except Exception:
                log.exception("vLLM generation failed")
            finally:
                self._count(running=-1) if started else self._count(waiting=-1)
                if reason:
                    request.finish_reason = reason
                    request.emit(TokenEvent("", finish_reason=reason))

        self._count(waiting=1)
        asyncio.run_coroutine_threadsafe(run(), self._loop)
        return request
