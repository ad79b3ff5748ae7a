"""Tools a model may call, in OpenAI's function format, executed by Lamina (server-side).

Each tool declares its parameters as JSON Schema (the grammar the model's call is decoded in, so a
call always parses) and runs with a ``ToolContext`` that carries who is calling: retrieval reads as
the caller's groups, SQL reads one dataset version and cannot write, HTTP reaches only allowed
hosts. A tool that fails returns its error as text, for the model to read, instead of failing the
request; a call to an unknown tool or with bad arguments does the same.

Built-ins: ``calculator``, ``retrieve`` (a collection), ``sql`` (read-only SQL over a dataset
version), ``http_get`` (an allow-list of hosts). ``TOOLS`` is the registry; a new tool registers
itself with ``register_tool``.
"""

from __future__ import annotations

import ast
import json
import operator
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from lamina.core.errors import ConfigError

MAX_RESULT_CHARS = 2000


@dataclass
class ToolContext:
    ws: Any
    groups: list[str] | None = None  # the caller's groups (None: every group)
    collection: str | None = None  # for retrieve
    dataset: str | None = None  # for sql
    allowed_hosts: list[str] = field(default_factory=list)  # for http_get


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], ToolContext], str]
    needs: str | None = None  # the context field it cannot run without

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}  # fmt: skip


TOOLS: dict[str, Tool] = {}


def register_tool(tool: Tool) -> Tool:
    if tool.name in TOOLS:
        raise ConfigError(f"a tool named {tool.name!r} is already registered")
    TOOLS[tool.name] = tool
    return tool


def resolve(names: list[str], context: ToolContext) -> list[Tool]:
    """The named tools, each checked to have what it needs (one clear error otherwise)."""
    tools = []
    for name in names:
        tool = TOOLS.get(name)
        if tool is None:
            raise ConfigError(f"there is no tool {name!r}", hint=f"tools: {', '.join(sorted(TOOLS))}")
        if tool.needs and not getattr(context, tool.needs):
            raise ConfigError(f"the {name} tool needs {tool.needs!r}", hint=f"set server_tools.{tool.needs}")
        tools.append(tool)
    return tools


def call(tools: list[Tool], name: str, arguments: str | dict[str, Any], context: ToolContext) -> str:
    """Run one call; every failure becomes text the model reads."""
    by_name = {t.name: t for t in tools}
    if name not in by_name:
        return f"error: no tool {name!r} (available: {', '.join(by_name)})"
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        required = by_name[name].parameters.get("required", [])
        missing = [r for r in required if r not in args]
        if missing:
            return f"error: missing argument(s) {', '.join(missing)}"
        result = by_name[name].run(args, context)
    except Exception as exc:  # a tool's failure is an answer for the model, not a server error
        return f"error: {type(exc).__name__}: {exc}"[:MAX_RESULT_CHARS]
    return result[:MAX_RESULT_CHARS]


# -- calculator -------------------------------------------------------------------------------------
# Written here because Python's eval is unsafe and the few safe-eval libraries are unmaintained:
# numbers, + - * / // % **, unary minus and parentheses, nothing else.
_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}  # fmt: skip


EXPRESSION = r"^[0-9(-][0-9+*/%().-]{0,31}$"  # no spaces: tiny models pad with them


def calculate(expression: str) -> float | int:
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {ast.unparse(node)[:40]!r}")

    if len(expression) > 200:
        raise ValueError("expression longer than 200 characters")
    return value(ast.parse(expression.strip(), mode="eval").body)


register_tool(Tool(
    "calculator", "Evaluate an arithmetic expression (numbers, + - * / // % ** and parentheses).",
    # the pattern is part of the grammar the call is decoded in: even a tiny model writes arithmetic
    {"type": "object", "properties": {"expression": {"type": "string", "pattern": EXPRESSION}},
     "required": ["expression"]},
    lambda args, ctx: str(calculate(str(args["expression"]))),
))  # fmt: skip


# -- retrieve --------------------------------------------------------------------------------------
def _retrieve(args: dict[str, Any], ctx: ToolContext) -> str:
    from lamina.rag.collection import Collection

    found = Collection.open(ctx.ws, str(ctx.collection)).search(str(args["query"]), k=3, groups=ctx.groups)
    if not found:
        return "no document matched"
    return "\n".join(
        f"[{i}] {r.chunk.title}: {' '.join(r.chunk.text.split())[:500]}" for i, r in enumerate(found, 1)
    )


register_tool(Tool(
    "retrieve", "Search the document collection; returns the best passages with their titles.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    _retrieve, needs="collection",
))  # fmt: skip


# -- sql over a dataset version ----------------------------------------------------------------------
MAX_SQL_ROWS = 20
_TABLES: dict[str, sqlite3.Connection] = {}
_TABLES_LOCK = threading.Lock()
_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


def _dataset_db(ws: Any, ref: str) -> sqlite3.Connection:
    """The dataset version's rows as the table ``rows`` of an in-memory SQLite database that
    refuses anything but reading (an authorizer, checked by SQLite on every statement)."""
    from lamina.data.versions import iter_rows, resolve_version

    version = resolve_version(ws, ref)
    with _TABLES_LOCK:
        if version.id not in _TABLES:
            rows = list(iter_rows(ws, version))
            columns = list(dict.fromkeys(k for r in rows for k in r))
            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.execute(f"CREATE TABLE rows ({', '.join(_quote(c) for c in columns)})")
            db.executemany(
                f"INSERT INTO rows VALUES ({', '.join('?' * len(columns))})",
                [[_cell(r.get(c)) for c in columns] for r in rows],
            )
            db.commit()
            db.set_authorizer(
                lambda action, *_: sqlite3.SQLITE_OK if action in _READ_ONLY else sqlite3.SQLITE_DENY
            )
            _TABLES[version.id] = db
        return _TABLES[version.id]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell(value: Any) -> Any:
    plain = value is None or isinstance(value, (int, float, str, bytes))
    return value if plain else json.dumps(value, default=str)


SQL_TIMEOUT_S = 2.0


def _sql(args: dict[str, Any], ctx: ToolContext) -> str:
    import time

    db = _dataset_db(ctx.ws, str(ctx.dataset))
    deadline = time.monotonic() + SQL_TIMEOUT_S
    with _TABLES_LOCK:
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)  # a runaway query stops
        try:
            cursor = db.execute(str(args["query"]))
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(MAX_SQL_ROWS)
        finally:
            db.set_progress_handler(None, 0)
    return json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str)


register_tool(Tool(
    "sql", f"Read-only SQL (SQLite) over the dataset's table `rows`; at most {MAX_SQL_ROWS} rows back.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    _sql, needs="dataset",
))  # fmt: skip


# -- http_get --------------------------------------------------------------------------------------
def _http_get(args: dict[str, Any], ctx: ToolContext) -> str:
    import httpx

    url = str(args["url"])
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or parsed.hostname not in ctx.allowed_hosts:
        allowed = ", ".join(ctx.allowed_hosts) or "none"
        raise PermissionError(f"{parsed.hostname or url!r} is not an allowed host (allowed: {allowed})")
    response = httpx.get(url, timeout=5.0, follow_redirects=False)
    return f"HTTP {response.status_code}\n{response.text}"


register_tool(Tool(
    "http_get", "GET a URL on an allowed host; returns the status and the start of the body.",
    {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
    _http_get, needs="allowed_hosts",
))  # fmt: skip
