"""CPU-dependent defaults are chosen in one place, from what the machine has, and every user of a
default reads the same choice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lamina.core.machine import CPU_CLASSES, defaults, machine


def test_the_machine_is_read_once_and_names_its_cpu() -> None:
    m = machine()
    assert m is machine()
    assert m.cpu_model and m.cores >= 1
    assert m.torch_capability in ("AVX512", "AVX2", "DEFAULT", "ZVECTOR", "VSX", "SVE256", "SVE")
    assert m.cpu_class in CPU_CLASSES


def test_native_bf16_means_bf16_weights_and_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMINA_CPU_CLASS", "avx512-bf16")
    fit = defaults()
    assert (fit.precision, fit.train_bf16) == ("bf16", True)
    assert "avx512-bf16" in fit.describe()


@pytest.mark.parametrize("cls", ["avx512", "avx2", "baseline"])
def test_without_native_bf16_everything_is_fp32(monkeypatch: pytest.MonkeyPatch, cls: str) -> None:
    monkeypatch.setenv("LAMINA_CPU_CLASS", cls)
    if machine().cuda:
        pytest.skip("a GPU has bf16 whatever the CPU")
    from lamina.serving.quantize import resolve_precision

    fit = defaults()
    assert (fit.precision, fit.train_bf16) == ("fp32", False)
    assert resolve_precision("auto") == "fp32"  # serving reads the same choice


def test_slower_classes_get_shorter_quickstarts(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = {}
    for cls in CPU_CLASSES:
        monkeypatch.setenv("LAMINA_CPU_CLASS", cls)
        steps[cls] = defaults().quickstart_image_steps
    assert steps["avx512-bf16"] > steps["avx2"] > steps["baseline"]


def test_the_training_loop_takes_bf16_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss under autocast differs from fp32; on an fp32 class the loop must not autocast."""
    import torch

    from lamina.training.loop import TrainConfig, train

    class Probe:
        dtypes: list[torch.dtype] = []

        def batch(self, split: str, batch_size: int, generator: torch.Generator) -> dict:
            return {"x": torch.randn(batch_size, 8, generator=generator)}

        def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
            out = model(batch["x"])
            self.dtypes.append(out.dtype)
            return out.float().pow(2).mean()

        def tokens(self, batch: dict) -> int:
            return 1

    monkeypatch.setenv("LAMINA_CPU_CLASS", "avx2")
    probe = Probe()
    cfg = TrainConfig(max_steps=2, eval_every=10, checkpoint_every=10, bf16=True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path

        train(torch.nn.Linear(8, 8), probe, cfg, Path(tmp))
    assert set(probe.dtypes) == {torch.float32}


def test_aten_capability_override_selects_the_avx2_class() -> None:
    """PyTorch's own ATEN_CPU_CAPABILITY=avx2 makes Lamina choose AVX2 defaults (emulating the class)."""
    code = "from lamina.core.machine import defaults; d = defaults(); print(d.cpu_class, d.precision)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"ATEN_CPU_CAPABILITY": "avx2", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["avx2", "fp32"]


def test_an_unknown_forced_class_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.core.errors import ConfigError

    monkeypatch.setenv("LAMINA_CPU_CLASS", "zen9")
    with pytest.raises(ConfigError, match="'zen9' is not a CPU class.*avx512-bf16, avx512, avx2, baseline"):
        defaults()
