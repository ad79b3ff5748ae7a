"""``lamina keys create|list|revoke``: API keys for the serving gateway."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.table import Table

from lamina.cli.render import console, print_json, short_time
from lamina.cli.state import get_state

app = typer.Typer(help="API keys for 'lamina serve' (stored only as hashes).", no_args_is_help=True)


class RoleChoice(StrEnum):
    admin = "admin"
    developer = "developer"
    reviewer = "reviewer"
    user = "user"


def create(
    ctx: typer.Context,
    role: RoleChoice = typer.Option(
        ..., "--role", help="admin, developer, reviewer or user (see docs/serving.md)."
    ),
    name: str = typer.Option(..., "--name", help="Who or what uses the key, e.g. ci-bot."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute allowed."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute allowed."),
    concurrency: int | None = typer.Option(None, "--max-concurrency", min=1, help="Requests in flight."),
    groups: str = typer.Option(
        "",
        "--groups",
        "-g",
        help="Comma-separated document groups the key may read through RAG, e.g. hr,legal "
        "(admin keys read every group; a key with none may not query collections).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the key included) for scripts."),
) -> None:
    """Create a key and print it once: only its hash is stored, so it cannot be shown again."""
    from lamina.gateway.keys import create_key

    limits = {
        k: v
        for k, v in (
            ("requests_per_minute", rpm),
            ("tokens_per_minute", tpm),
            ("max_concurrency", concurrency),
        )
        if v is not None
    }
    with get_state(ctx).open_workspace() as ws:
        made = create_key(ws, name, role.value, limits, groups.split(","))
    if as_json:
        print_json(
            {"id": made.key.id, "name": made.key.name, "role": made.key.role, "groups": made.key.groups,
             "key": made.secret}
        )  # fmt: skip
        return
    readable = f", groups {', '.join(made.key.groups)}" if made.key.groups else ""
    console.print(f"[green]✓[/] Created {made.key.role} key {made.key.id} ({made.key.name}{readable}):")
    console.print(f"\n  {made.secret}\n")
    console.print("Copy it now: it is stored only as a hash and will not be shown again.")


def list_cmd(
    ctx: typer.Context,
    active: bool = typer.Option(False, "--active", help="Hide revoked keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List keys (prefix, role, limits, when created, used and revoked); never the keys themselves."""
    from lamina.gateway.keys import list_keys

    with get_state(ctx).open_workspace() as ws:
        rows = list_keys(ws, include_revoked=not active)
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "name", "role", "groups", "prefix", "limits", "created", "last used", "revoked"):
        table.add_column(col)
    for r in rows:
        limits = ", ".join(f"{k}={v}" for k, v in r["limits"].items()) or "-"
        table.add_row(
            r["id"], r["name"], r["role"], ", ".join(r["groups"]) or "-", r["prefix"] + "…", limits,
            short_time(r["created_at"]), short_time(r["last_used_at"]), short_time(r["revoked_at"]),
        )  # fmt: skip
    console.print(table if rows else "No keys yet. Try 'lamina keys create --role user --name me'.")


def revoke(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="The key's id (key-…) or its printed prefix."),
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    from lamina.gateway.keys import revoke_key

    with get_state(ctx).open_workspace() as ws:
        row = revoke_key(ws, key)
    console.print(f"[green]✓[/] Revoked {row.id} ({row.name}, {row.role})")


app.command("create")(create)
app.command("list")(list_cmd)
app.command("revoke")(revoke)
