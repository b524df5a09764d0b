"""Power on Windows without admin rights: the Energy Meter Interface and the battery.

EMI (emi.h): every energy meter the OS knows is a device interface of class
GUID_DEVICE_ENERGY_METER; SetupAPI lists them, CreateFile opens one for reading (no
elevation: Chromium reads it from its browser process), and four DeviceIoControl codes give
the interface version, the metadata (channel names; version 1 has one channel, version 2 a
list) and the measurements: per channel a cumulative 64-bit energy in picowatt-hours and
the absolute time of the reading in 100 ns units. Intel and AMD CPUs expose RAPL through
the inbox driver on Windows 11 ("RAPL_Package0_PKG", "RAPL_Package0_PP0", ...); other
platforms name their channels themselves ("CPU Cluster 0" is the shape Snapdragon-style
names take), so the sensor picks the package channels, else the CPU ones, and says which.

The battery: CallNtPowerInformation(SystemBatteryState) gives the whole battery's rate in
mW, negative while discharging; on AC or charging it says nothing about the CPU.

`WindowsApi` is the only class that calls the OS (ctypes, no extra binary); the sensors
take it as a parameter, so tests give them recorded or constructed replies (byte buffers
laid out like the C structs). Everything that reads those bytes is here, bounds-checked.
Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import ctypes
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.power.base import PowerReading, trapezoid_joules

GUID_DEVICE_ENERGY_METER = uuid.UUID("45bd8344-7ed6-49cf-a440-c276c933b053")


def ctl_code(device_type: int, function: int, method: int, access: int) -> int:
    """winioctl.h's CTL_CODE macro."""
    return (device_type << 16) | (access << 14) | (function << 2) | method


FILE_DEVICE_UNKNOWN, METHOD_BUFFERED, FILE_READ_ACCESS = 0x22, 0, 1
IOCTL_EMI_GET_VERSION = ctl_code(FILE_DEVICE_UNKNOWN, 0, METHOD_BUFFERED, FILE_READ_ACCESS)  # 0x224000
IOCTL_EMI_GET_METADATA_SIZE = ctl_code(FILE_DEVICE_UNKNOWN, 1, METHOD_BUFFERED, FILE_READ_ACCESS)
IOCTL_EMI_GET_METADATA = ctl_code(FILE_DEVICE_UNKNOWN, 2, METHOD_BUFFERED, FILE_READ_ACCESS)
IOCTL_EMI_GET_MEASUREMENT = ctl_code(FILE_DEVICE_UNKNOWN, 3, METHOD_BUFFERED, FILE_READ_ACCESS)

EMI_VERSION_V1, EMI_VERSION_V2 = 1, 2
EMI_UNIT_PICOWATT_HOURS = 0  # EmiMeasurementUnitPicowattHours, the only unit emi.h defines
EMI_NAME_BYTES = 32  # WCHAR[EMI_NAME_MAX = 16]
# EMI_METADATA_V1: MeasurementUnit u32, HardwareOEM, HardwareModel, HardwareRevision u16,
#                  MeteredHardwareNameSize u16 (bytes), MeteredHardwareName WCHAR[]
EMI_V1_NAME_OFFSET = 4 + 2 * EMI_NAME_BYTES + 4  # 72
# EMI_METADATA_V2: HardwareOEM, HardwareModel, HardwareRevision u16, ChannelCount u16, then
# ChannelCount × EMI_CHANNEL_V2 {MeasurementUnit u32, ChannelNameSize u16 (bytes), WCHAR[]},
# each right after the previous one's name (EMI_CHANNEL_V2_NEXT_CHANNEL)
EMI_V2_CHANNELS_OFFSET = 2 * EMI_NAME_BYTES + 4  # 68
EMI_V2_CHANNEL_HEADER = 6
EMI_MEASUREMENT_BYTES = 16  # EMI_CHANNEL_MEASUREMENT_DATA: AbsoluteEnergy u64, AbsoluteTime u64
EMI_MAX_METADATA_BYTES = 1 << 20  # a driver's claim above this is not trusted
JOULES_PER_PWH = 3.6e-9  # 1 pWh = 1e-12 × 3600 J
COUNTER_WRAP = 1 << 64

SYSTEM_BATTERY_STATE_LEVEL = 5  # POWER_INFORMATION_LEVEL.SystemBatteryState
# SYSTEM_BATTERY_STATE: AcOnLine, BatteryPresent, Charging, Discharging (BOOLEAN), Spare1[4],
# MaxCapacity, RemainingCapacity, Rate (mW; signed in use), EstimatedTime, DefaultAlert1, 2
SYSTEM_BATTERY_STATE = struct.Struct("<4B4xIIiIII")
BATTERY_UNKNOWN_RATE = -0x80000000  # 0x80000000 read as the signed value it is used as


