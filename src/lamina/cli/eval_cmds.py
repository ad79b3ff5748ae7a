"""``lamina eval lm``: perplexity on a dataset version, samples, and harness tasks; an eval report."""

from __future__ import annotations

from pathlib import Path

import typer

from lamina.cli.render import console
from lamina.cli.state import get_state

app = typer.Typer(
    help="Evaluate registered models; results become eval-report artifacts.", no_args_is_help=True
)


def lm(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="The model to evaluate (NAME@ALIAS, NAME@vN, id)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset version with held-out text."),
    split: str = typer.Option("val", "--split", help="Which split to measure perplexity on."),
    text_field: str = typer.Option("text", "--text-field", help="The field holding the text."),
    harness: str | None = typer.Option(
        None, "--harness", help="lm-evaluation-harness tasks, comma-separated (needs 'lamina[eval]')."
    ),
    harness_tasks: Path | None = typer.Option(
        None,
        "--harness-tasks",
        exists=True,
        file_okay=False,
        help="A folder of harness task YAML files with local data (dataset_path: json); no downloads.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Examples per harness task."),
) -> None:
    """Measure perplexity (and optional harness tasks) and attach an eval report to the model version."""
    from lamina.evaluation.lm import DEFAULT_PROMPTS, generate, perplexity, record_eval, run_harness
    from lamina.hub.registry import model_path, resolve_model
    from lamina.training.lm import _texts
    from lamina.training.lm_task import encode_texts
    from lamina.training.sft import load_any

    with get_state(ctx).open_workspace() as ws:
        version = resolve_model(ws, model_ref)
        folder = model_path(ws, version)
        model, tokenizer = load_any(folder)
        data = ws.resolve(dataset, kind="dataset_version")
        ids = encode_texts(tokenizer, _texts(ws, data, split, text_field))  # type: ignore[arg-type]
        metrics: dict = perplexity(model, ids, int(model.config.max_position_embeddings))
        if harness:
            metrics["harness"] = run_harness(
                folder, [t.strip() for t in harness.split(",") if t.strip()], limit, harness_tasks,
                int(model.config.max_position_embeddings),
            )  # fmt: skip
        samples = [
            {"prompt": p, "output": generate(model, tokenizer, p, max_new_tokens=80)} for p in DEFAULT_PROMPTS
        ]
        report = record_eval(
            ws, version.id, f"{version.name}-eval", {**metrics, "dataset": data.ref, "split": split}, samples
        )
    console.print(
        f"[green]✓[/] {version.ref} on {data.ref}/{split}: loss {metrics['loss']:.4f}, "
        f"perplexity {metrics['perplexity']:.4f} ({metrics['tokens']:,} tokens); report {report.ref}"
    )
    for task, values in metrics.get("harness", {}).items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float))
        console.print(f"  harness {task}: {shown}")


app.command("lm")(lm)
