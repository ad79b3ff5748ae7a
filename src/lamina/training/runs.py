"""Run bookkeeping every trainer shares: fingerprints that make reruns free, resumable-run lookup,
and the status a run is left in when training stops early."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import xxhash

from lamina.core.catalog import ModelVersion, Run
from lamina.core.errors import LaminaError
from lamina.core.workspace import Workspace
from lamina.training.loop import latest_checkpoint


def fingerprint(payload: dict[str, Any]) -> str:
    """A stable hash of everything that determines a trained model (data version, configs, seed)."""
    canonical = json.dumps(payload, sort_keys=True, default=str)
    return "xxh3:" + xxhash.xxh3_128(canonical.encode()).hexdigest()


def existing_version(ws: Workspace, name: str, train_fingerprint: str) -> ModelVersion | None:
    """The version of ``name`` an earlier run with the same fingerprint registered, if any."""
    for version in ws.catalog.find("model_version", name):
        if isinstance(version, ModelVersion) and version.meta.get("train_fingerprint") == train_fingerprint:
            return version
    return None


def find_resumable(ws: Workspace, run_name: str, train_fingerprint: str) -> Run | None:
    """An unfinished run with these settings that left a checkpoint behind."""
    for run in ws.catalog.find("run", run_name):
        if (
            isinstance(run, Run)
            and run.status in ("running", "interrupted", "failed")
            and run.params.get("fingerprint") == train_fingerprint
            and latest_checkpoint(ws.root / "runs" / run.id)
        ):
            return run
    return None


@contextmanager
def run_guard(ws: Workspace | None, run: Run, tracker: Any, name: str, run_dir: Path) -> Iterator[None]:
    """Mark the run interrupted (resumable) or failed when training stops; ``ws`` None on non-main ranks."""
    try:
        yield
    except KeyboardInterrupt:
        if ws is not None:
            ws.catalog.update_run(run.id, status="interrupted", ended=True)
        if tracker:
            tracker.end("KILLED")
        raise LaminaError(
            f"training of {name!r} interrupted; checkpoints are in {run_dir}",
            hint="continue with the same command plus --resume",
        ) from None
    except BaseException:
        if ws is not None:
            ws.catalog.update_run(run.id, status="failed", ended=True)
        if tracker:
            tracker.end("FAILED")
        raise
