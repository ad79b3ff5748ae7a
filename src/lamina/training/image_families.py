"""Image model families as objects: what differs between a VAE, a GAN and a diffusion model.

Each family says how to build its model, which random draws a batch needs, how to compute the
loss, what samples it, and how it is saved. ``train image``, the loop, evaluation and the
registry are shared. Families are registered in ``lamina.core.extensions.IMAGE_FAMILIES``, so a
new one is one class here or in a plugin, not a branch in every function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from lamina.core.extensions import IMAGE_FAMILIES
from lamina.core.machine import defaults
from lamina.models import diffusion, latent_diffusion
from lamina.models.image_generator import ImageModelInfo


class ImageFamily(ABC):
    """The family interface (build, batch, loss, sample, save), with what VAEs and GANs share."""

    name: ClassVar[str]
    conditions: ClassVar[tuple[str, ...]] = ("none", "class")
    eval_sampler: ClassVar[str] = "direct"

    def optimizer_defaults(self) -> dict[str, Any]:
        """Settings that work for the family (flags override them). bf16 is off: convolutions in bf16
        were slower than fp32 even with native bf16 (docs/benchmarks.md, "Image training")."""
        return {
            "weight_decay": 0.0, "bf16": False, "eval_batches": 5,
            "batch_size": defaults().image_batch_size,
        }  # fmt: skip

    @abstractmethod
    def build(self, data: Any, condition: str, gan_loss: str) -> Any:
        """The model, untrained."""

    def plan(self, model: Any, max_steps: int) -> None:
        """Fit the model to the run's length (latent diffusion splits it into its two stages)."""
        return None

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        """Text conditions for captions: one sentence vector each (the packaged MiniLM)."""
        from lamina.models.text_encoder import embed

        return embed(captions)

    def latent_dim(self, model: Any) -> int:
        return 0

    def draw(
        self, out: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator, task: Any
    ) -> None:
        """Add the family's random draws to a batch (all from the loop's generator: resume is exact)."""
        out["noise"] = torch.randn(batch_size, task.latent_dim, generator=generator)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model(batch["images"], batch.get("labels"), batch["noise"])  # type: ignore[no-any-return]

    def ema(self, model: Any) -> Any:
        """An EMA of the weights that sampling uses, or None."""
        return None

    def ema_step(self, ema: Any, model: Any) -> None:
        ema.step(model.unet.parameters())

    @abstractmethod
    def modules(self, model: Any) -> dict[str, Any]:
        """What ``ImageGenerator`` samples from."""

    @abstractmethod
    def save(self, model: Any, info: ImageModelInfo, folder: Path) -> None:
        """Write the model into ``folder`` in the family's layout."""


@IMAGE_FAMILIES.register("vae")
class VAEFamily(ImageFamily):
    """Variational autoencoder: reconstruction + KL; samples decode prior draws."""

    name = "vae"

    def optimizer_defaults(self) -> dict[str, Any]:
        return {**super().optimizer_defaults(), "lr": 1e-3, "warmup_steps": 50, "grad_clip": 0.0}

    def build(self, data: Any, condition: str, gan_loss: str) -> Any:
        from lamina.models.vae import VAE

        classes = data.num_classes if condition == "class" else None
        return VAE(image_size=data.image_size, channels=data.channels, num_classes=classes)

    def latent_dim(self, model: Any) -> int:
        return int(model.config.latent_dim)

    def modules(self, model: Any) -> dict[str, Any]:
        return {"vae": model}

    def save(self, model: Any, info: ImageModelInfo, folder: Path) -> None:
        model.save_pretrained(folder / "vae")


@IMAGE_FAMILIES.register("gan")
class GANFamily(ImageFamily):
    """DCGAN-style generator and discriminator; Adam(2e-4, β1 = 0.5) at a constant rate, as DCGAN."""

    name = "gan"

    def optimizer_defaults(self) -> dict[str, Any]:
        return {
            **super().optimizer_defaults(), "lr": 2e-4, "betas": (0.5, 0.999), "warmup_steps": 0,
            "min_lr_ratio": 1.0, "grad_clip": 0.0,
        }  # fmt: skip

    def build(self, data: Any, condition: str, gan_loss: str) -> Any:
        from lamina.models.gan import GAN, Discriminator, Generator

        classes = data.num_classes if condition == "class" else None
        size, ch = data.image_size, data.channels
        return GAN(
            Generator(image_size=size, channels=ch, num_classes=classes),
            Discriminator(image_size=size, channels=ch, num_classes=classes, spectral=gan_loss == "hinge"),
            loss=gan_loss,  # type: ignore[arg-type]
        )

    def latent_dim(self, model: Any) -> int:
        return int(model.generator.config.latent_dim)

    def modules(self, model: Any) -> dict[str, Any]:
        return {"generator": model.generator}

    def save(self, model: Any, info: ImageModelInfo, folder: Path) -> None:
        model.generator.save_pretrained(folder / "generator")
        model.discriminator.save_pretrained(folder / "discriminator")


