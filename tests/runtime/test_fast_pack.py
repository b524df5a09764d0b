"""The C packer (pack.c through tmac_core.loading.fastquant) against kernels/layout.py's numpy
spec, byte for byte: the bit planes, the F16 scale pairs (float64 arithmetic, fp16 rounding
with its ties, subnormals and overflow) and the SUPER tiles over a sweep of bits 1..8, group
sizes, per-row groups and ragged row counts; the same bytes for any thread split; the spec's
errors for bad codes and scales; the binding's refusal of sizes that do not fit; and whole
first loads (cache files) equal
to the ones the numpy spec writes; float matrices quantized in place from the file as from
their float32 copy."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.model_mutations import rewrite, write_tiny_synth
from tmac_core.config import config_from_gguf
from tmac_core.errors import ModelFormatError
from tmac_core.kernels import layout
from tmac_core.loading import _fastquant, cache, fastquant, repack
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGUFFile
from tmac_core.models import loader

RAGGED_ROWS = (1, 64, 130)
GROUPS = (16, 32, 64, 128, 256, "row")


def same(native: tuple, spec: tuple) -> None:
    assert len(native) == len(spec)
    for a, b in zip(native, spec):
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
        else:
            assert a == b and type(a) is type(b)


def both(fn, *args, **kw) -> tuple:
    """fn's result natively and by the spec, the same, or the same ValueError from both."""
    try:
        spec = fn(*args, native=False, **kw)
    except ValueError as e:
        with pytest.raises(ValueError) as got:
            fn(*args, **kw)
        assert str(got.value) == str(e)
        return ()
    native = fn(*args, **kw)
    same(native, spec)
    return native


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("group", GROUPS)
def test_f16_format_equals_the_spec(bits, group):
    rng = np.random.default_rng(bits * 10 + len(str(group)))
    for m in RAGGED_ROWS:
        k = 250 if group == "row" else 256
        gs = k if group == "row" else group
        n = 1 if group == "row" else k // gs
        codes = rng.integers(0, 1 << bits, (m, k)).astype(np.uint8)
        s32 = (rng.standard_normal((m, n)) * 0.02).astype(np.float32)
        z32 = (rng.random((m, n)) * ((1 << bits) - 1)).astype(np.float32)
        kw = {"bits": bits, "group_size": gs}
        assert both(layout.pack_arrays, codes, s32, z32, **kw)  # float32 scales and zeros
        assert both(layout.pack_arrays, codes, s32, None, **kw)  # the symmetric zero
        assert both(layout.pack_arrays, codes, s32.astype(np.float64) * 1.1, z32, **kw)  # float64: mixed dtypes
        assert both(layout.pack_arrays, codes, np.float32(0.37), z32[:, :1], **kw)  # broadcasts
        assert both(layout.pack_arrays, codes, s32, np.round(z32), tensor_scale=2.0**-8, **kw)
        assert both(layout.pack_arrays, codes, np.zeros_like(s32), z32, **kw)  # all zero: tensor_scale 1
        assert both(layout.pack_arrays, codes.astype(np.int64), s32, z32, **kw)  # other integer codes


