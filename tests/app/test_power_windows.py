"""The Windows power sensors (app/power/windows.py) on constructed OS replies: EMI metadata and
measurements as byte buffers laid out like emi.h's structs, SYSTEM_BATTERY_STATE likewise,
handed to the sensors through their OS seam (the WindowsPower protocol)."""

from __future__ import annotations

import ctypes
import struct

import pytest

from app.power import windows as W
from app.power.readers import PowerMeter, default_sensors

PWH_PER_JOULE = 1 / 3.6e-9


def wchars(text: str, n: int | None = None) -> bytes:
    raw = (text + "\x00").encode("utf-16-le")
    return raw if n is None else raw.ljust(2 * n, b"\x00")


def metadata_v2(channels: list[tuple[str, int]], oem: str = "Intel", model: str = "RAPL") -> bytes:
    body = b"".join(struct.pack("<IH", unit, len(wchars(name))) + wchars(name) for name, unit in channels)
    return wchars(oem, 16) + wchars(model, 16) + struct.pack("<HH", 1, len(channels)) + body


def metadata_v1(name: str, unit: int = 0) -> bytes:
    return (
        struct.pack("<I", unit)
        + wchars("OEM", 16)
        + wchars("Model", 16)
        + struct.pack("<HH", 3, len(wchars(name)))
        + wchars(name)
    )


