"""``lamina data …``: ingest, build, append, list, show, diff, export."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state
from lamina.core.errors import ConfigError
from lamina.data import versions
from lamina.data.pipeline import BuildResult, build_dataset
from lamina.data.recipe import DEFAULT_STEPS, Recipe, SplitSpec, parse_recipe
from lamina.data.records import OnError
from lamina.data.sources import make_source

app = typer.Typer(
    help="Build versioned datasets: ingest, clean, deduplicate, split, report.", no_args_is_help=True
)


def _parse_splits(values: list[str]) -> dict[str, float]:
    fractions = {}
    for value in values:
        name, _, frac = value.partition("=")
        try:
            fractions[name.strip()] = float(frac)
        except ValueError:
            raise ConfigError(f"--split must look like NAME=FRACTION (e.g. val=0.1), got {value!r}") from None
    return fractions


def _progress_build(run: object) -> BuildResult:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("reading", total=None)

        def update(phase: str, rows: int) -> None:
            progress.update(task, description=f"{phase}: {rows:,} rows")

        return run(update)  # type: ignore[operator,no-any-return]


def _print_result(result: BuildResult) -> None:
    v = result.version
    if result.reused:
        console.print(f"[green]✓[/] Unchanged recipe and input: reusing [bold]{v.ref}[/] ({v.id})")
        return
    console.print(f"[green]✓[/] Built [bold]{v.ref}[/] ({v.id}): {v.num_rows:,} rows, splits {v.splits}")
    table = Table(show_edge=False, header_style="bold")
    for col in ("step", "rows in", "rows out", "dropped"):
        table.add_column(col)
    for step in result.report["steps"]:
        dropped = ", ".join(f"{k} {n:,}" for k, n in step["dropped"].items())
        table.add_row(step["name"], f"{step['rows_in']:,}", f"{step['rows_out']:,}", dropped)
    console.print(table)
    if result.report["errors"]["skipped"]:
        console.print(f"  skipped {result.report['errors']['skipped']:,} bad records (see the report)")
    drifted = [d["field"] for d in result.report.get("drift", []) if d["drifted"]]
    if drifted:
        console.print(f"  [yellow]drift against the previous version in: {', '.join(drifted)}[/]")
    console.print(f"  report: lamina data show {v.ref}   (HTML inside the version folder: report.html)")


def _executor(on_ray: bool) -> str:
    return "ray" if on_ray else "local"


def ingest(
    ctx: typer.Context,
    source: str = typer.Argument(
        ..., help="A file, folder, glob or URL (s3://…); the type comes from the extension."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name (a new version is added if it exists)."),
    dedup: str = typer.Option("exact", "--dedup", help="exact, near (MinHash-LSH) or none."),
    split: list[str] = typer.Option(
        [], "--split", help="A held-out split as NAME=FRACTION; repeat for more."
    ),
    stratify: str | None = typer.Option(
        None, "--stratify", help="Keep this field's class balance in every split."
    ),
    group: str | None = typer.Option(None, "--group", help="Keep rows sharing this field in one split."),
    text_field: str = typer.Option("text", "--text-field", help="The field holding the text."),
    on_error: OnError = typer.Option(
        "fail", "--on-error", help="On a bad record: fail, or skip and count it."
    ),
    min_chars: int = typer.Option(0, "--min-chars", help="Drop texts shorter than this."),
    seed: int = typer.Option(0, "--seed", help="Seed for splits and augmentation."),
    on_ray: bool = typer.Option(
        False, "--ray", help="Run the leading row-local steps on Ray workers (RAY_ADDRESS, else a local Ray)."
    ),
) -> None:
    """Build a dataset version from one source with sensible default steps.

    Example: lamina data ingest ../shared/data/sft/gsm8k/train.jsonl --name gsm8k --dedup near --split val=0.1
    """
    if dedup not in ("exact", "near", "none"):
        raise ConfigError(f"--dedup must be exact, near or none, got {dedup!r}")
    steps: list[str | dict] = [s for s in DEFAULT_STEPS if not (isinstance(s, dict) and "dedup" in s)]
    if dedup != "none":
        steps.append({"dedup": {"method": dedup}})
    if min_chars:
        steps.append({"filter": {"min_chars": min_chars}})
    by = "stratified" if stratify else "group" if group else "random"
    source_spec: str | dict = source if "://" in source else str(Path(source).resolve())
    recipe = Recipe(
        source=source_spec,
        steps=steps,
        text_field=text_field,
        on_error=on_error,
        seed=seed,
        split=SplitSpec(fractions=_parse_splits(split), by=by, field=stratify or group, seed=seed),
    )
    with get_state(ctx).open_workspace() as ws:
        result = _progress_build(
            lambda p: build_dataset(
                ws, name, recipe, base_dir=Path.cwd(), progress=p, executor=_executor(on_ray)
            )
        )
    _print_result(result)


def build(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A dataset recipe under 'datasets:' in lamina.yaml."),
    on_error: OnError | None = typer.Option(
        None, "--on-error", help="Override the recipe's bad-record policy."
    ),
    on_ray: bool = typer.Option(
        False, "--ray", help="Run the leading row-local steps on Ray workers (RAY_ADDRESS, else a local Ray)."
    ),
) -> None:
    """Build dataset NAME from its recipe in lamina.yaml (reuses the last version if nothing changed).

    With --ray, the recipe's leading row-local steps (normalize, filter, lowercase, stopwords, log_mel)
    run on Ray Data workers; the version is the same as a build in one process (docs/scale.md).
    """
    with get_state(ctx).open_workspace() as ws:
        recipes = ws.settings.datasets
        if name not in recipes:
            known = ", ".join(sorted(recipes)) or "none yet"
            raise ConfigError(
                f"no recipe named {name!r} under 'datasets:' in lamina.yaml (recipes: {known})",
                hint="add one (see the commented example in lamina.yaml) or use 'lamina data ingest'",
            )
        recipe = parse_recipe(name, recipes[name], str(ws.root / "lamina.yaml"))
        result = _progress_build(
            lambda p: build_dataset(
                ws, name, recipe, on_error=on_error, progress=p, executor=_executor(on_ray)
            )
        )
    _print_result(result)


def append(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The dataset to extend."),
    file: str = typer.Argument(
        ..., help="New records: a file any source reads (jsonl, csv, …), or - for JSONL on stdin."
    ),
    on_error: OnError | None = typer.Option(
        None, "--on-error", help="On a bad record: fail, or skip and count it."
    ),
) -> None:
    """Append records to dataset NAME as a new version (cleaned and deduplicated like the rest)."""
    from lamina.data.append import append as append_records
    from lamina.data.records import ErrorLog

    errors = ErrorLog(on_error or "fail")

    def from_stdin() -> Iterator[dict]:
        for line_no, line in enumerate(sys.stdin, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    errors.bad(f"stdin line {line_no}", "invalid JSON", exc.msg)

    def from_file() -> Iterator[dict]:
        for batch in make_source(str(Path(file).resolve())).batches(errors):
            yield from batch

    # streamed: the records are read while they are appended, never all held at once
    with get_state(ctx).open_workspace() as ws:
        result = append_records(ws, name, from_stdin() if file == "-" else from_file(), on_error=on_error)
    console.print(
        f"[green]✓[/] Appended {result.report['appended_rows']:,} of {result.report['rows_read']:,} records: "
        f"[bold]{result.version.ref}[/] now has {result.version.num_rows:,} rows"
    )


def list_cmd(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Only versions of this dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List dataset versions, newest first."""
    with get_state(ctx).open_workspace() as ws:
        rows = versions.list_versions(ws, name)
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("ref", "rows", "splits", "id"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["ref"], f"{row['rows']:,}", escape(json.dumps(row["splits"])), row["id"])
    console.print(table if rows else "No dataset versions yet. Try 'lamina data ingest FILE --name NAME'.")


