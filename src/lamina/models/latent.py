"""Latent-space tools: linear and spherical interpolation between latent vectors.

Gaussian latents concentrate near a sphere of radius ~√d, so a straight line between two of them
passes through an unlikely low-norm region; ``slerp`` follows the great circle instead and keeps
the norm typical (White 2016, "Sampling Generative Networks").
"""

from __future__ import annotations

from typing import Literal

import torch

Method = Literal["linear", "slerp"]


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two vectors (falls back to ``lerp`` when they are nearly parallel)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:
        return lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: Method = "slerp") -> torch.Tensor:
    """``steps`` points from ``a`` to ``b`` inclusive, stacked: (steps, *a.shape)."""
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps, got {steps}")
    fn = slerp if method == "slerp" else lerp
    return torch.stack([fn(a, b, i / (steps - 1)) for i in range(steps)])
