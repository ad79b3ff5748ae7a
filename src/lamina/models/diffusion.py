"""Denoising diffusion (DDPM, Ho et al. 2020) on diffusers' U-Nets and schedulers.

Training predicts the noise ε added at a random timestep (``DDPMScheduler.add_noise``; a cosine
β schedule, which suits small images). Conditioning:

- ``none``: ``UNet2DModel``.
- ``class``: ``UNet2DModel`` with a class embedding; index ``num_classes`` is the *null* class,
  used for 10 % of training examples so one network learns both p(x|y) and p(x), which
  classifier-free guidance (Ho & Salimans 2022) combines at sampling time.
- ``text``: ``UNet2DConditionModel`` cross-attending to sentence embeddings (the packaged MiniLM,
  384-d) of captions; the null condition is the zero vector.

Sampling runs any diffusers scheduler from the saved config: ``ddpm`` (all 1,000 steps by default),
``ddim`` and ``dpm`` (DPM-Solver++ multistep), which reach similar quality in 20-50 steps.
The saved folder is a diffusers pipeline (``model_index.json`` + ``unet/`` + ``scheduler/``), so
``diffusers.DiffusionPipeline.from_pretrained`` loads it without Lamina.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lamina.models import guidance

Condition = Literal["none", "class", "text"]
SamplerKind = Literal["ddpm", "ddim", "dpm"]
TEXT_DIM = 384  # all-MiniLM-L6-v2
NULL_DROPOUT = 0.1
SNR_GAMMA = 5.0  # Min-SNR-γ loss weighting (see ``Diffusion``)
DEFAULT_GUIDANCE = guidance.DEFAULT_GUIDANCE


def build_unet(
    image_size: int,
    channels: int,
    condition: Condition = "none",
    num_classes: int | None = None,
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    layers_per_block: int = 1,
) -> Any:
    """A small U-Net: one stride-2 stage per block after the first.

    Self-attention sits only at the lowest resolution: at 28×28 that halved the step time against
    attention in the two lower blocks (docs/benchmarks.md, "Image training"). Text models
    cross-attend in every block but the first, so the caption reaches more than the coarsest features.
    """
    from diffusers import UNet2DConditionModel, UNet2DModel

    depth = len(block_out_channels)
    if image_size % 2 ** (depth - 1):
        raise ValueError(
            f"image_size {image_size} must be divisible by {2 ** (depth - 1)} for {depth} U-Net blocks"
        )
    groups = min(8, block_out_channels[0])
    if condition == "text":
        return UNet2DConditionModel(
            sample_size=image_size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (depth - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (depth - 1) + ("UpBlock2D",),
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=8,
            norm_num_groups=groups,
        )
    if condition == "class" and not num_classes:
        raise ValueError("a class-conditional U-Net needs num_classes")
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * (depth - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (depth - 1),
        norm_num_groups=groups,
        num_class_embeds=(num_classes + 1) if condition == "class" and num_classes else None,
    )


def training_scheduler(num_train_timesteps: int = 1000) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=True,
    )


def sampler(kind: SamplerKind, config: Any) -> Any:
    """A sampling scheduler built from the training scheduler's config."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if kind == "ddpm":
        return DDPMScheduler.from_config(config)
    if kind == "ddim":
        return DDIMScheduler.from_config(config)
    if kind == "dpm":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    raise ValueError(f"unknown sampler {kind!r} (ddpm, ddim or dpm)")


def unet_kwargs(unet: Any, cond: torch.Tensor | None) -> dict[str, Any]:
    """How a condition tensor reaches each kind of U-Net."""
    if cond is None:
        return {}
    if cond.dtype in (torch.int64, torch.int32):
        return {"class_labels": cond}
    return {"encoder_hidden_states": cond[:, None, :] if cond.dim() == 2 else cond}


class Diffusion(nn.Module):
    """ε-prediction loss for the shared loop: ``forward(images, noise, timesteps, cond)`` → MSE,
    each sample weighted by min(SNR(t), γ) / SNR(t) (Min-SNR-γ, Hang et al. 2023; γ = 5).

    Why: the easy, low-noise timesteps dominate plain ε-MSE and pull the gradient against the rest;
    capping their weight speeds convergence. On the quickstart's 8×8 digits, 600 steps with it
    matched 2,000 without it (fid_clf 112.7 vs 113.6 at guidance 1.5, class accuracy 0.98 vs 0.99;
    docs/benchmarks.md, "Image training"). ``snr_gamma=None`` gives the plain loss.
    """

    def __init__(self, unet: Any, scheduler: Any, snr_gamma: float | None = SNR_GAMMA) -> None:
        super().__init__()
        self.unet, self.scheduler, self.snr_gamma = unet, scheduler, snr_gamma

    def forward(
        self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        noisy = self.scheduler.add_noise(images, noise, timesteps)
        predicted = self.unet(noisy, timesteps, **unet_kwargs(self.unet, cond)).sample
        per_sample = F.mse_loss(predicted.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.snr_gamma is None:
            return {"loss": per_sample.mean()}
        alphas = self.scheduler.alphas_cumprod.to(images.device)[timesteps]
        snr = alphas / (1 - alphas)
        weight = torch.clamp(snr, max=self.snr_gamma) / snr
        return {"loss": (weight * per_sample).mean(), "mse": per_sample.mean().detach()}


@torch.no_grad()
def sample(
    unet: Any,
    scheduler: Any,
    n: int,
    *,
    steps: int,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    null: torch.Tensor | None = None,
    guidance: float = 1.0,
    on_step: Callable[[int], None] | None = None,
    clamp: bool = True,
) -> torch.Tensor:
    """``n`` images in [-1, 1] (unclamped latents with ``clamp=False``). With ``cond`` and ``null``
    and guidance ≠ 1, classifier-free guidance: ε = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)), both evaluated
    in one batch. ``noise`` fixes the starting point x_T (latent interpolation)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    size, channels = unet.config.sample_size, unet.config.in_channels
    x = noise if noise is not None else torch.randn(n, channels, size, size, generator=generator)
    x = x.to(unet.device)
    scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    guided = cond is not None and null is not None and guidance != 1.0
    both = torch.cat([cond, null]) if guided and cond is not None and null is not None else cond
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
        eps = unet(model_in, t, **unet_kwargs(unet, both)).sample
        if guided:
            eps_cond, eps_null = eps.chunk(2)
            eps = eps_null + guidance * (eps_cond - eps_null)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
        if on_step:
            on_step(i)
    return x.clamp(-1, 1) if clamp else x
