"""Decoder-only transformer LMs, configured through transformers' Llama architecture.

RMSNorm, rotary position embeddings, SwiGLU MLP and grouped-query attention come from
``LlamaForCausalLM``; this file holds Lamina's presets, the validated config and glue, so a saved
model loads with ``AutoModelForCausalLM.from_pretrained`` unchanged.

Presets, with parameter counts measured for Tiny Shakespeare's character vocabulary (72 tokens with
the special ones; a BPE vocabulary adds vocab × width embedding parameters):

| preset | layers | width | heads (kv) | MLP  | context | parameters |
|--------|--------|-------|------------|------|---------|------------|
| tiny   | 4      | 128   | 4 (4)      | 512  | 64      | 1.06 M     |
| small  | 6      | 384   | 6 (2)      | 1024 | 256     | 9.47 M     |
| base   | 8      | 512   | 8 (4)      | 1536 | 512     | 25.2 M     |
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lamina.core.errors import ConfigError
from lamina.core.settings import validation_summary

Preset = Literal["tiny", "small", "base"]

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 128,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 4,
        "intermediate_size": 512,
        "context_length": 64,
    },
    "small": {
        "hidden_size": 384,
        "num_layers": 6,
        "num_heads": 6,
        "num_kv_heads": 2,
        "intermediate_size": 1024,
        "context_length": 256,
    },
    "base": {
        "hidden_size": 512,
        "num_layers": 8,
        "num_heads": 8,
        "num_kv_heads": 4,
        "intermediate_size": 1536,
        "context_length": 512,
    },
}


class LMConfig(BaseModel):
    """Architecture of a causal LM. Start from a preset and override any field."""

    model_config = ConfigDict(extra="forbid")
    preset: Preset | None = "tiny"
    vocab_size: int = Field(..., ge=2)
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=8)
    context_length: int = Field(64, ge=4)
    dropout: float = Field(0.0, ge=0, lt=1)
    rope_theta: float = 10000.0
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _shapes_fit(self) -> LMConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("the head size (hidden_size / num_heads) must be even for rotary embeddings")
        return self

    @classmethod
    def from_preset(cls, preset: Preset, vocab_size: int, **overrides: Any) -> LMConfig:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}", hint=f"presets: {', '.join(PRESETS)}")
        from pydantic import ValidationError

        try:
            return cls(
                preset=preset,
                vocab_size=vocab_size,
                **{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}},
            )
        except ValidationError as exc:
            problems = validation_summary(exc)
            raise ConfigError(f"model config does not fit: {problems}") from None

    def to_hf(self, tokenizer: Any) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.context_length,
            rope_theta=self.rope_theta,
            attention_dropout=self.dropout,
            tie_word_embeddings=self.tie_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )


def build_model(config: LMConfig, tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (seeded)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config.to_hf(tokenizer))
    if config.dropout:
        # Llama has attention dropout only; residual dropout is added on the embeddings' output.
        model.model.embed_tokens.register_forward_hook(
            lambda _m, _i, out: torch.nn.functional.dropout(out, config.dropout, model.training)
        )
    return model


def param_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(config: LMConfig) -> float:
    """Training FLOPs per token: 6·N for the weights plus attention (PaLM appendix B)."""
    head = config.hidden_size // config.num_heads
    kv = config.num_kv_heads * head
    per_layer = (
        2 * config.hidden_size * config.hidden_size  # q, o
        + 2 * config.hidden_size * kv  # k, v
        + 3 * config.hidden_size * config.intermediate_size  # SwiGLU
    )
    n = config.num_layers * per_layer + config.vocab_size * config.hidden_size
    attention = 12 * config.num_layers * config.hidden_size * config.context_length
    return 6 * n + attention


def load_pretrained(folder: Any) -> tuple[Any, Any]:
    """(model, tokenizer) from a saved folder, without transformers' per-load progress bars."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))
