from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import numpy as np
import pytest


def write_wav(path: Path, freq: float = 440.0, seconds: float = 0.5, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.5 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def write_png(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[0, 0] = (255 - value, 0, 0)
    Image.fromarray(pixels).save(path)
    return path


def png_bytes(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def shared_data() -> Path:
    from tests.conftest import SHARED_DATA, require

    if not SHARED_DATA.is_dir():
        require("../shared/data", f"{SHARED_DATA} is missing")
    return SHARED_DATA
