"""``lamina latent interpolate``: walk between random latents of a registered image model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from lamina.cli.render import console
from lamina.cli.state import get_state

app = typer.Typer(help="Explore the latent space of image models.", no_args_is_help=True)


class Method(StrEnum):
    slerp = "slerp"
    linear = "linear"


def interpolate(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="A VAE, GAN or diffusion model (NAME@ALIAS, NAME@vN, id)."),
    steps: int = typer.Option(8, "--steps", help="Images per walk, both ends included (≥ 2)."),
    rows: int = typer.Option(4, "--rows", min=1, help="Walks, one per grid row."),
    method: Method = typer.Option(Method.slerp, "--method", help="slerp (keeps Gaussian norms) or linear."),
    class_id: int | None = typer.Option(None, "--class", help="Hold the class fixed (conditional models)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Hold the caption fixed (text diffusion)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the end points."),
    out: Path = typer.Option(Path("interpolation.png"), "--out", help="The PNG grid to write."),
) -> None:
    """Decode evenly spaced points between random latents into a grid, one walk per row.

    VAE: the prior's z; GAN: the generator's noise; diffusion: the starting noise, decoded with
    deterministic DDIM. Example: lamina latent interpolate digits-vae@champion --steps 8 --out grid.png
    """
    from lamina.hub.registry import model_path
    from lamina.models.grid import save_grid
    from lamina.models.image_generator import ImageGenerator, ImageModelInfo

    with get_state(ctx).open_workspace() as ws:
        folder = model_path(ws, model_ref)
    ImageModelInfo.load(folder).check_walk(  # before the weights load, as generate image does
        rows, steps, prompt=prompt, class_id=class_id, sample_steps=25, guidance=1.0
    )
    gen = ImageGenerator.load(folder)
    images = gen.interpolate(rows, steps, method=method.value, seed=seed, class_id=class_id, prompt=prompt)  # type: ignore[arg-type]
    save_grid(images, out, nrow=steps)
    console.print(f"[green]✓[/] {rows} walks of {steps} images ({method.value}) in {out}")


app.command("interpolate")(interpolate)