class EmiFormatError(ValueError):
    """A reply from an energy meter that does not fit emi.h's layout."""


@dataclass(frozen=True)
class EmiChannel:
    name: str
    unit: int  # EMI_MEASUREMENT_UNIT


@dataclass(frozen=True)
class EmiMetadata:
    version: int
    oem: str
    model: str
    channels: tuple[EmiChannel, ...]


def _utf16(raw: bytes) -> str:
    return raw.decode("utf-16-le", errors="replace").split("\x00", 1)[0]


def parse_emi_version(raw: bytes) -> int:
    if len(raw) < 2:
        raise EmiFormatError(f"EMI_VERSION needs 2 bytes, got {len(raw)}")
    return int(struct.unpack_from("<H", raw)[0])


def parse_metadata_size(raw: bytes) -> int:
    if len(raw) < 4:
        raise EmiFormatError(f"EMI_METADATA_SIZE needs 4 bytes, got {len(raw)}")
    size = int(struct.unpack_from("<I", raw)[0])
    if not 0 < size <= EMI_MAX_METADATA_BYTES:
        raise EmiFormatError(f"EMI metadata size {size} is out of range")
    return size


def parse_emi_metadata(version: int, raw: bytes) -> EmiMetadata:
    """EMI_METADATA_V1 or EMI_METADATA_V2 (the interface version says which)."""
    if version == EMI_VERSION_V1:
        if len(raw) < EMI_V1_NAME_OFFSET:
            raise EmiFormatError(f"EMI_METADATA_V1 needs {EMI_V1_NAME_OFFSET} bytes, got {len(raw)}")
        unit = int(struct.unpack_from("<I", raw, 0)[0])
        name_size = int(struct.unpack_from("<H", raw, EMI_V1_NAME_OFFSET - 2)[0])
        end = EMI_V1_NAME_OFFSET + name_size
        if end > len(raw):
            raise EmiFormatError(f"EMI v1 meter name ({name_size} bytes) runs past the metadata ({len(raw)} bytes)")
        return EmiMetadata(
            version,
            _utf16(raw[4 : 4 + EMI_NAME_BYTES]),
            _utf16(raw[4 + EMI_NAME_BYTES : 4 + 2 * EMI_NAME_BYTES]),
            (EmiChannel(_utf16(raw[EMI_V1_NAME_OFFSET:end]), unit),),
        )
    if version == EMI_VERSION_V2:
        if len(raw) < EMI_V2_CHANNELS_OFFSET:
            raise EmiFormatError(f"EMI_METADATA_V2 needs {EMI_V2_CHANNELS_OFFSET} bytes, got {len(raw)}")
        count = int(struct.unpack_from("<H", raw, EMI_V2_CHANNELS_OFFSET - 2)[0])
        channels = []
        offset = EMI_V2_CHANNELS_OFFSET
        for index in range(count):
            if offset + EMI_V2_CHANNEL_HEADER > len(raw):
                raise EmiFormatError(f"EMI v2 channel {index} of {count} starts past the metadata ({len(raw)} bytes)")
            unit, name_size = struct.unpack_from("<IH", raw, offset)
            start = offset + EMI_V2_CHANNEL_HEADER
            if start + name_size > len(raw):
                raise EmiFormatError(f"EMI v2 channel {index}'s name runs past the metadata ({len(raw)} bytes)")
            channels.append(EmiChannel(_utf16(raw[start : start + name_size]), int(unit)))
            offset = start + name_size
        return EmiMetadata(
            version, _utf16(raw[:EMI_NAME_BYTES]), _utf16(raw[EMI_NAME_BYTES : 2 * EMI_NAME_BYTES]), tuple(channels)
        )
    raise EmiFormatError(f"EMI interface version {version} is not one this app reads (1 or 2)")


def parse_emi_measurements(raw: bytes, n_channels: int) -> list[tuple[int, int]]:
    """(AbsoluteEnergy pWh, AbsoluteTime 100 ns) per channel, in metadata order."""
    need = n_channels * EMI_MEASUREMENT_BYTES
    if len(raw) < need:
        raise EmiFormatError(f"EMI measurement for {n_channels} channels needs {need} bytes, got {len(raw)}")
    return [(int(e), int(t)) for e, t in struct.iter_unpack("<QQ", raw[:need])]


