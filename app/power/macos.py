"""Power on macOS without sudo: IOReport's energy counters, the SMC's system power, the battery.

- IOReport (Apple Silicon): libIOReport's "Energy Model" group has cumulative energy
  channels per block of the chip; the CPU's is "CPU Energy" ("DIE_<n>_CPU Energy" per die
  on Ultra chips), in the unit its label names (mJ, uJ or nJ). A subscription is sampled,
  and IOReportCreateSamplesDelta gives the energy since the previous sample. This is what
  macmon reads; `powermetrics` needs sudo, this does not. A private API: a macOS release
  may change it, which shows up here as "unavailable" with the reason, never as a crash.
- The SMC key "PSTR" (the AppleSMC IOKit user client): the whole system's power in watts,
  Apple Silicon and (where the firmware has the key) Intel.
- The battery (IOKit "AppleSmartBattery"): InstantAmperage (else Amperage, mA, negative
  while discharging) × Voltage (mV), only while on battery. The fallback for Intel Macs.

`MacApi` is the only class that calls the OS (ctypes over CoreFoundation, IOKit and
libIOReport, no extra binary); it hands the sensors plain Python values (channel tuples,
the SMC's type and bytes, a dict of battery properties), so tests give the sensors
constructed replies through the same seam. Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import ctypes
import math
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from app.power.base import PowerReading, trapezoid_joules

ENERGY_GROUP = "Energy Model"
CPU_CHANNEL_SUFFIX = "CPU Energy"
JOULES_PER_UNIT = {"mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9}
NANOJOULES = 10**9
SYSTEM_POWER_KEY = "PSTR"
MAX_PLAUSIBLE_WATTS = 2000.0  # above any Mac's power supply: a misread key, not a reading


@dataclass(frozen=True)
class IOReportItem:
    """One channel of an IOReport sample (or a delta of two samples)."""

    group: str
    subgroup: str
    channel: str
    unit: str
    value: int  # IOReportSimpleGetIntegerValue, in `unit`


def cpu_channels(names: Iterable[str]) -> list[str]:
    return [n for n in names if n.endswith(CPU_CHANNEL_SUFFIX)]


def cpu_energy_joules(items: Iterable[IOReportItem]) -> float:
    """The CPU channels' energy in a delta, converted from each channel's own unit."""
    total = 0.0
    for item in items:
        if item.group != ENERGY_GROUP or not item.channel.endswith(CPU_CHANNEL_SUFFIX):
            continue
        scale = JOULES_PER_UNIT.get(item.unit.strip())
        if scale is None:
            raise ValueError(f"IOReport channel {item.channel!r} has the unit {item.unit!r}, not mJ, uJ or nJ")
        total += item.value * scale
    return total


def parse_smc_value(data_type: str, raw: bytes) -> float:
    """An SMC value by its type: "flt " (little-endian float32 on Apple Silicon), "ui8 " /
    "ui16" / "ui32" (big-endian), or the big-endian fixed-point "spXY" (signed) and "fpXY"
    (unsigned) with X integer and Y fraction bits in hex digits ("sp78", "fpe2")."""
    if data_type == "flt ":
        if len(raw) < 4:
            raise ValueError(f"SMC type 'flt ' needs 4 bytes, got {len(raw)}")
        return float(struct.unpack_from("<f", raw)[0])
    unsigned = {"ui8 ": ">B", "ui16": ">H", "ui32": ">I"}
    if data_type in unsigned:
        fmt = unsigned[data_type]
        if len(raw) < struct.calcsize(fmt):
            raise ValueError(f"SMC type {data_type!r} needs {struct.calcsize(fmt)} bytes, got {len(raw)}")
        return float(struct.unpack_from(fmt, raw)[0])
    if len(data_type) == 4 and data_type[:2] in ("sp", "fp"):
        try:
            fraction_bits = int(data_type[3], 16)
        except ValueError:
            raise ValueError(f"SMC type {data_type!r} is not a fixed-point type") from None
        if len(raw) < 2:
            raise ValueError(f"SMC type {data_type!r} needs 2 bytes, got {len(raw)}")
        value = struct.unpack_from(">h" if data_type[:2] == "sp" else ">H", raw)[0]
        return float(value) / (1 << fraction_bits)
    raise ValueError(f"SMC type {data_type!r} is not one this app reads")


def signed_milliamps(value: int) -> int:
    """Some Macs store a negative current as its unsigned 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


# ---- the OS seam ---------------------------------------------------------------------------------


