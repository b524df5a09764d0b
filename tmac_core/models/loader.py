"""Loading a Llama-family GGUF into the runtime, tensor by tensor as tmac_core.plan
lists them: repack every matrix to its planned bits, gather norms and biases,
compute the RoPE frequencies, and build the Cython LlamaRuntime. GPTQ layers of a
Hugging Face folder enter through `gptq_weight`: their own codes and scales "as in the
file", with an act-order layer's input permutation beside them. No Qt.

Two ways: `write_weights` streams into a cache file (the first load: a slab of
CHUNK_ELEMENTS source weights in memory per thread, repacked in turn and written in order,
each source tensor's pages dropped once read, so memory stays near the packed size
however large the model), and
`load_weights` repacks into memory (no cache folder, or a disk that refused the file).
A source without row slabs (a Hugging Face folder, loading/hf.py) streams a whole tensor
at a time."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from tmac_core.errors import TokenizerError, UnsupportedModelError
from tmac_core.kernels import PackedWeight, get_num_threads, pack, pack_super
from tmac_core.loading.calibrate import AwareQuantizer, aware_matrix
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGMLType, GGUFFile
from tmac_core.loading.gptq import GPTQLinear
from tmac_core.loading.repack import quantize, repack
from tmac_core.models._llama import LlamaRuntime
from tmac_core.plan import (
    TILE_ROWS,
    ModelConfig,
    TensorSpec,
    input_perm_name,
    tensor_plan,
    vector_plan,
)
from tmac_core.tokenizer import tokenizer_from_gguf
from tmac_core.tokenizer.hf_files import tokenizer_from_folder

if TYPE_CHECKING:
    from tmac_core.loading.cache import CacheWriter

# What the runtime is built from, by tensor name: PackedWeight matrices (tensor_plan),
# float32 vectors (vector_plan: norms, biases), "rope.inv_freq", the float64 RoPE
# inverse frequencies (head_dim/2,), and for each act-order GPTQ matrix (spec.input_perm)
# its int32 input permutation (cols,) under plan.input_perm_name(name)
Weights = dict[str, PackedWeight | NDArray[np.float32] | NDArray[np.float64] | NDArray[np.int32]]
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


def _check_packed(gguf: GGUFFile, spec: TensorSpec, packed: PackedWeight) -> PackedWeight:
    """The repacker and the plan must agree, or the app's size estimates drift from the runtime."""
    got = (packed.shape, packed.bits, packed.group_size, packed.super_size, packed.scale_format)
    if got != ((spec.rows, spec.cols), spec.bits, spec.group_size, spec.super_size, spec.scale_format):
        raise UnsupportedModelError(
            f"{gguf.path}: {spec.name} packed as {packed!r}, the plan says"
            f" {spec.bits} bits in groups of {spec.group_size}, scale format {spec.scale_format}"
        )
    return packed


class GPTQSource(Protocol):
    """What a source with GPTQ layers offers beside the GGUFFile interface (loading/hf.HFModel)."""

    def is_gptq_layer(self, name: str) -> bool: ...
    def gptq_layer(self, name: str) -> GPTQLinear: ...


def gptq_weight(
    gguf: GGUFFile, spec: TensorSpec, bits: int | None
) -> tuple[PackedWeight, NDArray[np.int32] | None] | None:
    """A GPTQ layer of a Hugging Face folder (loading/gptq.py), or None for any other matrix.

    bits None: the layer's own codes, scales and zero points in the SUPER format, no
    requantization, and for an act-order layer the input permutation its kernel columns
    follow (identity when the layer's groups happen to be in order). bits 4 / 2: the exact
    float weights, requantized by our quantizer like a float checkpoint's."""
    if not callable(getattr(gguf, "is_gptq_layer", None)):  # a GGUF file
        return None
    source = cast(GPTQSource, gguf)
    if not source.is_gptq_layer(spec.name):
        return None
    layer = source.gptq_layer(spec.name)
    if bits is not None:
        codes, scales, zeros = quantize(layer.weight(), spec.bits, spec.group_size)
        return pack(codes, scales, zeros, bits=spec.bits, group_size=spec.group_size), None
    packed = pack_super(
        layer.codes,
        layer.d,
        layer.dmin,
        layer.sc,
        layer.mn,
        bits=layer.bits,
        group_size=layer.group_size,
        super_size=layer.super_size,
        code_offset=layer.code_offset,
    )
    if packed.super_size != spec.super_size:
        raise UnsupportedModelError(
            f"{gguf.path}: {spec.name} packed with super-blocks of {packed.super_size}, the plan says {spec.super_size}"
        )
    if not spec.input_perm:
        return packed, None
    perm = np.arange(spec.cols, dtype=np.int32) if layer.perm is None else layer.perm
    return packed, perm


