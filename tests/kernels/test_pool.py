"""The kernel thread pool (thread_pool.c): what its counters say, and that a worker
the OS does not schedule holds up no job: the calling thread runs the job's items
itself and never waits for a worker that has not joined. Each case runs in a child
process, so a hang fails its test (timeout) instead of stalling pytest."""

import os
import sys

import pytest

from tests.kernels.test_sizes import isolated

SETUP = """
import os, subprocess, sys, time
from tmac_core.kernels import _kernels
from tests.kernels.cases import make_activations, make_case

rng = np.random.default_rng(1)
packed = make_case(rng, 576, 576, 32, 4).pack()     # 9 tiles: a SmolLM2 attention matrix
x = make_activations(rng, 1, 576)[0]
K.set_num_threads(1)
ref = K.gemv(packed, x)
"""


def test_counters_tell_shared_jobs_from_inline_calls():
    r = isolated(
        SETUP
        + """
s0 = _kernels.pool_stats()
K.gemv(packed, x)
s1 = _kernels.pool_stats()
assert (s1["calls"] - s0["calls"], s1["jobs"] - s0["jobs"]) == (2, 0), (s0, s1)  # table build, GEMV
K.set_num_threads(2)
for _ in range(200):
    assert np.array_equal(K.gemv(packed, x), ref)
s2 = _kernels.pool_stats()
assert s2["calls"] - s1["calls"] == 400 and s2["jobs"] - s1["jobs"] == 200, (s1, s2)
assert 0 <= s2["worker_items"] - s1["worker_items"] <= 200 * 9 and s2["caller_wait_seconds"] >= 0
print("ok")
"""
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(sys.platform == "win32", reason="the extension does not export its C symbols on Windows")
def test_every_item_runs_once_in_every_job_at_any_size():
    # thousands of jobs through the C entry point, 0 to 40 items each, the pool resized
    # between some of them: each job's items are seen exactly once, by valid thread indices
    r = isolated(
        """
import ctypes, random
import tmac_core.kernels._kernels as mod
lib = ctypes.CDLL(mod.__file__)
TASK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
lib.tmac_parallel_for.argtypes = [ctypes.c_int, TASK, ctypes.c_void_p]
seen, threads = [], set()

def item(ctx, i, thread):
    seen.append(i)
    threads.add(thread)

task = TASK(item)
rnd = random.Random(3)
size = 2
for job in range(3000):
    if job % 500 == 0:
        size = rnd.choice([1, 2, 3, 5])
        assert lib.tmac_pool_set_threads(size) == 0
    n = rnd.randrange(41)
    seen.clear()
    assert lib.tmac_parallel_for(n, task, None) == 0
    assert sorted(seen) == list(range(n)), (job, n, sorted(seen))
assert threads <= set(range(5)), threads
print("ok")
"""
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="pins threads to two CPUs of their own (Linux thread ids)",
)
def test_a_worker_that_gets_no_cpu_holds_up_no_job():
    # The worker shares a CPU with a busy process at SCHED_IDLE (~0.3% of the CPU), as a
    # thread does when another program takes its core. A pool that waits for every worker
    # to take part in every job needed ~26 ms per call here (52 s for the 2000 calls);
    # this one needs ~0.1 ms. Then the worker gets its CPU back and takes part again.
    r = isolated(
        SETUP
        + """
task = "/proc/self/task"
before = set(os.listdir(task))
K.set_num_threads(2)
K.gemv(packed, x)                                   # starts the worker
workers = [int(t) for t in set(os.listdir(task)) - before]
assert len(workers) == 1, workers
cpus = sorted(os.sched_getaffinity(0))[:2]
hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
try:
    os.sched_setaffinity(hog.pid, {cpus[0]})
    os.sched_setaffinity(0, {cpus[1]})                  # the calling thread
    os.sched_setaffinity(workers[0], {cpus[0]})
    os.sched_setscheduler(workers[0], os.SCHED_IDLE, os.sched_param(0))
    time.sleep(0.1)
    t0 = time.monotonic()
    for _ in range(2000):
        assert np.array_equal(K.gemv(packed, x), ref)
    starved = time.monotonic() - t0
finally:
    hog.kill()
    hog.wait()
assert starved < 15, f"2000 calls took {starved:.1f} s with a starved worker"
os.sched_setscheduler(workers[0], os.SCHED_OTHER, os.sched_param(0))
os.sched_setaffinity(workers[0], set(cpus))
s0 = _kernels.pool_stats()
deadline = time.monotonic() + 30
while _kernels.pool_stats()["worker_items"] == s0["worker_items"] and time.monotonic() < deadline:
    assert np.array_equal(K.gemv(packed, x), ref)
assert _kernels.pool_stats()["worker_items"] > s0["worker_items"], "the worker never rejoined"
print("ok")
""",
        timeout=180,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]
