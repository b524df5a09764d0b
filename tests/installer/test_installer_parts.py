"""The installer helpers that run on every build machine: the icon containers, the bundle's
trimming rule, the architecture read from a binary's header, the version resource."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from installer import layout
from installer.bundle import has_debug_info, write_version_resource
from installer.check_bundle import binary_arch, find_extension, runs_natively

REPO = Path(__file__).resolve().parents[2]


def test_the_built_extensions_have_this_machines_architecture():
    for module in ("tmac_core/kernels/_kernels", "tmac_core/models/_llama", "tmac_core/loading/_fastquant"):
        path = find_extension(REPO, module)
        assert path is not None, module
        assert binary_arch(path) == layout.machine()


def test_architecture_from_pe_and_macho_headers(tmp_path):
    pe = bytearray(512)
    pe[:2] = b"MZ"
    struct.pack_into("<I", pe, 0x3C, 0x80)
    struct.pack_into("<4sH", pe, 0x80, b"PE\0\0", 0xAA64)
    (tmp_path / "arm.exe").write_bytes(bytes(pe))
    assert binary_arch(tmp_path / "arm.exe") == "arm64"
    (tmp_path / "x64.dylib").write_bytes(b"\xcf\xfa\xed\xfe" + struct.pack("<I", 0x01000007) + bytes(64))
    assert binary_arch(tmp_path / "x64.dylib") == "x86_64"
    fat = b"\xca\xfe\xba\xbe" + struct.pack(">I", 2) + struct.pack(">5I", 0x0100000C, 0, 0, 0, 0)
    (tmp_path / "fat").write_bytes(fat + struct.pack(">5I", 0x01000007, 0, 0, 0, 0))
    assert binary_arch(tmp_path / "fat") == "arm64+x86_64"
    assert runs_natively(tmp_path / "fat", "arm64") and not runs_natively(tmp_path / "x64.dylib", "arm64")


@pytest.mark.parametrize(
    "dest,dropped",
    [
        ("PySide6/Qt/translations/qtbase_de.qm", True),
        ("PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so", True),
        ("PySide6/Qt/lib/libQt6Quick.so.6", True),
        ("PySide6\\Qt6Qml.dll", True),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", False),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", False),
        ("PySide6/Qt/lib/libQt6Widgets.so.6", False),
        ("libcairo.so.2", True),
        ("PySide6/Qt/plugins/platforminputcontexts/qtvirtualkeyboardplugin.dll", True),
        ("PySide6/Qt/lib/QtQml.framework/Versions/A/QtQml", True),
        ("PySide6/Qt/lib/QtQuickControls2.framework/Resources/Info.plist", True),
        ("PySide6/Qt/lib/QtWidgets.framework/Versions/A/QtWidgets", False),
        ("assets/themes/dark.qss", False),
    ],
)
def test_what_the_bundle_leaves_out(dest, dropped):
    assert layout.drop_from_bundle(dest) is dropped


def test_wheel_vendored_libraries_are_never_stripped(tmp_path):
    vendored = tmp_path / "numpy.libs" / "libgfortran-040039e1-0352e75f.so.5.0.0"
    vendored.parent.mkdir()
    vendored.write_bytes(b"\x7fELF" + b".debug_info")
    plain = tmp_path / "libpython3.11.so.1.0"
    plain.write_bytes(b"\x7fELF" + b".debug_info")
    assert not has_debug_info(vendored)
    assert has_debug_info(plain)


def test_icons_are_valid_ico_and_icns(tmp_path, qapp):
    # qapp (pytest-qt's QApplication) first: write_icons would otherwise create a QGuiApplication,
    # and the widget tests after this one in the same process need a QApplication
    from installer.icons import ICO_SIZES, write_icons

    files = write_icons(tmp_path)
    ico = files["ico"].read_bytes()
    reserved, kind, count = struct.unpack_from("<HHH", ico)
    assert (reserved, kind, count) == (0, 1, len(ICO_SIZES))
    for index in range(count):
        width, _, _, _, _, bits, size, offset = struct.unpack_from("<BBBBHHII", ico, 6 + 16 * index)
        assert bits == 32 and offset + size <= len(ico)
        blob = ico[offset : offset + size]
        assert blob.startswith(b"\x89PNG") if width == 0 else struct.unpack_from("<I", blob)[0] == 40
    icns = files["icns"].read_bytes()
    assert icns[:4] == b"icns" and struct.unpack_from(">I", icns, 4)[0] == len(icns)
    assert files["png"].read_bytes()[:4] == b"\x89PNG"


def test_version_resource_is_python_pyinstaller_can_read(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "GENERATED", tmp_path)
    monkeypatch.setattr(sys.modules["installer.bundle"], "GENERATED", tmp_path)
    text = write_version_resource("1.2.3").read_text()
    assert "filevers=(1, 2, 3, 0)" in text and "'ProductVersion', '1.2.3'" in text
    compile(text, "file_version_info.txt", "eval")
