"""Augmentation: synthetic copies of rows, capped as a share of the dataset and marked as synthetic.

Images use kornia (flips, rotations, colour jitter, random resized crops); text uses the EDA
operations (synonym replacement, masking, deletion, swap; Wei & Zou 2019); audio uses
time-stretch (a phase vocoder), pitch-shift and background noise, written on torch because there
is no torchaudio build here. Every synthetic row has ``synthetic: true`` and ``augmented_from``.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lamina.data.media import decode_image, decode_wav, encode_png, encode_wav
from lamina.data.records import Batch, Record
from lamina.data.steps import Step, StepContext, StepStats, register_step

# A small built-in synonym table for EDA's synonym replacement (WordNet cannot be downloaded here);
# pass ``synonyms`` in the recipe to use your own.
SYNONYMS: dict[str, list[str]] = {
    "good": ["fine", "great", "nice"],
    "bad": ["poor", "awful"],
    "big": ["large", "huge"],
    "small": ["little", "tiny"],
    "fast": ["quick", "rapid"],
    "slow": ["sluggish", "unhurried"],
    "happy": ["glad", "cheerful"],
    "sad": ["unhappy", "sorrowful"],
    "begin": ["start", "commence"],
    "end": ["finish", "close"],
    "say": ["state", "tell"],
    "said": ["stated", "told"],
    "make": ["create", "build"],
    "show": ["display", "reveal"],
    "use": ["employ", "apply"],
    "help": ["assist", "aid"],
    "answer": ["reply", "response"],
    "question": ["query", "inquiry"],
    "important": ["key", "crucial"],
    "old": ["aged", "ancient"],
    "new": ["fresh", "recent"],
    "house": ["home", "dwelling"],
    "car": ["vehicle", "auto"],
    "child": ["kid", "youngster"],
    "man": ["person", "fellow"],
    "woman": ["lady", "person"],
    "look": ["see", "view"],
    "think": ["believe", "suppose"],
    "know": ["understand", "realise"],
    "buy": ["purchase", "acquire"],
    "near": ["close", "nearby"],
    "far": ["distant", "remote"],
    "easy": ["simple", "effortless"],
    "hard": ["difficult", "tough"],
    "many": ["numerous", "several"],
    "often": ["frequently", "commonly"],
    "quickly": ["rapidly", "swiftly"],
    "very": ["really", "extremely"],
    "love": ["adore", "cherish"],
    "king": ["monarch", "sovereign"],
    "lord": ["master", "noble"],
    "speak": ["talk", "say"],
    "die": ["perish"],
}


class TextOps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    synonym: float = Field(0.1, ge=0, le=1)  # fraction of words replaced by a synonym
    mask: float = Field(0.0, ge=0, le=1)
    delete: float = Field(0.1, ge=0, le=1)
    swap: float = Field(0.1, ge=0, le=1)
    mask_token: str = "[MASK]"
    synonyms: dict[str, list[str]] | None = None


class ImageOps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hflip: float = Field(0.5, ge=0, le=1)
    rotate_degrees: float = Field(10, ge=0, le=180)
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    crop_scale: tuple[float, float] = (0.85, 1.0)


class AudioOps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stretch: tuple[float, float] = (0.9, 1.1)
    semitones: tuple[float, float] = (-2.0, 2.0)
    snr_db: tuple[float, float] = (15.0, 30.0)


def augment_text(text: str, ops: TextOps, rng: random.Random) -> str:
    words = text.split()
    if not words:
        return text
    table = ops.synonyms or SYNONYMS
    for i, word in enumerate(words):
        key = word.lower().strip(".,;:!?\"'")
        if key in table and rng.random() < ops.synonym:
            words[i] = word.replace(key, rng.choice(table[key])) if key in word else rng.choice(table[key])
        elif rng.random() < ops.mask:
            words[i] = ops.mask_token
    words = [w for w in words if rng.random() >= ops.delete] or [rng.choice(words)]
    for _ in range(int(round(ops.swap * len(words)))):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def augment_image(data: bytes, ops: ImageOps) -> bytes:
    import kornia.augmentation as K
    import torch

    pixels = np.array(decode_image(data))  # a writable copy for torch
    gray = pixels.ndim == 2
    tensor = torch.from_numpy(pixels[..., None] if gray else pixels).permute(2, 0, 1)[None].float() / 255
    h, w = tensor.shape[-2:]
    pipeline = torch.nn.Sequential(
        K.RandomHorizontalFlip(p=ops.hflip),
        K.RandomRotation(degrees=ops.rotate_degrees, p=1.0),
        K.ColorJitter(brightness=ops.brightness, contrast=ops.contrast, p=1.0),
        K.RandomResizedCrop((int(h), int(w)), scale=ops.crop_scale, p=1.0),
    )
    with torch.no_grad():
        out = pipeline(tensor)[0].clamp(0, 1)  # (C, H, W)
    array = (out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return encode_png(array[..., 0] if gray else array)


def time_stretch(samples: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Phase-vocoder time stretch (``rate`` > 1 is faster/shorter), pitch unchanged."""
    import torch

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if wave.numel() < n_fft:
        return samples
    window = torch.hann_window(n_fft)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # (freq, frames)
    steps = torch.arange(0, spec.shape[1] - 1, rate)
    phase_advance = torch.linspace(0, math.pi * hop, spec.shape[0])[:, None]
    left, frac = steps.long(), (steps - steps.floor())[None, :]
    a, b = spec[:, left], spec[:, left + 1]
    magnitude = (1 - frac) * a.abs() + frac * b.abs()
    delta = b.angle() - a.angle() - phase_advance
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi))
    phase = torch.cumsum(delta + phase_advance, dim=1) + spec[:, :1].angle()
    stretched = torch.polar(magnitude, phase)
    out = torch.istft(stretched, n_fft, hop, window=window, length=int(round(len(samples) / rate)))
    return out.numpy()


