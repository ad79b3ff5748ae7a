"""Train an image model (VAE, GAN, diffusion, latent diffusion) and register it: ``lamina train image``.

dataset version (PNG bytes + labels) → tensors in [-1, 1] → the family's model → the shared loop
(tracked in MLflow; sample grids at every checkpoint) → saved folder (diffusers format for
diffusion) → ``fid_clf``/precision/recall against the held-out split → a model version with lineage
and an eval report. Identical inputs give back the earlier version, like ``train lm``.
"""

from __future__ import annotations

import io
import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lamina.core.catalog import DatasetVersion, ModelVersion
from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace
from lamina.evaluation.images import feature_classifier, feature_metrics, frechet_distance
from lamina.models import diffusion
from lamina.models.grid import save_class_grid, save_grid
from lamina.models.image_generator import Family, ImageGenerator, ImageModelInfo
from lamina.training import image_families as families
from lamina.training import lifecycle
from lamina.training.lifecycle import TrainingRun
from lamina.training.loop import TrainConfig, train
from lamina.training.tracking import save_history

log = logging.getLogger(__name__)
CAPTION_TEMPLATES = ("a photo of a {name}", "a {name}", "an image of a {name}", "{name}")
CLASS_NAME_PRESETS = {
    "fashion-mnist": [
        "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
    ],
    "digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
}  # fmt: skip
CLASS_NAME_PRESETS["mnist"] = CLASS_NAME_PRESETS["digits"]
COLLAPSE_RATIO = 0.5


def family_defaults(name: str) -> dict[str, Any]:
    """Optimiser settings that work for the family (CLI flags override them)."""
    return families.family(name).optimizer_defaults()


# -- data -------------------------------------------------------------------------------------------
@dataclass
class ImageData:
    images: dict[str, torch.Tensor]  # split → (N, C, H, W) in [-1, 1]
    labels: dict[str, torch.Tensor | None]
    class_names: list[str]
    image_size: int
    channels: int
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_image_data(
    ws: Workspace,
    dataset: DatasetVersion,
    *,
    image_field: str = "image",
    label_field: str = "label",
    image_size: int | None = None,
    class_names: list[str] | None = None,
) -> ImageData:
    """Decode every split into one tensor; normalise colour modes, refuse (or resize) mixed sizes."""
    from PIL import Image

    from lamina.data.versions import iter_rows

    decoded: dict[str, list[Any]] = {}
    raw_labels: dict[str, list[Any]] = {}
    for split in dataset.splits:
        rows = iter_rows(ws, dataset, split, columns=[image_field, label_field])
        pics, labs = [], []
        for i, row in enumerate(rows):
            data = row.get(image_field)
            if not isinstance(data, bytes):
                raise ConfigError(
                    f"{dataset.ref} {split} row {i}: field {image_field!r} holds no image bytes",
                    hint="pass --image-field with the field that holds the images",
                )
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                pics.append(img.copy())
            labs.append(row.get(label_field))
        decoded[split], raw_labels[split] = pics, labs
    everything = [img for pics in decoded.values() for img in pics]
    if not everything:
        raise ConfigError(f"{dataset.ref} has no images")
    notes = []
    modes = Counter(img.mode for img in everything)
    mode = "L" if set(modes) <= {"L", "1", "P"} and "P" not in modes else "RGB"
    if len(modes) > 1:
        notes.append(f"colour modes {dict(modes)} converted to {mode}")
    sizes = Counter(img.size for img in everything)
    if image_size is None:
        if len(sizes) > 1:
            listed = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sizes.most_common(4))
            raise ConfigError(
                f"{dataset.ref} has images of different sizes: {listed}",
                hint="pass --image-size N to resize them all to N×N, or add an `image` step with resize",
            )
        (w, h), _ = sizes.most_common(1)[0]
        if w != h:
            raise ConfigError(
                f"{dataset.ref} has {w}x{h} images; the models need square ones", hint="pass --image-size N"
            )
        image_size = w
    if image_size % 4:
        raise ConfigError(
            f"image size {image_size} is not a multiple of 4 (the models halve it twice)",
            hint=f"pass --image-size {4 * math.ceil(image_size / 4)}",
        )
    if image_size > 128:
        raise ConfigError(f"image size {image_size} is larger than these CPU-sized models support (128)")
    images: dict[str, torch.Tensor] = {}
    for split, pics in decoded.items():
        arrays = []
        for img in pics:
            img = img.convert(mode)
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
            arrays.append(arr[..., None] if arr.ndim == 2 else arr)
        stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        images[split] = stacked / 127.5 - 1
    if sizes.keys() != {(image_size, image_size)}:
        notes.append(f"images resized to {image_size}x{image_size}")
    labels, names = _labels(raw_labels, class_names)
    return ImageData(images, labels, names, image_size, 1 if mode == "L" else 3, notes)


