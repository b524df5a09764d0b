"""Loading a Llama-family GGUF into the runtime, tensor by tensor as tmac_core.plan
lists them: repack every matrix to its planned bits, gather norms and biases,
compute the RoPE frequencies, and build the Cython LlamaRuntime. No Qt.

Two ways: `write_weights` streams into a cache file (the first load: one slab of
CHUNK_ELEMENTS source weights in memory at a time, each source tensor's pages dropped
once read, so memory stays near the packed size however large the model), and
`load_weights` repacks into memory (no cache folder, or a disk that refused the file)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tmac_core.errors import UnsupportedModelError
from tmac_core.kernels import PackedWeight, dequantize, pack
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGUFFile
from tmac_core.loading.repack import quantize, repack
from tmac_core.models._llama import LlamaRuntime
from tmac_core.plan import TILE_ROWS, ModelConfig, TensorSpec, output_source, tensor_plan, vector_plan

if TYPE_CHECKING:
    from tmac_core.loading.cache import CacheWriter

# What the runtime is built from, by tensor name: PackedWeight matrices (tensor_plan),
# float32 vectors (vector_plan: norms, biases) and "rope.inv_freq", the float64 RoPE
# inverse frequencies (head_dim/2,)
Weights = dict[str, PackedWeight | NDArray[np.float32] | NDArray[np.float64]]
# Source weights repacked at a time by write_weights: 16 MB as float32; the quantizer's
# temporaries are a few times that. Rows go in multiples of 64 (one kernel tile), so the
# tile-major packed chunks concatenate into the whole matrix.
CHUNK_ELEMENTS = 1 << 22
Done = Callable[[int], None]  # source bytes just repacked; raising from it stops the load


def inv_frequencies(cfg: ModelConfig, gguf: GGUFFile | None = None) -> NDArray[np.float64]:
    """RoPE inverse frequencies (head_dim/2,), with Llama-3 scaling or ggml freq factors."""
    half = cfg.head_dim // 2
    inv = cfg.rope_theta ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.head_dim)
    rs = cfg.rope_scaling
    if rs is not None:  # transformers' _compute_llama3_parameters
        low_wavelen = rs.original_context_length / rs.low_freq_factor
        high_wavelen = rs.original_context_length / rs.high_freq_factor
        wavelen = 2 * math.pi / inv
        smooth = (rs.original_context_length / wavelen - rs.low_freq_factor) / (
            rs.high_freq_factor - rs.low_freq_factor
        )
        scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
        mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        inv = np.where(mid, (1 - smooth) * inv / rs.factor + smooth * inv, scaled)
    if cfg.rope_freqs and gguf is not None:  # ggml divides each angle by its factor
        inv = inv / dequantize_tensor(gguf, "rope_freqs.weight").astype(np.float64).reshape(-1)[:half]
    return inv


def output_residual(gguf: GGUFFile, name: str, packed: PackedWeight, spec: TensorSpec) -> PackedWeight:
    """The output layer's error after 4-bit packing, itself packed at 4 bits in
    32-wide groups: logits = W4·x + R4·x carry ~8-bit weights. This is where
    the logits' precision is decided, and one extra pass over one matrix costs
    what llama.cpp pays for keeping that matrix at Q6_K/Q8_0."""
    w = dequantize_tensor(gguf, name).reshape(packed.m, packed.k)
    residual = w - dequantize(packed)
    codes, scales, zeros = quantize(residual, spec.bits, spec.group_size)
    return pack(codes, scales, zeros, bits=spec.bits, group_size=spec.group_size)


def _check_packed(gguf: GGUFFile, spec: TensorSpec, packed: PackedWeight) -> PackedWeight:
    """The repacker and the plan must agree, or the app's size estimates drift from the runtime."""
    if (packed.shape, packed.bits, packed.group_size) != ((spec.rows, spec.cols), spec.bits, spec.group_size):
        raise UnsupportedModelError(
            f"{gguf.path}: {spec.name} packed as {packed!r}, the plan says"
            f" {spec.bits} bits in groups of {spec.group_size}"
        )
    return packed


