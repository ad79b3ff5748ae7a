"""References to artifacts, as users type them.

``REF`` is one of:

- an artifact id: ``ds-3f9a1c2b4d5e6f70``
- ``NAME`` (the latest version), ``NAME@vN`` (version N), ``NAME@ALIAS`` (a model alias such as
  ``champion``)
- any of those names prefixed with a kind to disambiguate: ``dataset_version:shakes@v2``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.core.errors import InvalidReference

# Kinds of artifact and the prefix of their ids. A new kind is added here and nowhere else.
KIND_PREFIXES: dict[str, str] = {
    "source": "src",
    "dataset_version": "ds",
    "run": "run",
    "model_version": "mv",
    "eval_report": "ev",
    "vector_index": "vi",
    "deployment": "dep",
    "feedback_batch": "fb",
    "prompt_template": "pt",
}
ARTIFACT_KINDS = tuple(KIND_PREFIXES)

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
_ID_RE = re.compile(rf"^({'|'.join(KIND_PREFIXES.values())})-[0-9a-f]{{16}}$")
_REF_RE = re.compile(rf"^(?:(?P<kind>[a-z_]+):)?(?P<name>{NAME_PATTERN})(?:@(?P<selector>[A-Za-z0-9._-]+))?$")
_VERSION_RE = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference. Exactly one of ``artifact_id`` or ``name`` is set."""

    artifact_id: str | None = None
    kind: str | None = None
    name: str | None = None
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.artifact_id:
            return self.artifact_id
        text = f"{self.kind}:{self.name}" if self.kind else str(self.name)
        if self.version is not None:
            text += f"@v{self.version}"
        elif self.alias:
            text += f"@{self.alias}"
        return text


def is_artifact_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


GROUP_PATTERN = r"[\w.:@-]{1,64}"  # an access-control group (API keys, documents)


def validate_group(group: str) -> str:
    if not re.fullmatch(GROUP_PATTERN, group):
        raise InvalidReference(
            f"invalid group name {group!r}", hint="use 1-64 letters, digits, '_', '.', ':', '@' or '-'"
        )
    return group


def validate_name(name: str, what: str = "name") -> str:
    """Names are 1–128 characters of letters, digits, '.', '_' and '-', starting alphanumeric."""
    if not _NAME_RE.match(name):
        raise InvalidReference(
            f"invalid {what} {name!r}",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def parse_ref(text: str) -> Ref:
    text = text.strip()
    if is_artifact_id(text):
        return Ref(artifact_id=text)
    match = _REF_RE.match(text)
    if not match:
        raise InvalidReference(
            f"cannot parse reference {text!r}",
            hint="write NAME, NAME@vN, NAME@ALIAS, KIND:NAME@vN, or an artifact id like ds-0123456789abcdef",
        )
    kind = match["kind"]
    if kind is not None and kind not in KIND_PREFIXES:
        raise InvalidReference(
            f"unknown artifact kind {kind!r} in reference {text!r}",
            hint=f"kinds are: {', '.join(ARTIFACT_KINDS)}",
        )
    selector = match["selector"]
    version = alias = None
    if selector:
        version_match = _VERSION_RE.match(selector)
        if version_match:
            version = int(version_match[1])
            if version < 1:
                raise InvalidReference(f"versions start at v1, got {selector!r} in {text!r}")
        else:
            alias = selector
    return Ref(kind=kind, name=match["name"], version=version, alias=alias)
