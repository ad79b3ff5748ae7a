"""``lamina explain REQUEST_ID``: why a served answer came out as it did (logic:
``lamina.monitoring.explain``)."""

from __future__ import annotations

from pathlib import Path

import typer

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state


def explain(
    ctx: typer.Context,
    request_id: str = typer.Argument(
        ..., help="The request id (the x-request-id header; `lamina audit list`)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the HTML (default: explain-ID.html)."
    ),
    top_k: int = typer.Option(5, "--top-k", min=1, max=50, help="Alternatives shown per answer token."),
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON instead."),
) -> None:
    """Explain a served text answer: which prompt tokens it leaned on (gradient × input), each answer
    token's probability and the model's other choices, and the RAG sources it was given. Needs the
    request's text in the audit log (server.audit_text: true) and its encryption key.

    Example: lamina explain 3f9c…e1 --out why.html
    """
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.explain import explain as run_explain
    from lamina.monitoring.explain import write_html

    with get_state(ctx).open_workspace() as ws:
        explanation = run_explain(ws, cipher_for(ws.settings), request_id, top_k=top_k)
    if as_json:
        print_json(explanation.as_dict())
        return
    path = write_html(explanation, out or Path(f"explain-{request_id}.html"))
    unsure = sum(s["p"] < 0.1 for s in explanation.steps)
    console.print(f"[green]✓[/] {len(explanation.steps)} answer tokens explained ({unsure} below p 0.1), "
                  f"{len(explanation.citations)} citations: {path}")  # fmt: skip
