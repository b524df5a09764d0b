"""Tiers this CPU cannot run, checked anyway: the NEON tier cross-compiled
for aarch64 and run under qemu-aarch64, and the AVX-512 tier compiled with
SIMDe's portable AVX-512 emulation when the CPU has no AVX-512. A C driver
(c/kernel_driver.c) runs the tier on cases written here and compares tables
and outputs bit for bit with the generic tier, both in the same binary and
as computed by this Python extension. CI installs the toolchains
(.ci/run); elsewhere a missing toolchain skips with the reason, but under
CI=true it fails."""

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import (
    BITS,
    SHAPES,
    SHAPES_V2,
    SUPER_SHAPES,
    SYM_ZEROS,
    make_activations,
    make_case,
    make_super_case,
    make_sym_case,
)
from tmac_core.kernels import sources

KDIR = Path(K.__file__).resolve().parent
DRIVER = Path(__file__).resolve().parent / "c" / "kernel_driver.c"
ATTN_DRIVER = Path(__file__).resolve().parent / "c" / "attention_driver.c"
SWIGLU_DRIVER = Path(__file__).resolve().parent / "c" / "swiglu_driver.c"
# the shipped build's flags and file lists (sources.py), so these runs test what setup.py builds
FLAGS = [*sources.GCC_COMMON, "-I", str(KDIR / sources.INCLUDE_DIR)]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(tool_ok: bool, what: str):
    if not tool_ok:
        if IN_CI:
            pytest.fail(f"{what} is missing on this CI machine (.ci/run installs it)")
        pytest.skip(f"{what} is not installed (apt-get install gcc-aarch64-linux-gnu qemu-user libsimde-dev)")


def cross_cases(rng):
    """(packed weight, act_group, n_tokens) of the cross-tier run: every v1 shape and bit width,
    and layout v2's 5..8-bit planes, 16/256-wide groups, 16-wide tables and SUPER scales."""
    for m, k, gs in SHAPES:
        for bits in BITS:
            for n in (1, 3, 9):  # 9: the threaded GEMM forms token pairs; 2..8-token gemm tiles
                p = make_case(rng, m, k, gs, bits).pack()
                yield p, p.act_group, n
    for m, k, gs in SHAPES_V2:
        for bits in (5, 8):
            p = make_case(rng, m, k, gs, bits).pack()
            yield p, p.act_group, 5
    for m, k, gs, ss in SUPER_SHAPES:
        for kind, bits in (("kquant", 4), ("signed", 6)):
            p = make_super_case(rng, m, k, gs, ss, bits, kind).pack()
            yield p, p.act_group, 5
    p = make_case(rng, 70, 256, 64, 4).pack()
    yield p, 16, 3  # a v1 weight read by 16-wide tables
    # layout v3: F16_SYM (one zero code) and SUPER_NOMIN (no mins)
    for (m, k, gs), (bits, zero) in zip(SHAPES[:7] + SHAPES_V2[:2], SYM_ZEROS):
        p = make_sym_case(rng, m, k, gs, bits, zero).pack()
        yield p, p.act_group, 9
    for m, k, gs, ss in SUPER_SHAPES[:3]:
        for bits in (3, 6):
            c = make_super_case(rng, m, k, gs, ss, bits, "signed")
            c.mins = False
            p = c.pack()
            yield p, p.act_group, 5


def write_cases(path: Path, rng) -> int:
    blobs = []
    for p, act_group, n in cross_cases(rng):
        x = np.zeros((n, p.k_pad), np.float32)
        x[:, : p.k] = make_activations(rng, n, p.k, "outliers")
        tables = K.activation_tables(x, act_group=act_group, tier="generic")
        y = K.gemm_tables(p, tables, "generic")
        header = struct.pack(
            "<11i2f",
            p.m,
            p.k,
            p.k_pad,
            p.bits,
            p.group_size,
            act_group,
            n,
            p.m_pad,
            p.scale_format,
            p.super_size,
            p.zero_mult,
            p.tensor_scale,
            p.code_offset,
        )
        sub = b"" if p.sub is None else p.sub.tobytes()
        blobs.append(
            header
            + p.planes.tobytes()
            + p.scales.tobytes()
            + sub
            + x.tobytes()
            + y.tobytes()
            + tables.entries.tobytes()
        )
    path.write_bytes(struct.pack("<i", len(blobs)) + b"".join(blobs))
    return len(blobs)


def check_driver_output(out: subprocess.CompletedProcess, n_cases: int):
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"{n_cases} cases, 0 failed" in out.stdout


def build_neon(tmp_path: Path, driver: Path) -> tuple[str, Path]:
    """qemu-aarch64 and a static aarch64 build of the kernels with the NEON tier and `driver`."""
    gcc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    need(gcc is not None and qemu is not None, "aarch64 cross compiler / qemu-aarch64")
    exe = tmp_path / f"{driver.stem}_neon"
    files = [str(KDIR / s) for s in sources.sources_for("aarch64")]
    subprocess.run(
        [gcc, *FLAGS, "-DDRIVER_NEON", *files, str(driver), "-static", "-pthread", "-lm", "-o", str(exe)],
        check=True,
        capture_output=True,
    )
    return qemu, exe


def test_neon_tier_under_qemu(tmp_path, rng):
    qemu, exe = build_neon(tmp_path, DRIVER)
    cases = tmp_path / "cases.bin"
    n = write_cases(cases, rng)
    check_driver_output(subprocess.run([qemu, str(exe), str(cases)], capture_output=True, text=True, timeout=600), n)


def test_neon_attention_under_qemu(tmp_path):
    # the AVX-512 tier runs the AVX2 attention block, which test_attention covers natively
    qemu, exe = build_neon(tmp_path, ATTN_DRIVER)
    check_driver_output(subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=600), 33)


def test_neon_swiglu_under_qemu(tmp_path):
    qemu, exe = build_neon(tmp_path, SWIGLU_DRIVER)
    check_driver_output(subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=600), 41)


def test_avx512_tier(tmp_path, rng):
    if "avx512" in K.available_tiers():
        pytest.skip("this CPU runs the AVX-512 tier natively: test_kernels_vs_generic covers it")
    need(
        Path("/usr/include/simde/x86/avx512.h").exists() and shutil.which("gcc") is not None,
        "SIMDe (libsimde-dev) for AVX-512 emulation",
    )
    need("avx2" in K.available_tiers(), "a CPU with AVX2+FMA (SIMDe's AVX-512 is built on native AVX2/FMA here)")
    exe = tmp_path / "driver_avx512"
    files = [str(KDIR / s) for s in sources.sources_for("x86_64")]
    # every file with the AVX2 tier's flags: native AVX2/FMA/F16C under the emulation, so emulated
    # fused multiply-adds stay fused
    subprocess.run(
        [
            "gcc",
            *FLAGS,
            *sources.TIER_UNIT["avx2"].gcc_flags,
            "-DTMAC_EMULATE_X86",
            "-DDRIVER_AVX512",
            *files,
            str(DRIVER),
            "-pthread",
            "-lm",
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    cases = tmp_path / "cases.bin"
    n = write_cases(cases, rng)
    check_driver_output(subprocess.run([str(exe), str(cases)], capture_output=True, text=True, timeout=600), n)
