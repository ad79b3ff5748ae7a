"""``lamina prompts create|list|show|render``: versioned Jinja prompt templates (docs/rag.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.parsing import json_object
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

    parsed = json_object(values, "--vars")
    with get_state(ctx).open_workspace() as ws:
        text = prompts.load(ws, ref).render(**parsed)
    console.print(escape(text), highlight=False, soft_wrap=True)


def optimize(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The template to optimise; the best becomes NAME@champion."),
    variant: list[Path] = typer.Option(
        ...,
        "--variant",
        exists=True,
        dir_okay=False,
        help="A hand-written variant (repeat); each is a candidate.",
    ),  # fmt: skip
    eval_file: Path = typer.Option(
        ..., "--eval", exists=True, dir_okay=False, help='JSONL rows {"inputs": {...}, "expected": "..."}.'
    ),  # fmt: skip
    model: str = typer.Option(..., "--model", "-m", help="The model the prompts are for."),
    metric: str = typer.Option("f1", "--metric", help="f1 (SQuAD's token F1), exact or contains."),
    mutations: int = typer.Option(2, "--mutations", min=0, max=4, help="Instruction mutations per variant."),
    shots: str = typer.Option("1,2", "--shots", help="Few-shot sizes to try, e.g. 1,2 (empty: none)."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1, help="Tokens per answer."),
    seed: int = typer.Option(0, "--seed", help="Which rows are examples and which are scored."),
    url: str | None = typer.Option(
        None, "--url", help="Generate through a Lamina server instead of locally."
    ),
    key: str | None = typer.Option(None, "--key", envvar="LAMINA_API_KEY", help="API key for --url."),
    as_json: bool = typer.Option(False, "--json", help="Print every candidate's score as JSON."),
) -> None:
    """Score variants, their mutations and few-shot versions on an eval set; record every score and
    promote the best to NAME@champion (kept when the champion already scores as well)."""
    from lamina.cli import generators
    from lamina.rag.optimize import optimize as run_optimisation

    try:
        rows = [json.loads(line) for line in eval_file.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise ConfigError(f"{eval_file} is not JSONL: {exc}") from None
    sizes = tuple(int(k) for k in shots.split(",") if k.strip())
    texts = [v.read_text() for v in variant]
    with get_state(ctx).open_workspace() as ws:
        generate, close = generators.remote(url, key) if url else generators.local(ws)
        try:
            say = None if as_json else lambda line: console.print(f"  {escape(line)}")
            report = run_optimisation(
                ws, name, texts, rows, model, generate, metric=metric, mutations=mutations, shots=sizes,
                max_tokens=max_tokens, seed=seed, progress=say,
            )  # fmt: skip
        finally:
            close()
    summary = {
        "best": report.best.template.ref, "score": report.best.score, "promoted": report.promoted,
        "report": report.report.ref if report.report else None,
        "candidates": [{"ref": c.template.ref, "origin": c.origin, "score": c.score} for c in report.scored],
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    verb = "promoted to" if report.promoted else "kept (the champion scores as well):"
    best = report.best
    console.print(f"[green]✓[/] {best.template.ref} ({escape(best.origin)}, {metric} {best.score:.3f}) "
                  f"{verb} {name}@champion; scores in {summary['report']}")  # fmt: skip


app.command("create")(create)
app.command("list")(list_cmd)
app.command("show")(show)
app.command("render")(render)
app.command("optimize")(optimize)
