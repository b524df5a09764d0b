"""Start-up checks: can this machine run this build, and does it run it natively?

Fatal problems get a dialog and the app exits, instead of dying later inside numpy, Qt or a
kernel with an import error or an illegal instruction:
- an x86-64 CPU without x86-64-v2 (SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B). numpy
  2.4+ is built with that level as its baseline (`__cpu_baseline__ == ['X86_V2']`) and refuses
  to import without it. Our own kernels need less: their baseline is plain x86-64 / ARMv8.0
  and every SIMD tier is chosen at run time (tmac_core/kernels/sources.py). ARM64 has no
  such gap: NEON is part of ARMv8.0.
- Windows older than Windows 10 version 1809 (build 17763): the oldest Windows 10 that Qt 6
  supports, and the one that brought the energy meter interface's v2 metadata.
- macOS older than the app bundle's LSMinimumSystemVersion (Finder enforces it, a start from
  a terminal does not); the installer's Info.plist owns that number, this only reads it.
A warning, after which the app runs: an x86-64 build emulated on an ARM64 machine (Windows on
ARM's Prism: IsWow64Process2 names ARM64 as the native machine; macOS: Rosetta 2's
sysctl.proc_translated is 1). It works, several times slower than the native ARM64 build.

`probe_machine()` gathers the facts through `MachineProbe`, the only class that asks the OS
(ctypes, /proc, sysctl); `problems_for(facts)` is pure; `check_platform()` shows each
problem in a QMessageBox and says whether to go on. Tests feed constructed facts and replies.
Must not import tmac_core (it runs before anything native is loaded); Qt only to show dialogs.
"""

from __future__ import annotations

import ctypes
import platform
import plistlib
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PySide6.QtWidgets import QMessageBox, QWidget

X86_64_V2 = ("sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16")
FEATURE_NAMES = {
    "sse3": "SSE3", "ssse3": "SSSE3", "sse4_1": "SSE4.1", "sse4_2": "SSE4.2", "popcnt": "POPCNT",
    "cx16": "CMPXCHG16B",
}  # fmt: skip
# /proc/cpuinfo spells SSE3 "pni" (Prescott New Instructions)
CPUINFO_ALIASES = {"pni": "sse3"}
# IsProcessorFeaturePresent; Windows has no constant for POPCNT (every SSE4.2 CPU has it)
WINDOWS_FEATURES = {"sse3": 13, "cx16": 14, "ssse3": 36, "sse4_1": 37, "sse4_2": 38}
MACOS_FEATURE_SYSCTLS = {
    "sse3": "hw.optional.sse3", "ssse3": "hw.optional.supplementalsse3", "sse4_1": "hw.optional.sse4_1",
    "sse4_2": "hw.optional.sse4_2",
}  # fmt: skip
MIN_WINDOWS_BUILD = 17763
IMAGE_FILE_MACHINE_ARM64 = 0xAA64
# Where the native builds are offered; None until the project publishes a download page, and
# then the warning links to it.
DOWNLOADS_URL: str | None = None


@dataclass(frozen=True)
class MachineFacts:
    platform: str  # sys.platform
    process_arch: str  # what this Python was built for: "x86_64", "arm64", ...
    x86_features: frozenset[str] | None  # the X86_64_V2 names present; None when unknown or not x86
    windows_build: int | None = None
    macos_version: tuple[int, ...] | None = None
    macos_minimum: tuple[int, ...] | None = None  # the bundle's LSMinimumSystemVersion
    emulated_on_arm64: bool = False


@dataclass(frozen=True)
class Problem:
    fatal: bool
    title: str
    text: str  # plain sentences for the dialog
    link: str | None = None  # a web page the dialog offers


def normalise_arch(name: str) -> str:
    name = name.lower()
    if name in ("amd64", "x86_64", "x64", "win-amd64") or name.endswith(("x86_64", "amd64")):
        return "x86_64"
    if name in ("arm64", "aarch64", "win-arm64") or name.endswith(("arm64", "aarch64")):
        return "arm64"
    return name


def cpuinfo_features(text: str) -> frozenset[str]:
    """The X86_64_V2 features named on /proc/cpuinfo's first "flags" line."""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = {CPUINFO_ALIASES.get(f, f) for f in line.partition(":")[2].split()}
            return frozenset(f for f in X86_64_V2 if f in flags)
    return frozenset()


