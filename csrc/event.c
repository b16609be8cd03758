/*
 * event.c - pollable readiness for event loops (rb_event_fd): an eventfd per
 * handle and kind, signalled by a notifier thread that parks on the ring's
 * own futex queue, and re-armed by the handle's non-blocking calls when they
 * find the ring empty (or full). The protocol and its no-lost-wake-up
 * argument are in docs/design.md ("Event descriptors").
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

/* One kind of readiness (RB_EV_READABLE or RB_EV_WRITABLE) of one handle. */
struct rb_notifier {
    rb_ring *rb;
    unsigned kind;     /* RB_EV_READABLE or RB_EV_WRITABLE */
    int efd;           /* the eventfd: a count > 0 polls readable */
    pthread_t thread;
    uint32_t epoch;    /* rb_fork_epoch when made: the thread lives in that process only */
    /* Process-private futex words, this process only (the thread and the
     * handle's callers): armed = 1 asks the thread to wait for readiness
     * and then signal; stop = 1 ends it. */
    _Atomic uint32_t armed;
    _Atomic uint32_t stop;
    /* Writable: the room the thread waits for (a record size). */
    _Atomic uint64_t need;
    /* Serializes a re-arm's decisions (need, drain, arming) with the
     * thread's disarming: two threads of the handle re-arming at once
     * must not leave need above the smaller refused record. need_fresh
     * (under the lock): the next refused write sets need (since the
     * start, or the thread's last disarm) rather than lowering it. */
    pthread_mutex_t lock;
    int need_fresh;
    /* Re-arms so far (under the lock): a readiness found before the last
     * re-arm may be older than what that re-arm's caller found, so the
     * thread tests again instead of signalling it (no late, spurious
     * count after a drain). */
    uint64_t arm_gen;
    /* In a fork child: the next notifier inherited from the parent, kept
     * (not freed) until rb_close, since another thread of the child may
     * still be looking at it. */
    struct rb_notifier *stale_next;
};

/* Serializes rb_event_fd (rare) for every handle; held across fork() by
 * the handlers below, so that a child never inherits it locked. */
static pthread_mutex_t event_lock = PTHREAD_MUTEX_INITIALIZER;
static void event_lock_take(void) { pthread_mutex_lock(&event_lock); }
static void event_lock_give(void) { pthread_mutex_unlock(&event_lock); }
__attribute__((constructor)) static void register_event_fork_handlers(void)
{
    pthread_atfork(event_lock_take, event_lock_give, event_lock_give);
}

