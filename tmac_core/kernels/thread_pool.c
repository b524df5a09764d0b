/* A persistent thread pool for the kernels: pthreads on POSIX, Win32 threads
 * on Windows, no OpenMP (Apple clang has none; MSVC's is 2.0 only).
 *
 * One parallel_for runs at a time (a job mutex). Workers spin briefly on a
 * generation counter before sleeping on a condition variable, because a
 * decode step issues hundreds of sub-millisecond calls and a futex wake costs
 * tens of microseconds. The size can be changed at any moment; the change is
 * applied, under the job mutex, at the start of the next call. Tasks must not
 * call tmac_parallel_for themselves. A forked child gets a fresh pool (see
 * atfork_child). */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#  define _POSIX_C_SOURCE 200809L     /* clock_gettime, sysconf under -std=c11 */
#endif
#include <stdlib.h>
#include "tmac/kernels.h"

#if defined(_WIN32)
#  include <windows.h>
#  include <process.h>
typedef HANDLE thread_t;
typedef SRWLOCK mutex_t;
typedef CONDITION_VARIABLE cond_t;
#  define MUTEX_INIT(m) InitializeSRWLock(m)
#  define MUTEX_LOCK(m) AcquireSRWLockExclusive(m)
#  define MUTEX_UNLOCK(m) ReleaseSRWLockExclusive(m)
#  define COND_INIT(c) InitializeConditionVariable(c)
#  define COND_WAIT(c, m) SleepConditionVariableSRW(c, m, INFINITE, 0)
#  define COND_BROADCAST(c) WakeAllConditionVariable(c)
#  define CPU_RELAX() YieldProcessor()
#  define YIELD() SwitchToThread()
#  define ATOMIC_LOAD(p) InterlockedCompareExchange((volatile LONG *)(p), 0, 0)
#  define ATOMIC_STORE(p, v) InterlockedExchange((volatile LONG *)(p), (LONG)(v))
#  define ATOMIC_ADD(p, v) InterlockedExchangeAdd((volatile LONG *)(p), (LONG)(v))
#else
#  include <pthread.h>
#  include <sched.h>
#  include <unistd.h>
#  include <time.h>
typedef pthread_t thread_t;
typedef pthread_mutex_t mutex_t;
typedef pthread_cond_t cond_t;
#  define MUTEX_INIT(m) pthread_mutex_init(m, NULL)
#  define MUTEX_LOCK(m) pthread_mutex_lock(m)
#  define MUTEX_UNLOCK(m) pthread_mutex_unlock(m)
#  define COND_INIT(c) pthread_cond_init(c, NULL)
#  define COND_WAIT(c, m) pthread_cond_wait(c, m)
#  define COND_BROADCAST(c) pthread_cond_broadcast(c)
#  if TMAC_ARCH_X86_64
#    define CPU_RELAX() __builtin_ia32_pause()
#  elif TMAC_ARCH_ARM64
#    define CPU_RELAX() __asm__ volatile("yield")
#  else
#    define CPU_RELAX() ((void)0)
#  endif
#  define YIELD() sched_yield()
#  define ATOMIC_LOAD(p) __atomic_load_n(p, __ATOMIC_SEQ_CST)
#  define ATOMIC_STORE(p, v) __atomic_store_n(p, v, __ATOMIC_SEQ_CST)
#  define ATOMIC_ADD(p, v) __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST)
#endif

#define MAX_THREADS TMAC_MAX_THREADS
#define SPIN_ROUNDS 4096           /* ~0.1-0.3 ms of pause before sleeping */

/* The items of a job are split into one contiguous range per thread, each
 * with its own counter on its own cache line: a thread claims its items
 * without bouncing a shared line between cores (a 64-row tile is ~1-2 us of
 * work, a contended atomic ~0.1 us), and walks memory in order, which the
 * hardware prefetcher follows. A thread whose range runs out helps with the
 * others' ranges through the same counters, so a slow or descheduled thread
 * delays the job by at most the items it already claimed. */
typedef struct {
    long next;                     /* atomic: next unclaimed item; overshoots end by at most */
    long end;                      /* MAX_THREADS, and n_items <= TMAC_MAX_ITEMS = 2^30, so a
                                    * 32-bit long (Windows) is enough */
    char pad[64 - 2 * sizeof(long)];
} item_range_t;