def version_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        return None


class MachineProbe:
    """The OS questions, one method each; tests replace the callables it is built with."""

    def __init__(
        self,
        read_cpuinfo: Callable[[], str] | None = None,
        windows_feature: Callable[[int], bool] | None = None,
        windows_native_machine: Callable[[], int | None] | None = None,
        sysctl_int: Callable[[str], int | None] | None = None,
        bundle_info_plist: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.read_cpuinfo = read_cpuinfo or (lambda: Path("/proc/cpuinfo").read_text(errors="replace"))
        self.windows_feature = windows_feature or _windows_feature
        self.windows_native_machine = windows_native_machine or _windows_native_machine
        self.sysctl_int = sysctl_int or _sysctl_int
        self.bundle_info_plist = bundle_info_plist or _bundle_info_plist

    def x86_features(self, platform_name: str) -> frozenset[str] | None:
        try:
            if platform_name.startswith("linux"):
                return cpuinfo_features(self.read_cpuinfo())
            if platform_name == "win32":
                present = {name for name, code in WINDOWS_FEATURES.items() if self.windows_feature(code)}
                return frozenset(present | {"popcnt"})  # not askable; implied by SSE4.2 in practice
            if platform_name == "darwin":
                present = {name for name, key in MACOS_FEATURE_SYSCTLS.items() if self.sysctl_int(key)}
                return frozenset(present | {"popcnt", "cx16"})  # every Intel Mac CPU has both
        except OSError:
            return None
        return None

    def emulated_on_arm64(self, platform_name: str, process_arch: str) -> bool:
        if process_arch != "x86_64":
            return False
        if platform_name == "win32":
            return self.windows_native_machine() == IMAGE_FILE_MACHINE_ARM64
        if platform_name == "darwin":
            return self.sysctl_int("sysctl.proc_translated") == 1
        return False

    def macos_minimum(self) -> tuple[int, ...] | None:
        info = self.bundle_info_plist()
        minimum = info.get("LSMinimumSystemVersion") if info else None
        return version_tuple(minimum) if isinstance(minimum, str) else None


def probe_machine(probe: MachineProbe | None = None, platform_name: str = sys.platform) -> MachineFacts:
    probe = probe or MachineProbe()
    # Windows: the interpreter's own build ("win-amd64" stays that under emulation); macOS and
    # Linux: uname, which Rosetta answers as x86_64 even for a universal2 interpreter
    arch = normalise_arch(sysconfig.get_platform() if platform_name == "win32" else platform.machine())
    windows_build = None
    if platform_name == "win32":
        windows_build = int(getattr(sys, "getwindowsversion")().build)  # noqa: B009  (win32 only)
    macos_version = version_tuple(platform.mac_ver()[0]) if platform_name == "darwin" else None
    return MachineFacts(
        platform=platform_name,
        process_arch=arch,
        x86_features=probe.x86_features(platform_name) if arch == "x86_64" else None,
        windows_build=windows_build,
        macos_version=macos_version,
        macos_minimum=probe.macos_minimum() if platform_name == "darwin" else None,
        emulated_on_arm64=probe.emulated_on_arm64(platform_name, arch),
    )


def problems_for(facts: MachineFacts) -> list[Problem]:
    """Fatal problems first, then warnings."""
    problems = []
    if facts.x86_features is not None:
        missing = [FEATURE_NAMES[f] for f in X86_64_V2 if f not in facts.x86_features]
        if missing:
            problems.append(
                Problem(
                    True,
                    "This processor is too old for T-MAC Chat",
                    "T-MAC Chat needs an x86-64 processor with SSE4.2 (the x86-64-v2 level: Intel since "
                    "2008, AMD since 2011). This one lacks " + ", ".join(missing) + ".",
                )
            )
    if facts.windows_build is not None and facts.windows_build < MIN_WINDOWS_BUILD:
        problems.append(
            Problem(
                True,
                "This Windows is too old for T-MAC Chat",
                f"T-MAC Chat needs Windows 10 version 1809 (build {MIN_WINDOWS_BUILD}) or newer; "
                f"this is build {facts.windows_build}.",
            )
        )
    if facts.macos_version and facts.macos_minimum and facts.macos_version < facts.macos_minimum:
        need = ".".join(map(str, facts.macos_minimum))
        have = ".".join(map(str, facts.macos_version))
        problems.append(
            Problem(
                True, "This macOS is too old for T-MAC Chat", f"T-MAC Chat needs macOS {need} or newer; this is {have}."
            )
        )
    if facts.emulated_on_arm64:
        how = "Windows' x64 emulation" if facts.platform == "win32" else "Rosetta 2"
        where = f" from {DOWNLOADS_URL}" if DOWNLOADS_URL else " from the same place as this one"
        problems.append(
            Problem(
                False,
                "T-MAC Chat is running emulated",
                f"This is the x64 build of T-MAC Chat, running on an ARM64 processor through {how}. "
                f"It works, but answers come several times slower than with the native ARM64 build. "
                f"Install the ARM64 build{where} for full speed.",
                DOWNLOADS_URL,
            )
        )
    return sorted(problems, key=lambda p: not p.fatal)


def problem_box(problem: Problem, parent: QWidget | None = None) -> QMessageBox:
    """The dialog for one problem (not shown: check_platform shows it)."""
    import html

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    icon = QMessageBox.Icon.Critical if problem.fatal else QMessageBox.Icon.Warning
    box = QMessageBox(icon, problem.title, problem.text, QMessageBox.StandardButton.NoButton, parent)
    box.setObjectName("platformProblem")
    if problem.link:
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(
            f'{html.escape(problem.text)}<br><br><a href="{html.escape(problem.link)}">{html.escape(problem.link)}</a>'
        )
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    box.addButton(QMessageBox.StandardButton.Close if problem.fatal else QMessageBox.StandardButton.Ok)
    return box


def check_platform(
    facts: MachineFacts | None = None,
    show: Callable[[QMessageBox], object] | None = None,
    parent: QWidget | None = None,
) -> bool:
    """Shows every problem (a QApplication must exist); False when the app must not start."""
    problems = problems_for(facts if facts is not None else probe_machine())
    for problem in problems:
        print(f"T-MAC Chat: {problem.title}. {problem.text}", file=sys.stderr)
    for problem in problems:
        box = problem_box(problem, parent)
        (show or (lambda b: b.exec()))(box)
        if problem.fatal:
            return False  # one reason to stop is enough
    return True


# ---- the OS calls (ctypes), each a small function the probe is built with -----------------------


def _windows_feature(code: int) -> bool:
    kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009  (win32 only)
    return bool(kernel32.IsProcessorFeaturePresent(code))


def _windows_native_machine() -> int | None:
    """IsWow64Process2's native machine (Windows 10 1709+); None where the call does not exist."""
    kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009  (win32 only)
    function = getattr(kernel32, "IsWow64Process2", None)
    if function is None:
        return None
    kernel32.GetCurrentProcess.restype = ctypes.c_void_p
    function.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_ushort), ctypes.POINTER(ctypes.c_ushort)]
    process_machine, native_machine = ctypes.c_ushort(0), ctypes.c_ushort(0)
    if not function(kernel32.GetCurrentProcess(), ctypes.byref(process_machine), ctypes.byref(native_machine)):
        return None
    return int(native_machine.value)


def _sysctl_int(name: str) -> int | None:
    """sysctlbyname for an integer; None when the name does not exist (e.g. proc_translated on Intel)."""
    libc = ctypes.CDLL("/usr/lib/libSystem.B.dylib")
    value, size = ctypes.c_int(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int))  # these sysctls are ints
    if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return int(value.value)


def _bundle_info_plist() -> Mapping[str, Any] | None:
    """The .app's Info.plist when running from a bundle (…/Contents/MacOS/<exe>)."""
    contents = Path(sys.executable).resolve().parent.parent
    plist = contents / "Info.plist"
    if contents.name != "Contents" or not plist.is_file():
        return None
    try:
        with plist.open("rb") as file:
            data = plistlib.load(file)
    except (OSError, plistlib.InvalidFileException, ValueError):
        return None
    return data if isinstance(data, dict) else None
