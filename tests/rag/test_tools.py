"""Server-side tools: each does its job, refuses what it must (writes, other hosts, other groups),
and turns every failure into text the model can read."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import parse_recipe
from lamina.rag import tools
from lamina.rag.collection import Collection


def test_calculator_does_arithmetic_and_nothing_else() -> None:
    assert tools.calculate("2 + 3 * (4 - 1) ** 2 / 3") == 11.0
    assert tools.calculate("-7 // 2 + 10 % 4") == -2
    for bad in ("__import__('os').system('true')", "x + 1", "2 ** 1000", "[1, 2]", "True + 1"):
        with pytest.raises((ValueError, SyntaxError)):
            tools.calculate(bad)
    context = tools.ToolContext(ws=None)
    calculator = tools.resolve(["calculator"], context)
    assert tools.call(calculator, "calculator", '{"expression": "6*7"}', context) == "42"
    assert tools.call(calculator, "calculator", '{"expression": "open(1)"}', context).startswith("error:")
    assert tools.call(calculator, "calculator", "{}", context) == "error: missing argument(s) expression"
    assert tools.call(calculator, "sql", "{}", context).startswith("error: no tool 'sql'")
    with pytest.raises(ConfigError, match="no tool 'shell'"):
        tools.resolve(["shell"], context)
    with pytest.raises(ConfigError, match="the retrieve tool needs 'collection'"):
        tools.resolve(["retrieve"], context)


def test_sql_reads_a_dataset_version_and_cannot_write(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "orders.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"order {i}", "amount": i * 10}) for i in range(20)))
    recipe = parse_recipe("orders", {"source": str(data), "split": {"fractions": {"val": 0.2}, "seed": 0}})
    version = build_dataset(workspace, "orders", recipe).version
    context = tools.ToolContext(workspace, dataset=version.ref)
    sql = tools.resolve(["sql"], context)
    answer = json.loads(
        tools.call(sql, "sql", {"query": "SELECT count(*) AS n, sum(amount) AS s FROM rows"}, context)
    )
    assert answer == [{"n": 20, "s": 1900}]
    for write in ("DELETE FROM rows", "INSERT INTO rows (text) VALUES ('x')", "DROP TABLE rows",
                  "ATTACH DATABASE 'x.db' AS x", "PRAGMA writable_schema = 1"):  # fmt: skip
        assert tools.call(sql, "sql", {"query": write}, context).startswith(
            "error: DatabaseError: not authorized"
        )
    assert json.loads(tools.call(sql, "sql", {"query": "SELECT count(*) AS n FROM rows"}, context)) == [
        {"n": 20}
    ]
    slow = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
    assert "interrupted" in tools.call(sql, "sql", {"query": slow}, context)


def test_http_get_reaches_only_allowed_hosts() -> None:
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the allowed host")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        allowed = tools.ToolContext(ws=None, allowed_hosts=["127.0.0.1"])
        get = tools.resolve(["http_get"], allowed)
        assert tools.call(get, "http_get", {"url": url}, allowed) == "HTTP 200\nhello from the allowed host"
        refused = tools.call(get, "http_get", {"url": url.replace("127.0.0.1", "localhost")}, allowed)
        assert "not an allowed host" in refused
        assert "not an allowed host" in tools.call(get, "http_get", {"url": "file:///etc/passwd"}, allowed)
        with pytest.raises(ConfigError, match="needs 'allowed_hosts'"):
            tools.resolve(["http_get"], tools.ToolContext(ws=None))
    finally:
        server.shutdown()


def test_retrieve_reads_as_the_caller(workspace: Workspace, corpus: Path) -> None:
    Collection(workspace, "handbook").ingest([corpus / "travel.md"], ["staff"])
    staff = tools.ToolContext(workspace, groups=["staff"], collection="handbook")
    found = tools.call(tools.resolve(["retrieve"], staff), "retrieve", {"query": "hotel limit Paris"}, staff)
    assert "240 euros" in found
    other = tools.ToolContext(workspace, groups=["hr"], collection="handbook")
    assert (
        tools.call(tools.resolve(["retrieve"], other), "retrieve", {"query": "hotel"}, other)
        == "no document matched"
    )
