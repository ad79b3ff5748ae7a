"""Tooling as policy: ruff and mypy run with the suite, so CI enforces them (configs in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint_and_format() -> None:
    if shutil.which("ruff") is None and run_tool("ruff", "--version").returncode != 0:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    lint = run_tool("ruff", "check", "src", "tests", "bench")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run_tool("ruff", "format", "--check", "src", "tests", "bench")
    assert fmt.returncode == 0, "run 'ruff format src tests bench':\n" + fmt.stdout


@pytest.mark.slow
def test_mypy_on_typed_layers() -> None:
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
