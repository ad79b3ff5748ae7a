"""What every benchmark result records beside its figures (code version, date, the machine), and
where results go.

A speed figure means nothing without the CPU it ran on (AVX2-only and AVX-512 BF16 machines differ
by up to 3× here), so each bench writes this dict into its results.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# the flags that change which kernels and precisions are fast on this CPU
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu() -> dict[str, object]:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in FLAGS_OF_INTEREST if f in flags]}


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
        f"flags: {', '.join(c['flags']) or 'none of interest'}), torch {info['torch']}."
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
