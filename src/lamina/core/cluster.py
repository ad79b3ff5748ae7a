"""The one way Lamina joins a Ray cluster: data builds, training and serving all call ``ensure_ray``.

Ray is optional (``lamina[ray]``); without it the caller gets one error that says how to install it.
"""

from __future__ import annotations

import os
from typing import Any

from lamina.core.errors import ConfigError


def ensure_ray(address: str | None = None) -> Any:
    """Connect to a Ray cluster (``address``, or RAY_ADDRESS), or start a local one with every core."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "Ray is not installed", hint="pip install -c constraints.txt 'lamina[ray]'"
        ) from None
    if not ray.is_initialized():
        # "local": a new Ray on this machine, never an unrelated one that happens to run here
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=where, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray
