"""Shared generators of kernel test cases: random and adversarial weights and
activations in the shapes the tests sweep. Used by the pytest files and by the
cross-tier C driver (NEON under qemu, AVX-512 under SIMDe)."""

from __future__ import annotations

import dataclasses

import numpy as np

import tmac_core.kernels as K

# (m, k, group_size): M and K off every tile size, single row, per-row and per-tensor scales
SHAPES = [
    (1, 64, 64),
    (63, 96, 32),
    (65, 192, 64),
    (130, 384, 128),
    (64, 256, 128),
    (200, 512, 64),
    (17, 100, 100),
    (70, 37, 37),
    (128, 1024, 1024),
]
BITS = [1, 2, 3, 4, "ternary"]
# layout v2: 5..8-bit planes, 16- and 256-wide groups (16-wide activation groups), ragged M
BITS_V2 = [5, 6, 7, 8]
SHAPES_V2 = [
    (1, 32, 16),
    (63, 96, 16),
    (70, 256, 256),
    (130, 512, 16),
    (65, 768, 256),
    (66, 192, 64),
    (40, 100, 100),
]
# SUPER cases: (m, k, group_size, super_size) as the K-quants and GPTQ use them, ragged M
SUPER_SHAPES = [(1, 256, 16, 256), (63, 512, 32, 256), (70, 256, 16, 256), (130, 96, 32, 32), (65, 384, 128, 128)]
SUPER_KINDS = ["kquant", "signed", "gptq"]
# layout v3 F16_SYM cases: (bits, zero code) as the symmetric GGUF types have them (zero_mult -1:
# Q4_0, Q5_0, Q8_0, and 3 bits; +1: ternary), and wider multipliers the format allows (4 bits z = 0:
# +15; 8 bits z = 0: +255, the largest; 8 bits z = 255: -255)
SYM_ZEROS = [(4, 8), (5, 16), (8, 128), (2, 1), (3, 4), (4, 0), (8, 0), (8, 255), (1, 0)]