typedef struct {
    mutex_t job_lock;              /* one parallel_for (or resize) at a time */
    mutex_t sleep_lock;
    cond_t work_cv, done_cv;
    long wanted;                   /* atomic: requested size, applied at the next call */
    int n_threads;                 /* current size, including the calling thread */
    thread_t workers[MAX_THREADS];
    /* the job */
    long generation, n_done, n_sleeping, stop;   /* atomics */
    TMAC_ALIGN(64) item_range_t ranges[MAX_THREADS];
    tmac_task_fn fn;
    void *ctx;
} pool_t;

static pool_t g_pool;
static int g_pool_ready;

static int online_cpus(void) {
#if defined(_WIN32)
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return (int)si.dwNumberOfProcessors;
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

static void run_items(pool_t *p, int thread) {
    for (int r = 0; r < p->n_threads; r++) {       /* own range first, then help the next ones */
        item_range_t *range = &p->ranges[(thread + r) % p->n_threads];
        long i;
        while ((i = ATOMIC_ADD(&range->next, 1)) < range->end) p->fn(p->ctx, (int)i, thread);
    }
}

/* Returns once the job generation differs from the one this worker last saw. */
static void wait_for_generation(pool_t *p, long seen) {
    for (int s = 0; s < SPIN_ROUNDS; s++) {
        if (ATOMIC_LOAD(&p->generation) != seen) return;
        CPU_RELAX();
        if ((s & 255) == 255) YIELD();       /* be fair when threads outnumber cores */
    }
    MUTEX_LOCK(&p->sleep_lock);
    ATOMIC_ADD(&p->n_sleeping, 1);
    while (ATOMIC_LOAD(&p->generation) == seen) COND_WAIT(&p->work_cv, &p->sleep_lock);
    ATOMIC_ADD(&p->n_sleeping, -1);
    MUTEX_UNLOCK(&p->sleep_lock);
}

typedef struct { pool_t *pool; int index; long start_generation; } worker_arg_t;
static worker_arg_t g_args[MAX_THREADS];

#if defined(_WIN32)
static unsigned __stdcall worker_main(void *arg)
#else
static void *worker_main(void *arg)
#endif
{
    worker_arg_t *a = (worker_arg_t *)arg;
    pool_t *p = a->pool;
    /* the generation at spawn time: the first job may be posted before this thread runs */
    long seen = a->start_generation;
    for (;;) {
        wait_for_generation(p, seen);
        seen = ATOMIC_LOAD(&p->generation);
        if (ATOMIC_LOAD(&p->stop)) break;
        run_items(p, a->index);
        if (ATOMIC_ADD(&p->n_done, 1) + 1 == p->n_threads - 1) {
            MUTEX_LOCK(&p->sleep_lock);
            COND_BROADCAST(&p->done_cv);
            MUTEX_UNLOCK(&p->sleep_lock);
        }
    }
    return 0;
}

static void wake_workers(pool_t *p) {
    ATOMIC_ADD(&p->generation, 1);
    MUTEX_LOCK(&p->sleep_lock);
    if (ATOMIC_LOAD(&p->n_sleeping) > 0) COND_BROADCAST(&p->work_cv);
    MUTEX_UNLOCK(&p->sleep_lock);
}

static void stop_workers(pool_t *p) {
    if (p->n_threads <= 1) return;
    ATOMIC_STORE(&p->stop, 1);
    wake_workers(p);
    for (int t = 1; t < p->n_threads; t++) {
#if defined(_WIN32)
        WaitForSingleObject(p->workers[t], INFINITE);
        CloseHandle(p->workers[t]);
#else
        pthread_join(p->workers[t], NULL);
#endif
    }
    ATOMIC_STORE(&p->stop, 0);
    p->n_threads = 1;
}

static int start_workers(pool_t *p, int n) {
    for (int t = 1; t < n; t++) {
        g_args[t].pool = p;
        g_args[t].index = t;
        g_args[t].start_generation = ATOMIC_LOAD(&p->generation);
#if defined(_WIN32)
        uintptr_t h = _beginthreadex(NULL, 0, worker_main, &g_args[t], 0, NULL);
        if (h == 0) { p->n_threads = t; return TMAC_E_THREADS; }
        p->workers[t] = (HANDLE)h;
#else
        if (pthread_create(&p->workers[t], NULL, worker_main, &g_args[t]) != 0) {
            p->n_threads = t;
            return TMAC_E_THREADS;
        }
#endif
        p->n_threads = t + 1;
    }
    return TMAC_OK;
}

#if !defined(_WIN32)
/* fork() copies only the calling thread. The child's pool still counts the
 * parent's workers, so its first parallel call would post a job nobody takes
 * and wait for them forever; and a lock or condition variable may be copied
 * mid-use by a thread that does not exist in the child. This handler runs in
 * the child right after fork, before any other code there: it forgets the
 * workers (nothing to join: they were never copied), re-creates the locks and
 * condition variables, and the next parallel call starts `wanted` new threads.
 * Chosen over a getpid() check at each call: that is a system call (glibc
 * stopped caching the pid in 2.25) on a path a decode step takes hundreds of
 * times, and it would have to run before taking job_lock, which a parent
 * thread may have held at the moment of the fork. The parent keeps its pool
 * untouched, and no prepare handler is needed: a job in flight in the parent
 * is the parent's, the child never waits for it. Windows has no fork. */
static void atfork_child(void) {
    pool_t *p = &g_pool;
    MUTEX_INIT(&p->job_lock);
    MUTEX_INIT(&p->sleep_lock);
    COND_INIT(&p->work_cv);
    COND_INIT(&p->done_cv);
    p->n_threads = 1;
    p->n_sleeping = 0;
    p->n_done = 0;
    p->stop = 0;
}
#endif

static void pool_init_once(void) {
    /* first called from tmac_init, which the binding runs once at import */
    if (g_pool_ready) return;
    MUTEX_INIT(&g_pool.job_lock);
    MUTEX_INIT(&g_pool.sleep_lock);
    COND_INIT(&g_pool.work_cv);
    COND_INIT(&g_pool.done_cv);
    g_pool.n_threads = 1;
    g_pool.wanted = online_cpus();
#if !defined(_WIN32)
    pthread_atfork(NULL, NULL, atfork_child);
#endif
    g_pool_ready = 1;
}

double tmac_now_seconds(void) {
#if defined(_WIN32)
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)f.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

int tmac_pool_set_threads(int n) {
    if (n < 1 || n > MAX_THREADS) return TMAC_E_THREADS;
    pool_init_once();
    ATOMIC_STORE(&g_pool.wanted, n);
    return TMAC_OK;
}

int tmac_pool_get_threads(void) {
    pool_init_once();
    return (int)ATOMIC_LOAD(&g_pool.wanted);
}

int tmac_parallel_for(int n_items, tmac_task_fn fn, void *ctx) {
    pool_t *p = &g_pool;
    int rc = TMAC_OK;
    if (n_items < 0 || n_items > TMAC_MAX_ITEMS || !fn) return TMAC_E_SHAPE;
    pool_init_once();
    MUTEX_LOCK(&p->job_lock);
    int wanted = (int)ATOMIC_LOAD(&p->wanted);
    if (wanted != p->n_threads) {
        stop_workers(p);
        rc = start_workers(p, wanted);      /* on failure we keep the threads we got */
    }
    if (p->n_threads == 1 || n_items <= 1) {
        for (int i = 0; i < n_items; i++) fn(ctx, i, 0);
    } else {
        p->fn = fn;
        p->ctx = ctx;
        for (int t = 0; t < p->n_threads; t++) {
            /* the products need 64 bits (2^30 items * 256 threads); the quotients fit a long */
            p->ranges[t].end = (long)((int64_t)n_items * (t + 1) / p->n_threads);
            ATOMIC_STORE(&p->ranges[t].next, (long)((int64_t)n_items * t / p->n_threads));
        }
        ATOMIC_STORE(&p->n_done, 0);
        wake_workers(p);
        run_items(p, 0);
        const long n_workers = p->n_threads - 1;
        for (int s = 0; s < SPIN_ROUNDS && ATOMIC_LOAD(&p->n_done) != n_workers; s++) {
            CPU_RELAX();
            if ((s & 255) == 255) YIELD();
        }
        if (ATOMIC_LOAD(&p->n_done) != n_workers) {
            MUTEX_LOCK(&p->sleep_lock);
            while (ATOMIC_LOAD(&p->n_done) != n_workers) COND_WAIT(&p->done_cv, &p->sleep_lock);
            MUTEX_UNLOCK(&p->sleep_lock);
        }
    }
    MUTEX_UNLOCK(&p->job_lock);
    return rc;
}
