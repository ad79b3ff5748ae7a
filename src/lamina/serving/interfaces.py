"""The serving layer's two seams, declared: what an engine offers the pool and the API, and what a
runner offers the engine. The in-process ``Engine``, the ``EngineProcess`` and the ``VLLMEngine``
implement ``TextEngine``; ``SlotRunner`` and ``DynamicRunner`` implement ``Runner`` (and the slot
runner ``LoneRunner``, the several-tokens-per-call path for one running request). mypy checks them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from lamina.serving.engine import Stream
    from lamina.serving.sampling import SamplingParams


class Runner(Protocol):
    """Holds a model and its KV cache for the engine's scheduler."""

    @property
    def rows(self) -> int: ...

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Prompts into the next free rows; each one's last logits ``(k, V)``."""
        ...

    def commit(self, joining: list[bool]) -> None:
        """The prefilled prompts marked True join the batch."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One token for every running row ``(B,)``; logits ``(B, V)``."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (ascending)."""
        ...

    def score(self, ids: list[int]) -> torch.Tensor:
        """The logits after every token of ``ids`` ``(T, V)`` (prompt log-probabilities)."""
        ...


@runtime_checkable
class LoneRunner(Runner, Protocol):
    """A runner that decodes several tokens of one running row per call, sampling in its graph."""

    def decode_alone(
        self, token: torch.Tensor, steps: int, seen: torch.Tensor, generated: torch.Tensor,
        knobs: torch.Tensor, uniform: torch.Tensor | None = None, count: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...  # fmt: skip


class TextEngine(Protocol):
    """Serves one causal LM: ``submit`` returns a ``Stream`` whose events come as tokens are made."""

    tokenizer: Any
    context: int

    @property
    def queue_depth(self) -> int: ...

    @property
    def running(self) -> int: ...

    def start(self) -> TextEngine: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def retry_after(self) -> float:
        """Seconds a client refused for load should wait before trying again."""
        ...

    def submit(
        self, prompt: str | list[int], params: SamplingParams, request_id: str = "req", *,
        loop: asyncio.AbstractEventLoop | None = None, sink: Callable[..., None] | None = None,
    ) -> Stream: ...  # fmt: skip
