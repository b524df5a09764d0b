"""The safetensors reader on valid files (several dtypes, empty tensors and scalars, padded
headers; the checkpoints under tests/data/hf, written by the `safetensors` package, are read
in test_hf_load.py) and on malformed ones: each
malformed file gives a typed error naming the problem, never a crash, a hang or a huge
allocation."""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.hf_folder import st_bytes, st_from_header
from tmac_core.errors import ModelFormatError, ModelLoadError, UnsupportedModelError
from tmac_core.loading.safetensors import MAX_HEADER_BYTES, SafetensorsFile


def open_bytes(tmp_path, data: bytes) -> SafetensorsFile:
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    return SafetensorsFile.open(path)


def valid_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((3, 4)).astype("<f4"),
        "b": rng.standard_normal(5).astype("<f2"),
        "c": np.arange(6, dtype="<i8").reshape(2, 3),
    }


def test_valid_file_reads_back_every_tensor_as_a_read_only_view(tmp_path):
    tensors = valid_tensors()
    with open_bytes(tmp_path, st_bytes(tensors, metadata={"format": "pt"}, pad=7)) as f:
        assert f.metadata == {"format": "pt"}
        assert list(f.tensors) == ["a", "b", "c"]
        for name, array in tensors.items():
            info = f.tensors[name]
            assert info.shape == array.shape and info.nbytes == array.nbytes
            view = f.tensor_bytes(name)
            assert not view.flags.writeable
            assert np.array_equal(view.view(array.dtype).reshape(array.shape), array)


def test_empty_tensors_and_scalars_are_valid(tmp_path):
    header = {
        "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
        "scalar": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
    }
    with open_bytes(tmp_path, st_from_header(header, struct.pack("<f", 2.5))) as f:
        assert f.tensor_bytes("empty").size == 0
        assert f.tensor_bytes("scalar").view("<f4")[0] == 2.5
    with open_bytes(tmp_path, st_from_header({}, b"")) as f:  # no tensors at all
        assert f.tensors == {}


def _good() -> tuple[dict, bytes]:
    """The header (as a dict) and data of a valid two-tensor file, to mutate."""
    a = np.arange(4, dtype="<f4")
    b = np.arange(2, dtype="<f4")
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
    }
    return header, a.tobytes() + b.tobytes()


def _with(change) -> bytes:
    header, data = _good()
    out = change(header, data)
    return out if isinstance(out, bytes) else st_from_header(header, data)


def _set(key, field, value):
    def change(header, data):
        header[key][field] = value

    return change


def _nested(depth: int) -> bytes:
    return st_from_header(None, b"", raw_header=b'{"a":' + b"[" * depth + b"]" * depth + b"}")


