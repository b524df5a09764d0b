"""The fixed inputs of tests/data/layout_golden.json and, run as a script, its regeneration:
`python -m tests.kernels.layout_golden` after a deliberate layout change (bump the version
in layout.h, layout.py and LAYOUT.md first; a golden file that changes without a version
bump is a layout bug)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

import tmac_core.kernels as K

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "layout_golden.json"


def f16_case(bits: int, group_size: int) -> K.PackedWeight:
    """Readable F16 input: codes count up, scales and zeros are simple (70 x 128: a ragged tile)."""
    m, k = 70, 128
    i = np.arange(m * k, dtype=np.int64).reshape(m, k)
    codes = ((i * 7 + i // 13) % (1 << bits)).astype(np.uint8)
    n_groups = k // group_size
    j = np.arange(m * n_groups).reshape(m, n_groups)
    scales = ((j % 5) + 1).astype(np.float32) / 64
    zeros = (j % (1 << bits)).astype(np.float32)
    return K.pack(codes, scales, zeros, bits=bits, group_size=group_size)


def sym_case(bits: int, group_size: int, zero: int) -> K.PackedWeight:
    """Readable F16_SYM input (layout v3): f16_case's codes and scales, one zero code."""
    m, k = 70, 128
    i = np.arange(m * k, dtype=np.int64).reshape(m, k)
    codes = ((i * 7 + i // 13) % (1 << bits)).astype(np.uint8)
    j = np.arange(m * (k // group_size)).reshape(m, -1)
    scales = ((j % 5) + 1).astype(np.float32) / 64
    return K.pack(codes, scales, np.full_like(scales, zero), bits=bits, group_size=group_size, symmetric=True)


def super_case(bits: int, group_size: int, super_size: int, z0: int, signed: bool, mins: bool = True) -> K.PackedWeight:
    """Readable SUPER input: d, dmin powers of two over 2^-10, sub-scales cycle (70 x 512)."""
    m, k = 70, 512
    i = np.arange(m * k, dtype=np.int64).reshape(m, k)
    codes = ((i * 5 + i // 11) % (1 << bits)).astype(np.uint8)
    u = np.arange(m * (k // super_size)).reshape(m, -1)
    d = (2.0 ** -(10 + u % 3)).astype(np.float32)
    dmin = np.zeros_like(d) if signed else (2.0 ** -(11 + u % 2)).astype(np.float32)
    g = np.arange(m * (k // group_size)).reshape(m, -1)
    sc = (g * 37 % 256 - 128) if signed else (g * 7 % 64)
    mn = np.zeros_like(sc) if signed else (g * 11 % 64)
    return K.pack_super(
        codes,
        d,
        dmin if mins else None,
        sc,
        mn if mins else None,
        bits=bits,
        group_size=group_size,
        super_size=super_size,
        code_offset=((1 << bits) - 1) / 2 - z0,
    )


def cases() -> dict[str, K.PackedWeight]:
    out = {f"bits{b}": f16_case(b, 64) for b in (1, 2, 3, 4)}
    out["bits6_g16"] = f16_case(6, 16)
    out["bits8_g128"] = f16_case(8, 128)
    out["super_q4k"] = super_case(4, 32, 256, 0, signed=False)  # Q4_K's shape
    out["super_q6k"] = super_case(6, 16, 256, 32, signed=True)  # Q6_K's shape
    out["sym_q4_0"] = sym_case(4, 32, 8)  # v3: Q4_0's F16_SYM (zero_mult -1)
    out["sym_ternary"] = sym_case(2, 128, 1)  # v3: TQ2_0's F16_SYM (zero_mult +1)
    out["nomin_q6k"] = super_case(6, 16, 256, 32, signed=True, mins=False)  # v3: Q6_K's SUPER_NOMIN
    return out


def digest(packed: K.PackedWeight) -> dict[str, object]:
    entry: dict[str, object] = {
        "planes_head": packed.planes[:32].tobytes().hex(),
        "planes_sha256": hashlib.sha256(packed.planes.tobytes()).hexdigest(),
        "scales_sha256": hashlib.sha256(packed.scales.tobytes()).hexdigest(),
        "tensor_scale": packed.tensor_scale,
    }
    if packed.sub is not None:
        entry["sub_sha256"] = hashlib.sha256(packed.sub.tobytes()).hexdigest()
    if packed.scale_format in (K.layout.SCALES_F16_SYM, K.layout.SCALES_SUPER_NOMIN):
        entry["scale_format"] = packed.scale_format
        entry["zero_mult"] = packed.zero_mult
    return entry


def main() -> None:
    golden = {"layout_version": K.LAYOUT_VERSION, **{name: digest(p) for name, p in cases().items()}}
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
