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


@dataclasses.dataclass
class Case:
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    bits: int
    group_size: int

    def pack(self) -> K.PackedWeight:
        return K.pack(self.codes, self.scales, self.zeros, bits=self.bits, group_size=self.group_size)

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
