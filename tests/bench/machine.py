"""One line that says which machine a benchmark ran on."""
import datetime
import os
import platform
from pathlib import Path

import tmac_core.kernels as K


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line() -> str:
    feats = K.cpu_features()
    simd = [n for n in ("avx2", "avx512f", "avx512_vnni", "neon", "dotprod") if feats.get(n)]
    return (f"{datetime.date.today().isoformat()} · {cpu_model()} · {os.cpu_count()} logical CPUs · "
            f"{platform.system()} {platform.machine()} · SIMD: {' '.join(simd) or 'none'} · "
            f"kernel tiers: {', '.join(K.available_isas())}")
