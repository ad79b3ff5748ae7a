"""What a rail is, and how a policy entry becomes one.

A rail is a class registered in ``lamina.core.extensions.RAILS`` under a name; a policy entry
(``RailSpec``) names it with an action, a threshold and options, and ``build`` turns the entry into
a ready instance at start-up, so a bad entry (unknown rail, unknown option, a model that is not a
classifier) stops the server before the first request instead of failing one later.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lamina.core.errors import ConfigError
from lamina.core.extensions import RAILS
from lamina.guardrails.verdict import Action, Verdict

Stage = str  # "input" | "output"


class RailSpec(BaseModel):
    """One entry of a policy's ``input`` or ``output`` list."""

    model_config = ConfigDict(extra="forbid")

    rail: str
    action: Action | None = None  # default: the rail's own
    threshold: float | None = Field(None, ge=0, le=1)  # for rails that score (classifiers, topics)
    model: str | None = None  # a hub reference, for rails backed by a trained model
    options: dict[str, Any] = Field(default_factory=dict)


class Rail:
    """Base of every rail: ``check(text, context) -> Verdict``.

    Subclasses set ``name`` (the registry key), ``default_action``, ``stages`` (where the rail
    makes sense) and ``options`` (the names ``RailSpec.options`` may use, with defaults)."""

    name: ClassVar[str] = ""
    default_action: ClassVar[Action] = "block"
    default_threshold: ClassVar[float | None] = None
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    options: ClassVar[dict[str, Any]] = {}
    # output rails that judge a whole answer (grounding) run once at the end, not on the stream's window
    whole_answer: ClassVar[bool] = False

    def __init__(self, spec: RailSpec, ws: Any = None) -> None:
        unknown = set(spec.options) - set(self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(
                f"rail {self.name!r}: unknown option(s) {', '.join(sorted(unknown))}",
                hint=f"options of {self.name}: {allowed}",
            )
        if spec.threshold is not None and self.default_threshold is None:
            raise ConfigError(f"rail {self.name!r} takes no threshold (it does not score)")
        self.spec = spec
        self.action: Action = spec.action or self.default_action
        self.threshold = spec.threshold if spec.threshold is not None else self.default_threshold
        self.opts = {**self.options, **spec.options}

    def check(self, text: str, context: dict[str, Any]) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract: every registered rail implements it

    def verdict(self, hit: bool, **fields: Any) -> Verdict:
        """A verdict with this rail's action when ``hit``, else allow (keeping score and reasons)."""
        return Verdict(self.name, self.action if hit else "allow", **fields)


def build(spec: RailSpec, stage: Stage, ws: Any = None) -> Rail:
    """A ready rail for one policy entry (unknown names and misplaced rails are refused)."""
    import lamina.guardrails.builtin  # noqa: F401  (registers the built-in rails)

    cls = RAILS.get(spec.rail)
    if stage not in cls.stages:
        raise ConfigError(
            f"rail {spec.rail!r} cannot run on {stage}", hint=f"it runs on: {', '.join(cls.stages)}"
        )
    rail: Rail = cls(spec, ws)
    return rail
