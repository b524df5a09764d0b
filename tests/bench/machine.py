"""Which machine a benchmark ran on: one line naming it, and its measured DRAM read bandwidth
(both the kernel and the end-to-end benchmarks quote it): a real multi-threaded streaming
read in C, since numpy reductions stay well under what the memory delivers on one thread."""

import ctypes
import datetime
import functools
import hashlib
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

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


STREAM_READ_C = Path(__file__).with_name("stream_read.c")
BUILD = Path(__file__).resolve().parents[2] / "build" / "bench-tools"
READ_BYTES = 1 << 30  # 1 GiB: far past any last-level cache


def _compile(cc: str, flags: list[str], lib: Path) -> bool:
    """Build stream_read.c into `lib` with `flags`; False when the compiler is missing or refuses."""
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    try:
        proc = subprocess.run([cc, *flags, str(STREAM_READ_C), "-o", str(tmp)], capture_output=True)
    except OSError:
        return False
    if proc.returncode != 0:
        return False
    os.replace(tmp, lib)
    return True


@functools.cache  # every speed row reads the bandwidth: build, hash and load the library once
def _stream_reader():
    """tests/bench/stream_read.c compiled for this machine (cached under build/, keyed by the
    source's and the flags' hash), or None when there is no C compiler."""
    source = STREAM_READ_C.read_bytes()
    # -march=native first: this benchmark-only reader runs where it is built, and with the
    # baseline SSE2 loads it read 15-16 GB/s on one Zen 3 thread where 256-bit loads read
    # 18-19.6 (and the AVX2 GEMV tile 16.7-17.7): a read ceiling must use the widest loads the
    # CPU has. The baseline build is the fallback for a compiler without -march=native.
    cc = os.environ.get("CC", "cc")
    common = ["-shared", "-fPIC", "-pthread"]
    for tuning in (["-O3", "-march=native"], ["-O3"]):
        flags = [*tuning, *common]
        lib = BUILD / f"stream_read-{hashlib.sha256(source + ' '.join(flags).encode()).hexdigest()[:12]}.so"
        if lib.exists() or _compile(cc, flags, lib):
            break
    else:
        return None
    fn = ctypes.CDLL(str(lib)).stream_read_seconds
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    return fn


def read_bandwidth(threads: int) -> tuple[float, str]:
    """(GB/s, how it was measured): DRAM read bandwidth of `threads` POSIX threads streaming
    1 GiB (tests/bench/stream_read.c, best of 5 passes); numpy sums over the same size in
    Python threads where no C compiler is at hand (these read about a quarter low on one
    thread)."""
    buf = np.ones(READ_BYTES, dtype=np.uint8)  # touched: every page is resident before timing
    reader = _stream_reader()
    if reader is not None:
        seconds = reader(buf.ctypes.data, buf.nbytes, threads, 5)
        if seconds > 0:
            return buf.nbytes / seconds / 1e9, f"a C streaming read on {threads} thread(s)"
    parts = np.array_split(buf.view(np.uint64), threads)
    best = float("inf")
    for _ in range(5):
        workers = [threading.Thread(target=p.sum) for p in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t)
    return buf.nbytes / best / 1e9, f"numpy sums on {threads} thread(s) (no C compiler)"


def read_bandwidth_gbs(threads: int) -> float:
    return read_bandwidth(threads)[0]
