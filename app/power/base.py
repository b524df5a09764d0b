"""What every power sensor returns and must offer (PowerReading, PowerSensor), shared by the
per-OS sensor modules and app/power/readers.py. Pure Python, standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PowerReading:
    sensor: str
    t: float  # time.monotonic()
    energy_uj: tuple[int, ...] | None = None  # cumulative counters (RAPL), one per zone
    watts: float | None = None  # instantaneous power (battery)
    counters: tuple[int, ...] | None = None  # cumulative counters in the sensor's own unit (EMI: pWh)


def trapezoid_joules(start: PowerReading, end: PowerReading) -> float | None:
    """Energy between two instantaneous power readings (a battery's rate)."""
    if start.watts is None or end.watts is None:
        return None
    return (start.watts + end.watts) / 2 * (end.t - start.t)


class PowerSensor(Protocol):
    """What PowerMeter needs of a sensor; the sensor classes match it by shape (no base class)."""

    name: str
    label: str  # shown next to the number: what is being measured

    def unavailable_reason(self) -> str | None: ...  # None when usable
    def read(self) -> PowerReading: ...
    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None: ...
