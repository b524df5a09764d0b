"""CPU-time and power readings for the performance panel (CPU-seconds per token, watts).

`CpuTimeReader` gives this process's CPU seconds (os.times) and system-wide
utilisation (/proc/stat on Linux, psutil elsewhere if installed). Power comes
from the first sensor that works without admin rights (default_sensors):
- Linux: RAPL energy counters (often root-only since kernel 5.10: a
  PermissionError means "not available"), then a battery while discharging;
- Windows (app/power/windows.py): the Energy Meter Interface's CPU channels,
  then the battery's discharge rate;
- macOS (app/power/macos.py): IOReport's "Energy Model" CPU channels (Apple
  Silicon), then the SMC's system power key PSTR, then the battery (Intel Macs).
Each sensor's `label` says what it measures ("CPU package (RAPL)", "system
(battery discharge)", ...); the UI shows it next to the number. The sysfs and
procfs roots are constructor parameters so tests use fake trees; the Windows
and macOS sensors take their OS calls as a parameter for the same reason.
Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.power.base import PowerReading as PowerReading
from app.power.base import PowerSensor as PowerSensor
from app.power.base import trapezoid_joules

NO_SENSOR_REASON = "no power sensor on this machine"


# ---- CPU time ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    t: float  # time.monotonic()
    process_cpu_s: float  # user + system seconds of this process (all threads)
    system_busy: float | None  # cumulative non-idle CPU time, all cores (unit cancels out)
    system_total: float | None


class CpuTimeReader:
    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.proc_stat = Path(proc_root) / "stat"

    def process_cpu_seconds(self) -> float:
        times = os.times()
        return times.user + times.system

    def system_times(self) -> tuple[float, float] | None:
        """(busy, total) cumulative CPU time over all cores, or None if this OS gives us nothing."""
        try:
            first = self.proc_stat.read_text().splitlines()[0].split()
            if first[0] == "cpu":
                # user nice system idle iowait irq softirq steal (guest* are already inside user/nice)
                values = [float(v) for v in first[1:9]]
                idle = values[3] + values[4]
                return sum(values) - idle, sum(values)
        except (OSError, IndexError, ValueError):
            pass
        try:
            import psutil  # optional: only for non-Linux system-wide utilisation
        except ImportError:
            return None
        cpu = psutil.cpu_times()
        total = sum(cpu)
        return total - cpu.idle - getattr(cpu, "iowait", 0.0), total

    def sample(self) -> CpuSample:
        system = self.system_times()
        return CpuSample(
            time.monotonic(), self.process_cpu_seconds(), system[0] if system else None, system[1] if system else None
        )

    @staticmethod
    def process_cpu_seconds_between(start: CpuSample, end: CpuSample) -> float:
        return end.process_cpu_s - start.process_cpu_s

    @staticmethod
    def system_utilisation_between(start: CpuSample, end: CpuSample) -> float | None:
        """Fraction (0..1) of all cores busy between two samples, or None if unknown."""
        busy0, total0, busy1, total1 = start.system_busy, start.system_total, end.system_busy, end.system_total
        if busy0 is None or total0 is None or busy1 is None or total1 is None:
            return None
        total = total1 - total0
        if total <= 0:
            return None
        return max(0.0, min(1.0, (busy1 - busy0) / total))


# ---- power sensors -------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    return path.read_text().strip()


class RaplSensor:
    """CPU package energy from /sys/class/powercap/intel-rapl:N/energy_uj (Intel and AMD Zen)."""

    name = "rapl"
    label = "CPU package (RAPL)"

    def __init__(self, sysfs_root: str | Path = "/sys", read_text: Callable[[Path], str] = _read_text) -> None:
        self.base = Path(sysfs_root) / "class" / "powercap"
        self._read_text = read_text

    def zones(self) -> list[Path]:
        # Top-level package zones only ("intel-rapl:0"); sub-zones ("intel-rapl:0:0") are inside them.
        if not self.base.is_dir():
            return []
        return sorted(p for p in self.base.glob("intel-rapl:*") if p.name.count(":") == 1)

    def unavailable_reason(self) -> str | None:
        zones = self.zones()
        if not zones:
            return "no RAPL energy counters (/sys/class/powercap/intel-rapl:*)"
        try:
            for zone in zones:
                int(self._read_text(zone / "energy_uj"))
        except PermissionError:
            return (
                "RAPL energy counters are readable by root only on this system (Linux ≥ 5.10); "
                "an administrator can allow it with a udev rule"
            )
        except (OSError, ValueError) as error:
            return f"RAPL counters unreadable ({error})"
        return None

    def max_ranges(self) -> tuple[int, ...]:
        return tuple(int(self._read_text(zone / "max_energy_range_uj")) for zone in self.zones())

    def read(self) -> PowerReading:
        counters = tuple(int(self._read_text(zone / "energy_uj")) for zone in self.zones())
        return PowerReading(self.name, time.monotonic(), energy_uj=counters)

    def joules_between(self, start: PowerReading, end: PowerReading) -> float:
        total_uj = 0
        for before, after, wrap in zip(start.energy_uj or (), end.energy_uj or (), self.max_ranges()):
            delta = after - before
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                delta += wrap
            total_uj += delta
        return total_uj / 1e6


class BatterySensor:
    """Whole-system power from a discharging Linux battery (power_now, or current_now × voltage_now)."""

    name = "battery"
    label = "system (battery discharge)"

    def __init__(self, sysfs_root: str | Path = "/sys", read_text: Callable[[Path], str] = _read_text) -> None:
        self.base = Path(sysfs_root) / "class" / "power_supply"
        self._read_text = read_text

    def batteries(self) -> list[Path]:
        return sorted(self.base.glob("BAT*")) if self.base.is_dir() else []

    def _watts(self, battery: Path) -> float | None:
        try:
            if self._read_text(battery / "status") != "Discharging":
                return None  # on AC the battery rate says nothing about what the CPU draws
            if (battery / "power_now").exists():
                return abs(int(self._read_text(battery / "power_now"))) / 1e6  # µW
            current = int(self._read_text(battery / "current_now"))  # µA (negative = discharging)
            voltage = int(self._read_text(battery / "voltage_now"))  # µV
            return abs(current) * voltage / 1e12
        except (OSError, ValueError):
            return None

    def unavailable_reason(self) -> str | None:
        batteries = self.batteries()
        if not batteries:
            return "no battery"
        if all(self._watts(b) is None for b in batteries):
            return "the battery is not discharging (on AC power), so it cannot measure power"
        return None

    def read(self) -> PowerReading:
        watts = [w for w in (self._watts(b) for b in self.batteries()) if w is not None]
        return PowerReading(self.name, time.monotonic(), watts=sum(watts) if watts else None)

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        return trapezoid_joules(start, end)


class UnsupportedPlatformSensor:
    """A platform without a reader (neither Linux, Windows nor macOS): says so instead of guessing."""

    name = "none"
    label = "unavailable"

    def __init__(self, platform_name: str) -> None:
        self.platform_name = platform_name

    def unavailable_reason(self) -> str | None:
        return f"power readings are not supported on {self.platform_name}"

    def read(self) -> PowerReading:
        raise RuntimeError(self.unavailable_reason())

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        raise RuntimeError(self.unavailable_reason())


def default_sensors(sysfs_root: str | Path = "/sys", platform: str = sys.platform) -> list[PowerSensor]:
    """This platform's sensors, best first; none touches the OS before unavailable_reason()."""
    if platform.startswith("linux"):
        return [RaplSensor(sysfs_root), BatterySensor(sysfs_root)]
    if platform == "win32":
        from app.power.windows import EmiSensor, WindowsBatterySensor

        return [EmiSensor(), WindowsBatterySensor()]
    if platform == "darwin":
        from app.power.macos import IOReportSensor, MacBatterySensor, SmcPowerSensor

        return [IOReportSensor(), SmcPowerSensor(), MacBatterySensor()]
    return [UnsupportedPlatformSensor(platform)]


