"""The OpenAI-compatible API's schemas: request bodies, response bodies and the error body.

Requests are validated with OpenAI's ranges. Every field of OpenAI's published chat and
completions request schemas is accepted; one Lamina does not implement is refused with a 400 that
names it (``UnsupportedParameter``), and a field OpenAI does not have is refused as unknown, so a
typo is a clear 400 rather than a silently ignored setting. Response models document the answers
(and non-streaming answers are built with them); stream chunks are plain dicts of OpenAI's shape,
built per token group where validation would cost throughput.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lamina.core.errors import LaminaError
from lamina.models.guidance import DEFAULT_GUIDANCE
from lamina.serving.sampling import MAX_LOGPROBS, MIN_REPETITION_PENALTY, SamplingParams, stop_list

MAX_N = 16
MAX_TOKENS = 4096


class UnsupportedParameter(LaminaError):
    """A field of OpenAI's request schema that Lamina accepts but does not implement (HTTP 400)."""

    exit_code = 2
    http_status = 400
    code = "unsupported_parameter"

    def __init__(self, param: str, why: str) -> None:
        super().__init__(f"'{param}' is not supported by Lamina: {why}")
        self.param = param


def refuse_unsupported(request: BaseModel, rules: dict[str, tuple[Any, str]]) -> None:
    """Raise ``UnsupportedParameter`` for the first field set to a value its rule does not allow.

    ``rules``: field → (a predicate on the value, or the tuple of allowed values; why it is refused).
    """
    for name, (allowed, why) in rules.items():
        value = getattr(request, name)
        ok = allowed(value) if callable(allowed) else value in allowed
        if not ok:
            raise UnsupportedParameter(name, why)


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
    # token id (as a string, as OpenAI sends it) → a bias added to its logit
    logit_bias: dict[str, float] | None = None
    # hints and identifiers OpenAI accepts; they change nothing in how an answer is made
    service_tier: str | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys are token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values lie in [-100, 100], got {bias}")
        return value

    def check_supported(self) -> None:
        refuse_unsupported(self, self.unsupported_rules())

    def unsupported_rules(self) -> dict[str, tuple[Any, str]]:
        return {"service_tier": ((None, "auto", "default"), "there is one tier")}

    def sampling(self, max_tokens_default: int, logprobs: int | None, index: int = 0) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens or max_tokens_default,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=self.stop,  # the SamplingParams validator turns str/None into a list
            seed=None if self.seed is None else self.seed + index,
            logprobs=logprobs,
            logit_bias={int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None,
        )

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)  # 0 with echo: score the prompt only

    def unsupported_rules(self) -> dict[str, tuple[Any, str]]:
        return {
            **super().unsupported_rules(),
            "suffix": ((None, ""), "no model Lamina serves is trained to fill in the middle"),
            "best_of": (lambda v: v in (None, self.n), "answers are not ranked; best_of may only equal n"),
            "max_tokens": (lambda v: v != 0 or self.echo, "max_tokens 0 only scores the prompt, with echo"),
        }


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message answers this call
    refusal: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text parts
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionSpec


class RagOptions(BaseModel):
    """The ``rag`` extension of a chat request: answer from a collection's documents, with citations.

    ``answer``: ``generate`` (the model writes the answer from the retrieved sources, put in its
    context by a prompt template) or ``extractive`` (the best supporting sentences, no model call).
    Either way, a question nothing relevant is found for is answered "not found" without the model.
    """

    model_config = ConfigDict(extra="forbid")
    collection: str = Field(min_length=1, max_length=80)  # name or name@vN
    k: int = Field(4, ge=1, le=50)
    filters: dict[str, str | int | list[str | int]] | None = None
    mode: Literal["hybrid", "dense", "lexical", "rrf"] = "hybrid"
    answer: Literal["generate", "extractive"] = "generate"
    template: str = Field("rag-answer", min_length=1, max_length=160)  # a prompt template ref
    min_relevance: float | None = Field(None, ge=-1.0, le=1.0)  # default: lamina.rag.answer's
    rerank: str | None = Field(None, max_length=160)  # an imported cross-encoder (reranker) model ref


