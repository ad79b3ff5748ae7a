"""``lamina init | status | upgrade | check | gc | config``: the workspace's own commands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.render import artifact_table, console, human_size, print_json
from lamina.cli.state import get_state
from lamina.core.settings import load_settings
from lamina.core.workspace import Workspace, find_workspace


def init(
    ctx: typer.Context,
    directory: Path | None = typer.Argument(
        None, help="Folder to turn into a workspace (created if missing). Default: --workspace, else '.'."
    ),
    catalog_url: str | None = typer.Option(
        None,
        "--catalog-url",
        help="Catalog database URL to write into the new lamina.yaml (default: SQLite).",
    ),
    artifact_url: str | None = typer.Option(
        None,
        "--artifact-url",
        help="Artifact store URL to write into the new lamina.yaml (default: ./artifacts).",
    ),
    profile: str = typer.Option(
        "local",
        "--profile",
        help="local (SQLite, a folder, LanceDB: one machine) or cluster (PostgreSQL, S3, pgvector: many).",
    ),  # fmt: skip
    vector_url: str | None = typer.Option(
        None, "--vector-url", help="PostgreSQL (pgvector) URL for RAG collections (cluster: the catalog's)."
    ),
    artifact_option: list[str] = typer.Option(
        [],
        "--artifact-option",
        help="KEY=VALUE for the artifact store (repeat), e.g. endpoint_url=http://minio:9000.",
    ),
) -> None:
    """Create a workspace: lamina.yaml, the catalog database and the artifact store.

    Safe to run again: an existing lamina.yaml is never overwritten, and an existing catalog is
    checked, not recreated.

    A cluster (several machines sharing one workspace):
    lamina init ws --profile cluster --catalog-url postgresql+psycopg://lamina@db/lamina
    --artifact-url s3://models/lamina --artifact-option endpoint_url=http://minio:9000
    """
    from lamina.core.errors import ConfigError

    state = get_state(ctx)
    target = directory or state.workspace or Path(".")
    options = {}
    for item in artifact_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--artifact-option takes KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    ws, created = Workspace.init(
        target, state.flags, catalog_url=catalog_url, artifact_url=artifact_url, vector_url=vector_url,
        artifact_options=options, profile=profile,
    )  # fmt: skip
    with ws:
        verb = "Created" if created else "Checked existing"
        console.print(f"[green]✓[/] {verb} workspace [bold]{escape(str(ws.root))}[/]")
        console.print(f"  catalog   {escape(ws.catalog.display_url)}  (schema {ws.catalog.schema().current})")
        console.print(f"  artifacts {escape(ws.store.url)}")
        if ws.settings.vector_url:
            console.print(f"  vectors   {escape(_hide_password(ws.settings.vector_url))}")
        console.print(f"  settings  {escape(str(ws.root / 'lamina.yaml'))}")
        console.print("Next: [bold]lamina status[/] (from inside the folder, or with --workspace)")


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
    recent: int = typer.Option(15, "--recent", min=0, help="How many recent artifacts to list."),
) -> None:
    """Show what the workspace holds: catalog, store, artifacts by kind, model aliases."""
    with get_state(ctx).open_workspace() as ws:
        info = ws.status(recent=recent)
    if as_json:
        print_json(info)
        return
    cat = info["catalog"]
    console.print(f"[bold]Workspace[/] {escape(info['workspace'])}")
    console.print(f"  catalog   {escape(cat['url'])}  (schema {cat['revision']}, current)")
    console.print(
        f"  artifacts {escape(info['store']['url'])}  ({human_size(info['total_size_bytes'])} recorded)"
    )
    if not info["counts"]:
        console.print("\nThe workspace is empty. Try [bold]lamina quickstart[/] for a demo workspace.")
        return
    total = sum(info["counts"].values())
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(info["counts"].items()))
    console.print(f"  holds     {total} artifact(s): {by_kind}")
    console.print()
    console.print(artifact_table(info["recent"], title=f"Most recent {len(info['recent'])}"))
    if info["aliases"]:
        aliases = Table(show_edge=False, header_style="bold", title="Model aliases", title_justify="left")
        for name in ("alias", "points at", "id"):
            aliases.add_column(name)
        for row in info["aliases"]:
            aliases.add_row(f"{row['model']}@{row['alias']}", row["ref"], row["version_id"])
        console.print()
        console.print(aliases)


def upgrade(ctx: typer.Context) -> None:
    """Migrate the workspace's catalog to the schema this Lamina uses (back it up first)."""
    state = get_state(ctx)
    before, after = Workspace.upgrade(state.workspace, state.flags)
    if before == after:
        console.print(f"[green]✓[/] Catalog already at schema {after}; nothing to do.")
    else:
        console.print(f"[green]✓[/] Catalog migrated from schema {before} to {after}.")


def check(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="Only read manifests; skip re-hashing every file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Verify that every artifact in the catalog is present and intact in the store.

    Exits with status 1 if any artifact is missing or its files no longer match their hash.
    """
    with get_state(ctx).open_workspace() as ws:
        report = ws.check(deep=not quick)
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "problems": report.problems,
                "orphans": report.orphans,
            }
        )
    else:
        for problem in report.problems:
            console.print(f"[red]✗[/] {escape(problem)}")
        mark = "[green]✓[/]" if report.ok else "[red]✗[/]"
        console.print(f"{mark} {report.checked} artifacts checked, {len(report.problems)} problems")
        if report.orphans:
            console.print(
                f"  {len(report.orphans)} store objects have no catalog row (interrupted commits); "
                "'lamina gc' removes them"
            )
    if not report.ok:
        raise typer.Exit(1)


def parse_duration(text: str) -> float:
    from lamina.core.durations import parse_duration as parse

    return parse(text, "--older-than").total_seconds()


def gc(
    ctx: typer.Context,
    older_than: str = typer.Option(
        "1h",
        "--older-than",
        help="Only remove debris older than this (90s, 30m, 2h, 1d), so running commits are safe.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
) -> None:
    """Remove debris of interrupted commits from the artifact store (never a cataloged artifact)."""
    seconds = parse_duration(older_than)
    with get_state(ctx).open_workspace() as ws:
        removed = ws.gc(older_than_s=seconds, dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    for path in removed:
        console.print(f"  {escape(path)}")
    console.print(f"[green]✓[/] {verb} {len(removed)} leftover item(s).")


def config(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON.")
) -> None:
    """Show the resolved settings (flags > LAMINA_* env > lamina.yaml > defaults), secrets hidden."""
    state = get_state(ctx)
    settings = load_settings(find_workspace(state.workspace), state.flags)
    data = settings.redacted()
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if isinstance(value, dict) and value:
            console.print(f"{key}:")
            for sub, subvalue in value.items():
                console.print(f"  {sub}: {escape(str(subvalue))}")
        else:
            console.print(f"{key}: {escape(str(value))}")


def _hide_password(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
