/* A persistent thread pool for the kernels: pthreads on POSIX, Win32 threads
 * on Windows, no OpenMP (Apple clang has none; MSVC's is 2.0 only).
 *
 * One parallel_for runs at a time (a job mutex). A decode step issues ~150
 * sub-millisecond jobs, so the hot path takes no lock and makes no system call:
 * the caller publishes a job in one atomic word, workers that are spinning on
 * it join, and the caller waits for the job's items, not for the workers. A
 * worker that the OS has descheduled (2 threads on a shared 2-core machine)
 * simply misses the jobs posted while it is away: the caller and the other
 * workers run its share (the job word below). Waiting threads spin briefly,
 * then yield the core a few times, then sleep on a condition variable.
 *
 * The size can be changed at any moment; the change is applied, under the job
 * mutex, at the start of the next call. Tasks must not call tmac_parallel_for
 * themselves. A forked child gets a fresh pool (see atfork_child). */
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
/* long is 32 bits on Windows; the job word and the counters are 64-bit */
#  define ATOMIC_LOAD(p) InterlockedCompareExchange((volatile LONG *)(p), 0, 0)
#  define ATOMIC_STORE(p, v) InterlockedExchange((volatile LONG *)(p), (LONG)(v))
#  define ATOMIC_ADD(p, v) InterlockedExchangeAdd((volatile LONG *)(p), (LONG)(v))
#  define ATOMIC_LOAD64(p) ((uint64_t)InterlockedCompareExchange64((volatile LONG64 *)(p), 0, 0))
#  define ATOMIC_STORE64(p, v) ((void)InterlockedExchange64((volatile LONG64 *)(p), (LONG64)(v)))
#  define ATOMIC_ADD64(p, v) ((uint64_t)InterlockedExchangeAdd64((volatile LONG64 *)(p), (LONG64)(v)))
#  define ATOMIC_CAS64(p, expect, desired) \
    ((uint64_t)InterlockedCompareExchange64((volatile LONG64 *)(p), (LONG64)(desired), (LONG64)(expect)) == (expect))
