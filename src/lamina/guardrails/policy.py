"""The rails policy: which rails run on input and output, per route, model and role.

Declared under ``rails:`` in ``lamina.yaml``::

    rails:
      preset: default          # or strict, or none (the default when rails: is absent)
      input:  [{rail: injection, threshold: 0.6}, {rail: pii}]     # replaces the preset's list
      output: [{rail: pii}, {rail: secrets}]
      window: 48               # characters the output rails look behind while streaming
      rules:                   # first match wins; a rule replaces input and/or output
        - when: {role: admin}
          input: []
        - when: {model: "support-bot*", route: "/v1/chat/completions"}
          output: [{rail: pii}, {rail: toxicity}, {rail: grounding, action: block}]

Everything is built when the server starts (``Policies.build``), so an unknown rail, an unknown
option, a wrong threshold type or a rail model that is not in the hub stops start-up with one line.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lamina.core.errors import ConfigError, validated
from lamina.guardrails.guard import Guard
from lamina.guardrails.rail import Rail, RailSpec, build

PRESETS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "none": {"input": [], "output": []},
    # the cheap checks, the trained injection classifier, PII redaction both ways, secrets out
    "default": {
        "input": [
            {"rail": "length"},
            {"rail": "unicode"},
            {"rail": "injection_heuristics"},
            {"rail": "injection"},
            {"rail": "pii"},
        ],
        "output": [{"rail": "pii"}, {"rail": "secrets"}, {"rail": "grounding"}],
    },
    "strict": {
        "input": [
            {"rail": "length"},
            {"rail": "unicode"},
            {"rail": "injection_heuristics"},
            {"rail": "injection"},
            {"rail": "toxicity"},
            {"rail": "pii"},
        ],
        "output": [
            {"rail": "pii"},
            {"rail": "secrets"},
            {"rail": "toxicity"},
            {"rail": "grounding", "action": "block"},
        ],
    },
}


class Match(BaseModel):
    """Glob patterns a request must match (absent = any)."""

    model_config = ConfigDict(extra="forbid")
    route: str | None = None
    model: str | None = None
    role: str | None = None

    def matches(self, route: str, model: str, role: str) -> bool:
        pairs = ((self.route, route), (self.model, model), (self.role, role))
        return all(pattern is None or fnmatch.fnmatchcase(value or "", pattern) for pattern, value in pairs)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: Match
    input: list[RailSpec] | None = None
    output: list[RailSpec] | None = None


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: str = "default"
    input: list[RailSpec] | None = None
    output: list[RailSpec] | None = None
    window: int = Field(48, ge=8, le=4096)
    rules: list[Rule] = Field(default_factory=list)
    overlap_prefill: bool = True  # chat: the input rails run while the model reads the prompt

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PolicyConfig:
        config: PolicyConfig = validated(cls, data, "rails")
        if config.preset not in PRESETS:
            raise ConfigError(
                f"rails.preset: unknown preset {config.preset!r}",
                hint=f"presets: {', '.join(PRESETS)}",
            )
        return config

    def lists(self) -> tuple[list[RailSpec], list[RailSpec]]:
        preset = PRESETS[self.preset]
        inputs = self.input if self.input is not None else [RailSpec(**s) for s in preset["input"]]
        outputs = self.output if self.output is not None else [RailSpec(**s) for s in preset["output"]]
        return inputs, outputs


class Policies:
    """The built guards: the policy's own and one per rule, chosen per request."""

    def __init__(self, base: Guard, rules: list[tuple[Match, Guard]], overlap_prefill: bool = True) -> None:
        self.base, self.rules, self.overlap_prefill = base, rules, overlap_prefill

    @classmethod
    def build(cls, data: dict[str, Any] | None, ws: Any = None, observe: Any = None) -> Policies | None:
        """``None`` when no rails are configured (``rails:`` absent or ``preset: none`` and no lists)."""
        if not data:
            return None
        config = PolicyConfig.parse(data)
        cache: dict[str, Rail] = {}  # one instance per distinct entry (models load once)
        inputs, outputs = config.lists()
        base = _guard(inputs, outputs, config.window, ws, cache, observe, "rails")
        rules = []
        for i, rule in enumerate(config.rules):
            rule_in = rule.input if rule.input is not None else inputs
            rule_out = rule.output if rule.output is not None else outputs
            rules.append(
                (rule.when, _guard(rule_in, rule_out, config.window, ws, cache, observe, f"rails.rules.{i}"))
            )
        if not base.active and not any(g.active for _, g in rules):
            return None
        return cls(base, rules, config.overlap_prefill)

    def guard(self, route: str, model: str, role: str) -> Guard:
        for match, guard in self.rules:
            if match.matches(route, model, role):
                return guard
        return self.base


def _guard(
    inputs: list[RailSpec],
    outputs: list[RailSpec],
    window: int,
    ws: Any,
    cache: dict[str, Rail],
    observe: Any,
    where: str,
) -> Guard:
    def made(spec: RailSpec, stage: str) -> Rail:
        key = f"{stage}:{spec.model_dump_json()}"
        if key not in cache:
            try:
                cache[key] = build(spec, stage, ws)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{stage} {spec.rail!r}: {exc.message}", hint=exc.hint) from None
        return cache[key]

    return Guard([made(s, "input") for s in inputs], [made(s, "output") for s in outputs], window, observe)


def enable_policy(root: Any, section: str) -> dict[str, Any]:
    """Append ``section`` (YAML text with a ``rails:`` key) to ``root/lamina.yaml`` unless the file
    already has a ``rails:`` section; returns the section in force."""
    from pathlib import Path

    from lamina.core.settings import YAML_NAME, read_yaml

    path = Path(root) / YAML_NAME
    data = read_yaml(path) if path.is_file() else {}
    if data.get("rails") is None:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        path.write_text(text.rstrip("\n") + "\n" + section, encoding="utf-8")
        data = read_yaml(path)
    return dict(data["rails"] or {})


def configured_policies(ws: Any) -> Policies | None:
    """The policy ``lamina.yaml`` sets, else the default preset (None: it runs no rails). Building it
    loads the rail models, so a caller that checks often keeps the result."""
    return Policies.build(ws.settings.rails or PolicyConfig().model_dump(), ws)


def trial_guard(
    ws: Any, stage: str, rails: list[str] | None = None, policies: Policies | None = None
) -> Guard:
    """The guard a one-off check uses (``lamina rails test``, the console's rails page): the named
    rails, else the policy in force (``policies``, else ``lamina.yaml``'s, else the default preset)."""
    if stage not in ("input", "output"):
        raise ConfigError(f"the stage must be input or output, not {stage!r}")
    if rails:
        built = [build(RailSpec(rail=name), stage, ws) for name in rails]
        return Guard(built if stage == "input" else [], built if stage == "output" else [])
    policies = policies or configured_policies(ws)
    if policies is None:
        raise ConfigError("the policy in lamina.yaml runs no rails", hint="name the rails to run")
    return policies.base


def trial(guard: Guard, text: str, stage: str, sources: list[str] | None = None) -> dict[str, Any]:
    """Every verdict on one text, and the text as a model (or a user) would get it."""
    checked = guard.check([text], {"sources": list(sources or [])}, stage)
    return {
        "blocked": checked.blocked.rail if checked.blocked else None,
        "text": None if checked.blocked else checked.texts[0],
        "verdicts": [v.summary() for v in checked.verdicts],
    }
