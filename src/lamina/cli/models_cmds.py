"""``lamina models …``: list, show, promote, rollback, import, export."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state
from lamina.hub import registry

app = typer.Typer(help="Model versions and aliases (champion, challenger, …).", no_args_is_help=True)


def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List model versions, newest first, with their aliases."""
    with get_state(ctx).open_workspace() as ws:
        rows = registry.list_models(ws)
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("ref", "family", "aliases", "score", "id"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["ref"], r["family"] or "-", ", ".join(r["aliases"]) or "-", _score(r["metrics"]), r["id"]
        )
    console.print(table if rows else "No models yet. Try 'lamina train lm --dataset NAME --name MODEL'.")


def _score(metrics: dict) -> str:
    """The headline metric of each family: validation loss for LMs, fid_clf for image generators."""
    for key, label, fmt in (
        ("val_loss", "val loss", ".4f"),
        ("fid_clf", "fid_clf", ".1f"),
        ("val_accuracy", "acc", ".3f"),
    ):
        value = metrics.get(key)
        if isinstance(value, float):
            return f"{label} {value:{fmt}}"
    return "-"


def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME, NAME@vN or NAME@ALIAS."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a model version: metrics, aliases, lineage, evaluations and its model card."""
    with get_state(ctx).open_workspace() as ws:
        info = registry.show(ws, ref)
    if as_json:
        print_json(info)
        return
    console.print(
        f"[bold]{info['ref']}[/] ({info['id']}) {info['family']}  "
        f"aliases: {', '.join(info['aliases']) or '-'}"
    )
    for parent in info["parents"]:
        console.print(f"  {parent['relation']} ← {parent['ref']} ({parent['kind']})")
    for key, value in info["metrics"].items():
        console.print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    console.print(f"  folder: {escape(info['path'])}")


def promote(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="The version to promote (NAME@vN)."),
    alias: str = typer.Argument(..., help="The alias to point at it, e.g. champion."),
) -> None:
    """Point ALIAS at a version (servers following the alias switch to it)."""
    with get_state(ctx).open_workspace() as ws:
        version, previous = registry.promote(ws, ref, alias)
    console.print(
        f"[green]✓[/] {version.name}@{alias} → {version.ref}" + (f" (was {previous})" if previous else "")
    )


def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The model name."),
    alias: str = typer.Option("champion", "--alias", help="The alias to move back."),
) -> None:
    """Move an alias back to the version it pointed at before."""
    with get_state(ctx).open_workspace() as ws:
        current, target = registry.rollback(ws, name, alias)
        ref = ws.catalog.get(target).ref
    console.print(f"[green]✓[/] {name}@{alias} rolled back from {current} to {ref} ({target})")


def import_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ..., help="A Hugging Face causal-LM folder, or a saved sentence-transformers folder (embeddings)."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Register it as NAME@vN."),
) -> None:
    """Register an outside checkpoint folder after checking it loads (as a causal LM, or as an
    embedding model served by /v1/embeddings and usable by 'lamina rag ingest --model')."""
    with get_state(ctx).open_workspace() as ws:
        version = registry.import_model(ws, path, name)
    console.print(f"[green]✓[/] Imported {escape(str(path))} as [bold]{version.ref}[/] ({version.id})")


def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="The version to export."),
    dest: Path = typer.Argument(..., help="A new (or empty) folder."),
) -> None:
    """Write a plain Hugging Face folder (AutoModelForCausalLM.from_pretrained loads it)."""
    with get_state(ctx).open_workspace() as ws:
        out = registry.export_model(ws, ref, dest)
    console.print(f"[green]✓[/] Exported {ref} to {escape(str(out))}")


app.command("list")(list_cmd)
app.command("show")(show)
app.command("promote")(promote)
app.command("rollback")(rollback)
app.command("import")(import_cmd)
app.command("export")(export)
