"""Light and dark themes: the Fusion style, a matching QPalette and assets/themes/<name>.qss.

"system" follows the operating system's colour scheme (QStyleHints.colorScheme)
and switches live when it changes. Fusion is used everywhere so one stylesheet
looks the same on Windows, macOS and Linux.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

PALETTES = {
    "light": {
        "window": "#f4f5f7",
        "base": "#ffffff",
        "alt": "#f0f1f4",
        "text": "#1d1f24",
        "muted": "#6b7280",
        "button": "#ffffff",
        "highlight": "#2563eb",
        "highlight_text": "#ffffff",
        "link": "#1d4ed8",
    },
    "dark": {
        "window": "#1b1c1f",
        "base": "#232428",
        "alt": "#2a2c31",
        "text": "#e6e7ea",
        "muted": "#9aa0aa",
        "button": "#2b2d32",
        "highlight": "#3b82f6",
        "highlight_text": "#ffffff",
        "link": "#93c5fd",
    },
}


def themes_dir() -> Path:
    """assets/themes in a source checkout or inside a PyInstaller bundle (sys._MEIPASS)."""
    root = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return root / "assets" / "themes"


def resolve_theme(choice: str) -> str:
    """ "light" or "dark" for a setting of "system", "light" or "dark"."""
    if choice in ("light", "dark"):
        return choice
    scheme = QGuiApplication.styleHints().colorScheme()
    return "dark" if scheme == Qt.ColorScheme.Dark else "light"


def _palette(name: str) -> QPalette:
    colors = {key: QColor(value) for key, value in PALETTES[name].items()}
    palette = QPalette()
    role = QPalette.ColorRole
    palette.setColor(role.Window, colors["window"])
    palette.setColor(role.WindowText, colors["text"])
    palette.setColor(role.Base, colors["base"])
    palette.setColor(role.AlternateBase, colors["alt"])
    palette.setColor(role.Text, colors["text"])
    palette.setColor(role.Button, colors["button"])
    palette.setColor(role.ButtonText, colors["text"])
    palette.setColor(role.ToolTipBase, colors["base"])
    palette.setColor(role.ToolTipText, colors["text"])
    palette.setColor(role.PlaceholderText, colors["muted"])
    palette.setColor(role.Highlight, colors["highlight"])
    palette.setColor(role.HighlightedText, colors["highlight_text"])
    palette.setColor(role.Link, colors["link"])
    for disabled in (role.Text, role.ButtonText, role.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, disabled, colors["muted"])
    return palette


_FONT_SIZE = re.compile(r"font-size:\s*(\d+(?:\.\d+)?)px")
_BASE_FONT_PROPERTY = "tmacBaseFontPointSize"


def zoomed_sheet(sheet: str, zoom: float) -> str:
    """The style sheet with every `font-size: Npx` scaled by `zoom` (the sheet sizes most text)."""
    return _FONT_SIZE.sub(lambda m: f"font-size: {max(1, round(float(m.group(1)) * zoom))}px", sheet)


def apply_theme(app: QApplication, choice: str, zoom: float = 1.0) -> str:
    """Style the whole application at a text size factor; returns the theme used ("light" or "dark")."""
    name = resolve_theme(choice)
    app.setStyle("Fusion")
    app.setPalette(_palette(name))
    base = app.property(_BASE_FONT_PROPERTY)
    if base is None:  # the platform's own size, remembered once so zooming never compounds
        base = app.font().pointSizeF()
        app.setProperty(_BASE_FONT_PROPERTY, base)
    font = app.font()
    font.setPointSizeF(float(base) * zoom)
    app.setFont(font)
    sheet = themes_dir() / f"{name}.qss"
    app.setStyleSheet(zoomed_sheet(sheet.read_text(encoding="utf-8"), zoom) if sheet.is_file() else "")
    return name