def pitch_shift(samples: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch by time-stretching then resampling back to the original length."""
    factor = 2 ** (semitones / 12)
    stretched = time_stretch(samples, 1 / factor)
    positions = np.linspace(0, len(stretched) - 1, len(samples))
    return np.interp(positions, np.arange(len(stretched)), stretched).astype(np.float32)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(samples**2)) or 1e-8
    noise = rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), size=samples.shape)
    return (samples + noise).astype(np.float32)


def augment_audio(data: bytes, ops: AudioOps, rng: np.random.Generator) -> bytes:
    samples, rate = decode_wav(data)
    samples = time_stretch(samples, float(rng.uniform(*ops.stretch)))
    samples = pitch_shift(samples, float(rng.uniform(*ops.semitones)))
    samples = add_noise(samples, float(rng.uniform(*ops.snr_db)), rng)
    return encode_wav(samples, rate)


@register_step
class Augment(Step):
    """Add ``copies`` augmented rows per original (with probability ``p``), never letting synthetic rows
    exceed ``max_synthetic_fraction`` of the rows that leave this step."""

    name = "augment"
    kind: Literal["auto", "text", "image", "audio"] = "auto"
    copies: int = Field(1, ge=1, le=20)
    p: float = Field(1.0, ge=0, le=1)
    max_synthetic_fraction: float = Field(0.3, ge=0, lt=1)
    text: TextOps = Field(default_factory=TextOps)
    image: ImageOps = Field(default_factory=ImageOps)
    audio: AudioOps = Field(default_factory=AudioOps)

    def start(self, ctx: StepContext) -> None:
        super().start(ctx)
        import torch

        torch.manual_seed(ctx.seed)  # kornia samples from torch's global generator
        self._rng = random.Random(ctx.seed)
        self._np_rng = np.random.default_rng(ctx.seed)
        self._originals = 0
        self._synthetic = 0

    def _kind(self, record: Record) -> str:
        if self.kind != "auto":
            return self.kind
        if isinstance(record.get("image"), bytes):
            return "image"
        if isinstance(record.get("audio"), bytes):
            return "audio"
        return "text"

    def _room(self) -> bool:
        return (self._synthetic + 1) / (self._originals + self._synthetic + 1) <= self.max_synthetic_fraction

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        out: Batch = []
        for record in batch:
            record["synthetic"] = False
            out.append(record)
            self._originals += 1
            if self._rng.random() >= self.p:
                continue
            for copy in range(1, self.copies + 1):
                if not self._room():
                    stats.extra["capped"] = stats.extra.get("capped", 0) + 1
                    break
                out.append(self._make_copy(record, copy))
                self._synthetic += 1
        return out

    def _make_copy(self, record: Record, copy: int) -> Record:
        new = dict(record)
        kind = self._kind(record)
        if kind == "image":
            new["image"] = augment_image(record["image"], self.image)
        elif kind == "audio":
            new["audio"] = augment_audio(record["audio"], self.audio, self._np_rng)
        else:
            field = self.ctx.text_field
            new[field] = augment_text(str(record.get(field, "")), self.text, self._rng)
        new["synthetic"] = True
        new["augmented_from"] = str(record.get("_origin", ""))
        new["_origin"] = f"{record.get('_origin', '')}+aug{copy}"
        return new

    def finish(self, stats: StepStats) -> None:
        total = self._originals + self._synthetic
        stats.extra["synthetic_rows"] = self._synthetic
        stats.extra["synthetic_fraction"] = self._synthetic / total if total else 0.0
        stats.extra["max_synthetic_fraction"] = self.max_synthetic_fraction
