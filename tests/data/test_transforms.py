import io
import random

import numpy as np
import pytest

import lamina.data.pipeline  # noqa: F401 - registers every built-in step
from lamina.data.augment import (
    ImageOps,
    TextOps,
    add_noise,
    augment_image,
    augment_text,
    pitch_shift,
    time_stretch,
)
from lamina.data.media import decode_image, decode_wav, encode_wav
from lamina.data.steps import StepContext, StepStats, make_step
from lamina.data.transforms import load_array, log_mel
from tests.data.conftest import png_bytes, write_wav

RATE = 16000


def tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()])


def run(spec, records):
    step = make_step(spec)
    step.start(StepContext("text", seed=0))
    stats = StepStats("t")
    out = step.apply(records, stats)
    step.finish(stats)
    return out, stats


def test_lowercase_and_stopwords() -> None:
    out, _ = run("lowercase", [{"text": "Hello World"}])
    assert out[0]["text"] == "hello world"
    out, _ = run("stopwords", [{"text": "The cat is on the mat."}])
    assert out[0]["text"] == "cat mat."
    out, _ = run({"stopwords": {"words": ["cat"]}}, [{"text": "The cat sat"}])
    assert out[0]["text"] == "The sat"


def test_image_resize_crop_mode_and_normalisation_stats() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 128, dtype=np.uint8)).save(buf, "PNG")
    out, stats = run(
        {"image": {"resize": [16, 24], "crop": [8, 8], "mode": "L", "normalize": True}},
        [{"image": buf.getvalue(), "width": 30, "height": 20, "mode": "RGB"}],
    )
    pixels = decode_image(out[0]["image"])
    assert pixels.shape == (8, 8) and (out[0]["width"], out[0]["height"], out[0]["mode"]) == (8, 8, "L")
    assert stats.extra["normalize"]["mean"] == [pytest.approx(128 / 255, abs=0.01)]
    assert stats.extra["normalize"]["std"][0] < 0.01
    out, stats = run({"image": {"crop": [64, 64]}}, [{"image": png_bytes(3)}])
    assert out == [] and stats.dropped == {"smaller_than_crop": 1}


def test_image_tensor_applies_recorded_normalisation() -> None:
    from lamina.data.media import image_tensor

    plain = image_tensor(png_bytes(51))
    assert tuple(plain.shape) == (1, 8, 8) and float(plain.max()) == pytest.approx(0.2)
    normed = image_tensor(png_bytes(51), mean=[0.1], std=[0.5])
    assert float(normed.mean()) == pytest.approx((0.2 - 0.1) / 0.5, abs=1e-5)


def test_log_mel_puts_a_tone_in_the_right_band() -> None:
    low, high = log_mel(tone(300), RATE), log_mel(tone(3000), RATE)
    assert low.shape[0] == 64 and low.shape[1] == 1 + RATE // 160
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()
    out, _ = run("log_mel", [{"audio": encode_wav(tone(440, 0.5), RATE)}])
    features = load_array(out[0]["log_mel"])
    assert list(features.shape) == out[0]["log_mel_shape"] and features.dtype == np.float16


def test_time_stretch_pitch_shift_and_noise() -> None:
    samples = tone(440)
    stretched = time_stretch(samples, 1.25)
    assert len(stretched) == pytest.approx(len(samples) / 1.25, abs=2)
    assert dominant_hz(stretched) == pytest.approx(440, abs=15)  # tempo changes, pitch does not
    shifted = pitch_shift(samples, 12)
    assert len(shifted) == len(samples)
    assert dominant_hz(shifted) == pytest.approx(880, abs=25)  # one octave up
    noisy = add_noise(samples, 20, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(samples**2) / np.mean((noisy - samples) ** 2))
    assert snr == pytest.approx(20, abs=0.5)


def test_image_and_text_augmentation(tmp_path) -> None:
    import torch

    torch.manual_seed(0)
    original = png_bytes(90)
    augmented = augment_image(original, ImageOps(rotate_degrees=30))
    assert decode_image(augmented).shape == decode_image(original).shape
    text = "the old king said he would help the child buy a new house near the river"
    out = augment_text(text, TextOps(synonym=1.0, delete=0.0, swap=0.0), random.Random(0))
    assert "king" not in out.split() and ("monarch" in out or "sovereign" in out)
    deleted = augment_text(text, TextOps(synonym=0, delete=0.5, swap=0), random.Random(0))
    assert 0 < len(deleted.split()) < len(text.split())
    masked = augment_text(text, TextOps(synonym=0, delete=0, swap=0, mask=1.0), random.Random(0))
    assert set(masked.split()) == {"[MASK]"}
    assert augment_text(text, TextOps(), random.Random(5)) == augment_text(text, TextOps(), random.Random(5))


def test_augment_step_caps_synthetic_rows_and_marks_them(tmp_path) -> None:
    audio = write_wav(tmp_path / "a.wav").read_bytes()
    records = [{"audio": audio, "_origin": f"a{i}"} for i in range(10)]
    out, stats = run({"augment": {"copies": 3, "max_synthetic_fraction": 0.4}}, records)
    synthetic = [r for r in out if r["synthetic"]]
    assert len(synthetic) / len(out) <= 0.4 and stats.extra["capped"] > 0
    first = synthetic[0]
    assert first["_origin"] == f"{first['augmented_from']}+aug1"
    assert out.index(first) == out.index(next(r for r in out if r["_origin"] == first["augmented_from"])) + 1
    samples, rate = decode_wav(synthetic[0]["audio"])
    assert rate == 16000 and len(samples) > 0
