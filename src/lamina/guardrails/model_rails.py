"""Rails backed by a classifier trained with ``lamina rails train`` and kept in the hub:
``injection`` (prompt injection and jailbreaks), ``toxicity`` (offensive language and hate) and
``classifier`` (any other trained head). The model is resolved when the policy is built; a
reference that is missing, or names a model that is not a rail classifier, stops start-up."""

from __future__ import annotations

from typing import Any, ClassVar

from lamina.core.errors import ConfigError
from lamina.core.extensions import RAILS
from lamina.guardrails.classifier import FAMILY, load_classifier
from lamina.guardrails.rail import Rail, RailSpec
from lamina.guardrails.verdict import Verdict


def load_rail_model(ws: Any, ref: str) -> tuple[Any, str]:
    """The classifier a hub reference names, and the version's id (for the audit record)."""
    from lamina.hub.registry import model_path, resolve_model

    if ws is None:
        raise ConfigError(f"rail model {ref!r} needs a workspace")
    try:
        version = resolve_model(ws, ref)
    except Exception as exc:
        raise ConfigError(
            f"rail model {ref!r} is not in the hub ({getattr(exc, 'message', exc)})",
            hint="train it first: lamina rails train …  (see `lamina rails train --help`)",
        ) from None
    if version.family != FAMILY:
        raise ConfigError(
            f"rail model {ref!r} is a {version.family} model, not a rail {FAMILY}",
            hint="name a model made by `lamina rails train`",
        )
    return load_classifier(model_path(ws, version)), version.ref


class ClassifierRail(Rail):
    """Hit when any of the rail's heads scores above its threshold (the policy's, else the one the
    model was calibrated with at training time: 5 % false positives on its validation split)."""

    name = "classifier"
    default_model: ClassVar[str | None] = None
    heads: ClassVar[tuple[str, ...]] = ()
    # a policy may set a threshold; without one each head uses the one the model was calibrated with
    default_threshold = 0.5
    options: ClassVar[dict[str, Any]] = {"heads": None, "max_chars": 4000}

    def __init__(self, spec: RailSpec, ws: Any = None) -> None:
        super().__init__(spec, ws)
        ref = spec.model or self.default_model
        if ref is None:
            raise ConfigError(f"rail {self.name!r} needs a model (a hub reference)")
        self.model, self.model_ref = load_rail_model(ws, ref)
        wanted = self.opts["heads"] or list(self.heads) or list(self.model.heads)
        missing = [h for h in wanted if h not in self.model.heads]
        if missing:
            raise ConfigError(
                f"rail {self.name!r}: model {ref} has no head(s) {missing}",
                hint=f"its heads: {', '.join(self.model.heads)}",
            )
        self.cutoffs = {
            head: spec.threshold if spec.threshold is not None else self.model.thresholds.get(head, 0.5)
            for head in wanted
        }

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        limit = self.opts["max_chars"]
        # a long text is judged by its start and its end, where instructions and payloads sit
        judged = text if len(text) <= limit else text[: limit // 2] + "\n" + text[-limit // 2 :]
        scores = {h: float(s[0]) for h, s in self.model.scores([judged]).items() if h in self.cutoffs}
        hits = [h for h, s in scores.items() if s >= self.cutoffs[h]]
        top = max(scores.values(), default=0.0)
        reasons = [f"{h} {scores[h]:.2f} ≥ {self.cutoffs[h]:.2f}" for h in hits]
        return self.verdict(bool(hits), score=top, reasons=reasons)


@RAILS.register("classifier")
class GenericClassifierRail(ClassifierRail):
    name = "classifier"


@RAILS.register("injection")
class InjectionRail(ClassifierRail):
    name = "injection"
    stages = ("input",)
    default_model = "injection-guard@champion"
    heads = ("injection",)


@RAILS.register("toxicity")
class ToxicityRail(ClassifierRail):
    name = "toxicity"
    default_model = "toxicity-guard@champion"
    heads = ("toxic", "hate")
