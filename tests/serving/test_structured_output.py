"""Structured output, tool calls, echo and OpenAI's full request schema, against a real server
through the official ``openai`` client (and raw HTTP where the client hides the wire)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest

from tests.serving.conftest import Server

MODEL = "shakes@champion"  # the quickstart's char-level model: a 64-token context, prompt included
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "mood": {"enum": ["merry", "sad"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 9},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 2}, "maxItems": 2},
    },
    "required": ["name", "mood", "n", "tags"],
    "additionalProperties": False,
}
# short names: the whole call must fit the tiny model's 64-token context
WEATHER = {
    "type": "function",
    "function": {
        "name": "wx",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"c": {"type": "string", "maxLength": 4}, "u": {"enum": ["c", "f"]}},
            "required": ["c", "u"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "t", "parameters": {
    "type": "object", "properties": {"z": {"enum": ["utc", "lt"]}}, "required": ["z"],
    "additionalProperties": False}}}  # fmt: skip


def client(server: Server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=server.user_key, max_retries=0)


def test_json_schema_output_validates_every_time(server: Server) -> None:
    oa = client(server)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}

    def one(seed: int) -> tuple[str, str]:
        r = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], response_format=fmt,
            temperature=1.0, seed=seed, max_tokens=60,
        )  # fmt: skip
        return r.choices[0].message.content, r.choices[0].finish_reason

    with ThreadPoolExecutor(16) as pool:  # batched with each other in the engine
        answers = list(pool.map(one, range(200)))
    for text, finish in answers:
        assert finish == "stop", (text, finish)
        jsonschema.validate(json.loads(text), SCHEMA)
    assert len({text for text, _ in answers}) > 20  # sampled, not one canned answer


def test_json_object_mode_and_a_streamed_schema(server: Server) -> None:
    oa = client(server)
    r = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=60, seed=3,
        response_format={"type": "json_object"}, temperature=0.7,
    )  # fmt: skip
    if r.choices[0].finish_reason == "stop":
        json.loads(r.choices[0].message.content)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    stream = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], response_format=fmt, stream=True,
        max_tokens=60, seed=4,
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_a_bad_schema_is_a_400_naming_it(server: Server) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "response_format": bad}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=server.headers(), timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_response_format", r.text


def test_tool_calls_come_back_in_openais_shape(server: Server) -> None:
    oa = client(server)
    named = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "wx"}}, max_tokens=60, seed=1,
    )  # fmt: skip
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "wx" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    required = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER, TIME],
        tool_choice="required", parallel_tool_calls=False, max_tokens=60, seed=2,
    )  # fmt: skip
    calls = required.choices[0].message.tool_calls
    assert calls and all(c.function.name in ("wx", "t") for c in calls)

    # the answer goes back as a tool message, and the conversation goes on
    follow = oa.chat.completions.create(
        model=MODEL, max_tokens=2, seed=1, tools=[WEATHER],
        messages=[{"role": "user", "content": "hi"}, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "ok"}],
    )  # fmt: skip
    assert follow.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_calls_parse_in_the_openai_client(server: Server) -> None:
    oa = client(server)
    stream = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], stream=True,
        tool_choice={"type": "function", "function": {"name": "wx"}}, max_tokens=60, seed=5,
    )  # fmt: skip
    names, arguments, finish = [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.function.name:
                    names.append(delta.function.name)
                arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert names == ["wx"] and finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_echo_scores_the_prompt_as_lm_eval_asks(server: Server) -> None:
    body = {"model": MODEL, "prompt": "ROMEO: hi", "echo": True, "logprobs": 1, "max_tokens": 1,
            "temperature": 0}  # fmt: skip
    r = httpx.post(f"{server.url}/v1/completions", json=body, headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"].startswith("ROMEO: hi") and "".join(lp["tokens"]).startswith("ROMEO: hi")
    assert lp["token_logprobs"][0] is None and all(v <= 0 for v in lp["token_logprobs"][1:])
    assert lp["top_logprobs"][0] is None and all(len(t) >= 1 for t in lp["top_logprobs"][1:])
    assert len(lp["tokens"]) == len("ROMEO: hi") + 1  # char-level prompt, plus the one new token
    body["max_tokens"] = 0  # the prompt alone
    only = httpx.post(f"{server.url}/v1/completions", json=body, headers=server.headers(), timeout=30).json()
    assert only["choices"][0]["text"] == "ROMEO: hi" and only["usage"]["completion_tokens"] == 0
    assert only["choices"][0]["logprobs"]["token_logprobs"] == lp["token_logprobs"][:-1]


# One plausible value for every field of OpenAI's published chat request schema.
CHAT_FIELDS = {
    "audio": {"voice": "alloy", "format": "wav"}, "frequency_penalty": 0.1, "function_call": "auto",
    "functions": [{"name": "f", "parameters": {}}], "logit_bias": {"5": 1.0}, "logprobs": True,
    "max_completion_tokens": 5, "max_tokens": 5, "metadata": {"a": "b"}, "modalities": ["text"], "n": 2,
    "parallel_tool_calls": True, "prediction": {"type": "content", "content": "x"},
    "presence_penalty": 0.1, "prompt_cache_key": "k", "prompt_cache_retention": "24h",
    "reasoning_effort": "low", "response_format": {"type": "text"}, "safety_identifier": "u1", "seed": 1,
    "service_tier": "auto", "stop": ["\n"], "store": False, "stream": False, "stream_options": None,
    "temperature": 0.5, "tool_choice": "none", "tools": [WEATHER], "top_logprobs": 2, "top_p": 0.9,
    "user": "u1", "verbosity": "low", "web_search_options": {},
}  # fmt: skip
COMPLETION_FIELDS = {
    "best_of": 2, "echo": True, "frequency_penalty": 0.1, "logit_bias": {"5": -1.0}, "logprobs": 2,
    "max_tokens": 5, "n": 1, "presence_penalty": 0.1, "seed": 1, "stop": "\n", "stream": False,
    "stream_options": None, "suffix": "the end", "temperature": 0.5, "top_p": 0.9, "user": "u1",
}  # fmt: skip


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [("/v1/chat/completions", f, v) for f, v in CHAT_FIELDS.items()]
    + [("/v1/completions", f, v) for f, v in COMPLETION_FIELDS.items()],
)
def test_every_openai_field_is_served_or_refused_by_name(
    server: Server, route: str, field: str, value
) -> None:
    body = {"model": MODEL, field: value}
    if route.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "ROMEO:"
    r = httpx.post(f"{server.url}{route}", json=body, headers=server.headers(), timeout=30)
    if r.status_code != 200:
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == "unsupported_parameter", (field, r.text)
        assert error["param"] == field and f"'{field}' is not supported" in error["message"]
    else:
        assert r.json()["choices"]


def test_logit_bias_steers_tokens(server: Server) -> None:
    oa = client(server)
    ask = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 6, "temperature": 0}
    plain = oa.completions.create(**ask).choices[0].text
    banned = {str(t): -100 for t in _ids(server, plain[:1])}
    steered = oa.completions.create(**ask, logit_bias=banned).choices[0].text
    assert plain and not steered.startswith(plain[:1])


def _ids(server: Server, text: str) -> list[int]:
    from transformers import AutoTokenizer

    from lamina.core.workspace import Workspace
    from lamina.hub.registry import model_path

    ws = Workspace.open(server.workspace)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path(ws, MODEL)))
    finally:
        ws.close()
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_parallel_calls_are_an_array_of_calls() -> None:
    from lamina.serving.grammar import tool_call_schema
    from lamina.serving.shaping import tool_calls_from

    schema = tool_call_schema([WEATHER, TIME], parallel=True)
    calls = [{"name": "wx", "arguments": {"c": "ab", "u": "f"}}, {"name": "t", "arguments": {"z": "utc"}}]
    jsonschema.validate(calls, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"name": "wx", "arguments": {"z": "utc"}}], schema)
    parsed = tool_calls_from(json.dumps(calls))
    assert [c["function"]["name"] for c in parsed] == ["wx", "t"]
    assert json.loads(parsed[1]["function"]["arguments"]) == {"z": "utc"}
    assert tool_calls_from("To be, or not") is None and tool_calls_from('{"name": 1}') is None
