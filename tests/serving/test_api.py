"""A real ``lamina serve`` process, called by the official ``openai`` client and by raw httpx."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lamina.gateway.metrics import read_engine_timings
from lamina.serving.quantize import resolve_precision
from tests.conftest import lamina_here, run_lamina
from tests.serving.conftest import ADMIN, Server, audit_row


def client(server: Server, key: str | None = None):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key or server.user_key, max_retries=0)


def test_openai_client_chat_completions_embeddings_images_models(server: Server) -> None:
    oa = client(server)
    ids = {m.id for m in oa.models.list().data}
    assert {"shakes@champion", "digits-diffusion@champion", "all-MiniLM-L6-v2"} <= ids

    chat = oa.chat.completions.create(
        model="shakes@champion", messages=[{"role": "user", "content": "Speak"}], max_tokens=12, seed=1
    )
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.completion_tokens >= 1 and chat.usage.prompt_tokens > 0

    pieces, finish = [], None
    stream = oa.chat.completions.create(
        model="shakes@champion",
        messages=[{"role": "user", "content": "Speak"}],
        max_tokens=12,
        seed=1,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == chat.choices[0].message.content and finish == chat.choices[0].finish_reason

    done = oa.completions.create(
        model="shakes@champion", prompt="ROMEO:", max_tokens=8, temperature=0, logprobs=2, n=2
    )
    assert len(done.choices) == 2 and done.choices[0].text == done.choices[1].text  # greedy twice
    assert len(done.choices[0].logprobs.tokens) == done.usage.completion_tokens // 2
    assert all(lp <= 0 for lp in done.choices[0].logprobs.token_logprobs)

    emb = oa.embeddings.create(model="all-MiniLM-L6-v2", input=["a sneaker", "a shoe"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384
    floats = oa.embeddings.create(model="all-MiniLM-L6-v2", input="a sneaker", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(emb.data[0].embedding, abs=1e-6)

    img = oa.images.generate(model="digits-diffusion@champion", prompt="seven", n=2, extra_body={"steps": 3})
    from PIL import Image

    pictures = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in img.data]
    assert len(pictures) == 2 and pictures[0].size == (8, 8)


def test_sse_format_for_raw_clients(server: Server) -> None:
    body = {"model": "shakes@champion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers(), timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{not json"}, 400, "invalid_request"),
        ({"content": b'{"model": "shakes@champion", "prompt": "\xff\xfe"}'}, 400, "invalid_request"),
        ({"json": {"model": "shakes@champion", "prompt": 42}}, 400, "invalid_request"),
        ({"json": {"model": "nope@champion", "prompt": "x"}}, 404, "model_not_found"),
        ({"json": {"model": "shakes@champion", "prompt": "x", "n": 99}}, 400, "invalid_request"),
        (
            {"json": {"model": "shakes@champion", "prompt": "x", "max_tokens": 0}},
            400,
            "unsupported_parameter",
        ),
        ({"json": {"model": "shakes@champion", "prompt": "x", "temperature": 7}}, 400, "invalid_request"),
        ({"json": {"model": "shakes@champion", "prompt": "x", "bogus": 1}}, 400, "invalid_request"),
        ({"json": {"model": "shakes@champion", "prompt": "x" * 500}}, 400, "context_length_exceeded"),
        ({"json": {"model": "digits-diffusion@champion", "prompt": "x"}}, 400, "invalid_model"),
        ({"content": b"{" + b" " * 2_000_000 + b"}"}, 413, "request_too_large"),
    ],
)
def test_bad_requests_get_openai_errors_never_5xx(
    server: Server, kwargs: dict, status: int, code: str
) -> None:
    headers = {**server.headers(), "content-type": "application/json"}
    r = httpx.post(f"{server.url}/v1/completions", headers=headers, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and "type" in error


def test_keys_and_roles(server: Server) -> None:
    url = server.url
    assert httpx.get(f"{url}/health").status_code == 200  # public
    missing = httpx.get(f"{url}/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{url}/v1/models", headers=server.headers("lam-wrong")).status_code == 401
    forbidden = httpx.get(f"{url}/metrics", headers=server.headers())
    assert forbidden.status_code == 403 and forbidden.json()["error"]["type"] == "permission_error"
    metrics = httpx.get(f"{url}/metrics", headers=server.headers(ADMIN))
    assert metrics.status_code == 200 and "lamina_time_to_first_token_seconds" in metrics.text
    assert 'lamina_energy_joules{method="' in metrics.text and "lamina_co2_grams" in metrics.text
    for seed in (1, 2):  # the engine reports an iteration's time with the next events: the first's reach us
        body = {"model": "shakes@champion", "prompt": "ROMEO:", "max_tokens": 12, "seed": seed}
        assert httpx.post(f"{url}/v1/completions", headers=server.headers(), json=body, timeout=60).is_success
    timings = read_engine_timings(httpx.get(f"{url}/metrics", headers=server.headers(ADMIN)).text)
    assert timings[("prefill", 1)][0] >= 1 and timings[("decode", 1)][0] >= 11  # one prefill, 11 decode steps
    assert all(seconds > 0 for _, seconds in timings.values()), timings
    made = lamina_here(
        "--workspace", str(server.workspace), "keys", "create", "--role", "user", "--name", "tmp", "--json"
    )
    info = json.loads(made.stdout)
    assert httpx.get(f"{url}/v1/models", headers=server.headers(info["key"])).status_code == 200
    lamina_here("--workspace", str(server.workspace), "keys", "revoke", info["id"])
    assert httpx.get(f"{url}/v1/models", headers=server.headers(info["key"])).status_code == 401


def test_rate_limit_answers_429_with_retry_after(server: Server) -> None:
    made = lamina_here(
        "--workspace", str(server.workspace), "keys", "create", "--role", "user", "--name", "slow",
        "--rpm", "2", "--json",
    )  # fmt: skip
    key = json.loads(made.stdout)["key"]
    codes = [httpx.get(f"{server.url}/v1/models", headers=server.headers(key)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = httpx.get(f"{server.url}/v1/models", headers=server.headers(key))
    assert (
        int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    )


def test_every_request_is_audited(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/v1/completions", headers=server.headers(),
        json={"model": "shakes@champion", "prompt": "KING", "max_tokens": 3}, timeout=30,
    )  # fmt: skip
    columns = "route, status_code, tokens_out, model_version_id, key_id, request_text"
    row = audit_row(server.workspace, r.headers["x-request-id"], columns)
    assert row is not None
    route, status, tokens_out, version, key_id, text = row
    used = r.json()["usage"]["completion_tokens"]
    assert (
        (route, status, tokens_out) == ("/v1/completions", 200, used) and version.startswith("mv-") and key_id
    )
    assert text is None  # request text is stored only when server.audit_text is on


def engines(server: Server) -> dict[str, dict]:
    ready = httpx.get(f"{server.url}/ready", headers=server.headers(ADMIN), timeout=30).json()
    return {e["version"]: e for e in ready["engines"]}


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_text_models_decode_on_the_fast_path_in_their_own_process(server: Server) -> None:
    client(server).completions.create(model="shakes@champion", prompt="A", max_tokens=2)
    engine = next(e for e in engines(server).values() if e["model"].startswith("shakes"))
    assert engine["runner"] == "SlotRunner" and engine["precision"] == resolve_precision("auto")
    assert engine["process"] != server.process.pid and process_exists(engine["process"])


def test_alias_move_switches_version_without_restart(server: Server) -> None:
    oa = client(server)
    before = oa.completions.create(model="shakes@champion", prompt="A", max_tokens=2).system_fingerprint
    old_process = engines(server)[before]["process"]
    trained = lamina_here(
        "--workspace", str(server.workspace), "train", "lm", "--dataset", "shakespeare", "--name", "shakes",
        "--max-steps", "3", "--seed", "7", "--alias", "champion", "--no-track",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    after = oa.completions.create(model="shakes@champion", prompt="A", max_tokens=2).system_fingerprint
    assert before != after and after.startswith("mv-")
    oa.completions.create(model="shakes@champion", prompt="A", max_tokens=2)  # the idle old engine retires
    assert not process_exists(old_process) and before not in engines(server)
    # the later tests ask shakes@champion for text: give them back the quickstart's model (a 3-step
    # model can answer nothing at all)
    back = lamina_here("--workspace", str(server.workspace), "models", "promote", "shakes@v1", "champion")
    assert back.returncode == 0, back.stderr


def test_batch_generation_from_jsonl(server: Server, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "ROMEO:", "max_tokens": 5, "temperature": 0}, {"prompt": "KING", "max_tokens": 3}]
    prompts.write_text("\n".join(json.dumps(r) for r in rows * 3) + "\n")
    out = tmp_path / "out.jsonl"
    done = lamina_here(
        "--workspace", str(server.workspace), "generate", "text", "shakes@champion", "--input", str(prompts),
        "--output", str(out), "--seed", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in results] == [r["prompt"] for r in rows * 3]
    assert all(r["completion_tokens"] <= (5 if r["prompt"] == "ROMEO:" else 3) for r in results)
    assert results[0]["text"] == results[2]["text"]  # greedy rows agree
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "x", "temperature": 9}\n')
    refused = lamina_here(
        "--workspace", str(server.workspace), "generate", "text", "shakes@champion", "--input", str(bad),
        "--output", str(tmp_path / "never.jsonl"),
    )  # fmt: skip
    assert (
        refused.returncode == 2
        and "bad.jsonl:2" in refused.stderr
        and not (tmp_path / "never.jsonl").exists()
    )


def test_terminal_chat_local_and_through_the_server(server: Server) -> None:
    for extra in ([], ["--url", server.url, "--key", server.user_key]):
        done = subprocess.run(
            [sys.executable, "-m", "lamina", "--workspace", str(server.workspace), "chat", "shakes@champion",
             "--max-tokens", "5", *extra],
            input="hello\n/reset\nagain\n/exit\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("shakes@champion> ") == 2, done.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "lamina", "chat", "shakes@champion", "--url", server.url, "--key", "lam-bad"],
        input="hello\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode != 0 and "401" in wrong.stderr


def test_serving_beyond_localhost_needs_an_admin_key(tmp_path: Path) -> None:
    from lamina.core.workspace import Workspace

    Workspace.init(tmp_path / "ws")[0].close()
    refused = run_lamina("--workspace", str(tmp_path / "ws"), "serve", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "admin key" in refused.stderr


def test_vllm_backend_refuses_clearly_without_a_gpu(tmp_path: Path) -> None:
    from lamina.core.workspace import Workspace
    from lamina.serving.vllm_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("a GPU with vLLM is present: covered by the gpu test")
    Workspace.init(tmp_path / "ws")[0].close()
    refused = run_lamina("--workspace", str(tmp_path / "ws"), "serve", "--backend", "vllm")
    assert refused.returncode == 2 and reason in refused.stderr


@pytest.mark.gpu
def test_vllm_backend_generates(server: Server) -> None:  # runs only where CUDA exists
    from lamina.serving.vllm_backend import unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    from lamina.core.workspace import Workspace
    from lamina.hub.registry import model_path
    from lamina.serving.sampling import SamplingParams
    from lamina.serving.vllm_backend import VLLMEngine
    from lamina.training.sft import load_any

    ws = Workspace.open(server.workspace)
    folder = model_path(ws, "shakes@champion")
    _, tokenizer = load_any(folder)
    engine = VLLMEngine(str(folder), tokenizer)
    events = list(engine.submit("ROMEO:", SamplingParams(max_tokens=8, temperature=0)).events(timeout=120))
    assert events[-1].finish_reason in ("length", "stop")


def test_admin_routes_manage_keys_and_read_the_audit_log(server: Server) -> None:
    admin = server.headers(ADMIN)
    made = httpx.post(
        f"{server.url}/admin/keys", json={"name": "via-api", "role": "developer"}, headers=admin
    )
    assert made.status_code == 201 and made.json()["key"].startswith("lam-")
    dev = server.headers(made.json()["key"])
    assert (
        httpx.get(f"{server.url}/admin/audit?limit=5", headers=dev).status_code == 200
    )  # developers may read
    assert httpx.get(f"{server.url}/admin/keys", headers=dev).status_code == 403  # but not manage keys
    listed = httpx.get(f"{server.url}/admin/keys", headers=admin).json()["data"]
    assert any(k["name"] == "via-api" for k in listed) and all("key" not in k for k in listed)
    gone = httpx.delete(f"{server.url}/admin/keys/{made.json()['id']}", headers=admin)
    assert gone.status_code == 200 and gone.json()["revoked_at"]
    assert httpx.get(f"{server.url}/v1/models", headers=dev).status_code == 401
    assert httpx.delete(f"{server.url}/admin/keys/key-nope", headers=admin).status_code == 404
    bad = httpx.post(f"{server.url}/admin/keys", json={"name": "x", "role": "root"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    for _ in range(50):  # the audit writer commits in small batches, every 0.2 s
        audit = httpx.get(f"{server.url}/admin/audit?limit=3", headers=admin).json()["data"]
        if len(audit) == 3:
            break
        time.sleep(0.1)
    assert len(audit) == 3 and {"route", "status", "latency_ms"} <= set(audit[0])


def test_a_generation_past_the_timeout_is_cancelled_with_504(server: Server) -> None:
    import asyncio

    from pydantic import SecretStr

    from lamina.core.workspace import Workspace
    from lamina.serving.api import create_app, shutdown

    ws = Workspace.open(server.workspace)
    server_settings = ws.settings.server.model_copy(
        update={"request_timeout_s": 0.001, "admin_key": SecretStr(ADMIN)}
    )
    app = create_app(ws, ws.settings.model_copy(update={"server": server_settings}))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.post(
                "/v1/completions", headers=server.headers(ADMIN),
                json={"model": "shakes@champion", "prompt": "ROMEO:", "max_tokens": 60},
            )  # fmt: skip

    try:
        r = asyncio.run(call())
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    finally:
        shutdown(app)
        ws.close()
