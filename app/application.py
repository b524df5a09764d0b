"""The QApplication both entry points share, and the check that Qt has a display to open.

`app.main.run` (the normal session) and `app.self_test` (the end-to-end check) each
build the one QApplication here, so neither imports the other. PySide6 is imported
inside `make_application`: `missing_display` must answer before any Qt module loads.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

APP_DISPLAY_NAME = "T-MAC Chat"


def make_application() -> QApplication:
    """The running QApplication, or a new one named for settings paths and window titles."""
    from PySide6.QtWidgets import QApplication

    # instance() is typed as the QCoreApplication base; in this program it is always a QApplication
    app = cast(QApplication, QApplication.instance() or QApplication(sys.argv[:1]))
    app.setApplicationName("TMACChat")
    app.setApplicationDisplayName(APP_DISPLAY_NAME)
    app.setOrganizationName("TMAC")
    return app


def missing_display() -> bool:
    """Linux/BSD without X11 or Wayland and no QT_QPA_PLATFORM chosen: Qt would abort with a
    cryptic xcb error."""
    return (
        sys.platform.startswith(("linux", "freebsd"))
        and not os.environ.get("QT_QPA_PLATFORM")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )
