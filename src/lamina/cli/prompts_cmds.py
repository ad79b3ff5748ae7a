"""``lamina prompts create|list|show|render``: versioned Jinja prompt templates (docs/rag.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.render import console, print_json, short_time
from lamina.cli.state import get_state
from lamina.core.errors import ConfigError

app = typer.Typer(
    help="Prompt templates (Jinja) with declared variables, versioned in the catalog.", no_args_is_help=True
)


def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The template's name; each change is a new version NAME@vN."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The Jinja template text."),
    var: list[str] = typer.Option(
        None,
        "--var",
        help="A variable the template uses (repeat); checked against the text. "
        "Default: whatever the text uses.",
    ),  # fmt: skip
    description: str | None = typer.Option(None, "--description", "-d", help="What it is for."),
) -> None:
    """Save a template as the next version (an unchanged text keeps its version)."""
    from lamina.rag import prompts

    with get_state(ctx).open_workspace() as ws:
        template = prompts.save(ws, name, file.read_text(), var or None, description)
    console.print(
        f"[green]✓[/] {template.ref} ({template.id}), variables: {', '.join(template.variables) or 'none'}"
    )


def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every version of every template, newest first."""
    from lamina.rag import prompts

    with get_state(ctx).open_workspace() as ws:
        rows = prompts.listing(ws)
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("template", "variables", "created", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["ref"], ", ".join(r["variables"]), short_time(r["created_at"]), r["description"] or ""
        )
    console.print(table if rows else "No templates yet (rag-answer is recorded when first used).")


def show(ctx: typer.Context, ref: str = typer.Argument(..., help="NAME or NAME@vN.")) -> None:
    """Print a template's text and variables."""
    from lamina.rag import prompts

    with get_state(ctx).open_workspace() as ws:
        template = prompts.load(ws, ref)
    console.print(f"[bold]{template.ref}[/] variables: {', '.join(template.variables)}\n")
    console.print(escape(template.text), highlight=False)


def render(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME or NAME@vN."),
    values: str = typer.Option(
        ..., "--vars", help='The variables as a JSON object, e.g. \'{"question": "…", "sources": []}\'.'
    ),
) -> None:
    """Render a template with the given variables (a missing or unknown one is an error)."""
    from lamina.rag import prompts

    try:
        parsed = json.loads(values)
    except ValueError as exc:
        raise ConfigError(f"--vars is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError("--vars must be a JSON object of variable → value")
    with get_state(ctx).open_workspace() as ws:
        text = prompts.load(ws, ref).render(**parsed)
    console.print(escape(text), highlight=False, soft_wrap=True)


app.command("create")(create)
app.command("list")(list_cmd)
app.command("show")(show)
app.command("render")(render)