static void futex_private(_Atomic uint32_t *word, int op, uint32_t val)
{
    int e = errno;
    syscall(SYS_futex, (void *)word, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
    errno = e;
}

static void signal_efd(struct rb_notifier *n)
{
    uint64_t one = 1;
    int e = errno;
    ssize_t r;
    do
        r = write(n->efd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
    errno = e; /* EAGAIN: the count is at its maximum, still readable */
}

/* rb_wait's readiness test for the writable notifier: room for the record
 * size in n->need, read at every test (a re-arm may lower it meanwhile). */
static int room_for_need(rb_ring *rb, uint64_t arg)
{
    struct rb_notifier *n = (struct rb_notifier *)(uintptr_t)arg;
    return rb_space_ready(rb, atomic_load(&n->need));
}

/* The readable thread's wait: until a non-blocking read through the
 * handle may succeed. rb_wait's data test (data_ready) also says "ready"
 * while another handle holds the read turn (blocking reads then wait for
 * the turn), where a non-blocking read would find nothing; so each round
 * probes first: data (ready), empty (wait for data), or the turn held by
 * another (wait for the turn, unless its holder is dead: then a read takes
 * it over). */
static int await_readable(rb_ring *rb)
{
    for (;;) {
        uint32_t holder = 0;
        int r = rb_probe_data(rb, &holder);
        int rc;
        if (r > 0)
            return RB_OK;
        if (r < 0) {
            if (rb_turn_dead(rb, holder))
                return RB_OK;
            rc = rb_await_turn(rb, RB_FOREVER);
        } else
            rc = rb_await_data(rb, RB_FOREVER);
        if (rc != RB_OK)
            return rc;
    }
}

static void *notifier_main(void *arg)
{
    struct rb_notifier *n = arg;
    rb_ring *rb = n->rb;
    for (;;) {
        /* Wait to be armed (a call found the ring empty, or full). */
        while (atomic_load(&n->armed) == 0 && atomic_load(&n->stop) == 0)
            futex_private(&n->armed, FUTEX_WAIT, 0);
        if (atomic_load(&n->stop) != 0)
            return NULL;
        pthread_mutex_lock(&n->lock);
        uint64_t gen = n->arm_gen;
        pthread_mutex_unlock(&n->lock);
        /* Armed: wait until the state it was armed against changes. The
         * readiness test comes after our arming was seen, and rb_wait
         * counts us as a waiter before its re-check: a change made after
         * that test wakes us (docs/design.md). */
        int rc;
        if (n->kind == RB_EV_READABLE)
            rc = await_readable(rb);
        else {
            struct rb_waitq q = rb_space_q(rb);
            rc = rb_wait(rb, &q, room_for_need, (uint64_t)(uintptr_t)n, RB_FOREVER);
        }
        if (atomic_load(&n->stop) != 0)
            return NULL;
        if (rc == RB_OK || rc == RB_ECLOSED) {
            /* Disarm first, then signal: a re-arm after our disarm makes
             * us test again; one before it is undone by our signal, which
             * makes its caller call again (and re-arm if it must). After
             * rb_shutdown (RB_ECLOSED) we go on the same way: a re-arm
             * racing the shutdown may drain this signal, and then its
             * arming makes us test (RB_ECLOSED at once) and signal again,
             * so the fd polls readable for good. */
            pthread_mutex_lock(&n->lock);
            if (rc == RB_OK && n->arm_gen != gen) {
                /* Re-armed while we waited: test again (still armed). */
                pthread_mutex_unlock(&n->lock);
                continue;
            }
            atomic_store(&n->armed, 0);
            n->need_fresh = 1;
            /* The write under the lock too: a re-arm's drain is either
             * before it (and then its arming made us test again, above)
             * or after it. */
            signal_efd(n);
            pthread_mutex_unlock(&n->lock);
        }
    }
}

/* Called by a non-blocking call of the handle that found the ring empty
 * (kind RB_EV_READABLE) or full for a record of need bytes. */
void rb_event_rearm_slow(rb_ring *rb, unsigned kind, uint64_t need)
{
    struct rb_notifier *n = atomic_load_explicit(&rb->notify[kind == RB_EV_WRITABLE], memory_order_acquire);
    /* Relaxed: the epoch as in rb_check_fork. A notifier made before a
     * fork() has no thread in this process: nothing to arm. */
    if (n == NULL || n->epoch != atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed))
        return;
    pthread_mutex_lock(&n->lock);
    /* Writable: the thread waits for the room the refused write needed. A
     * fresh arming sets it; while armed (another thread of the handle was
     * refused too), it only goes down, to the smallest refused record. */
    int lowered = 0;
    if (kind == RB_EV_WRITABLE) {
        uint64_t cur = atomic_load(&n->need);
        if (n->need_fresh) {
            atomic_store(&n->need, need);
            n->need_fresh = 0;
            lowered = need < cur;
        } else if (need < cur) {
            atomic_store(&n->need, need);
            lowered = 1;
        }
    }
    /* Drain, then arm: see the thread's disarm-then-signal above. Always
     * a read(), even when nothing may be there: a flag saying "signalled"
     * would be set either before the thread's write (then a drain between
     * the two could leave a count that no re-arm ever drains: a loop
     * spinning on an empty ring) or after it (then a re-arm in between
     * skips its drain, and a loop spins until the thread runs again, which
     * on a loaded machine can take milliseconds). One system call per
     * empty (full) result, and only while a descriptor exists. */
    uint64_t count;
    int e = errno;
    while (read(n->efd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    errno = e;
    n->arm_gen++;
    uint32_t was_armed = atomic_exchange(&n->armed, 1);
    pthread_mutex_unlock(&n->lock);
    if (was_armed == 0)
        futex_private(&n->armed, FUTEX_WAKE, 1);
    else if (lowered) {
        /* The thread may be parked testing a larger need: make it test
         * again (a bump of the space queue; others parked there re-check
         * and park again). */
        struct rb_waitq q = rb_space_q(rb);
        rb_wake_always(&q);
    }
}

static int start_notifier(rb_ring *rb, unsigned kind, struct rb_notifier **out)
{
    struct rb_notifier *n = calloc(1, sizeof *n);
    if (n == NULL)
        return RB_ESYS;
    n->rb = rb;
    n->kind = kind;
    n->epoch = atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed);
    atomic_init(&n->armed, 1); /* test the ring once at the start */
    atomic_init(&n->need, rb_rec_size(1));
    n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (n->efd < 0) {
        free(n);
        return RB_ESYS;
    }
    pthread_mutex_init(&n->lock, NULL);
    n->need_fresh = 1;
    /* The thread takes no signals: they belong to the caller's threads
     * (Python runs its handlers on the main thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&n->thread, NULL, notifier_main, n);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        pthread_mutex_destroy(&n->lock);
        close(n->efd);
        free(n);
        errno = err;
        return RB_ESYS;
    }
    *out = n;
    return RB_OK;
}

static void stop_notifier(rb_ring *rb, struct rb_notifier *n)
{
    atomic_store(&n->stop, 1);
    /* armed = 1 too: a thread between its test of stop and its FUTEX_WAIT
     * on armed == 0 then finds the word changed and does not sleep. */
    atomic_store(&n->armed, 1);
    futex_private(&n->armed, FUTEX_WAKE, 1);
    futex_private(&n->stop, FUTEX_WAKE, 1);
    /* A thread parked on the ring's queue: end its wait. rb->closing is
     * set (rb_close runs after every other call), so the bump makes its
     * re-check return RB_ECLOSED; other waiters on the queue re-check and
     * park again. */
    struct rb_waitq q = n->kind == RB_EV_READABLE ? rb_data_q(rb) : rb_space_q(rb);
    rb_wake_always(&q);
    if (n->kind == RB_EV_READABLE) {
        /* It may be waiting for the read turn instead (await_readable). */
        struct rb_waitq t = rb_turn_q(rb);
        rb_wake_always(&t);
    }
    pthread_join(n->thread, NULL);
    pthread_mutex_destroy(&n->lock);
    close(n->efd);
    free(n);
}

/* A notifier inherited through fork(): its thread stayed in the parent.
 * Forget it here (closing our copy of its eventfd; the parent's is its
 * own), so that this process can make its own. The struct (our copy of
 * the parent's) is kept until rb_close: a re-arm in another thread may
 * have loaded the pointer and be about to read its epoch. */
static void drop_inherited(rb_ring *rb, unsigned i, uint32_t epoch)
{
    struct rb_notifier *n = atomic_load_explicit(&rb->notify[i], memory_order_acquire);
    if (n != NULL && n->epoch != epoch) {
        atomic_store_explicit(&rb->notify[i], NULL, memory_order_relaxed);
        close(n->efd);
        n->stale_next = rb->notify_stale;
        rb->notify_stale = n;
    }
}

RB_API int rb_event_fd(rb_ring *rb, unsigned events, int *fd)
{
    if (rb == NULL || fd == NULL || events == 0 || (events & ~(RB_EV_READABLE | RB_EV_WRITABLE)) != 0)
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    rb_check_fork(rb);
    int rc = RB_OK;
    pthread_mutex_lock(&event_lock);
    uint32_t epoch = atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed);
    for (unsigned i = 0; i < 2; i++)
        drop_inherited(rb, i, epoch);
    if (rb->notify_epfd >= 0 && rb->notify_epoch != epoch) {
        close(rb->notify_epfd); /* the parent's, as above */
        rb->notify_epfd = -1;
    }
    for (unsigned i = 0; i < 2 && rc == RB_OK; i++) {
        unsigned kind = i == 0 ? RB_EV_READABLE : RB_EV_WRITABLE;
        if ((events & kind) && atomic_load_explicit(&rb->notify[i], memory_order_relaxed) == NULL) {
            struct rb_notifier *n;
            rc = start_notifier(rb, kind, &n);
            if (rc == RB_OK) /* Release: the notifier is complete before re-arms see it. */
                atomic_store_explicit(&rb->notify[i], n, memory_order_release);
        }
    }
    if (rc == RB_OK && events == (RB_EV_READABLE | RB_EV_WRITABLE) && rb->notify_epfd < 0) {
        /* Both kinds: an epoll descriptor over the two eventfds, readable
         * when either is. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        for (unsigned i = 0; i < 2 && ep >= 0; i++) {
            struct rb_notifier *n = atomic_load_explicit(&rb->notify[i], memory_order_relaxed);
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, n->efd, &ev) != 0) {
                int e = errno;
                close(ep);
                errno = e;
                ep = -1;
            }
        }
        if (ep < 0)
            rc = RB_ESYS;
        else {
            rb->notify_epfd = ep;
            rb->notify_epoch = epoch;
        }
    }
    if (rc == RB_OK) {
        if (events == RB_EV_READABLE)
            *fd = atomic_load_explicit(&rb->notify[0], memory_order_relaxed)->efd;
        else if (events == RB_EV_WRITABLE)
            *fd = atomic_load_explicit(&rb->notify[1], memory_order_relaxed)->efd;
        else
            *fd = rb->notify_epfd;
    }
    pthread_mutex_unlock(&event_lock);
    return rc;
}

void rb_event_close(rb_ring *rb)
{
    uint32_t epoch = atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed);
    for (unsigned i = 0; i < 2; i++) {
        struct rb_notifier *n = atomic_load_explicit(&rb->notify[i], memory_order_acquire);
        if (n == NULL)
            continue;
        atomic_store_explicit(&rb->notify[i], NULL, memory_order_relaxed);
        if (n->epoch == epoch)
            stop_notifier(rb, n);
        else {
            close(n->efd);
            free(n);
        }
    }
    while (rb->notify_stale != NULL) {
        struct rb_notifier *n = rb->notify_stale;
        rb->notify_stale = n->stale_next;
        free(n);
    }
    if (rb->notify_epfd >= 0)
        close(rb->notify_epfd);
    rb->notify_epfd = -1;
}
