"""The gRPC generation service with a real gRPC client (grpcio and the stubs protoc made from the
repo's ``.proto``) against a real ``lamina serve --grpc-port``: streamed tokens, the same tokens
as the HTTP API for the same seed, the gateway's keys and roles, and errors as gRPC status codes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from lamina.serving.proto import generation_pb2 as pb
from lamina.serving.proto import generation_pb2_grpc as pb_grpc
from tests.serving.conftest import ADMIN, Server

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.GenerationStub]:
    assert server.grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pb_grpc.GenerationStub(channel)


def auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_a_completion_streams_the_same_tokens_as_the_http_api(stub, server: Server) -> None:
    sampling = pb.Sampling(temperature=0.9, top_p=0.95, max_tokens=24, seed=7)
    asked = pb.CompleteRequest(model="shakes@champion", prompt="ROMEO:", sampling=sampling)
    chunks = list(stub.Complete(asked, metadata=auth(server.user_key), timeout=120))
    texts = [c.text for c in chunks if c.text]
    # a lone request is decoded ALONE_STEPS (8) tokens per engine call, so 24 tokens come as >= 3 pieces
    assert len(texts) >= 2, "the answer arrives in pieces, as it is generated"
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and last.usage.completion_tokens > 0
    assert len({c.request_id for c in chunks}) == 1 and chunks[0].request_id.startswith("req")
    http = httpx.post(
        f"{server.url}/v1/completions", headers=server.headers(), timeout=120,
        json={"model": "shakes@champion", "prompt": "ROMEO:", "temperature": 0.9, "top_p": 0.95,
              "max_tokens": 24, "seed": 7},
    )  # fmt: skip
    assert http.status_code == 200, http.text
    assert "".join(texts) == http.json()["choices"][0]["text"]
    assert last.usage.completion_tokens == http.json()["usage"]["completion_tokens"]
    # the call went through the gateway: its audit row is there under the same request id (the
    # audit writer commits in small batches, a moment after the response)
    found = []
    for _ in range(50):
        audit = httpx.get(f"{server.url}/admin/audit", params={"request_id": last.request_id},
                          headers=server.headers(ADMIN), timeout=30)  # fmt: skip
        found = [r["route"] for r in audit.json()["data"]]
        if found:
            break
        time.sleep(0.1)
    assert found == ["/v1/completions"]


def test_chat_streams_the_same_answer_as_the_http_api(stub, server: Server) -> None:
    messages = [
        {"role": "system", "content": "Answer in verse."},
        {"role": "user", "content": "Who art thou?"},
    ]
    request = pb.ChatRequest(
        model="shakes@champion", sampling=pb.Sampling(max_tokens=16, temperature=0.8, seed=3),
        messages=[pb.Message(**m) for m in messages],
    )  # fmt: skip
    chunks = list(stub.Chat(request, metadata=auth(server.user_key), timeout=120))
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length")
    http = httpx.post(
        f"{server.url}/v1/chat/completions", headers=server.headers(), timeout=120,
        json={"model": "shakes@champion", "messages": messages, "max_tokens": 16, "temperature": 0.8,
              "seed": 3},
    )  # fmt: skip
    assert "".join(c.text for c in chunks) == http.json()["choices"][0]["message"]["content"]
    assert last.usage.completion_tokens == http.json()["usage"]["completion_tokens"]


@pytest.mark.parametrize(
    ("key", "request_", "code"),
    [
        ("lam-not-a-key", pb.CompleteRequest(model="shakes@champion", prompt="x"),
         grpc.StatusCode.UNAUTHENTICATED),
        (None, pb.CompleteRequest(model="no-such-model@champion", prompt="x"), grpc.StatusCode.NOT_FOUND),
        (None, pb.CompleteRequest(model="shakes@champion", prompt="x", sampling=pb.Sampling(max_tokens=0)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (None, pb.CompleteRequest(model="shakes@champion", prompt="x", sampling=pb.Sampling(top_p=7)),
         grpc.StatusCode.INVALID_ARGUMENT),
    ],
)  # fmt: skip
def test_errors_are_grpc_status_codes_with_the_apis_message(
    stub, server: Server, key, request_, code
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Complete(request_, metadata=auth(key or server.user_key), timeout=60))
    assert info.value.code() == code
    assert info.value.details()  # the API's own message, e.g. which field is wrong
    with pytest.raises(grpc.RpcError) as missing:
        list(stub.Complete(pb.CompleteRequest(model="shakes@champion", prompt="x"), timeout=60))
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_committed_python_modules_match_the_proto(tmp_path: Path) -> None:
    proto = "lamina/serving/proto/generation.proto"
    made = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(SRC), f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", str(SRC / proto)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    for name in ("generation_pb2.py", "generation_pb2_grpc.py", "generation_pb2.pyi"):
        fresh = (tmp_path / "lamina/serving/proto" / name).read_text()
        assert fresh == (SRC / "lamina/serving/proto" / name).read_text(), (
            f"regenerate {name} (see the .proto)"
        )