def load_weights(
    gguf: GGUFFile, cfg: ModelConfig, bits: int | None, progress: Callable[[float], None] | None = None
) -> Weights:
    """Every tensor the runtime needs: PackedWeight matrices, float32 vectors."""
    source = {name: info.ggml_type.name for name, info in gguf.tensors.items()}
    plan = tensor_plan(cfg, bits, source)
    packed: dict[str, PackedWeight] = {}
    perms: dict[str, NDArray[np.int32]] = {}
    aware = _aware(gguf, cfg, plan)
    for i, spec in enumerate(plan):
        mode = None if bits is None and spec.exact else spec.bits  # None: the file's own codes
        gptq = gptq_weight(gguf, spec, bits)
        if aware is not None and aware_matrix(spec):
            packed[spec.name] = _check_packed(gguf, spec, _aware_packed(aware, spec))
        elif gptq is not None:
            packed[spec.name] = _check_packed(gguf, spec, gptq[0])
            if gptq[1] is not None:
                perms[input_perm_name(spec.name)] = gptq[1]
        else:
            packed[spec.name] = _check_packed(gguf, spec, repack(gguf, spec.name, mode, spec.group_size))
        if progress:
            progress((i + 1) / len(plan))
    weights: Weights = dict(packed)
    weights.update(perms)
    for vec in vector_plan(cfg):
        if vec.role != "rope_freqs":  # folded into rope.inv_freq below
            weights[vec.name] = dequantize_tensor(gguf, vec.name).astype(np.float32).reshape(-1)
    weights["rope.inv_freq"] = inv_frequencies(cfg, gguf)
    return weights


def _aware(gguf: GGUFFile, cfg: ModelConfig, plan: list[TensorSpec]) -> AwareQuantizer | None:
    """The 2-bit preset's activation-aware quantizer (loading/calibrate.py), when the plan has
    matrices for it: it runs the model over the calibration text once, block by block."""
    if not any(aware_matrix(spec) for spec in plan):
        return None
    try:
        if hasattr(gguf, "folder"):  # a Hugging Face folder (loading/hf.py)
            tokenizer = tokenizer_from_folder(gguf.folder, cfg.vocab_size)
        else:
            tokenizer = tokenizer_from_gguf(gguf.metadata, gguf.path)
    except TokenizerError:  # no text can be run: the plain quantizer (Engine.load refuses such a file
        return None  # before it gets here; this is a weights-only load of it)
    return AwareQuantizer(gguf, cfg, tokenizer, inv_frequencies(cfg, gguf))


def _aware_packed(aware: AwareQuantizer, spec: TensorSpec) -> PackedWeight:
    codes, scales, zeros = aware.quantize(spec)
    return pack(codes, scales, zeros, bits=spec.bits, group_size=spec.group_size)


