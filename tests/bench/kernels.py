"""Kernel benchmark: median GEMV latency (table build included) of the LUT
kernels for every available tier, bit width and 1/2 threads, next to numpy
float32 and an int8-dequant reference kernel measured in the same run."""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import tmac_core.kernels as K
from tmac_core.kernels import _kernels

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (11008, 4096), (576, 1536)]  # (M, K)
# (label, bits, group size): group 64 everywhere, plus 128-wide groups and
# BitNet-style ternary with one scale per row (what llama.cpp's tq2_0 competes with)
CONFIGS = [
    ("1", 1, 64),
    ("2", 2, 64),
    ("3", 3, 64),
    ("4", 4, 64),
    ("ternary", 2, 64),
    ("2 g128", 2, 128),
    ("4 g128", 4, 128),
    ("ternary/row", 2, "row"),
]
THREADS = [1, 2]
ITERS = 60


def _median_ms(times) -> float:
    return 1e3 * float(np.median(times))


def _load_reference():
    src = Path(__file__).with_name("ref_int8.c")
    lib = Path(tempfile.gettempdir()) / "tmac_bench_ref_int8.so"
    cmd = ["gcc", "-O3", "-march=native", "-shared", "-fPIC", "-pthread", str(src), "-o", str(lib)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return None
    ref = ctypes.CDLL(str(lib))
    ref.ref_q4_gemv.restype = None
    return ref


def _time_reference(ref, m, k, threads, rng) -> float:
    w = rng.integers(0, 256, (m, k // 2), dtype=np.uint8)
    wd = rng.uniform(0.01, 0.02, (m, k // 32)).astype(np.float32)
    x = rng.standard_normal(k).astype(np.float32)
    x8, xd = np.empty(k, np.int8), np.empty(k // 32, np.float32)
    y = np.empty(m, np.float32)
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    args = (ptr(w), ptr(wd), ptr(x), ptr(x8), ptr(xd), ptr(y), m, k, threads)
    times = []
    for _ in range(ITERS):
        t = time.perf_counter()
        ref.ref_q4_gemv(*args)
        times.append(time.perf_counter() - t)
    return _median_ms(times)


def _time_numpy(m, k, rng) -> float:
    w = rng.standard_normal((m, k), dtype=np.float32)
    x = rng.standard_normal(k).astype(np.float32)
    times = []
    for _ in range(max(10, ITERS // 3)):
        t = time.perf_counter()
        w @ x
        times.append(time.perf_counter() - t)
    return _median_ms(times)


def _packed(m, k, label, bits, group, rng):
    ternary = label.startswith("ternary")
    gs = k if group == "row" else group
    codes = rng.integers(0, 3 if ternary else 1 << bits, (m, k), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.05, (m, k // gs)).astype(np.float32)
    zeros = np.ones_like(scales) if ternary else None
    return K.pack(codes, scales, zeros, bits=bits, group_size=gs)


def time_cold(packed, x, threads, copies=6, iters=36) -> float:
    """Median GEMV ms with the weights read from DRAM: calls cycle through
    `copies` separate copies of the matrix, together far larger than the L3."""
    clones = [
        K.PackedWeight(
            packed.planes.copy(),
            packed.scales.copy(),
            packed.m,
            packed.k,
            packed.k_pad,
            packed.bits,
            packed.group_size,
            packed.tensor_scale,
        )
        for _ in range(copies)
    ]
    K.set_num_threads(threads)
    tables = K.activation_tables(x[: packed.k], k_pad=packed.k_pad, act_group=packed.act_group)
    out = np.empty((1, packed.m), np.float32)
    times = []
    for i in range(iters):
        w = clones[i % copies]
        t = time.perf_counter()
        K.gemm_tables(w, tables, None, out)
        times.append(time.perf_counter() - t)
    return _median_ms(times[copies:])


def run(log=print) -> dict:
    rng = np.random.default_rng(0)
    ref = _load_reference()
    saved = K.get_num_threads()
    rows = []
    for m, k in SHAPES:
        log(f"shape {m}x{k}")
        np_ms = _time_numpy(m, k, rng)
        ref_ms = {t: _time_reference(ref, m, k, t, rng) if ref else None for t in THREADS}
        for label, bits, group in CONFIGS:
            packed = _packed(m, k, label, bits, group, rng)
            x = rng.standard_normal(packed.k_pad).astype(np.float32)
            for tier in K.available_tiers():
                for threads in THREADS:
                    K.set_num_threads(threads)
                    _kernels.time_gemv(packed, x, 5, tier)  # warm the pool and caches
                    ms = _median_ms(_kernels.time_gemv(packed, x, ITERS, tier))
                    gbps = packed.nbytes / (ms / 1e3) / 1e9
                    rows.append(
                        dict(
                            m=m,
                            k=k,
                            bits=label,
                            tier=tier,
                            threads=threads,
                            ms=ms,
                            gbps=gbps,
                            numpy_ms=np_ms,
                            ref_ms=ref_ms[threads],
                            mb=packed.nbytes / 1e6,
                        )
                    )
                    log(f"  {label:12s} {tier:7s} {threads}t {ms:8.3f} ms  {gbps:5.1f} GB/s")
    cold = {}
    for label, bits, group in [("2", 2, 64), ("4", 4, 64)]:
        for m, k in [(4096, 14336), (14336, 4096)]:
            packed = _packed(m, k, label, bits, group, rng)
            x = rng.standard_normal(packed.k_pad).astype(np.float32)
            for threads in THREADS:
                cold[(m, k, label, threads)] = dict(ms=time_cold(packed, x, threads), mb=packed.nbytes / 1e6)
                log(f"  cold {m}x{k} {label}-bit {threads}t {cold[(m, k, label, threads)]['ms']:.3f} ms")
    K.set_num_threads(saved)
    return {"rows": rows, "cold": cold, "reference": ref is not None}


def markdown(result: dict) -> str:
    out = [
        "| M×K | bits | tier | threads | LUT GEMV (ms) | weights MB | GB/s | numpy f32 (ms)"
        " | int8-dequant Q4 ref (ms) | × ref |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ref = f"{r['ref_ms']:.3f}" if r["ref_ms"] else "n/a"
        ratio = f"{r['ref_ms'] / r['ms']:.2f}" if r["ref_ms"] else "n/a"
        out.append(
            f"| {r['m']}×{r['k']} | {r['bits']} | {r['tier']} | {r['threads']} | {r['ms']:.3f} | "
            f"{r['mb']:.1f} | {r['gbps']:.1f} | {r['numpy_ms']:.3f} | {ref} | {ratio} |"
        )
    return "\n".join(out)


def cold_markdown(result: dict) -> str:
    out = ["| M×K | bits | threads | ms | MB | GB/s |", "|---|---|---|---|---|---|"]
    for (m, k, label, threads), r in sorted(result["cold"].items()):
        out.append(f"| {m}×{k} | {label} | {threads} | {r['ms']:.3f} | {r['mb']:.1f} | {r['mb'] / r['ms']:.1f} |")
    return "\n".join(out)


def summary(result: dict) -> dict:
    """The numbers the kernel targets are stated in."""
    best = {}
    for r in result["rows"]:
        key = (r["m"], r["k"], r["bits"], r["threads"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    return best
