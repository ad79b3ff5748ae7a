"""Who may call what: the role × route matrix, in one table that docs/serving.md reproduces.

Roles are ordered by trust, but the matrix is explicit per route rather than "admin > developer >
user", so adding a route forces a decision for every role (a test checks each route is listed).
"""

from __future__ import annotations

from typing import Literal

Role = Literal["admin", "developer", "user"]
ROLES: tuple[Role, ...] = ("admin", "developer", "user")
PUBLIC = "public"  # no key needed

# (method, route) → the roles allowed; PUBLIC routes need no key at all.
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/health"): frozenset({PUBLIC}),
    ("GET", "/ready"): frozenset({PUBLIC}),
    ("GET", "/v1/models"): frozenset({"admin", "developer", "user"}),
    ("POST", "/v1/completions"): frozenset({"admin", "developer", "user"}),
    ("POST", "/v1/chat/completions"): frozenset({"admin", "developer", "user"}),
    ("POST", "/v1/embeddings"): frozenset({"admin", "developer", "user"}),
    ("POST", "/v1/images/generations"): frozenset({"admin", "developer", "user"}),
    ("GET", "/metrics"): frozenset({"admin", "developer"}),
    ("GET", "/admin/audit"): frozenset({"admin", "developer"}),
    ("GET", "/admin/keys"): frozenset({"admin"}),
    ("POST", "/admin/keys"): frozenset({"admin"}),
    ("DELETE", "/admin/keys/{key_id}"): frozenset({"admin"}),
}


def is_public(method: str, route: str) -> bool:
    return PUBLIC in PERMISSIONS.get((method.upper(), route), frozenset())


def allowed(role: str, method: str, route: str) -> bool:
    """Whether ``role`` may call ``method route``; unknown routes are denied to everyone."""
    roles = PERMISSIONS.get((method.upper(), route))
    return roles is not None and (PUBLIC in roles or role in roles)


def matrix_markdown() -> str:
    """The matrix as a Markdown table (for the docs, generated so it cannot drift)."""
    lines = ["| route | " + " | ".join(ROLES) + " |", "|---|" + "---|" * len(ROLES)]
    for (method, route), roles in PERMISSIONS.items():
        cells = ["public" if PUBLIC in roles else ("yes" if r in roles else "no") for r in ROLES]
        lines.append(f"| `{method} {route}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