def load_weights(
    gguf: GGUFFile, cfg: ModelConfig, bits: int, progress: Callable[[float], None] | None = None
) -> Weights:
    """Every tensor the runtime needs: PackedWeight matrices, float32 vectors."""
    source = {name: info.ggml_type.name for name, info in gguf.tensors.items()}
    plan = tensor_plan(cfg, bits, source)
    from_file = [spec for spec in plan if spec.role != "output_residual"]
    packed: dict[str, PackedWeight] = {}
    for i, spec in enumerate(from_file):
        packed[spec.name] = _check_packed(gguf, spec, repack(gguf, spec.name, spec.bits, spec.group_size))
        if progress:
            progress((i + 1) / len(from_file))
    for spec in plan:
        if spec.role == "output_residual":
            out = output_source(cfg)
            packed[spec.name] = _check_packed(gguf, spec, output_residual(gguf, out, packed[out], spec))
    weights: Weights = dict(packed)
    for vec in vector_plan(cfg):
        if vec.role != "rope_freqs":  # folded into rope.inv_freq below
            weights[vec.name] = dequantize_tensor(gguf, vec.name).astype(np.float32).reshape(-1)
    weights["rope.inv_freq"] = inv_frequencies(cfg, gguf)
    return weights


def row_chunks(rows: int, cols: int) -> list[tuple[int, int]]:
    """(r0, r1) slabs of about CHUNK_ELEMENTS weights, r0 a multiple of TILE_ROWS."""
    step = max(TILE_ROWS, CHUNK_ELEMENTS // max(cols, 1) // TILE_ROWS * TILE_ROWS)
    return [(r0, min(r0 + step, rows)) for r0 in range(0, rows, step)]


def work_bytes(gguf: GGUFFile, cfg: ModelConfig, bits: int) -> int:
    """Source bytes write_weights reads: every matrix once, the output matrix again for
    its residual pass (the unit of its progress and ETA)."""
    plan = tensor_plan(cfg, bits, {name: info.ggml_type.name for name, info in gguf.tensors.items()})
    total = sum(gguf.tensors[spec.name].nbytes for spec in plan if spec.role != "output_residual")
    if any(spec.role == "output_residual" for spec in plan):
        total += gguf.tensors[output_source(cfg)].nbytes
    return total


def write_weights(gguf: GGUFFile, cfg: ModelConfig, bits: int, writer: CacheWriter, done: Done | None = None) -> None:
    """Every tensor the runtime needs, streamed into `writer` (cache.CacheWriter) as it is
    repacked: the same weights load_weights returns, one row slab at a time."""
    report = done or (lambda n: None)
    plan = tensor_plan(cfg, bits, {name: info.ggml_type.name for name, info in gguf.tensors.items()})
    for spec in plan:
        if spec.role != "output_residual":
            writer.add_packed(spec.name, _repacked_rows(gguf, spec, report))
            gguf.release(spec.name)
    for spec in plan:
        if spec.role == "output_residual":
            writer.add_packed(spec.name, _residual_rows(gguf, output_source(cfg), spec, writer, report))
            gguf.release(output_source(cfg))
    for vec in vector_plan(cfg):
        if vec.role != "rope_freqs":  # folded into rope.inv_freq below
            writer.add_array(vec.name, dequantize_tensor(gguf, vec.name).astype(np.float32).reshape(-1))
    writer.add_array("rope.inv_freq", inv_frequencies(cfg, gguf))


def _repacked_rows(gguf: GGUFFile, spec: TensorSpec, done: Done) -> Iterator[PackedWeight]:
    nbytes = gguf.tensors[spec.name].nbytes
    for r0, r1 in row_chunks(spec.rows, spec.cols):
        part = gguf.rows(spec.name, r0, r1)
        packed = repack(part, spec.name, spec.bits, spec.group_size)
        yield _check_packed(gguf, dataclasses.replace(spec, rows=r1 - r0), packed)
        done(nbytes * (r1 - r0) // spec.rows)


def _residual_rows(
    gguf: GGUFFile, out: str, spec: TensorSpec, writer: CacheWriter, done: Done
) -> Iterator[PackedWeight]:
    """output_residual, a row slab at a time, against the output matrix as written."""
    nbytes = gguf.tensors[out].nbytes
    for r0, r1 in row_chunks(spec.rows, spec.cols):
        w = dequantize_tensor(gguf.rows(out, r0, r1), out).reshape(r1 - r0, spec.cols)
        residual = w - dequantize(writer.read_rows(out, r0, r1))
        codes, scales, zeros = quantize(residual, spec.bits, spec.group_size)
        packed = pack(codes, scales, zeros, bits=spec.bits, group_size=spec.group_size)
        yield _check_packed(gguf, dataclasses.replace(spec, rows=r1 - r0), packed)
        done(nbytes * (r1 - r0) // spec.rows)


def build_runtime(cfg: ModelConfig, weights: Weights, n_ctx: int, max_batch: int = 32) -> LlamaRuntime:
    return LlamaRuntime(cfg, weights, n_ctx, max_batch)