class MacPower(Protocol):
    """The raw calls the sensors make: `MacApi` on macOS, constructed replies in tests."""

    def energy_model_channels(self) -> list[str]: ...  # subscribes; raises OSError
    def energy_model_delta(self) -> list[IOReportItem]: ...  # since the previous call (first: since subscribing)
    def smc_read(self, key: str) -> tuple[str, bytes]: ...  # (data type FourCC, bytes); raises OSError
    def battery_properties(self) -> dict[str, int | bool]: ...  # AppleSmartBattery's; raises OSError


class _SmcVersion(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_uint8),
        ("minor", ctypes.c_uint8),
        ("build", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8),
        ("release", ctypes.c_uint16),
    ]


class _SmcPLimit(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint16),
        ("length", ctypes.c_uint16),
        ("cpu", ctypes.c_uint32),
        ("gpu", ctypes.c_uint32),
        ("mem", ctypes.c_uint32),
    ]


class _SmcKeyInfo(ctypes.Structure):
    _fields_ = [("data_size", ctypes.c_uint32), ("data_type", ctypes.c_uint32), ("attributes", ctypes.c_uint8)]


class _SmcKeyData(ctypes.Structure):
    """AppleSMC's SMCKeyData_t (80 bytes), the struct IOConnectCallStructMethod passes both ways."""

    _fields_ = [
        ("key", ctypes.c_uint32),
        ("vers", _SmcVersion),
        ("p_limit", _SmcPLimit),
        ("key_info", _SmcKeyInfo),
        ("result", ctypes.c_uint8),
        ("status", ctypes.c_uint8),
        ("data8", ctypes.c_uint8),
        ("data32", ctypes.c_uint32),
        ("bytes", ctypes.c_uint8 * 32),
    ]


SMC_HANDLE_YPC_EVENT = 2  # the user client's selector
SMC_READ_KEY, SMC_GET_KEY_INFO = 5, 9  # data8 commands
SMC_KEY_NOT_FOUND = 132
CF_STRING_ENCODING_UTF8 = 0x08000100
CF_NUMBER_SINT64 = 4
BATTERY_KEYS = ("ExternalConnected", "IsCharging", "InstantAmperage", "Amperage", "Voltage")


def fourcc(code: str) -> int:
    return int.from_bytes(code.encode("ascii"), "big")


