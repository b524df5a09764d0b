"""GGUF reader on valid input: writer round trips, the `gguf` package as a cross-check,
typed metadata getters, mmap lifetime, and the real embedded SmolLM2 file."""

from __future__ import annotations

import math

import gguf as gguf_py
import numpy as np
import pytest

from tests.runtime.gguf_writer import GGUFWriter
from tmac_core.errors import ModelFormatError, ModelLoadError
from tmac_core.loading.gguf import BLOCK_LAYOUT, GGMLType, GGUFFile, ValueType


def test_block_table_matches_ggml():
    for ggml_type, layout in BLOCK_LAYOUT.items():
        assert gguf_py.GGML_QUANT_SIZES[gguf_py.GGMLQuantizationType(ggml_type)] == layout
    for ggml_type in GGMLType:
        if ggml_type is GGMLType.I2_S:  # bitnet.cpp's type: the gguf package has no id 36
            continue
        assert gguf_py.GGMLQuantizationType(int(ggml_type)).name == ggml_type.name
    for value_type in ValueType:
        assert gguf_py.GGUFValueType(int(value_type)).name == value_type.name


def _all_types_writer(alignment=32) -> tuple[GGUFWriter, dict]:
    w = GGUFWriter(alignment=alignment)
    scalars = {
        "s.u8": (255, ValueType.UINT8),
        "s.i8": (-128, ValueType.INT8),
        "s.u16": (65535, ValueType.UINT16),
        "s.i16": (-32768, ValueType.INT16),
        "s.u32": (2**32 - 1, ValueType.UINT32),
        "s.i32": (-(2**31), ValueType.INT32),
        "s.f32": (1.5, ValueType.FLOAT32),
        "s.bool": (False, ValueType.BOOL),
        "s.u64": (2**64 - 1, ValueType.UINT64),
        "s.i64": (-(2**63), ValueType.INT64),
        "s.f64": (math.pi, ValueType.FLOAT64),
        "s.str": ("héllo", ValueType.STRING),
        "s.raw_bytes": ("\udcff\udcfe", ValueType.STRING),
    }  # invalid UTF-8 in the file
    for key, (value, vtype) in scalars.items():
        w.add(key, value, vtype)
    w.add_array("a.f32", [0.5, -2.0], ValueType.FLOAT32)
    w.add_array("a.bool", [True, False, True], ValueType.BOOL)
    w.add_array("a.empty", [], ValueType.UINT32)
    w.add_array("a.str", ["", "x", "\udc80"], ValueType.STRING)
    w.add_array(
        "a.nested", [(ValueType.INT16, [1, -1]), (ValueType.ARRAY, [(ValueType.STRING, ["deep"])])], ValueType.ARRAY
    )
    rng = np.random.default_rng(0)
    tensors = {
        "f32": (rng.standard_normal((3, 4)).astype(np.float32), GGMLType.F32),
        "f16": (rng.standard_normal((2, 5)).astype(np.float32), GGMLType.F16),
        "bf16": (rng.standard_normal((7,)).astype(np.float32), GGMLType.BF16),
        "q8": (rng.standard_normal((3, 64)).astype(np.float32), GGMLType.Q8_0),
        "q4_0": (rng.standard_normal((2, 32)).astype(np.float32), GGMLType.Q4_0),
        "q4_1": (rng.standard_normal((2, 2, 2, 32)).astype(np.float32), GGMLType.Q4_1),
    }
    for name, (x, t) in tensors.items():
        w.add_tensor(name, x, t)
    w.add_raw_tensor("q6k", rng.integers(0, 256, 2 * 210, dtype=np.uint8), GGMLType.Q6_K, (256, 2))
    return w, scalars


