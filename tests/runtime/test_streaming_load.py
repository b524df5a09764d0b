"""The first load streams into the cache file: the matrices repacked in row slabs equal
the ones repacked whole, bit for bit; a cancelled or killed first load leaves no cache
file in use and the next load succeeds; the peak memory of a first load is the packed
size plus a bounded working set (measured in a child process on a ~300M model)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.runtime.model_mutations import write_tiny_synth
from tmac_core.config import config_from_gguf
from tmac_core.engine import Engine
from tmac_core.errors import LoadCancelledError
from tmac_core.kernels import PackedWeight, dequantize, pack, pack_super
from tmac_core.kernels.layout import SCALES_SUPER
from tmac_core.loading import cache
from tmac_core.loading.gguf import GGUFFile
from tmac_core.models import loader

pytestmark = pytest.mark.engine
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENS = [5, 40, 300, 7, 99]
SLAB = 64 * 64  # CHUNK_ELEMENTS for the tiny model: every matrix in 64-row slabs


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("streammodel") / "tiny.gguf"
    write_tiny_synth(path)  # Q8_0
    return path


@pytest.fixture(scope="module")
def reference(model):
    engine = Engine.load(model, bits=4, n_ctx=32, use_cache=False)
    try:
        return engine._weights, np.array(engine.runtime.forward(TOKENS, 0, all_logits=True))
    finally:
        engine.close()


def files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_weights_streamed_in_slabs_equal_the_whole_repack(model, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_ELEMENTS", SLAB)
    engine = Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path)
    try:
        assert not engine.info.cache_hit
        whole, logits = reference
        assert set(engine._weights) == set(whole)
        for name, value in whole.items():
            got = engine._weights[name]
            if isinstance(value, PackedWeight):
                assert isinstance(got, PackedWeight)
                assert (got.m, got.k, got.bits, got.group_size) == (value.m, value.k, value.bits, value.group_size)
                assert got.tensor_scale == value.tensor_scale, name
                np.testing.assert_array_equal(got.planes, value.planes, err_msg=name)
                np.testing.assert_array_equal(got.scales, value.scales, err_msg=name)
            else:
                np.testing.assert_array_equal(got, value, err_msg=name)
        np.testing.assert_array_equal(np.array(engine.runtime.forward(TOKENS, 0, all_logits=True)), logits)
    finally:
        engine.close()


def test_row_chunks_with_their_own_tensor_scales_join_exactly_and_never_overflow(tmp_path):
    """Slabs whose weights differ by 2^12 in size each get their own power-of-two
    tensor_scale (their largest fp16 value near 2^15); joined under the largest, every
    fp16 value is the one packing the matrix whole gives, and none is inf."""
    rng = np.random.default_rng(3)
    m, k = 256, 128
    codes = rng.integers(0, 16, (m, k), dtype=np.uint8)
    scales = rng.uniform(0.5, 1.0, (m, k // 32)).astype(np.float32)
    scales *= np.repeat(2.0 ** np.array([0, -6, 12, 3], np.float32), 64)[:, None]  # one size per 64-row slab
    zeros = rng.uniform(0, 15, (m, k // 32)).astype(np.float32)
    whole = pack(codes, scales, zeros, bits=4, group_size=32)
    chunks = [
        pack(codes[r : r + 64], scales[r : r + 64], zeros[r : r + 64], bits=4, group_size=32) for r in (0, 64, 128, 192)
    ]
    assert len({c.tensor_scale for c in chunks}) == 4
    assert max(np.abs(c.scales.view(np.float16).astype(np.float32)).max() for c in chunks) >= 2**14
    path = tmp_path / "m.tmacw"
    with cache.CacheWriter(path, "key") as writer:
        writer.add_packed("w", chunks)
        writer.commit()
    (got,) = cache.load(path, "key").values()
    assert got.tensor_scale == whole.tensor_scale == max(c.tensor_scale for c in chunks)
    assert np.isfinite(got.scales.view(np.float16)).all()
    np.testing.assert_array_equal(got.scales, whole.scales)
    np.testing.assert_array_equal(got.planes, whole.planes)


def test_a_cancelled_first_load_leaves_nothing_in_use_and_the_next_load_works(model, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_ELEMENTS", SLAB)
    cancel = threading.Event()
    seen = []

    def status(s):
        seen.append(s)
        if s.bytes_done > 0:  # mid-repack, between two slabs
            cancel.set()

    with pytest.raises(LoadCancelledError):
        Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path, cancel=cancel, status=status)
    assert 0 < seen[-1].bytes_done < seen[-1].bytes_total
    assert files(tmp_path) == []  # the partial file is gone, no cache file
    engine = Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path)
    try:
        assert not engine.info.cache_hit
        np.testing.assert_array_equal(np.array(engine.runtime.forward(TOKENS, 0, all_logits=True)), reference[1])
    finally:
        engine.close()
    assert len(files(tmp_path)) == 1
    again = Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path)
    assert again.info.cache_hit
    again.close()


def test_a_progress_callback_that_raises_stops_the_load_and_leaves_no_file(model, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_ELEMENTS", SLAB)

    def progress(fraction, stage):
        if fraction > 0.3:
            raise KeyboardInterrupt  # what Ctrl+C in the CLI raises from inside the load

    with pytest.raises(KeyboardInterrupt):
        Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path, progress=progress)
    assert files(tmp_path) == []


def test_the_load_reports_bytes_and_an_eta(model, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_ELEMENTS", SLAB)
    monkeypatch.setattr("tmac_core.engine.ETA_AFTER_S", 0.0)
    seen = []
    Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path, status=seen.append).close()
    repack = [s for s in seen if s.bytes_total]
    with GGUFFile.open(model) as f:
        assert repack[-1].bytes_done == repack[-1].bytes_total == loader.work_bytes(f, config_from_gguf(f), 4)
    assert [s.bytes_done for s in repack] == sorted(s.bytes_done for s in repack)
    assert all(s.eta_s is not None and s.eta_s >= 0 for s in repack[1:])
    assert [s.fraction for s in seen] == sorted(s.fraction for s in seen) and seen[-1].fraction == 1.0


KILLED_CHILD = """
import sys, time
from tmac_core.engine import Engine
from tmac_core.models import loader
loader.CHUNK_ELEMENTS = 64 * 64
def status(s):
    if s.bytes_done > 0:
        print("repacking", flush=True)
        time.sleep(120)  # killed here, mid-file
