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
