/* Prints, from the Windows SDK headers (mingw-w64's), the struct sizes and offsets and the
 * constants that app/power/windows.py and app/platform_checks.py write out by hand for ctypes.
 * .ci/cross.sh runs it under wine and compares its output with tests/app/windows_layouts.py,
 * the same keys computed from the Python side. */
#include <stddef.h>
#include <stdio.h>
#include <windows.h>
#include <setupapi.h>
#include <powrprof.h>

#define SHOW(name, value) printf("%s %lld\n", name, (long long)(value))

int main(void) {
    SHOW("SP_DEVICE_INTERFACE_DATA.size", sizeof(SP_DEVICE_INTERFACE_DATA));
    SHOW("SP_DEVICE_INTERFACE_DATA.flags", offsetof(SP_DEVICE_INTERFACE_DATA, Flags));
    SHOW("SP_DEVICE_INTERFACE_DATA.reserved", offsetof(SP_DEVICE_INTERFACE_DATA, Reserved));
    SHOW("SP_DEVICE_INTERFACE_DETAIL_DATA_W.cbSize", sizeof(SP_DEVICE_INTERFACE_DETAIL_DATA_W));
    SHOW("SP_DEVICE_INTERFACE_DETAIL_DATA_W.DevicePath", offsetof(SP_DEVICE_INTERFACE_DETAIL_DATA_W, DevicePath));
    SHOW("SYSTEM_BATTERY_STATE.size", sizeof(SYSTEM_BATTERY_STATE));
    SHOW("SYSTEM_BATTERY_STATE.Rate", offsetof(SYSTEM_BATTERY_STATE, Rate));
    SHOW("SystemBatteryState", SystemBatteryState);
    SHOW("DIGCF_PRESENT|DIGCF_DEVICEINTERFACE", DIGCF_PRESENT | DIGCF_DEVICEINTERFACE);
    SHOW("GENERIC_READ", GENERIC_READ);
    SHOW("OPEN_EXISTING", OPEN_EXISTING);
    SHOW("CTL_CODE(FILE_DEVICE_UNKNOWN,3,METHOD_BUFFERED,FILE_READ_ACCESS)",
         CTL_CODE(FILE_DEVICE_UNKNOWN, 3, METHOD_BUFFERED, FILE_READ_ACCESS));
    SHOW("PF_SSE3_INSTRUCTIONS_AVAILABLE", PF_SSE3_INSTRUCTIONS_AVAILABLE);
    SHOW("PF_COMPARE_EXCHANGE128", PF_COMPARE_EXCHANGE128);
    SHOW("PF_SSSE3_INSTRUCTIONS_AVAILABLE", PF_SSSE3_INSTRUCTIONS_AVAILABLE);
    SHOW("PF_SSE4_1_INSTRUCTIONS_AVAILABLE", PF_SSE4_1_INSTRUCTIONS_AVAILABLE);
    SHOW("PF_SSE4_2_INSTRUCTIONS_AVAILABLE", PF_SSE4_2_INSTRUCTIONS_AVAILABLE);
    SHOW("IMAGE_FILE_MACHINE_ARM64", IMAGE_FILE_MACHINE_ARM64);
    return 0;
}