Engine.load(sys.argv[1], bits=4, n_ctx=32, cache_dir=sys.argv[2], status=status)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this system")
def test_a_killed_first_load_leaves_only_a_partial_file_that_the_next_load_removes(model, reference, tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(model), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "repacking"
        (partial,) = files(tmp_path)
        assert partial.startswith(cache.PARTIAL_PREFIX)
        with pytest.raises(cache.CacheMiss):
            cache.load(tmp_path / partial, partial)  # no magic: never a cache file
        assert cache.remove_dead_partials(tmp_path) == 0  # its writer is alive: kept
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
        child.stdout.close()
    assert files(tmp_path) == [partial]
    engine = Engine.load(model, bits=4, n_ctx=32, cache_dir=tmp_path)
    try:
        assert not engine.info.cache_hit
        np.testing.assert_array_equal(np.array(engine.runtime.forward(TOKENS, 0, all_logits=True)), reference[1])
    finally:
        engine.close()
    (final,) = files(tmp_path)  # the dead writer's partial is gone
    assert final.endswith(".tmacw") and not final.startswith(cache.PARTIAL_PREFIX)


RSS_CHILD = """
import json, sys, time
from tmac_core.engine import Engine
import tmac_core.models.loader, tmac_core.models._llama  # imported before the baseline is taken

def status(field):  # kB in /proc/self/status; VmHWM is this process's own peak (ru_maxrss keeps the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

base = status("VmRSS")
t0 = time.perf_counter()
engine = Engine.load(sys.argv[1], bits=4, n_ctx=64, cache_dir=sys.argv[2], source_sha256="0" * 64)
seconds = time.perf_counter() - t0
print(json.dumps({"base": base, "peak": status("VmHWM"), "packed": engine.info.packed_bytes,
                  "hit": engine.info.cache_hit, "seconds": seconds}))
"""
# What a first load may hold beyond the packed model: one slab's work (CHUNK_ELEMENTS
# source weights through dequantize/quantize/pack, a few tens of MB), the source pages
# of the tensor being read, the runtime's buffers. The load that packed everything in
# memory before writing it used ~350 MB more than the packed size on this model.
RSS_MARGIN = 128 << 20


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_first_load_peak_memory_is_the_packed_size_plus_a_bounded_margin(tmp_path):
    from tmac_core.models import ARCHITECTURES
    from tmac_core.synth import SynthSpec, write_synthetic

    cfg = ARCHITECTURES["llama"].config(
        dim=1024, hidden_dim=2816, n_layers=16, n_heads=16, n_kv_heads=4, head_dim=64, vocab_size=49152, n_ctx_train=512
    )
    path = tmp_path / "m300.gguf"
    write_synthetic(path, SynthSpec(cfg, weight_type="q4_0"))  # 281M parameters, 160 MB
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(path), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert not got["hit"]
    mib = {k: round(v / 2**20) for k, v in got.items() if k in ("peak", "base", "packed")}
    print(f"first load {got['seconds']:.1f} s, MiB: {mib}")
    assert got["peak"] - got["base"] <= got["packed"] + RSS_MARGIN


def _resigned(path, edit):
    """The cache file at `path` with its header edited by `edit(header)` and re-signed."""
    data = path.read_bytes()
    at, length = int.from_bytes(data[8:16], "little"), int.from_bytes(data[16:24], "little")
    header = json.loads(data[at : at + length])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(data[:16] + len(new).to_bytes(8, "little") + hashlib.sha256(new).digest() + data[56:at] + new)


@pytest.mark.parametrize("bits, group, code_offset", [(4, 32, 7.5), (6, 16, -0.5)])
def test_a_super_weight_written_in_row_chunks_keeps_every_field(tmp_path, bits, group, code_offset):
    """Layout v2's SUPER scales (a Q4_K-like and a Q6_K-like weight): planes, fp16 d/dmin,
    int8 sub-scales, super_size and code_offset survive the file, checked against the plan."""
    rng = np.random.default_rng(bits)
    m, k, sup = 160, 512, 256  # 160 rows: chunks of 64, 64 and 32 (a partial tile)
    codes = rng.integers(0, 1 << bits, (m, k), dtype=np.uint8)
    d = rng.uniform(1e-3, 1e-2, (m, k // sup)).astype(np.float16)
    dmin = rng.uniform(0, 1e-2, (m, k // sup)).astype(np.float16)
    sc = rng.integers(-32, 64, (m, k // group))
    mn = rng.integers(0, 64, (m, k // group))

    def packed(r0, r1):
        args = (codes[r0:r1], d[r0:r1], dmin[r0:r1], sc[r0:r1], mn[r0:r1])
        return pack_super(*args, bits=bits, group_size=group, super_size=sup, code_offset=code_offset)

    whole = packed(0, m)
    path = tmp_path / "s.tmacw"
    with cache.CacheWriter(path, "key") as writer:
        writer.add_packed("w", [packed(0, 64), packed(64, 128), packed(128, m)])
        writer.commit()
    n_planes, n_scales, n_sub = whole.planes.size, whole.scales.size, whole.sub.size
    plan = {
        "w": cache.Expected(
            "packed",
            m=m,
            k=k,
            k_pad=k,
            bits=bits,
            group_size=group,
            n_planes=n_planes,
            n_scales=n_scales,
            scale_format=SCALES_SUPER,
            super_size=sup,
            n_sub=n_sub,
        )
    }
    got = cache.load(path, "key", plan)["w"]
    assert (got.scale_format, got.super_size, got.code_offset, got.tensor_scale) == (
        SCALES_SUPER,
        sup,
        code_offset,
        1.0,
    )
    for field in ("planes", "scales", "sub"):
        np.testing.assert_array_equal(getattr(got, field), getattr(whole, field), err_msg=field)
    np.testing.assert_array_equal(dequantize(got), dequantize(whole))
    del got

    good = path.read_bytes()
    lies = {
        "f16-format": lambda h: h["entries"][0].update(scale_format=0),
        "super-size": lambda h: h["entries"][0].update(super_size=128),
        "no-sub": lambda h: h["entries"][0].pop("sub"),
        "code_offset-nan": lambda h: h["entries"][0].update(code_offset=float("nan")),
        "sub-short": lambda h: h["entries"][0]["sub"].update(nbytes=64, shape=[64]),
    }
    for edit in lies.values():
        path.write_bytes(good)
        _resigned(path, edit)
        with pytest.raises(cache.CacheMiss):
            cache.load(path, "key", plan)
        with pytest.raises(cache.CacheMiss):
            cache.load(path, "key")  # the file's own structure shows each lie without the plan too
