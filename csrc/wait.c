/*
 * wait.c - blocking without burning a core: spin briefly, then park on a
 * futex word in the shared file (so it works across processes), with a
 * bounded park time as the safety net against any lost wake-up.
 * The handshake with wakers is explained in docs/design.md ("Waiting").
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Spin this long before parking: longer than a cross-core hand-off, so a
 * busy ping-pong never sleeps, short enough to cost nothing when idle.
 * After the first RB_PAUSE_NS, each round also yields the CPU, so that on
 * an oversubscribed machine the process we wait for can run on our core. */
#define RB_SPIN_NS 50000
#define RB_PAUSE_NS 500
/* Longest single park: bounds the damage of a wake-up that a bug would miss
 * (docs/design.md, "Waiting"). The Python binding does not rely on it: it
 * waits in 50 ms slices, and a signal that interrupts a park ends the wait
 * with RB_EINTR. */
#define RB_PARK_MAX_NS 100000000

/* A waiter that cannot use membarrier parks at most this long while wakers
 * may not have seen heavy_waiters yet (it sets it once, before its first
 * park: a waker that read the old value skipped its fence). */
#define RB_HEAVY_SETTLE_NS 10000000
#define RB_HEAVY_PARK_NS 1000000

_Atomic uint32_t rb_light_epoch;

static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

void rb_membarrier_register(void)
{
    /* Relaxed: process-local bookkeeping; the registration syscall itself
     * orders what matters (the kernel applies it before returning). */
    uint32_t want = atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed) + 1;
    if (atomic_load_explicit(&rb_light_epoch, memory_order_relaxed) == want)
        return;
    /* RINGBUF_MEMBARRIER=0 opts this process out: its wakers then use full
     * fences, and other processes' waits do not interrupt its CPUs. */
    const char *env = getenv("RINGBUF_MEMBARRIER");
    if (env != NULL && strcmp(env, "0") == 0)
        return;
    int e = errno;
    long cmds = membarrier(MEMBARRIER_CMD_QUERY);
    int ok = cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
             (cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
             membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    errno = e;
    if (ok)
        atomic_store_explicit(&rb_light_epoch, want, memory_order_relaxed);
}

/* The waiter's half of the handshake, after counting itself and before its
 * re-check: a full fence here, and one on every CPU running a registered
 * process (whose wakers then need only a compiler barrier). Returns 1 if
 * membarrier is unavailable to us, after making sure wakers fence. */
#ifdef RB_KILLPOINTS
int rb_test_no_membarrier;
#define NO_MEMBARRIER rb_test_no_membarrier
#else
#define NO_MEMBARRIER 0
#endif

static int waiter_fence(rb_ring *rb)
{
    int e = errno;
    long r = NO_MEMBARRIER ? -1 : membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
    errno = e;
    atomic_thread_fence(memory_order_seq_cst);
    if (r == 0)
        return 0;
    /* Relaxed load, seq_cst store and fence: wakers read the flag with a
     * relaxed load on their hot path; until they see it (at once, in
     * practice), the parks of this handle are kept short for a while
     * (RB_HEAVY_PARK_NS), from its first wait without membarrier on. */
    if (atomic_load_explicit(&rb->hdr->heavy_waiters, memory_order_relaxed) == 0) {
        atomic_store_explicit(&rb->hdr->heavy_waiters, 1, memory_order_seq_cst);
        atomic_thread_fence(memory_order_seq_cst);
    }
    /* Relaxed: this handle's own clock reading; a race between its
     * threads only shifts when its short parks end. */
    if (atomic_load_explicit(&rb->heavy_since, memory_order_relaxed) == 0)
        atomic_store_explicit(&rb->heavy_since, rb_now_ns(), memory_order_relaxed);
    return 1;
}

int64_t rb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rb_deadline(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return RB_FOREVER;
    int64_t now = rb_now_ns();
    return timeout_ns > RB_FOREVER - now ? RB_FOREVER : now + timeout_ns;
}

/* Returns 1 if a signal handler interrupted the wait, else 0. */
static int futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    /* Not FUTEX_PRIVATE: the word lives in a file shared by processes.
     * EAGAIN (word changed) and ETIMEDOUT mean "look again"; EINTR goes
     * back to the caller, whose signal handler may want to act before any
     * message moves (Python raises KeyboardInterrupt there). */
    int e = errno;
    long r = syscall(SYS_futex, (void *)word, FUTEX_WAIT, expected, &ts, NULL, 0);
    int interrupted = r != 0 && errno == EINTR;
    errno = e;
    return interrupted;
}

/* Wake-ups in a row that found nobody parked, although waiters were
 * counted, before this handle looks for counts left by dead waiters. A
 * live waiter is counted a little before it parks (and after it wakes), so
 * an empty wake-up now and then is normal; a count that never goes away
 * makes every wake-up empty. */
#define RB_EMPTY_WAKES_REAP 64

void rb_wake(rb_ring *rb, const struct rb_waitq *q)
{
    /* Relaxed: the caller's rb_waker_fence orders this load after its
     * state change; either we see the waiter's count or it sees our
     * change. */
    if (atomic_load_explicit(q->waiters, memory_order_relaxed) == 0)
        return;
    /* Relaxed empty_wakes: a process-local heuristic; a race only moves
     * the moment of a (harmless) reaping scan. */
    rb_count(rb, RB_C_WAKES, 1);
    if (rb_wake_always(q) > 0)
        atomic_store_explicit(&rb->empty_wakes, 0, memory_order_relaxed);
    else if (atomic_fetch_add_explicit(&rb->empty_wakes, 1, memory_order_relaxed) + 1 >= RB_EMPTY_WAKES_REAP) {
        atomic_store_explicit(&rb->empty_wakes, 0, memory_order_relaxed);
        rb_reap_parked(rb, q);
    }
}

