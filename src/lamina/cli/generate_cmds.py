"""``lamina generate text``: sample from a registered LM."""

from __future__ import annotations

import typer

from lamina.cli.render import console
from lamina.cli.state import get_state

app = typer.Typer(help="Generate with registered models.", no_args_is_help=True)


def text(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="NAME, NAME@vN or NAME@ALIAS (e.g. shakes@champion)."),
    prompt: str = typer.Argument("", help="Text to continue."),
    max_tokens: int = typer.Option(200, "--max-tokens", help="Tokens to generate."),
    temperature: float = typer.Option(0.8, "--temperature", help="0 for greedy decoding."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    seed: int | None = typer.Option(None, "--seed", help="Seed, for reproducible samples."),
) -> None:
    """Continue PROMPT with a registered language model."""
    from lamina.evaluation.lm import generate
    from lamina.hub.registry import model_path
    from lamina.training.sft import load_any

    with get_state(ctx).open_workspace() as ws:
        model, tokenizer = load_any(model_path(ws, model_ref))  # a full model or a LoRA adapter
    output = generate(
        model, tokenizer, prompt, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    console.file.write(prompt + output + "\n")


app.command("text")(text)