@dataclasses.dataclass
class Case:
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    bits: int
    group_size: int
    symmetric: bool = False  # one zero code: the F16_SYM format (layout v3)

    def pack(self, symmetric: bool | None = None) -> K.PackedWeight:
        sym = self.symmetric if symmetric is None else symmetric
        return K.pack(self.codes, self.scales, self.zeros, bits=self.bits, group_size=self.group_size, symmetric=sym)

    def weights(self) -> np.ndarray:
        """The float64 (M, K) weights the codes mean, before any rounding of ours."""
        g = np.arange(self.codes.shape[1]) // self.group_size
        s = np.broadcast_to(self.scales, (self.codes.shape[0], self.codes.shape[1] // self.group_size))
        z = np.full_like(s, 1 << (self.bits - 1)) if self.zeros is None else np.broadcast_to(self.zeros, s.shape)
        return s[:, g].astype(np.float64) * (self.codes.astype(np.float64) - z[:, g])


def make_case(rng, m, k, group_size, bits, *, zeros=True, codes="random", per_tensor=False) -> Case:
    ternary = bits == "ternary"
    b = 2 if ternary else bits
    ng = k // group_size
    if codes == "zero":
        q = np.zeros((m, k), np.uint8)
    elif codes == "max":
        q = np.full((m, k), 2 if ternary else (1 << b) - 1, np.uint8)
    else:
        q = rng.integers(0, 3 if ternary else 1 << b, (m, k), dtype=np.uint8)
    s = rng.uniform(0.002, 0.05, (1, 1) if per_tensor else (m, ng)).astype(np.float32)
    if ternary:
        z = np.ones_like(s)
    elif zeros:
        z = rng.uniform(0, (1 << b) - 1, s.shape).astype(np.float32)
    else:
        z = None
    return Case(q, s, z, b, group_size)


def make_sym_case(rng, m, k, group_size, bits, zero) -> Case:
    """F16_SYM: one zero code for the tensor, fp16 scales of both signs (Q4_0's d may be
    negative), some groups all zero (d = 0)."""
    q = rng.integers(0, 1 << bits, (m, k), dtype=np.uint8)
    ng = k // group_size if k % group_size == 0 else 1
    s = (rng.uniform(0.002, 0.05, (m, ng)) * rng.choice([-1, 1], (m, ng))).astype(np.float16).astype(np.float32)
    s[rng.random((m, ng)) < 0.05] = 0.0
    return Case(q, s, np.full_like(s, zero), bits, group_size, symmetric=True)


@dataclasses.dataclass
class SuperCase:
    """w = d[u]*sc[g]*(q - z0) - dmin[u]*mn[g] (LAYOUT.md §Scales SUPER)."""

    codes: np.ndarray
    d: np.ndarray  # float32, each an fp16 value (M, K // super_size)
    dmin: np.ndarray
    sc: np.ndarray  # int (M, K // group_size)
    mn: np.ndarray
    bits: int
    group_size: int
    super_size: int
    z0: int
    mins: bool = True  # False: the SUPER_NOMIN format (layout v3), dmin and mn all zero

    @property
    def code_offset(self) -> float:
        return ((1 << self.bits) - 1) / 2 - self.z0

    def pack(self, mins: bool | None = None) -> K.PackedWeight:
        keep = self.mins if mins is None else mins
        return K.pack_super(
            self.codes,
            self.d,
            self.dmin if keep else None,
            self.sc,
            self.mn if keep else None,
            bits=self.bits,
            group_size=self.group_size,
            super_size=self.super_size,
            code_offset=self.code_offset,
        )

    def weights(self) -> np.ndarray:
        """The float64 (M, K) weights the codes mean."""
        k = self.codes.shape[1]
        g, u = np.arange(k) // self.group_size, np.arange(k) // self.super_size
        d, dmin = self.d.astype(np.float64)[:, u], self.dmin.astype(np.float64)[:, u]
        sc, mn = self.sc.astype(np.float64)[:, g], self.mn.astype(np.float64)[:, g]
        return d * sc * (self.codes.astype(np.float64) - self.z0) - dmin * mn


def make_super_case(rng, m, k, group_size, super_size, bits, kind="kquant") -> SuperCase:
    """kquant: 6-bit sub-scales and mins, z0 = 0 (Q4_K, Q5_K; Q2_K with 4 bits);
    signed: int8 sub-scales, no mins, z0 = 2^(bits-1) (Q6_K, Q3_K);
    gptq: sc = 1, mn = the zero code, d = dmin = the group scale, z0 = 0."""
    ns, ng = k // super_size, k // group_size
    q = rng.integers(0, 1 << bits, (m, k), dtype=np.uint8)

    def fp16(lo, hi, shape):
        return rng.uniform(lo, hi, shape).astype(np.float16).astype(np.float32)

    if kind == "kquant":
        d, dmin = fp16(1e-4, 2e-3, (m, ns)), fp16(1e-4, 2e-3, (m, ns))
        sc, mn, z0 = rng.integers(0, 64, (m, ng)), rng.integers(0, 64, (m, ng)), 0
    elif kind == "signed":
        d, dmin = fp16(1e-4, 2e-3, (m, ns)), np.zeros((m, ns), np.float32)
        sc, mn, z0 = rng.integers(-128, 128, (m, ng)), np.zeros((m, ng), np.int64), 1 << (bits - 1)
    elif kind == "gptq":
        if super_size != group_size:
            raise ValueError("GPTQ has one scale per group: super_size == group_size")
        d = fp16(2e-3, 5e-2, (m, ns))
        dmin = d.copy()
        sc, mn, z0 = np.ones((m, ng), np.int64), rng.integers(0, min(1 << bits, 128), (m, ng)), 0
    else:
        raise ValueError(kind)
    return SuperCase(q, d, dmin, sc, mn, bits, group_size, super_size, z0)


def make_activations(rng, n, k, kind="normal") -> np.ndarray:
    x = rng.standard_normal((n, k)).astype(np.float32)
    if kind == "outliers":  # 1.5% of activations x20, as in LLM hidden states
        mask = rng.random((n, k)) < 0.015
        x[mask] *= 20
    elif kind == "extreme":  # every activation at +-max of a large range
        x = np.where(rng.random((n, k)) < 0.5, -1e4, 1e4).astype(np.float32)
    elif kind == "zero_groups":  # whole activation groups of zeros
        for g in range(0, k, 64):
            if (g // 64) % 2 == 0:
                x[:, g : g + 64] = 0
    return x


def nmse(ref, got) -> float:
    ref = np.asarray(ref, np.float64)
    return float(((ref - got) ** 2).sum() / max((ref**2).sum(), 1e-30))
