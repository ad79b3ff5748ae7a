"""Every registered source, step and filter hook has a docstring and a line in docs/data.md; every
extension point is declared in one registry that refuses a duplicate name."""

from pathlib import Path

import pytest

import lamina.data.pipeline  # noqa: F401 - registers every built-in step
from lamina.core.extensions import POINTS, SOURCES, STEPS, DuplicateExtension, ExtensionPoint
from lamina.data.cleaning import registered_hooks

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()


def test_sources_are_documented() -> None:
    for name, cls in SOURCES.entries.items():
        assert cls.__doc__, f"source {name!r} has no docstring"
        assert f"`{name}`" in DOCS, f"source type {name!r} is missing from docs/data.md"


def test_steps_are_documented() -> None:
    for name, cls in STEPS.entries.items():
        assert cls.__doc__, f"step {name!r} has no docstring"
        assert f"`{name}`" in DOCS, f"step {name!r} is missing from docs/data.md"


def test_hooks_are_documented() -> None:
    for name in registered_hooks():
        assert f"`{name}`" in DOCS, f"filter hook {name!r} is missing from docs/data.md"


def test_every_extension_point_is_declared_in_one_place() -> None:
    import lamina.training.image_families  # noqa: F401 - registers the image families

    assert set(POINTS) >= {"sources", "steps", "filter_hooks", "image_families", "rails", "retrievers"}
    assert {"jsonl", "csv", "http", "sql"} <= set(SOURCES.names())
    assert {"normalize", "dedup", "hook"} <= set(STEPS.names())
    assert POINTS["image_families"].names() == ["diffusion", "gan", "latent-diffusion", "vae"]


def test_a_duplicate_name_is_refused_and_names_both_registrants() -> None:
    from lamina.data.steps import Step, register_step

    with pytest.raises(DuplicateExtension, match="'dedup' is already registered by lamina.data.dedup"):

        @register_step
        class Dedup(Step):  # a plugin that reuses a built-in's name
            """Shadows the built-in."""

            name = "dedup"

    assert STEPS.get("dedup").__module__ == "lamina.data.dedup"  # the built-in is untouched
    point: ExtensionPoint[int] = ExtensionPoint("demo", "demo entry")
    point.add("one", 1)
    with pytest.raises(DuplicateExtension):
        point.add("one", 2)
    with pytest.raises(Exception, match="unknown demo entry 'two'.*demo: one"):
        point.get("two")


def test_a_plugin_package_registers_through_its_entry_point(tmp_path, monkeypatch) -> None:
    """A third-party package names a module in the ``lamina.plugins`` entry-point group; loading it
    registers its entries in the same registries (and its duplicate would be refused the same way)."""
    import sys

    from lamina.core.extensions import load_plugins

    (tmp_path / "shout_plugin.py").write_text(
        "from lamina.data.steps import Step, register_step\n\n"
        "@register_step\n"
        "class Shout(Step):\n"
        '    """Upper-case the text."""\n\n'
        '    name = "shout"\n\n'
        "    def apply(self, batch, stats):\n"
        "        return [{**r, self.ctx.text_field: r[self.ctx.text_field].upper()} for r in batch]\n"
    )
    info = tmp_path / "shout_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lamina.plugins]\nshout = shout_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "shout" in load_plugins()
        from lamina.data.steps import StepContext, StepStats, make_step

        step = make_step("shout")
        step.start(StepContext(text_field="text", seed=0))
        assert step.apply([{"text": "hi"}], StepStats("shout")) == [{"text": "HI"}]
    finally:
        STEPS.remove("shout")
        sys.modules.pop("shout_plugin", None)
