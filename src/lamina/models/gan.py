"""DCGAN-style generative adversarial network (Radford et al. 2016), optionally label-conditional.

Generator: z (+ label embedding) → linear → two transposed-conv upsamplings → tanh, so samples are
in [-1, 1] like the data. Discriminator: two strided convs with LeakyReLU → a logit; a conditional
discriminator adds the projection term ⟨embed(y), features⟩ (Miyato & Koyama 2018).

Losses: the non-saturating minimax loss (``loss="nonsaturating"``), or the hinge loss with
spectral normalisation on the discriminator (``loss="hinge"``, as in SN-GAN).

Training fits the shared single-optimizer loop by *simultaneous* updates: one backward pass of
``d_loss + g_loss`` where the discriminator's loss sees detached fakes and the generator's loss
sees a copy of the discriminator with detached parameters (``torch.func.functional_call``), so each
network gets exactly its own gradient. This keeps checkpoints, resume and accumulation identical
to every other family.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

GanLoss = Literal["nonsaturating", "hinge"]


class Generator(ModelMixin, ConfigMixin):  # type: ignore[misc]
    @register_to_config
    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        latent_dim: int = 64,
        hidden: tuple[int, int] = (128, 64),
        num_classes: int | None = None,
        label_dim: int = 16,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two upsampling stages), got {image_size}")
        h0, h1 = hidden
        cond = label_dim if num_classes else 0
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None
        self.project = nn.Sequential(
            nn.Linear(latent_dim + cond, h0 * (image_size // 4) ** 2, bias=False),
            nn.Unflatten(1, (h0, image_size // 4, image_size // 4)),
            nn.BatchNorm2d(h0),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(h0, h1, 4, 2, 1, bias=False),
            nn.BatchNorm2d(h1),
            nn.ReLU(),
            nn.ConvTranspose2d(h1, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: give labels")
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return self.upsample(self.project(z))

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        return self(z.to(self.device), labels)


class Discriminator(ModelMixin, ConfigMixin):  # type: ignore[misc]
    @register_to_config
    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        hidden: tuple[int, int] = (64, 128),
        num_classes: int | None = None,
        spectral: bool = False,
    ) -> None:
        super().__init__()
        h1, h2 = hidden
        wrap = spectral_norm if spectral else (lambda m: m)
        features = h2 * (image_size // 4) ** 2
        self.body = nn.Sequential(
            wrap(nn.Conv2d(channels, h1, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            wrap(nn.Conv2d(h1, h2, 4, 2, 1)),
            nn.Identity() if spectral else nn.BatchNorm2d(h2),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = wrap(nn.Linear(features, 1))
        self.label_projection = wrap(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(images)
        logit = self.head(h).squeeze(1)
        if self.label_projection is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: give labels")
            logit = logit + (self.label_projection(labels) * h).sum(dim=1)
        return logit


class GAN(nn.Module):
    """Generator and discriminator trained together by the shared loop (see the module docstring)."""

    def __init__(self, generator: Generator, discriminator: Discriminator, loss: GanLoss = "nonsaturating"):
        super().__init__()
        self.generator, self.discriminator, self.loss_kind = generator, discriminator, loss

    def forward(
        self, real: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        fake = self.generator(z, labels)
        d_real = self.discriminator(real, labels).float()
        d_fake = self.discriminator(fake.detach(), labels).float()
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        g_fake = functional_call(self.discriminator, frozen, (fake, labels)).float()
        if self.loss_kind == "hinge":
            d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            g_loss = -g_fake.mean()
        else:  # non-saturating: G maximises log D(G(z)) instead of minimising log(1 - D(G(z)))
            d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            g_loss = F.softplus(-g_fake).mean()
        return {
            "loss": d_loss + g_loss,
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(d_real).mean().detach(),
            "d_fake": torch.sigmoid(d_fake).mean().detach(),
        }


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images (flattened): the mode-collapse monitor's statistic.

    A collapsed generator draws near-identical images, so its diversity falls far below the real
    data's; the trainer logs ``diversity / real diversity`` and warns when it drops under 0.5.
    """
    flat = images.flatten(1).float()
    distances = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(distances.sum() / max(1, n * (n - 1)))
