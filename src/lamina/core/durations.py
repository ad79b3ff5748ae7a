"""Durations as people type them: ``90s``, ``30m``, ``2h``, ``1d`` (a bare number is seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

from lamina.core.errors import ConfigError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str, *, positive: bool = False) -> timedelta:
    """``text`` as a ``timedelta``; refused in one line naming ``what`` (an option or a setting)."""
    match = _DURATION.match(str(text or "").strip())
    if not match or (positive and float(match[1]) == 0):
        raise ConfigError(f"{what} must be a duration like 90s, 30m, 2h or 1d, got {text!r}")
    return timedelta(seconds=float(match[1]) * _SECONDS[match[2]])
