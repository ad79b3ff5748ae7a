"""What this machine has, and every default that depends on it, chosen in one place.

Machines differ more than their core counts say. Two 2-core AMD EPYC classes were measured (see
docs/benchmarks.md): Zen 4 has AVX-512 with native bf16, Zen 3 only AVX2. On the AVX2 class bf16
is emulated (slower than fp32), the same step counts take 3–5× longer, and the quickstart that took
2 min on Zen 4 took 12. So nothing else in Lamina reads CPU flags: precision, compile, threads,
batch sizes and the quickstart's step counts come from ``defaults()``, and the CLI prints
``defaults().describe()`` once where the choice matters.

Trying another class's defaults: ``LAMINA_CPU_CLASS=avx2`` picks that class outright;
``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's own dispatch override, with ``ONEDNN_MAX_CPU_ISA=AVX2``
for oneDNN) makes torch run AVX2 kernels, and this module follows what torch reports.

Core layer (0): it imports torch lazily and nothing from Lamina.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from typing import Literal

CpuClass = Literal["avx512-bf16", "avx512", "avx2", "baseline"]
CPU_CLASSES: tuple[CpuClass, ...] = ("avx512-bf16", "avx512", "avx2", "baseline")
CLASS_ENV = "LAMINA_CPU_CLASS"


@dataclass(frozen=True)
class Machine:
    """The facts the defaults are chosen from."""

    cpu_model: str
    flags: frozenset[str]
    cores: int
    torch_capability: str  # what ATen dispatches to: AVX512, AVX2, DEFAULT (honours ATEN_CPU_CAPABILITY)
    cuda: bool

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16) that torch's kernels will use."""
        has = "avx512_bf16" in self.flags or "amx_bf16" in self.flags
        return has and self.torch_capability.startswith("AVX512")

    @property
    def cpu_class(self) -> CpuClass:
        forced = os.environ.get(CLASS_ENV, "").strip().lower()
        if forced in CPU_CLASSES:
            return forced
        if forced:
            from lamina.core.errors import ConfigError

            raise ConfigError(
                f"{CLASS_ENV}={forced!r} is not a CPU class", hint=f"use one of {', '.join(CPU_CLASSES)}"
            )
        if self.torch_capability.startswith("AVX512"):
            return "avx512-bf16" if self.native_bf16 else "avx512"
        if self.torch_capability.startswith("AVX2"):
            return "avx2"
        return "baseline"

    @property
    def notable_flags(self) -> list[str]:
        """The flags that decide speed here, for benchmark tables."""
        wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "neon")
        return [f for f in wanted if f in self.flags]


@dataclass(frozen=True)
class Defaults:
    """Every CPU-dependent default. A flag or a setting the user gives still wins."""

    cpu_class: CpuClass
    precision: Literal["bf16", "fp32"]  # served weights (``--precision auto``)
    train_bf16: bool  # bf16 autocast in the training loop
    serve_compile: bool  # torch.compile the serving step at load
    serve_threads: int  # torch intra-op threads for inference (the HTTP side keeps the rest)
    image_batch_size: int  # image families' training batch
    quickstart_lm_steps: int
    quickstart_image_steps: int
    quickstart_eval_samples: int  # samples behind the quickstart's fid_clf
    reason: str  # one line on why

    def describe(self) -> str:
        return (
            f"{machine().cpu_model} ({self.cpu_class}, {machine().cores} cores): "
            f"{self.precision} weights, bf16 training {'on' if self.train_bf16 else 'off'}, "
            f"{self.serve_threads} serving thread(s), quickstart {self.quickstart_lm_steps} LM + "
            f"{self.quickstart_image_steps} diffusion steps. {self.reason}"
        )


def _cpu_facts() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


@cache
def machine() -> Machine:
    import torch

    model, flags = _cpu_facts()
    return Machine(
        cpu_model=model,
        flags=flags,
        cores=os.cpu_count() or 1,
        torch_capability=str(torch.backends.cpu.get_cpu_capability()),
        cuda=torch.cuda.is_available(),
    )


# Quickstart step counts (LM, diffusion) per class: the budget is ≤ 5 minutes end to end on 2 cores
# (docs/benchmarks.md, "Quickstart"). A Zen 3 (AVX2) took ~0.3 s per diffusion step against ~0.06 on
# a Zen 4; with Min-SNR weighting 500 steps scored as well as 2,000 (fid_clf 110.0 vs 112.4).
_QUICKSTART: dict[CpuClass, tuple[int, int]] = {
    "avx512-bf16": (800, 1000),
    "avx512": (800, 700),
    "avx2": (800, 500),
    "baseline": (400, 300),
}


def defaults() -> Defaults:
    """The defaults for this machine (read each call, so ``LAMINA_CPU_CLASS`` set in a test applies)."""
    m = machine()
    cls = m.cpu_class
    bf16 = cls == "avx512-bf16" or m.cuda
    lm_steps, image_steps = _QUICKSTART[cls]
    if cls == "avx512-bf16":
        reason = "native bf16: bf16 weights and autocast are faster at the same quality"
    elif cls == "avx512":
        reason = "AVX-512 without bf16: fp32 (emulated bf16 is slower)"
    elif cls == "avx2":
        reason = "AVX2 only: fp32 (emulated bf16 is slower), fewer quickstart diffusion steps"
    else:
        reason = "no AVX2: fp32, shortest quickstart"
    return Defaults(
        cpu_class=cls,
        precision="bf16" if bf16 else "fp32",
        train_bf16=bf16,
        serve_compile=cls != "baseline",
        serve_threads=max(1, m.cores // 2),
        image_batch_size=64,
        quickstart_lm_steps=lm_steps,
        quickstart_image_steps=image_steps,
        quickstart_eval_samples=180,
        reason=reason,
    )
