"""``lamina loop run``: one round of the closed loop (logic: ``lamina.monitoring.loop``)."""

from __future__ import annotations

import typer

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="The closed loop: reviewed feedback → fine-tune → gate → promote.", no_args_is_help=True
)


def run(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="The model name; its @champion is fine-tuned."),
    eval_set: str = typer.Option(
        ...,
        "--eval",
        help="A fixed held-out chat dataset (NAME@vN; its validation split if any) for the gate.",
    ),
    replay: str | None = typer.Option(
        None, "--replay", help="Earlier training data (NAME@vN) mixed in so the model does not forget."
    ),
    replay_rows: int = typer.Option(200, "--replay-rows", min=0, help="Rows sampled from --replay."),
    min_rows: int = typer.Option(
        1, "--min-rows", min=1, help="Reviewed corrections needed to start a round."
    ),
    margin: float = typer.Option(
        0.0, "--margin", help="The held-out loss improvement the bootstrap's lower 95 % bound must exceed."
    ),
    method: str = typer.Option("lora", "--method", help="lora (merged into the weights) or full."),
    steps: int | None = typer.Option(
        None, "--steps", min=1, help="Fine-tuning steps (default: the method's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the round as JSON."),
) -> None:
    """Reviewed corrections → a dataset version (plus replay) → a fine-tuned challenger → the gate
    (held-out answer loss, bootstrap interval) → promoted to @champion only if it wins by --margin.

    Example: lamina loop run chat --eval chat-eval@v1 --replay instructions@v1 --margin 0.01
    """
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.loop import run as run_round

    cfg = None
    if steps is not None:
        from lamina.training.sft import finetune_config

        cfg = finetune_config(method, max_steps=steps)  # type: ignore[arg-type]
    with get_state(ctx).open_workspace() as ws:
        say = None if as_json else (lambda line: console.print(f"  {line}"))
        result = run_round(ws, model, cipher_for(ws.settings), eval_set=eval_set, replay=replay,
                           replay_rows=replay_rows, min_rows=min_rows, margin=margin, method=method,
                           train_cfg=cfg, progress=say)  # fmt: skip
    if as_json:
        print_json(result.as_dict())
        return
    colour = {"promoted": "green", "kept": "yellow", "skipped": "yellow"}.get(result.status, "red")
    console.print(f"[{colour}]{result.status}[/]: {result.reason}")
    console.print(f"  champion: {result.champion_before} → {result.champion_after}")


app.command("run")(run)
