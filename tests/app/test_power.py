"""Power and CPU-time readers on fake sysfs/procfs trees written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.power.readers import (
    NO_SENSOR_REASON,
    BatterySensor,
    CpuSample,
    CpuTimeReader,
    PowerMeter,
    PowerReading,
    RaplSensor,
)


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _rapl(root: Path, energy_uj: int, max_uj: int = 262_143_328_850, zone: str = "intel-rapl:0") -> None:
    _write(root, f"class/powercap/{zone}/energy_uj", str(energy_uj))
    _write(root, f"class/powercap/{zone}/max_energy_range_uj", str(max_uj))


def _battery(root: Path, status: str, **values: int) -> None:
    _write(root, "class/power_supply/BAT0/status", status)
    for name, value in values.items():
        _write(root, f"class/power_supply/BAT0/{name}", str(value))


def test_rapl_energy_delta_and_watts(tmp_path):
    _rapl(tmp_path, 1_000_000)
    _write(tmp_path, "class/powercap/intel-rapl:0:0/energy_uj", "5")  # core sub-zone: not double counted
    meter = PowerMeter(sysfs_root=tmp_path, platform="linux")
    assert isinstance(meter.sensor, RaplSensor) and meter.unavailable_reason is None
    assert meter.label == "CPU package (RAPL)"
    start = meter.read()
    _rapl(tmp_path, 13_500_000)
    end = PowerReading("rapl", start.t + 2.5, energy_uj=meter.read().energy_uj)
    assert meter.joules_between(start, end) == pytest.approx(12.5)
    assert meter.watts_between(start, end) == pytest.approx(5.0)


def test_rapl_wraparound(tmp_path):
    _rapl(tmp_path, 999_000, max_uj=1_000_000)
    sensor = RaplSensor(tmp_path)
    start = sensor.read()
    _rapl(tmp_path, 4_000, max_uj=1_000_000)
    assert sensor.joules_between(start, sensor.read()) == pytest.approx(0.005)


def test_rapl_sums_packages(tmp_path):
    _rapl(tmp_path, 100, zone="intel-rapl:0")
    _rapl(tmp_path, 200, zone="intel-rapl:1")
    sensor = RaplSensor(tmp_path)
    start = sensor.read()
    _rapl(tmp_path, 1_000_100, zone="intel-rapl:0")
    _rapl(tmp_path, 2_000_200, zone="intel-rapl:1")
    assert sensor.joules_between(start, sensor.read()) == pytest.approx(3.0)


def test_rapl_permission_denied_is_not_available(tmp_path):
    _rapl(tmp_path, 1)

    def root_only(path: Path) -> str:  # chmod 000 means nothing to root, so simulate the kernel's answer
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text().strip()

    sensor = RaplSensor(tmp_path, read_text=root_only)
    assert "root" in sensor.unavailable_reason()
    meter = PowerMeter([sensor])
    assert meter.sensor is None and meter.read() is None
    assert meter.unavailable_reason.startswith(NO_SENSOR_REASON)
    assert meter.measure_watts(0.0, sleep=lambda s: None) == (None, meter.unavailable_reason)


def test_battery_power_now_while_discharging(tmp_path):
    _battery(tmp_path, "Discharging", power_now=12_345_000)
    meter = PowerMeter(sysfs_root=tmp_path, platform="linux")
    assert isinstance(meter.sensor, BatterySensor)
    reading = meter.read()
    assert reading.watts == pytest.approx(12.345)
    later = PowerReading("battery", reading.t + 10, watts=7.655)
    assert meter.joules_between(reading, later) == pytest.approx(100.0)
    assert meter.watts_between(reading, later) == pytest.approx(10.0)


def test_battery_current_times_voltage(tmp_path):
    _battery(tmp_path, "Discharging", current_now=-1_500_000, voltage_now=12_000_000)  # newer ABI: negative
    assert BatterySensor(tmp_path).read().watts == pytest.approx(18.0)


def test_battery_while_charging_is_not_used(tmp_path):
    _battery(tmp_path, "Charging", power_now=30_000_000)
    meter = PowerMeter(sysfs_root=tmp_path, platform="linux")
    assert meter.sensor is None and "not discharging" in meter.unavailable_reason


def test_rapl_preferred_over_battery(tmp_path):
    _rapl(tmp_path, 1)
    _battery(tmp_path, "Discharging", power_now=1)
    assert isinstance(PowerMeter(sysfs_root=tmp_path, platform="linux").sensor, RaplSensor)


def test_no_sensor_at_all(tmp_path):
    meter = PowerMeter(sysfs_root=tmp_path, platform="linux")
    assert meter.sensor is None and meter.label == "unavailable"
    assert meter.unavailable_reason.startswith(NO_SENSOR_REASON)
    assert meter.joules_between(None, None) is None


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_other_platforms_sensors_off_their_os_say_why(platform, tmp_path):
    # their OS libraries do not load here: unavailable with the reason, never an exception
    meter = PowerMeter(sysfs_root=tmp_path, platform=platform)
    assert meter.sensor is None and meter.unavailable_reason.startswith(NO_SENSOR_REASON + " (")


def test_cpu_time_reader_on_fake_proc_stat(tmp_path):
    _write(tmp_path, "stat", "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10")
    reader = CpuTimeReader(proc_root=tmp_path)
    start = reader.sample()
    assert (start.system_busy, start.system_total) == (150, 1000)
    _write(tmp_path, "stat", "cpu  250 0 100 850 50 0 0 0 0 0")
    end = reader.sample()
    assert CpuTimeReader.system_utilisation_between(start, end) == pytest.approx(200 / 250)


def test_process_cpu_seconds_grow_with_work():
    reader = CpuTimeReader()
    start = reader.sample()
    total = 0
    while reader.process_cpu_seconds() - start.process_cpu_s < 0.02:
        total += sum(range(10_000))
    assert CpuTimeReader.process_cpu_seconds_between(start, reader.sample()) >= 0.02
    assert CpuTimeReader.system_utilisation_between(start, CpuSample(0, 0, None, None)) is None
