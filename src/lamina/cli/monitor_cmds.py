"""``lamina monitor report``: the service's KPIs over a window, as HTML with plots and JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from lamina.cli.parsing import duration
from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="Service monitoring: traffic, latency, errors, tokens, rails, feedback.", no_args_is_help=True
)


def report(
    ctx: typer.Context,
    since: str = typer.Option("24h", "--since", help="The window, back from now: 90s, 15m, 24h, 7d."),
    bucket: str | None = typer.Option(None, "--bucket", help="Bucket size (default: the window / 48, ≥ 1m)."),
    out: Path = typer.Option(Path("monitor"), "--out", help="Folder for monitor.html and monitor.json."),
    price: float | None = typer.Option(
        None, "--price-per-1k", min=0, help="Price per 1,000 tokens: adds a cost column per key."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the totals and per-key numbers as JSON."),
) -> None:
    """Requests and errors, latency p50/p95, tokens, rail actions and the thumbs-up rate over time,
    and tokens (and cost) per API key — read from the audit log and the feedback in the catalog.

    Example: lamina monitor report --since 7d --bucket 6h --price-per-1k 0.002
    """
    from lamina.monitoring.kpis import collect
    from lamina.monitoring.report import write

    window = duration(since, "--since")
    step = duration(bucket, "--bucket") if bucket else None
    with get_state(ctx).open_workspace() as ws:
        series = collect(ws, window, step, price_per_1k_tokens=price)
    page, data = write(series, out)
    totals = series.totals()
    if as_json:
        print_json({"totals": totals, "per_key": series.per_key, "html": str(page), "json": str(data)})
        return
    rate = totals["thumbs_up_rate"]
    console.print(
        f"{totals['requests']:,} requests, error rate {totals['error_rate']:.1%}, "
        f"{totals['tokens_in'] + totals['tokens_out']:,} tokens"
        + (f", thumbs-up rate {rate:.0%}" if rate is not None else "")
    )
    console.print(f"[green]✓[/] {page} (and {data.name})")


app.command("report")(report)
