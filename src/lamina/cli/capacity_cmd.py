"""``lamina capacity PROFILE --rate N --ttft-p95-ms X``: replicas and nodes for a load, by simulation."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lamina.cli.render import console, print_json


def capacity(
    profile_path: Path = typer.Argument(
        ...,
        metavar="PROFILE",
        help="A replica's measured service times (bench/capacity.py writes "
        "bench/results/capacity_profile.json).",
    ),
    rates: list[float] = typer.Option(
        ..., "--rate", min=0.001, help="Requests per second to plan for (repeat for several)."
    ),
    ttft_p95_ms: float = typer.Option(
        250.0, "--ttft-p95-ms", min=0.001, help="Objective: 95 % of first tokens within this many ms."
    ),
    replicas_per_node: int = typer.Option(
        1,
        "--replicas-per-node",
        min=1,
        help="Replicas one node runs (the profile says how they were packed).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Replicas and nodes that each RATE needs to keep p95 TTFT within the objective and refuse nothing.

    Each answer is checked by a discrete-event simulation of that cluster (Poisson arrivals, a
    least-request gateway, continuous batching at the measured per-token speed), and the cluster with
    one replica fewer is simulated too, so you see the margin. Example:

        lamina capacity bench/results/capacity_profile.json --rate 100 --rate 1000 --ttft-p95-ms 200
    """
    from lamina.serving.capacity import ReplicaProfile, plan

    profile = ReplicaProfile.load(profile_path)
    plans = [plan(profile, rate, ttft_p95_ms / 1000, replicas_per_node=replicas_per_node) for rate in rates]
    if as_json:
        print_json([
            {"rate": p.rate, "ttft_p95_slo_ms": ttft_p95_ms, "replicas": p.replicas, "nodes": p.nodes,
             "simulated": p.result.row(), "one_fewer": p.below.row() if p.below else None}
            for p in plans
        ])  # fmt: skip
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("requests/s", "replicas", "nodes", "p95 TTFT", "mean latency", "one replica fewer"):
        table.add_column(col, justify="right" if col != "one replica fewer" else "left")
    for p in plans:
        fewer = (
            "—" if p.below is None
            else f"p95 TTFT {p.below.ttft_p95 * 1000:.1f} ms, {p.below.rejected:.1%} refused"
        )  # fmt: skip
        table.add_row(
            f"{p.rate:,g}", f"{p.replicas:,}", f"{p.nodes:,}", f"{p.result.ttft_p95 * 1000:.1f} ms",
            f"{p.result.latency_mean * 1000:.0f} ms", fewer,
        )  # fmt: skip
    console.print(
        f"Objective: p95 TTFT ≤ {ttft_p95_ms:g} ms, nothing refused. "
        f"Profile: {profile.source or profile_path}"
    )
    console.print(table)
