"""``lamina rails list|test|train|eval``: the guardrails (docs/guardrails.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="Guardrails: check texts against the rails policy, train and evaluate rail classifiers.",
    no_args_is_help=True,
)


def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every registered rail: where it runs, what it does by default, its options."""
    import lamina.guardrails.builtin  # noqa: F401
    from lamina.core.extensions import RAILS

    rows = [
        {
            "rail": name,
            "stages": list(cls.stages),
            "action": cls.default_action,
            "threshold": cls.default_threshold,
            "options": cls.options,
            "about": (cls.__doc__ or "").strip().split("\n")[0],
        }
        for name, cls in ((n, RAILS.get(n)) for n in RAILS)
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("rail", "stages", "default action", "about"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["rail"], ", ".join(r["stages"]), r["action"], escape(r["about"]))
    console.print(table)


def test(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="The text to check (quote it)."),
    stage: str = typer.Option("input", "--stage", help="input (a prompt) or output (an answer)."),
    rail: list[str] = typer.Option(
        None,
        "--rail",
        help="Check with these rails only (repeat). "
        "Default: the stage's rails of lamina.yaml's policy, else the default preset.",
    ),
    source: list[str] = typer.Option(
        None, "--source", help="A source text, for the grounding rail (repeat)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run rails on one text and show each verdict, and the text as a model (or user) would get it.

    Example: lamina rails test "Call me on +1 415 555 0100" --stage output
    """
    from lamina.guardrails.policy import trial, trial_guard

    with get_state(ctx).open_workspace() as ws:
        guard = trial_guard(ws, stage, list(rail or []))
        result = trial(guard, text, stage, list(source or []))
    if as_json:
        print_json(result)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("rail", "action", "score", "why"):
        table.add_column(col)
    colours = {"allow": "green", "flag": "yellow", "redact": "cyan", "block": "red"}
    for v in result["verdicts"]:
        table.add_row(
            v["rail"], f"[{colours[v['action']]}]{v['action']}[/]", f"{v.get('score', 0):.2f}",
            escape("; ".join(v.get("reasons", []))),
        )  # fmt: skip
    console.print(table)
    if result["blocked"]:
        console.print(f"[red]✗ blocked[/] by {result['blocked']}")
    else:
        console.print(f"[green]✓[/] passes as: {escape(result['text'])}")


def train(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="injection or toxicity."),
    data: str = typer.Argument(
        ...,
        help="A dataset version (NAME@vN) with train and validation splits, or a "
        "JSONL/CSV file (ingested first as NAME-data).",
    ),
    name: str | None = typer.Option(None, "--name", help="The model's name. Default: KIND-guard."),
    text_field: str | None = typer.Option(None, "--text-field", help="Default: text, prompt, tweet…"),
    label_field: str | None = typer.Option(None, "--label-field", help="Default: label or class."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="finetune (MiniLM fine-tuned: best, minutes to "
        "train: ~12 min for the 17k shared tweets on 2 Zen 4 cores) or linear (TF-IDF + logistic "
        "regression: seconds). Default: finetune for both kinds.",
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Fine-tuning epochs. Default: per kind (injection 4, toxicity 2)."
    ),
    embed: bool | None = typer.Option(
        None,
        "--embed/--no-embed",
        help="Linear method: add MiniLM sentence embeddings to the TF-IDF features (~5 ms more per "
        "check). Default: per kind (injection: on; toxicity: off, where they measured no better).",
    ),
    long_copies: bool | None = typer.Option(
        None,
        "--long-copies/--no-long-copies",
        help="Add copies of short rows inside document passages so the rail judges content, not "
        "length (without them a model trained on short benign prompts blocks long ones). "
        "Default: on for injection.",
    ),
    promote: bool = typer.Option(
        True,
        "--promote/--no-promote",
        help="Move NAME@champion when it is at least as good as the champion on its validation split.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Train a rail classifier, evaluate it, register it in the hub (and promote it).

    Example: lamina rails train injection ../shared/data/guardrails/prompt-guard.shared.jsonl
    """
    from lamina.guardrails.training import train as run

    with get_state(ctx).open_workspace() as ws:
        say = None if as_json else lambda line: console.print(f"  {escape(line)}")
        trained = run(
            ws,
            kind,
            data,
            name=name,
            text_field=text_field,
            label_field=label_field,
            method=method,
            embed=embed,
            epochs=epochs,
            long_copies=long_copies,
            promote=promote,
            progress=say,
        )
    summary = {
        "model": trained.version.ref,
        "promoted": trained.promoted,
        "report": trained.report.ref,
        "metrics": trained.metrics,
    }
    if as_json:
        print_json(summary)
        return
    for head, m in trained.metrics.items():
        console.print(
            f"  {head}: AUC {m['auc']:.3f}, TPR {m['tpr_at_fpr05']:.3f} at FPR 5 %, "
            f"precision {m['precision']:.3f} recall {m['recall']:.3f} at threshold {m['threshold']:.3f}"
        )
    verb = "promoted to @champion" if trained.promoted else "registered (the champion is better)"
    console.print(f"[green]✓[/] {trained.version.ref} {verb}; ROC curve in the model folder (roc.html)")


def evaluate(
    ctx: typer.Context,
    data: str = typer.Argument(..., help="Labelled texts: a dataset version (NAME@vN) or a JSONL/CSV file."),
    rail: str = typer.Option(..., "--rail", help="The rail to evaluate (injection, toxicity, pii, …)."),
    model: str | None = typer.Option(
        None, "--model", help="The rail's model. Default: its KIND-guard@champion."
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="How to read the labels (injection or toxicity). Default: the rail's name when it is a kind.",
    ),
    split: str | None = typer.Option(None, "--split", help="For a dataset version: one split only."),
    text_field: str | None = typer.Option(None, "--text-field"),
    label_field: str | None = typer.Option(None, "--label-field"),
    out: Path = typer.Option(Path("rails-eval"), "--out", help="Folder for ROC.png and ROC.html."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Precision, recall, AUC and TPR at 5 % FPR of a rail on labelled texts, with its ROC curve.

    Example: lamina rails eval held-out.jsonl --rail injection
    """
    import numpy as np

    from lamina.guardrails import report, training
    from lamina.guardrails.rail import RailSpec, build

    kind_name = kind or rail
    spec = training.kind_of(kind_name)
    positive = next(iter(spec.heads.values()))  # the main head: injection, or toxic (hate + offensive)
    with get_state(ctx).open_workspace() as ws:
        rows = training.rows_of(ws, data, split)
        texts, labels, _ = training.labelled(rows, spec, text_field, label_field)
        built = build(RailSpec(rail=rail, model=model), "input" if rail != "grounding" else "output", ws)
        result = report.evaluate(
            built, texts, np.array([label in positive for label in labels]), out / f"{rail}-roc", rail
        )
    if as_json:
        print_json(result)
        return
    console.print(f"  {len(texts)} texts, {result['positives']} positive ({', '.join(positive)})")
    console.print(
        f"  precision {result['precision']:.3f}  recall {result['recall']:.3f}  FPR {result['fpr']:.3f}"
        + (f"  AUC {result['auc']:.3f}  TPR at FPR 5 % {result['tpr_at_fpr05']:.3f}" if result["auc"] else "")
    )
    console.print(f"[green]✓[/] ROC curve: {result['png']} and {result['html']}")


app.command("list")(list_cmd)
app.command("test")(test)
app.command("train")(train)
app.command("eval")(evaluate)