def _labels(
    raw: dict[str, list[Any]], class_names: list[str] | None
) -> tuple[dict[str, torch.Tensor | None], list[str]]:
    values = [v for labs in raw.values() for v in labs]
    if not values or any(v is None for v in values):
        return {split: None for split in raw}, []
    if all(isinstance(v, str) for v in values):
        names = sorted(set(values))
        index = {n: i for i, n in enumerate(names)}
        return {s: torch.tensor([index[v] for v in labs]) for s, labs in raw.items()}, names
    if not all(isinstance(v, int | np.integer) and v >= 0 for v in values):
        raise ConfigError("labels must be non-negative integers or strings", hint="pass --label-field")
    count = int(max(values)) + 1
    if class_names is not None and len(class_names) < count:
        raise ConfigError(f"--class-names lists {len(class_names)} names but the labels go up to {count - 1}")
    names = class_names[:count] if class_names else [str(k) for k in range(count)]
    return {s: torch.tensor([int(v) for v in labs]) for s, labs in raw.items()}, names


def parse_class_names(value: str | None) -> list[str] | None:
    """A preset (``fashion-mnist``, ``mnist``, ``digits``) or a comma-separated list."""
    if not value:
        return None
    if value in CLASS_NAME_PRESETS:
        return list(CLASS_NAME_PRESETS[value])
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError(
            f"--class-names {value!r}: give a preset ({', '.join(CLASS_NAME_PRESETS)}) or a comma list"
        )
    return names


# -- models and the loop task ---------------------------------------------------------------------
def build_image_model(name: str, data: ImageData, condition: diffusion.Condition, gan_loss: str) -> Any:
    return families.family(name).build(data, condition, gan_loss)


class ImageTask:
    """The loop's task for any family: batches (every random draw from the loop's generator, so resume
    is exact), the family's loss, EMA after each step, loss components for the curves."""

    def __init__(
        self, name: str, model: Any, data: ImageData, condition: diffusion.Condition, val_split: str
    ) -> None:
        self.family = families.family(name)
        self.data, self.condition, self.val_split = data, condition, val_split
        self.components: dict[str, list[float]] = {}
        self.ema = self.family.ema(model)
        self.text_table = None
        if condition == "text" or name == "latent-diffusion":  # the latter asks for classes by caption
            captions = [t.format(name=n) for n in data.class_names for t in CAPTION_TEMPLATES]
            table = self.family.encode_captions(captions)
            self.text_table = table.view(data.num_classes, len(CAPTION_TEMPLATES), *table.shape[1:])
        self.latent_dim = self.family.latent_dim(model)

    def batch(self, split: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        split = "train" if split == "train" else self.val_split
        images, labels = self.data.images[split], self.data.labels[split]
        idx = torch.randint(len(images), (batch_size,), generator=generator)
        out = {"images": images[idx]}
        if labels is not None and self.condition != "none":
            out["labels"] = labels[idx]
        self.family.draw(out, batch_size, generator, self)
        return out

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.family.loss(model, batch)
        if model.training:
            for key, value in out.items():
                if key != "loss":
                    self.components.setdefault(key, []).append(float(value.detach()))
        return out["loss"]

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["images"].shape[0])  # images, for the images/s figure

    def after_step(self, model: Any) -> None:
        if self.ema is not None:
            self.family.ema_step(self.ema, model)

    def checkpoint_objects(self) -> list[Any]:
        return [self.ema] if self.ema is not None else []

    def pop_components(self) -> dict[str, float]:
        """Mean of each loss component (reconstruction, KL, D and G losses) since the last call."""
        means = {k: float(np.mean(v)) for k, v in self.components.items() if v}
        self.components = {}
        return means


