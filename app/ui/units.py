"""How the app writes a quantity: bytes, parameter counts, speeds, durations, power and energy.

The one place for unit formatting in the widgets, so a size reads the same on the Models page,
in the About dialog and under a 2-bit vs 4-bit comparison. Plain functions of numbers (no Qt),
testable without a display. Decimal units (1 GB = 10^9 bytes), as disks and downloads count.
"""

from __future__ import annotations

# Implemented next to the catalog: the Qt-free 2-bit warning (app.catalog.inventory) says a parameter
# count, and the catalog must not import from the widget package. Widgets take it from here.
from app.catalog.inventory import format_parameters

__all__ = [
    "format_bandwidth",
    "format_bytes",
    "format_cpu_ms_per_token",
    "format_gb",
    "format_joules_per_token",
    "format_mb",
    "format_parameters",
    "format_seconds",
    "format_time_left",
    "format_tok_s",
    "format_watts",
    "progress_text",
]


def format_bytes(n: float | None) -> str:
    """A size with the unit that suits it: "1.23 GB", "135 MB", "12 kB", "512 B"; "?" when unknown."""
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"


def format_gb(n: float, digits: int = 1) -> str:
    """A memory size in GB, e.g. the computer's RAM: "15.6 GB"."""
    return f"{n / 1e9:.{digits}f} GB"


def format_mb(n: float) -> str:
    """A size in whole MB, for figures compared side by side: "76 MB"."""
    return f"{n / 1e6:.0f} MB"


def format_bandwidth(bytes_per_s: float, digits: int = 1) -> str:
    """Memory bandwidth: "12.5 GB/s"."""
    return f"{bytes_per_s / 1e9:.{digits}f} GB/s"


def format_tok_s(tokens_per_s: float, digits: int = 1, unit: str = "tokens/s") -> str:
    """A token rate: "31.2 tokens/s" (unit="tok/s" where space is short)."""
    return f"{tokens_per_s:.{digits}f} {unit}"


def format_seconds(seconds: float, digits: int = 2) -> str:
    """A short duration such as the time to the first token: "0.12 s"."""
    return f"{seconds:.{digits}f} s"


def format_time_left(seconds: float | None) -> str:
    """What remains of a download: "about 42 s left", "about 3 min 05 s left", "about 1 h 02 min left"."""
    if seconds is None:
        return "time left unknown"
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"about {seconds} s left"
    if seconds < 3600:
        return f"about {seconds // 60} min {seconds % 60:02d} s left"
    return f"about {seconds // 3600} h {seconds % 3600 // 60:02d} min left"


def format_watts(watts: float) -> str:
    return f"{watts:.1f} W"


def format_joules_per_token(joules: float) -> str:
    return f"{joules:.3f} J / token"


def format_cpu_ms_per_token(cpu_s_per_token: float) -> str:
    """CPU time per token, summed over threads: "4.2 ms CPU / token"."""
    return f"{cpu_s_per_token * 1000:.1f} ms CPU / token"


def progress_text(done: int, total: int, speed: float, eta: float | None) -> str:
    """A download's progress line: "12 MB of 135 MB · 3 MB/s · about 41 s left"."""
    return f"{format_bytes(done)} of {format_bytes(total)} · {format_bytes(speed)}/s · {format_time_left(eta)}"
