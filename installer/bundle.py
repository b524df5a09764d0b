"""`python build.py bundle`: the frozen app and this platform's installers.

Steps (build.py has already built the extensions in place and installed PyInstaller):
  1. the icons and the Windows version resource into build/installer/
  2. PyInstaller from installer/tmac_chat.spec -> dist/tmac-chat/ (macOS: dist/T-MAC Chat.app)
  3. the static bundle checks (installer/check_bundle.py)
  4. the wrapping, into release/:
       Linux    tmac-chat_<version>_<debarch>.deb (dpkg-deb) and tmac-chat-<version>-linux-<arch>.tar.gz
       Windows  tmac-chat-<version>-windows-<arch>-setup.exe (makensis, installer/windows/tmac_chat.nsi)
       macOS    tmac-chat-<version>-macos-<arch>.dmg (installer/macos/make_dmg.sh: sign, dmg, notarize)
Each step prints its wall time; the summary line gives the total.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from installer import layout  # noqa: E402 (after the path change)
from installer.layout import DIST, EXE_NAME, GENERATED, PACKAGE_NAME, RELEASE, ROOT  # noqa: E402

T = TypeVar("T")
DEB_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
# What the Qt xcb platform plugin links from the system and the PySide6 wheel does not ship.
DEB_DEPENDS = (
    "libc6 (>= 2.34), libegl1, libgl1, libfontconfig1, libfreetype6, libdbus-1-3, libglib2.0-0, "
    "libx11-6, libx11-xcb1, libxcb1, libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, "
    "libxcb-randr0, libxcb-render-util0, libxcb-render0, libxcb-shape0, libxcb-shm0, libxcb-sync1, "
    "libxcb-util1, libxcb-xfixes0, libxcb-xkb1, libxcb-xinerama0, libxkbcommon0, libxkbcommon-x11-0"
)
DESKTOP_ENTRY = """[Desktop Entry]
Type=Application
Name={app_name}
GenericName=Offline chat
Comment=Chat with language models offline, on the CPU
Exec={exec_path} %F
Icon={icon}
Terminal=false
Categories=Utility;
Keywords=chat;LLM;AI;offline;
StartupWMClass=TMACChat
"""


def step(name: str, action: Callable[[], T]) -> T:
    start = time.monotonic()
    print(f"== bundle: {name}", flush=True)
    result = action()
    print(f"== bundle: {name} done in {time.monotonic() - start:.1f} s", flush=True)
    return result


def run(cmd: list[str | Path], env: dict[str, str] | None = None) -> None:
    shown = [str(c) for c in cmd]
    print("+", " ".join(shown if len(shown) < 12 else [*shown[:6], f"... ({len(shown) - 6} more)"]), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=True)


def write_version_resource(version: str) -> Path:
    """PyInstaller's VSVersionInfo text for the Windows executable's Details tab."""
    numbers = tuple(int(part) for part in (version.split("+")[0].split("-")[0].split(".") + ["0"] * 4)[:4])
    strings = {
        "CompanyName": "T-MAC Chat contributors",
        "FileDescription": layout.APP_NAME,
        "FileVersion": version,
        "InternalName": EXE_NAME,
        "LegalCopyright": "MIT License",
        "OriginalFilename": f"{EXE_NAME}.exe",
        "ProductName": layout.APP_NAME,
        "ProductVersion": version,
    }
    text = f"""VSVersionInfo(
  ffi=FixedFileInfo(filevers={numbers}, prodvers={numbers}, mask=0x3f, flags=0x0, OS=0x40004,
                    fileType=0x1, subtype=0x0, date=(0, 0)),
  kids=[
    StringFileInfo([StringTable('040904B0', [
      {", ".join(f"StringStruct({k!r}, {v!r})" for k, v in strings.items())}
    ])]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""
    path = GENERATED / "file_version_info.txt"
    path.write_text(text, encoding="utf-8")
    return path


def prepare(version: str) -> None:
    GENERATED.mkdir(parents=True, exist_ok=True)
    from installer.icons import write_icons

    write_icons(GENERATED / "icons")
    write_version_resource(version)


def pyinstaller(version: str) -> None:
    for stale in (DIST / EXE_NAME, DIST / layout.MAC_APP_NAME):
        shutil.rmtree(stale, ignore_errors=True)
    env = {**os.environ, "TMAC_BUNDLE_VERSION": version}
    run(
        [
            sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
            "--distpath", DIST, "--workpath", ROOT / "build" / "pyinstaller", ROOT / "installer" / "tmac_chat.spec",
        ],
        env=env,
    )  # fmt: skip


def has_debug_info(path: Path) -> bool:
    """An ELF file with DWARF sections that is safe to strip. `strip` rewrites every file it is
    given, and a library auditwheel vendored and patched (numpy.libs/libgfortran-<hash>.so,
    ...) no longer loads after that, so those are left alone."""
    if any(parent.name.endswith(".libs") for parent in path.parents) or re.search(r"-[0-9a-f]{8}[.-]", path.name):
        return False
    with path.open("rb") as handle:
        if handle.read(4) != b"\x7fELF":
            return False
        return b".debug_info" in handle.read()


def strip_debug_info() -> None:
    """Linux: drop the DWARF sections of every bundled library except our own extensions.

    The Python the build runs on (pyenv, the runners' builds) ships libpython and lib-dynload
    with debug info: about 28 MB of the 250 MB budget. Our extensions keep theirs: it records
    each object's compiler flags, which installer/check_bundle.py reads.
    """
    strip = shutil.which("strip")
    if strip is None:
        print("bundle: no `strip` here: the bundle keeps its debug info", flush=True)
        return
    internal = layout.onedir() / "_internal"  # not the executable: its archive is appended after the ELF
    own = internal / "tmac_core"
    targets = [p for p in internal.rglob("*") if p.is_file() and not p.is_symlink() and own not in p.parents]
    targets = [p for p in targets if has_debug_info(p)]
    before = sum(p.stat().st_size for p in targets)
    for start in range(0, len(targets), 200):
        run([strip, "--strip-debug", *targets[start : start + 200]])
    after = sum(p.stat().st_size for p in targets)
    print(f"bundle: stripped {len(targets)} libraries: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB", flush=True)


def deb_package(version: str, arch: str) -> Path:
    """/opt/tmac-chat/ (the onedir), /usr/bin/tmac-chat (a symlink: the bootloader finds its
    _internal/ through /proc/self/exe), a desktop entry and the hicolor icon."""
    stage = GENERATED / "deb"
    shutil.rmtree(stage, ignore_errors=True)
    opt = stage / "opt" / PACKAGE_NAME
    shutil.copytree(layout.onedir(), opt, symlinks=True)
    (stage / "usr" / "bin").mkdir(parents=True)
    (stage / "usr" / "bin" / EXE_NAME).symlink_to(f"/opt/{PACKAGE_NAME}/{EXE_NAME}")
    apps = stage / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    (apps / f"{PACKAGE_NAME}.desktop").write_text(
        DESKTOP_ENTRY.format(app_name=layout.APP_NAME, exec_path=f"/usr/bin/{EXE_NAME}", icon=PACKAGE_NAME)
    )
    icons = stage / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps"
    icons.mkdir(parents=True)
    shutil.copy2(GENERATED / "icons" / "tmac-chat.png", icons / f"{PACKAGE_NAME}.png")
    installed_kib = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
    control = stage / "DEBIAN"
    control.mkdir()
    (control / "control").write_text(
        f"Package: {PACKAGE_NAME}\n"
        f"Version: {version}\n"
        f"Architecture: {DEB_ARCH.get(arch, arch)}\n"
        "Maintainer: T-MAC Chat contributors <noreply@example.invalid>\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {DEB_DEPENDS}\n"
        "Section: utils\n"
        "Priority: optional\n"
        f"Description: {layout.APP_NAME}: offline chat with language models on the CPU\n"
        " A desktop chat app over low-bit lookup-table kernels. Includes a small\n"
        " built-in model (SmolLM2-135M-Instruct), so it answers without a download.\n"
    )
    for folder in [stage, *stage.rglob("*")]:  # dpkg-deb rejects group/other-writable control dirs
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o755)
    out = RELEASE / f"{PACKAGE_NAME}_{version}_{DEB_ARCH.get(arch, arch)}.deb"
    # gzip: every dpkg reads it, and it is several times faster to write than xz on a small runner
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", stage, out])
    if shutil.which("desktop-file-validate"):
        run(["desktop-file-validate", apps / f"{PACKAGE_NAME}.desktop"])
    return out


PORTABLE_INSTALL = """#!/bin/sh
# Per-user install of the portable T-MAC Chat folder: no root needed.
# Copies it to ~/.local/opt/{pkg} and adds a menu entry and the icon; ./install.sh --uninstall removes them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$HOME/.local/opt/{pkg}"
apps="${{XDG_DATA_HOME:-$HOME/.local/share}}/applications"
icons="${{XDG_DATA_HOME:-$HOME/.local/share}}/icons/hicolor/256x256/apps"
if [ "${{1:-}}" = "--uninstall" ]; then
    rm -rf "$dest" "$apps/{pkg}.desktop" "$icons/{pkg}.png"
    echo "removed {app_name}"
    exit 0
fi
mkdir -p "$dest" "$apps" "$icons"
cp -a "$here/{exe}/." "$dest/"
cp "$here/{pkg}.png" "$icons/{pkg}.png"
sed "s|@EXEC@|$dest/{exe}|" "$here/{pkg}.desktop.in" > "$apps/{pkg}.desktop"
echo "installed {app_name} into $dest (start it from the menu, or run $dest/{exe})"
"""


def portable_tarball(version: str, arch: str) -> Path:
    """The onedir plus install.sh (per-user menu entry), for distributions without dpkg."""
    top = f"{PACKAGE_NAME}-{version}-linux-{arch}"
    out = RELEASE / f"{top}.tar.gz"
    extras = GENERATED / "portable"
    shutil.rmtree(extras, ignore_errors=True)
    extras.mkdir(parents=True)
    script = extras / "install.sh"
    script.write_text(PORTABLE_INSTALL.format(pkg=PACKAGE_NAME, exe=EXE_NAME, app_name=layout.APP_NAME))
    script.chmod(0o755)
    (extras / f"{PACKAGE_NAME}.desktop.in").write_text(
        DESKTOP_ENTRY.format(app_name=layout.APP_NAME, exec_path="@EXEC@", icon=PACKAGE_NAME)
    )
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(layout.onedir(), arcname=f"{top}/{EXE_NAME}")
        tar.add(script, arcname=f"{top}/install.sh")
        tar.add(extras / f"{PACKAGE_NAME}.desktop.in", arcname=f"{top}/{PACKAGE_NAME}.desktop.in")
        tar.add(GENERATED / "icons" / "tmac-chat.png", arcname=f"{top}/{PACKAGE_NAME}.png")
    return out


def windows_installer(version: str, arch: str) -> Path:
    makensis = shutil.which("makensis")
    if makensis is None:
        sys.exit("bundle: makensis not found: install NSIS 3 (choco install nsis, or apt-get install nsis)")
    nsis_arch = "arm64" if arch == "arm64" else "x64"
    out = RELEASE / f"{PACKAGE_NAME}-{version}-windows-{nsis_arch}-setup.exe"
    run(
        [
            makensis, "-V2", "-WX", f"-DARCH={nsis_arch}", f"-DVERSION={version}",
            f"-DPAYLOAD={layout.onedir()}", f"-DICON={GENERATED / 'icons' / 'tmac-chat.ico'}", f"-DOUTFILE={out}",
            ROOT / "installer" / "windows" / "tmac_chat.nsi",
        ]
    )  # fmt: skip
    return out


def mac_dmg(version: str, arch: str) -> Path:
    out = RELEASE / f"{PACKAGE_NAME}-{version}-macos-{arch}.dmg"
    run(["bash", ROOT / "installer" / "macos" / "make_dmg.sh", DIST / layout.MAC_APP_NAME, out])
    return out


def main() -> int:
    start = time.monotonic()
    version, arch = layout.version(), layout.machine()
    RELEASE.mkdir(exist_ok=True)
    step("icons and version resource", lambda: prepare(version))
    step("PyInstaller", lambda: pyinstaller(version))
    if sys.platform.startswith("linux"):
        step("strip debug info", strip_debug_info)
    step("bundle checks", lambda: run([sys.executable, ROOT / "installer" / "check_bundle.py"]))
    outputs: list[Path] = []
    if sys.platform.startswith("linux"):
        outputs.append(step(".deb", lambda: deb_package(version, arch)))
        outputs.append(step("portable tarball", lambda: portable_tarball(version, arch)))
    elif sys.platform == "win32":
        outputs.append(step("NSIS installer", lambda: windows_installer(version, arch)))
    elif sys.platform == "darwin":
        outputs.append(step(".dmg", lambda: mac_dmg(version, arch)))
    for path in outputs:
        print(f"bundle: {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"bundle: {platform.system()} {arch} done in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
