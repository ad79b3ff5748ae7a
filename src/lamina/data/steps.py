"""Pipeline steps: typed options + ``apply(batch)``, registered by name for recipes.

A step sees every batch once, in order, and may keep state across batches (dedup does). It drops
a record by not returning it and naming the reason in ``StepStats``, so the report can say how
many rows each step removed and why. Built-in steps register through ``register_step`` exactly as
a user's would.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from lamina.core.errors import ConfigError
from lamina.core.extensions import STEPS
from lamina.core.settings import validation_summary
from lamina.data.records import Batch, Record

MAX_DROP_EXAMPLES = 5


@dataclass
class StepStats:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    changed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, record: Record | None = None) -> None:
        self.dropped[reason] += 1
        if record is not None:
            bucket = self.examples.setdefault(reason, [])
            if len(bucket) < MAX_DROP_EXAMPLES:
                bucket.append(str(record.get("_origin", "?")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "changed": self.changed,
            "dropped": dict(self.dropped),
            "drop_examples": self.examples,
            **self.extra,
        }


@dataclass
class StepContext:
    text_field: str
    seed: int


class Step(BaseModel):
    """Base of every step. Subclasses declare options as fields and set ``name``."""

    model_config = ConfigDict(extra="forbid")
    name: ClassVar[str]
    # True when each output row depends only on its own input row (no state across rows or batches):
    # such steps may run on any worker, over any grouping of rows (lamina.data.distributed).
    row_local: ClassVar[bool] = False

    def start(self, ctx: StepContext) -> None:
        """Called once before the first batch."""
        self._ctx = ctx

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        raise NotImplementedError  # abstract: every registered step implements it

    def finish(self, stats: StepStats) -> None:
        """Called once after the last batch (add summary numbers to ``stats.extra``)."""

    @property
    def ctx(self) -> StepContext:
        return self._ctx


def run_steps(steps: list[Step], stats: list[StepStats], batch: Batch) -> Batch:
    """Apply ``steps`` in order to one batch, counting rows in and out of each."""
    for step, st in zip(steps, stats, strict=True):
        st.rows_in += len(batch)
        batch = step.apply(batch, st)
        st.rows_out += len(batch)
        if not batch:
            break
    return batch


def register_step(cls: type[Step]) -> type[Step]:
    """Make the step usable in recipes by its ``name`` (``lamina.core.extensions.STEPS``; no duplicates)."""
    return STEPS.add(cls.name, cls)


def make_step(spec: str | dict[str, Any]) -> Step:
    """``"normalize"`` or ``{"filter": {"min_chars": 20}}`` → a validated Step."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, dict) and len(spec) == 1:
        name, options = next(iter(spec.items()))
        options = options or {}
    else:
        raise ConfigError(f"a step is a name or a one-key mapping {{name: options}}, got {spec!r}")
    cls = STEPS.get(name)
    try:
        return cls.model_validate(options)
    except ValidationError as exc:
        problems = validation_summary(exc)
        raise ConfigError(f"step {name!r}: {problems}") from None