class ServerTools(BaseModel):
    """The ``server_tools`` extension: tools Lamina runs itself (``lamina.rag.tools``), in a loop —
    the model calls (decoded under the tools' JSON grammar), Lamina executes and hands back the
    results, until the model answers in words or ``max_steps`` calls have run."""

    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(min_length=1, max_length=8)  # calculator, retrieve, sql, http_get
    max_steps: int = Field(4, ge=1, le=8)
    collection: str | None = Field(None, max_length=80)  # what retrieve searches
    dataset: str | None = Field(None, max_length=160)  # what sql reads (a dataset version)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    rag: RagOptions | None = None  # an extension: retrieval-augmented answers with citations
    server_tools: ServerTools | None = None  # an extension: tools run by Lamina in a loop
    thread: str | None = Field(None, max_length=40)  # an extension: a thread Lamina keeps (POST /v1/threads)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: dict[str, Any] | None = None  # text, json_object, json_schema: constrained decoding
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI's other fields: accepted, and refused with a 400 naming them when set to something
    # Lamina does not do (see unsupported_rules)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    prompt_cache_key: str | None = None  # a caching hint: accepted, changes nothing here
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = Field(None, max_length=256)

    def unsupported_rules(self) -> dict[str, tuple[Any, str]]:
        none = (None,)
        return {
            **super().unsupported_rules(),
            "store": ((None, False), "Lamina stores no completions (its audit log records requests)"),
            "metadata": (lambda v: not v, "metadata is kept only with store, which Lamina does not do"),
            "modalities": (lambda v: v in (None, ["text"]), "Lamina's chat models answer in text only"),
            "audio": (none, "Lamina's chat models answer in text only"),
            "prediction": (none, "predicted outputs are not implemented"),
            "reasoning_effort": (none, "Lamina's models are not reasoning models"),
            "verbosity": (none, "Lamina's models have no verbosity setting"),
            "web_search_options": (none, "Lamina does not search the web (use RAG)"),
            "functions": (none, "deprecated by OpenAI: use tools"),
            "function_call": (none, "deprecated by OpenAI: use tool_choice"),
        }


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class ModerationRequest(BaseModel):
    """OpenAI's moderation request, answered by the rails policy (``lamina.guardrails``)."""

    model_config = ConfigDict(extra="forbid")
    input: str | list[str] = Field(min_length=1)
    model: str | None = None  # chooses the policy rule that matches this model (default: the base policy)
    stage: Literal["input", "output"] = "input"  # Lamina's extension: judge the text as a prompt or an answer


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]  # rail → whether it acted
    category_scores: dict[str, float]
    action: str  # Lamina: the strongest action (allow, flag, redact, block)
    text: str | None  # Lamina: the text after redaction (None when blocked)
    rails: list[dict[str, Any]]  # Lamina: every verdict


class ModerationList(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str = Field("", max_length=1000)
    n: int = Field(1, ge=1, le=16)
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = None  # an extension
    steps: int = Field(25, ge=1, le=1000)  # an extension: denoising steps for diffusion models
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0.0, le=20.0)  # an extension
    sampler: Literal["dpm", "ddim", "ddpm"] = "dpm"  # an extension: the diffusion sampler
    user: str | None = None


class InterpolationRequest(BaseModel):
    """``POST /v1/images/interpolations`` (an extension): images along a walk between two random
    latents of a VAE, GAN or diffusion model, end points included (the console's latent slider)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str = Field("", max_length=1000)  # the class (or caption) held fixed along the walk
    frames: int = Field(9, ge=2, le=32)
    method: Literal["slerp", "linear"] = "slerp"
    seed: int | None = None
    steps: int = Field(25, ge=1, le=1000)  # denoising steps (diffusion)


class NewThreadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, max_length=200)


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    role: Literal["admin", "developer", "reviewer", "user"] = "user"
    limits: dict[str, int] = Field(default_factory=dict)
    groups: list[str] = Field(default_factory=list, max_length=64)  # document groups it may read (RAG)


class PromoteRequest(BaseModel):
    """Point an alias at a version (``POST /admin/models/promote``; the CLI: ``lamina models promote``)."""

    model_config = ConfigDict(extra="forbid")
    ref: str = Field(min_length=1, max_length=160)  # NAME@vN
    alias: str = Field("champion", min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    reason: str | None = Field(None, max_length=500)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    alias: str = Field("champion", min_length=1, max_length=64)


class RailsTestRequest(BaseModel):
    """One text through the rails (``POST /admin/rails/test``; the CLI: ``lamina rails test``)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=32_000)
    stage: Literal["input", "output"] = "input"
    rails: list[str] = Field(default_factory=list, max_length=16)  # default: the served policy
    sources: list[str] = Field(default_factory=list, max_length=16)  # for the grounding rail


# -- responses ------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "content_filter"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lamina"
    family: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ImageItem(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class ImageList(BaseModel):
    created: int
    data: list[ImageItem]


# -- errors ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape: every error response of the API has this body."""

    error: ErrorDetail


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
ERROR_MEANINGS = {
    400: "invalid request (the message names the field)",
    401: "no valid API key",
    403: "the key's role may not call this route",
    404: "no such model or object",
    409: "the request conflicts with what is stored (already done, or its text was not kept)",
    413: "request body too large",
    429: "rate limit, or the server is at capacity (see Retry-After)",
    503: "the engine or catalog is unavailable",
    504: "generation ran past the server's time limit",
}
KEYED = (400, 401, 403, 413, 429)  # what any route behind a key can answer


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                  "code": code}
    }  # fmt: skip


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route really returns (all in ``ErrorBody``)."""
    return {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in sorted(set(codes))}


def answers(model: type[BaseModel], *codes: int, stream: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses``: 200 with ``model`` (or server-sent events with ``stream``) and ``codes``."""
    ok: dict[str, Any] = {"model": model, "description": "the answer"}
    if stream:
        ok["content"] = {"text/event-stream": {}}
        ok["description"] = "the answer; with stream: true, server-sent events ending with data: [DONE]"
    return {200: ok, **errors(*codes)}