class MacApi:
    """libIOReport, IOKit and CoreFoundation through ctypes; every CF object it creates it releases."""

    def __init__(self) -> None:
        self._cf = ctypes.CDLL("/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation")
        self._iokit = ctypes.CDLL("/System/Library/Frameworks/IOKit.framework/IOKit")
        self._system = ctypes.CDLL("/usr/lib/libSystem.B.dylib")
        self._ioreport: Any = None
        p, u32, i64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int64
        self._set(self._cf, "CFStringCreateWithCString", p, [p, ctypes.c_char_p, u32])
        self._set(self._cf, "CFStringGetCString", ctypes.c_bool, [p, ctypes.c_char_p, ctypes.c_long, u32])
        self._set(self._cf, "CFRelease", None, [p])
        self._set(self._cf, "CFDictionaryGetValue", p, [p, p])
        self._set(self._cf, "CFDictionaryGetCount", ctypes.c_long, [p])
        self._set(self._cf, "CFDictionaryCreateMutableCopy", p, [p, ctypes.c_long, p])
        self._set(self._cf, "CFArrayGetCount", ctypes.c_long, [p])
        self._set(self._cf, "CFArrayGetValueAtIndex", p, [p, ctypes.c_long])
        self._set(self._cf, "CFGetTypeID", ctypes.c_ulong, [p])
        self._set(self._cf, "CFNumberGetTypeID", ctypes.c_ulong, [])
        self._set(self._cf, "CFBooleanGetTypeID", ctypes.c_ulong, [])
        self._set(self._cf, "CFNumberGetValue", ctypes.c_bool, [p, ctypes.c_int, p])
        self._set(self._cf, "CFBooleanGetValue", ctypes.c_bool, [p])
        self._set(self._iokit, "IOServiceMatching", p, [ctypes.c_char_p])
        self._set(self._iokit, "IOServiceGetMatchingServices", ctypes.c_int, [u32, p, ctypes.POINTER(u32)])
        self._set(self._iokit, "IOServiceGetMatchingService", u32, [u32, p])
        self._set(self._iokit, "IOIteratorNext", u32, [u32])
        self._set(self._iokit, "IORegistryEntryGetName", ctypes.c_int, [u32, ctypes.c_char_p])
        self._set(self._iokit, "IORegistryEntryCreateCFProperties", ctypes.c_int, [u32, ctypes.POINTER(p), p, u32])
        self._set(self._iokit, "IOServiceOpen", ctypes.c_int, [u32, u32, u32, ctypes.POINTER(u32)])
        self._set(self._iokit, "IOServiceClose", ctypes.c_int, [u32])
        self._set(self._iokit, "IOObjectRelease", ctypes.c_int, [u32])
        self._set(
            self._iokit,
            "IOConnectCallStructMethod",
            ctypes.c_int,
            [u32, u32, p, ctypes.c_size_t, p, ctypes.POINTER(ctypes.c_size_t)],
        )
        self._i64 = i64
        self._subscription: int | None = None
        self._channels: int | None = None  # the subscribed channels (CFMutableDictionary)
        self._previous: int | None = None  # the last sample (CFDictionary)
        self._smc: int | None = None  # the AppleSMC connection

    @staticmethod
    def _set(lib: Any, name: str, restype: Any, argtypes: list[Any]) -> None:
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes

    # -- CoreFoundation plumbing
    def _cfstr(self, text: str) -> int:
        return int(self._cf.CFStringCreateWithCString(None, text.encode(), CF_STRING_ENCODING_UTF8))

    def _str(self, ref: int | None) -> str:
        if not ref:
            return ""
        buffer = ctypes.create_string_buffer(256)
        if not self._cf.CFStringGetCString(ref, buffer, len(buffer), CF_STRING_ENCODING_UTF8):
            return ""
        return buffer.value.decode(errors="replace")

    def _get(self, dictionary: int, key: str) -> int | None:
        cf_key = self._cfstr(key)
        try:
            value = self._cf.CFDictionaryGetValue(dictionary, cf_key)
            return int(value) if value else None
        finally:
            self._cf.CFRelease(cf_key)

    def _python_value(self, ref: int) -> int | bool | None:
        type_id = self._cf.CFGetTypeID(ref)
        if type_id == self._cf.CFBooleanGetTypeID():
            return bool(self._cf.CFBooleanGetValue(ref))
        if type_id == self._cf.CFNumberGetTypeID():
            out = self._i64(0)
            if self._cf.CFNumberGetValue(ref, CF_NUMBER_SINT64, ctypes.byref(out)):
                return int(out.value)
        return None

    def _channel_items(self, sample: int) -> list[int]:
        array = self._get(sample, "IOReportChannels")
        if array is None:
            return []
        return [int(self._cf.CFArrayGetValueAtIndex(array, i)) for i in range(self._cf.CFArrayGetCount(array))]

    # -- IOReport
    def _load_ioreport(self) -> Any:
        if self._ioreport is None:
            lib = ctypes.CDLL("/usr/lib/libIOReport.dylib")
            p = ctypes.c_void_p
            self._set(lib, "IOReportCopyChannelsInGroup", p, [p, p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64])
            self._set(lib, "IOReportCreateSubscription", p, [p, p, ctypes.POINTER(p), ctypes.c_uint64, p])
            self._set(lib, "IOReportCreateSamples", p, [p, p, p])
            self._set(lib, "IOReportCreateSamplesDelta", p, [p, p, p])
            self._set(lib, "IOReportSimpleGetIntegerValue", ctypes.c_int64, [p, ctypes.c_int32])
            for getter in ("Group", "SubGroup", "ChannelName", "UnitLabel"):
                self._set(lib, f"IOReportChannelGet{getter}", p, [p])
            self._ioreport = lib
        return self._ioreport

    def energy_model_channels(self) -> list[str]:
        try:
            lib = self._load_ioreport()
        except OSError as error:
            raise OSError(f"libIOReport could not be loaded ({error})") from None
        group = self._cfstr(ENERGY_GROUP)
        try:
            channels = lib.IOReportCopyChannelsInGroup(group, None, 0, 0, 0)
        finally:
            self._cf.CFRelease(group)
        if not channels:
            raise OSError(f'IOReport has no "{ENERGY_GROUP}" group')
        try:
            names = [self._str(lib.IOReportChannelGetChannelName(c)) for c in self._channel_items(channels)]
            mutable = self._cf.CFDictionaryCreateMutableCopy(None, self._cf.CFDictionaryGetCount(channels), channels)
        finally:
            self._cf.CFRelease(channels)
        subscribed = ctypes.c_void_p()
        subscription = lib.IOReportCreateSubscription(None, mutable, ctypes.byref(subscribed), 0, None)
        if not subscription:
            self._cf.CFRelease(mutable)
            raise OSError("IOReportCreateSubscription failed")
        self._subscription, self._channels = int(subscription), int(mutable)
        self._previous = int(lib.IOReportCreateSamples(subscription, mutable, None) or 0) or None
        return names

    def energy_model_delta(self) -> list[IOReportItem]:
        lib = self._load_ioreport()
        if self._subscription is None:
            raise OSError("not subscribed to IOReport")
        sample = lib.IOReportCreateSamples(self._subscription, self._channels, None)
        if not sample:
            raise OSError("IOReportCreateSamples failed")
        previous, self._previous = self._previous, int(sample)
        if previous is None:
            return []
        delta = lib.IOReportCreateSamplesDelta(previous, sample, None)
        self._cf.CFRelease(previous)
        if not delta:
            raise OSError("IOReportCreateSamplesDelta failed")
        try:
            return [
                IOReportItem(
                    self._str(lib.IOReportChannelGetGroup(item)),
                    self._str(lib.IOReportChannelGetSubGroup(item)),
                    self._str(lib.IOReportChannelGetChannelName(item)),
                    self._str(lib.IOReportChannelGetUnitLabel(item)),
                    int(lib.IOReportSimpleGetIntegerValue(item, 0)),
                )
                for item in self._channel_items(delta)
            ]
        finally:
            self._cf.CFRelease(delta)

    # -- SMC
    def _smc_connection(self) -> int:
        if self._smc is not None:
            return self._smc
        iterator = ctypes.c_uint32(0)
        if (
            self._iokit.IOServiceGetMatchingServices(
                0, self._iokit.IOServiceMatching(b"AppleSMC"), ctypes.byref(iterator)
            )
            != 0
        ):
            raise OSError("no AppleSMC service")
        chosen = 0
        try:
            while service := self._iokit.IOIteratorNext(iterator.value):
                name = ctypes.create_string_buffer(128)
                self._iokit.IORegistryEntryGetName(service, name)
                # Apple Silicon answers on the keys endpoint; Intel Macs have the one service
                if chosen == 0 or name.value == b"AppleSMCKeysEndpoint":
                    if chosen:
                        self._iokit.IOObjectRelease(chosen)
                    chosen = service
                else:
                    self._iokit.IOObjectRelease(service)
        finally:
            self._iokit.IOObjectRelease(iterator.value)
        if not chosen:
            raise OSError("no AppleSMC service")
        connection = ctypes.c_uint32(0)
        task = ctypes.c_uint32.in_dll(self._system, "mach_task_self_").value
        result = self._iokit.IOServiceOpen(chosen, task, 0, ctypes.byref(connection))
        self._iokit.IOObjectRelease(chosen)
        if result != 0:
            raise OSError(f"IOServiceOpen(AppleSMC) returned {result:#x}")
        self._smc = int(connection.value)
        return self._smc

    def _smc_call(self, request: _SmcKeyData) -> _SmcKeyData:
        reply = _SmcKeyData()
        size = ctypes.c_size_t(ctypes.sizeof(reply))
        result = self._iokit.IOConnectCallStructMethod(
            self._smc_connection(),
            SMC_HANDLE_YPC_EVENT,
            ctypes.byref(request),
            ctypes.sizeof(request),
            ctypes.byref(reply),
            ctypes.byref(size),
        )
        if result != 0:
            raise OSError(f"IOConnectCallStructMethod(AppleSMC) returned {result:#x}")
        if reply.result == SMC_KEY_NOT_FOUND:
            raise OSError("the SMC has no such key")
        if reply.result != 0:
            raise OSError(f"the SMC answered error {reply.result}")
        return reply

    def smc_read(self, key: str) -> tuple[str, bytes]:
        request = _SmcKeyData(key=fourcc(key), data8=SMC_GET_KEY_INFO)
        info = self._smc_call(request).key_info
        size = min(int(info.data_size), 32)
        request = _SmcKeyData(key=fourcc(key), data8=SMC_READ_KEY)
        request.key_info.data_size = size
        reply = self._smc_call(request)
        return int(info.data_type).to_bytes(4, "big").decode("ascii", errors="replace"), bytes(reply.bytes)[:size]

    # -- battery
    def battery_properties(self) -> dict[str, int | bool]:
        service = self._iokit.IOServiceGetMatchingService(0, self._iokit.IOServiceMatching(b"AppleSmartBattery"))
        if not service:
            raise OSError("no AppleSmartBattery service (no battery)")
        properties = ctypes.c_void_p()
        try:
            result = self._iokit.IORegistryEntryCreateCFProperties(service, ctypes.byref(properties), None, 0)
            if result != 0 or not properties.value:
                raise OSError("the battery's properties could not be read")
        finally:
            self._iokit.IOObjectRelease(service)
        try:
            found: dict[str, int | bool] = {}
            for key in BATTERY_KEYS:
                ref = self._get(properties.value, key)
                value = self._python_value(ref) if ref else None
                if value is not None:
                    found[key] = value
            return found
        finally:
            self._cf.CFRelease(properties)


