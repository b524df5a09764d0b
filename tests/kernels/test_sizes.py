"""Size arithmetic at the kernel API: shapes whose byte counts wrap a 32-bit
int, or exceed the limits of kernels.h (MAX_DIM, MAX_ELEMS), are refused with
a ValueError before native code reads a byte or anything large is allocated;
and the thread pool works in a child after fork. Every case runs in a child
process, so a segfault or a hang fails its test instead of killing pytest."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tmac_core.kernels._kernels as _k

ROOT = Path(__file__).resolve().parents[2]
MAX_DIM, MAX_ELEMS = _k.MAX_DIM, _k.MAX_ELEMS

PRELUDE = """
import numpy as np
import tmac_core.kernels as K
from numpy.lib.stride_tricks import as_strided

def virtual(n, dtype):
    # n elements backed by one: np.size says n, nothing large is allocated
    return as_strided(np.zeros(1, dtype), shape=(n,), strides=(0,))

def refused(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ValueError as e:
        print("ValueError:", e)
    else:
        raise SystemExit("accepted")
"""


def isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    # an address-space cap turns an accidental huge allocation into a MemoryError, not a swapping machine
    cap = "import resource; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))\n"
    return subprocess.run(
        [sys.executable, "-c", cap + PRELUDE + textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_refused(code: str):
    r = isolated(code)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    assert "ValueError:" in r.stdout


def weight(m, k, k_pad, bits, group_size, n_planes, n_scales, virtual=False):
    make = "virtual" if virtual else "np.zeros"
    return (
        f"refused(K.PackedWeight, {make}({n_planes}, np.uint8), {make}({n_scales}, np.uint16), "
        f"{m}, {k}, {k_pad}, {bits}, {group_size}, 1.0)"
    )


def planes_len(m, k_pad, bits):
    return (m + 63) // 64 * (k_pad // 8) * bits * 64


def scales_len(m, k_pad, group_size):
    return (m + 63) // 64 * (k_pad // group_size) * 128


E18 = 1 << 18


@pytest.mark.parametrize(
    "case",
    [
        # 2^18 x 2^18 is within the limits: only its buffers are wrong
        weight(E18, E18, E18, 4, E18, 0, scales_len(E18, E18, E18)),
        weight(E18, E18, E18, 4, E18, 10, 128),
        # the scales count 4096 * 8192 * 128 = 2^32 is 0 in 32-bit arithmetic: an empty buffer
        # must not pass; the planes are the right (virtual) size, so the scales check decides
        weight(E18, E18, E18, 1, 32, planes_len(E18, E18, 1), 0, virtual=True),
        # planes 2^35 = 0 in 32 bits
        weight(E18, E18, E18, 4, E18, 0, 0),
        # right buffers, shape over the element limit: refused before the (virtual) buffers are copied
        weight(
            MAX_DIM,
            MAX_DIM,
            MAX_DIM,
            1,
            MAX_DIM,
            planes_len(MAX_DIM, MAX_DIM, 1),
            scales_len(MAX_DIM, MAX_DIM, MAX_DIM),
            virtual=True,
        ),
        weight(2 * E18, E18, E18, 1, E18, planes_len(2 * E18, E18, 1), scales_len(2 * E18, E18, E18), virtual=True),
        # dimensions past MAX_DIM, near INT_MAX (m + 63 wraps), past 64 bits, negative
        weight(MAX_DIM + 1, 64, 64, 2, 64, 0, 0),
        weight(2**31 - 1, 64, 64, 2, 64, 0, 0),
        weight(2**31 - 32, 64, 64, 2, 64, 0, 0),
        weight(64, 64, 2**32 + 64, 2, 64, 0, 0),
        weight(2**64 + 1, 64, 64, 2, 64, 0, 0),
        weight(64, -64, 64, 2, 64, 0, 0),
        weight(64, 64, 64, 2**32 + 2, 64, 0, 0),
        weight(64, 64, 64, 2, 2**32 + 64, 0, 0),
    ],
    ids=lambda c: c.split("PackedWeight, ")[1][:70],
)
def test_packed_weight_sizes_are_checked_in_64_bits(case):
    assert_refused(case)


@pytest.mark.parametrize("tensor_scale", ["2**1000", "1e39", "1e-50", "float('nan')", "-1.0"])
def test_tensor_scale_must_be_a_positive_finite_float32(tensor_scale):
    # 1e39 is finite as a double but inf as the float32 the struct holds; 1e-50 rounds to 0
    r = isolated(
        f"refused(K.PackedWeight, np.zeros(1024, np.uint8), np.zeros(128, np.uint16), 1, 64, 64, 2, 64, {tensor_scale})"
    )
    assert r.returncode == 0 and "ValueError: tensor_scale" in r.stdout, r.stdout + r.stderr[-3000:]


def test_a_real_weight_still_packs_and_runs():
    r = isolated("""
        from tests.kernels.cases import make_case
        p = make_case(np.random.default_rng(0), 70, 128, 64, 3).pack()
        w = K.PackedWeight(p.planes, p.scales, p.m, p.k, p.k_pad, p.bits, p.group_size, p.tensor_scale)
        assert np.array_equal(K.gemv(w, np.ones(128, np.float32)), K.gemv(p, np.ones(128, np.float32)))
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize(
    "case",
    [
        "refused(K.ActivationTables, 2**31, 64, 64)",
        "refused(K.ActivationTables, 1, 2**32 + 64, 64)",
        f"refused(K.ActivationTables, {MAX_DIM}, {MAX_DIM}, 64)",  # 2^48 elements
        "refused(K.ActivationTables, 4, 64, 2**32 + 64)",
        # a (2^20, 2^20) activation matrix: refused by shape, before the contiguous copy
        "refused(K.build_tables, as_strided(np.zeros(1, np.float32), shape=(2**20, 2**20), strides=(0, 0)), 64)",
        "refused(K.build_tables, np.zeros((2, 64), np.float32), 2**32 + 64)",
    ],
)
def test_table_sizes_are_checked_in_64_bits(case):
    assert_refused(case)


def attention_call(n, heads, hd, n_kv, n_ctx, pos):
    q = f"as_strided(np.zeros(1, np.float32), shape=({n}, {heads}, {hd}), strides=(0, 0, 0))"
    cache = f"as_strided(np.zeros(1, np.uint16), shape=({n_kv}, {n_ctx}, {hd}), strides=(0, 0, 0))"
    return f"refused(K.attention, {q}, {cache}, {cache}, {pos}, {n_kv}, 0.125)"


@pytest.mark.parametrize(
    "case",
    [
        attention_call(1, 8, 64, 2, 2**31 + 16, 0),  # n_ctx wraps to 16 as a C int
        attention_call(1, 8, 64, 2, MAX_DIM + 1, 0),
        attention_call(1, 8, 64, 2, 200, 2**31 - 1),  # pos + n wraps
        attention_call(1, 8, 64, 2, 200, 2**32 + 3),  # pos wraps to 3
        attention_call(4, 8, 64, 2**32 + 2, 200, 0),  # n_kv_heads wraps to 2
        attention_call(1, 2**31 + 8, 64, 2, 200, 0),  # n_heads wraps to 8
        attention_call(1, 2**17, 64, 2**13, 200, 0),  # n_heads over MAX_HEADS
        attention_call(2**31 + 1, 8, 64, 2, 2**31 + 16, 0),  # query count wraps to 1
    ],
)
def test_attention_sizes_are_checked_in_64_bits(case):
    assert_refused(case)


@pytest.mark.parametrize("n", [0, -1, 257, 2**32 + 2, 2**64])
def test_thread_counts_past_the_limit_are_value_errors(n):
    assert_refused(f"refused(K.set_num_threads, {n})")


def test_limits_are_the_documented_ones():
    assert MAX_DIM == 1 << 24 and MAX_ELEMS == 1 << 36
    assert (1 << 18) * (1 << 18) <= MAX_ELEMS  # a 2^18 x 2^18 matrix is accepted with real buffers


FORK_CASE = """
import os, sys, threading, time
from tests.kernels.cases import make_activations, make_case

rng = np.random.default_rng(1)
packed = make_case(rng, 700, 512, 64, 2).pack()
X = make_activations(rng, 5, 512)
K.set_num_threads(2)
ref = K.gemm(packed, X)                      # starts the pool's worker thread

def child():
    ok = K.get_num_threads() == 2
    for _ in range(20):
        ok = ok and np.array_equal(K.gemm(packed, X), ref) and np.array_equal(K.gemv(packed, X[0]), ref[0])
    if sys.platform == "linux":              # the child's pool really runs its own second thread
        ok = ok and len(os.listdir("/proc/self/task")) >= 2
    os._exit(0 if ok else 3)

def fork_and_wait():
    pid = os.fork()
    if pid == 0:
        child()
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                raise SystemExit(f"child exited with {code}")
            return
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise SystemExit("child hung: its pool waited for threads that fork did not copy")
        time.sleep(0.01)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_pool_works_in_a_forked_child():
    r = isolated(
        FORK_CASE
        + """
fork_and_wait()
assert np.array_equal(K.gemm(packed, X), ref)      # and the parent's pool is untouched
print("ok")
"""
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_another_thread_runs_kernels():
    # the pool's locks may be held by the other thread at the moment of the fork
    r = isolated(
        FORK_CASE
        + """
stop = threading.Event()
errors = []
def busy():
    while not stop.is_set():
        if not np.array_equal(K.gemm(packed, X), ref):
            errors.append("parent result changed")
t = threading.Thread(target=busy)
t.start()
try:
    for _ in range(10):
        fork_and_wait()
finally:
    stop.set()
    t.join()
assert not errors, errors
print("ok")
"""
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_multiprocessing_fork_workers_use_the_pool():
    r = isolated(
        FORK_CASE
        + """
import multiprocessing as mp

def work(i):
    return np.array_equal(K.gemm(packed, X), ref)

with mp.get_context("fork").Pool(2) as pool:
    assert all(pool.map_async(work, range(8)).get(timeout=60))
print("ok")
"""
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


C_ENTRY_POINTS = """
import ctypes, sys
from ctypes import POINTER, c_float, c_int, c_int32, c_void_p
import tmac_core.kernels._kernels as mod

lib = ctypes.CDLL(mod.__file__)       # the C API the model runtime calls directly, without the binding
E_SHAPE, OK = -1, 0

class Weight(ctypes.Structure):
    _fields_ = [("planes", c_void_p), ("scales", c_void_p), ("m", c_int32), ("k", c_int32), ("m_pad", c_int32),
                ("k_pad", c_int32), ("bits", c_int32), ("group_size", c_int32), ("n_groups", c_int32),
                ("tensor_scale", c_float), ("scale_format", c_int32), ("super_size", c_int32),
                ("n_super", c_int32), ("code_offset", c_float), ("sub", c_void_p), ("zero_mult", c_int32)]

buf = ctypes.create_string_buffer(1 << 16)        # every pointer below points into 64 KiB
p = ctypes.cast(buf, c_void_p)
failed = []

def expect(name, got, want):
    if got != want:
        failed.append(f"{name}: {got} != {want}")

def weight(m, k, k_pad, bits, group_size, m_pad=None, n_groups=None, fmt=0, super_size=0, n_super=None,
           code_offset=0.0, sub=None, zero_mult=0):
    m_pad = (m + 63) // 64 * 64 if m_pad is None else m_pad
    n_groups = k_pad // group_size if n_groups is None else n_groups
    n_super = (k_pad // super_size if super_size else 0) if n_super is None else n_super
    return Weight(p, p, m, k, m_pad, k_pad, bits, group_size, n_groups, 1.0, fmt, super_size, n_super, code_offset,
                  sub, zero_mult)

I32 = 2**31 - 1
for name, w, ag, want in [
    ("ok", weight(64, 64, 64, 2, 64), 64, OK),
    ("2^18 x 2^18 is within the limits", weight(2**18, 2**18, 2**18, 4, 32), 32, OK),
    ("2^19 x 2^18 > MAX_ELEMS", weight(2**19, 2**18, 2**18, 1, 2**18), 64, E_SHAPE),
    ("2^24 x 2^24", weight(2**24, 2**24, 2**24, 1, 2**24), 64, E_SHAPE),
    ("m > MAX_DIM", weight(2**24 + 1, 64, 64, 2, 64), 64, E_SHAPE),
    ("m near INT_MAX", weight(I32, 64, 64, 2, 64, m_pad=-(2**31)), 64, E_SHAPE),
    ("m_pad wrapped", weight(2**18, 64, 64, 2, 64, m_pad=2**18 - 2**32 + 2**18), 64, E_SHAPE),
    ("k_pad near INT_MAX", weight(64, 64, I32 - 63, 2, 64), 64, E_SHAPE),
    ("negative m", weight(-64, 64, 64, 2, 64, m_pad=-64), 64, E_SHAPE),
    ("negative k", weight(64, -1, 64, 2, 64), 64, E_SHAPE),
    ("n_groups lies", weight(64, 64, 128, 2, 64, n_groups=1), 64, E_SHAPE),
    ("bits 0", weight(64, 64, 64, 0, 64), 64, E_SHAPE),
    ("group_size 0", weight(64, 64, 64, 2, 0, n_groups=0), 64, E_SHAPE),
    ("6 bits, 16-wide groups and tables", weight(64, 64, 64, 6, 16), 16, OK),
    ("8 bits, 256-wide groups", weight(64, 256, 256, 8, 256), 64, OK),
    ("64-wide groups read by 16-wide tables", weight(64, 64, 64, 2, 64), 16, OK),
    ("32-wide tables on 16-wide groups", weight(64, 64, 64, 6, 16), 32, E_SHAPE),
    ("act_group 8", weight(64, 64, 64, 2, 64), 8, E_SHAPE),
    ("act_group 128", weight(64, 128, 128, 2, 128), 128, E_SHAPE),
    ("bits 9", weight(64, 64, 64, 9, 64), 64, E_SHAPE),
    ("group_size 48", weight(64, 96, 96, 2, 48), 16, E_SHAPE),
    ("group_size 512 not per row", weight(64, 1024, 1024, 2, 512), 64, E_SHAPE),
    ("per-row group, k_pad % 64 != 0", weight(64, 96, 96, 2, 96), 32, E_SHAPE),
    ("F16 with a sub pointer", weight(64, 64, 64, 2, 64, sub=p), 64, E_SHAPE),
    ("F16 with a super_size", weight(64, 64, 64, 2, 64, super_size=64, n_super=1), 64, E_SHAPE),
    ("F16 with a code_offset", weight(64, 64, 64, 2, 64, code_offset=0.5), 64, E_SHAPE),
    ("scale_format 4", weight(64, 64, 64, 2, 64, fmt=4), 64, E_SHAPE),
    ("scale_format -1", weight(64, 64, 64, 2, 64, fmt=-1), 64, E_SHAPE),
    ("F16 with a zero_mult", weight(64, 64, 64, 4, 32, zero_mult=-1), 32, E_SHAPE),
    ("F16_SYM", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=-1), 32, OK),
    ("F16_SYM 2^18 x 2^18", weight(2**18, 2**18, 2**18, 8, 32, fmt=2, zero_mult=255), 32, OK),
    ("F16_SYM zero_mult 0", weight(64, 64, 64, 4, 32, fmt=2), 32, E_SHAPE),
    ("F16_SYM zero_mult even", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=2), 32, E_SHAPE),
    ("F16_SYM zero_mult 257", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=257), 32, E_SHAPE),
    ("F16_SYM zero_mult -257", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=-257), 32, E_SHAPE),
    ("F16_SYM zero_mult INT_MIN", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=-(2**31)), 32, E_SHAPE),
    ("F16_SYM with a sub pointer", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=1, sub=p), 32, E_SHAPE),
    ("F16_SYM with a super_size", weight(64, 64, 64, 4, 32, fmt=2, zero_mult=1, super_size=64, n_super=1), 32,
     E_SHAPE),
    ("SUPER_NOMIN", weight(64, 256, 256, 6, 16, fmt=3, super_size=256, code_offset=-0.5, sub=p), 16, OK),
    ("SUPER_NOMIN without sub", weight(64, 256, 256, 6, 16, fmt=3, super_size=256), 16, E_SHAPE),
    ("SUPER_NOMIN n_super lies", weight(64, 256, 256, 6, 16, fmt=3, super_size=128, n_super=1, sub=p), 16,
     E_SHAPE),
    ("SUPER_NOMIN with a zero_mult", weight(64, 256, 256, 6, 16, fmt=3, super_size=256, sub=p, zero_mult=1), 16,
     E_SHAPE),
    ("SUPER with a zero_mult", weight(64, 256, 256, 6, 16, fmt=1, super_size=256, sub=p, zero_mult=-1), 16,
     E_SHAPE),
    ("SUPER", weight(64, 256, 256, 6, 16, fmt=1, super_size=256, code_offset=-0.5, sub=p), 16, OK),
    ("SUPER 2^18 x 2^18", weight(2**18, 2**18, 2**18, 8, 16, fmt=1, super_size=256, sub=p), 16, OK),
    ("SUPER without sub", weight(64, 256, 256, 6, 16, fmt=1, super_size=256), 16, E_SHAPE),
    ("SUPER super_size 0", weight(64, 256, 256, 6, 16, fmt=1, super_size=0, n_super=0, sub=p), 16, E_SHAPE),
    ("SUPER super_size not a multiple", weight(64, 240, 240, 6, 16, fmt=1, super_size=40, sub=p), 16, E_SHAPE),
    ("SUPER super_size not dividing", weight(64, 256, 256, 6, 16, fmt=1, super_size=96, n_super=2, sub=p), 16,
     E_SHAPE),
    ("SUPER super_size past k_pad", weight(64, 256, 256, 6, 16, fmt=1, super_size=512, n_super=1, sub=p), 16,
     E_SHAPE),
    ("SUPER n_super lies", weight(64, 256, 256, 6, 16, fmt=1, super_size=128, n_super=1, sub=p), 16, E_SHAPE),
    ("SUPER code_offset NaN", weight(64, 256, 256, 6, 16, fmt=1, super_size=256, code_offset=float("nan"),
                                     sub=p), 16, E_SHAPE),
    ("SUPER code_offset inf", weight(64, 256, 256, 6, 16, fmt=1, super_size=256, code_offset=float("inf"),
                                     sub=p), 16, E_SHAPE),
]:
    expect("check_shapes " + name, lib.tmac_check_shapes(ctypes.byref(w), w.k_pad, ag), want)
