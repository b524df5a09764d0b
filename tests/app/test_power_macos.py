"""The macOS power sensors (app/power/macos.py) on constructed OS replies: IOReport channels and
deltas, SMC key replies and AppleSmartBattery properties as the seam (MacPower) hands them
over after the CoreFoundation conversion, plus the SMC struct's C layout."""

from __future__ import annotations

import ctypes
import struct

import pytest

from app.power import macos as M
from app.power.readers import PowerMeter

CHANNELS = ["EACC_CPU", "PACC0_CPU", "CPU Energy", "GPU Energy", "ANE", "DRAM"]


def item(channel: str, value: int, unit: str = "mJ", group: str = M.ENERGY_GROUP) -> M.IOReportItem:
    return M.IOReportItem(group, "", channel, unit, value)


class RecordedMac:
    def __init__(
        self,
        channels: list[str] | None = None,
        deltas: list[list[M.IOReportItem]] | None = None,
        smc: dict[str, tuple[str, bytes]] | None = None,
        battery: dict[str, int | bool] | None = None,
    ) -> None:
        self.channels, self.deltas, self.smc, self.battery = channels, deltas or [], smc or {}, battery
        self.subscribed = 0

    def energy_model_channels(self) -> list[str]:
        if self.channels is None:
            raise OSError('IOReport has no "Energy Model" group')
        self.subscribed += 1
        return self.channels

    def energy_model_delta(self) -> list[M.IOReportItem]:
        return self.deltas.pop(0)

    def smc_read(self, key: str) -> tuple[str, bytes]:
        if key not in self.smc:
            raise OSError("the SMC has no such key")
        return self.smc[key]

    def battery_properties(self) -> dict[str, int | bool]:
        if self.battery is None:
            raise OSError("no AppleSmartBattery service (no battery)")
        return self.battery


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_ioreport_cpu_energy_through_the_power_meter():
    deltas = [
        [item("CPU Energy", 0), item("GPU Energy", 0)],
        # 1500 mJ of CPU in 0.5 s; the GPU and the cluster-level channels are not counted
        [item("CPU Energy", 1500), item("GPU Energy", 9999), item("EACC_CPU", 77)],
        [item("CPU Energy", 2_000_000, unit="uJ")],
    ]
    api = RecordedMac(CHANNELS, deltas)
    clock = Clock()
    meter = PowerMeter([M.IOReportSensor(api, clock=clock), M.SmcPowerSensor(api)])
    assert meter.label == "CPU (Apple IOReport energy)" and api.subscribed == 1
    start = meter.read()
    clock.now += 0.5
    middle = meter.read()
    clock.now += 1.0
    end = meter.read()
    assert meter.joules_between(start, middle) == pytest.approx(1.5)
    assert meter.watts_between(start, middle) == pytest.approx(3.0)
    assert meter.watts_between(middle, end) == pytest.approx(2.0)
    assert meter.joules_between(start, end) == pytest.approx(3.5)


def test_an_unknown_unit_gives_no_number():
    api = RecordedMac(CHANNELS, [[item("CPU Energy", 5, unit="kWh")]])
    meter = PowerMeter([M.IOReportSensor(api)])
    reading = meter.read()
    assert reading is not None and reading.counters is None and meter.joules_between(reading, reading) is None


def test_units_and_dies():
    items = [
        item("DIE_0_CPU Energy", 3_000_000_000, unit="nJ"),
        item("DIE_1_CPU Energy", 250, unit=" mJ "),
        item("CPU Energy", 5, group="Other Group"),
    ]
    assert M.cpu_energy_joules(items) == pytest.approx(3.25)
    with pytest.raises(ValueError, match="not mJ, uJ or nJ"):
        M.cpu_energy_joules([item("CPU Energy", 1, unit="24Mticks")])


def test_intel_mac_falls_back_to_smc_then_battery():
    pstr = ("flt ", struct.pack("<f", 11.25) + b"\x00" * 28)
    clock = Clock()
    with_smc = RecordedMac(channels=None, smc={"PSTR": pstr})
    meter = PowerMeter([M.IOReportSensor(with_smc), M.SmcPowerSensor(with_smc, clock=clock)])
    assert meter.label == "system (SMC total power)"
    start = meter.read()
    clock.now += 2
    assert meter.watts_between(start, meter.read()) == pytest.approx(11.25)

    on_battery = {"ExternalConnected": False, "IsCharging": False, "Amperage": 2**64 - 1_500, "Voltage": 12_000}
    no_smc = RecordedMac(channels=[], battery=on_battery)
    meter = PowerMeter([M.IOReportSensor(no_smc), M.SmcPowerSensor(no_smc), M.MacBatterySensor(no_smc, clock=clock)])
    assert meter.label == "system (battery discharge)"
    start = meter.read()
    clock.now += 10
    assert meter.watts_between(start, meter.read()) == pytest.approx(18.0)  # 1.5 A × 12 V


def test_nothing_usable_says_why():
    plugged = {"ExternalConnected": True, "IsCharging": True, "InstantAmperage": 2_000, "Voltage": 12_500}
    api = RecordedMac(channels=["GPU Energy"], smc={"PSTR": ("flt ", struct.pack("<f", float("nan")))}, battery=plugged)
    meter = PowerMeter([M.IOReportSensor(api), M.SmcPowerSensor(api), M.MacBatterySensor(api)])
    reason = meter.unavailable_reason or ""
    assert meter.sensor is None
    assert "no CPU energy channel" in reason and "not a system power" in reason and "on AC power" in reason
    no_battery = M.MacBatterySensor(RecordedMac()).unavailable_reason() or ""
    assert "no AppleSmartBattery" in no_battery


def test_battery_reading_prefers_instant_current():
    props: dict[str, int | bool] = {"InstantAmperage": -2_000, "Amperage": -1_000, "Voltage": 11_000}
    assert M.battery_watts(props) == pytest.approx(22.0)
    assert M.battery_watts({"Amperage": -1_000}) is None
    assert M.battery_watts({"Amperage": 500, "Voltage": 11_000}) is None  # charging


def test_smc_value_types():
    assert M.parse_smc_value("flt ", struct.pack("<f", 7.5)) == 7.5
    assert M.parse_smc_value("sp78", struct.pack(">h", -(3 << 8) - 128)) == -3.5
    assert M.parse_smc_value("fpe2", struct.pack(">H", 41)) == 10.25
    assert M.parse_smc_value("ui16", struct.pack(">H", 300)) == 300.0
    with pytest.raises(ValueError, match="not one this app reads"):
        M.parse_smc_value("ch8*", b"abcd")
    with pytest.raises(ValueError, match="needs 4 bytes"):
        M.parse_smc_value("flt ", b"\x00\x00")


def test_smc_key_data_has_the_c_layout():
    """SMCKeyData_t as AppleSMC expects it: 80 bytes, fields at the C compiler's offsets."""
    data = M._SmcKeyData
    assert ctypes.sizeof(data) == 80
    offsets = {name: getattr(data, name).offset for name in ("vers", "p_limit", "key_info", "result", "data8")}
    assert offsets == {"vers": 4, "p_limit": 12, "key_info": 28, "result": 40, "data8": 42}
    assert (data.data32.offset, data.bytes.offset) == (44, 48)
    assert M.fourcc("PSTR") == 0x50535452
