"""Chains: template → model → parser → next template, declared in YAML, run by one small runner.

```yaml
name: draft-then-json
inputs: [question]
steps:
  - template: draft@v1        # a prompt template (lamina prompts); its variables come from
    model: shakes@champion    # the inputs and the outputs of the steps before
    output: draft
    max_tokens: 40
  - template: as-json
    model: shakes@champion
    parser: json              # decoded under a JSON grammar, parsed; `schema` narrows it
    schema: {type: object, properties: {answer: {type: string}}, required: [answer]}
    output: final
```

Every step's variables are checked against what will exist when it runs before any model is
called, so a chain with a typo fails at once, naming the step. Generation is a callable the caller
supplies (a local engine, or a Lamina server): this layer does not serve.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lamina.core.errors import ConfigError, LaminaError, validated
from lamina.core.workspace import Workspace
from lamina.rag import prompts


class ChainError(LaminaError):
    exit_code = 2
    http_status = 400
    code = "chain_failed"


class ChainStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str
    model: str
    output: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    parser: Literal["text", "json"] = "text"
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # for parser json
    max_tokens: int = Field(64, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)


class Chain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inputs: list[str] = Field(default_factory=list)
    steps: list[ChainStep] = Field(min_length=1)


# (model ref, chat messages, {max_tokens, temperature, response_format}) -> the model's text
Generate = Callable[[str, list[dict[str, str]], dict[str, Any]], str]


@dataclass
class ChainResult:
    outputs: dict[str, Any]
    trace: list[dict[str, Any]] = field(default_factory=list)


def load_chain(path: Path | str) -> Chain:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the chain {path}: {exc}") from None
    chain: Chain = validated(Chain, data, str(path), sep=": ")
    return chain


def check(ws: Workspace, chain: Chain) -> list[prompts.Template]:
    """Each step's template, once every variable it reads is known to exist when it runs."""
    known, templates = set(chain.inputs), []
    for number, step in enumerate(chain.steps, 1):
        template = prompts.load(ws, step.template)
        missing = sorted(set(template.variables) - known)
        if missing:
            raise ConfigError(
                f"chain {chain.name!r} step {number} ({template.ref}) reads {', '.join(missing)}, "
                "which neither the inputs nor an earlier step give",
                hint=f"known at that step: {', '.join(sorted(known)) or 'nothing'}",
            )
        if step.output in known:
            raise ConfigError(f"chain {chain.name!r} step {number} would overwrite {step.output!r}")
        known.add(step.output)
        templates.append(template)
    return templates


def run(ws: Workspace, chain: Chain, values: dict[str, Any], generate: Generate) -> ChainResult:
    missing = sorted(set(chain.inputs) - set(values))
    if missing:
        raise prompts.MissingVariable(f"chain {chain.name!r} needs {', '.join(missing)}")
    templates = check(ws, chain)
    known = dict(values)
    result = ChainResult({})
    for number, (step, template) in enumerate(zip(chain.steps, templates, strict=True), 1):
        prompt = template.render(**{v: known[v] for v in template.variables})
        params: dict[str, Any] = {"max_tokens": step.max_tokens, "temperature": step.temperature}
        if step.parser == "json":
            params["response_format"] = (
                {"type": "json_schema", "json_schema": {"name": step.output, "schema": step.schema_}}
                if step.schema_ else {"type": "json_object"}
            )  # fmt: skip
        raw = generate(step.model, [{"role": "user", "content": prompt}], params)
        output: Any = raw
        if step.parser == "json":
            try:
                output = json.loads(raw)
            except ValueError:
                raise ChainError(
                    f"chain {chain.name!r} step {number}: the answer is not JSON: {raw[:200]!r}",
                    hint="raise max_tokens so the JSON can close",
                ) from None
        known[step.output] = result.outputs[step.output] = output
        result.trace.append({"step": number, "template": template.ref, "model": step.model, "prompt": prompt,
                             "raw": raw, "output": step.output})  # fmt: skip
    return result