expect("NULL planes", lib.tmac_check_shapes(ctypes.byref(Weight(None, p, 64, 64, 64, 64, 2, 64, 1, 1.0)), 64, 64),
       E_SHAPE)

tier = lib.tmac_active_isa()
for name, n, k_pad in [("n * k_pad > MAX_ELEMS", 2**18 + 1, 2**18), ("MAX_DIM^2", 2**24, 2**24),
                       ("n near INT_MAX", I32, 64), ("k_pad near INT_MAX", 1, 2**31 - 64), ("n < 0", -1, 64)]:
    expect("lut_build " + name, lib.tmac_lut_build(tier, p, n, k_pad, 64, p, p, p), E_SHAPE)

w = weight(64, 64, 64, 2, 64)
ws = (POINTER(Weight) * 1)(ctypes.pointer(w))
ys = (c_void_p * 1)(p)
for name, n, k_pad, ldy in [("n > MAX_DIM", 2**24 + 1, 64, 64), ("n near INT_MAX", I32, 64, 64),
                            ("ldy < m", 1, 64, 63), ("k_pad differs", 1, 128, 64)]:
    ld = (c_int * 1)(ldy)
    expect("gemm " + name, lib.tmac_gemm_multi(tier, 1, ws, p, p, p, n, k_pad, 64, ys, ld), E_SHAPE)

