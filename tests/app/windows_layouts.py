"""The Windows struct layouts and constants the ctypes code assumes, printed in the format of
tests/app/c/windows_layouts.c, which prints the same keys from the Windows headers; .ci/cross.sh
runs that one under wine and fails on any difference.

    python -m tests.app.windows_layouts
"""

from __future__ import annotations

import ctypes
import struct

from app import platform_checks as P
from app.power import windows as W


def layouts() -> dict[str, int]:
    data = W._DeviceInterfaceData
    return {
        "SP_DEVICE_INTERFACE_DATA.size": ctypes.sizeof(data),
        "SP_DEVICE_INTERFACE_DATA.flags": data.flags.offset,
        "SP_DEVICE_INTERFACE_DATA.reserved": data.reserved.offset,
        "SP_DEVICE_INTERFACE_DETAIL_DATA_W.cbSize": W.DETAIL_DATA_CB_SIZE,
        "SP_DEVICE_INTERFACE_DETAIL_DATA_W.DevicePath": W.DETAIL_DATA_PATH_OFFSET,
        "SYSTEM_BATTERY_STATE.size": W.SYSTEM_BATTERY_STATE.size,
        "SYSTEM_BATTERY_STATE.Rate": struct.calcsize("<4B4xII"),  # the fields before Rate
        "SystemBatteryState": W.SYSTEM_BATTERY_STATE_LEVEL,
        "DIGCF_PRESENT|DIGCF_DEVICEINTERFACE": W.DIGCF_PRESENT | W.DIGCF_DEVICEINTERFACE,
        "GENERIC_READ": W.GENERIC_READ,
        "OPEN_EXISTING": W.OPEN_EXISTING,
        "CTL_CODE(FILE_DEVICE_UNKNOWN,3,METHOD_BUFFERED,FILE_READ_ACCESS)": W.IOCTL_EMI_GET_MEASUREMENT,
        "PF_SSE3_INSTRUCTIONS_AVAILABLE": P.WINDOWS_FEATURES["sse3"],
        "PF_COMPARE_EXCHANGE128": P.WINDOWS_FEATURES["cx16"],
        "PF_SSSE3_INSTRUCTIONS_AVAILABLE": P.WINDOWS_FEATURES["ssse3"],
        "PF_SSE4_1_INSTRUCTIONS_AVAILABLE": P.WINDOWS_FEATURES["sse4_1"],
        "PF_SSE4_2_INSTRUCTIONS_AVAILABLE": P.WINDOWS_FEATURES["sse4_2"],
        "IMAGE_FILE_MACHINE_ARM64": P.IMAGE_FILE_MACHINE_ARM64,
    }


if __name__ == "__main__":
    for key, value in layouts().items():
        print(key, value)