def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME, NAME@vN or an id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (name, version, rows, splits, steps, …)."),
) -> None:
    """Show a dataset version: rows, splits, what each step did, checks, drift and where the report is."""
    with get_state(ctx).open_workspace() as ws:
        info = versions.show(ws, ref)
    if as_json:
        print_json(info)
        return
    console.print(f"[bold]{info['ref']}[/] ({info['id']}): {info['rows']:,} rows, splits {info['splits']}")
    console.print(
        f"  duplicate rate {info['duplicate_rate']:.2%}, dropped {info['drop_rate']:.2%}, "
        f"bad records skipped {info['errors']['skipped']:,}"
    )
    for step in info["steps"]:
        dropped = ", ".join(f"{k} {n:,}" for k, n in step["dropped"].items()) or "-"
        console.print(f"  {step['name']:<12} {step['rows_in']:>9,} → {step['rows_out']:>9,}   {dropped}")
    for item in info["drift"]:
        mark = "[yellow]drift[/]" if item["drifted"] else "ok"
        console.print(f"  drift {item['field']}: {item['test']} p={item['p_value']:.3g} {mark}")
    console.print(f"  report: {escape(info['report_html'])}")


def diff(
    ctx: typer.Context,
    ref_a: str = typer.Argument(..., help="The older version."),
    ref_b: str = typer.Argument(..., help="The newer version."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compare two versions: rows added/removed, columns, splits, drift."""
    with get_state(ctx).open_workspace() as ws:
        info = versions.diff(ws, ref_a, ref_b)
    if as_json:
        print_json(info)
        return
    console.print(
        f"{info['a']['ref']} → {info['b']['ref']}: +{info['rows_added']:,} rows, "
        f"-{info['rows_removed']:,} rows, {info['rows_common']:,} in common"
    )
    for split, (a, b) in info["splits"].items():
        console.print(f"  {split}: {a:,} → {b:,}")
    if info["columns_added"] or info["columns_removed"]:
        console.print(f"  columns +{info['columns_added']} -{info['columns_removed']}")
    for item in info["drift"]:
        console.print(
            f"  drift {item['field']}: {item['test']} p={item['p_value']:.3g}"
            + (" [yellow]drifted[/]" if item["drifted"] else "")
        )


def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="The version to export."),
    dest: Path = typer.Argument(..., help="A new (or empty) folder."),
    fmt: versions.ExportFormat = typer.Option(
        "parquet", "--format", help="jsonl, parquet, or hf (datasets.load_from_disk)."
    ),
) -> None:
    """Write a version out as JSONL, Parquet or a Hugging Face dataset folder."""
    with get_state(ctx).open_workspace() as ws:
        out = versions.export(ws, ref, dest, fmt)
    console.print(f"[green]✓[/] Exported {ref} as {fmt} to {escape(str(out))}")


app.command("ingest")(ingest)
app.command("build")(build)
app.command("append")(append)
app.command("list")(list_cmd)
app.command("show")(show)
app.command("diff")(diff)
app.command("export")(export)
