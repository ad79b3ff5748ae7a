"""``lamina train dpo`` and ``lamina train reward``: learning from preference pairs (logic:
``lamina.training.preference``)."""

from __future__ import annotations

import typer

from lamina.cli.render import console
from lamina.cli.state import get_state


def _cfg(**given: object) -> object:
    from lamina.training.preference import PreferenceConfig

    return PreferenceConfig(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


def dpo(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="The chat model to tune (NAME@ALIAS, NAME@vN, id)."),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Pairs: prompt + chosen + rejected, or hh-rlhf dialogues."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Register the result as NAME@vN."),
    steps: int | None = typer.Option(None, "--max-steps", min=1, help="Optimizer steps (default 60)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Pairs per step (default 8)."),
    lr: float | None = typer.Option(
        None, "--lr", help="Peak learning rate of the LoRA adapter (default 5e-4)."
    ),
    beta: float | None = typer.Option(
        None, "--beta", help="How far from the starting model the policy may move (default 0.1)."
    ),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the new version."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log the run to MLflow."),
) -> None:
    """DPO (TRL) of a chat model on preference pairs, LoRA merged into the weights.

    Example: lamina train dpo chat@champion --dataset chat-prefs@v1 --name chat --alias challenger
    """
    from lamina.training.preference import dpo as run_dpo

    cfg = _cfg(max_steps=steps, batch_size=batch_size, lr=lr, beta=beta)
    with get_state(ctx).open_workspace() as ws:
        version = run_dpo(ws, model_ref, dataset, name, cfg=cfg, alias=alias, track=not no_track)  # type: ignore[arg-type]  # fmt: skip
    m = version.metrics
    console.print(f"[green]✓[/] Registered [bold]{version.ref}[/] ({version.id}): DPO loss "
                  f"{m['train_loss']:.4f}, chosen above rejected on {m['reward_accuracy']:.0%} of the last "
                  f"batches")  # fmt: skip


def reward(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Pairs (a `test` split, if any, is scored after training)."),
    name: str = typer.Option(..., "--name", "-n", help="Register the reward model as NAME@vN."),
    base: str | None = typer.Option(
        None, "--base", help="Folder of an encoder to start from (default: the packaged all-MiniLM-L6-v2)."
    ),
    steps: int | None = typer.Option(None, "--max-steps", min=1, help="Optimizer steps (default 200)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Pairs per step (default 16)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 1e-4)."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=8, help="The last N tokens of each dialogue are scored (default 128)."
    ),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the new version."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log the run to MLflow."),
) -> None:
    """Train a reward model (TRL's RewardTrainer, Bradley–Terry loss) that scores answers; the loop
    uses it to judge challenger against champion (`lamina loop run --reward NAME`).

    Example: lamina train reward hh-pairs@v1 --name rm --max-steps 300
    """
    from lamina.training.preference import train_reward

    defaults = {"max_steps": 200, "batch_size": 16, "lr": 1e-4}
    given = {"max_steps": steps, "batch_size": batch_size, "lr": lr, "max_tokens": max_tokens}
    cfg = _cfg(**{k: v if v is not None else defaults.get(k) for k, v in given.items()})
    with get_state(ctx).open_workspace() as ws:
        version = train_reward(ws, dataset, name, base=base, cfg=cfg, alias=alias, track=not no_track)  # type: ignore[arg-type]  # fmt: skip
    held = version.metrics.get("test_accuracy")
    tail = ""
    if held is not None:
        tail = (
            f"; chosen ranked above rejected on {held:.1%} of {version.metrics['test_pairs']} held-out pairs"
        )
    console.print(f"[green]✓[/] Registered reward model [bold]{version.ref}[/] ({version.id}){tail}")
