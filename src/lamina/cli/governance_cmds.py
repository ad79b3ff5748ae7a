"""``lamina governance report``: a model version's accountability file (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="Governance: what a model is, what made it, how it was checked and used.", no_args_is_help=True
)


def report(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="The model version: NAME, NAME@vN or NAME@alias."),
    out: Path = typer.Option(
        None, "--out", help="Where to write REF.json and REF.html. Default: governance/."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON too."),
) -> None:
    """Model card, data lineage with licenses, evaluations, guardrails and their verdicts, use and
    feedback, intended use and limitations, mapped to ISO/IEC 42001 and the EU AI Act (gaps marked).

    Example: lamina governance report tiny-lm@champion
    """
    from lamina.hub import governance

    with get_state(ctx).open_workspace() as ws:
        data = governance.report(ws, ref)
        folder = out or ws.root / "governance"
        json_path, html_path = governance.write(data, folder / data["model"]["ref"].replace("@", "_"))
    if as_json:
        print_json(data)
        return
    gaps = [m["clause"] for m in data["mapping"] if m["status"] == "gap"]
    console.print(f"[green]✓[/] {json_path} and {html_path}")
    console.print(
        f"  {len(data['mapping']) - len(gaps)} of {len(data['mapping'])} items present"
        + (f"; gaps: {'; '.join(gaps)}" if gaps else "")
    )


app.command("report")(report)
