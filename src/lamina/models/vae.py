"""Variational autoencoder (Kingma & Welling 2014): conv encoder → (μ, log σ²) → z → conv decoder.

Images come in as tensors in [-1, 1] (the convention every image family here shares); the decoder
models pixels in [0, 1] as Bernoulli logits, the usual likelihood for MNIST-like data. The loss is
reconstruction (summed per image) + β·KL(q(z|x) ‖ N(0, I)), both reported so the balance shows.
With ``num_classes`` the encoder and decoder also see the label (a conditional VAE), so
``sample(labels=...)`` draws a chosen class.

Built on diffusers' ``ModelMixin``/``ConfigMixin`` so it saves and loads like every other model
here (``save_pretrained``/``from_pretrained``, safetensors + config.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class VAE(ModelMixin, ConfigMixin):  # type: ignore[misc]
    @register_to_config
    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        latent_dim: int = 16,
        hidden: tuple[int, int] = (32, 64),
        beta: float = 1.0,
        num_classes: int | None = None,
        label_dim: int = 16,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two stride-2 stages), got {image_size}")
        h1, h2 = hidden
        cells = h2 * (image_size // 4) ** 2
        cond = label_dim if num_classes else 0
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, h1, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(h1, h2, 4, 2, 1),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.to_moments = nn.Linear(cells + cond, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim + cond, cells), nn.SiLU())
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (h2, image_size // 4, image_size // 4)),
            nn.ConvTranspose2d(h2, h1, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(h1, channels, 4, 2, 1),
        )

    def _with_label(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_embedding is None:
            return h
        if labels is None:
            raise ValueError("this VAE is class-conditional: give labels")
        return torch.cat([h, self.label_embedding(labels)], dim=1)

    def encode(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x) for images in [-1, 1]."""
        mu, logvar = self.to_moments(self._with_label(self.encoder(images), labels)).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.from_latent(self._with_label(z, labels)))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] (the Bernoulli means)."""
        return torch.sigmoid(self.decode_logits(z, labels)) * 2 - 1

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, eps: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The loss terms for a batch; pass ``eps`` (the reparameterisation noise) to reproduce it."""
        mu, logvar = self.encode(images, labels)
        eps = torch.randn_like(mu) if eps is None else eps
        z = mu + eps * torch.exp(0.5 * logvar)
        logits = self.decode_logits(z, labels).float()
        target = (images.float() + 1) / 2
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / images.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()).float() / images.shape[0]
        return {"loss": recon + self.config.beta * kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode ``n`` draws from the prior N(0, I)."""
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        return self.decode(z.to(self.device), labels)
