"""Malformed GGUF files: each must end in ModelFormatError
or UnsupportedModelError naming file, field and offset — never another exception, a
crash, a hang or a huge allocation. Fixtures (`small`, `patch_field`) are in conftest."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.gguf_writer import GGUFWriter
from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.loading.gguf import GGUFFile, ValueType

U64_MAX = 2**64 - 1


def _rejects(data: bytes, match: str, *, field: str | None = None) -> ModelFormatError:
    with pytest.raises(ModelFormatError, match=match) as info:
        GGUFFile.from_bytes(data, "bad.gguf")
    err = info.value
    assert err.path == "bad.gguf" and str(err).startswith("bad.gguf: ")
    if field is not None:
        assert err.field == field
    return err


def test_truncation_at_every_byte_is_a_format_error(small, write_file):
    data, layout = small
    assert len(data) == layout.size and len(data) < 2048
    for cut in range(len(data)):
        path = write_file(data[:cut])
        with pytest.raises(ModelFormatError) as info:
            GGUFFile.open(path)
        assert info.value.path == path
        assert info.value.offset is None or info.value.offset <= max(cut, 16), cut
    with GGUFFile.open(write_file(data)) as f:  # and the whole file is fine
        assert len(f.tensors) == 4


def test_truncated_tensor_data_says_incomplete(small):
    data, layout = small
    _rejects(data[:-1], r"tensor 'd' data .* outside the file .* re-download", field="tensor_info[3].offset")


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "too short: 0 bytes"),
        (b"GGU", "too short: 3 bytes"),
        (b"GGUG" + bytes(40), r"magic b'GGUG'"),
        (b"FUGG" + bytes(40), "not a GGUF file"),
        (b"PK\x03\x04" + bytes(40), "not a GGUF file"),
        (struct.pack("<Q", 2) + b"{}" + bytes(40), "not a GGUF file"),  # safetensors
    ],
)
def test_not_gguf(data, match):
    _rejects(data, match, field="magic")


@pytest.mark.parametrize(
    "version, match",
    [
        (0, "unsupported GGUF version 0"),
        (1, "unsupported GGUF version 1"),
        (4, "unsupported GGUF version 4"),
        (0xFFFFFFFF, "unsupported GGUF version"),
        (0x03000000, "big-endian"),
        (0x02000000, "big-endian"),
    ],
)
def test_bad_versions(small, patch_field, version, match):
    _rejects(patch_field(small[0], 4, "<I", version), match, field="version")


@pytest.mark.parametrize(
    "offset, value, field",
    [
        (8, U64_MAX, "n_tensors"),
        (16, U64_MAX, "n_kv"),
        (16, 2**32, "n_kv"),
        (8, 2**40, "n_tensors"),
    ],
)
def test_huge_counts_rejected_before_allocation(small, patch_field, offset, value, field):
    _rejects(patch_field(small[0], offset, "<Q", value), "exceeds what the file can hold", field=field)


def test_kv_key_lengths(small, patch_field):
    data, layout = small
    start = layout.kv[2].start
    _rejects(patch_field(data, start, "<Q", U64_MAX), "exceeds the limit", field="kv[2].key.length")
    _rejects(patch_field(data, start, "<Q", 60000), "needs 60000 bytes", field="kv[2].key")
    _rejects(patch_field(data, start, "<Q", 0), "empty name", field="kv[2].key")


def test_kv_key_not_utf8_and_duplicate(small):
    data, layout = small
    key_at = layout.kv_by_key("test.u16").start + 8
    bad = bytearray(data)
    bad[key_at] = 0xFF
    _rejects(bytes(bad), "not valid UTF-8", field="kv[3].key")
    dup = bytearray(data)
    dup[key_at : key_at + 8] = b"test.i16"  # same length as "test.u16", which comes next
    _rejects(bytes(dup), "duplicate key 'test.i16'", field="kv[4].key")


@pytest.mark.parametrize("type_id", [13, 50, 0xFFFFFFFF])
def test_kv_bad_value_type(small, patch_field, type_id):
    data, layout = small
    _rejects(
        patch_field(data, layout.kv[1].type_offset, "<I", type_id),
        f"invalid metadata value type {type_id}",
        field="kv[1] 'test.u8'.type",
    )


def test_kv_bool_must_be_0_or_1(small):
    data, layout = small
    bad = bytearray(data)
    bad[layout.kv_by_key("test.bool").value_offset] = 2
    _rejects(bytes(bad), "bool value is 2", field="kv[8] 'test.bool'")


def test_array_counts_and_lengths(small, patch_field):
    data, layout = small
    ints = layout.kv_by_key("test.ints").value_offset
    _rejects(patch_field(data, ints + 4, "<Q", 2**63), "does not fit", field="kv[13] 'test.ints'.count")
    _rejects(patch_field(data, ints + 4, "<Q", 1000), "does not fit")
    _rejects(patch_field(data, ints, "<I", 77), "invalid metadata value type 77")
    strings = layout.kv_by_key("test.strings").value_offset
    _rejects(patch_field(data, strings + 4, "<Q", U64_MAX), "does not fit")
    # The second string's length runs past the end of the file.
    _rejects(
        patch_field(data, strings + 12 + 8 + 1, "<Q", len(data)),
        "runs past the end",
        field="kv[12] 'test.strings'[1].length",
    )
    _rejects(patch_field(data, strings + 12 + 8 + 1, "<Q", U64_MAX), "runs past the end")


def test_deeply_nested_arrays_rejected_without_recursion():
    # 100,000 levels of array-of-array: refused at a fixed depth, no RecursionError.
    depth = 100_000
    data = (
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 1)
        + b"x"
        + struct.pack("<I", ValueType.ARRAY)
        + struct.pack("<IQ", ValueType.ARRAY, 1) * depth
    )
    err = _rejects(data + bytes(16), "nested deeper than")
    assert err.field.startswith("kv[0] 'x'")


def test_alignment_must_be_uint32_power_of_two():
    def with_alignment(value, vtype):
        w = GGUFWriter()
        w.add("general.alignment", value, vtype)
        return w.build()[0]

    for bad in (0, 3, 13, 48, 2**31):
        _rejects(with_alignment(bad, ValueType.UINT32), "not a power of two", field="kv[0] 'general.alignment'")
    _rejects(with_alignment(64, ValueType.INT32), "must be a uint32")
    _rejects(with_alignment("32", ValueType.STRING), "must be a uint32")


@pytest.mark.parametrize("n_dims", [0, 5, 0xFFFFFFFF])
def test_bad_n_dims(small, patch_field, n_dims):
    data, layout = small
    _rejects(
        patch_field(data, layout.tensors[1].n_dims_offset, "<I", n_dims),
        f"tensor 'bb' has {n_dims} dimensions",
        field="tensor_info[1].n_dims",
    )


@pytest.mark.parametrize(
    "dim, value, match",
    [
        (1, 0, "dimension 1 is 0"),
        (1, U64_MAX, "dimension 1 is"),  # zero; -1 as int64
        (1, 2**63, "dimension 1 is"),
        (1, 2**40, "more than the whole file"),
        (0, 33, "not a multiple of the Q8_0 block size 32"),
    ],
)
def test_bad_dims(small, patch_field, dim, value, match):
    data, layout = small
    _rejects(patch_field(data, layout.tensors[1].ne_offsets[dim], "<Q", value), match)


def test_element_count_overflow(small, patch_field):
    data, layout = small
    info = layout.tensors[1]
    bad = patch_field(data, info.ne_offsets[0], "<Q", 2**32)
    bad = patch_field(bad, info.ne_offsets[1], "<Q", 2**32)
    _rejects(bad, "more than int64 can count", field="tensor_info[1].ne")


@pytest.mark.parametrize(
    "type_id, error, match",
    [
        (9999, ModelFormatError, "unknown tensor type id 9999 in tensor 'bb'"),
        (0xFFFFFFFF, ModelFormatError, "unknown tensor type id"),
        (42, ModelFormatError, "unknown tensor type id"),
        (4, UnsupportedModelError, "Q4_2 .* which ggml removed"),
        (9, UnsupportedModelError, "type Q8_1, which this runtime cannot read"),
        (20, UnsupportedModelError, "IQ4_NL"),
    ],
)
def test_bad_tensor_types(small, patch_field, type_id, error, match):
    data, layout = small
    with pytest.raises(error, match=match):
        GGUFFile.from_bytes(patch_field(data, layout.tensors[1].type_offset, "<I", type_id), "bad.gguf")


def test_tensor_offsets(small, patch_field):
    data, layout = small
    where = layout.tensors[2].offset_offset
    rel = layout.tensors[2].data_start - layout.data_start
    _rejects(
        patch_field(data, where, "<Q", rel + 1), "not a multiple of the alignment 32", field="tensor_info[2].offset"
    )
    _rejects(patch_field(data, where, "<Q", 0), "overlaps tensor 'a'", field="tensor_info[2].offset")
    _rejects(patch_field(data, where, "<Q", len(data)), "outside the file")
    _rejects(patch_field(data, where, "<Q", 2**64 - 32), "outside the file")  # would wrap in C


def test_tensor_names(small, patch_field):
    data, layout = small
    start = layout.tensors[1].start  # name "bb"
    _rejects(patch_field(data, start, "<Q", 64), "exceeds the limit 63", field="tensor_info[1].name.length")
    _rejects(patch_field(data, start, "<Q", U64_MAX), "exceeds the limit")
    _rejects(patch_field(data, start, "<Q", 0), "empty name")
    bad = bytearray(data)
    bad[start + 8] = 0xC3  # a lone UTF-8 lead byte
    _rejects(bytes(bad), "not valid UTF-8", field="tensor_info[1].name")
    dup = bytearray(data)
    dup[layout.tensors[2].start + 8 : layout.tensors[2].start + 10] = b"bb"
    _rejects(bytes(dup), "duplicate tensor name 'bb'", field="tensor_info[2].name")


def test_error_names_byte_offset(small, patch_field):
    data, layout = small
    err = _rejects(patch_field(data, layout.tensors[1].n_dims_offset, "<I", 9), "dimensions")
    assert err.offset == layout.tensors[1].n_dims_offset
    assert f"at offset {err.offset}" in str(err)


# Fuzz: random byte flips over the whole small file. Only the two typed errors may escape.
@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_fuzz_byte_flips(small, flips, cut):
    data = bytearray(small[0])
    for position, xor in flips:
        data[position % len(data)] ^= xor
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        f = GGUFFile.from_bytes(bytes(data), "fuzz.gguf")
    except (ModelFormatError, UnsupportedModelError):
        return
    for name, info in f.tensors.items():  # whatever was accepted must be readable in bounds
        assert f.tensor_bytes(name).nbytes == info.nbytes <= len(data) - info.offset