# (id, file bytes, expected error class, a fragment of its message)
CASES = [
    ("empty-file", b"", ModelFormatError, "too short"),
    ("seven-bytes", b"\x10\0\0\0\0\0\0", ModelFormatError, "too short"),
    ("header-past-eof", struct.pack("<Q", 1000) + b"{}", ModelFormatError, "past the end"),
    ("header-len-2^63", struct.pack("<Q", 1 << 63) + b"{}", ModelFormatError, "exceeds the limit"),
    ("huge-header", struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", ModelFormatError, "exceeds the limit"),
    ("zip-pickle", b"PK\x03\x04" + b"\0" * 60, ModelFormatError, "past the end"),
    ("not-an-object", st_from_header(None, b"", raw_header=b"[1, 2]"), ModelFormatError, "start with '{'"),
    (
        "truncated-json",
        st_from_header(None, b"", raw_header=b'{"a": {"dtype": "F32"'),
        ModelFormatError,
        "invalid JSON",
    ),
    ("not-utf8", st_from_header(None, b"", raw_header=b'{"\xff\xfe": 1}'), ModelFormatError, "not UTF-8"),
    (
        "duplicate-key",
        st_from_header(
            None,
            b"\0" * 4,
            raw_header=b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        ),
        ModelFormatError,
        "duplicate key",
    ),
    (
        "nan-constant",
        st_from_header(None, b"", raw_header=b'{"__metadata__": {"x": NaN}}'),
        ModelFormatError,
        "not JSON",
    ),
    ("deep-nesting", _nested(100_000), ModelFormatError, "nested too deeply"),
    ("unknown-dtype", _with(_set("a", "dtype", "F17")), ModelFormatError, "unknown dtype"),
    ("dtype-not-string", _with(_set("a", "dtype", 4)), ModelFormatError, "expected a string"),
    ("sub-byte-dtype", _with(_set("a", "dtype", "F4")), UnsupportedModelError, "F4"),
    ("negative-dim", _with(_set("a", "shape", [-4])), ModelFormatError, "non-negative"),
    ("float-dim", _with(_set("a", "shape", [4.0])), ModelFormatError, "non-negative"),
    ("bool-dim", _with(_set("a", "shape", [True, 4])), ModelFormatError, "non-negative"),
    ("too-many-dims", _with(_set("a", "shape", [1] * 9 + [4])), ModelFormatError, "at most"),
    ("shape-not-list", _with(_set("a", "shape", "4")), ModelFormatError, "non-negative"),
    ("offsets-three", _with(_set("a", "data_offsets", [0, 8, 16])), ModelFormatError, "[begin, end]"),
    ("offsets-reversed", _with(_set("a", "data_offsets", [16, 0])), ModelFormatError, "[begin, end]"),
    ("offsets-2^64", _with(_set("a", "data_offsets", [0, 1 << 64])), ModelFormatError, "[begin, end]"),
    ("shape-dtype-mismatch", _with(_set("a", "shape", [5])), ModelFormatError, "20 bytes but the range"),
    ("dtype-size-mismatch", _with(_set("a", "dtype", "F64")), ModelFormatError, "32 bytes but the range"),
    ("shape-overflow", _with(_set("a", "shape", [1 << 40, 1 << 40])), ModelFormatError, "bytes but the range"),
    (
        "out-of-bounds",
        _with(lambda h, d: (h["b"].update(shape=[4], data_offsets=[16, 32]), None)[1]),
        ModelFormatError,
        "ends past the data",
    ),
    (
        "overlap",
        _with(lambda h, d: (h["b"].update(data_offsets=[8, 16]), None)[1]),
        ModelFormatError,
        "overlaps",
    ),
    (
        "gap",
        _with(lambda h, d: st_from_header({**h, "b": {**h["b"], "data_offsets": [20, 28]}}, d + b"\0" * 4)),
        ModelFormatError,
        "unused bytes",
    ),
    ("trailing-garbage", _with(lambda h, d: st_from_header(h, d + b"junk")), ModelFormatError, "after the last tensor"),
    ("truncated-data", _with(lambda h, d: st_from_header(h, d[:-1])), ModelFormatError, "ends past the data"),
    ("extra-entry-key", _with(_set("a", "crc", 1)), ModelFormatError, "exactly dtype"),
    ("missing-dtype", _with(lambda h, d: (h["a"].pop("dtype"), None)[1]), ModelFormatError, "exactly dtype"),
    ("entry-not-object", _with(lambda h, d: (h.update(a=[1, 2]), None)[1]), ModelFormatError, "expected an object"),
    ("empty-name", _with(lambda h, d: (h.update({"": h.pop("a")}), None)[1]), ModelFormatError, "empty tensor name"),
    (
        "metadata-not-strings",
        _with(lambda h, d: (h.update(__metadata__={"n": 1}), None)[1]),
        ModelFormatError,
        "__metadata__",
    ),
]


@pytest.mark.parametrize(("data", "error", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_file_gives_a_typed_error(tmp_path, data, error, fragment):
    with pytest.raises(error) as info:
        open_bytes(tmp_path, data).close()
    assert fragment in str(info.value)
    if isinstance(info.value, ModelFormatError):
        assert info.value.path.endswith("x.safetensors")


def test_missing_file_and_a_directory_are_load_errors(tmp_path):
    with pytest.raises(ModelLoadError):
        SafetensorsFile.open(tmp_path / "absent.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ModelLoadError):
        SafetensorsFile.open(tmp_path / "dir.safetensors")


def test_header_json_is_parsed_strictly_but_padding_spaces_are_allowed(tmp_path):
    header, data = _good()
    text = json.dumps(header).encode() + b"      "
    with open_bytes(tmp_path, struct.pack("<Q", len(text)) + text + data) as f:
        assert set(f.tensors) == {"a", "b"}


def test_random_byte_mutations_give_a_typed_error_or_a_valid_file(tmp_path):
    """Every single-byte change of the header region and every truncation: the reader either
    reads a file whose tensors tile it, or raises one of the runtime's load errors."""
    valid = st_bytes(valid_tensors(), metadata={"format": "pt"})
    header_end = 8 + struct.unpack("<Q", valid[:8])[0]
    rng = np.random.default_rng(7)
    variants = [valid[:n] for n in range(0, len(valid), 7)]
    for _ in range(250):
        data = bytearray(valid)
        data[int(rng.integers(0, header_end))] = int(rng.integers(0, 256))
        variants.append(bytes(data))
    outcomes = {"ok": 0, "error": 0}
    for data in variants:
        try:
            with open_bytes(tmp_path, data) as f:
                data_start = 8 + struct.unpack("<Q", data[:8])[0]
                assert sum(t.nbytes for t in f.tensors.values()) == len(data) - data_start
            outcomes["ok"] += 1
        except (ModelFormatError, UnsupportedModelError):
            outcomes["error"] += 1
    assert outcomes["error"] > 200  # nearly every change is caught; the rest are harmless (a digit of a name)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * mmap.PAGESIZE


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED") or not os.path.exists("/proc/self/statm"), reason="Linux")
def test_release_drops_a_read_tensors_pages_and_it_reads_back_the_same(tmp_path):
    """A first load reads each tensor once; release gives its pages back so the mapped shards
    do not count against the load's memory bound (an 8B GPTQ folder's 5 GB)."""
    big = np.random.default_rng(1).integers(0, 255, 64 << 20, dtype=np.uint8)
    with open_bytes(tmp_path, st_bytes({"big": big, "small": np.ones(3, "<f4")})) as f:
        before = _rss_bytes()
        assert int(f.tensor_bytes("big").sum(dtype=np.int64)) == int(big.sum(dtype=np.int64))  # faulted in
        touched = _rss_bytes()
        f.release("big")
        released = _rss_bytes()
        assert touched - before > 48 << 20 and touched - released > 48 << 20
        np.testing.assert_array_equal(f.tensor_bytes("big"), big)  # faults back from the file
        f.release("small")  # a tensor smaller than a page: nothing to drop, no error


def test_a_gptq_folders_release_covers_every_part_of_the_layer(monkeypatch):
    from tmac_core.loading.hf import HFModel

    folder = Path(__file__).resolve().parents[1] / "data" / "gptq" / "models" / "llama_w4g32_v1_act"
    released: list[str] = []
    with HFModel.open(folder) as model:
        for shard in model._shards:
            monkeypatch.setattr(shard, "release", released.append)
        layer = next(name for name in model.tensors if name.endswith("attn_q.weight"))
        model.release(layer)
        assert {n.rsplit(".", 1)[-1] for n in released} == {"qweight", "qzeros", "scales", "g_idx"}
        released.clear()
        model.release("token_embd.weight")
        assert released == ["model.embed_tokens.weight"]