@IMAGE_FAMILIES.register("diffusion")
class DiffusionFamily(ImageFamily):
    """A U-Net denoiser (diffusers) with classifier-free guidance; saved as a diffusers pipeline."""

    name = "diffusion"
    conditions = ("none", "class", "text")
    eval_sampler = "dpm"

    def optimizer_defaults(self) -> dict[str, Any]:
        return {**super().optimizer_defaults(), "lr": 1e-3, "warmup_steps": 100, "grad_clip": 1.0}

    def build(self, data: Any, condition: str, gan_loss: str) -> Any:
        classes = data.num_classes or None
        unet = diffusion.build_unet(data.image_size, data.channels, condition, classes)  # type: ignore[arg-type]
        return diffusion.Diffusion(unet, diffusion.training_scheduler())

    def draw(
        self, out: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator, task: Any
    ) -> None:
        out["noise"] = torch.randn(out["images"].shape, generator=generator)
        out["timesteps"] = torch.randint(1000, (batch_size,), generator=generator)
        drop = torch.rand(batch_size, generator=generator) < diffusion.NULL_DROPOUT
        if task.condition == "class":
            out["cond"] = torch.where(drop, task.data.num_classes, out["labels"])
        elif task.condition == "text" and task.text_table is not None:
            template = torch.randint(task.text_table.shape[1], (batch_size,), generator=generator)
            vectors = task.text_table[out["labels"], template]
            out["cond"] = torch.where(drop[:, None], torch.zeros_like(vectors), vectors)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(batch["images"], batch["noise"], batch["timesteps"], batch.get("cond"))
        return out  # type: ignore[no-any-return]

    def ema(self, model: Any) -> Any:
        from diffusers.training_utils import EMAModel

        return EMAModel(model.unet.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)

    def modules(self, model: Any) -> dict[str, Any]:
        return {"unet": model.unet, "scheduler_config": model.scheduler.config}

    def save(self, model: Any, info: ImageModelInfo, folder: Path) -> None:
        from diffusers import DDPMPipeline

        DDPMPipeline(unet=model.unet, scheduler=model.scheduler).save_pretrained(folder)


@IMAGE_FAMILIES.register("latent-diffusion")
class LatentDiffusionFamily(DiffusionFamily):
    """An autoencoder to a latent grid, then a caption-conditioned U-Net in it (Stable Diffusion's
    design, ``lamina.models.latent_diffusion``); saved as a ``StableDiffusionPipeline``. ``class``
    conditioning asks for each class by its caption."""

    name = "latent-diffusion"
    conditions = ("class", "text")

    def build(self, data: Any, condition: str, gan_loss: str) -> Any:
        side = latent_diffusion.padded_size(data.image_size)
        return latent_diffusion.LatentDiffusion(
            latent_diffusion.build_autoencoder(side, data.channels),
            latent_diffusion.build_latent_unet(side),
            latent_diffusion.training_schedule(),
            data.image_size,
        )

    def plan(self, model: Any, max_steps: int) -> None:
        model.vae_steps = max(1, int(latent_diffusion.VAE_SHARE * max_steps))

    def encode_captions(self, captions: list[str]) -> torch.Tensor:
        return latent_diffusion.encode_prompts(captions)

    def draw(
        self, out: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator, task: Any
    ) -> None:
        side = latent_diffusion.padded_size(task.data.image_size) // latent_diffusion.DOWNSAMPLE
        shape = (batch_size, latent_diffusion.LATENT_CHANNELS, side, side)
        out["noise"] = torch.randn(shape, generator=generator)
        out["vae_noise"] = torch.randn(shape, generator=generator)
        out["timesteps"] = torch.randint(1000, (batch_size,), generator=generator)
        template = torch.randint(task.text_table.shape[1], (batch_size,), generator=generator)
        if task.condition == "class":  # asked for by the first template's caption: learn that one
            template.zero_()  # (one seed, Fashion-MNIST, 949 U-Net steps: fid_clf 13.3 vs 15.2 on all four)
        cond = task.text_table[out["labels"], template]
        out["cond"] = latent_diffusion.null_dropout(cond, self.null_condition(), generator)

    def null_condition(self) -> torch.Tensor:
        if not hasattr(self, "_null"):
            self._null = latent_diffusion.encode_prompts([""])
        return self._null

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(batch["images"], batch["noise"], batch["timesteps"], batch["cond"], batch["vae_noise"])
        return out  # type: ignore[no-any-return]

    def ema_step(self, ema: Any, model: Any) -> None:
        if not model.in_vae_stage:  # the U-Net only moves in the second stage
            ema.step(model.unet.parameters())

    def modules(self, model: Any) -> dict[str, Any]:
        tokenizer, encoder = latent_diffusion.text_model()
        return {
            "unet": model.unet, "vae": model.vae, "latent_scale": model.scaling_factor(),
            "scheduler_config": model.scheduler.config, "tokenizer": tokenizer, "text_encoder": encoder,
        }  # fmt: skip

    def save(self, model: Any, info: ImageModelInfo, folder: Path) -> None:
        latent_diffusion.save_pipeline(model, folder)


def family(name: str) -> ImageFamily:
    """The registered family ``name`` (an unknown name is a ConfigError listing the known ones)."""
    return IMAGE_FAMILIES.get(name)()  # type: ignore[no-any-return]


def family_names() -> list[str]:
    return IMAGE_FAMILIES.names()