# ---- the sensors ---------------------------------------------------------------------------------


def _default_api(api: MacPower | None) -> MacPower:
    return api if api is not None else MacApi()


class IOReportSensor:
    """The CPU's energy from IOReport's Energy Model (Apple Silicon), summed over its dies."""

    name = "ioreport"
    label = "CPU (Apple IOReport energy)"

    def __init__(self, api: MacPower | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._clock = clock
        self._probed = False
        self._reason: str | None = None
        self._total_nj = 0  # energy since subscribing, summed from the deltas (an int: exact, never wraps)
        self._lock = threading.Lock()  # read() keeps state: one delta at a time

    def _probe(self) -> str | None:
        try:
            self._api = _default_api(self._api)
            names = self._api.energy_model_channels()
        except OSError as error:
            return f"IOReport energy counters unavailable ({error})"
        if not cpu_channels(names):
            return f'IOReport\'s "{ENERGY_GROUP}" has no CPU energy channel (not an Apple Silicon Mac)'
        return None

    def unavailable_reason(self) -> str | None:
        if not self._probed:
            self._reason = self._probe()
            self._probed = True
        return self._reason

    def read(self) -> PowerReading:
        if self.unavailable_reason() is not None or self._api is None:
            raise RuntimeError(self._reason)
        with self._lock:
            try:
                joules = cpu_energy_joules(self._api.energy_model_delta())
            except (OSError, ValueError):
                return PowerReading(self.name, self._clock())  # no counters: no number for this interval
            self._total_nj += round(joules * NANOJOULES)
            return PowerReading(self.name, self._clock(), counters=(self._total_nj,))

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        if not start.counters or not end.counters:
            return None
        return (end.counters[0] - start.counters[0]) / NANOJOULES


class SmcPowerSensor:
    """The whole system's power from the SMC key PSTR (watts, instantaneous)."""

    name = "smc"
    label = "system (SMC total power)"

    def __init__(self, api: MacPower | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._clock = clock

    def _watts(self) -> float:
        self._api = _default_api(self._api)
        watts = parse_smc_value(*self._api.smc_read(SYSTEM_POWER_KEY))
        if not (math.isfinite(watts) and 0 <= watts <= MAX_PLAUSIBLE_WATTS):
            raise ValueError(f"the SMC's {SYSTEM_POWER_KEY} reads {watts} W, not a system power")
        return watts

    def unavailable_reason(self) -> str | None:
        try:
            self._watts()
        except (OSError, ValueError) as error:
            return f"no SMC system power ({SYSTEM_POWER_KEY}: {error})"
        return None

    def read(self) -> PowerReading:
        try:
            return PowerReading(self.name, self._clock(), watts=self._watts())
        except (OSError, ValueError):
            return PowerReading(self.name, self._clock())

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        return trapezoid_joules(start, end)


def battery_watts(properties: dict[str, int | bool]) -> float | None:
    """Discharge power from AppleSmartBattery's properties, None unless on battery and discharging."""
    if properties.get("ExternalConnected") is True or properties.get("IsCharging") is True:
        return None
    current = properties.get("InstantAmperage", properties.get("Amperage"))
    voltage = properties.get("Voltage")
    if isinstance(current, bool) or isinstance(voltage, bool) or current is None or voltage is None:
        return None
    milliamps = signed_milliamps(int(current))
    if milliamps >= 0 or voltage <= 0:
        return None
    return -milliamps * int(voltage) / 1e6  # mA × mV = µW


class MacBatterySensor:
    """Whole-system power from a discharging battery (IOKit AppleSmartBattery)."""

    name = "battery"
    label = "system (battery discharge)"

    def __init__(self, api: MacPower | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._clock = clock

    def _properties(self) -> dict[str, int | bool]:
        self._api = _default_api(self._api)
        return self._api.battery_properties()

    def unavailable_reason(self) -> str | None:
        try:
            properties = self._properties()
        except OSError as error:
            return f"no battery reading ({error})"
        if battery_watts(properties) is None:
            return "the battery is not discharging (on AC power), so it cannot measure power"
        return None

    def read(self) -> PowerReading:
        try:
            watts = battery_watts(self._properties())
        except OSError:
            watts = None
        return PowerReading(self.name, self._clock(), watts=watts)

    def joules_between(self, start: PowerReading, end: PowerReading) -> float | None:
        return trapezoid_joules(start, end)
