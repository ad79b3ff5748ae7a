"""``lamina quickstart``: render the quickstart's steps with a progress display."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from lamina.cli.render import console
from lamina.cli.state import get_state
from lamina.quickstart import (
    DEFAULT_DIR,
    DEFAULT_IMAGE_STEPS,
    DEFAULT_TRAIN_STEPS,
    QuickstartStep,
    StepResult,
    quickstart_steps,
    run_quickstart,
)


def quickstart(
    ctx: typer.Context,
    directory: Path = typer.Option(DEFAULT_DIR, "--dir", help="Where to make the demo workspace."),
    train_steps: int = typer.Option(
        DEFAULT_TRAIN_STEPS, "--train-steps", min=1, help="Optimizer steps for the demo language model."
    ),
    image_steps: int = typer.Option(
        DEFAULT_IMAGE_STEPS, "--image-steps", min=1, help="Optimizer steps for the demo diffusion model."
    ),
) -> None:
    """Build a demo workspace on embedded defaults and run the platform's main path in it.

    Idempotent: running it again reuses everything an earlier run made.
    """
    state = get_state(ctx)
    total = len(quickstart_steps())
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("Quickstart", total=total)

        def on_start(index: int, step: QuickstartStep) -> None:
            progress.update(task, description=f"{step.title}…")

        def on_done(index: int, step: QuickstartStep, result: StepResult) -> None:
            progress.console.print(f"[green]✓[/] {step.title}: {escape(result.detail)}", soft_wrap=True)
            progress.advance(task)

        report = run_quickstart(
            directory, state.flags, train_steps, image_steps, on_start=on_start, on_done=on_done
        )
        progress.update(task, description="Quickstart done")

    made = [a for _, r in report.results for a in r.artifacts if not r.reused]
    kept = [a for _, r in report.results for a in r.artifacts if r.reused]
    console.print(f"\n[bold]Demo workspace:[/] {escape(str(report.workspace))}")
    console.print(f"  {len(made)} new artifact(s), {len(kept)} reused from an earlier run")
    if report.sample:
        console.print("\n[bold]The champion model writes:[/]")
        console.print(escape(report.sample.strip()[:400]), soft_wrap=True)
    if report.image_grid:
        console.print(f"\n[bold]The digit diffusion model draws:[/] open {escape(str(report.image_grid))}")
    console.print("\n[bold]Next, try:[/]")
    program = invocation()
    for args in report.next_commands:
        console.print(f"  {escape(shlex.join([*program, *args]))}", soft_wrap=True)


def invocation() -> list[str]:
    """How to run this same ``lamina`` from the user's shell, so printed commands work as printed."""
    script = Path(sys.argv[0])
    if script.name == "lamina":
        on_path = shutil.which("lamina")
        if on_path and Path(on_path).resolve() == script.resolve():
            return ["lamina"]
        try:
            return [str(script.resolve().relative_to(Path.cwd()))]
        except ValueError:
            return [str(script.resolve())]
    return [sys.executable, "-m", "lamina"]
