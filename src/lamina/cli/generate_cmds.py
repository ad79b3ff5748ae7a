"""``lamina generate text|image``: sample from registered models."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from lamina.cli.render import console
from lamina.cli.state import get_state
from lamina.models.guidance import DEFAULT_GUIDANCE

app = typer.Typer(help="Generate with registered models.", no_args_is_help=True)


def text(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="NAME, NAME@vN or NAME@ALIAS (e.g. shakes@champion)."),
    prompt: str = typer.Argument("", help="Text to continue."),
    max_tokens: int = typer.Option(200, "--max-tokens", help="Tokens to generate."),
    temperature: float = typer.Option(0.8, "--temperature", help="0 for greedy decoding."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    seed: int | None = typer.Option(None, "--seed", help="Seed, for reproducible samples."),
    input_path: Path | None = typer.Option(
        None, "--input", help='Batch mode: a JSONL file of {"prompt": ...} lines (per-line settings allowed).'
    ),
    output_path: Path | None = typer.Option(
        None, "--output", help="Batch mode: where to write the JSONL results."
    ),
) -> None:
    """Continue PROMPT with a registered language model, or a whole JSONL file of prompts.

    Batch mode runs every prompt through the serving engine with continuous batching:
      lamina generate text shakes@champion --input prompts.jsonl --output out.jsonl
    """
    from lamina.hub.registry import model_path
    from lamina.training.sft import load_any

    if (input_path is None) != (output_path is None):
        from lamina.core.errors import ConfigError

        raise ConfigError("batch mode needs both --input and --output")
    with get_state(ctx).open_workspace() as ws:
        model, tokenizer = load_any(model_path(ws, model_ref))  # a full model or a LoRA adapter
    if input_path is not None and output_path is not None:
        from lamina.serving.batch import run_batch

        defaults = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
        with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task("", total=None)
            done = run_batch(
                model, tokenizer, input_path, output_path, defaults,
                on_total=lambda n: bar.update(task, total=n), on_done=lambda: bar.advance(task),
            )  # fmt: skip
        console.print(f"[green]✓[/] {done['prompts']} prompts, {done['tokens']:,} tokens → {output_path}")
        return
    from lamina.evaluation.lm import generate

    output = generate(
        model, tokenizer, prompt, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    console.file.write(prompt + output + "\n")


app.command("text")(text)


class Sampler(StrEnum):
    ddpm = "ddpm"
    ddim = "ddim"
    dpm = "dpm"


def image(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="An image model: NAME, NAME@vN or NAME@ALIAS."),
    prompt: str | None = typer.Argument(None, help="Caption, for text-conditional diffusion models."),
    class_id: int | None = typer.Option(None, "--class", help="Class index, for class-conditional models."),
    n: int = typer.Option(8, "--n", help="Images to generate (1-256)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed, for reproducible images."),
    steps: int = typer.Option(25, "--steps", help="Denoising steps (diffusion; ddpm wants ~1000)."),
    sampler: Sampler = typer.Option(Sampler.dpm, "--sampler", help="dpm (DPM-Solver++), ddim or ddpm."),
    guidance: float = typer.Option(
        DEFAULT_GUIDANCE,
        "--guidance",
        help="Classifier-free guidance scale: 1 = none; higher = closer to the condition.",
    ),
    out: Path = typer.Option(Path("generated"), "--out", help="Folder for the PNG files and grid.png."),
) -> None:
    """Generate images with a registered VAE, GAN or diffusion model; writes PNGs and a grid.

    Examples:
      lamina generate image digits-diffusion@champion --class 3 --n 16 --out out/
      lamina generate image fashion-text "a sneaker" --steps 25 --sampler dpm
    """
    from lamina.hub.registry import model_path
    from lamina.models.grid import save_grid, save_png, to_uint8
    from lamina.models.image_generator import ImageGenerator, ImageModelInfo

    with get_state(ctx).open_workspace() as ws:
        folder = model_path(ws, model_ref)
    # refuse a bad request before the weights (and diffusers) load: that takes seconds, the check none
    ImageModelInfo.load(folder).check(n=n, prompt=prompt, class_id=class_id, steps=steps, guidance=guidance)
    gen = ImageGenerator.load(folder)
    total = steps if gen.info.is_diffusion else 1
    with Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("", total=total)
        images = gen.generate(
            n, seed=seed, prompt=prompt, class_id=class_id, steps=steps, sampler=sampler.value,
            guidance=guidance, on_step=lambda i: bar.update(task, completed=i + 1),
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(to_uint8(images)):
        save_png(pixels, out / f"image-{i:03d}.png")
    grid = save_grid(images, out / "grid.png")
    console.print(f"[green]✓[/] {n} images in {out}/ (grid: {grid})")


app.command("image")(image)