def pick_cpu_channels(names: Sequence[str]) -> tuple[tuple[int, ...], str] | None:
    """The channels that measure the CPU, and the label saying what they are; None if no
    channel does. Package channels ("RAPL_Package0_PKG", AMD's "... Socket ...") win, and then
    the cores are not added again (they are inside the package); else every CPU channel is
    summed ("CPU Cluster 0" + "CPU Cluster 1", or RAPL's cores-only "..._PP0")."""
    lowered = [n.lower() for n in names]
    package = tuple(i for i, n in enumerate(lowered) if n.endswith("_pkg") or "socket" in n)
    if package:
        return package, "CPU package (EMI)"
    cpu = tuple(i for i, n in enumerate(lowered) if ("cpu" in n or n.endswith("_pp0")) and "gpu" not in n)
    if cpu:
        return cpu, f"CPU ({' + '.join(names[i] for i in cpu)}, EMI)"
    return None


def joules_from_counters(start: Sequence[int], end: Sequence[int]) -> float:
    """Energy between two sets of cumulative pWh counters; a counter that went down wrapped at 2^64."""
    total = 0
    for before, after in zip(start, end):
        delta = after - before
        if delta < 0:
            delta += COUNTER_WRAP
        total += delta
    return total * JOULES_PER_PWH


# ---- the OS seam ---------------------------------------------------------------------------------


class WindowsPower(Protocol):
    """The raw calls the sensors make: `WindowsApi` on Windows, recorded replies in tests."""

    def energy_meter_paths(self) -> list[str]: ...
    def open_device(self, path: str) -> int: ...  # raises OSError
    def ioctl(self, handle: int, code: int, out_size: int) -> bytes: ...  # raises OSError
    def close_device(self, handle: int) -> None: ...
    def system_battery_state(self) -> bytes: ...  # raises OSError


class _Guid(ctypes.Structure):
    _fields_ = [
        ("data1", ctypes.c_uint32),
        ("data2", ctypes.c_uint16),
        ("data3", ctypes.c_uint16),
        ("data4", ctypes.c_ubyte * 8),
    ]


class _DeviceInterfaceData(ctypes.Structure):  # SP_DEVICE_INTERFACE_DATA
    _fields_ = [
        ("cb_size", ctypes.c_uint32),
        ("guid", _Guid),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_size_t),
    ]


# SP_DEVICE_INTERFACE_DETAIL_DATA_W: cbSize u32, then DevicePath WCHAR[]; cbSize must hold the
# fixed part's size with its padding (8 for 64-bit processes, the only ones this app ships)
DETAIL_DATA_CB_SIZE, DETAIL_DATA_PATH_OFFSET = 8, 4
DIGCF_PRESENT, DIGCF_DEVICEINTERFACE = 0x2, 0x10
GENERIC_READ, FILE_SHARE_READ_WRITE, OPEN_EXISTING = 0x80000000, 0x3, 3
INVALID_HANDLE = ctypes.c_void_p(-1).value
ERROR_INSUFFICIENT_BUFFER = 122


