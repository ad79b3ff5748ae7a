"""Transforms: text (lowercase, stop words, a trainable byte-level BPE tokenizer), images (resize,
crop, colour space, normalisation statistics) and audio (log-mel spectrograms, torch only)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lamina.data.cleaning import STOP_WORDS
from lamina.data.media import decode_image, decode_wav, encode_png
from lamina.data.records import Batch
from lamina.data.steps import Step, StepContext, StepStats, register_step

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]


@register_step
class Lowercase(Step):
    """Lower-case the text field (or ``fields``)."""

    name = "lowercase"
    row_local = True
    fields: list[str] | None = None

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        for record in batch:
            for name in self.fields or [self.ctx.text_field]:
                value = record.get(name)
                if isinstance(value, str) and value != value.lower():
                    record[name] = value.lower()
                    stats.changed += 1
        return batch


@register_step
class StopWords(Step):
    """Remove stop words (a built-in English list, or ``words``) from the text field."""

    name = "stopwords"
    row_local = True
    words: list[str] | None = None

    def start(self, ctx: StepContext) -> None:
        super().start(ctx)
        self._words = frozenset(w.lower() for w in self.words) if self.words else STOP_WORDS

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        field = self.ctx.text_field
        for record in batch:
            value = record.get(field)
            if isinstance(value, str):
                kept = " ".join(w for w in value.split() if w.lower().strip(".,;:!?\"'") not in self._words)
                if kept != value:
                    record[field] = kept
                    stats.changed += 1
        return batch


def train_tokenizer(texts: Iterator[str], spec: Any, out_dir: Path) -> Any:
    """Byte-level BPE (HF tokenizers) trained on ``texts``; saved as ``tokenizer.json`` in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    return tokenizer


@register_step
class ImageTransform(Step):
    """Resize, centre-crop and convert images; ``normalize`` records per-channel mean/std of the result."""

    name = "image"
    resize: tuple[int, int] | None = None  # (height, width)
    crop: tuple[int, int] | None = None  # centre crop (height, width), after resize
    mode: Literal["L", "RGB"] | None = None
    normalize: bool = False

    def start(self, ctx: StepContext) -> None:
        super().start(ctx)
        self._sum: np.ndarray | None = None
        self._sq: np.ndarray | None = None
        self._pixels = 0

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        from PIL import Image

        for record in batch:
            data = record.get("image")
            if not isinstance(data, bytes):
                continue
            with Image.open(io.BytesIO(data)) as img:
                out = (
                    img.convert(self.mode)
                    if self.mode
                    else img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode)
                )
                if self.resize:
                    out = out.resize((self.resize[1], self.resize[0]), Image.Resampling.BILINEAR)
                if self.crop:
                    h, w = self.crop
                    if h > out.height or w > out.width:
                        stats.drop("smaller_than_crop", record)
                        record["image"] = None
                        continue
                    top, left = (out.height - h) // 2, (out.width - w) // 2
                    out = out.crop((left, top, left + w, top + h))
                pixels = np.asarray(out)
            record.update(
                image=encode_png(pixels), width=pixels.shape[1], height=pixels.shape[0], mode=out.mode
            )
            stats.changed += 1
            if self.normalize:
                flat = pixels.reshape(-1, 1 if pixels.ndim == 2 else pixels.shape[2]).astype(np.float64) / 255
                self._sum = flat.sum(0) + (self._sum if self._sum is not None else 0)
                self._sq = (flat**2).sum(0) + (self._sq if self._sq is not None else 0)
                self._pixels += flat.shape[0]
        return [r for r in batch if r.get("image") is not None or "image" not in r]

    def finish(self, stats: StepStats) -> None:
        if self.normalize and self._pixels and self._sum is not None and self._sq is not None:
            mean = self._sum / self._pixels
            std = np.sqrt(np.maximum(self._sq / self._pixels - mean**2, 0))
            stats.extra["normalize"] = {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Any:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale (written here: no torchaudio)."""
    import torch

    f_max = f_max or sample_rate / 2

    def hz_to_mel(f: float) -> float:
        return 2595 * math.log10(1 + f / 700)

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    hz = 700 * (10 ** (mels / 2595) - 1)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None, :] - lower) / (centre - lower)
    down = (upper - freqs[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0)


def log_mel(
    samples: np.ndarray, sample_rate: int, n_fft: int = 400, hop: int = 160, n_mels: int = 64
) -> np.ndarray:
    """(n_mels, frames) log-mel spectrogram of mono samples."""
    import torch

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if wave.numel() < n_fft:
        wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True)
    power = spec.abs() ** 2  # (freq, frames)
    mel = mel_filterbank(n_fft, n_mels, sample_rate) @ power  # (n_mels, frames)
    return torch.log(mel + 1e-6).numpy()


@register_step
class LogMel(Step):
    """Add ``log_mel`` (float16 .npy bytes, shape in ``log_mel_shape``) computed from ``audio``."""

    name = "log_mel"
    row_local = True
    n_fft: int = Field(400, ge=16)
    hop: int = Field(160, ge=1)
    n_mels: int = Field(64, ge=1)

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        for record in batch:
            data = record.get("audio")
            if not isinstance(data, bytes):
                continue
            samples, rate = decode_wav(data)
            features = log_mel(samples, rate, self.n_fft, self.hop, self.n_mels).astype(np.float16)
            buf = io.BytesIO()
            np.save(buf, features)
            record["log_mel"] = buf.getvalue()
            record["log_mel_shape"] = list(features.shape)
            stats.changed += 1
        return batch


def load_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


__all__ = ["decode_image", "log_mel", "mel_filterbank", "train_tokenizer", "load_array"]
