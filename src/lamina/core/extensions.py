"""Every extension point Lamina has, declared in one place, each a registry that refuses a duplicate name.

In the spirit of datasette's ``hookspecs``: the points are declared up front with what an entry
must be, so a plugin author reads one module to learn what can be extended, and two entries can
never silently shadow each other (the second ``register`` of a name raises, naming both). The
layers that own a point fill it (the data layer: sources, steps, filter hooks; training: image
families); layers that land later fill theirs (guardrails: rails; RAG: retrievers; evaluation:
evaluators). Third-party packages add entries through the ``lamina.plugins`` entry-point group:
each entry point names a module that registers on import, loaded by ``load_plugins()``.

Why not pluggy: pluggy calls *every* implementation of a hook and merges results, which suits
datasette's hooks; Lamina's points are name → implementation tables chosen by a recipe or a
policy, where the useful guarantee is uniqueness and a clear error for an unknown name.

Core layer (0): imports nothing from Lamina but errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lamina.core.errors import ConfigError

T = TypeVar("T")
PLUGIN_GROUP = "lamina.plugins"


class DuplicateExtension(ConfigError):
    """A second entry under a name that one already holds."""


@dataclass
class ExtensionPoint(Generic[T]):
    """One registry: ``name → entry``; entries must fit ``what``."""

    point: str
    what: str  # what an entry is, for error messages and ``lamina`` docs
    entries: dict[str, T] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # name → the module that registered it

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a name already taken is refused."""
        if not name or not isinstance(name, str):
            raise ConfigError(f"{self.point}: an entry needs a non-empty name, got {name!r}")
        origin = getattr(entry, "__module__", type(entry).__module__)
        if name in self.entries:
            raise DuplicateExtension(
                f"{self.point}: {name!r} is already registered by {self.origins[name]}; "
                f"{origin} tried to register it again",
                hint="give the new entry another name",
            )
        self.entries[name] = entry
        self.origins[name] = origin
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""

        def decorate(entry: T) -> T:
            return self.add(name, entry)

        return decorate

    def get(self, name: str) -> T:
        try:
            return self.entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.what} {name!r}",
                hint=f"{self.point}: {', '.join(sorted(self.entries)) or 'none registered'}",
            ) from None

    def remove(self, name: str) -> None:
        """Take an entry out (tests that register a throwaway entry clean up with it)."""
        self.entries.pop(name, None)
        self.origins.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))


# -- the declared points ------------------------------------------------------------------------------
SOURCES: ExtensionPoint[Any] = ExtensionPoint("sources", "source type")  # SourceSpec subclasses
STEPS: ExtensionPoint[Any] = ExtensionPoint("steps", "step")  # Step subclasses
FILTER_HOOKS: ExtensionPoint[Any] = ExtensionPoint("filter_hooks", "filter hook")  # factory(**opts)
IMAGE_FAMILIES: ExtensionPoint[Any] = ExtensionPoint("image_families", "image model family")
RAILS: ExtensionPoint[Any] = ExtensionPoint("rails", "guardrail")  # filled by lamina.guardrails
RETRIEVERS: ExtensionPoint[Any] = ExtensionPoint("retrievers", "retriever")  # filled by lamina.rag
EVALUATORS: ExtensionPoint[Any] = ExtensionPoint("evaluators", "evaluator")  # filled by lamina.evaluation
# FastAPI routers of layers above serving (the feedback API of lamina.monitoring): the app mounts
# every one registered when it is built, so serving never imports the layers that sit on it
API_ROUTERS: ExtensionPoint[Any] = ExtensionPoint("api_routers", "API router")

POINTS: dict[str, ExtensionPoint[Any]] = {
    p.point: p
    for p in (SOURCES, STEPS, FILTER_HOOKS, IMAGE_FAMILIES, RAILS, RETRIEVERS, EVALUATORS, API_ROUTERS)
}


def load_plugins() -> list[str]:
    """Import every module named in the ``lamina.plugins`` entry-point group; returns their names."""
    from importlib.metadata import entry_points

    loaded = []
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()
        loaded.append(entry.name)
    return loaded
