"""Weight precision for CPU serving, chosen per deployment: fp32, bf16, or int8 Linear weights.

int8 uses PyTorch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``): weights
stored as int8, activations quantized on the fly, int8 GEMMs from fbgemm. It is deprecated in
favour of torchao, but torchao 0.18's int8 configs ran 8–20× *slower* than fp32 on this CPU in
eager mode (they expect compiled kernels), while ``quantize_dynamic`` ran 1.45× faster (measured
on the ``small`` preset, one-token decode). bench/serve.py reports speed and perplexity of each.
Never fp16 on this CPU: it has no fast fp16 path.

``auto`` (``lamina serve``'s default) is bf16 where the CPU computes bf16 natively (AVX512-BF16 or
AMX) and fp32 elsewhere: on such a CPU bf16 served 1.3–1.4× fp32's tokens/s with the same
perplexity (6.430 vs 6.429, bench/serve.py) and half the memory, as GPU serving stacks run bf16.
fp32 stays one flag away for transformers-exact outputs.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Literal

import torch

from lamina.core.errors import ConfigError

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (``lamina.core.machine`` decides)."""
    from lamina.core.machine import machine

    return machine().native_bf16


def resolve_precision(precision: str) -> str:
    """``auto`` → bf16 on a CPU with native bf16, else fp32; any other value is checked and kept."""
    if precision == "auto":
        from lamina.core.machine import defaults

        return defaults().precision
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}", hint=f"use auto or one of {', '.join(PRECISIONS)}"
        )
    return precision


def with_precision(model: Any, precision: str) -> Any:
    """A copy of ``model`` at ``precision`` (the original is left as it was)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model
    if precision == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice is covered in the module docstring
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(model).float().eval(), {torch.nn.Linear}, dtype=torch.qint8)


def parse_deployment(spec: str) -> tuple[str, Precision | None]:
    """``REF`` or ``REF:PRECISION`` (``shakes@champion:int8``)."""
    ref, _, precision = spec.rpartition(":") if spec.rsplit(":", 1)[-1] in PRECISIONS else (spec, "", "")
    if precision and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision in {spec!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    return ref, precision or None
