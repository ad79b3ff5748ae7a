"""Rendering helpers shared by the commands: consoles, sizes, artifact tables, lineage trees."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from lamina.core.lineage import LineageNode

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    console.file.write(json.dumps(data, indent=2, default=str) + "\n")


def human_size(n: int | None) -> str:
    size = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def short_time(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def artifact_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for name in ("kind", "ref", "id", "size", "created"):
        table.add_column(name, no_wrap=name != "ref", overflow="fold")
    for row in rows:
        table.add_row(
            row["kind"],
            escape(row["ref"]),
            row["id"],
            human_size(row["size_bytes"]),
            short_time(row["created_at"]),
        )
    return table


def lineage_rich_tree(node: LineageNode) -> Tree:
    def label(n: LineageNode) -> str:
        a = n.artifact
        text = f"[bold]{escape(a.ref)}[/] [dim]{a.kind} · {a.id}[/]"
        if n.relation:
            text = f"[cyan]{n.relation}[/] ← {text}"
        if n.repeated:
            text += " [dim](shown above)[/]"
        if n.truncated:
            text += " [yellow](more parents beyond --depth)[/]"
        return text

    def add(tree: Tree, n: LineageNode) -> None:
        for parent in n.parents:
            add(tree.add(label(parent)), parent)

    root = Tree(label(node))
    add(root, node)
    return root


@contextmanager
def step_progress(
    description: str, total: int, rate_unit: str
) -> Iterator[Callable[[dict[str, float]], None]]:
    """A progress bar for the shared training loop: loss and speed on the bar, validation lines above it.
    The machine's defaults are printed once above it (what precision the run trains in, and why)."""
    from lamina.core.machine import defaults

    console.print(f"[dim]Machine: {escape(defaults().describe())}[/]", highlight=False)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(
        TextColumn("{task.description}"), *columns, TimeRemainingColumn(), console=console
    ) as progress:
        task = progress.add_task(description, total=total, info="")

        def on_progress(point: dict[str, float]) -> None:
            info = f"loss {point['loss']:.3f}  {point['tokens_per_s']:,.0f} {rate_unit}"
            if "val_loss" in point:
                extra = "".join(
                    f", {k} {point[k]:.3f}"
                    for k in ("recon", "kl", "d_loss", "g_loss", "diversity_ratio")
                    if k in point
                )
                progress.console.print(
                    f"  step {int(point['step'])}: val loss {point['val_loss']:.4f}{extra}"
                )
            progress.update(task, completed=int(point["step"]), info=info)

        yield on_progress
