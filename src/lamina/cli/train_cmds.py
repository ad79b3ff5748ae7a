"""``lamina train lm``: train, evaluate and register a causal LM."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from lamina.cli.render import console, step_progress
from lamina.cli.state import get_state
from lamina.core.errors import ConfigError
from lamina.models.causal_lm import Preset
from lamina.models.tokenizer import TokenizerKind

app = typer.Typer(help="Train models from dataset versions and register them.", no_args_is_help=True)


# recipe keys whose command-line parameter has another name
_FLAG_PARAM = {
    "overrides.dropout": "dropout", "overrides.context_length": "context", "train.warmup_steps": "warmup",
    "train.early_stopping_patience": "patience", "train.compile": "compile_model",
    "train.max_seconds": "max_minutes",
}  # fmt: skip
MAX_MINUTES_HELP = (
    "Wall-clock budget: evaluate, save and stop at the first step past it, even before --max-steps "
    "(the learning-rate schedule still spans --max-steps, so give a step count that roughly fits)."
)


def _given(ctx: typer.Context, key: str) -> bool:
    """Whether the user passed the parameter behind recipe key ``key`` (a flag or an environment
    variable), not its default."""
    source = ctx.get_parameter_source(_FLAG_PARAM.get(key, key.rpartition(".")[2]))
    # by name: typer 0.29 carries its own copy of click, whose ParameterSource is another enum
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _reused(reused: bool, version: object) -> bool:
    """Say so when a run gave back an earlier version (same data and settings); True if it did."""
    if reused:
        ref, vid = getattr(version, "ref", "?"), getattr(version, "id", "?")
        console.print(f"[green]✓[/] Same data and settings as {ref} ({vid}): reusing it")
    return reused


def lm(
    ctx: typer.Context,
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Dataset version to train on (NAME@vN, id)."
    ),
    name: str | None = typer.Option(None, "--name", "-n", help="Model name: the run registers NAME@vN."),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Train recipe NAME from 'models:' in lamina.yaml."
    ),
    preset: Preset = typer.Option("tiny", "--preset", help="Model size: tiny, small or base (see docs)."),
    max_steps: int = typer.Option(1000, "--max-steps", min=1, help="Optimizer steps."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", min=0.01, help=MAX_MINUTES_HELP),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per step (per process)."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Micro-batches per optimizer step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (after warmup)."),
    warmup: int = typer.Option(50, "--warmup", min=0, help="Linear warmup steps."),
    weight_decay: float = typer.Option(0.1, "--weight-decay", min=0.0, help="AdamW weight decay."),
    dropout: float = typer.Option(0.0, "--dropout", min=0.0, max=0.99, help="Dropout probability."),
    context: int | None = typer.Option(
        None, "--context", min=4, help="Context length (default: the preset's)."
    ),
    eval_every: int = typer.Option(200, "--eval-every", min=1, help="Validate every N steps."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1, help="Checkpoint every N steps."),
    patience: int | None = typer.Option(
        None, "--patience", min=1, help="Stop after N evaluations without gain."
    ),
    tokenizer: TokenizerKind = typer.Option("char", "--tokenizer", help="char, or bpe (byte-level BPE)."),
    vocab_size: int = typer.Option(2000, "--vocab-size", min=260, help="BPE vocabulary size."),
    text_field: str = typer.Option("text", "--text-field", help="The dataset field holding the text."),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bf16 autocast where the CPU/GPU supports it."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, sampling and batches."),
    alias: str | None = typer.Option(
        None, "--alias", help="Point this alias (e.g. champion) at the new version."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same settings."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log the run to MLflow."),
    ray_workers: int = typer.Option(
        0, "--ray-workers", min=0, help="Train on N Ray Train workers (data-parallel; 0: this process)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join (default RAY_ADDRESS, else a local Ray)."
    ),
) -> None:
    """Train a decoder-only transformer LM on a dataset version, evaluate it, and register it.

    Example: lamina train lm --dataset shakespeare --max-steps 2000 --name shakes --alias champion

    With --ray-workers N the same loop runs on N Ray Train workers (--batch-size is per worker); each
    reports at every evaluation, and --resume continues a run whose workers died (docs/scale.md).
    """
    from lamina.training.lm import LMRecipe, parse_lm_recipe, train_lm

    values = {
        "dataset": dataset, "preset": preset, "tokenizer": tokenizer, "vocab_size": vocab_size,
        "text_field": text_field, "alias": alias, "overrides.dropout": dropout,
        "overrides.context_length": context,
        "train.max_steps": max_steps, "train.batch_size": batch_size, "train.grad_accum": grad_accum,
        "train.lr": lr, "train.warmup_steps": warmup, "train.weight_decay": weight_decay,
        "train.eval_every": eval_every, "train.checkpoint_every": checkpoint_every,
        "train.early_stopping_patience": patience, "train.bf16": bf16, "train.compile": compile_model,
        "train.seed": seed, "train.max_seconds": max_minutes * 60 if max_minutes else None,
    }  # fmt: skip
    state = get_state(ctx)
    if recipe is not None:
        with state.open_workspace() as ws:
            recipes = ws.settings.models
        if recipe not in recipes:
            raise ConfigError(
                f"no recipe named {recipe!r} under 'models:' in lamina.yaml "
                f"(recipes: {', '.join(sorted(recipes)) or 'none yet'})"
            )
        given = {key: value for key, value in values.items() if _given(ctx, key)}
        spec = parse_lm_recipe(recipe, recipes[recipe]).with_flags(recipe, given)
        name = name or recipe
    else:  # the flags alone, over the defaults
        spec = LMRecipe(dataset=dataset or "").with_flags(
            "", {k: v for k, v in values.items() if k != "dataset"}
        )
    dataset = spec.dataset or None
    preset, tokenizer, vocab_size, text_field = spec.preset, spec.tokenizer, spec.vocab_size, spec.text_field
    alias = spec.alias
    cfg, overrides = spec.train, spec.overrides
    if dataset is None or name is None:
        raise ConfigError("give --dataset and --name, or --recipe NAME from lamina.yaml")
    common: dict[str, Any] = dict(
        preset=preset, train_cfg=cfg, overrides=overrides, tokenizer_kind=tokenizer, vocab_size=vocab_size,
        text_field=text_field, alias=alias, resume=resume, track=not no_track,
    )  # fmt: skip
    if ray_workers:
        from lamina.training.ray_train import train_lm_on_ray

        with state.open_workspace() as ws:
            console.print(
                f"Training {name} on {ray_workers} Ray workers (progress: Ray's log, and the console)"
            )
            result = train_lm_on_ray(ws, dataset, name, workers=ray_workers, address=ray_address, **common)
    else:
        with (
            state.open_workspace() as ws,
            step_progress(f"training {name}", cfg.max_steps, "tok/s") as on_progress,
        ):
            result = train_lm(ws, dataset, name, on_progress=on_progress, **common)
    v, m = result.version, result.metrics
    if not _reused(result.reused, v):
        console.print(
            f"[green]✓[/] Registered [bold]{v.ref}[/] ({v.id}): val loss {m['val_loss']:.4f}, "
            f"perplexity {m['val_perplexity']:.2f}, {m['parameters']:,} parameters, "
            f"{m['tokens_per_s']:,.0f} tok/s"
        )
    if alias:
        console.print(f"  {name}@{alias} → {v.ref}")
    console.print(f"[bold]sample:[/] {escape(result.sample[:300])}")


app.command("lm")(lm)


class ImageFamily(StrEnum):
    vae = "vae"
    gan = "gan"
    diffusion = "diffusion"
    latent_diffusion = "latent-diffusion"


class ImageCondition(StrEnum):
    none = "none"
    class_ = "class"
    text = "text"


class GanLossKind(StrEnum):
    nonsaturating = "nonsaturating"
    hinge = "hinge"


def image(
    ctx: typer.Context,
    family: ImageFamily = typer.Option(
        ...,
        "--family",
        "-f",
        help="vae, gan, diffusion or latent-diffusion (an autoencoder, then a captioned U-Net in its "
        "latent grid).",
    ),  # fmt: skip
    dataset: str = typer.Option(..., "--dataset", "-d", help="Image dataset version (NAME, NAME@vN, id)."),
    name: str = typer.Option(..., "--name", "-n", help="Model name: the run registers NAME@vN."),
    condition: ImageCondition = typer.Option(
        ImageCondition.none,
        "--condition",
        help="none; class (labels, with guidance); text (the diffusion families).",
    ),
    max_steps: int = typer.Option(2000, "--max-steps", min=1, help="Optimizer steps."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", min=0.01, help=MAX_MINUTES_HELP),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per step (default 64)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default per family)."),
    image_size: int | None = typer.Option(
        None, "--image-size", min=4, help="Resize every image to N×N (needed for mixed sizes)."
    ),
    class_names: str | None = typer.Option(
        None, "--class-names", help="Preset (fashion-mnist, mnist, digits) or a comma list, for captions."
    ),
    image_field: str = typer.Option("image", "--image-field", help="Field with the image bytes."),
    label_field: str = typer.Option("label", "--label-field", help="Field with the class labels."),
    gan_loss: GanLossKind = typer.Option(
        GanLossKind.nonsaturating, "--gan-loss", help="nonsaturating, or hinge (+ spectral norm)."
    ),
    eval_every: int = typer.Option(200, "--eval-every", min=1, help="Validate every N steps."),
    checkpoint_every: int = typer.Option(
        500, "--checkpoint-every", min=1, help="Checkpoint (and save a sample grid) every N steps."
    ),
    eval_samples: int = typer.Option(
        500, "--eval-samples", min=10, help="Images generated for fid_clf / precision / recall."
    ),
    inception: Path | None = typer.Option(
        None, "--inception", help="Local TorchScript Inception checkpoint: also report Inception FID."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, noise and batches."),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the new version."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same settings."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log the run to MLflow."),
) -> None:
    """Train a VAE, GAN or diffusion model on an image dataset version, evaluate it, and register it.

    Sample grids are saved at every checkpoint; the version's fid_clf, precision and recall use a
    classifier trained on the same dataset (see docs/images.md).

    Example: lamina train image --family diffusion --dataset digits --condition class --name digit-diff
    """
    from lamina.training.image import image_train_config, parse_class_names, train_image

    cfg = image_train_config(
        family.value,  # type: ignore[arg-type]
        max_steps=max_steps,
        max_seconds=max_minutes * 60 if max_minutes else None,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        seed=seed,
    )
    names = parse_class_names(class_names)
    with (
        get_state(ctx).open_workspace() as ws,
        step_progress(f"training {name}", cfg.max_steps, "img/s") as on_progress,
    ):
        result = train_image(
            ws,
            dataset,
            name,
            family=family.value,  # type: ignore[arg-type]
            condition=condition.value,  # type: ignore[arg-type]
            train_cfg=cfg,
            image_size=image_size,
            class_names=names,
            image_field=image_field,
            label_field=label_field,
            gan_loss=gan_loss.value,
            eval_samples=eval_samples,
            inception=inception,
            alias=alias,
            resume=resume,
            track=not no_track,
            on_progress=on_progress,
        )
    v, m = result.version, result.metrics
    for warning in result.warnings:
        console.print(f"[yellow]![/] {escape(warning)}")
    if not _reused(result.reused, v):
        scores = ", ".join(f"{k} {m[k]:.3f}" for k in ("fid_clf", "precision", "recall") if k in m)
        console.print(
            f"[green]✓[/] Registered [bold]{v.ref}[/] ({v.id}): {scores or 'no fid_clf (no labels)'}; "
            f"{m['parameters']:,} parameters, {m['images_per_s']:,.0f} img/s"
        )
    if alias:
        console.print(f"  {name}@{alias} → {v.ref}")
    if result.grid:
        console.print(f"  samples: {result.grid}")


app.command("image")(image)


def finetune(
    ctx: typer.Context,
    model_ref: str = typer.Argument(..., help="The model to fine-tune (NAME@ALIAS, NAME@vN, id)."),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="SFT dataset version (instruction/response, messages…)."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Register the result as NAME@vN."),
    method: str = typer.Option(
        "lora", "--method", help="lora; qlora (LoRA on a 4-bit NF4 base, bitsandbytes); or full."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Optimizer steps (default 200)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Examples per step (default 8)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4 LoRA, 5e-5 full)."),
    rank: int | None = typer.Option(None, "--rank", min=1, help="LoRA rank (default 8)."),
    lora_alpha: int | None = typer.Option(
        None, "--lora-alpha", min=1, help="LoRA scaling numerator (default 16)."
    ),
    merge: bool = typer.Option(
        False, "--merge", help="Merge the LoRA adapter into the weights before saving."
    ),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the new version."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (default 0)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same settings."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log the run to MLflow."),
) -> None:
    """Fine-tune a registered causal LM on chat-formatted data (loss on the responses only).

    Example: lamina finetune shakes@champion --dataset instructions --method lora --name shakes-chat
    """
    from lamina.training.sft import LoraSettings, finetune_config
    from lamina.training.sft import finetune as run_finetune

    if method not in ("lora", "full", "qlora"):
        raise typer.BadParameter(f"--method must be lora, qlora or full, got {method!r}")
    cfg = finetune_config(
        method,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,  # type: ignore[arg-type]
    )
    with (
        get_state(ctx).open_workspace() as ws,
        step_progress(f"fine-tuning {name}", cfg.max_steps, "tok/s") as on_progress,
    ):
        version = run_finetune(
            ws, model_ref, dataset, name, method=method, train_cfg=cfg,  # type: ignore[arg-type]
            lora=LoraSettings(**{k: v for k, v in (("rank", rank), ("alpha", lora_alpha)) if v}),
            merge=merge, alias=alias, resume=resume,
            track=not no_track, on_progress=on_progress,
        )  # fmt: skip
    kind = "adapter" if version.meta.get("adapter") else "model"
    console.print(
        f"[green]✓[/] Registered {kind} [bold]{version.ref}[/] ({version.id}): "
        f"val loss {version.metrics['val_loss']:.4f} after {version.metrics['steps']} steps"
    )


def distill(
    ctx: typer.Context,
    teacher: str = typer.Argument(..., help="The teacher model (NAME@ALIAS, NAME@vN, id)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Text dataset version to distil on."),
    name: str = typer.Option(..., "--name", "-n", help="Register the student as NAME@vN."),
    preset: Preset = typer.Option("tiny", "--preset", help="Student size preset."),
    layers: int | None = typer.Option(None, "--layers", min=1, help="Override the student's layer count."),
    width: int | None = typer.Option(None, "--width", min=8, help="Override the student's hidden size."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Optimizer steps (default 1000)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Sequences per step (default 16)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 2e-3)."),
    temperature: float = typer.Option(2.0, "--temperature", help="Softening of both distributions."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the KL term (the rest is cross-entropy)."),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the student."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same settings."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log the run to MLflow."),
) -> None:
    """Train a smaller student from a teacher's logits (KL + cross-entropy)."""
    from lamina.training.distill import distill as run_distill
    from lamina.training.distill import distill_config

    cfg = distill_config(max_steps=max_steps, batch_size=batch_size, lr=lr)
    with (
        get_state(ctx).open_workspace() as ws,
        step_progress(f"distilling {name}", cfg.max_steps, "tok/s") as on_progress,
    ):
        version = run_distill(
            ws, teacher, dataset, name, preset=preset, overrides={"num_layers": layers, "hidden_size": width},
            train_cfg=cfg, temperature=temperature, alpha=alpha, alias=alias, resume=resume,
            track=not no_track, on_progress=on_progress,
        )  # fmt: skip
    m = version.metrics
    console.print(
        f"[green]✓[/] Registered student [bold]{version.ref}[/]: {m['parameters']:,} parameters "
        f"(teacher {m['teacher_parameters']:,}), perplexity {m['val_perplexity']:.2f} "
        f"(teacher {m['teacher_val_perplexity']:.2f})"
    )


