"""A real ``lamina serve`` process over a quickstart workspace, shared by the serving tests."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from lamina.core.crypto import new_key
from lamina.quickstart import run_quickstart
from tests.conftest import run_lamina

ADMIN = "admin-secret-for-tests"
RAILED_KEY = new_key()  # the railed server's encryption key (audit and feedback text)


@dataclass
class Server:
    url: str
    workspace: Path
    user_key: str
    process: subprocess.Popen
    grpc_port: int | None = None  # the shared server also serves gRPC (test_grpc.py)

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.user_key}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen, log: Path | None = None, seconds: float = 240) -> None:
    """Until ``url/health`` answers 200; fails at once if the server process exits. The limit is a
    hang guard, not a speed test: on a busy 2-core AVX2 machine a start took two minutes."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text() if log else process.returncode}")
    raise AssertionError(f"server at {url} did not become healthy in {seconds:g} s")


def audit_row(
    workspace: Path, request_id: str, columns: str = "request_id", seconds: float = 10
) -> tuple | None:
    """The request's row in the audit log, or None: the server writes the log from a background
    thread in small batches (``lamina.gateway.audit``), moments after the response, so a reader
    that comes right after the response waits for it."""
    deadline = time.time() + seconds
    while True:
        with closing(sqlite3.connect(workspace / "lamina.db")) as db:
            query = f"SELECT {columns} FROM audit_events WHERE request_id = ?"  # noqa: S608 (test code)
            row = db.execute(query, (request_id,)).fetchone()
        if row is not None or time.time() > deadline:
            return row
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve") / "demo"
    run_quickstart(root, train_steps=30, image_steps=10)
    made = run_lamina(
        "--workspace", str(root), "keys", "create", "--role", "user", "--name", "tests", "--json"
    )
    assert made.returncode == 0, made.stderr
    # the quickstart turns the default rails policy on; the shared server runs without it (rails
    # refuse logprobs, which many tests here ask for); test_rails_api.py serves with it
    grpc_port = free_port()
    url, process = start_server(
        root, {"LAMINA_RAILS__PRESET": "none", "LAMINA_SERVER__GRPC_PORT": str(grpc_port)}
    )
    yield Server(url, root, json.loads(made.stdout)["key"], process, grpc_port)
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
def railed(server: Server) -> Iterator[Server]:
    """A second server on the same workspace with its lamina.yaml rails policy on, keeping audit
    text encrypted (test_rails_api.py, test_feedback_api.py)."""
    url, process = start_server(
        server.workspace,
        {
            "LAMINA_SERVER__AUDIT_TEXT": "true",
            "LAMINA_SECURITY__ENCRYPTION_KEYS": json.dumps([RAILED_KEY]),
            # a tiny model is rarely sure: every answer below 0.99 enters the review queue
            "LAMINA_MONITORING__REVIEW_BELOW_CONFIDENCE": "0.99",
        },
        "railed-server.log",
    )
    yield replace(server, url=url, process=process)
    process.terminate()
    process.wait(timeout=20)


def start_server(
    root: Path, env_extra: dict[str, str], log_name: str = "server.log", model: str | None = "shakes@champion"
) -> tuple[str, subprocess.Popen]:
    """``lamina serve`` on ``root`` (text ``model`` loaded; image models load on first use) with
    ``env_extra``; waits until healthy."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    env["LAMINA_SERVER__ADMIN_KEY"] = ADMIN
    env.update(env_extra)
    log = (root.parent / log_name).open("w")  # read it when a serving test fails
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina", "--workspace", str(root), "serve", "--port", str(port),
         *(["-m", model] if model else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, root.parent / log_name)
    return url, process