class PowerMeter:
    """Uses the first sensor that works; otherwise `sensor` is None and `unavailable_reason` says why."""

    def __init__(
        self,
        sensors: Sequence[PowerSensor] | None = None,
        *,
        sysfs_root: str | Path = "/sys",
        platform: str = sys.platform,
    ) -> None:
        candidates = list(sensors) if sensors is not None else default_sensors(sysfs_root, platform)
        self.sensor: PowerSensor | None = None
        reasons: list[str] = []
        for sensor in candidates:
            reason = sensor.unavailable_reason()
            if reason is None:
                self.sensor = sensor
                break
            reasons.append(reason)
        self.unavailable_reason: str | None = (
            None if self.sensor else NO_SENSOR_REASON + (f" ({'; '.join(reasons)})" if reasons else "")
        )

    @property
    def label(self) -> str:
        return self.sensor.label if self.sensor else "unavailable"

    def read(self) -> PowerReading | None:
        return self.sensor.read() if self.sensor else None

    def joules_between(self, start: PowerReading | None, end: PowerReading | None) -> float | None:
        if self.sensor is None or start is None or end is None:
            return None
        return self.sensor.joules_between(start, end)

    def watts_between(self, start: PowerReading | None, end: PowerReading | None) -> float | None:
        joules = self.joules_between(start, end)
        if joules is None or start is None or end is None or end.t <= start.t:
            return None
        return joules / (end.t - start.t)

    def measure_watts(
        self, interval_s: float = 1.0, sleep: Callable[[float], None] = time.sleep
    ) -> tuple[float | None, str | None]:
        """Average watts over `interval_s`: (watts, None) or (None, human reason)."""
        if self.sensor is None:
            return None, self.unavailable_reason
        start = self.read()
        sleep(interval_s)
        watts = self.watts_between(start, self.read())
        return (watts, None) if watts is not None else (None, "the sensor gave no reading for this interval")
