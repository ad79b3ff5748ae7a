"""Shared fixtures: throwaway workspaces, a real PostgreSQL database, a real local S3 server, the CLI.

PostgreSQL and S3 tests skip locally when their server is missing, but fail in CI (CI=true), so
CI can never pass by skipping them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import lamina.console  # noqa: F401 (the console, as `lamina serve` mounts it)
import lamina.monitoring  # noqa: F401 (its API routes, as `lamina serve` mounts them)
from lamina.core.workspace import Workspace

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def require(what: str, reason: str) -> None:
    """Skip locally, fail in CI: a missing service must never make CI green."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the workers share the cores: each worker (and every process it starts,
    through OMP_NUM_THREADS) gets its share of torch threads instead of all of them, so two workers
    on two cores do not fight over four threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


SHARED_SERVER_USE = re.compile(r"\b(server|railed): Server\b")  # the fixtures of tests/serving/conftest.py


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, except that every test file on the shared ``lamina serve`` (the
    ``server`` fixture: a quickstart built and served, 2-3 minutes of a 2-core machine) joins one
    work unit, so one worker builds it instead of each. xdist's own ``loadgroup`` cannot do this
    under pytest 9.2: it renames ``item._nodeid``, which no longer changes ``item.nodeid``."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    uses_server: dict[str, bool] = {}

    def file_uses_server(path: str) -> bool:
        if path not in uses_server:
            source = config.rootpath / path
            uses_server[path] = source.is_file() and bool(SHARED_SERVER_USE.search(source.read_text()))
        return uses_server[path]

    class FilesAndTheSharedServer(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "shared-server" if file_uses_server(path) else path

    return FilesAndTheSharedServer(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run only where CUDA exists (never in CI); the skip reason says so."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here; CI has none either)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LAMINA_* setting from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("LAMINA_") and key != "LAMINA_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws, _ = Workspace.init(tmp_path / "ws")
    yield ws
    ws.close()


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get("LAMINA_TEST_POSTGRES_URL")
    if not url:
        require("PostgreSQL", "LAMINA_TEST_POSTGRES_URL is not set (.ci/run starts a server and sets it)")
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        require("PostgreSQL", f"cannot connect to {url}: {exc.orig}")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"lamina_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# -- S3 (moto's server mode: a real S3 HTTP endpoint on localhost) ----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        require("S3 server", f"moto[server] is not installed ({exc})")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class S3Location:
    url: str
    options: dict[str, object]
    bucket: str
    endpoint: str


@pytest.fixture
def s3_location(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Location:
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    bucket = f"lamina-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    return S3Location(url=f"s3://{bucket}/store", options=options, bucket=bucket, endpoint=s3_endpoint)


# -- The CLI ----------------------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``lamina`` in-process through the real entry point (exit codes and error rendering included)."""
    from lamina.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def lamina_here(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``run_lamina`` through the same entry point in this process: the same result, without a new
    interpreter importing torch, transformers and the embedding model again (2-15 s a call on a
    2-core machine). For commands that end on their own; ``serve``, signals, stdin and other users
    need ``run_lamina``."""
    from lamina.cli.app import main

    saved = os.environ.copy()
    for key in [k for k in os.environ if k.startswith("LAMINA_")]:
        del os.environ[key]
    os.environ.update(env or {})
    os.environ.setdefault("COLUMNS", "120")  # rich reads it on each print: lines wrap as run_lamina's do
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["lamina", *args], code, out.getvalue(), err.getvalue())


def run_lamina(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lamina`` in a subprocess (optionally as another user, via setpriv, when root)."""
    command = [sys.executable, "-m", "lamina", *args]
    if user is not None and os.geteuid() == 0:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "120")
    return subprocess.run(command, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
