"""``lamina loop run|worker|enqueue|jobs``: the closed loop, one round now or in the background
(logic: ``lamina.monitoring.loop``, ``lamina.monitoring.worker``, ``lamina.monitoring.jobs``)."""

from __future__ import annotations

import typer

from lamina.cli.render import console, print_json
from lamina.cli.state import get_state

app = typer.Typer(
    help="The closed loop: reviewed feedback → SFT / DPO → gate → promote; now or in a background worker.",
    no_args_is_help=True,
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
    lr: float | None = typer.Option(
        None, "--lr", help="Fine-tuning peak learning rate (default: the method's)."
    ),
    dpo_steps: int | None = typer.Option(
        None, "--dpo-steps", min=1, help="DPO steps on preferences (default 60)."
    ),
    reward: str | None = typer.Option(
        None, "--reward", help="A reward model (`lamina train reward`) that scores both models' answers."
    ),
    rails: bool = typer.Option(
        True, "--rails/--no-rails", help="Refuse a challenger whose answers trip more output rails."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the round as JSON."),
) -> None:
    """Reviewed corrections and preferences → dataset versions (plus replay) → a challenger (LoRA SFT
    on corrections, then DPO on preferences) → the gate (held-out answer loss with a bootstrap
    interval, the output rails, a reward model) → promoted to @champion only if it wins by --margin.

    Example: lamina loop run chat --eval chat-eval@v1 --replay instructions@v1 --margin 0.01
    """
    from lamina.core.crypto import cipher_for
    from lamina.monitoring.loop import run as run_round
    from lamina.training.preference import PreferenceConfig
    from lamina.training.sft import finetune_config_if

    cfg = finetune_config_if(method, max_steps=steps, lr=lr)  # type: ignore[arg-type]
    dpo_cfg = PreferenceConfig(max_steps=dpo_steps) if dpo_steps else None
    with get_state(ctx).open_workspace() as ws:
        say = None if as_json else (lambda line: console.print(f"  {line}"))
        result = run_round(ws, model, cipher_for(ws.settings), eval_set=eval_set, replay=replay,
                           replay_rows=replay_rows, min_rows=min_rows, margin=margin, method=method,
                           train_cfg=cfg, dpo_cfg=dpo_cfg, reward=reward, rails=rails,
                           progress=say)  # fmt: skip
    if as_json:
        print_json(result.as_dict())
        return
    colour = {"promoted": "green", "kept": "yellow", "skipped": "yellow"}.get(result.status, "red")
    console.print(f"[{colour}]{result.status}[/]: {result.reason}")
    console.print(f"  champion: {result.champion_before} → {result.champion_after}")


def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="One tick: queue what is due, run one job, exit."),
    interval: str = typer.Option("60s", "--interval", help="Wait between ticks when nothing is queued."),
    stale_after: str = typer.Option(
        "2m", "--stale-after", help="A running job whose worker was silent this long is taken over."
    ),
) -> None:
    """Run the closed loop in the background: each tick checks the triggers of every
    `monitoring.loop` entry in lamina.yaml (schedule, feedback volume, thumbs-up drop, drift), queues
    the rounds that are due, and runs one. Start several workers for several models; a worker that
    dies mid-round is taken over by the next, which continues that round.

    Example: lamina loop worker --interval 5m
    """
    from lamina.core.crypto import cipher_for
    from lamina.core.durations import parse_duration
    from lamina.monitoring.worker import serve, specs

    wait = parse_duration(interval, "--interval", positive=True).total_seconds()
    stale = parse_duration(stale_after, "--stale-after", positive=True)
    with get_state(ctx).open_workspace() as ws:
        models = [s.model for s in specs(ws.settings)]
        console.print(f"loop worker: {', '.join(models) or 'no monitoring.loop entries (queued jobs only)'}")
        try:
            serve(ws, cipher_for(ws.settings), interval_s=wait, once=once, stale_after=stale,
                  say=lambda line: console.print(f"  {line}"))  # fmt: skip
        except KeyboardInterrupt:
            console.print("stopped")


def enqueue(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="A model with a `monitoring.loop` entry in lamina.yaml."),
) -> None:
    """Queue a round for a worker now (a manual trigger).

    Example: lamina loop enqueue chat
    """
    from lamina.core.errors import ConfigError
    from lamina.monitoring import jobs
    from lamina.monitoring.worker import KIND, specs

    with get_state(ctx).open_workspace() as ws:
        spec = next((s for s in specs(ws.settings) if s.model == model), None)
        if spec is None:
            raise ConfigError(f"no monitoring.loop entry for {model!r}", hint="add one to lamina.yaml")
        job = jobs.enqueue(ws, KIND, model, "manual", spec.model_dump())
    if job is None:
        console.print(f"[yellow]a round for {model} is already queued or running[/]")
    else:
        console.print(f"[green]✓[/] queued job {job.id}: a round for {model}")


def list_jobs(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="Only this model's jobs."),
    limit: int = typer.Option(20, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The job queue, newest first: status, trigger, attempts, and each round's outcome."""
    from rich.table import Table

    from lamina.monitoring import jobs

    with get_state(ctx).open_workspace() as ws:
        rows = jobs.recent(ws, limit, key=model)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "kind", "model", "status", "trigger", "tries", "outcome")
    for row in rows:
        outcome = (row["result"] or {}).get("reason") or row["error"] or ""
        table.add_row(str(row["id"]), row["kind"], row["key"], row["status"], row["trigger"],
                      str(row["attempts"]), outcome[:80])  # fmt: skip
    console.print(table)


app.command("run")(run)
app.command("worker")(worker)
app.command("enqueue")(enqueue)
app.command("jobs")(list_jobs)
