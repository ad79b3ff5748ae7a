"""Load a saved image model of any family (VAE, GAN, diffusion) and generate with it.

One front door for ``lamina generate image``, ``lamina latent interpolate`` and the serving API, so
every caller checks requests the same way: a prompt for a class-conditional model, a class out of
range or a non-positive step count is a ``ConfigError`` (exit 2, HTTP 400) that says what to do.

A saved folder holds ``lamina_image.json`` (family, conditioning, class names, caption template,
image size) next to the weights: ``vae/``; ``generator/`` + ``discriminator/``; or a diffusers
pipeline (``model_index.json``, ``unet/``, ``scheduler/``; latent diffusion adds ``vae/``,
``text_encoder/`` and ``tokenizer/``: a ``StableDiffusionPipeline``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lamina.core.errors import ConfigError, LaminaError
from lamina.models import diffusion
from lamina.models.latent import Method, interpolate

Family = Literal["vae", "gan", "diffusion", "latent-diffusion"]
DIFFUSION_FAMILIES = ("diffusion", "latent-diffusion")
INFO_FILE = "lamina_image.json"
MAX_IMAGES = 256


@dataclass
class ImageModelInfo:
    family: Family
    condition: diffusion.Condition
    image_size: int
    channels: int
    class_names: list[str] = field(default_factory=list)
    caption_template: str = "a photo of a {name}"

    def save(self, folder: Path) -> None:
        (folder / INFO_FILE).write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, folder: Path) -> ImageModelInfo:
        path = folder / INFO_FILE
        if not path.exists():
            raise LaminaError(
                f"{folder} is not an image model (no {INFO_FILE})", hint="pick an image model version"
            )
        return cls(**json.loads(path.read_text()))

    def caption(self, label: int) -> str:
        return self.caption_template.format(name=self.class_names[label])

    @property
    def is_diffusion(self) -> bool:
        return self.family in DIFFUSION_FAMILIES

    @property
    def is_latent(self) -> bool:
        return self.family == "latent-diffusion"

    # -- request checks (read this file only: callers check before loading any weights) --------
    def check(self, *, n: int, prompt: str | None, class_id: int | None, steps: int, guidance: float) -> None:
        """Refuse a request this model cannot answer. It reads only this file, so a caller checks before
        loading the weights (importing diffusers alone takes seconds): bad input fails fast."""
        info = self
        if not 1 <= n <= MAX_IMAGES:
            raise ConfigError(f"n must be between 1 and {MAX_IMAGES}, got {n}")
        if steps <= 0:
            raise ConfigError(f"steps must be positive, got {steps}", hint="try --steps 50")
        if guidance < 0:
            raise ConfigError(
                f"guidance must be ≥ 0, got {guidance}", hint="1 means no guidance; 3 is typical"
            )
        if prompt is not None and info.condition != "text":
            kind = "class-conditional" if info.condition == "class" else "unconditional"
            hint = (
                f"pass --class K instead (K in 0..{len(info.class_names) - 1}: {self.classes_text()})"
                if info.condition == "class"
                else "drop the prompt"
            )
            raise ConfigError(
                f"this {info.family} model is {kind}: it does not take a text prompt", hint=hint
            )
        if class_id is not None:
            if info.condition != "class":
                raise ConfigError(
                    f"this {info.family} model is not class-conditional (condition: {info.condition})",
                    hint="give a text prompt instead" if info.condition == "text" else "drop --class",
                )
            if not 0 <= class_id < len(info.class_names):
                raise ConfigError(
                    f"class {class_id} is out of range: the model has classes 0..{len(info.class_names) - 1}",
                    hint=self.classes_text(),
                )

    def check_walk(
        self,
        rows: int,
        steps: int,
        *,
        prompt: str | None,
        class_id: int | None,
        sample_steps: int,
        guidance: float,
    ) -> None:
        """``check`` for an interpolation: ``rows`` walks of ``steps`` images."""
        self.check(n=rows * steps, prompt=prompt, class_id=class_id, steps=sample_steps, guidance=guidance)
        if steps < 2:
            raise ConfigError(f"--steps must be at least 2 for an interpolation, got {steps}")

    def classes_text(self) -> str:
        return ", ".join(f"{i}={n}" for i, n in enumerate(self.class_names))


class ImageGenerator:
    def __init__(self, info: ImageModelInfo, modules: dict[str, Any]) -> None:
        self.info, self.modules = info, modules

    @classmethod
    def load(cls, folder: Path) -> ImageGenerator:
        info = ImageModelInfo.load(folder)
        modules: dict[str, Any] = {}
        if info.family == "vae":
            from lamina.models.vae import VAE

            modules["vae"] = VAE.from_pretrained(folder / "vae").eval()
        elif info.family == "gan":
            from lamina.models.gan import Generator

            modules["generator"] = Generator.from_pretrained(folder / "generator").eval()
        elif info.is_latent:
            from lamina.models import latent_diffusion

            modules = latent_diffusion.load_modules(folder)
        else:
            from diffusers import UNet2DConditionModel, UNet2DModel

            unet_cls = UNet2DConditionModel if info.condition == "text" else UNet2DModel
            modules["unet"] = unet_cls.from_pretrained(folder / "unet").eval()
            modules["scheduler_config"] = json.loads(
                (folder / "scheduler" / "scheduler_config.json").read_text()
            )
        return cls(info, modules)

    def check(self, *, n: int, prompt: str | None, class_id: int | None, steps: int, guidance: float) -> None:
        self.info.check(n=n, prompt=prompt, class_id=class_id, steps=steps, guidance=guidance)

    # -- generation -----------------------------------------------------------------------------
    def generate(
        self,
        n: int = 8,
        *,
        seed: int | None = None,
        prompt: str | None = None,
        class_id: int | None = None,
        steps: int = 25,
        sampler: diffusion.SamplerKind = "dpm",
        guidance: float = diffusion.DEFAULT_GUIDANCE,
        on_step: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """``n`` images in [-1, 1], shape (n, C, H, W), for a checked request."""
        self.check(n=n, prompt=prompt, class_id=class_id, steps=steps, guidance=guidance)
        generator = _generator(seed)
        labels = self._labels(n, class_id, generator)
        cond, null = self._diffusion_condition(n, prompt, class_id)
        return self.sample(
            n, generator, labels=labels, cond=cond, null=null, steps=steps, sampler=sampler,
            guidance=guidance, on_step=on_step,
        )  # fmt: skip

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        *,
        labels: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        null: torch.Tensor | None = None,
        steps: int = 50,
        sampler: diffusion.SamplerKind = "ddim",
        guidance: float = 1.0,
        on_step: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Sample with prepared conditions: ``labels`` for VAE/GAN, ``cond``/``null`` for diffusion."""
        if self.info.family == "vae":
            return self.modules["vae"].sample(n, generator, labels)
        if self.info.family == "gan":
            return self.modules["generator"].sample(n, generator, labels)
        x = diffusion.sample(
            self.modules["unet"],
            diffusion.sampler(sampler, self.modules["scheduler_config"]),
            n,
            steps=steps,
            generator=generator,
            cond=cond,
            null=null,
            guidance=guidance,
            on_step=on_step,
            clamp=not self.info.is_latent,
        )
        return self._decoded(x)

    def _decoded(self, x: torch.Tensor) -> torch.Tensor:
        """Latent diffusion samples latents: the autoencoder turns them into images."""
        if not self.info.is_latent:
            return x
        from lamina.models.latent_diffusion import decode

        return decode(self.modules["vae"], x, self.modules["latent_scale"], self.info.image_size)

    def captions_condition(self, texts: list[str]) -> torch.Tensor:
        """Conditions for captions: token states (latent diffusion) or sentence vectors (diffusion)."""
        if self.info.is_latent:
            from lamina.models.latent_diffusion import encode_prompts

            return encode_prompts(texts, self.modules["tokenizer"], self.modules["text_encoder"])
        from lamina.models.text_encoder import embed

        return embed(texts)

    def null_condition(self, n: int) -> torch.Tensor:
        """The empty condition classifier-free guidance steers away from."""
        if self.info.is_latent:
            return self.captions_condition([""]).expand(n, -1, -1)
        from lamina.models.text_encoder import DIMENSION

        return torch.zeros(n, DIMENSION)

    def balanced(self, n: int, offset: int = 0) -> dict[str, torch.Tensor | None]:
        """Conditions cycling through every class (``sample(**balanced(n))``), so metrics see all of them."""
        if self.info.condition == "none" or not self.info.class_names:
            return {}
        classes = (torch.arange(n) + offset) % len(self.info.class_names)
        if not self.info.is_diffusion:
            return {"labels": classes}
        if self.info.condition == "class" and not self.info.is_latent:
            return {"cond": classes, "null": torch.full((n,), len(self.info.class_names), dtype=torch.long)}
        table = self.captions_condition([self.info.caption(k) for k in range(len(self.info.class_names))])
        return {"cond": table[classes], "null": self.null_condition(n)}

    def _labels(self, n: int, class_id: int | None, generator: torch.Generator) -> torch.Tensor | None:
        """VAE/GAN conditional models need a label per image: the one asked for, or random ones."""
        if self.info.condition != "class" or self.info.is_diffusion:
            return None
        if class_id is not None:
            return torch.full((n,), class_id, dtype=torch.long)
        return torch.randint(len(self.info.class_names), (n,), generator=generator)

    def _diffusion_condition(
        self, n: int, prompt: str | None, class_id: int | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.info.is_latent:  # a class is asked for by its caption
            text = prompt or (self.info.caption(class_id) if class_id is not None else "")
            null = self.null_condition(n)
            return (self.captions_condition([text]).expand(n, -1, -1) if text else null), null
        if self.info.condition == "class":
            null_id = len(self.info.class_names)
            label = null_id if class_id is None else class_id
            return torch.full((n,), label, dtype=torch.long), torch.full((n,), null_id, dtype=torch.long)
        if self.info.condition == "text":
            null = self.null_condition(n)
            return (self.captions_condition([prompt]).expand(n, -1) if prompt else null), null
        return None, None

    # -- latent space ---------------------------------------------------------------------------
    def interpolate(
        self,
        rows: int = 4,
        steps: int = 8,
        *,
        method: Method = "slerp",
        seed: int | None = None,
        class_id: int | None = None,
        prompt: str | None = None,
        sample_steps: int = 25,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """``rows`` walks of ``steps`` images each between two random latents (rows × steps images).

        VAE: the prior's z; GAN: the generator's noise; diffusion: the initial noise x_T decoded with
        deterministic DDIM (η = 0), so nearby noise gives nearby images.
        """
        self.info.check_walk(
            rows, steps, prompt=prompt, class_id=class_id, sample_steps=sample_steps, guidance=guidance
        )
        generator = _generator(seed)
        info = self.info
        unet = self.modules.get("unet")
        if info.family in ("vae", "gan"):
            net = self.modules["vae" if info.family == "vae" else "generator"]
            dim = net.config.latent_dim
        else:  # the starting noise x_T, in pixels or in the latent grid
            shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
            dim = shape[0] * shape[1] * shape[2]
        walks = [
            interpolate(
                torch.randn(dim, generator=generator), torch.randn(dim, generator=generator), steps, method
            )
            for _ in range(rows)
        ]
        latents = torch.cat(walks)
        labels = self._labels(rows, class_id, generator)
        labels = labels.repeat_interleave(steps) if labels is not None else None
        with torch.no_grad():
            if info.family == "vae":
                return self.modules["vae"].decode(latents, labels)
            if info.family == "gan":
                return self.modules["generator"](latents, labels)
        cond, null = self._diffusion_condition(len(latents), prompt, class_id)
        x = diffusion.sample(  # DDIM with η = 0 and no generator: deterministic given the noise
            unet,
            diffusion.sampler("ddim", self.modules["scheduler_config"]),
            len(latents),
            steps=sample_steps,
            noise=latents.view(-1, *shape),
            cond=cond,
            null=null,
            guidance=guidance,
            clamp=not info.is_latent,
        )
        return self._decoded(x)


def _generator(seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