# -- saving and sampling ----------------------------------------------------------------------------
def save_image_model(name: str, model: Any, info: ImageModelInfo, folder: Path, ema: Any = None) -> None:
    """The family's folder layout (``vae/``, ``generator/`` + ``discriminator/``, a diffusers pipeline)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _ema_weights(model, ema):
        families.family(name).save(model, info, folder)
    info.save(folder)


class _ema_weights:
    """Swap the EMA weights into the U-Net for sampling or saving, then put the training weights back."""

    def __init__(self, model: Any, ema: Any) -> None:
        self.model, self.ema = model, ema

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.store(self.model.unet.parameters())
            self.ema.copy_to(self.model.unet.parameters())

    def __exit__(self, *exc: object) -> None:
        if self.ema is not None:
            self.ema.restore(self.model.unet.parameters())


def generator_for(name: str, model: Any, info: ImageModelInfo) -> ImageGenerator:
    """An ``ImageGenerator`` over the in-memory model (grids during training)."""
    return ImageGenerator(info, families.family(name).modules(model))


@torch.no_grad()
def draw_samples(
    gen: ImageGenerator,
    n: int,
    seed: int,
    *,
    steps: int = 50,
    sampler: diffusion.SamplerKind = "ddim",
    guidance: float = diffusion.DEFAULT_GUIDANCE,
    batch_size: int = 250,
) -> torch.Tensor:
    """``n`` samples in batches; conditional models cycle through the classes (metrics see them all)."""
    generator = torch.Generator().manual_seed(seed)
    chunks = [
        gen.sample(
            min(batch_size, n - start),
            generator,
            **gen.balanced(min(batch_size, n - start), start),
            steps=steps,
            sampler=sampler,
            guidance=guidance,
        )  # fmt: skip
        for start in range(0, n, batch_size)
    ]
    return torch.cat(chunks)


# -- the trainer -------------------------------------------------------------------------------------
@dataclass
class ImageTrainResult:
    version: ModelVersion
    reused: bool
    metrics: dict[str, Any]
    grid: Path | None
    warnings: list[str]
    run_id: str | None


def image_train_config(family: Family, **overrides: Any) -> TrainConfig:
    """The family's defaults with every override that is not None applied."""
    return TrainConfig(**{**family_defaults(family), **{k: v for k, v in overrides.items() if v is not None}})


def collapse_ratio(gen: ImageGenerator, real: torch.Tensor, seed: int, n: int = 256) -> float:
    """Sample diversity relative to the real data's (≈1 healthy; near 0 when the generator collapses)."""
    from lamina.models.gan import diversity

    fake = gen.sample(n, torch.Generator().manual_seed(seed), **gen.balanced(n))
    return diversity(fake) / max(diversity(real[:n]), 1e-8)


