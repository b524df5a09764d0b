"""app.ui.units: how the app writes sizes, counts, speeds, durations, power and energy (no display needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.ui import units


@pytest.mark.parametrize(
    "n, text",
    [
        (None, "?"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (12_400, "12 kB"),
        (135_000_000, "135 MB"),
        (999_999_999, "1000 MB"),
        (1_000_000_000, "1.00 GB"),
        (1_234_567_890, "1.23 GB"),
    ],
)
def test_bytes_take_the_unit_that_suits_them(n, text):
    assert units.format_bytes(n) == text


@pytest.mark.parametrize(
    "n, text", [(59_870, "60k"), (134_515_008, "135M"), (494_032_768, "494M"), (1_235_814_400, "1.2B"), (999, "999")]
)
def test_parameter_counts_read_like_model_names(n, text):
    assert units.format_parameters(n) == text


def test_fixed_unit_figures():
    assert units.format_gb(15_600_000_000) == "15.6 GB"
    assert units.format_mb(76_400_000) == "76 MB"
    assert units.format_bandwidth(12.5e9) == "12.5 GB/s" and units.format_bandwidth(20e9, digits=0) == "20 GB/s"
    assert units.format_tok_s(31.25) == "31.2 tokens/s"
    assert units.format_tok_s(812.4, digits=0, unit="tok/s") == "812 tok/s"
    assert units.format_seconds(0.1234) == "0.12 s"
    assert units.format_watts(12.34) == "12.3 W"
    assert units.format_joules_per_token(0.12345) == "0.123 J / token"
    assert units.format_cpu_ms_per_token(0.0042) == "4.2 ms CPU / token"


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "time left unknown"),
        (0.4, "about 0 s left"),
        (41.6, "about 42 s left"),
        (185, "about 3 min 05 s left"),
        (3720, "about 1 h 02 min left"),
    ],
)
def test_time_left(seconds, text):
    assert units.format_time_left(seconds) == text


def test_download_progress_line():
    assert units.progress_text(12_000_000, 135_000_000, 3_000_000, 41) == "12 MB of 135 MB · 3 MB/s · about 41 s left"


def test_units_load_without_qt():
    """Plain functions: importable (and testable) in an interpreter that never loads PySide6."""
    code = (
        "import sys, app.ui.units\n"
        "assert not any(m.split('.')[0] == 'PySide6' for m in sys.modules), 'PySide6 imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True, timeout=60)
