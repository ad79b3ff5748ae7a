"""``lamina monitor report``: the service KPIs of a window as an HTML page with plots (and the same
numbers as JSON): traffic and errors, latency p50/p95, tokens, rail actions, thumbs-up rate, and a
table per API key with its tokens (and cost, given a price)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from lamina.monitoring.kpis import Series


def plots_png(series: Series) -> bytes:
    """Five panels over the window's buckets (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, step = series.window.edges, series.window.bucket
    x = [e + step / 2 for e in edges]  # lines at bucket centres, bars spanning their bucket
    fig, axes = plt.subplots(5, 1, figsize=(9, 12), sharex=True)
    axes[0].bar(edges, series.requests, width=step * 0.9, align="edge", label="requests", color="#4c78a8")
    errors = [a + b for a, b in zip(series.client_errors, series.server_errors, strict=True)]
    axes[0].bar(edges, errors, width=step * 0.9, align="edge", label="errors (4xx+5xx)", color="#e45756")
    axes[0].set_ylabel("requests")
    axes[0].legend(loc="upper left")
    axes[1].plot(x, _nan(series.latency_p50_ms), marker=".", label="p50")
    axes[1].plot(x, _nan(series.latency_p95_ms), marker=".", label="p95")
    axes[1].set_ylabel("latency (ms)")
    axes[1].legend(loc="upper left")
    axes[2].plot(x, series.tokens_in, label="prompt tokens")
    axes[2].plot(x, series.tokens_out, label="generated tokens")
    axes[2].set_ylabel("tokens")
    axes[2].legend(loc="upper left")
    for action, counts in sorted(series.rails.items()):
        axes[3].plot(x, counts, marker=".", label=action)
    axes[3].set_ylabel("rail actions")
    if series.rails:
        axes[3].legend(loc="upper left")
    axes[4].plot(x, _nan(series.thumbs_up_rate()), marker="o", color="#54a24b")
    axes[4].set_ylim(-0.05, 1.05)
    axes[4].set_ylabel("thumbs-up rate")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


def _nan(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def write(series: Series, out: Path) -> tuple[Path, Path]:
    """``out/monitor.html`` (plots embedded) and ``out/monitor.json``."""
    out.mkdir(parents=True, exist_ok=True)
    data = series.as_dict()
    (out / "monitor.json").write_text(json.dumps(data, indent=1))
    png = base64.b64encode(plots_png(series)).decode()
    totals = data["totals"]
    rate = totals["thumbs_up_rate"]
    summary = [
        ("requests", f"{totals['requests']:,} ({totals['requests_per_s']:.3f}/s)"),
        ("error rate", f"{totals['error_rate']:.1%} (5xx {totals['server_error_rate']:.1%})"),
        ("tokens in / out", f"{totals['tokens_in']:,} / {totals['tokens_out']:,}"),
        ("rail actions", ", ".join(f"{k} {v}" for k, v in sorted(totals["rail_actions"].items())) or "none"),
        ("thumbs up / down", f"{totals['thumbs_up']} / {totals['thumbs_down']}"
         + (f" ({rate:.0%} up)" if rate is not None else "")),
    ]  # fmt: skip
    has_cost = any("cost" in k for k in series.per_key.values())
    head = "<tr><th>key</th><th>requests</th><th>errors</th><th>tokens in</th><th>tokens out</th>" + (
        "<th>cost</th>" if has_cost else ""
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{k['requests']}</td><td>{k['errors']}</td>"
        f"<td>{k['tokens_in']}</td><td>{k['tokens_out']}</td>"
        + (f"<td>{k.get('cost', 0):.4f}</td>" if has_cost else "")
        + "</tr>"
        for name, k in series.per_key.items()
    )
    page = f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>Lamina monitor</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style>
<h1>Service report</h1>
<p>{html.escape(data["start"])} to {html.escape(data["end"])}, buckets of {data["bucket_seconds"]:.0f} s.</p>
<table>{"".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)}</table>
<h2>Over time</h2><img alt="requests and errors, latency p50 and p95, tokens, rail actions and thumbs-up
rate per bucket" src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Per key</h2><table>{head}</tr>{rows}</table>
</html>"""
    (out / "monitor.html").write_text(page, encoding="utf-8")
    return out / "monitor.html", out / "monitor.json"
