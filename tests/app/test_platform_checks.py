"""Start-up checks (app/platform_checks.py): the OS answers the probe turns into facts, the
problems the facts give, and the dialogs (offscreen), on constructed replies."""

from __future__ import annotations

import pytest

from app import platform_checks as P

V2 = frozenset(P.X86_64_V2)
CPUINFO_ZEN = (
    "processor\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 fma cx16 sse4_1 sse4_2 popcnt avx avx2\n\nprocessor\t: 1\n"
)
CPUINFO_CORE2 = "flags\t\t: fpu sse sse2 pni ssse3 cx16 sse4_1 lahf_lm\n"


def facts(**changes: object) -> P.MachineFacts:
    base = P.MachineFacts(platform="linux", process_arch="x86_64", x86_features=V2)
    return P.MachineFacts(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_linux_cpuinfo_flags():
    assert P.cpuinfo_features(CPUINFO_ZEN) == V2
    assert P.cpuinfo_features(CPUINFO_CORE2) == V2 - {"sse4_2", "popcnt"}
    assert P.MachineProbe(read_cpuinfo=lambda: CPUINFO_ZEN).x86_features("linux") == V2


def test_windows_replies():
    present = {13, 14, 36, 37}  # no PF_SSE4_2_INSTRUCTIONS_AVAILABLE (38)
    probe = P.MachineProbe(windows_feature=lambda code: code in present, windows_native_machine=lambda: 0xAA64)
    assert probe.x86_features("win32") == V2 - {"sse4_2"}
    # an x64 build on an ARM64 machine is emulated; the native ARM64 build is not
    assert probe.emulated_on_arm64("win32", "x86_64")
    assert not probe.emulated_on_arm64("win32", "arm64")
    on_intel = P.MachineProbe(windows_native_machine=lambda: 0x8664)
    assert not on_intel.emulated_on_arm64("win32", "x86_64")
    no_api = P.MachineProbe(windows_native_machine=lambda: None)  # Windows before 10 1709
    assert not no_api.emulated_on_arm64("win32", "x86_64")


def test_macos_replies():
    sysctls = {"sysctl.proc_translated": 1, "hw.optional.sse4_2": 1, "hw.optional.sse4_1": 1}
    probe = P.MachineProbe(
        sysctl_int=sysctls.get, bundle_info_plist=lambda: {"LSMinimumSystemVersion": "13.0", "CFBundleName": "x"}
    )
    assert probe.emulated_on_arm64("darwin", "x86_64")
    assert probe.macos_minimum() == (13, 0)
    assert probe.x86_features("darwin") == V2 - {"sse3", "ssse3"}
    intel = P.MachineProbe(sysctl_int=lambda name: None, bundle_info_plist=lambda: None)  # no such sysctl
    assert not intel.emulated_on_arm64("darwin", "x86_64") and intel.macos_minimum() is None


def test_architecture_names():
    assert [P.normalise_arch(n) for n in ("AMD64", "win-amd64", "x86_64", "win-arm64", "ARM64", "aarch64")] == [
        "x86_64",
        "x86_64",
        "x86_64",
        "arm64",
        "arm64",
        "arm64",
    ]


def test_this_machine_probes_without_error():
    here = P.probe_machine()
    assert here.platform and here.process_arch
    assert not here.emulated_on_arm64


def test_problems():
    assert P.problems_for(facts()) == []
    assert P.problems_for(facts(process_arch="arm64", x86_features=None)) == []
    old_cpu = P.problems_for(facts(x86_features=V2 - {"sse4_2", "popcnt"}))
    assert len(old_cpu) == 1 and old_cpu[0].fatal and "lacks SSE4.2, POPCNT" in old_cpu[0].text
    old_windows = P.problems_for(facts(platform="win32", windows_build=14393))
    assert old_windows[0].fatal and "build 14393" in old_windows[0].text
    assert P.problems_for(facts(platform="win32", windows_build=26100)) == []
    old_mac = P.problems_for(facts(platform="darwin", macos_version=(12, 7, 4), macos_minimum=(13, 0)))
    assert old_mac[0].fatal and "macOS 13.0" in old_mac[0].text and "12.7.4" in old_mac[0].text
    emulated = P.problems_for(facts(platform="win32", windows_build=26100, emulated_on_arm64=True))
    assert len(emulated) == 1 and not emulated[0].fatal and "ARM64 build" in emulated[0].text
    both = P.problems_for(facts(platform="darwin", emulated_on_arm64=True, x86_features=frozenset()))
    assert [p.fatal for p in both] == [True, False]  # the fatal one first
    assert "Rosetta 2" in both[1].text


def test_dialogs_offscreen(qtbot, monkeypatch, capsys):
    from PySide6.QtWidgets import QMessageBox

    shown: list[QMessageBox] = []
    assert P.check_platform(facts(), show=shown.append)
    assert shown == []

    emulated = facts(platform="win32", windows_build=26100, emulated_on_arm64=True)
    monkeypatch.setattr(P, "DOWNLOADS_URL", "https://example.org/downloads")
    assert P.check_platform(emulated, show=shown.append)  # a warning: the app goes on
    box = shown.pop()
    assert box.icon() == QMessageBox.Icon.Warning and "example.org/downloads" in box.text()
    assert "x64 emulation" in box.text()

    fatal = facts(platform="darwin", emulated_on_arm64=True, x86_features=frozenset({"sse3"}))
    assert not P.check_platform(fatal, show=shown.append)
    assert len(shown) == 1, "the app stops at the first fatal problem"
    assert shown[0].icon() == QMessageBox.Icon.Critical and "SSE4.2" in shown[0].text()
    assert "too old" in capsys.readouterr().err  # also said on stderr, for a terminal start


@pytest.mark.parametrize("build", [17762, 17763])
def test_windows_build_boundary(build):
    found = P.problems_for(facts(platform="win32", windows_build=build))
    assert bool(found) == (build < P.MIN_WINDOWS_BUILD)


def test_the_app_does_not_start_after_a_fatal_problem(qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app import main

    shown: list[str] = []
    monkeypatch.setattr(P, "probe_machine", lambda: facts(x86_features=frozenset()))
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box.text()) or 0)
    assert main.run([]) == 3
    assert len(shown) == 1 and "SSE4.2" in shown[0]