def tune(
    ctx: typer.Context,
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Dataset version (text for lm, SFT rows for lora)."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Register the best trial's model as NAME@vN."),
    objective: str = typer.Option(
        "lm", "--objective", help="lm (pre-train a preset) or lora (fine-tune --base)."
    ),
    base: str | None = typer.Option(None, "--base", help="The model to fine-tune when --objective lora."),
    trials: int = typer.Option(10, "--trials", min=1, help="Trials this process runs (others may join)."),
    max_steps: int = typer.Option(300, "--max-steps", min=2, help="Steps per trial."),
    preset: Preset = typer.Option("tiny", "--preset", help="Model size for --objective lm."),
    study: str | None = typer.Option(
        None, "--study", help="Study name (default NAME-OBJECTIVE); reuse to resume."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
) -> None:
    """Search learning rate, batch size, warmup, weight decay (and LoRA rank) with Optuna.

    The study is stored in the catalog database, so more processes running the same command share it.
    """
    from lamina.training.tune import tune as run_tune

    if objective not in ("lm", "lora"):
        raise typer.BadParameter(f"--objective must be lm or lora, got {objective!r}")

    def on_trial(number: int, params: dict, value: float) -> None:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        console.print(f"  trial {number}: val loss {value:.4f}  ({shown})")

    with get_state(ctx).open_workspace() as ws:
        result = run_tune(
            ws,
            dataset,
            name,
            objective=objective,
            base_model=base,
            trials=trials,  # type: ignore[arg-type]
            max_steps=max_steps,
            preset=preset,
            study_name=study,
            seed=seed,
            on_trial=on_trial,
        )
    console.print(
        f"[green]✓[/] Study {result.study_name}: {result.trials} trials ({result.pruned} pruned); best val "
        f"loss {result.best_value:.4f} with {result.best_params}"
    )
    if result.version is None:
        console.print("  every trial of this process was pruned; the study's best came from another worker")
    else:
        console.print(f"  registered [bold]{result.version.ref}[/]; history plot: {escape(str(result.plot))}")
