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
MIN_REPETITION_PENALTY = 0.01
# what a -inf (or NaN) log-probability is reported as: JSON has no inf (vLLM's choice too)
LOGPROB_FLOOR = -9999.0


class SamplingParams(BaseModel):
    """One request's sampling settings, validated to OpenAI's ranges (a clear 400 otherwise)."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # 0: off
    # from 0.01: smaller factors multiply logits past float32's range (inf, then NaN probabilities)
    repetition_penalty: float = Field(1.0, ge=MIN_REPETITION_PENALTY, le=10.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    # token id → added to its logit (OpenAI's logit_bias, -100..100)
    logit_bias: dict[int, float] | None = None
    grammar: str | None = None  # a grammar.GrammarSpec, encoded: the output must match it
    # log-probabilities of the prompt's tokens too (with this many alternatives each): echo
    prompt_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @property
    def constrained(self) -> bool:
        """Whether each step must edit this row's logits (a grammar's mask, a logit bias)."""
        return self.grammar is not None or bool(self.logit_bias)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        return stop_list(value)


def stop_list(value: object) -> object:
    """``stop`` as a list (OpenAI takes a string, a list or null); at most ``MAX_STOP``, none empty."""
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


def needs_penalties(params: list[SamplingParams]) -> bool:
    """Whether any row asks for a penalty (most requests do not: skip the work then)."""
    return any(
        p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params
    )


def apply_penalties(
    logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor, params: list[SamplingParams]
) -> torch.Tensor:
    """Penalise tokens already used. ``seen``/``generated``: (B, V) counts over prompt+output / output."""
    return penalise(logits, seen, generated, penalty_knobs(params, logits.device))


def penalty_knobs(params: list[SamplingParams], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(B, 3)``: each row's repetition, frequency and presence penalty."""
    return torch.tensor(
        [[p.repetition_penalty, p.frequency_penalty, p.presence_penalty] for p in params], device=device
    )


def penalise(
    logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor, knobs: torch.Tensor
) -> torch.Tensor:
    """``apply_penalties`` on tensors only (so a compiled step can run it); knobs ``(B, 3)``.

    With no penalty (1, 0, 0) the logits come back unchanged, bit for bit.
    """
    rep, freq, pres = knobs[:, 0:1], knobs[:, 1:2], knobs[:, 2:3]
    logits = logits.float()
    used = seen > 0
    penalised = torch.where(logits > 0, logits / rep, logits * rep)
    logits = torch.where(used & (rep != 1.0), penalised, logits)
    return logits - freq * generated - pres * (generated > 0).float()


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> Sampled:
    """Choose one token per row. Temperature 0 is greedy; top-k and top-p cut the tail first.

    Each row draws one uniform number, from its own seeded generator when it has one, so a seed
    gives the same tokens whatever else is batched with it (``choose`` says how it is used). About
    20 tensor operations per step whatever the batch size.
    """
    logits = logits.float()
    logprobs_all = torch.log_softmax(logits, dim=-1)
    rows, vocab = logits.shape
    greedy = [p.temperature == 0 for p in params]
    if all(greedy):
        chosen = logits.argmax(dim=-1)
    else:
        uniform = torch.rand(rows)
        for row, gen in enumerate(generators):
            if gen is not None and not greedy[row]:
                uniform[row] = torch.rand((), generator=gen)
        chosen = choose(logits, choice_knobs(params, vocab), uniform)
    picked = logprobs_all.gather(1, chosen[:, None])[:, 0]
    return Sampled(chosen, picked, [top_alternatives(logprobs_all[row], p) for row, p in enumerate(params)])


def top_alternatives(logprobs: torch.Tensor, params: SamplingParams) -> list[tuple[int, float]]:
    """The ``logprobs`` most likely tokens of one row ``(V,)`` and their log-probabilities, if asked."""
    if not params.logprobs:
        return []
    values, ids = logprobs.topk(params.logprobs)
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


def choice_knobs(params: list[SamplingParams], vocab: int) -> torch.Tensor:
    """``(B, 3)``: each row's temperature (0: greedy), top-k (``vocab`` when off) and top-p."""
    return torch.tensor([[p.temperature, p.top_k if 0 < p.top_k < vocab else vocab, p.top_p] for p in params])


def choose(logits: torch.Tensor, knobs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The token of each row for its ``choice_knobs`` and one uniform number ``(B,)``; tensors only.

    Inverse CDF over the sorted distribution: a row keeps its ``top_k`` best tokens, then the
    smallest prefix of those whose (renormalised) mass reaches ``top_p``, and takes the first kept
    token whose cumulative probability reaches the uniform number. Temperature 0 takes the argmax.
    Written without Python branching so the compiled single-row step runs the same code.
    """
    rows = logits.shape[0]
    temperature = knobs[:, 0]
    greedy = temperature == 0
    temps = torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    top_k, top_p = knobs[:, 1].long(), knobs[:, 2]
    ordered, order = (logits / temps).sort(dim=-1, descending=True)
    cdf = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
    top_k_mass = cdf.gather(1, (top_k - 1)[:, None])[:, 0]
    before = torch.cat([cdf.new_zeros(rows, 1), cdf[:, :-1]], dim=1)  # mass strictly before each
    # at least the best token: a top_p that rounds to 0 in float32 (1e-300) must not leave none
    # (an empty nucleus indexed position -1, the engine step failed, and the request hung)
    nucleus = (before < (top_p * top_k_mass)[:, None]).sum(dim=-1).clamp(min=1)
    kept = torch.minimum(nucleus, top_k).clamp(min=1)
    target = uniform * cdf.gather(1, (kept - 1)[:, None])[:, 0]
    index = torch.minimum((cdf < target[:, None]).sum(dim=-1), kept - 1)
    chosen = order.gather(1, index[:, None])[:, 0]
    return torch.where(greedy, logits.argmax(dim=-1), chosen)


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