@pytest.mark.parametrize("alignment", [32, 64, 8])
def test_round_trip_all_value_types_and_tensors(write_file, alignment):
    w, scalars = _all_types_writer(alignment)
    data, layout = w.build()
    with GGUFFile.open(write_file(data)) as f:
        assert f.alignment == alignment and f.data_offset == layout.data_start
        for key, (value, vtype) in scalars.items():
            assert f.metadata_types[key] == (vtype, None)
            assert f.metadata[key] == (pytest.approx(value) if vtype is ValueType.FLOAT64 else value)
        assert f.metadata["s.raw_bytes"].encode("utf-8", "surrogateescape") == b"\xff\xfe"
        assert f.get_array("a.f32", element_type=ValueType.FLOAT32).tolist() == [0.5, -2.0]
        assert f.get_array("a.bool").tolist() == [True, False, True]
        assert f.get_array("a.empty").size == 0
        assert f.get_array("a.str", element_type=ValueType.STRING) == ["", "x", "\udc80"]
        nested = f.get_array("a.nested")
        assert nested[0].tolist() == [1, -1] and nested[1] == [["deep"]]
        assert list(f.tensors) == ["f32", "f16", "bf16", "q8", "q4_0", "q4_1", "q6k"]
        q41 = f.tensors["q4_1"]
        assert q41.shape == (32, 2, 2, 2) and q41.ggml_type is GGMLType.Q4_1
        assert q41.nbytes == 8 * 20 and q41.n_elements == 256
        for info, placed in zip(f.tensors.values(), layout.tensors):
            assert info.offset == placed.data_start and info.offset % alignment == 0
        np.testing.assert_array_equal(f.tensor_view("f32"), w._tensors[0][3].view("<f4").reshape(3, 4))
        assert f.tensor_view("f16").dtype == np.float16 and f.tensor_view("f16").shape == (2, 5)
        assert f.tensor_view("q8").shape == (3, 68)


def test_tensor_bytes_is_a_zero_copy_read_only_view(write_file):
    w, _ = _all_types_writer()
    path = write_file(w.build()[0])
    f = GGUFFile.open(path)
    view = f.tensor_bytes("q8")
    assert not view.flags.writeable and not view.flags.owndata
    with pytest.raises(ValueError):
        view[0] = 1
    expected = bytes(view)
    f.close()  # a live view must not make close() raise; the map lives on through it
    assert bytes(view) == expected
    with pytest.raises(ValueError):
        f.tensor_bytes("q8")
    with pytest.raises(KeyError):
        GGUFFile.open(path).tensor_bytes("no such tensor")


def test_our_file_reads_identically_in_gguf_package(write_file):
    w, scalars = _all_types_writer()
    path = write_file(w.build()[0])
    reader = gguf_py.GGUFReader(path)
    with GGUFFile.open(path) as f:
        for key in ("s.u32", "s.str", "s.i64", "s.f32"):
            assert reader.fields[key].contents() == pytest.approx(f.metadata[key])
        strings = reader.fields["a.str"]  # gguf-py cannot decode byte tokens; compare bytes
        assert [bytes(strings.parts[i]) for i in strings.data] == [
            s.encode("utf-8", "surrogateescape") for s in f.metadata["a.str"]
        ]
        for t in reader.tensors:
            info = f.tensors[t.name]
            assert tuple(int(n) for n in t.shape) == info.shape
            assert t.data_offset == info.offset and t.n_bytes == info.nbytes
            assert int(t.tensor_type) == info.ggml_type


def test_gguf_package_file_reads_in_ours(tmp_path):
    path = str(tmp_path / "ref.gguf")
    w = gguf_py.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 3)
    w.add_float32("llama.rope.freq_base", 5e5)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    x = np.arange(64, dtype=np.float32).reshape(2, 32)
    w.add_tensor("w", x)
    w.add_tensor(
        "q", gguf_py.quants.quantize(x, gguf_py.GGMLQuantizationType.Q8_0), raw_dtype=gguf_py.GGMLQuantizationType.Q8_0
    )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFFile.open(path) as f:
        assert f.architecture == "llama"
        assert f.get_int("llama.block_count") == 3
        assert f.get_float("llama.rope.freq_base") == 5e5
        assert f.get_array("tokenizer.ggml.tokens") == ["<s>", "a", "b"]
        np.testing.assert_array_equal(f.tensor_view("w"), x)
        assert f.tensors["q"].ggml_type is GGMLType.Q8_0 and f.tensors["q"].shape == (32, 2)


def test_version_2_and_zero_tensor_files_open(patch_field):
    w = GGUFWriter()
    w.add_string("general.architecture", "llama")
    data = patch_field(w.build()[0], 4, "<I", 2)
    f = GGUFFile.from_bytes(data)
    assert f.tensors == {} and f.architecture == "llama" and f.version == 2


def test_missing_trailing_padding_is_accepted():
    # Like llama.cpp's mmap loader we only need each tensor's bytes, not the final pad.
    w = GGUFWriter()
    w.add_tensor("x", np.ones(3, np.float32))
    data, layout = w.build()
    f = GGUFFile.from_bytes(data[: layout.tensors[0].data_start + 12])
    assert f.tensor_view("x").tolist() == [1.0, 1.0, 1.0]


def test_unopenable_paths_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot open"):
        GGUFFile.open(tmp_path / "missing.gguf")
    with pytest.raises(ModelLoadError, match="cannot open"):
        GGUFFile.open(tmp_path)


# -- typed getters --