class WindowsApi:
    """SetupAPI, CreateFile, DeviceIoControl and CallNtPowerInformation through ctypes."""

    def __init__(self) -> None:
        # WinDLL (stdcall) where it exists; x64 and ARM64 have one calling convention anyway
        loader: Callable[..., Any] = getattr(ctypes, "WinDLL", ctypes.CDLL)
        self._kernel32 = loader("kernel32", use_last_error=True)
        self._setupapi = loader("setupapi", use_last_error=True)
        self._powrprof = loader("powrprof", use_last_error=True)
        self._last_error: Callable[[], int] = getattr(ctypes, "get_last_error", lambda: 0)
        handle, void_p, u32 = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32
        k = self._kernel32
        k.CreateFileW.restype = handle
        k.CreateFileW.argtypes = [ctypes.c_wchar_p, u32, u32, void_p, u32, u32, handle]
        k.DeviceIoControl.restype = ctypes.c_int
        k.DeviceIoControl.argtypes = [handle, u32, void_p, u32, void_p, u32, ctypes.POINTER(u32), void_p]
        k.CloseHandle.argtypes = [handle]
        s = self._setupapi
        s.SetupDiGetClassDevsW.restype = handle
        s.SetupDiGetClassDevsW.argtypes = [ctypes.POINTER(_Guid), ctypes.c_wchar_p, handle, u32]
        s.SetupDiEnumDeviceInterfaces.argtypes = [
            handle,
            void_p,
            ctypes.POINTER(_Guid),
            u32,
            ctypes.POINTER(_DeviceInterfaceData),
        ]
        s.SetupDiGetDeviceInterfaceDetailW.argtypes = [
            handle,
            ctypes.POINTER(_DeviceInterfaceData),
            void_p,
            u32,
            ctypes.POINTER(u32),
            void_p,
        ]
        s.SetupDiDestroyDeviceInfoList.argtypes = [handle]
        self._powrprof.CallNtPowerInformation.restype = ctypes.c_long
        self._powrprof.CallNtPowerInformation.argtypes = [ctypes.c_int, void_p, u32, void_p, u32]

    def _error(self, what: str) -> OSError:
        code = self._last_error()
        return OSError(code, f"{what} failed (Windows error {code})")

    def energy_meter_paths(self) -> list[str]:
        guid = _Guid.from_buffer_copy(GUID_DEVICE_ENERGY_METER.bytes_le)
        devices = self._setupapi.SetupDiGetClassDevsW(
            ctypes.byref(guid), None, None, DIGCF_PRESENT | DIGCF_DEVICEINTERFACE
        )
        if devices is None or devices == INVALID_HANDLE:
            raise self._error("SetupDiGetClassDevs(GUID_DEVICE_ENERGY_METER)")
        paths = []
        try:
            for index in range(64):
                data = _DeviceInterfaceData()
                data.cb_size = ctypes.sizeof(_DeviceInterfaceData)
                if not self._setupapi.SetupDiEnumDeviceInterfaces(
                    devices, None, ctypes.byref(guid), index, ctypes.byref(data)
                ):
                    break  # ERROR_NO_MORE_ITEMS
                required = ctypes.c_uint32(0)
                self._setupapi.SetupDiGetDeviceInterfaceDetailW(
                    devices, ctypes.byref(data), None, 0, ctypes.byref(required), None
                )
                if not 6 <= required.value <= 65536:
                    raise self._error("SetupDiGetDeviceInterfaceDetail (size)")
                detail = ctypes.create_string_buffer(required.value + 2)
                ctypes.c_uint32.from_buffer(detail).value = DETAIL_DATA_CB_SIZE
                if not self._setupapi.SetupDiGetDeviceInterfaceDetailW(
                    devices, ctypes.byref(data), detail, required.value, None, None
                ):
                    raise self._error("SetupDiGetDeviceInterfaceDetail")
                paths.append(_utf16(detail.raw[DETAIL_DATA_PATH_OFFSET : required.value]))
        finally:
            self._setupapi.SetupDiDestroyDeviceInfoList(devices)
        return paths

    def open_device(self, path: str) -> int:
        handle = self._kernel32.CreateFileW(path, GENERIC_READ, FILE_SHARE_READ_WRITE, None, OPEN_EXISTING, 0, None)
        if handle is None or handle == INVALID_HANDLE:
            raise self._error(f"CreateFile({path})")
        return int(handle)

    def ioctl(self, handle: int, code: int, out_size: int) -> bytes:
        out = ctypes.create_string_buffer(out_size)
        returned = ctypes.c_uint32(0)
        if not self._kernel32.DeviceIoControl(handle, code, None, 0, out, out_size, ctypes.byref(returned), None):
            raise self._error(f"DeviceIoControl({code:#x})")
        return out.raw[: min(returned.value, out_size)]

    def close_device(self, handle: int) -> None:
        self._kernel32.CloseHandle(handle)

    def system_battery_state(self) -> bytes:
        out = ctypes.create_string_buffer(SYSTEM_BATTERY_STATE.size)
        status = self._powrprof.CallNtPowerInformation(SYSTEM_BATTERY_STATE_LEVEL, None, 0, out, len(out))
        if status != 0:
            raise OSError(
                status, f"CallNtPowerInformation(SystemBatteryState) returned NTSTATUS {status & 0xFFFFFFFF:#x}"
            )
        return out.raw


# ---- the sensors ---------------------------------------------------------------------------------


