"""What the root command's global options hand to every sub-command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from lamina.core.logging import configure_logging
from lamina.core.workspace import Workspace


@dataclass
class CliState:
    workspace: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # setting overrides from global flags
    debug: bool = False

    def open_workspace(self) -> Workspace:
        ws = Workspace.open(self.workspace, self.flags)
        # The global flags configured logging before the workspace was known; now apply the
        # resolved settings (flags > env > lamina.yaml), the one source of truth.
        configure_logging(ws.settings.log_level, ws.settings.log_format)
        return ws


def get_state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj
