"""Image tensors in [-1, 1] to uint8 pixels, grids and PNG files (what people open to judge samples)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → (N, H, W) uint8 for one channel, (N, H, W, C) otherwise."""
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    pixels = pixels.transpose(0, 2, 3, 1)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def make_grid(pixels: np.ndarray, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile (N, H, W[, C]) uint8 images into one image, ``nrow`` per row, upscaled ``scale``×."""
    n = pixels.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = pixels.shape[1:3]
    shape = (rows * (h + pad) + pad, nrow * (w + pad) + pad, *pixels.shape[3:])
    grid = np.full(shape, 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = (
            pixels[i]
        )
    return grid


def save_png(pixels: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    """Samples in [-1, 1] as one PNG grid; small images are upscaled so a person can see them."""
    pixels = to_uint8(images)
    scale = max(1, 64 // pixels.shape[1])
    return save_png(make_grid(pixels, nrow, scale=scale), path)


def save_class_grid(
    images: torch.Tensor, labels: torch.Tensor, class_names: list[str], path: Path, per_class: int = 8
) -> Path:
    """One row per class, its name on the left: the grid a person reads to see whether each class
    came out as asked (the first ``per_class`` samples of each class, in class order)."""
    from PIL import Image, ImageDraw, ImageFont

    rows = []
    for k in range(len(class_names)):
        chosen = images[labels == k][:per_class]
        if len(chosen):
            rows.append((class_names[k], chosen))
    if not rows:
        raise ValueError("no samples of any class to show")
    width = max(len(chosen) for _, chosen in rows)
    blank = torch.ones_like(rows[0][1][:1])  # white in [-1, 1]
    tiles = torch.cat([torch.cat([c, blank.repeat(width - len(c), 1, 1, 1)]) for _, c in rows])
    pixels = to_uint8(tiles)
    scale = max(1, 64 // pixels.shape[1])
    grid = make_grid(pixels, width, scale=scale)
    font = ImageFont.load_default()
    label_width = 8 + max(
        int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(n, font=font)) for n, _ in rows
    )
    canvas = Image.new(Image.fromarray(grid).mode, (label_width + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = (grid.shape[0] - 2) / len(rows)
    for i, (name, _) in enumerate(rows):
        draw.text((4, 2 + row_height * (i + 0.5)), name, fill="black", font=font, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