def row_chunks(rows: int, cols: int) -> list[tuple[int, int]]:
    """(r0, r1) slabs of about CHUNK_ELEMENTS weights, r0 a multiple of TILE_ROWS."""
    step = max(TILE_ROWS, CHUNK_ELEMENTS // max(cols, 1) // TILE_ROWS * TILE_ROWS)
    return [(r0, min(r0 + step, rows)) for r0 in range(0, rows, step)]


def work_bytes(gguf: GGUFFile, cfg: ModelConfig, bits: int | None) -> int:
    """Source bytes write_weights reads: every matrix once (the unit of its progress and ETA)."""
    plan = tensor_plan(cfg, bits, {name: info.ggml_type.name for name, info in gguf.tensors.items()})
    return sum(gguf.tensors[spec.name].nbytes for spec in plan)


def write_weights(
    gguf: GGUFFile, cfg: ModelConfig, bits: int | None, writer: CacheWriter, done: Done | None = None
) -> None:
    """Every tensor the runtime needs, streamed into `writer` (cache.CacheWriter) as it is
    repacked: the same weights load_weights returns, one row slab at a time."""
    report = done or (lambda n: None)
    plan = tensor_plan(cfg, bits, {name: info.ggml_type.name for name, info in gguf.tensors.items()})
    aware = _aware(gguf, cfg, plan)
    for spec in plan:
        if aware is not None and aware_matrix(spec):  # the 2-bit preset's calibrated matrices, whole
            writer.add_packed(spec.name, [_check_packed(gguf, spec, _aware_packed(aware, spec))])
            report(gguf.tensors[spec.name].nbytes)
            _release(gguf, spec.name)
            continue
        gptq = gptq_weight(gguf, spec, bits)
        if gptq is not None:  # a GPTQ layer of a folder: its own arrays, whole
            writer.add_packed(spec.name, [_check_packed(gguf, spec, gptq[0])])
            if gptq[1] is not None:
                writer.add_array(input_perm_name(spec.name), gptq[1])
            report(gguf.tensors[spec.name].nbytes)
            _release(gguf, spec.name)
            continue
        writer.add_packed(spec.name, _repacked_rows(gguf, spec, bits, report))
        _release(gguf, spec.name)
    for vec in vector_plan(cfg):
        if vec.role != "rope_freqs":  # folded into rope.inv_freq below
            writer.add_array(vec.name, dequantize_tensor(gguf, vec.name).astype(np.float32).reshape(-1))
    writer.add_array("rope.inv_freq", inv_frequencies(cfg, gguf))


def _slabs(gguf: GGUFFile, spec: TensorSpec) -> list[tuple[int, int]]:
    """Row slabs of a matrix, or the whole matrix for a source that cannot cut one (a folder, or
    an I2_S tensor: its scale follows its last block; at 2 bits a whole matrix is small)."""
    source = gguf.tensors.get(spec.name)
    if not hasattr(gguf, "rows") or (source is not None and source.ggml_type is GGMLType.I2_S):
        return [(0, spec.rows)]
    return row_chunks(spec.rows, spec.cols)


def _slab(gguf: GGUFFile, name: str, r0: int, r1: int, rows: int) -> GGUFFile:
    return gguf if (r0, r1) == (0, rows) and not hasattr(gguf, "rows") else gguf.rows(name, r0, r1)


def _release(gguf: GGUFFile, name: str) -> None:
    if hasattr(gguf, "release"):
        gguf.release(name)


def _in_order(fn: Callable[[tuple[int, int]], PackedWeight], spans: list[tuple[int, int]]) -> Iterator[PackedWeight]:
    """fn of each span, in order, the next ones computed meanwhile on the kernels' threads
    (as many slabs in memory as threads): the exact repack's numpy unpacking of one slab
    overlaps the packing of another. One thread, or one span: plainly in turn."""
    n = min(get_num_threads(), len(spans))
    if n <= 1:
        yield from map(fn, spans)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="repack") as pool:
        ahead = deque(pool.submit(fn, span) for span in spans[:n])
        for span in spans[n:] + [None] * n:
            result = ahead.popleft().result()
            if span is not None:
                ahead.append(pool.submit(fn, span))
            yield result


def _repacked_rows(gguf: GGUFFile, spec: TensorSpec, bits: int | None, done: Done) -> Iterator[PackedWeight]:
    nbytes = gguf.tensors[spec.name].nbytes
    mode = None if bits is None and spec.exact else spec.bits  # None: the file's own codes
    slabs = _slabs(gguf, spec)

    def repacked(span: tuple[int, int]) -> PackedWeight:
        r0, r1 = span
        packed = repack(_slab(gguf, spec.name, r0, r1, spec.rows), spec.name, mode, spec.group_size)
        return _check_packed(gguf, dataclasses.replace(spec, rows=r1 - r0), packed)

    for (r0, r1), packed in zip(slabs, _in_order(repacked, slabs)):
        yield packed
        done(nbytes * (r1 - r0) // spec.rows)


def build_runtime(
    cfg: ModelConfig, weights: Weights, n_ctx: int, max_batch: int = 32, exact_activations: bool = False
) -> LlamaRuntime:
    return LlamaRuntime(cfg, weights, n_ctx, max_batch, exact_activations)
