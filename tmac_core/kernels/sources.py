"""The kernels' C sources and compiler flags: the one list that setup.py builds the extension
from and the cross-tier tests (tests/kernels/test_cross_tiers.py) compile their drivers from.

Baseline files (generic tier, CPU detection, dispatch, the attention driver, the thread pool)
get no ISA flag and never -march=native, so the binary runs on any x86-64 and any ARMv8. Each
SIMD tier is its own set of translation units with its own flags, called only after run-time
detection. -ffp-contract=off everywhere: the tiers must round exactly like the generic spec,
so no compiler may fuse a multiply-add we did not write.

Standard library only, and no import from the package: setup.py loads this file by path,
before tmac_core is importable. Paths are relative to this folder (tmac_core/kernels/).
"""

from __future__ import annotations

from typing import NamedTuple

X86 = frozenset({"x86_64", "amd64", "x64"})
ARM = frozenset({"arm64", "aarch64"})

GCC_COMMON = ("-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function")
MSVC_COMMON = ("/O2", "/fp:precise")
INCLUDE_DIR = "include"

BASELINE_SOURCES = (
    "generic/lut_build.c",
    "generic/lut_gemv.c",
    "generic/attention.c",
    "generic/activation.c",
    "cpu_features.c",
    "dispatch.c",
    "attention.c",
    "thread_pool.c",
)


class TierUnit(NamedTuple):
    """One SIMD tier's translation units, compiled with that tier's flags on `archs` only."""

    tier: str
    sources: tuple[str, ...]
    gcc_flags: tuple[str, ...]
    msvc_flags: tuple[str, ...]
    archs: frozenset[str]


TIER_UNITS = (
    TierUnit(
        "avx2",
        ("x86/avx2/lut_build.c", "x86/avx2/lut_gemv.c", "x86/avx2/attention.c", "x86/avx2/activation.c"),
        ("-mavx2", "-mfma", "-mf16c"),
        ("/arch:AVX2",),
        X86,
    ),
    # the AVX-512 tier has its own GEMV and runs the AVX2 files for everything else
    TierUnit(
        "avx512",
        ("x86/avx512/lut_gemv.c",),
        ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"),
        ("/arch:AVX512",),
        X86,
    ),
    TierUnit(
        "neon",
        ("arm/neon/lut_build.c", "arm/neon/lut_gemv.c", "arm/neon/attention.c", "arm/neon/activation.c"),
        (),
        (),
        ARM,
    ),
)
TIER_UNIT = {unit.tier: unit for unit in TIER_UNITS}


def sources_for(arch: str) -> tuple[str, ...]:
    """Every C file the extension is built from on `arch` (a platform.machine() name, lowercase)."""
    return BASELINE_SOURCES + tuple(s for unit in TIER_UNITS if arch in unit.archs for s in unit.sources)
