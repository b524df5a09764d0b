"""One line that says which machine a benchmark ran on."""

import datetime
import os
import platform

import tmac_core.kernels as K
from tmac_core.machine import cpu_model_name


def machine_line() -> str:
    feats = K.cpu_features()
    simd = [n for n in ("avx2", "avx512f", "avx512_vnni", "neon", "dotprod") if feats.get(n)]
    return (
        f"{datetime.date.today().isoformat()} · {cpu_model_name()} · {os.cpu_count()} logical CPUs · "
        f"{platform.system()} {platform.machine()} · SIMD: {' '.join(simd) or 'none'} · "
        f"kernel tiers: {', '.join(K.available_tiers())}"
    )