def train_image(
    ws: Workspace,
    dataset_ref: str,
    name: str,
    *,
    family: Family,
    condition: diffusion.Condition = "none",
    train_cfg: TrainConfig | None = None,
    image_size: int | None = None,
    class_names: list[str] | None = None,
    image_field: str = "image",
    label_field: str = "label",
    gan_loss: str = "nonsaturating",
    eval_samples: int = 500,
    eval_steps: int = 25,
    inception: Path | None = None,
    alias: str | None = None,
    resume: bool = False,
    track: bool = True,
    on_progress: Callable[[dict[str, float]], None] | None = None,
) -> ImageTrainResult:
    from lamina.core.refs import validate_name

    validate_name(name, "model name")
    kind = families.family(family)  # an unknown family is a ConfigError naming the registered ones
    if condition not in kind.conditions:
        raise ConfigError(
            f"{condition} conditioning is not available for {family} models",
            hint=f"use --condition {' or '.join(kind.conditions)}",
        )
    if gan_loss not in ("nonsaturating", "hinge"):
        raise ConfigError(f"unknown GAN loss {gan_loss!r}", hint="use nonsaturating or hinge")
    cfg = train_cfg or image_train_config(family)
    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    if not isinstance(dataset, DatasetVersion):
        raise NotFound(f"{dataset_ref} is not a dataset version")
    data = load_image_data(
        ws,
        dataset,
        image_field=image_field,
        label_field=label_field,
        image_size=image_size,
        class_names=class_names,
    )
    if condition != "none" and not data.class_names:
        raise ConfigError(
            f"--condition {condition} needs labels, and {dataset.ref} has none in field {label_field!r}",
            hint="pass --label-field, or train with --condition none",
        )
    val_split = next((s for s in ("val", "validation", "test") if s in data.images), None)
    if val_split is None:  # hold out the last 10 % of train
        cut = int(len(data.images["train"]) * 0.9)
        data.images["heldout"], data.images["train"] = data.images["train"][cut:], data.images["train"][:cut]
        labels = data.labels["train"]
        data.labels["heldout"], data.labels["train"] = (
            (labels[cut:], labels[:cut]) if labels is not None else (None, None)
        )
        val_split = "heldout"
    info = ImageModelInfo(
        family, condition, data.image_size, data.channels, data.class_names, CAPTION_TEMPLATES[0]
    )
    train_fingerprint = lifecycle.fingerprint(
        {
            "dataset": dataset.id, "family": family, "condition": condition, "train": cfg.model_dump(),
            "image_size": data.image_size, "classes": data.class_names, "gan_loss": gan_loss,
            "fields": [image_field, label_field],
        }
    )  # fmt: skip
    existing = None if resume else TrainingRun.reuse(ws, name, train_fingerprint, alias)
    if existing is not None:
        grid = ws.artifact_path(existing) / "samples.png"
        return ImageTrainResult(existing, True, existing.metrics, grid, [], existing.run_id)

    torch.manual_seed(cfg.seed)
    model = kind.build(data, condition, gan_loss)
    kind.plan(model, cfg.max_steps)
    task = ImageTask(family, model, data, condition, val_split)
    gen = generator_for(family, model, info)
    params = {
        "family": family, "condition": condition, "train": cfg.model_dump(), "dataset": dataset.ref,
        "image_size": data.image_size, "gan_loss": gan_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip
    warnings: list[str] = list(data.notes)
    real_val = data.images[val_split]
    with TrainingRun.start(
        ws, name, kind="train", task=f"train-{family}", params=params,
        parents=[(dataset.id, "trained_on")], fingerprint=train_fingerprint, resume=resume, track=track,
    ) as training:  # fmt: skip
        grids_dir = training.run_dir / "grids"

        def on_eval(step: int, point: dict[str, float]) -> None:
            point.update(task.pop_components())
            if family == "gan":
                model.eval()
                ratio = collapse_ratio(gen, real_val, cfg.seed + step)
                model.train()
                point["diversity_ratio"] = ratio
                if ratio < COLLAPSE_RATIO:
                    message = (
                        f"step {step}: sample diversity is {ratio:.2f}× the real data's: the generator may "
                        "be collapsing (try --gan-loss hinge or a lower --lr)"
                    )
                    log.warning(message)
                    warnings.append(message)
            training.log(step, point)

        def on_checkpoint(step: int, checkpoint: Path) -> None:
            model.eval()
            with _ema_weights(model, task.ema):
                images = gen.sample(36, torch.Generator().manual_seed(cfg.seed), **gen.balanced(36), steps=25)
            model.train()
            training.artifact(save_grid(images, grids_dir / f"step-{step}.png", nrow=6))

        result = train(
            model, task, cfg, training.run_dir, resume=resume, on_progress=on_progress, on_eval=on_eval,
            on_checkpoint=on_checkpoint,
        )  # fmt: skip
        if result.out_of_time:
            warnings.append(f"time budget: stopped at step {result.final_step} of {cfg.max_steps}")
            if getattr(model, "in_vae_stage", False):
                warnings.append(
                    "it stopped in the autoencoder stage, so the U-Net never trained: give more minutes, "
                    "or fewer --max-steps (the first 25 % of them train the autoencoder)"
                )
        model.eval()
        with training.scratch() as folder:
            save_image_model(family, model, info, folder, task.ema)
            if grids_dir.exists():
                shutil.copytree(grids_dir, folder / "samples")
            saved = ImageGenerator.load(folder)  # evaluate exactly what was saved (EMA weights for diffusion)
            fake = draw_samples(
                saved, min(eval_samples, len(real_val)), cfg.seed, steps=eval_steps, sampler="dpm"
            )
            if condition != "none" and data.class_names:  # one labelled row per class, as asked
                save_class_grid(fake, torch.arange(len(fake)) % data.num_classes, data.class_names,
                                folder / "samples.png")  # fmt: skip
            else:
                save_grid(fake[:64], folder / "samples.png", nrow=8)
            metrics: dict[str, Any] = {
                "train_loss": result.history[-1]["loss"],
                "best_val_loss": result.best_val_loss,
                "steps": result.final_step,
                "images_per_s": result.tokens_per_s,
                "train_seconds": result.seconds,
                "parameters": params["parameters"],
            }
            if data.class_names:
                clf, clf_version = feature_classifier(
                    ws,
                    dataset,
                    (data.images["train"], data.labels["train"]),
                    (real_val, data.labels[val_split]),  # type: ignore[arg-type]
                )
                asked = torch.arange(len(fake)) % data.num_classes if condition != "none" else None
                metrics.update(feature_metrics(clf, real_val[: len(fake)], fake, asked))
                metrics["fid_clf_classifier"] = clf_version.ref
                # the floor: two real sets of the same N score this much (train vs held out); a model
                # cannot be told from the data below it
                real_train = data.images["train"][: len(fake)]
                metrics["fid_clf_floor"] = frechet_distance(
                    clf.embed(real_val[: len(fake)]), clf.embed(real_train)
                )
            else:
                warnings.append(
                    "the dataset has no labels, so fid_clf (which needs a classifier) was skipped"
                )
            if inception is not None:
                from lamina.evaluation.images import inception_fid

                metrics["fid_inception"] = inception_fid(inception, real_val[: len(fake)], fake)
            metrics["eval_samples"] = len(fake)
            if info.is_diffusion and condition != "none":
                metrics["eval_guidance"] = diffusion.DEFAULT_GUIDANCE  # scored as users sample it
            metrics["eval_sampler"] = (
                f"{kind.eval_sampler}-{eval_steps}" if kind.eval_sampler != "direct" else "direct"
            )
            save_history(result.history, folder, f"{name}: {family}, {result.final_step} steps")
            version = training.finish(
                folder, family=family,
                config={"family": family, "condition": condition, "image": info.__dict__,
                        "train": cfg.model_dump(), "gan_loss": gan_loss if family == "gan" else None},
                metrics=metrics, parents=[(dataset.id, "trained_on")],
                meta={"dataset": dataset.ref, "warnings": warnings},
                description=_intended_use(family, condition),
                evaluation={k: v for k, v in metrics.items() if isinstance(v, float)},
                alias=alias, step=result.final_step,
            )  # fmt: skip
    return ImageTrainResult(
        version, False, metrics, ws.artifact_path(version) / "samples.png", warnings, training.run.id
    )


def _intended_use(family: Family, condition: str) -> str:
    how = {"none": "unconditionally", "class": "for a chosen class", "text": "from a short caption"}[
        condition
    ]
    return (
        f"Generates small images {how} ({family}); research and demonstration on the data it was trained on."
    )