def test_fp16_rounding_of_the_scale_pairs_equals_the_spec():
    """Ties between two fp16 values (both parities), subnormals, signed zeros and the edge
    of fp16's range: numpy's float64 -> fp16 rounding, exactly."""
    rng = np.random.default_rng(7)
    m, bits = 64, 4
    h = rng.integers(0, 0x7BFF, 4096).astype(np.uint16)  # finite fp16 magnitudes below the largest
    base = h.view(np.float16).astype(np.float64)
    up = np.nextafter(base.astype(np.float16), np.float16(np.inf)).astype(np.float64)
    tie = (base + up) / 2  # exactly halfway in float64
    spread = rng.choice([-1.0, 1.0], 4096) * 2.0 ** rng.uniform(-1080, 15.99, 4096)  # float64 subnormals too
    values = np.concatenate(
        [base, tie, np.nextafter(tie, 0), np.nextafter(tie, np.inf), spread, [0.0, -0.0, 2.0**-25, 5e-324]]
    )
    values = np.concatenate([values, -values])
    values = values[: values.size // m * m]
    for zeros in (None, np.full(values.size // m, 7.5)):
        s = (values * 2).reshape(m, -1)  # sh = s / 2 = the value itself at tensor_scale 1
        z = None if zeros is None else zeros.reshape(1, -1)
        codes = np.zeros((m, s.shape[1] * 16), np.uint8)
        packed = both(layout.pack_arrays, codes, s, z, bits=bits, group_size=16, tensor_scale=1.0)
        assert packed and np.unique(packed[1]).size > 4000  # packed, not refused
    for v, fits in ((65504.0, True), (65519.99, True), (65520.0, False), (1e300, False)):
        one = both(
            layout.pack_arrays,
            np.zeros((1, 16), np.uint8),
            np.array([[2 * v]]),
            bits=bits,
            group_size=16,
            tensor_scale=1.0,
        )
        assert bool(one) == fits


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("group", (16, 32, 64, 128, 256))
def test_super_format_equals_the_spec(bits, group):
    rng = np.random.default_rng(bits * 100 + group)
    for m in RAGGED_ROWS:
        k = 512
        super_size = 256
        codes = rng.integers(0, 1 << bits, (m, k)).astype(np.uint8)
        d = (rng.random((m, k // super_size)) * 0.01).astype(np.float16)
        dmin = (rng.random((m, k // super_size)) * 0.01).astype(np.float16)
        sc = rng.integers(-128, 128, (m, k // group)).astype(np.int8)
        mn = rng.integers(0, 64, (m, k // group))  # int64: converted like the spec does
        kw = {"bits": bits, "group_size": group, "super_size": super_size, "code_offset": 1.5}
        assert both(layout.pack_super_arrays, codes, d, dmin, sc, mn, **kw)
        assert both(layout.pack_super_arrays, codes, d.astype(np.float32), dmin, sc, mn, **kw)


def test_the_spec_errors_come_from_the_native_path_too():
    codes = np.zeros((70, 64), np.uint8)
    codes[69, 63] = 16
    s = np.ones((70, 2), np.float32)
    assert both(layout.pack_arrays, codes, s, bits=4, group_size=32) == ()  # a code >= 2**bits
    codes[69, 63] = 15
    for bad in (np.nan, np.inf):
        s2 = s.copy()
        s2[3, 1] = bad
        assert both(layout.pack_arrays, codes, s2, bits=4, group_size=32) == ()
        assert both(layout.pack_arrays, codes, s, np.where(s2 == 1, 0, s2), bits=4, group_size=32) == ()
    assert both(layout.pack_arrays, codes, s * 1e6, bits=4, group_size=32, tensor_scale=2.0**-20) == ()
    assert both(layout.pack_arrays, codes, s, bits=4, group_size=32, tensor_scale=3.0) == ()
    assert both(layout.pack_arrays, codes[0], s, bits=4, group_size=32) == ()
    assert both(layout.pack_arrays, codes, s, bits=9, group_size=32) == ()
    assert both(layout.pack_arrays, codes, s[:, :1].repeat(3, axis=1), bits=4, group_size=32) == ()
    d = np.ones((70, 1), np.float32)
    kw = {"bits": 4, "group_size": 32, "super_size": 64, "code_offset": 7.5}
    assert both(layout.pack_super_arrays, codes, d * 1.0001, d, s.astype(np.int8), s.astype(np.int8), **kw) == ()
    assert both(layout.pack_super_arrays, codes, d, d, s * 200, s.astype(np.int8), **kw) == ()


def test_plane_bytes_do_not_depend_on_the_thread_split():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 64, (64 * 37 + 5, 1024)).astype(np.uint8)  # > PACK_SPLIT_BYTES of planes
    one = fastquant.pack_planes(codes, 6, 1024, threads=1)
    assert one.nbytes >= fastquant.PACK_SPLIT_BYTES
    for threads in (2, 3, 8):
        assert np.array_equal(fastquant.pack_planes(codes, 6, 1024, threads=threads), one)
    assert np.array_equal(one, layout._pack_planes(codes, 6, 1024))


def test_the_binding_refuses_sizes_that_do_not_fit():
    codes = np.zeros((65, 64), np.uint8)
    per_tile = 64 // 8 * 4 * 64
    ok = np.zeros(2 * per_tile, np.uint8)
    assert _fastquant.pack_planes(codes, 4, 64, 0, 2, ok) == -1
    for args in (
        (4, 64, 0, 2, np.zeros(2 * per_tile - 1, np.uint8)),  # a destination too small
        (4, 64, 0, 3, np.zeros(3 * per_tile, np.uint8)),  # a tile past the rows
        (4, 64, 1, 0, ok),  # a backwards range
        (4, 60, 0, 2, ok),  # k_pad < K
        (4, 68, 0, 2, ok),  # k_pad not a multiple of 8
        (0, 64, 0, 2, ok),
        (9, 64, 0, 2, ok),
    ):
        with pytest.raises(ValueError):
            _fastquant.pack_planes(codes, *args)
    with pytest.raises(ValueError):
        _fastquant.pair_tiles_i8(np.zeros((3, 2), np.int8), np.zeros((3, 3), np.int8), np.zeros(384, np.int8))
    with pytest.raises(ValueError):
        _fastquant.f16_scales(np.ones((3, 2)), np.ones((2, 2)), True, 4, 1.0, np.zeros(256, np.uint16))
    packed = np.zeros(3, [("a", "<f8"), ("b", "u1")])["a"].reshape(3, 1)  # a 9-byte stride
    with pytest.raises(ValueError, match="whole elements"):
        _fastquant.f16_peak(packed, packed, True, 4)


def _first_load(path: Path, bits: int | None, out: Path) -> bytes:
    with GGUFFile.open(path) as g:
        cfg = config_from_gguf(g)
        with cache.CacheWriter(out, "key") as writer:
            loader.write_weights(g, cfg, bits, writer)
            writer.commit()
    return out.read_bytes()


@pytest.mark.parametrize("weight_type", ("f16", "q4_0", "q8_0", "q4_1"))
def test_first_load_writes_the_cache_the_numpy_spec_writes(weight_type, tmp_path, monkeypatch):
    model = tmp_path / "tiny.gguf"
    write_tiny_synth(model, weight_type=weight_type)
    monkeypatch.setattr(loader, "CHUNK_ELEMENTS", 64 * 64)  # every matrix in 64-row slabs
    for bits in (None, 4, 2):
        native = _first_load(model, bits, tmp_path / f"native-{bits}.tmacw")
        with monkeypatch.context() as spec:
            spec.setattr(layout, "pack_arrays", functools.partial(layout.pack_arrays, native=False))
            spec.setattr(layout, "pack_super_arrays", functools.partial(layout.pack_super_arrays, native=False))
            reference = _first_load(model, bits, tmp_path / f"spec-{bits}.tmacw")
        assert native == reference, (weight_type, bits)


@pytest.mark.parametrize("weight_type", ("f32", "f16", "bf16"))
def test_float_sources_read_in_place_quantize_like_their_float32_copy(weight_type, tmp_path):
    model = tmp_path / "tiny.gguf"
    write_tiny_synth(model, weight_type=weight_type)
    with GGUFFile.open(model) as g:
        names = [n for n, info in g.tensors.items() if len(info.shape) == 2 and info.ggml_type.name != "F32"]
        names = names if weight_type != "f32" else [n for n in g.tensors if len(g.tensors[n].shape) == 2]
        assert len(names) >= 7
        for name in names:
            w = dequantize_tensor(g, name)
            want = fastquant.quantize(w.reshape(-1, w.shape[-1]), 4, 32)
            got = repack._quantize_source(g.rows(name, 0, w.shape[0]), name, 4, 32)
            for a, b in zip(got, want):
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_a_nan_in_a_float_matrix_read_in_place_names_the_tensor(tmp_path):
    source, path, tensor = tmp_path / "source.gguf", tmp_path / "nan.gguf", "blk.1.ffn_up.weight"
    write_tiny_synth(source, weight_type="f16")
    with GGUFFile.open(source) as f:
        raw = f.tensor_bytes(tensor).copy()
    raw.view("<f2")[77] = np.nan
    rewrite(source, path, {}, {tensor: raw})
    with GGUFFile.open(path) as g, pytest.raises(ModelFormatError, match=f"tensor '{tensor}'.*NaN or infinite"):
        repack.repack(g, tensor, 4, 32)
