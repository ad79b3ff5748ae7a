"""Decode and encode the media stored in records: images as PNG bytes, audio as 16-bit PCM WAV bytes."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np


def decode_image(data: bytes) -> np.ndarray:
    """(H, W) or (H, W, C) uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert(img.mode if img.mode in ("L", "RGB", "RGBA") else "RGB"))


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate (8/16/32-bit PCM)."""
    with wave.open(io.BytesIO(data)) as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2**31
    else:
        raise ValueError(f"unsupported WAV sample width: {width} bytes")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return buf.getvalue()


def image_tensor(data: bytes, mean: list[float] | None = None, std: list[float] | None = None) -> Any:
    """(C, H, W) float32 tensor in [0, 1], normalised per channel with ``mean``/``std`` when given
    (the statistics the ``image`` step records with ``normalize: true``)."""
    import torch

    pixels = np.array(decode_image(data))  # a writable copy for torch
    tensor = (
        torch.from_numpy(pixels[..., None] if pixels.ndim == 2 else pixels).permute(2, 0, 1).float() / 255
    )
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        s = torch.tensor(std, dtype=torch.float32)[:, None, None].clamp_min(1e-8)
        tensor = (tensor - m) / s
    return tensor
