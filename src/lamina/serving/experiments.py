"""A/B tests: a share of the requests for a model goes to another version, per key or per request.

Declared under ``server.experiments`` in ``lamina.yaml``::

    server:
      experiments:
        - name: chat-dpo                 # how the arms are reported (`lamina monitor ab chat-dpo`)
          model: chat@champion           # requests naming this model are split…
          arms: {control: chat@v3, treatment: chat@v4}   # …between these two versions
          split: 0.5                     # the treatment's share
          by: key                        # key: a key always gets the same arm; request: each drawn
          routes: [/v1/chat/completions] # optional: only these routes

The arm is a hash of the experiment's name and the key (or the request id), so an assignment is
stable across restarts and servers, and no table of assignments is kept. The audit record of each
request says which experiment and arm served it (``detail.experiment``); the KPIs and the sequential
test per arm are in ``lamina.monitoring.ab``. The response's ``model`` names the version that answered.
"""

from __future__ import annotations

from typing import Any, Literal

import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lamina.core.errors import ConfigError, validated


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1)
    arms: dict[str, str]
    split: float = Field(0.5, gt=0, lt=1)
    by: Literal["key", "request"] = "key"
    routes: list[str] | None = None

    @field_validator("arms")
    @classmethod
    def _two_arms(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) != 2:
            raise ValueError(f"an experiment has two arms (control and treatment), got {len(value)}")
        return value

    def arm_for(self, unit: str) -> tuple[str, str]:
        """(arm name, model ref) for ``unit`` (a key id or a request id): the first arm unless the
        unit's hash falls in the second arm's ``split`` share."""
        (first, first_ref), (second, second_ref) = self.arms.items()
        share = xxhash.xxh64_intdigest(f"{self.name}\0{unit}".encode()) / 2**64
        return (second, second_ref) if share < self.split else (first, first_ref)


def parse(entries: list[dict[str, Any]]) -> list[Experiment]:
    """The ``server.experiments`` entries, each refused by position and field when wrong; two
    experiments on the same model and route would make a request's arm ambiguous, so that is refused."""
    out: list[Experiment] = []
    for i, entry in enumerate(entries):
        experiment = validated(Experiment, entry, f"server.experiments.{i}")
        for other in out:
            routes = (set(other.routes or ["*"]), set(experiment.routes or ["*"]))
            if other.model == experiment.model and ("*" in routes[0] | routes[1] or routes[0] & routes[1]):
                raise ConfigError(
                    f"server.experiments.{i}: {experiment.model} is already split by {other.name!r}"
                )
        out.append(experiment)
    return out


def assign(experiments: list[Experiment], model: str, route: str, key_id: str | None, request_id: str) -> Any:
    """``(model ref to serve, {"name", "arm"})``, or ``(model, None)`` when no experiment covers it."""
    for experiment in experiments:
        if experiment.model != model or (experiment.routes is not None and route not in experiment.routes):
            continue
        unit = key_id if experiment.by == "key" and key_id else request_id
        arm, ref = experiment.arm_for(unit)
        return ref, {"name": experiment.name, "arm": arm}
    return model, None
