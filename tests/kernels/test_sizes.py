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
    return subprocess.run([sys.executable, "-c", cap + PRELUDE + textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(code: str):
    r = isolated(code)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    assert "ValueError:" in r.stdout


def weight(m, k, k_pad, bits, group_size, n_planes, n_scales, virtual=False):
    make = "virtual" if virtual else "np.zeros"
    return (f"refused(K.PackedWeight, {make}({n_planes}, np.uint8), {make}({n_scales}, np.uint16), "
            f"{m}, {k}, {k_pad}, {bits}, {group_size}, 1.0)")


def planes_len(m, k_pad, bits):
    return (m + 63) // 64 * (k_pad // 8) * bits * 64


def scales_len(m, k_pad, group_size):
    return (m + 63) // 64 * (k_pad // group_size) * 128


E18 = 1 << 18


@pytest.mark.parametrize("case", [
    # 2^18 x 2^18 is within the limits: only its buffers are wrong
    weight(E18, E18, E18, 4, E18, 0, scales_len(E18, E18, E18)),
    weight(E18, E18, E18, 4, E18, 10, 128),
    # the scales count 4096 * 8192 * 128 = 2^32 is 0 in 32-bit arithmetic: an empty buffer
    # must not pass; the planes are the right (virtual) size, so the scales check decides
    weight(E18, E18, E18, 1, 32, planes_len(E18, E18, 1), 0, virtual=True),
    # planes 2^35 = 0 in 32 bits
    weight(E18, E18, E18, 4, E18, 0, 0),
    # right buffers, shape over the element limit: refused before the (virtual) buffers are copied
    weight(MAX_DIM, MAX_DIM, MAX_DIM, 1, MAX_DIM, planes_len(MAX_DIM, MAX_DIM, 1),
           scales_len(MAX_DIM, MAX_DIM, MAX_DIM), virtual=True),
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
], ids=lambda c: c.split("PackedWeight, ")[1][:70])
def test_packed_weight_sizes_are_checked_in_64_bits(case):
    assert_refused(case)


def test_a_real_weight_still_packs_and_runs():
    r = isolated("""
        from tests.kernels.cases import make_case
        p = make_case(np.random.default_rng(0), 70, 128, 64, 3).pack()
        w = K.PackedWeight(p.planes, p.scales, p.m, p.k, p.k_pad, p.bits, p.group_size, p.tensor_scale)
        assert np.array_equal(K.gemv(w, np.ones(128, np.float32)), K.gemv(p, np.ones(128, np.float32)))
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("case", [
    "refused(K.ActivationTables, 2**31, 64, 64)",
    "refused(K.ActivationTables, 1, 2**32 + 64, 64)",
    f"refused(K.ActivationTables, {MAX_DIM}, {MAX_DIM}, 64)",          # 2^48 elements
    "refused(K.ActivationTables, 4, 64, 2**32 + 64)",
    # a (2^20, 2^20) activation matrix: refused by shape, before the contiguous copy
    "refused(K.build_tables, as_strided(np.zeros(1, np.float32), shape=(2**20, 2**20), strides=(0, 0)), 64)",
    "refused(K.build_tables, np.zeros((2, 64), np.float32), 2**32 + 64)",
])
def test_table_sizes_are_checked_in_64_bits(case):
    assert_refused(case)


def attention_call(n, heads, hd, n_kv, n_ctx, pos):
    return (f"refused(K.attention, as_strided(np.zeros(1, np.float32), shape=({n}, {heads}, {hd}), strides=(0, 0, 0)), "
            f"as_strided(np.zeros(1, np.uint16), shape=({n_kv}, {n_ctx}, {hd}), strides=(0, 0, 0)), "
            f"as_strided(np.zeros(1, np.uint16), shape=({n_kv}, {n_ctx}, {hd}), strides=(0, 0, 0)), {pos}, {n_kv}, 0.125)")


@pytest.mark.parametrize("case", [
    attention_call(1, 8, 64, 2, 2**31 + 16, 0),             # n_ctx wraps to 16 as a C int
    attention_call(1, 8, 64, 2, MAX_DIM + 1, 0),
    attention_call(1, 8, 64, 2, 200, 2**31 - 1),            # pos + n wraps
    attention_call(1, 8, 64, 2, 200, 2**32 + 3),            # pos wraps to 3
    attention_call(4, 8, 64, 2**32 + 2, 200, 0),            # n_kv_heads wraps to 2
    attention_call(1, 2**31 + 8, 64, 2, 200, 0),            # n_heads wraps to 8
    attention_call(1, 2**17, 64, 2**13, 200, 0),            # n_heads over MAX_HEADS
    attention_call(2**31 + 1, 8, 64, 2, 2**31 + 16, 0),     # query count wraps to 1
])
def test_attention_sizes_are_checked_in_64_bits(case):
    assert_refused(case)


def test_limits_are_the_documented_ones():
    assert MAX_DIM == 1 << 24 and MAX_ELEMS == 1 << 36
    assert (1 << 18) * (1 << 18) <= MAX_ELEMS        # a 2^18 x 2^18 matrix is accepted with real buffers


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
    r = isolated(FORK_CASE + """
fork_and_wait()
assert np.array_equal(K.gemm(packed, X), ref)      # and the parent's pool is untouched
print("ok")
""")
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_another_thread_runs_kernels():
    # the pool's locks may be held by the other thread at the moment of the fork
    r = isolated(FORK_CASE + """
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
""")
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_multiprocessing_fork_workers_use_the_pool():
    r = isolated(FORK_CASE + """
import multiprocessing as mp

def work(i):
    return np.array_equal(K.gemm(packed, X), ref)

with mp.get_context("fork").Pool(2) as pool:
    assert all(pool.map_async(work, range(8)).get(timeout=60))
print("ok")
""")
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]
