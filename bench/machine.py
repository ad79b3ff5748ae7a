"""What every benchmark result records beside its figures (code version, date, the machine), and
where results go.

A speed figure means nothing without the CPU it ran on (AVX2-only and AVX-512 BF16 machines differ
by up to 3× here), so each bench writes this dict into its results.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> dict[str, object]:
    """The CPU as Lamina's defaults see it (``lamina.core.machine``: one reading of the flags)."""
    from lamina.core.machine import defaults, machine

    m = machine()
    return {
        "model": m.cpu_model, "cores": m.cores, "flags": m.notable_flags,
        "class": defaults().cpu_class, "torch_capability": m.torch_capability,
    }  # fmt: skip


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def machine_info() -> dict[str, object]:
    return {
        "git_sha": git_sha(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def machine_line(info: dict) -> str:
    """One Markdown line naming the machine and the code, for the top of a results table."""
    c = info["cpu"]
    return (
        f"Measured {info['date']} at `{info['git_sha']}` on {c['model']} ({c['cores']} cores; "
        f"class {c.get('class', '?')}; flags: {', '.join(c['flags']) or 'none of interest'}), "
        f"torch {info['torch']}."
    )


RESULTS = ROOT / "bench" / "results"


def save(name: str, report: dict, markdown: str) -> None:
    """``bench/results/NAME.json`` (with the machine) and ``NAME.md``; the table is printed too."""
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), **report}
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
