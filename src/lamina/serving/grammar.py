"""Grammar-constrained decoding: structured output and tool calls that always parse.

``response_format`` (``json_object``, ``json_schema``) and forced tool calls become a JSON grammar;
at every step the engine masks each constrained row's logits to the tokens the grammar allows
there, so even a tiny model's answer is valid JSON that matches the schema (unless it runs out of
``max_tokens`` first). Rows with and without grammars decode in the same batch.

Library: xgrammar, chosen by measurement (docs/benchmarks.md, "Structured output"): the cheapest
mask per token of the three tried; llguidance was two orders of magnitude slower per token on the
same loop and cannot read a char-level tokenizer's ``Fuse`` decoder at all; outlines-core builds
an index per schema up front (slower to compile).

A grammar travels as a small JSON string (``GrammarSpec.encode``) inside ``SamplingParams``, so the
engine process gets it with the request and compiles it there (compiled grammars are cached).
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lamina.core.errors import LaminaError


class GrammarError(LaminaError):
    """The schema cannot be compiled, or this model's vocabulary cannot write it (HTTP 400)."""

    exit_code = 2
    http_status = 400
    code = "invalid_response_format"


@dataclass(frozen=True)
class GrammarSpec:
    """What to constrain to: any JSON object (``json``) or JSON matching ``schema``."""

    kind: Literal["json", "json_schema"]
    schema: dict[str, Any] | None = None
    strict: bool = True

    def encode(self) -> str:
        return json.dumps({"kind": self.kind, "schema": self.schema, "strict": self.strict}, sort_keys=True)

    @staticmethod
    def decode(text: str) -> GrammarSpec:
        data = json.loads(text)
        return GrammarSpec(data["kind"], data.get("schema"), bool(data.get("strict", True)))


def require_xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError:  # pragma: no cover - a core dependency
        raise GrammarError(
            "structured output needs the 'xgrammar' package", hint="pip install xgrammar"
        ) from None
    return xgrammar


class Grammars:
    """Compiles grammars for one tokenizer (cached) and masks a batch's logits with its matchers."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._compiler: Any = None
        self._plain: torch.Tensor | None = None  # packed like a bitmask: tokens without control chars
        self._lock = threading.Lock()  # the compiler is built once, on first use

    def _compile(self, encoded: str) -> Any:
        xgr = require_xgrammar()
        with self._lock:
            if self._compiler is None:
                stop = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else None
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=stop
                )
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
                self._plain = _plain_tokens(info, self.vocab_size)
        spec = GrammarSpec.decode(encoded)
        try:
            # json_object: any JSON *object* (OpenAI's guarantee), not any JSON value
            schema = {"type": "object"} if spec.kind == "json" else spec.schema
            strict = spec.strict if spec.kind == "json_schema" else False
            # compact JSON (no free whitespace): a small model finishes its answer sooner
            return self._compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=strict
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            raise GrammarError(f"the JSON schema cannot be used: {str(exc).splitlines()[0][:300]}") from None

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Grammars per engine, which lives as long
    def compiled(self, encoded: str) -> Any:
        return self._compile(encoded)

    def matcher(self, encoded: str) -> Any:
        """A fresh matcher for one request; ``GrammarError`` when this vocabulary cannot start it."""
        xgr = require_xgrammar()
        matcher = xgr.GrammarMatcher(self.compiled(encoded))
        mask = xgr.allocate_token_bitmask(1, self.vocab_size)
        matcher.fill_next_token_bitmask(mask)
        if self._plain is not None:
            mask[0] &= self._plain
        if not bool(mask.any()):
            raise GrammarError(
                "this model's vocabulary has no token that can start the requested JSON",
                hint="use a model whose tokenizer covers JSON's characters ({, \", :) — models Lamina "
                "trains now always do",
            )
        return matcher

    def apply(self, logits: torch.Tensor, matchers: list[Any]) -> list[bool]:
        """Mask ``logits`` ``(B, V)`` in place for the rows that have a matcher; per row, whether any
        token is left (a row with none can only end)."""
        xgr = require_xgrammar()
        rows = [i for i, m in enumerate(matchers) if m is not None]
        alive = [True] * len(matchers)
        if not rows:
            return alive
        mask = xgr.allocate_token_bitmask(len(matchers), self.vocab_size)
        for row in rows:
            matchers[row].fill_next_token_bitmask(mask, row)
            if self._plain is not None:  # see _plain_tokens
                mask[row] &= self._plain
            alive[row] = bool(mask[row].any())
        width = logits.shape[-1]
        if logits.dtype != torch.float32:
            raise TypeError("grammar masks apply to float32 logits")
        xgr.apply_token_bitmask_inplace(logits, mask, vocab_size=min(width, self.vocab_size), indices=rows)
        return alive


def _plain_tokens(info: Any, vocab_size: int) -> torch.Tensor:
    """A packed mask (xgrammar's layout: bit ``j`` of word ``w`` is token ``32w + j``) of the tokens
    whose text has no control character.

    Why: xgrammar's JSON grammars let a string hold raw control characters (U+0000-U+001F), which
    JSON forbids (``json.loads`` and ``JSON.parse`` reject them); compact JSON needs no newline or
    tab outside strings either. So constrained rows never pick such tokens. Special tokens (EOS)
    decode to nothing here and stay allowed.
    """
    words = (vocab_size + 31) // 32
    plain = torch.zeros(words * 32, dtype=torch.bool)
    for token, text in enumerate(info.decoded_vocab[:vocab_size]):
        plain[token] = not any(byte < 0x20 for byte in text)
    plain[len(info.decoded_vocab) :] = True
    weights = torch.tensor([1 << j for j in range(32)], dtype=torch.int64)
    packed = (plain.view(words, 32).long() * weights).sum(-1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def response_format_spec(response_format: dict[str, Any] | None) -> GrammarSpec | None:
    """OpenAI's ``response_format`` as a grammar (None for plain text)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return GrammarSpec("json")
    if kind == "json_schema":
        block = response_format.get("json_schema") or {}
        schema = block.get("schema")
        if not isinstance(schema, dict):
            raise GrammarError("response_format.json_schema.schema must be a JSON schema object")
        # strict or not, no properties beyond the schema's: the answer still validates, and is shorter
        return GrammarSpec("json_schema", schema, True)
    raise GrammarError(
        f"response_format type {kind!r} is not supported", hint="use text, json_object or json_schema"
    )


def tool_call_schema(tools: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """The JSON a constrained tool call is written in: ``{"name": …, "arguments": {…}}`` for one of
    ``tools``, or an array of them when calls may go in parallel."""
    calls = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if not parallel:
        return one
    return {"type": "array", "items": one, "minItems": 1}