#else
#  include <pthread.h>
#  include <sched.h>
#  include <unistd.h>
#  include <time.h>
#  if defined(__linux__)
#    include <sys/prctl.h>
#  endif
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
#  define ATOMIC_LOAD64(p) __atomic_load_n(p, __ATOMIC_SEQ_CST)
#  define ATOMIC_STORE64(p, v) __atomic_store_n(p, (uint64_t)(v), __ATOMIC_SEQ_CST)
#  define ATOMIC_ADD64(p, v) __atomic_fetch_add(p, (uint64_t)(v), __ATOMIC_SEQ_CST)
static inline int atomic_cas64(uint64_t *p, uint64_t expect, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expect, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
#  define ATOMIC_CAS64(p, expect, desired) atomic_cas64(p, expect, desired)
#endif

#define MAX_THREADS TMAC_MAX_THREADS
/* How a thread waits (for a job, or for the last items of a job): SPIN_ROUNDS
 * pauses (~25-65 ns each: 50-130 us, longer than the serial work between two
 * jobs of a decode step), then YIELD_ROUNDS yields of its core to whatever else
 * is runnable (when threads outnumber free cores a spinning worker would delay
 * the very thread it waits for), then it sleeps until woken. No yield while
 * spinning: on a busy machine a yield hands the core away for a whole time
 * slice, and the next job would start without this thread. */
#define SPIN_ROUNDS 2048
#define YIELD_ROUNDS 16

/* The job word: | generation (24 bits) | threads inside (9) | items not yet reported done (31) |.
 * The caller publishes a job by storing a new generation with all its items;
 * a worker joins with a compare-and-swap that adds one thread, which succeeds
 * only while items remain; it leaves with one atomic subtraction of itself and
 * the items it ran. The job is over when the word's low 40 bits are zero: every
 * item ran and nobody is inside, and from then on nobody can join (the count of
 * items is zero). So the caller never waits for a worker that has not joined,
 * a worker that wakes up late finds the job over and waits for the next one,
 * and a generation that wraps around is harmless (joining compares the whole
 * word with a live job's, never a remembered generation). */
#define ITEMS_MASK (((uint64_t)1 << 31) - 1)          /* TMAC_MAX_ITEMS = 2^30 fits */
#define THREAD_ONE ((uint64_t)1 << 31)
#define BUSY_MASK (((uint64_t)1 << 40) - 1)             /* threads inside and items left */
#define GEN_ONE ((uint64_t)1 << 40)
#define GEN_OF(s) ((s) >> 40)
TMAC_STATIC_ASSERT(TMAC_MAX_ITEMS <= (1 << 30) && MAX_THREADS < 512, "the job word's fields hold them");

/* The items of a job are split into one contiguous range per thread, each
 * with its own counter on its own cache line: a thread claims its items
 * without bouncing a shared line between cores (a 64-row tile is ~1-2 us of
 * work, a contended atomic ~0.1 us), and walks memory in order, which the
 * hardware prefetcher follows. A thread whose range runs out helps with the
 * others' ranges through the same counters, so a slow or descheduled thread
 * delays the job by at most the one item it is running. */
typedef struct {
    long next;                     /* atomic: next unclaimed item; overshoots end by at most */
    long end;                      /* MAX_THREADS, and n_items <= TMAC_MAX_ITEMS = 2^30, so a
                                    * 32-bit long (Windows) is enough */
    char pad[64 - 2 * sizeof(long)];
} item_range_t;

typedef struct {
    TMAC_ALIGN(64) uint64_t job;   /* atomic: the job word above, on its own cache line */
    char pad[64 - sizeof(uint64_t)];
    mutex_t job_lock;              /* one parallel_for (or resize) at a time */
    mutex_t sleep_lock;
    cond_t work_cv, done_cv;
    long wanted;                   /* atomic: requested size, applied at the next call */
    int n_threads;                 /* current size, including the calling thread */
    thread_t workers[MAX_THREADS];
    long n_sleeping, caller_sleeping, stop;      /* atomics */
    TMAC_ALIGN(64) item_range_t ranges[MAX_THREADS];
    tmac_task_fn fn;               /* the job: stable while a thread is inside it */
    void *ctx;
    TMAC_ALIGN(64) tmac_pool_stats_t stats;   /* the caller's, under job_lock (off the line of fn, ctx) */
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

/* Runs items of the current job until none is left; returns how many it ran. */
static long run_items(pool_t *p, int thread) {
    long ran = 0;
    for (int r = 0; r < p->n_threads; r++) {       /* own range first, then help the next ones */
        item_range_t *range = &p->ranges[(thread + r) % p->n_threads];
        long i;
        while ((i = ATOMIC_ADD(&range->next, 1)) < range->end) {
            p->fn(p->ctx, (int)i, thread);
            ran++;
        }
    }
    return ran;
}

/* Spins, yields, and finally sleeps on cv until done(p, arg) holds. *sleeping
 * counts the threads asleep on cv: whoever makes done() true reads it after
 * its own atomic update of the job word (both sequentially consistent) and
 * broadcasts only when it is nonzero, so the hot path has no lock, and a
 * sleeper, which re-checks done() after announcing itself under the lock, is
 * never missed. Returns 1 if it slept. */
static int wait_until(pool_t *p, int (*done)(pool_t *, uint64_t), uint64_t arg, cond_t *cv, long *sleeping) {
    for (int s = 0; s < SPIN_ROUNDS; s++) {
        if (done(p, arg)) return 0;
        CPU_RELAX();
    }
    for (int s = 0; s < YIELD_ROUNDS; s++) {
        if (done(p, arg)) return 0;
        YIELD();
    }
    MUTEX_LOCK(&p->sleep_lock);
    ATOMIC_ADD(sleeping, 1);
    while (!done(p, arg)) COND_WAIT(cv, &p->sleep_lock);
    ATOMIC_ADD(sleeping, -1);
    MUTEX_UNLOCK(&p->sleep_lock);
    return 1;
}

/* Returns 1 if it woke anyone. */
static int broadcast_if(pool_t *p, cond_t *cv, long *sleeping) {
    if (ATOMIC_LOAD(sleeping) == 0) return 0;
    MUTEX_LOCK(&p->sleep_lock);
    COND_BROADCAST(cv);
    MUTEX_UNLOCK(&p->sleep_lock);
    return 1;
}

static int new_generation(pool_t *p, uint64_t seen) {
    return GEN_OF(ATOMIC_LOAD64(&p->job)) != seen;
}

static int job_over(pool_t *p, uint64_t unused) {
    (void)unused;
    return (ATOMIC_LOAD64(&p->job) & BUSY_MASK) == 0;
}

typedef struct { pool_t *pool; int index; uint64_t start_generation; } worker_arg_t;
static worker_arg_t g_args[MAX_THREADS];

#if defined(_WIN32)
static unsigned __stdcall worker_main(void *arg)
#else
static void *worker_main(void *arg)
#endif
{
    worker_arg_t *a = (worker_arg_t *)arg;
    pool_t *p = a->pool;
#if defined(__linux__)
    prctl(PR_SET_NAME, "tmac-worker", 0, 0, 0);    /* top -H, perf, and the pool tests find it */
#endif
    /* the generation at spawn time: the first job may be posted before this thread runs */
    uint64_t seen = a->start_generation;
    for (;;) {
        wait_until(p, new_generation, seen, &p->work_cv, &p->n_sleeping);
        if (ATOMIC_LOAD(&p->stop)) break;
        uint64_t s = ATOMIC_LOAD64(&p->job);
        seen = GEN_OF(s);
        int joined = 0;
        while (!joined && GEN_OF(s) == seen && (s & ITEMS_MASK) != 0) {
            joined = ATOMIC_CAS64(&p->job, s, s + THREAD_ONE);
            if (!joined) s = ATOMIC_LOAD64(&p->job);
        }
        if (!joined) continue;       /* over already, or a newer job: the wait returns at once */
        const long ran = run_items(p, a->index);
        ATOMIC_ADD64(&p->job, (uint64_t)0 - (THREAD_ONE + (uint64_t)ran));
        broadcast_if(p, &p->done_cv, &p->caller_sleeping);
    }
    return 0;
}

/* A new generation with no items: wakes the workers without giving them work. */
static void bump_generation(pool_t *p) {
    ATOMIC_STORE64(&p->job, (ATOMIC_LOAD64(&p->job) & ~BUSY_MASK) + GEN_ONE);
    broadcast_if(p, &p->work_cv, &p->n_sleeping);
}

static void stop_workers(pool_t *p) {
    if (p->n_threads <= 1) return;
    ATOMIC_STORE(&p->stop, 1);
    bump_generation(p);
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
        g_args[t].start_generation = GEN_OF(ATOMIC_LOAD64(&p->job));
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
 * parent's workers, and its job word may count some of them inside a job, so
 * its first parallel call would wait for them forever; and a lock or condition
 * variable may be copied mid-use by a thread that does not exist in the child.
 * This handler runs in the child right after fork, before any other code
 * there: it forgets the workers (nothing to join: they were never copied),
 * clears the job word, re-creates the locks and condition variables, and the
 * next parallel call starts `wanted` new threads. Chosen over a getpid() check
 * at each call: that is a system call (glibc stopped caching the pid in 2.25)
 * on a path a decode step takes hundreds of times, and it would have to run
 * before taking job_lock, which a parent thread may have held at the moment of
 * the fork. The parent keeps its pool untouched, and no prepare handler is
 * needed: a job in flight in the parent is the parent's, the child never waits
 * for it. Windows has no fork. */
static void atfork_child(void) {
    pool_t *p = &g_pool;
    MUTEX_INIT(&p->job_lock);
    MUTEX_INIT(&p->sleep_lock);
    COND_INIT(&p->work_cv);
    COND_INIT(&p->done_cv);
    p->n_threads = 1;
    p->job &= ~BUSY_MASK;
    p->n_sleeping = 0;
    p->caller_sleeping = 0;
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

void tmac_pool_stats(tmac_pool_stats_t *out) {
    pool_t *p = &g_pool;
    pool_init_once();
    MUTEX_LOCK(&p->job_lock);
    *out = p->stats;
    MUTEX_UNLOCK(&p->job_lock);
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
    p->stats.calls++;
    if (p->n_threads == 1 || n_items <= 1) {
        for (int i = 0; i < n_items; i++) fn(ctx, i, 0);
    } else {
        /* nobody is inside a job here (the last one ended with its word's busy bits at zero),
         * so the job's fields can be rewritten before the word publishes them */
        p->fn = fn;
        p->ctx = ctx;
        for (int t = 0; t < p->n_threads; t++) {
            /* the products need 64 bits (2^30 items * 256 threads); the quotients fit a long */
            p->ranges[t].end = (long)((int64_t)n_items * (t + 1) / p->n_threads);
            ATOMIC_STORE(&p->ranges[t].next, (long)((int64_t)n_items * t / p->n_threads));
        }
        ATOMIC_STORE64(&p->job, (ATOMIC_LOAD64(&p->job) & ~BUSY_MASK) + GEN_ONE + (uint64_t)n_items);
        p->stats.wakeups += broadcast_if(p, &p->work_cv, &p->n_sleeping);
        const long ran = run_items(p, 0);
        ATOMIC_ADD64(&p->job, (uint64_t)0 - (uint64_t)ran);
        p->stats.jobs++;
        p->stats.worker_items += n_items - ran;
        if (!job_over(p, 0)) {
            /* a worker is still running an item it claimed */
            const double t0 = tmac_now_seconds();
            p->stats.caller_sleeps += wait_until(p, job_over, 0, &p->done_cv, &p->caller_sleeping);
            p->stats.caller_wait_seconds += tmac_now_seconds() - t0;
        }
    }
    MUTEX_UNLOCK(&p->job_lock);
    return rc;
}
