"""The Python face of the kernels: dispatch and its override, argument
checks, the thread pool, and layout round trips and golden bytes."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tmac_core.kernels as K
from tests.kernels import layout_golden
from tests.kernels.cases import make_activations, make_case
from tmac_core.errors import UnsupportedCpuError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = layout_golden.GOLDEN


def python(code: str, **env):
    e = dict(os.environ)
    e.pop("TMAC_KERNELS", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True)


def test_available_tiers_and_active():
    isas = K.available_tiers()
    assert isas[0] == "generic"
    assert K.active_tier() in isas
    forced = os.environ.get("TMAC_KERNELS")
    if forced:
        assert K.active_tier() == forced
    else:
        assert K.active_tier() == isas[-1]


def test_cpu_features_agree_with_the_os():
    feats = K.cpu_features()
    cpuinfo = Path("/proc/cpuinfo")
    if feats["arch"] != "x86_64" or not cpuinfo.exists():
        pytest.skip("the cross-check reads x86 flags from Linux /proc/cpuinfo")
    flags = set(next(l for l in cpuinfo.read_text().splitlines() if l.startswith("flags")).split(":")[1].split())
    for ours, linux in [
        ("avx2", "avx2"),
        ("fma", "fma"),
        ("f16c", "f16c"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512_vnni", "avx512_vnni"),
    ]:
        assert feats[ours] == (linux in flags), ours
    # Linux hides avx512 flags when XCR0 does not enable ZMM state: then os_avx512 is off too
    assert feats["os_avx"]


def test_forcing_each_available_tier():
    for tier in K.available_tiers():
        r = python("import tmac_core.kernels as k; print(k.active_tier())", TMAC_KERNELS=tier)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == tier


def test_forcing_a_missing_tier_is_a_clear_error():
    missing = next(i for i in ("avx2", "avx512", "neon") if i not in K.available_tiers())
    r = python("import tmac_core.kernels", TMAC_KERNELS=missing)
    assert r.returncode != 0
    assert "UnsupportedCpuError" in r.stderr and missing in r.stderr
    assert "available here: generic" in r.stderr
    r = python("import tmac_core.kernels", TMAC_KERNELS="sse9")
    assert r.returncode != 0 and "UnsupportedCpuError" in r.stderr


def test_isa_argument_checks(rng):
    packed = make_case(rng, 8, 64, 64, 2).pack()
    x = np.ones(64, np.float32)
    with pytest.raises(ValueError, match="unknown kernel tier"):
        K.gemv(packed, x, tier="mmx")
    missing = next(i for i in ("avx2", "avx512", "neon") if i not in K.available_tiers())
    with pytest.raises(UnsupportedCpuError):
        K.gemv(packed, x, tier=missing)


@pytest.mark.parametrize(
    "bad",
    [
        dict(codes=np.full((4, 64), 4, np.uint8), bits=2, group_size=64),  # code out of range
        dict(codes=np.zeros((4, 64), np.uint8), bits=9, group_size=64),  # bits
        dict(codes=np.zeros((4, 96), np.uint8), bits=2, group_size=64),  # K % group
        dict(codes=np.zeros((4, 64), np.uint8), bits=2, group_size=48),  # group size
        dict(codes=np.zeros((0, 64), np.uint8), bits=2, group_size=64),  # empty
        dict(codes=np.zeros((4, 64), np.float32), bits=2, group_size=64),  # dtype
    ],
)
def test_pack_rejects_bad_input(bad):
    m, k = bad["codes"].shape
    scales = np.ones((m, max(k // 64, 1)), np.float32)
    with pytest.raises(ValueError):
        K.pack(bad["codes"], scales, bits=bad["bits"], group_size=bad["group_size"])


def test_pack_rejects_non_finite_scales():
    with pytest.raises(ValueError, match="finite"):
        K.pack(np.zeros((2, 64), np.uint8), np.array([[np.nan], [1]], np.float32), bits=2, group_size=64)


def test_calls_reject_wrong_shapes(rng):
    packed = make_case(rng, 8, 128, 64, 2).pack()
    with pytest.raises(ValueError):
        K.gemv(packed, np.ones(127, np.float32))
    with pytest.raises(ValueError, match="finite"):
        K.gemv(packed, np.full(128, np.inf, np.float32))
    wrong_tables = K.activation_tables(np.ones(256, np.float32))
    with pytest.raises(ValueError):
        K.gemv(packed, wrong_tables)
    g32 = make_case(rng, 8, 128, 32, 2).pack()
    with pytest.raises(ValueError):  # 64-wide tables cannot serve 32-wide scale groups
        K.gemv(g32, K.activation_tables(np.ones(128, np.float32), act_group=64))
    with pytest.raises(ValueError):
        K.gemm_tables(packed, K.activation_tables(np.ones(128, np.float32)), None, np.empty((1, 7), np.float32))


def test_packed_buffers_are_size_checked():
    with pytest.raises(ValueError, match="elements"):
        K.PackedWeight(np.zeros(10, np.uint8), np.zeros(128, np.uint16), 1, 64, 64, 2, 64, 1.0)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_results_identical_for_any_thread_count(threads, rng):
    case = make_case(rng, 1000, 512, 64, 2)
    packed = case.pack()
    X = make_activations(rng, 5, 512)
    saved = K.get_num_threads()
    K.set_num_threads(1)
    ref = K.gemm(packed, X)
    K.set_num_threads(threads)
    try:
        assert K.get_num_threads() == threads
        for _ in range(3):
            np.testing.assert_array_equal(K.gemm(packed, X), ref)
            np.testing.assert_array_equal(K.gemv(packed, X[0]), ref[0])
    finally:
        K.set_num_threads(saved)


def test_resizing_the_pool_under_load(rng):
    case = make_case(rng, 700, 256, 64, 4)
    packed = case.pack()
    x = make_activations(rng, 1, 256)[0]
    saved = K.get_num_threads()
    ref = K.gemv(packed, x)
    stop = threading.Event()
    errors = []

    def compute():
        try:
            while not stop.is_set():
                if not np.array_equal(K.gemv(packed, x), ref):
                    errors.append("result changed")
        except Exception as e:  # noqa: BLE001 (surfaced below)
            errors.append(repr(e))

    workers = [threading.Thread(target=compute) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for i in range(1000):
            K.set_num_threads(1 + i % 4)
    finally:
        stop.set()
        for w in workers:
            w.join()
        K.set_num_threads(saved)
    assert not errors


def test_thread_count_validation():
    with pytest.raises(ValueError):
        K.set_num_threads(0)
    with pytest.raises(ValueError):
        K.set_num_threads(1000)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    m=st.integers(1, 140),
    kgroups=st.integers(1, 6),
    bits=st.integers(1, 8),
    group=st.sampled_from([16, 32, 64, 128, 256, "row"]),
    seed=st.integers(0, 2**31),
)
def test_pack_unpack_round_trip(m, kgroups, bits, group, seed):
    rng = np.random.default_rng(seed)
    k = kgroups * 256 if group != "row" else kgroups * 37
    gs = k if group == "row" else group
    case = make_case(rng, m, k, gs, bits)
    packed = case.pack()
    np.testing.assert_array_equal(K.layout.unpack_codes(packed.planes, m, k, packed.k_pad, bits), case.codes)
    # the only difference left is the fp16 rounding of s/2 and of the offset term (2^-11 relative)
    w, exact = K.dequantize(packed), case.weights()
    np.testing.assert_allclose(w, exact, rtol=0, atol=2.0**-10 * max(np.abs(exact).max(), 1e-6))


@pytest.mark.parametrize("name", list(layout_golden.cases()))
def test_layout_golden_bytes(name):
    packed = layout_golden.cases()[name]
    golden = json.loads(GOLDEN.read_text())
    assert golden["layout_version"] == K.LAYOUT_VERSION, "bump tests/data/layout_golden.json with the layout"
    assert layout_golden.digest(packed) == golden[name]


def test_layout_golden_first_byte_by_hand():
    """LAYOUT.md worked example: byte 0 of plane 0 is row 0, k = 0..7."""
    codes = np.zeros((64, 64), np.uint8)
    codes[0, :8] = [1, 0, 1, 1, 0, 0, 0, 1]  # plane 0 bits: low nibble 0b1101, high 0b1000
    codes[8, 0] = 1  # row 8 -> byte 16 (lane 1, u 0)
    codes[32, 4] = 1  # row 32 -> byte 8, high nibble bit 0
    packed = K.pack(codes, np.ones((64, 1), np.float32), bits=1, group_size=64)
    block = packed.planes[:64]
    assert block[0] == 0x8D and block[16] == 0x01 and block[8] == 0x10
