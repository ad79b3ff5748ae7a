"""Who may call what: each route declares its roles where it is defined; the gateway reads them.

One source: a route passes ``openapi_extra=permit(...)`` to its decorator, so the permission sits
next to the handler (and shows in the OpenAPI document as ``x-lamina-roles``). ``PermissionTable``
collects them from the app's routes when the app is built and *refuses to build* an app with a
route that declares nothing, so no route can be added without a decision for every role. The
gateway fails closed: a path that matches no route needs a valid key too (then 404), and the
interactive docs need a key unless ``server.public_docs`` is set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

# reviewer: a user who may also judge and review anyone's answers (the feedback review queue)
Role = Literal["admin", "developer", "reviewer", "user"]
ROLES: tuple[Role, ...] = ("admin", "developer", "reviewer", "user")
PUBLIC = "public"  # no key needed
EXTRA_KEY = "x-lamina-roles"


def permit(*roles: str) -> dict[str, Any]:
    """A route's ``openapi_extra``: the roles that may call it (``PUBLIC``: anyone, no key)."""
    unknown = set(roles) - {*ROLES, PUBLIC}
    if unknown or not roles:
        raise ValueError(f"permit() takes roles from {(*ROLES, PUBLIC)}, got {roles}")
    return {EXTRA_KEY: sorted(roles)}


ANYONE = permit(PUBLIC)
ANY_KEY = permit(*ROLES)
OPERATORS = permit("admin", "developer")
ADMIN_ONLY = permit("admin")
REVIEWERS = permit("admin", "reviewer")


def flat_routes(routes: Iterable[Any]) -> list[Any]:
    """Every route of an app, its included routers' too (FastAPI ≥ 0.16x keeps included routers
    as lazy entries in ``app.routes``; ``iter_route_contexts`` is how its OpenAPI code walks them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        return list(routes)
    return list(iter_route_contexts(list(routes)))


class UndeclaredRoute(RuntimeError):
    """A route without a permission: a programming error, found when the app is built."""


class PermissionTable:
    """``(method, route template)`` → the roles allowed, with the path matching the gateway needs."""

    def __init__(self, entries: dict[tuple[str, str], frozenset[str]]) -> None:
        self.entries = entries
        self._patterns = [
            (method, re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", route) + "$"), route)
            for method, route in entries
        ]

    @classmethod
    def from_routes(
        cls, routes: Iterable[Any], *, docs_paths: Iterable[str] = (), public_docs: bool = False
    ) -> PermissionTable:
        """Read each route's ``permit`` declaration; ``docs_paths`` (FastAPI's docs and schema)
        need any key, or none with ``public_docs``. Raises ``UndeclaredRoute`` for any other route
        that declares nothing."""
        docs = set(docs_paths)
        entries: dict[tuple[str, str], frozenset[str]] = {}
        for route in flat_routes(routes):
            path, methods = getattr(route, "path", None), set(getattr(route, "methods", None) or ())
            if path is None:
                continue
            if path in docs:
                roles = frozenset({PUBLIC}) if public_docs else frozenset(ROLES)
            else:
                declared = (getattr(route, "openapi_extra", None) or {}).get(EXTRA_KEY)
                if not declared:
                    raise UndeclaredRoute(
                        f"route {sorted(methods)} {path} declares no permission: pass "
                        "openapi_extra=permit(...) to its decorator"
                    )
                roles = frozenset(declared)
            for method in methods - {"HEAD", "OPTIONS"}:
                entries[(method, path)] = roles
        return cls(entries)

    def match(self, method: str, path: str) -> str | None:
        """The route template that ``method path`` calls, or None."""
        for m, pattern, route in self._patterns:
            if m == method and pattern.match(path):
                return route
        return None

    def is_public(self, method: str, route: str) -> bool:
        return PUBLIC in self.entries.get((method.upper(), route), frozenset())

    def allowed(self, role: str, method: str, route: str) -> bool:
        """Whether ``role`` may call ``method route``; unknown routes are denied to everyone."""
        roles = self.entries.get((method.upper(), route))
        return roles is not None and (PUBLIC in roles or role in roles)

    def markdown(self) -> str:
        """The matrix as a Markdown table (docs/serving.md reproduces it; it cannot drift)."""
        lines = ["| route | " + " | ".join(ROLES) + " |", "|---|" + "---|" * len(ROLES)]
        for (method, route), roles in sorted(self.entries.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            cells = ["public" if PUBLIC in roles else ("yes" if r in roles else "no") for r in ROLES]
            lines.append(f"| `{method} {route}` | " + " | ".join(cells) + " |")
        return "\n".join(lines)