lib.tmac_attention.argtypes = [c_int, c_void_p, c_int, c_int, c_int, c_int, c_int, c_void_p, c_void_p, c_int,
                               c_float, c_void_p]
for name, n, pos, heads, n_kv, hd, n_ctx in [
    ("n_ctx > MAX_DIM", 1, 0, 8, 2, 64, 2**24 + 1),
    ("pos + n past INT_MAX", 2, I32 - 1, 8, 2, 64, I32),
    ("heads > MAX_HEADS", 1, 0, 2**17, 2**13, 64, 256),
    ("decode items > MAX_ITEMS", 1, 2**24 - 1, 2**16, 2**13, 64, 2**24),
    ("prompt items > MAX_ITEMS", 2**24, 0, 2**16, 2**12, 64, 2**24),
]:
    expect("attention " + name, lib.tmac_attention(tier, p, n, pos, heads, n_kv, hd, p, p, n_ctx, 0.125, p), E_SHAPE)
# 2^30 decode items are allowed, but their 4.5 TB of partial results cannot be allocated: a clean error
expect("attention scratch too large",
       lib.tmac_attention(tier, p, 1, 2**24 - 1, 2**16, 2**12, 64, p, p, 2**24, 0.125, p), -3)

TASK = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_int)
seen = []
task = TASK(lambda ctx, item, thread: seen.append(item))
lib.tmac_parallel_for.argtypes = [c_int, TASK, c_void_p]
for n in (-1, 2**30 + 1, I32):
    expect(f"parallel_for {n} items", lib.tmac_parallel_for(n, task, None), E_SHAPE)
lib.tmac_pool_set_threads(3)
expect("parallel_for 0 items", lib.tmac_parallel_for(0, task, None), OK)
expect("parallel_for 5000 items", lib.tmac_parallel_for(5000, task, None), OK)
expect("each item once", sorted(seen), list(range(5000)))
print("\\n".join(failed) or "ok")
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the extension does not export its C symbols on Windows")
def test_c_entry_points_refuse_out_of_range_sizes():
    r = isolated(C_ENTRY_POINTS)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]
