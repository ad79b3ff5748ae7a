"""``lamina monitor report``: the service's KPIs over a window, as HTML with plots and JSON."""

from __future__ import annotations

from pathlib import Path

import typer

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
    from lamina.monitoring.alerts import parse_window
    from lamina.monitoring.kpis import collect
    from lamina.monitoring.report import write

    window = parse_window(since, "--since")
    step = parse_window(bucket, "--bucket") if bucket else None
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


def drift(
    ctx: typer.Context,
    reference: str = typer.Option(
        ...,
        "--reference",
        help="The dataset version the model learned from (NAME@vN), or a .txt/.jsonl/.csv file.",
    ),
    split: str | None = typer.Option("train", "--split", help="The reference's split (dataset versions)."),
    window: int = typer.Option(500, "--window", min=20, help="The newest answered requests to compare."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0001, max=0.5, help="False-alarm rate of the check."),
    sample: int = typer.Option(2000, "--reference-sample", min=20, help="Reference texts drawn (seeded)."),
    webhook: str | None = typer.Option(None, "--webhook", help="POST the report here when drift is found."),
    out: Path = typer.Option(Path("monitor"), "--out", help="Folder for drift.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Is recent traffic still like the training data? Three tests with p-values — meaning (MMD on
    MiniLM embeddings), length and vocabulary (PSI) — combined at --alpha. Reads the prompts from the
    audit log (server.audit_text on, with an encryption key).

    Example: lamina monitor drift --reference shakespeare@v1 --window 500 --webhook http://hooks/drift
    """
    import json
    import logging

    from lamina.core.crypto import cipher_for
    from lamina.monitoring.drift import check_workspace, recent_prompts, reference_texts

    with get_state(ctx).open_workspace() as ws:
        traffic = recent_prompts(ws, cipher_for(ws.settings), window)
        texts = reference_texts(ws, reference, split, sample)
        report = check_workspace(ws, texts, traffic, alpha=alpha)
    out.mkdir(parents=True, exist_ok=True)
    data = {**report.as_dict(), "reference_ref": reference}
    (out / "drift.json").write_text(json.dumps(data, indent=1))
    if report.drifted:
        logging.getLogger("lamina.monitoring").warning("drift: %s", json.dumps(data))
        if webhook:
            import httpx

            httpx.post(webhook, json={"event": "drift", **data}, timeout=10).raise_for_status()
    if as_json:
        print_json(data)
        return
    for t in report.tests:
        console.print(f"  {t.name}: statistic {t.statistic:.4f}, p = {t.p_value:.3f}")
    verdict = "[red]drift[/]" if report.drifted else "[green]no drift[/]"
    console.print(f"{verdict} between {len(texts)} reference texts and the last {len(traffic)} prompts "
                  f"(alpha {alpha}, Bonferroni over {len(report.tests)} tests)")  # fmt: skip


def check(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print every rule's result as JSON."),
) -> None:
    """Evaluate the alert rules of lamina.yaml (monitoring.alerts) now: a rule that fires is logged
    and POSTed to its webhook, and the command exits 1 (so cron or a timer can act on it).

    Example rule: {name: errors, metric: error_rate, op: ">", threshold: 0.05, window: 15m}
    """
    from lamina.monitoring.alerts import evaluate

    with get_state(ctx).open_workspace() as ws:
        rules = list(ws.settings.monitoring.alerts)
        results = evaluate(ws, rules)
    if as_json:
        print_json([r.as_dict() for r in results])
    else:
        if not results:
            console.print("No alert rules (monitoring.alerts in lamina.yaml).")
        for r in results:
            mark = "[red]FIRING[/]" if r.fired else "[green]ok[/]"
            value = "no data" if r.value is None else f"{r.value:.4g}"
            console.print(f"{mark} {r.rule}: {r.metric} = {value} ({r.op} {r.threshold:g} over {r.window}, "
                          f"{r.requests} requests)")  # fmt: skip
    if any(r.fired for r in results):
        raise typer.Exit(1)


def ab(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The experiment's name (server.experiments in lamina.yaml)."),
    since: str = typer.Option("30d", "--since", help="How far back to read its requests and votes."),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="The test's false-alarm rate."),
    tau: float = typer.Option(
        0.1, "--tau", min=1e-4, max=1.0, help="A thumbs-up rate difference worth finding."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compare the arms of an A/B test: requests, errors, latency, tokens and thumbs per arm, and a
    sequential test of the thumbs-up rates that stays valid however often you look (mSPRT).

    Example: lamina monitor ab chat-dpo --since 7d
    """
    from rich.table import Table

    from lamina.core.durations import parse_duration
    from lamina.monitoring.ab import report as ab_report

    window = parse_duration(since, "--since", positive=True)
    with get_state(ctx).open_workspace() as ws:
        result = ab_report(ws, name, since=window, alpha=alpha, tau=tau)
    if as_json:
        print_json(result)
        return
    table = Table("arm", "requests", "errors", "p50 ms", "p95 ms", "tokens", "👍", "👎", "👍 rate")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for arm, row in result["arms"].items():
        table.add_row(arm, str(row["requests"]), fmt(row["error_rate"], ".1%"),
                      fmt(row["latency_p50_ms"], ".0f"), fmt(row["latency_p95_ms"], ".0f"),
                      str(row["tokens_out"]), str(row["thumbs_up"]), str(row["thumbs_down"]),
                      fmt(row["thumbs_up_rate"], ".1%"))  # fmt: skip
    console.print(table)
    test = result["test"]
    console.print(
        f"{result['verdict']} — always-valid p = {test['p_value']:.3g} after {sum(test['votes'])} votes"
    )


app.command("ab")(ab)
app.command("report")(report)
app.command("drift")(drift)
app.command("check")(check)
