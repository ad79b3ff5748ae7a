"""``lamina audit list|purge|rotate|new-key``: the request audit log, its retention and encryption."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state
from lamina.core.errors import ConfigError

app = typer.Typer(
    help="The audit log: read it, purge old rows, rotate its encryption key.", no_args_is_help=True
)


def list_cmd(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Newest rows to show."),
    text: bool = typer.Option(False, "--text", help="Decrypt and show stored request/response text."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The newest requests: route, status, and the rails that acted on each."""
    from lamina.core.crypto import cipher_for
    from lamina.gateway.audit import texts

    with get_state(ctx).open_workspace() as ws:
        rows = texts(ws, cipher_for(ws.settings) if text else None, limit)
    if not text:
        for row in rows:
            row.pop("request_text"), row.pop("response_text")
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in (
        "at",
        "request",
        "route",
        "status",
        "rails",
        *(("request text", "response text") if text else ()),
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        rails = ", ".join(f"{v['rail']}:{v['action']}" for v in r["rails"])
        extra = (
            (escape(str(r["request_text"] or ""))[:200], escape(str(r["response_text"] or ""))[:200])
            if text
            else ()
        )
        table.add_row(r["at"][:19], r["request_id"], r["route"], str(r["status"]), rails, *extra)
    console.print(table if rows else "No requests recorded yet.")


def purge(
    ctx: typer.Context,
    older_than: float | None = typer.Option(
        None, "--older-than", min=0, help="Days. Default: security.audit_retention_days."
    ),
) -> None:
    """Delete audit rows older than a number of days (the server also does this hourly when
    security.audit_retention_days is set)."""
    from lamina.gateway.audit import purge as run

    with get_state(ctx).open_workspace() as ws:
        days = older_than if older_than is not None else ws.settings.security.audit_retention_days
        if days is None:
            raise ConfigError(
                "how old is too old?", hint="pass --older-than DAYS or set security.audit_retention_days"
            )
        gone = run(ws, days)
    console.print(f"[green]✓[/] {gone} audit rows older than {days:g} days deleted")


def rotate(ctx: typer.Context) -> None:
    """Re-encrypt stored audit text under the first key of security.encryption_keys (text stored
    before encryption was on gets encrypted too). Keep the old key listed until this has run."""
    from lamina.core.crypto import cipher_for
    from lamina.gateway.audit import rotate as run

    with get_state(ctx).open_workspace() as ws:
        cipher = cipher_for(ws.settings)
        if cipher is None:
            raise ConfigError(
                "no encryption key is set",
                hint="lamina audit new-key, then set LAMINA_SECURITY__ENCRYPTION_KEYS",
            )
        changed = run(ws, cipher)
    console.print(f"[green]✓[/] {changed} audit rows re-encrypted under the first key")


def new_key() -> None:
    """Print a new encryption key: put it first in LAMINA_SECURITY__ENCRYPTION_KEYS (a JSON list)."""
    from lamina.core.crypto import new_key as make

    typer.echo(make())


app.command("list")(list_cmd)
app.command("purge")(purge)
app.command("rotate")(rotate)
app.command("new-key")(new_key)