@pytest.fixture
def meta_file():
    w = GGUFWriter()
    w.add_string("general.architecture", "llama")
    w.add_uint32("k.int", 7)
    w.add("k.neg", -3, ValueType.INT32)
    w.add_float32("k.nan", float("nan"))
    w.add_float32("k.inf", float("inf"))
    w.add("k.f64", -0.5, ValueType.FLOAT64)
    w.add_bool("k.flag", True)
    w.add_array("k.ints", [1, 2], ValueType.UINT32)
    return GGUFFile.from_bytes(w.build()[0], "meta.gguf")


def test_getters_return_typed_values(meta_file):
    f = meta_file
    assert f.get_int("k.int") == 7 and f.get_int("k.neg") == -3
    assert f.get_float("k.int") == 7.0 and f.get_float("k.f64") == -0.5
    assert f.get_bool("k.flag") is True and f.get_str("general.architecture") == "llama"
    assert f.get_int("absent", 5) == 5 and f.get_str("absent", None) is None
    assert f.get_array("k.ints", element_type=frozenset({ValueType.UINT32})).tolist() == [1, 2]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f: f.get_int("absent"), r"kv 'absent': required key is missing"),
        (
            lambda f: f.get_int("general.architecture"),
            r"kv\[0\] 'general.architecture' at offset \d+: expected an integer, found STRING",
        ),
        (lambda f: f.get_int("k.int", max_value=6), r"outside \[None, 6\]"),
        (lambda f: f.get_int("k.neg", min_value=0), r"outside \[0, None\]"),
        (lambda f: f.get_int("k.flag"), r"found BOOL"),
        (lambda f: f.get_float("k.nan"), r"kv\[3\] 'k.nan'.*not finite"),
        (lambda f: f.get_float("k.inf"), r"not finite"),
        (lambda f: f.get_float("k.f64", positive=True), r"must be positive"),
        (lambda f: f.get_float("general.architecture"), r"expected a number"),
        (lambda f: f.get_str("k.int"), r"expected a string, found UINT32"),
        (lambda f: f.get_bool("k.int"), r"expected a bool"),
        (lambda f: f.get_array("k.int"), r"expected an array"),
        (lambda f: f.get_array("k.ints", element_type=ValueType.STRING), r"array of STRING, found an array of UINT32"),
    ],
)
def test_getters_refuse_wrong_types_and_values(meta_file, call, match):
    with pytest.raises(ModelFormatError, match=match) as info:
        call(meta_file)
    assert info.value.path == "meta.gguf"


# -- the real embedded model --


def test_smollm2_parses_completely_and_agrees_with_gguf_package(smollm2, smollm2_reference):
    reader = smollm2_reference
    with GGUFFile.open(smollm2) as f:
        assert f.architecture == "llama" and f.alignment == 32
        assert len(f.metadata) == 33 and len(f.tensors) == 272
        assert f.get_int("llama.embedding_length") == 576
        assert f.get_int("llama.block_count") == 30
        assert f.get_float("llama.rope.freq_base") == 100000.0
        tokens = f.get_array("tokenizer.ggml.tokens", element_type=ValueType.STRING)
        assert len(tokens) == 49152 and tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        assert len(f.get_array("tokenizer.ggml.merges")) == 48900
        assert f.get_array("tokenizer.ggml.token_type").shape == (49152,)
        assert "{% for message in messages %}" in f.get_str("tokenizer.chat_template")
        assert "output.weight" not in f.tensors
        assert [t.name for t in reader.tensors] == list(f.tensors)
        for t in reader.tensors:
            info = f.tensors[t.name]
            assert (info.offset, info.nbytes, int(info.ggml_type)) == (t.data_offset, t.n_bytes, int(t.tensor_type))
            assert info.shape == tuple(int(n) for n in t.shape)
        types = {info.ggml_type for info in f.tensors.values()}
        assert types == {GGMLType.F32, GGMLType.Q8_0, GGMLType.Q4_1}
        last = max(f.tensors.values(), key=lambda t: t.offset)
        assert last.offset + last.nbytes <= f.file_size
        np.testing.assert_array_equal(
            f.tensor_bytes("token_embd.weight"), reader.get_tensor(0).data.reshape(-1).view(np.uint8)
        )


def test_writer_write_is_atomic_and_readable(tmp_path):
    w, _ = _all_types_writer()
    path = tmp_path / "model.gguf"
    layout = w.write(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]  # no temp file left
    assert path.stat().st_size == layout.size
    with GGUFFile.open(path) as f:
        assert len(f.tensors) == 7 and f.get_int("s.u8") == 255