def measurements(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<QQ", energy, t) for energy, t in pairs)


def battery_state(ac: bool, present: bool, charging: bool, discharging: bool, rate: int) -> bytes:
    return W.SYSTEM_BATTERY_STATE.pack(ac, present, charging, discharging, 50_000, 30_000, rate, 3600, 0, 0)


class RecordedWindows:
    """Replies per device path and IOCTL; GET_MEASUREMENT replies are taken in turn."""

    def __init__(self, devices: dict[str, dict[int, bytes | list[bytes]]], battery: bytes | None = None) -> None:
        self.devices = devices
        self.battery = battery
        self.handles: dict[int, str] = {}
        self.closed: list[int] = []
        self.asked_sizes: list[tuple[int, int]] = []

    def energy_meter_paths(self) -> list[str]:
        return list(self.devices)

    def open_device(self, path: str) -> int:
        if self.devices[path] == {}:
            raise OSError(5, "access denied")
        handle = 100 + len(self.handles)
        self.handles[handle] = path
        return handle

    def ioctl(self, handle: int, code: int, out_size: int) -> bytes:
        self.asked_sizes.append((code, out_size))
        reply = self.devices[self.handles[handle]][code]
        if isinstance(reply, list):
            reply = reply.pop(0)
        return reply[:out_size]

    def close_device(self, handle: int) -> None:
        self.closed.append(handle)

    def system_battery_state(self) -> bytes:
        if self.battery is None:
            raise OSError(1, "CallNtPowerInformation failed")
        return self.battery


def emi_device(metadata: bytes, version: int, readings: list[bytes]) -> dict[int, bytes | list[bytes]]:
    return {
        W.IOCTL_EMI_GET_VERSION: struct.pack("<H", version),
        W.IOCTL_EMI_GET_METADATA_SIZE: struct.pack("<I", len(metadata)),
        W.IOCTL_EMI_GET_METADATA: metadata,
        W.IOCTL_EMI_GET_MEASUREMENT: readings,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


INTEL = [("RAPL_Package0_PKG", 0), ("RAPL_Package0_PP0", 0), ("RAPL_Package0_PP1", 0), ("RAPL_Package0_DRAM", 0)]


def test_ioctl_codes_and_guid_match_the_headers():
    # winioctl.h CTL_CODE(FILE_DEVICE_UNKNOWN, n, METHOD_BUFFERED, FILE_READ_ACCESS)
    assert [W.IOCTL_EMI_GET_VERSION, W.IOCTL_EMI_GET_METADATA_SIZE, W.IOCTL_EMI_GET_METADATA] == [
        0x224000,
        0x224004,
        0x224008,
    ]
    assert W.IOCTL_EMI_GET_MEASUREMENT == 0x22400C
    guid = W._Guid.from_buffer_copy(W.GUID_DEVICE_ENERGY_METER.bytes_le)
    assert (guid.data1, guid.data2, guid.data3, bytes(guid.data4)) == (
        0x45BD8344,
        0x7ED6,
        0x49CF,
        bytes([0xA4, 0x40, 0xC2, 0x76, 0xC9, 0x33, 0xB0, 0x53]),
    )
    assert W.SYSTEM_BATTERY_STATE.size == 32


def test_struct_offsets_follow_c_layout_rules():
    """The offsets the parser uses, against ctypes replicas of emi.h's structs (WCHAR = u16)."""
    wchar16 = ctypes.c_uint16 * 16

    class ChannelV2(ctypes.Structure):
        _fields_ = [("unit", ctypes.c_uint32), ("name_size", ctypes.c_uint16), ("name", ctypes.c_uint16 * 1)]

    class MetadataV2(ctypes.Structure):
        _fields_ = [("oem", wchar16), ("model", wchar16), ("revision", ctypes.c_uint16),
                    ("count", ctypes.c_uint16), ("channels", ChannelV2 * 1)]  # fmt: skip

    class MetadataV1(ctypes.Structure):
        _fields_ = [("unit", ctypes.c_uint32), ("oem", wchar16), ("model", wchar16), ("revision", ctypes.c_uint16),
                    ("name_size", ctypes.c_uint16), ("name", ctypes.c_uint16 * 1)]  # fmt: skip

    assert MetadataV2.channels.offset == W.EMI_V2_CHANNELS_OFFSET
    assert ChannelV2.name.offset == W.EMI_V2_CHANNEL_HEADER
    assert MetadataV1.name.offset == W.EMI_V1_NAME_OFFSET


def test_v2_metadata_intel_picks_the_package_only():
    meta = W.parse_emi_metadata(2, metadata_v2(INTEL))
    assert (meta.oem, meta.model) == ("Intel", "RAPL")
    assert [c.name for c in meta.channels] == [name for name, _ in INTEL]
    # the cores (PP0) are inside the package: never added to it
    assert W.pick_cpu_channels([c.name for c in meta.channels]) == ((0,), "CPU package (EMI)")


def test_channel_choice_for_other_vendors():
    clusters = ["GPU", "CPU Cluster 0", "CPU Cluster 1", "DRAM"]
    assert W.pick_cpu_channels(clusters) == ((1, 2), "CPU (CPU Cluster 0 + CPU Cluster 1, EMI)")
    assert W.pick_cpu_channels(["Current Socket Energy", "VDDCR_VDD Energy"]) == ((0,), "CPU package (EMI)")
    assert W.pick_cpu_channels(["RAPL_Package0_PP0", "RAPL_Package0_PP1"])[0] == (0,)
    assert W.pick_cpu_channels(["GPU", "DRAM", "Display"]) is None


def test_v1_metadata_and_bad_buffers():
    meta = W.parse_emi_metadata(1, metadata_v1("RAPL_Package0_PKG"))
    assert meta.channels == (W.EmiChannel("RAPL_Package0_PKG", 0),)
    good = metadata_v2(INTEL)
    with pytest.raises(W.EmiFormatError, match="runs past"):
        W.parse_emi_metadata(2, good[:-10])
    with pytest.raises(W.EmiFormatError, match="starts past"):
        W.parse_emi_metadata(2, good[: W.EMI_V2_CHANNELS_OFFSET + 3])
    with pytest.raises(W.EmiFormatError, match="version 3"):
        W.parse_emi_metadata(3, good)
    with pytest.raises(W.EmiFormatError, match="out of range"):
        W.parse_metadata_size(struct.pack("<I", 0))
    with pytest.raises(W.EmiFormatError, match="needs 32 bytes"):
        W.parse_emi_measurements(measurements((1, 2)), 2)


def test_emi_sensor_through_the_power_meter():
    one_joule = round(PWH_PER_JOULE)
    device = emi_device(
        metadata_v2(INTEL),
        2,
        [
            measurements((5_000, 10), (1, 10), (2, 10), (3, 10)),
            measurements((5_000 + 6 * one_joule, 20_000_000), (999_999, 0), (0, 0), (0, 0)),
        ],
    )
    api = RecordedWindows({r"\\?\ACPI#INT33A0#0#{45bd8344}": device})
    clock = Clock()
    sensor = W.EmiSensor(api, clock=clock)
    meter = PowerMeter([sensor, W.WindowsBatterySensor(api)])
    assert meter.sensor is sensor and meter.label == "CPU package (EMI)"
    start = meter.read()
    clock.now += 2.0
    end = meter.read()
    assert start is not None and start.counters == (5_000,)
    assert meter.joules_between(start, end) == pytest.approx(6.0, rel=1e-9)
    assert meter.watts_between(start, end) == pytest.approx(3.0, rel=1e-9)
    # the metadata buffer asked for is the size the device gave; a measurement covers every channel
    assert (W.IOCTL_EMI_GET_METADATA, len(metadata_v2(INTEL))) in api.asked_sizes
    assert (W.IOCTL_EMI_GET_MEASUREMENT, 4 * 16) in api.asked_sizes
    sensor.close()
    assert api.closed == [100]


def test_a_failed_measurement_gives_no_number():
    device = emi_device(metadata_v2(INTEL), 2, [measurements((1, 1), (0, 0), (0, 0), (0, 0)), b"short"])
    meter = PowerMeter([W.EmiSensor(RecordedWindows({"dev": device}))])
    start, end = meter.read(), meter.read()
    assert end is not None and end.counters is None
    assert meter.watts_between(start, end) is None


def test_emi_counter_wraparound():
    start = W.joules_from_counters([2**64 - 1_000], [500])
    assert start == pytest.approx(1_500 * 3.6e-9)


def test_first_usable_device_wins_and_unusable_ones_are_closed():
    gpu_only = emi_device(metadata_v2([("GPU", 0)]), 2, [])
    cpu = emi_device(metadata_v1("CPU Cluster 0"), 1, [measurements((7, 1))])
    api = RecordedWindows({"dev-denied": {}, "dev-gpu": gpu_only, "dev-cpu": cpu})
    sensor = W.EmiSensor(api)
    assert sensor.unavailable_reason() is None
    assert sensor.label == "CPU (CPU Cluster 0, EMI)"
    assert api.closed == [100]  # the GPU-only device, opened first (the denied one never opened)
    assert sensor.read().counters == (7,)


def test_no_energy_meter_falls_back_to_the_battery():
    api = RecordedWindows({}, battery_state(ac=False, present=True, charging=False, discharging=True, rate=-12_500))
    clock = Clock()
    meter = PowerMeter([W.EmiSensor(api), W.WindowsBatterySensor(api, clock=clock)])
    assert meter.label == "system (battery discharge)"
    start = meter.read()
    clock.now += 4.0
    assert meter.watts_between(start, meter.read()) == pytest.approx(12.5)


def test_nothing_usable_says_why():
    on_ac = battery_state(ac=True, present=True, charging=True, discharging=False, rate=20_000)
    meter = PowerMeter([W.EmiSensor(RecordedWindows({})), W.WindowsBatterySensor(RecordedWindows({}, on_ac))])
    assert meter.sensor is None and meter.read() is None
    reason = meter.unavailable_reason or ""
    assert "no Energy Meter Interface device" in reason and "on AC power" in reason
    truncated = emi_device(metadata_v2(INTEL)[:80], 2, [])
    sensor = W.EmiSensor(RecordedWindows({"dev": truncated}))
    assert "runs past the metadata" in (sensor.unavailable_reason() or "")
    with pytest.raises(RuntimeError):
        sensor.read()


def test_battery_states():
    def reason(raw: bytes) -> str | None:
        return W.WindowsBatterySensor(RecordedWindows({}, raw)).unavailable_reason()

    assert reason(battery_state(False, False, False, False, 0)) == "no battery"
    assert "no discharge rate" in (reason(battery_state(False, True, False, True, -0x80000000)) or "")
    assert "could not be read" in (W.WindowsBatterySensor(RecordedWindows({})).unavailable_reason() or "")
    state = W.parse_battery_state(battery_state(False, True, False, True, -8_000))
    assert state.rate_mw == -8_000 and state.discharging and not state.ac_online
    with pytest.raises(ValueError):
        W.parse_battery_state(b"\x00" * 31)


def test_default_sensors_per_platform_touch_no_os():
    kinds = [type(s).__name__ for s in default_sensors(platform="win32")]
    assert kinds == ["EmiSensor", "WindowsBatterySensor"]
    assert [type(s).__name__ for s in default_sensors(platform="darwin")] == [
        "IOReportSensor",
        "SmcPowerSensor",
        "MacBatterySensor",
    ]
    assert "not supported on freebsd14" in (default_sensors(platform="freebsd14")[0].unavailable_reason() or "")
