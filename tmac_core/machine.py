"""What CPU this is, by name: the one reader of /proc/cpuinfo, sysctl and the
Windows registry for the marketing name, shared by the CLI's `info`, the app's
About page and sweep records, and the benchmark reports.

Standard library only (no numpy, no kernels), so the GUI process may import it.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

# /proc/cpuinfo keys that carry a name, most specific first: x86 has "model name";
# ARM boards have "Model" or "Hardware"; MIPS "cpu model"; some kernels only "Processor".
_CPUINFO_KEYS = ("model name", "Model", "Hardware", "cpu model", "Processor")


def cpu_model_name() -> str:
    """The CPU's marketing name ("AMD Ryzen 7 7840U ..."), or the best substitute the OS gives."""
    name = ""
    if sys.platform.startswith("linux"):
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
        for key in _CPUINFO_KEYS:
            # [ \t], not \s: an empty value must not borrow the next line
            match = re.search(rf"^{key}[ \t]*:[ \t]*(.+)$", text, re.MULTILINE)
            if match and match.group(1).strip():
                name = match.group(1).strip()
                break
    elif sys.platform == "darwin":
        try:
            name = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            name = ""
    elif sys.platform == "win32":
        try:
            import winreg

            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0") as key:
                name = str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
        except OSError:
            name = ""
    name = re.sub(r"\s+", " ", name or platform.processor() or "").strip()
    return name or f"unknown {platform.machine() or 'CPU'}"