long rb_wake_always(const struct rb_waitq *q)
{
    /* Release (paired with the acquire of `seen` in rb_wait): a waiter that
     * read this bump also sees the change made before it. A parked waiter
     * compares the word in the kernel; any change makes its FUTEX_WAIT
     * return, also one about to start. */
    atomic_fetch_add_explicit(q->word, 1, memory_order_release);
    int e = errno;
    long woken = syscall(SYS_futex, (void *)q->word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    errno = e;
    return woken;
}

/* rb_shutdown has been called: checked before each readiness test. */
static int is_closing_acquire(const rb_ring *rb)
{
    /* Acquire: pairs with rb_shutdown's release exchange. Stronger than the
     * wait needs (shutdown publishes nothing else through the flag, and a
     * parked waiter sees it through the futex word's release/acquire bump:
     * docs/design.md, "Shutdown"); the same plain load on x86-64. */
    return atomic_load_explicit(&rb->closing, memory_order_acquire) != 0;
}

int rb_spin(rb_ring *rb, int (*ready)(rb_ring *, uint64_t), uint64_t arg, int64_t deadline)
{
    /* Pause, then yield the CPU between tries. */
    int64_t start = rb_now_ns(), now = start;
    int64_t spin_end = start + RB_SPIN_NS < deadline ? start + RB_SPIN_NS : deadline;
    for (unsigned i = 1;; i++) {
        if (is_closing_acquire(rb))
            return RB_ECLOSED;
        if (ready(rb, arg))
            return RB_OK;
        if (now - start < RB_PAUSE_NS) {
            cpu_relax();
            if ((i & 15) == 0)
                now = rb_now_ns();
        } else {
            sched_yield();
            now = rb_now_ns();
        }
        if (now >= spin_end)
            return RB_ETIMEDOUT;
    }
}

int rb_wait(rb_ring *rb, const struct rb_waitq *q, int (*ready)(rb_ring *, uint64_t), uint64_t arg,
            int64_t deadline)
{
    /* Spin, then park. */
    int rc = rb_spin(rb, ready, arg, deadline);
    if (rc != RB_ETIMEDOUT)
        return rc;
    /* Park, waking at least once per stall timeout to check for a dead
     * owner of whatever we wait for (recover.c). Relaxed: a setting. */
    int64_t stall = atomic_load_explicit(&rb->stall_ns, memory_order_relaxed);
    int64_t park_max = stall >= 0 && stall < RB_PARK_MAX_NS ? (stall > 1000000 ? stall : 1000000) : RB_PARK_MAX_NS;
    /* Count ourselves once for the whole wait. Relaxed: the count is
     * ordered by the fence that follows. Our slot keeps our share of it,
     * so that if we are killed while parked, the next owner of the slot
     * takes it back (slots.c): counted first, uncounted last, so a death in
     * between can only leave a count behind, never take one away. */
    struct rb_slot *me = rb->me;
    atomic_fetch_add_explicit(q->waiters, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&me->parked[q->index], 1, memory_order_relaxed);
    /* Fence (ours, and membarrier's on the wakers' CPUs), paired with the
     * waker's fence between its state change and its load of the count:
     * a waker whose load comes after it sees the count (it stays raised
     * until we return), and a waker whose load came before it made its
     * change visible to every re-check below. Once per wait: membarrier
     * interrupts other CPUs. */
    int heavy = waiter_fence(rb);
    for (;;) {
        /* Acquire (paired with the waker's release bump): if we read a bump,
         * the re-check below sees the change made before it. If a waker
         * bumps after this load, the word no longer equals seen: FUTEX_WAIT
         * returns at once, or the waker's FUTEX_WAKE ends it. */
        uint32_t seen = atomic_load_explicit(q->word, memory_order_acquire);
        if (is_closing_acquire(rb)) {
            rc = RB_ECLOSED;
            break;
        }
        if (ready(rb, arg)) {
            rc = RB_OK;
            break;
        }
        int64_t now = rb_now_ns();
        if (now >= deadline) {
            rc = RB_ETIMEDOUT;
            break;
        }
        /* Without membarrier, park briefly while wakers may not have seen
         * heavy_waiters yet (waiter_fence; heavy_since relaxed there). */
        int64_t cap = park_max;
        if (heavy && now - atomic_load_explicit(&rb->heavy_since, memory_order_relaxed) < RB_HEAVY_SETTLE_NS)
            cap = RB_HEAVY_PARK_NS;
        int interrupted = futex_wait(q->word, seen, deadline - now < cap ? deadline - now : cap);
        int64_t slept = rb_now_ns() - now;
        rb_count2(rb, RB_C_PARKS, 1, slept > 0 ? (uint64_t)slept : 0); /* parks, then their ns */
        if (interrupted) {
            rc = RB_EINTR;
            break;
        }
    }
    /* Relaxed: a stale count only costs a waker one needless syscall. */
    atomic_fetch_sub_explicit(&me->parked[q->index], 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(q->waiters, 1, memory_order_relaxed);
    return rc;
}
