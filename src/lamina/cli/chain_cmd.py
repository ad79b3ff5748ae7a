"""``lamina chain run FILE``: run a YAML chain of prompt templates and models (docs/rag.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from lamina.cli import generators
from lamina.cli.parsing import json_object
from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="Chains: template → model → parser → next template, declared in YAML.", no_args_is_help=True
)


def run(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The chain (YAML)."),
    values: str = typer.Option(
        "{}", "--vars", help='The chain\'s inputs as JSON, e.g. \'{"question": "…"}\'.'
    ),
    url: str | None = typer.Option(
        None, "--url", help="Generate through a Lamina server instead of locally."
    ),
    key: str | None = typer.Option(None, "--key", envvar="LAMINA_API_KEY", help="API key for --url."),
    as_json: bool = typer.Option(False, "--json", help="Print the outputs and the trace as JSON."),
) -> None:
    """Check every step's variables, then run the steps in order; print each output."""
    from lamina.rag import chains

    inputs = json_object(values, "--vars")
    chain = chains.load_chain(file)
    with get_state(ctx).open_workspace() as ws:
        generate, close = generators.remote(url, key) if url else generators.local(ws)
        try:
            result = chains.run(ws, chain, inputs, generate)
        finally:
            close()
    if as_json:
        print_json({"outputs": result.outputs, "trace": result.trace})
        return
    for step in result.trace:
        value = result.outputs[step["output"]]
        shown = value if isinstance(value, str) else json.dumps(value)
        console.print(f"[bold]{step['step']}. {escape(step['output'])}[/] ({escape(step['template'])}, "
                      f"{escape(step['model'])}): {escape(shown)}", soft_wrap=True)  # fmt: skip


app.command("run")(run)
