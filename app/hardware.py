"""What this machine and this installation are: CPU model, cores, instruction sets, kernel tier,
versions, memory bandwidth, the embedded model's file.

With app/modelfile.py this is one of the two app modules allowed to reach into tmac_core
below its public API (here `tmac_core.kernels` for the CPU features), so that app/ui never
does. Pure Python: must not import PySide6.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tmac_core.machine import cpu_model_name  # noqa: F401  (the app reads it from here)

BANDWIDTH_BUFFER_BYTES = 128 * 1024 * 1024  # per side; far above any L3 a desktop CPU has today
BANDWIDTH_MAX_THREADS = 8


@dataclass(frozen=True)
class InstructionSets:
    arch: str  # "x86_64", "arm64", ...
    features: tuple[str, ...]  # the detected flags that are set ("avx2", "fma", "neon", ...)
    available: tuple[str, ...]  # kernel tiers this CPU and OS can run ("generic", "avx2", ...)
    active: str  # the tier in use (TMAC_KERNELS may force one)


def logical_cores() -> int:
    return os.cpu_count() or 1


def physical_cores() -> int | None:
    """Physical cores, or None when the OS does not say (SMT siblings counted once)."""
    try:
        import psutil  # optional

        count = psutil.cpu_count(logical=False)
        if count:
            return int(count)
    except ImportError:
        pass
    if sys.platform.startswith("linux"):
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
        pairs = set()
        for block in text.split("\n\n"):
            physical = re.search(r"^physical id\s*:\s*(\d+)", block, re.MULTILINE)
            core = re.search(r"^core id\s*:\s*(\d+)", block, re.MULTILINE)
            if physical and core:
                pairs.add((physical.group(1), core.group(1)))
        return len(pairs) or None
    return None


def _windows_memory_status():  # MEMORYSTATUSEX, or None
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return status
    return None


def _macos_sysctl_int(name: str) -> int | None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    value = ctypes.c_uint64(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return int(value.value) if size.value in (4, 8) else None  # little-endian: a 4-byte int reads right too


def total_memory_bytes() -> int | None:
    """Physical RAM, or None if the OS does not say."""
    try:
        if sys.platform == "win32":
            status = _windows_memory_status()
            return int(status.ullTotalPhys) if status is not None else None
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError):
        return None


def available_memory_bytes() -> int | None:
    """Memory the system can give a process without swapping, or None if the OS does not say.

    Linux: MemAvailable (free plus what the kernel can reclaim). Windows: the available physical
    memory of GlobalMemoryStatusEx. macOS: free plus speculative pages (sysctl vm.page_free_count,
    vm.page_speculative_count): inactive pages are reclaimable too but not counted, so the figure
    errs low, which only makes the automatic context and a side-by-side model switch more careful.
    """
    try:
        if sys.platform == "win32":
            status = _windows_memory_status()
            return int(status.ullAvailPhys) if status is not None else None
        if sys.platform == "darwin":
            free = _macos_sysctl_int("vm.page_free_count")
            speculative = _macos_sysctl_int("vm.page_speculative_count") or 0
            return None if free is None else (free + speculative) * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def machine_label() -> str:
    """CPU model plus logical cores: what a measurement is keyed by ("Apple M2 (8 threads)")."""
    return f"{cpu_model_name()} ({logical_cores()} threads)"


def instruction_sets() -> InstructionSets:
    """The runtime's own CPU detection (CPUID + XGETBV / getauxval / sysctl), as the kernels see it."""
    from tmac_core import kernels

    features = kernels.cpu_features()
    flags = tuple(
        name for name, value in features.items() if value is True and not name.startswith("os_") and name != "osxsave"
    )
    return InstructionSets(
        arch=str(features.get("arch", platform.machine())),
        features=flags,
        available=tuple(kernels.available_tiers()),
        active=str(kernels.active_tier()),
    )


def versions() -> dict[str, str]:
    """Versions worth putting in a bug report."""
    found = {
        "Python": platform.python_version(),
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }
    try:
        import tmac_core

        found["tmac_core"] = str(tmac_core.__version__)
    except ImportError:
        pass
    from importlib import metadata

    for dist in ("tmac-chat", "PySide6", "numpy", "huggingface_hub"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def embedded_model_path() -> Path | None:
    """The SmolLM2-135M file the runtime loads for source "default", or None if it is not installed."""
    try:
        from tmac_core import default_model_path

        return Path(default_model_path())
    except Exception:  # noqa: BLE001 - ModelLoadError when missing; ImportError before the engine exists
        return None


def measure_memory_bandwidth(
    buffer_bytes: int = BANDWIDTH_BUFFER_BYTES, threads: int | None = None, repeats: int = 3
) -> float:
    """Copy bandwidth in bytes/s (read + written), best of `repeats`, with numpy on several threads.

    Decode reads every weight once per token from RAM on all kernel threads, so a multi-threaded
    streaming copy (numpy releases the GIL while copying) is the closest cheap stand-in. Takes
    about 0.1–0.5 s and 2 × `buffer_bytes` of memory for that time.
    """
    import numpy as np

    threads = max(1, min(threads or logical_cores(), BANDWIDTH_MAX_THREADS))
    source = np.ones(buffer_bytes // 8, dtype=np.float64)  # written once so every page is mapped
    target = np.zeros_like(source)
    bounds = np.linspace(0, source.size, threads + 1).astype(np.int64)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def copy(part: slice) -> None:
        np.copyto(target[part], source[part])

    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(copy, slices))
            best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / max(best, 1e-9)
