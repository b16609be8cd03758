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
#include <limits.h>
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
    /* 1 while the eventfd may hold a count (written by the thread, drained
     * by a re-arm): lets a re-arm skip its read() when nothing is there. */
    _Atomic uint32_t signalled;
    /* Writable: the bytes the last refused write needed (a record size). */
    _Atomic uint64_t need;
};

static void futex_private(_Atomic uint32_t *word, int op, uint32_t val)
{
    int e = errno;
    syscall(SYS_futex, (void *)word, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
    errno = e;
}

static void signal_efd(struct rb_notifier *n)
{
    /* seq_cst, as every access to signalled and armed: the argument in
     * docs/design.md orders a re-arm's drain and arming against the
     * thread's disarming and signal; these are off the hot path. */
    atomic_store(&n->signalled, 1);
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
        /* Armed: wait until the state it was armed against changes. The
         * readiness test comes after our arming was seen, and rb_wait
         * counts us as a waiter before its re-check: a change made after
         * that test wakes us (docs/design.md). */
        int rc;
        if (n->kind == RB_EV_READABLE)
            rc = rb_await_data(rb, RB_FOREVER);
        else {
            struct rb_waitq q = rb_space_q(rb);
            rc = rb_wait(rb, &q, room_for_need, (uint64_t)(uintptr_t)n, RB_FOREVER);
        }
        if (atomic_load(&n->stop) != 0)
            return NULL;
        if (rc == RB_OK || rc == RB_ECLOSED) {
            /* Disarm first, then signal: a re-arm after our disarm makes
             * us test again; one before it is undone by our signal, which
             * makes its caller call again (and re-arm if it must). */
            atomic_store(&n->armed, 0);
            signal_efd(n);
        }
        if (rc == RB_ECLOSED) {
            /* Shut down: the fd stays readable so that loops notice; the
             * thread parks until rb_close stops it. */
            while (atomic_load(&n->stop) == 0)
                futex_private(&n->stop, FUTEX_WAIT, 0);
            return NULL;
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
    /* Writable: the thread waits for the room the refused write needed. A
     * fresh arming sets it; while armed (another thread of the handle was
     * refused too), it only goes down, to the smallest refused record. */
    int lowered = 0;
    if (kind == RB_EV_WRITABLE) {
        if (atomic_load(&n->armed) == 0)
            atomic_store(&n->need, need);
        else {
            uint64_t cur = atomic_load(&n->need);
            while (need < cur && !atomic_compare_exchange_weak(&n->need, &cur, need))
                ;
            lowered = need < cur;
        }
    }
    /* Drain, then arm: see the thread's disarm-then-signal above. */
    if (atomic_exchange(&n->signalled, 0) != 0) {
        uint64_t count;
        int e = errno;
        while (read(n->efd, &count, sizeof count) < 0 && errno == EINTR)
            ;
        errno = e;
    }
    if (atomic_exchange(&n->armed, 1) == 0)
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
    /* The thread takes no signals: they belong to the caller's threads
     * (Python runs its handlers on the main thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&n->thread, NULL, notifier_main, n);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
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
    pthread_join(n->thread, NULL);
    close(n->efd);
    free(n);
}

/* A notifier inherited through fork(): its thread stayed in the parent.
 * Forget it here (closing our copy of its eventfd; the parent's is its
 * own), so that this process can make its own. */
static void drop_inherited(rb_ring *rb, unsigned i, uint32_t epoch)
{
    struct rb_notifier *n = atomic_load_explicit(&rb->notify[i], memory_order_acquire);
    if (n != NULL && n->epoch != epoch) {
        atomic_store_explicit(&rb->notify[i], NULL, memory_order_relaxed);
        close(n->efd);
        free(n); /* our copy of the parent's memory */
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
    pthread_mutex_lock(&rb->notify_lock);
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
    pthread_mutex_unlock(&rb->notify_lock);
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
    if (rb->notify_epfd >= 0)
        close(rb->notify_epfd);
    rb->notify_epfd = -1;
    pthread_mutex_destroy(&rb->notify_lock);
}
