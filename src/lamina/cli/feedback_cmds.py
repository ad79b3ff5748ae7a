"""``lamina feedback list|export`` and ``lamina review list|decide``: feedback on served answers,
the review queue, and the training rows approved feedback becomes (logic: ``lamina.monitoring``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(help="Feedback on served answers: list it, export training rows.", no_args_is_help=True)
review_app = typer.Typer(
    help="The review queue: thumbs-down, corrections, preferences and rail flags waiting for a person.",
    no_args_is_help=True,
)


def list_cmd(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="new, approved, rejected or corrected."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Newest items to show."),
    text: bool = typer.Option(False, "--text", help="Decrypt and show comments and corrections."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The newest feedback: request, model version, label, rating, status, where it came from."""
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.feedback import listing

    with get_state(ctx).open_workspace() as ws:
        rows = listing(ws, cipher_for(ws.settings) if text else None, status=status, limit=limit)
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in (
        "id",
        "at",
        "request",
        "label",
        "rating",
        "status",
        "origin",
        *(("comment",) if text else ()),
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        extra = (escape(str(r.get("comment") or r.get("correction") or ""))[:200],) if text else ()
        table.add_row(str(r["id"]), (r["at"] or "")[:19], r["request_id"], r["label"] or "",
                      str(r["rating"] or ""), r["status"], r["origin"], *extra)  # fmt: skip
    console.print(table if rows else "No feedback recorded yet.")


def export(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path("feedback-export"), "--out", help="Folder for sft.jsonl and preference.jsonl."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Write approved and corrected feedback as training rows: corrections → sft.jsonl (chat
    messages ending in the corrected answer), preferences → preference.jsonl (prompt, chosen,
    rejected). Every row keeps its feedback_id and request_id."""
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.review import training_rows

    with get_state(ctx).open_workspace() as ws:
        rows = training_rows(ws, cipher_for(ws.settings))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("sft", "preference"):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows[name]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {name: len(rows[name]) for name in rows}
    if as_json:
        print_json({**counts, "out": str(out), "skipped_rows": rows["skipped"]})
        return
    console.print(f"[green]✓[/] {counts['sft']} SFT rows and {counts['preference']} preference rows in {out}")
    for skipped in rows["skipped"]:
        console.print(f"  skipped feedback {skipped['feedback_id']}: {skipped['why']}")


def review_list(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", "-n", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Items waiting for review, oldest first, with what was asked and answered."""
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.review import queue

    with get_state(ctx).open_workspace() as ws:
        items = queue(ws, cipher_for(ws.settings), limit)
    if as_json:
        print_json(items)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "request", "why", "prompt", "answer"):
        table.add_column(col, overflow="fold")
    for i in items:
        table.add_row(str(i["id"]), i["request_id"], escape(i["why"]), escape(str(i["prompt"] or "–"))[:160],
                      escape(str(i["answer"] or "–"))[:160])  # fmt: skip
    console.print(table if items else "Nothing waits for review.")


def review_decide(
    ctx: typer.Context,
    item: int = typer.Argument(..., help="The item id (lamina review list)."),
    decision: str = typer.Argument(..., help="approve, reject or correct."),
    correction: str | None = typer.Option(None, "--correction", help="The corrected answer (with correct)."),
) -> None:
    """Approve, reject or correct one queued item (as the workspace's operator)."""
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.review import decide

    with get_state(ctx).open_workspace() as ws:
        done = decide(ws, item, decision, {"id": None, "role": "admin"}, cipher_for(ws.settings), correction)
    console.print(f"[green]✓[/] item {item}: {done['status']}")


app.command("list")(list_cmd)
app.command("export")(export)
review_app.command("list")(review_list)
review_app.command("decide")(review_decide)
