"""Energy accounting: the CPU-time model counts this process's CPU seconds × watts per core and says
so; a RAPL counter, where the kernel exposes one, is read instead (a counter that wrapped is added
back); CO2 is energy × grid intensity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import lamina.core.energy as energy
from lamina.core.energy import EnergyMeter


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        sum(i * i for i in range(1000))


def test_the_cpu_time_model_charges_cpu_seconds_times_watts_per_core() -> None:
    with EnergyMeter(watts_per_core=20.0, grid_g_per_kwh=500.0, use_rapl=False) as meter:
        burn(0.3)
    used = meter.result
    assert used is not None and used.method == "cpu-time model (20 W per busy core)"
    assert 0.28 <= used.cpu_seconds < 1.5 and used.joules == pytest.approx(used.cpu_seconds * 20.0)
    assert used.co2_g == pytest.approx(used.joules / 3.6e6 * 500.0)
    assert set(used.metrics()) == {"energy_wh", "co2_g", "energy_method", "cpu_seconds"}


def test_rapl_is_read_where_the_kernel_exposes_it_and_a_wrapped_counter_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = tmp_path / "intel-rapl:0"
    (zone / "intel-rapl:0:0").mkdir(parents=True)  # a sub-zone (a core domain) is inside the package
    (zone / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    (zone / "energy_uj").write_text(str(10**9 - 2_000_000))
    (zone / "max_energy_range_uj").write_text(str(10**9))
    monkeypatch.setattr(energy, "RAPL", tmp_path)
    meter = EnergyMeter().start()
    (zone / "energy_uj").write_text(str(3_000_000))  # wrapped past its range: 5 J since start
    used = meter.stop()
    assert used.method == "rapl" and used.joules == pytest.approx(5.0)
