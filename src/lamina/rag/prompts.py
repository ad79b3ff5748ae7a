"""Prompt templates: Jinja text with declared variables, versioned in the catalog like any artifact.

A template's variables are declared when it is saved and checked against what the text really uses
(Jinja's own parser finds them), so a typo in either is refused at save time rather than rendered as
an empty string in production. Rendering refuses a missing or an unknown variable with one clear
error (HTTP 400 through the API). Templates render in Jinja's sandbox: a template is data a
developer can change, not code that may reach into the server.

Built-in templates (``rag-answer``) ship in ``lamina/rag/templates`` and are recorded in a
workspace the first time they are used, so every answer can name the exact template version it
was made with.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lamina.core.catalog.models import ArtifactAlias, PromptTemplate
from lamina.core.errors import ConfigError, NotFound
from lamina.core.refs import validate_name
from lamina.core.workspace import Workspace

KIND = "prompt_template"
BUILTIN = ("rag-answer",)


class TemplateError(ConfigError):
    """A template that does not parse, or variables that do not match it (HTTP 400)."""

    http_status = 400
    code = "invalid_template"


class MissingVariable(TemplateError):
    code = "missing_variable"


def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def used_variables(text: str) -> set[str]:
    """The top-level variables ``text`` reads (loop variables and ``set`` names excluded)."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        return set(meta.find_undeclared_variables(_environment().parse(text)))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"the template does not parse: {exc.message} (line {exc.lineno})") from None


@dataclass(frozen=True)
class Template:
    ref: str  # name@vN in the catalog
    id: str
    text: str
    variables: tuple[str, ...]

    def render(self, **values: Any) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise MissingVariable(
                f"template {self.ref} needs {', '.join(missing)}",
                hint=f"its variables: {', '.join(self.variables)}",
            )
        unknown = sorted(set(values) - set(self.variables))
        if unknown:
            raise TemplateError(
                f"template {self.ref} has no variable {', '.join(unknown)}",
                hint=f"its variables: {', '.join(self.variables)}",
            )
        from jinja2 import TemplateError as JinjaError

        try:
            return str(_environment().from_string(self.text).render(**values))
        except JinjaError as exc:  # the sandbox's refusals, an attribute the values do not have
            raise TemplateError(f"template {self.ref} cannot render: {exc}") from None


def save(ws: Workspace, name: str, text: str, variables: list[str] | None = None,
         description: str | None = None) -> Template:  # fmt: skip
    """Record ``text`` as the next version of template ``name`` (or the version that has this text).

    ``variables``, when given, must be exactly the variables the text uses.
    """
    validate_name(name, "template name")
    used = used_variables(text)
    declared = set(variables) if variables is not None else used
    if declared != used:
        parts = []
        if used - declared:
            parts.append(f"uses undeclared {', '.join(sorted(used - declared))}")
        if declared - used:
            parts.append(f"declares unused {', '.join(sorted(declared - used))}")
        raise TemplateError(f"template {name!r} {' and '.join(parts)}", hint="declare exactly what it uses")
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    same = ws.catalog.find(KIND, name, content_hash=digest, limit=1)
    if same:  # this exact text is already a version: that version
        return _template(same[0])
    row = PromptTemplate(
        name=name, content_hash=digest, description=description,
        meta={"text": text, "variables": sorted(declared)},
    )  # fmt: skip
    return _template(ws.record(row))


def load(ws: Workspace, ref: str) -> Template:
    """A template by reference (``name``, ``name@vN``, ``name@champion``); built-ins are recorded
    on first use."""
    name, _, selector = ref.partition("@")
    if name in BUILTIN and ws.catalog.latest(KIND, name) is None:
        save(ws, name, builtin_text(name), description="built into Lamina")
    if selector and not re.fullmatch(r"v\d+", selector):
        with ws.catalog.session() as session:
            row = session.get(ArtifactAlias, (KIND, name, selector))
            if row is None:
                raise NotFound(f"prompt template {name!r} has no alias {selector!r}",
                               hint="lamina prompts optimize promotes one; or use NAME@vN")  # fmt: skip
            ref = row.artifact_id
    try:
        return _template(ws.resolve(ref, kind=KIND))
    except NotFound:
        known = sorted({a.name for a in ws.catalog.find(kind=KIND)} | set(BUILTIN))
        raise NotFound(f"there is no prompt template {ref!r}", hint=f"known: {', '.join(known)}") from None


def set_alias(ws: Workspace, template: Template, alias: str) -> str | None:
    """Point ``name@alias`` at ``template``; returns the version it pointed at before."""
    from lamina.core.catalog.models import utcnow

    validate_name(alias, "alias")
    if re.fullmatch(r"v\d+", alias):
        raise ConfigError(f"alias {alias!r} looks like a version (vN); choose another name")
    name = template.ref.partition("@")[0]
    with ws.catalog.session() as session:
        row = session.get(ArtifactAlias, (KIND, name, alias))
        before = row.artifact_id if row is not None else None
        if row is None:
            session.add(
                ArtifactAlias(kind=KIND, name=name, alias=alias, artifact_id=template.id, updated_at=utcnow())
            )
        else:
            row.artifact_id, row.updated_at = template.id, utcnow()
    return before


def aliases(ws: Workspace) -> dict[str, list[str]]:
    """Template version id → its aliases."""
    import sqlalchemy as sa

    with ws.catalog.session() as session:
        rows = session.scalars(sa.select(ArtifactAlias).where(ArtifactAlias.kind == KIND)).all()
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(row.artifact_id, []).append(row.alias)
        return found


def listing(ws: Workspace) -> list[dict[str, Any]]:
    named = aliases(ws)
    return [
        {"ref": a.ref, "id": a.id, "variables": a.meta.get("variables", []), "description": a.description,
         "aliases": sorted(named.get(a.id, [])),
         "created_at": a.created_at.isoformat() if a.created_at else None}
        for a in ws.catalog.find(kind=KIND)
    ]  # fmt: skip


def builtin_text(name: str) -> str:
    return resources.files("lamina.rag").joinpath("templates", f"{name}.j2").read_text()


def _template(row: Any) -> Template:
    return Template(row.ref, row.id, row.meta["text"], tuple(row.meta.get("variables", ())))
