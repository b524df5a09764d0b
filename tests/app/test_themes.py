"""Theme style sheets: every custom-styled control keeps a visible keyboard-focus indicator.

A rule that sets `border: none` on a focusable control removes Qt's own focus
frame, so each such object name needs a `:focus` rule that draws one back.
Pure text checks on assets/themes/*.qss (no Qt needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

THEMES = sorted((Path(__file__).resolve().parents[2] / "assets" / "themes").glob("*.qss"))
FOCUSABLE = (
    "QPushButton",
    "QLineEdit",
    "QListWidget",
    "QPlainTextEdit",
    "QSpinBox",
    "QDoubleSpinBox",
    "QComboBox",
    "QSlider",
    "QCheckBox",
    "QRadioButton",
)


def rules(sheet: str) -> list[tuple[list[str], str]]:
    sheet = re.sub(r"/\*.*?\*/", "", sheet, flags=re.S)
    return [
        ([s.strip() for s in selectors.split(",")], body)
        for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", sheet)
    ]


@pytest.mark.parametrize("theme", THEMES, ids=lambda p: p.stem)
def test_every_borderless_focusable_control_has_a_focus_rule(theme):
    parsed = rules(theme.read_text(encoding="utf-8"))
    focus_rules = {s.removesuffix(":focus") for selectors, _ in parsed for s in selectors if s.endswith(":focus")}
    borderless = {
        s
        for selectors, body in parsed
        for s in selectors
        if re.search(r"border:\s*none", body) and ":" not in s and s.startswith(FOCUSABLE)
    }
    assert borderless, "the check found nothing to check"
    missing = sorted(borderless - focus_rules)
    assert not missing, f"{theme.name}: no visible focus for {missing}"


def test_both_themes_style_the_same_controls():
    selectors = [{s for sel, _ in rules(t.read_text(encoding="utf-8")) for s in sel} for t in THEMES]
    assert len(THEMES) == 2 and selectors[0] == selectors[1]
