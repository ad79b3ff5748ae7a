"""Structured logging: human-readable by default, one JSON object per line with ``json``.

Every record carries the current run id and request id (context variables), so the log lines of
one CLI invocation or one API request can be pulled out of a busy log. The JSON formatter is a
few lines on the standard library on purpose: a dependency (structlog, python-json-logger) would
add a second logging configuration to keep in step with the libraries that use stdlib logging.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

run_id_var: ContextVar[str | None] = ContextVar("lamina_run_id", default=None)
request_id_var: ContextVar[str | None] = ContextVar("lamina_request_id", default=None)

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "run_id", "request_id"}


def new_id(prefix: str) -> str:
    """A short random id such as ``run-3f9a1c2b4d5e``."""
    return f"{prefix}-{secrets.token_hex(6)}"


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = run_id_var.get()
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "run_id", "request_id", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("run_id", "request_id"):
            if getattr(record, key, None):
                payload[key] = getattr(record, key)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger [run-…] message key=value``: short enough to read in a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        ids = " ".join(
            f"[{v}]" for v in (getattr(record, "run_id", None), getattr(record, "request_id", None)) if v
        )
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        line = " ".join(
            part
            for part in (ts, f"{record.levelname:<7}", record.name, ids, record.getMessage(), extras)
            if part
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "human", stream: Any = None) -> None:
    """(Re)configure the ``lamina`` logger tree. Safe to call more than once."""
    logger = logging.getLogger("lamina")
    for handler in list(logger.handlers):
        if getattr(handler, "_lamina", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._lamina = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(_ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    # bitsandbytes (QLoRA) warns on import that it cannot fetch an optional CPU kernel from the Hub;
    # Lamina never downloads at run time, so the line is noise on every command
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
