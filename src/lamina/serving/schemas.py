"""Request bodies of the OpenAI-compatible API, validated with OpenAI's ranges.

Unknown fields are refused (as OpenAI does), so a typo is a clear 400 rather than a silently
ignored setting. Response bodies are built as plain dicts in ``api.py``: they follow OpenAI's
shapes exactly and need no validation of their own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lamina.serving.sampling import MAX_LOGPROBS, MIN_REPETITION_PENALTY, SamplingParams, stop_list

MAX_N = 16
MAX_TOKENS = 4096


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # an extension, as in vLLM
    repetition_penalty: float = Field(1.0, ge=MIN_REPETITION_PENALTY, le=10.0)  # an extension, as in vLLM
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stop_list(value)  # the engine's rules, checked here so a bad stop is a 400 naming it
        return value

    seed: int | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)

    def sampling(self, max_tokens_default: int, logprobs: int | None, index: int = 0) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens or max_tokens_default,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=self.stop,  # type: ignore[arg-type]  # the validator turns str/None into a list
            seed=None if self.seed is None else self.seed + index,
            logprobs=logprobs,
        )

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text parts
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str = Field("", max_length=1000)
    n: int = Field(1, ge=1, le=16)
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = None  # an extension
    steps: int = Field(25, ge=1, le=1000)  # an extension: denoising steps for diffusion models
    guidance: float = Field(2.0, ge=0.0, le=20.0)  # an extension
    user: str | None = None


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    role: Literal["admin", "developer", "user"] = "user"
    limits: dict[str, int] = Field(default_factory=dict)
