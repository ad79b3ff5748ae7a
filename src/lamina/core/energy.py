"""Energy and CO2 of a piece of work (a training run, a served request's share of the server).

Two ways to know, and the result always says which it used:

- **RAPL** (``/sys/class/powercap/intel-rapl:*/energy_uj``, AMD and Intel): the CPU package's own
  energy counter, read before and after. It counts the whole package, so other work on the machine
  at the same time is counted too. Usually readable only by root, and absent in most VMs.
- **a CPU-time model**: the process's CPU seconds (user + system, its threads and children) ×
  ``watts_per_core`` (``energy:`` in lamina.yaml; default 10 W per busy core, a server core's share
  of package power under load). It misses memory, disks and idle power; it is an estimate.

CO2 is energy × the grid's carbon intensity (``grid_g_per_kwh``; default 475 g/kWh, the IEA's world
average). Nothing here is measured at the wall socket.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

RAPL = Path("/sys/class/powercap")


@dataclass
class Energy:
    joules: float
    seconds: float  # wall time
    cpu_seconds: float
    method: str  # "rapl" or "cpu-time model (N W per busy core)"
    grid_g_per_kwh: float

    @property
    def wh(self) -> float:
        return self.joules / 3600

    @property
    def co2_g(self) -> float:
        return self.joules / 3.6e6 * self.grid_g_per_kwh

    def metrics(self) -> dict[str, Any]:
        """What a run records (MLflow, the model card): Wh, grams of CO2, and how it was measured."""
        return {"energy_wh": round(self.wh, 4), "co2_g": round(self.co2_g, 4), "energy_method": self.method,
                "cpu_seconds": round(self.cpu_seconds, 2)}  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "wh": self.wh, "co2_g": self.co2_g}


def _rapl_zones() -> list[Path]:
    """Package-level counters that this process can read (not their sub-zones: those are inside)."""
    zones = []
    for zone in sorted(RAPL.glob("intel-rapl:*")):
        counter = zone / "energy_uj"
        if zone.name.count(":") == 1 and counter.exists():
            try:
                int(counter.read_text())
            except (OSError, ValueError):
                continue
            zones.append(zone)
    return zones


def _rapl_uj(zones: list[Path]) -> list[int]:
    return [int((z / "energy_uj").read_text()) for z in zones]


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


class EnergyMeter:
    """``with EnergyMeter(settings) as meter: ...`` then ``meter.result``; or ``start()``/``stop()``."""

    def __init__(self, watts_per_core: float = 10.0, grid_g_per_kwh: float = 475.0, use_rapl: bool = True):
        self.watts_per_core, self.grid = watts_per_core, grid_g_per_kwh
        self.zones = _rapl_zones() if use_rapl else []
        self.process = psutil.Process()
        self.result: Energy | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> EnergyMeter:
        energy = getattr(settings, "energy", None)
        if energy is None:
            return cls()
        return cls(energy.watts_per_core, energy.grid_g_per_kwh, energy.rapl)

    def start(self) -> EnergyMeter:
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds(self.process)
        self._uj = _rapl_uj(self.zones) if self.zones else []
        return self

    def read(self) -> Energy:
        """Energy since ``start`` (the meter keeps running)."""
        seconds = time.perf_counter() - self._wall
        cpu = _cpu_seconds(self.process) - self._cpu
        if self.zones:
            now = _rapl_uj(self.zones)
            ranges = [int((z / "max_energy_range_uj").read_text()) if (z / "max_energy_range_uj").exists()
                      else 2**32 for z in self.zones]  # fmt: skip
            # a counter wraps at its range: add the range back once when it went down
            joules = sum(((b - a) % r) for a, b, r in zip(self._uj, now, ranges, strict=True)) / 1e6
            return Energy(joules, seconds, cpu, "rapl", self.grid)
        method = f"cpu-time model ({self.watts_per_core:g} W per busy core)"
        return Energy(cpu * self.watts_per_core, seconds, cpu, method, self.grid)

    def stop(self) -> Energy:
        self.result = self.read()
        return self.result

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
