"""The repacked-model cache is untrusted input: every damaged field of a real cache
file (header, plan-checked entry fields, data, length), and anything that is not a
regular file at the cache path (a directory, a FIFO, a symlink), is a cache miss. The
model then loads from its source with the same logits, and a damaged regular file is
rebuilt; a directory or FIFO is left alone and never blocks or raises."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.runtime.model_mutations import write_tiny_synth
from tmac_core.engine import Engine
from tmac_core.loading import cache

TOKENS = [5, 40, 300, 7, 99]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cachemodel") / "tiny.gguf"
    write_tiny_synth(path)
    return path


@pytest.fixture(scope="module")
def reference(model):
    """The logits of TOKENS from a load that reads and writes no cache file."""
    engine = Engine.load(model, bits=4, n_ctx=32, use_cache=False)
    try:
        return np.array(engine.runtime.forward(TOKENS, 0, all_logits=True))
    finally:
        engine.close()


def load(model, folder):
    """(cache hit?, logits of TOKENS)."""
    engine = Engine.load(model, bits=4, n_ctx=32, cache_dir=folder)
    try:
        return engine.info.cache_hit, np.array(engine.runtime.forward(TOKENS, 0, all_logits=True))
    finally:
        engine.close()


@pytest.fixture
def built(model, tmp_path):
    """(folder, cache file) after a first load wrote it."""
    folder = tmp_path / "cache"
    hit, _ = load(model, folder)
    assert not hit
    (file,) = folder.glob("*.tmacw")
    return folder, file


def split(data: bytes):
    """(header offset, header length, header) of a cache file (cache.py: the header is last)."""
    header_offset = int.from_bytes(data[8:16], "little")
    header_len = int.from_bytes(data[16:24], "little")
    return header_offset, header_len, json.loads(data[header_offset : header_offset + header_len])


def with_header(data: bytes, edit) -> bytes:
    """`data` with its JSON header edited by `edit(header)` and re-signed (the header's
    own sha256 is right), at the same length so nothing moves: only the plan and data
    checks can catch the change."""
    header_offset, header_len, header = split(data)
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    assert len(new) <= header_len
    new += b" " * (header_len - len(new))
    return data[:24] + hashlib.sha256(new).digest() + data[56:header_offset] + new


def entry(header, name):
    return next(e for e in header["entries"] if e["name"] == name)


def _set(path, value):
    def edit(header):
        *keys, last = path
        target = entry(header, keys[0])
        for k in keys[1:]:
            target = target[k]
        target[last] = value

    return edit


def _overlap(header):
    a, b = entry(header, "blk.0.attn_q.weight"), entry(header, "blk.0.attn_k.weight")
    b["planes"]["offset"] = a["planes"]["offset"]
    b["planes"]["crc32"] = a["planes"]["crc32"]


def _rename(header):
    entry(header, "blk.1.ffn_down.weight")["name"] = "blk.1.ffn_dow.weight"


def _drop(header):
    header["entries"] = [e for e in header["entries"] if e["name"] != "output_norm.weight"]


def _duplicate(header):
    header["entries"][1]["name"] = header["entries"][0]["name"]


Q = "blk.0.attn_q.weight"
HEADER_EDITS = {
    "key": lambda h: h.update(key="0" * 40 + h["key"][40:]),
    "rename": _rename,
    "drop": _drop,
    "duplicate": _duplicate,
    "entries-not-list": lambda h: h.update(entries={}),
    "kind": _set((Q, "kind"), "array"),
    "m": _set((Q, "m"), 63),
    "k": _set((Q, "k"), 32),
    "k_pad-string": _set((Q, "k_pad"), "64"),
    "bits": _set((Q, "bits"), 2),
    "group_size": _set((Q, "group_size"), 32),
    "tensor_scale-nan": _set((Q, "tensor_scale"), float("nan")),
    "tensor_scale-negative": _set((Q, "tensor_scale"), -1.0),
    "planes-shape": _set((Q, "planes", "shape"), [1 << 40]),
    "planes-nbytes": _set((Q, "planes", "nbytes"), 64),
    "planes-dtype": _set((Q, "planes", "dtype"), "float64"),
    "planes-offset-negative": _set((Q, "planes", "offset"), -64),
    "planes-offset-past-end": _set((Q, "planes", "offset"), 1 << 40),
    "planes-offset-unaligned": _set((Q, "planes", "offset"), 8),
    "planes-overlap": _overlap,
    "planes-crc": _set((Q, "planes", "crc32"), 12345),
    "scales-missing": lambda h: entry(h, Q).pop("scales"),
    "scale_format-past-the-last": _set((Q, "scale_format"), 4),
    "scale_format-sym-without-zero_mult": _set((Q, "scale_format"), 2),
    "zero_mult-on-f16": _set((Q, "zero_mult"), 1),
    "zero_mult-float": _set((Q, "zero_mult"), 1.0),
    "zero_mult-missing": lambda h: entry(h, Q).pop("zero_mult"),
    "norm-shape": _set(("output_norm.weight", "data", "shape"), [65]),
    "norm-dtype": _set(("output_norm.weight", "data", "dtype"), "float16"),
    "rope-shape": _set(("rope.inv_freq", "data", "shape"), [1 << 20]),
    "rope-nbytes": _set(("rope.inv_freq", "data", "nbytes"), 1 << 20),
}


def _raw(offset, value):
    def damage(data):
        out = bytearray(data)
        out[offset : offset + len(value)] = value
        return bytes(out)

    return damage


def _flip_data_byte(data):
    _, _, header = split(data)
    start = cache.DATA_START + entry(header, Q)["planes"]["offset"] + 100
    return data[:start] + bytes([data[start] ^ 0x10]) + data[start + 1 :]


RAW_DAMAGE = {
    "empty": lambda d: b"",
    "magic": _raw(0, b"TMACX"),
    "old-format": _raw(7, b"\x02"),
    "header_offset-huge": _raw(8, (1 << 62).to_bytes(8, "little")),
    "header_offset-short": lambda d: d[:8] + (int.from_bytes(d[8:16], "little") - 64).to_bytes(8, "little") + d[16:],
    "header_len-huge": _raw(16, (1 << 62).to_bytes(8, "little")),
    "header_len-short": lambda d: d[:16] + (int.from_bytes(d[16:24], "little") - 5).to_bytes(8, "little") + d[24:],
    "header-sha": _raw(30, b"\x00\x01\x02"),
    "header-json": lambda d: d[:-2] + b"\xff\xfe",
    "data-bit": _flip_data_byte,
    "truncated": lambda d: d[: split(d)[0] - 1000] + d[split(d)[0] :],
    "truncated-end": lambda d: d[:-1000],
    "extended": lambda d: d + b"\0" * 64,
    "only-header": lambda d: d[: cache.DATA_START],
    "unfinished": lambda d: b"\0" * 64 + d[64:],  # a write that stopped before its preamble
}


# edits the file's own structure cannot reveal: only the model plan can
PLAN_ONLY = ("rename", "drop", "m", "k")


@pytest.mark.parametrize("name", [*HEADER_EDITS, *RAW_DAMAGE])
def test_a_damaged_cache_file_is_a_miss_and_rebuilt(model, reference, built, name):
    folder, file = built
    data = file.read_bytes()
    damaged = with_header(data, HEADER_EDITS[name]) if name in HEADER_EDITS else RAW_DAMAGE[name](data)
    assert damaged != data
    file.write_bytes(damaged)
    key = file.name[: -len(".tmacw")]
    if name not in PLAN_ONLY:
        with pytest.raises(cache.CacheMiss):
            cache.load(file, key)  # even without the plan, a structural check catches it...
    hit, logits = load(model, folder)
    assert not hit
    np.testing.assert_array_equal(logits, reference)
    assert file.read_bytes() == data  # ...and the file is rebuilt, byte for byte
    hit, logits = load(model, folder)
    assert hit
    np.testing.assert_array_equal(logits, reference)


@pytest.mark.parametrize("name", [*PLAN_ONLY, "bits", "group_size", "kind", "norm-shape", "rope-shape"])
def test_entries_are_checked_against_the_model_plan(model, built, name):
    from tmac_core.config import config_from_gguf
    from tmac_core.loading.gguf import GGUFFile

    _, file = built
    key = file.name[: -len(".tmacw")]
    with GGUFFile.open(model) as f:
        cfg = config_from_gguf(f)
        expected = cache.expected_entries(cfg, 4, {n: i.ggml_type.name for n, i in f.tensors.items()})
    cache.load(file, key, expected)  # the real file agrees with the plan
    file.write_bytes(with_header(file.read_bytes(), HEADER_EDITS[name]))
    with pytest.raises(cache.CacheMiss):
        cache.load(file, key, expected)


def test_a_directory_at_the_cache_path_is_left_alone(model, reference, built):
    folder, file = built
    file.unlink()
    file.mkdir()
    (file / "inside").write_text("x")
    for _ in range(2):
        hit, logits = load(model, folder)
        assert not hit
        np.testing.assert_array_equal(logits, reference)
    assert file.is_dir() and (file / "inside").read_text() == "x"


def test_a_symlink_at_the_cache_path_is_not_followed(model, reference, built, tmp_path):
    folder, file = built
    elsewhere = tmp_path / "elsewhere.tmacw"
    os.replace(file, elsewhere)
    target = elsewhere.read_bytes()
    file.symlink_to(elsewhere)  # a valid cache file, but not ours to trust or to write
    hit, logits = load(model, folder)
    assert not hit
    np.testing.assert_array_equal(logits, reference)
    assert not file.is_symlink() and file.read_bytes() == target  # replaced by a regular file
    assert elsewhere.read_bytes() == target  # the target is untouched
    assert load(model, folder)[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_at_the_cache_path_never_blocks(model, built):
    folder, file = built
    file.unlink()
    os.mkfifo(file)
    code = (
        "import sys; from tmac_core.engine import Engine\n"
        "e = Engine.load(sys.argv[1], bits=4, n_ctx=32, cache_dir=sys.argv[2])\n"
        "print(e.info.cache_hit)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # opening a FIFO for reading blocks until a writer comes: a timeout here is the bug
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model), str(folder)], capture_output=True, text=True, timeout=120, cwd=root
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
    assert file.is_fifo()  # not replaced: the cache is simply not used


def test_a_deferred_data_check_finds_a_flipped_bit_after_the_load(model, reference, built):
    """Engine.load(defer_cache_check=True) is ready without the crc32s; check_cache() runs them on
    the mapping the weights use, then discards the damaged file, so the next load repacks."""
    folder, file = built
    data = file.read_bytes()
    key = file.name[: -len(".tmacw")]
    weights, check = cache.load_deferred(file, key)
    check()  # intact: nothing raised
    del weights
    file.write_bytes(_flip_data_byte(data))
    engine = Engine.load(model, bits=4, n_ctx=32, cache_dir=folder, defer_cache_check=True)
    try:
        assert engine.info.cache_hit  # ready on the damaged file; every structural check passed
        assert "checksum" in engine.check_cache()
        assert not file.exists() and engine.check_cache() is None  # discarded; checked once
    finally:
        engine.close()
    hit, logits = load(model, folder)
    assert not hit and file.read_bytes() == data
    np.testing.assert_array_equal(logits, reference)
    engine = Engine.load(model, bits=4, n_ctx=32, cache_dir=folder, defer_cache_check=True)
    try:
        assert engine.info.cache_hit and engine.check_cache() is None  # an intact file passes
    finally:
        engine.close()
    with pytest.raises(cache.CacheMiss):  # a structural problem is still found at load time
        file.write_bytes(RAW_DAMAGE["header-sha"](data))
        cache.load_deferred(file, key)


def test_symmetric_formats_round_trip_and_are_checked(tmp_path):
    """Layout v3's F16_SYM (zero_mult) and SUPER_NOMIN (one record) entries load back as
    written, and a header that lies about their format, multiplier or sizes is a miss."""
    import tmac_core.kernels as K

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 16, (70, 256), dtype=np.uint8)
    scales = rng.uniform(-0.05, 0.05, (70, 8)).astype(np.float16).astype(np.float32)
    sym = K.pack(codes, scales, np.full_like(scales, 8), bits=4, group_size=32, symmetric=True)
    nomin = K.pack_super(
        (codes & 7).astype(np.uint8),
        rng.uniform(1e-4, 2e-3, (70, 1)).astype(np.float16),
        None,
        rng.integers(-32, 32, (70, 16)),
        None,
        bits=3,
        group_size=16,
        super_size=256,
        code_offset=-0.5,
    )
    path, key = tmp_path / "sym.tmacw", "k" * 40
    cache.save(path, key, {"sym": sym, "nomin": nomin})
    back = cache.load(path, key)
    for name, p in (("sym", sym), ("nomin", nomin)):
        q = back[name]
        assert (q.scale_format, q.zero_mult, q.super_size) == (p.scale_format, p.zero_mult, p.super_size)
        np.testing.assert_array_equal(K.dequantize(q), K.dequantize(p))
    data = path.read_bytes()
    for edit in (
        _set(("sym", "zero_mult"), 2),
        _set(("sym", "zero_mult"), 0),
        _set(("sym", "zero_mult"), 257),
        _set(("sym", "zero_mult"), "-1"),
        _set(("sym", "scale_format"), 0),  # F16 would read two records per group
        _set(("nomin", "scale_format"), 1),  # SUPER would read two records
        _set(("nomin", "zero_mult"), -1),
        _set(("sym", "scales", "nbytes"), 64),
    ):
        path.write_bytes(with_header(data, edit))
        with pytest.raises(cache.CacheMiss):
            cache.load(path, key)