class EmiSensor:
    """Cumulative energy of the CPU's EMI channels (package, else CPU clusters / cores)."""

    name = "emi"

    def __init__(self, api: WindowsPower | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._clock = clock
        self.label = "CPU (EMI)"  # made precise once the channels are known
        self._probed = False
        self._reason: str | None = None
        self._handle: int | None = None
        self._n_channels = 0
        self._picked: tuple[int, ...] = ()

    def _probe(self) -> str | None:
        try:
            api = self._api if self._api is not None else WindowsApi()
            self._api = api
            paths = api.energy_meter_paths()
        except OSError as error:
            return f"the Energy Meter Interface could not be listed ({error})"
        if not paths:
            return "no Energy Meter Interface device (this PC's firmware and drivers expose none)"
        problems = []
        for path in paths:
            try:
                handle = api.open_device(path)
            except OSError as error:
                problems.append(f"{path}: {error}")
                continue
            try:
                version = parse_emi_version(api.ioctl(handle, IOCTL_EMI_GET_VERSION, 2))
                size = parse_metadata_size(api.ioctl(handle, IOCTL_EMI_GET_METADATA_SIZE, 4))
                metadata = parse_emi_metadata(version, api.ioctl(handle, IOCTL_EMI_GET_METADATA, size))
            except (OSError, EmiFormatError) as error:
                api.close_device(handle)
                problems.append(f"{path}: {error}")
                continue
            names = [c.name for c in metadata.channels]
            picked = pick_cpu_channels(names)
            if picked is None or any(metadata.channels[i].unit != EMI_UNIT_PICOWATT_HOURS for i in picked[0]):
                api.close_device(handle)
                problems.append(f"no CPU channel among {', '.join(names) or 'none'}")
                continue
            self._handle, self._n_channels, (self._picked, self.label) = handle, len(names), picked
            return None
        return "no usable Energy Meter Interface channel (" + "; ".join(problems) + ")"

    def unavailable_reason(self) -> str | None:
        if not self._probed:
            self._reason = self._probe()
            self._probed = True
        return self._reason

    def read(self) -> PowerReading:
        if self.unavailable_reason() is not None or self._handle is None or self._api is None:
            raise RuntimeError(self._reason)
        try:
            raw = self._api.ioctl(self._handle, IOCTL_EMI_GET_MEASUREMENT, self._n_channels * EMI_MEASUREMENT_BYTES)
            measured = parse_emi_measurements(raw, self._n_channels)
        except (OSError, EmiFormatError):
            return PowerReading(self.name, self._clock())  # no counters: no number for this interval
        return PowerReading(self.name, self._clock(), counters=tuple(measured[i][0] for i in self._picked))

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        if start.counters is None or end.counters is None:
            return None
        return joules_from_counters(start.counters, end.counters)

    def close(self) -> None:
        if self._handle is not None and self._api is not None:
            self._api.close_device(self._handle)
            self._handle = None


@dataclass(frozen=True)
class BatteryState:
    ac_online: bool
    present: bool
    charging: bool
    discharging: bool
    rate_mw: int | None  # signed: negative while discharging; None when the battery does not say


def parse_battery_state(raw: bytes) -> BatteryState:
    if len(raw) < SYSTEM_BATTERY_STATE.size:
        raise ValueError(f"SYSTEM_BATTERY_STATE needs {SYSTEM_BATTERY_STATE.size} bytes, got {len(raw)}")
    ac, present, charging, discharging, _max, _remaining, rate, _eta, _a1, _a2 = SYSTEM_BATTERY_STATE.unpack_from(raw)
    return BatteryState(
        bool(ac), bool(present), bool(charging), bool(discharging), None if rate == BATTERY_UNKNOWN_RATE else int(rate)
    )


class WindowsBatterySensor:
    """Whole-system power from the battery's discharge rate (CallNtPowerInformation)."""

    name = "battery"
    label = "system (battery discharge)"

    def __init__(self, api: WindowsPower | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._clock = clock

    def _state(self) -> BatteryState:
        if self._api is None:
            self._api = WindowsApi()
        return parse_battery_state(self._api.system_battery_state())

    def unavailable_reason(self) -> str | None:
        try:
            state = self._state()
        except (OSError, ValueError) as error:
            return f"the battery state could not be read ({error})"
        if not state.present:
            return "no battery"
        if state.ac_online or not state.discharging:
            return "the battery is not discharging (on AC power), so it cannot measure power"
        if state.rate_mw is None or state.rate_mw >= 0:
            return "the battery reports no discharge rate"
        return None

    def read(self) -> PowerReading:
        t = self._clock()
        try:
            state = self._state()
        except (OSError, ValueError):
            return PowerReading(self.name, t)
        usable = state.discharging and not state.ac_online and state.rate_mw is not None and state.rate_mw < 0
        return PowerReading(self.name, t, watts=-state.rate_mw / 1000 if usable and state.rate_mw else None)

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        return trapezoid_joules(start, end)
