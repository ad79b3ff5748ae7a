"""Parsing what users type into options (one message for one mistake, whichever command)."""

from __future__ import annotations

import json
from typing import Any

from lamina.core.errors import ConfigError


def json_object(text: str, option: str) -> dict[str, Any]:
    """``text`` as a JSON object, or a clear error naming ``option``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{option} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f'{option} must be a JSON object, e.g. \'{{"name": "value"}}\'')
    return value


def duration(text: str, option: str) -> Any:
    """``90s``, ``15m``, ``24h`` or ``7d`` as a ``timedelta``; anything else is refused by name."""
    import re
    from datetime import timedelta

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        from lamina.core.errors import ConfigError

        raise ConfigError(f"{option}: {text!r} is not a duration", hint="write e.g. 90s, 15m, 24h or 7d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: float(match.group(1))})
