"""Token sampling for a batch of requests that each carry their own settings.

Every step of continuous batching has rows from different requests, so each knob is applied per
row: repetition penalty (CTRL-style, over prompt + output), OpenAI's frequency and presence
penalties (over the output), temperature, top-k, top-p, a per-request seed, and log-probabilities
of the chosen token and the top alternatives. Written here rather than with transformers'
``LogitsProcessor`` classes because those take one setting for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP = 4
MAX_LOGPROBS = 20


class SamplingParams(BaseModel):
    """One request's sampling settings, validated to OpenAI's ranges (a clear 400 otherwise)."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # 0: off
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if isinstance(value, list) and any(isinstance(s, str) and not s for s in value):
            raise ValueError("stop sequences must not be empty")
        return value


@dataclass
class Sampled:
    tokens: torch.Tensor  # (B,) chosen token ids
    logprobs: torch.Tensor  # (B,) log-probability of each chosen token
    top: list[list[tuple[int, float]]] = field(default_factory=list)  # per row: requested alternatives


def apply_penalties(
    logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor, params: list[SamplingParams]
) -> torch.Tensor:
    """Penalise tokens already used. ``seen``/``generated``: (B, V) counts over prompt+output / output."""
    device = logits.device
    rep = torch.tensor([p.repetition_penalty for p in params], device=device)[:, None]
    freq = torch.tensor([p.frequency_penalty for p in params], device=device)[:, None]
    pres = torch.tensor([p.presence_penalty for p in params], device=device)[:, None]
    logits = logits.float()
    used = seen > 0
    penalised = torch.where(logits > 0, logits / rep, logits * rep)
    logits = torch.where(used & (rep != 1.0), penalised, logits)
    return logits - freq * generated - pres * (generated > 0).float()


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> Sampled:
    """Choose one token per row. Temperature 0 is greedy; top-k and top-p cut the tail first."""
    logits = logits.float()
    logprobs_all = torch.log_softmax(logits, dim=-1)
    vocab = logits.shape[-1]
    temps = torch.tensor([max(p.temperature, 1e-6) for p in params])[:, None]
    scaled = logits / temps
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params])
    top_p = torch.tensor([p.top_p for p in params])[:, None]
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab)[None, :]
    keep = ranks < top_k[:, None]
    probs_sorted = torch.softmax(sorted_logits.masked_fill(~keep, float("-inf")), dim=-1)
    before = probs_sorted.cumsum(dim=-1) - probs_sorted  # mass strictly before each token
    keep &= before < top_p  # the smallest set whose mass reaches top_p (always >= 1 token)
    sorted_logits = sorted_logits.masked_fill(~keep, float("-inf"))
    chosen = torch.empty(len(params), dtype=torch.long)
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0:
            chosen[row] = order[row, 0]
        else:
            probs = torch.softmax(sorted_logits[row], dim=-1)
            pick = torch.multinomial(probs, 1, generator=gen)
            chosen[row] = order[row, pick[0]]
    picked = logprobs_all.gather(1, chosen[:, None])[:, 0]
    top: list[list[tuple[int, float]]] = []
    for row, p in enumerate(params):
        if p.logprobs:
            values, ids = logprobs_all[row].topk(p.logprobs)
            top.append([(int(i), float(v)) for i, v in zip(ids, values, strict=True)])
        else:
            top.append([])
    return Sampled(chosen, picked, top)


class StopMatcher:
    """Finds stop sequences in streamed text, holding back any tail that could start one.

    ``feed`` returns the text safe to send now and whether a stop sequence ended the output (the
    stop sequence itself is never sent, as in OpenAI's API).
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        self.pending += text
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            at = min(i for i, _ in hits)
            out, self.pending = self.pending[:at], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out, False

    def flush(self) -> str:
        """What was held back, once the output ends for another reason."""
        out, self.pending = self.pending, ""
        return out
