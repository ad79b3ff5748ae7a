"""Every registered source, step and filter hook has a docstring and a line in docs/data.md."""

from pathlib import Path

import lamina.data.pipeline  # noqa: F401 - registers every built-in step
from lamina.data.cleaning import registered_hooks
from lamina.data.sources import SourceSpec
from lamina.data.steps import Step

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()


def test_sources_are_documented() -> None:
    for name, cls in SourceSpec.registry.items():
        assert cls.__doc__, f"source {name!r} has no docstring"
        assert f"`{name}`" in DOCS, f"source type {name!r} is missing from docs/data.md"


def test_steps_are_documented() -> None:
    for name, cls in Step.registry.items():
        assert cls.__doc__, f"step {name!r} has no docstring"
        assert f"`{name}`" in DOCS, f"step {name!r} is missing from docs/data.md"


def test_hooks_are_documented() -> None:
    for name in registered_hooks():
        assert f"`{name}`" in DOCS, f"filter hook {name!r} is missing from docs/data.md"
