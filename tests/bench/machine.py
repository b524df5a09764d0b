"""Which machine a benchmark ran on: one line naming it, and its measured DRAM read bandwidth
(both the kernel and the end-to-end benchmarks quote it)."""

import datetime
import os
import platform
import threading
import time

import numpy as np

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


def read_bandwidth_gbs(threads: int) -> float:
    """DRAM read bandwidth: numpy sums over 1 GB split across `threads` threads
    (numpy releases the GIL in the reduction)."""
    parts = [np.ones(256 * 1024 * 1024 // threads, dtype=np.float32) for _ in range(threads)]
    best = float("inf")
    for _ in range(4):
        workers = [threading.Thread(target=p.sum) for p in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t)
    return sum(p.nbytes for p in parts) / best / 1e9
