/*
 * slots.c - who is attached to a ring: each open handle owns a slot of the
 * table after the header page and holds an OFD lock on its first byte. The
 * kernel drops the lock when the handle's last descriptor closes, also when
 * its process is killed, so "is the owner of this record alive?" has an
 * exact answer that survives pid reuse and SIGSTOP (docs/design.md, "Crash
 * recovery").
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Atomic uint32_t rb_fork_epoch;

static off_t slot_offset(uint32_t slot) { return (off_t)(RB_PAGE0 + (uint64_t)slot * RB_SLOT_SIZE); }

static int lock_cmd(int fd, int cmd, short type, uint32_t slot, short *seen)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = slot_offset(slot);
    fl.l_len = 1;
    /* OFD locks belong to the open file description: threads sharing the
     * handle share it, and it is released only when the last descriptor of
     * the description closes (or the process dies). l_pid must be 0. */
    int r;
    do
        r = fcntl(fd, cmd, &fl);
    while (r != 0 && errno == EINTR);
    if (seen != NULL)
        *seen = fl.l_type;
    return r;
}

uint32_t rb_slots_used(const rb_ring *rb)
{
    /* Relaxed: a hint bounding scans; a slot taken after we look belongs to
     * a handle that opened after the state we are examining. (A forged
     * file may hold anything: clamp.) */
    uint32_t n = atomic_load_explicit(&rb->hdr->slots_used, memory_order_relaxed);
    return n > RB_SLOTS ? RB_SLOTS : n;
}

int rb_slot_alive(rb_ring *rb, uint32_t slot)
{
    if (slot == rb->slot)
        return 1; /* our own lock never conflicts with us: test it here */
    short seen = F_UNLCK;
    /* If the test itself fails, say "alive": waiting is always safe. */
    if (lock_cmd(rb->fd, F_OFD_GETLK, F_WRLCK, slot, &seen) != 0)
        return 1;
    return seen != F_UNLCK;
}

int rb_id_alive(rb_ring *rb, uint32_t id)
{
    uint32_t slot = rb_id_slot(id);
    if (!rb_slot_alive(rb, slot))
        return 0;
    /* The slot is held; by the same owner only if the generation matches
     * (a new owner bumps it right after taking the lock, so a generation
     * older than the id's is impossible and a stale read can only say
     * "alive"). Acquire fence: pairs with slot_init's release fence for
     * an id learnt through one of the owner's releases. */
    atomic_thread_fence(memory_order_acquire);
    uint32_t gen = atomic_load_explicit(&rb->slots[slot].gen, memory_order_relaxed) & RB_GEN_MASK;
    return gen == rb_id_gen(id);
}

/* A dead owner's slot can be taken over only once no reservation it had in
 * flight may still need recovering: an intent entry whose range is not
 * consumed yet (end > head) and was really reserved (start < tail: an entry
 * announced before a CAS that never happened, or lost, reserves nothing).
 * A slot whose owner still holds a group's read turn or the reclaim lock is
 * left alone too, so that
 * rb_info can name the dead holder's pid (recovery itself needs nothing
 * from the slot: what a dead reclaimer left to finish is in the header). */
static int slot_reusable(rb_ring *rb, uint32_t slot)
{
    struct rb_slot *s = &rb->slots[slot];
    /* Relaxed: the owner is dead, nothing writes these words any more, and
     * head and tail only grow (an old value is the cautious one). */
    uint32_t turn = atomic_load_explicit(&rb->hdr->reclaim_turn, memory_order_relaxed);
    if (turn != 0 && rb_id_slot(turn) == slot)
        return 0;
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        turn = atomic_load_explicit(&rb_group_at(rb, i)->turn, memory_order_relaxed);
        if (turn != 0 && rb_id_slot(turn) == slot)
            return 0;
    }
    uint64_t head = atomic_load_explicit(&rb->hdr->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
    for (unsigned i = 0; i < RB_SLOT_INTENTS; i++) {
        uint64_t end = atomic_load_explicit(&s->intent[i].end, memory_order_relaxed);
        uint64_t start = atomic_load_explicit(&s->intent[i].start, memory_order_relaxed);
        /* A reservation that happened has start < end <= tail (its CAS
         * moved tail to end; the CAS came before the owner's death, which
         * came before we found its lock free). Past tail: never reserved. */
        if (end != 0 && end > head && start < tail && end <= tail)
            return 0;
    }
    return 1;
}

/* We just took slot's lock: make it ours. */
static void slot_init(rb_ring *rb, uint32_t slot)
{
    struct rb_slot *s = &rb->slots[slot];
    /* Relaxed throughout: the slot is ours alone now; readers of gen only
     * need to see a change eventually (rb_id_alive). */
    uint32_t gen = (atomic_load_explicit(&s->gen, memory_order_relaxed) + 1) & RB_GEN_MASK;
    if (gen == 0)
        gen = 1;
    atomic_store_explicit(&s->gen, gen, memory_order_relaxed);
    atomic_store_explicit(&s->pid, (uint32_t)getpid(), memory_order_relaxed);
    for (unsigned i = 0; i < RB_SLOT_INTENTS; i++) {
        atomic_store_explicit(&s->intent[i].start, 0, memory_order_relaxed);
        atomic_store_explicit(&s->intent[i].end, 0, memory_order_relaxed);
    }
    /* A waiter killed while parked left its count behind: take it back, so
     * that wakers stop making needless futex calls. Relaxed, as in rb_wait:
     * the counts are ordered by the waiters' and wakers' fences. */
    struct rb_waitq qs[3] = {rb_data_q(rb), rb_space_q(rb), rb_turn_q(rb)};
    for (unsigned i = 0; i < 3; i++) {
        uint32_t left = atomic_exchange_explicit(&s->parked[qs[i].index], 0, memory_order_relaxed);
        if (left != 0)
            atomic_fetch_sub_explicit(qs[i].waiters, left, memory_order_relaxed);
    }
    rb->slot = slot;
    rb->me = s;
    /* A new slot (after fork, a new process's): entry 0 is anyone's.
     * Relaxed: no other thread writes through the handle meanwhile. */
    atomic_store_explicit(&rb->intent_owner, 0, memory_order_relaxed);
    /* Likewise the counting thread (rb_count2). The counters themselves
     * are kept: they count since the ring was created (docs/format.md). */
    atomic_store_explicit(&rb->count_owner, 0, memory_order_relaxed);
    rb->id = rb_id_make(slot, gen);
    /* Release: whoever learns our id through a release of ours (a record's
     * header via tail, the read turn via its acq_rel CAS) sees the new
     * generation in rb_id_alive (acquire fence there). */
    atomic_thread_fence(memory_order_release);
    /* Raise the high-water mark. Relaxed: see rb_slots_used. */
    uint32_t used = atomic_load_explicit(&rb->hdr->slots_used, memory_order_relaxed);
    while (used < slot + 1 &&
           !atomic_compare_exchange_weak_explicit(&rb->hdr->slots_used, &used, slot + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void rb_reap_parked(rb_ring *rb, const struct rb_waitq *q)
{
    if (atomic_load_explicit(&rb->closing, memory_order_relaxed) != 0)
        return;
    /* Through an open file description of our own for this scan: its
     * locks conflict with every other description's, our handle's (and so
     * our own slot) included, and with those of other threads or of a fork
     * child sharing our handle's description, which reap through their
     * own. So while we hold a dead slot's lock, nobody else holds it. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", rb->fd);
    int e = errno;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        errno = e;
        return;
    }
    uint32_t used = rb_slots_used(rb);
    for (uint32_t slot = 0; slot < used; slot++) {
        struct rb_slot *s = &rb->slots[slot];
        /* Relaxed: a hint; the exchanges below, under the slot's lock, decide. */
        if (atomic_load_explicit(&s->parked[q->index], memory_order_relaxed) == 0)
            continue;
        /* Holding the slot's lock, as an owner would: its owner is gone
         * (the lock was free) and nobody can take the slot and park
         * meanwhile; slot_init takes the counts back the same way. */
        if (lock_cmd(fd, F_OFD_SETLK, F_WRLCK, slot, NULL) != 0)
            continue; /* a live handle owns it (or the lock failed: leave it) */
        struct rb_waitq qs[3] = {rb_data_q(rb), rb_space_q(rb), rb_turn_q(rb)};
        for (unsigned i = 0; i < 3; i++) {
            /* Relaxed, as in slot_init. */
            uint32_t left = atomic_exchange_explicit(&s->parked[qs[i].index], 0, memory_order_relaxed);
            if (left != 0)
                atomic_fetch_sub_explicit(qs[i].waiters, left, memory_order_relaxed);
        }
        lock_cmd(fd, F_OFD_SETLK, F_UNLCK, slot, NULL);
    }
    close(fd); /* drops any lock still held through it */
    errno = e;
}

/* Takes the first free, reusable slot with the lock held on fd. */
static int attach_fd(rb_ring *rb, int fd)
{
    int save_fd = rb->fd;
    rb->fd = fd;
    for (uint32_t slot = 0; slot < RB_SLOTS; slot++) {
        if (lock_cmd(fd, F_OFD_SETLK, F_WRLCK, slot, NULL) != 0) {
            if (errno == EAGAIN || errno == EACCES)
                continue; /* a live handle owns it */
            rb->fd = save_fd;
            return RB_ESYS;
        }
        if (!slot_reusable(rb, slot)) {
            lock_cmd(fd, F_OFD_SETLK, F_UNLCK, slot, NULL);
            continue;
        }
        slot_init(rb, slot);
        return RB_OK;
    }
    rb->fd = save_fd;
    errno = EUSERS;
    return RB_ESYS;
}

int rb_slot_attach(rb_ring *rb)
{
    rb->slot = RB_SLOTS; /* none yet: rb_slot_alive must not match it */
    /* Relaxed: the global as in rb_check_fork; the handle is not shared
     * with any other thread yet (rb_open has not returned it). */
    atomic_store_explicit(&rb->fork_epoch, atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed),
                          memory_order_relaxed);
    return attach_fd(rb, rb->fd);
}

/* The first call on a handle inherited through fork(): the description (and
 * so the slot's lock) is shared with the parent, so a slot of our own is
 * taken on a new description of the same file. If that fails, the handle
 * keeps sharing the parent's slot: correct, but a crash of either process
 * is only recovered once both are gone. */
int rb_after_fork(rb_ring *rb)
{
    uint32_t epoch = atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed);
    /* One thread of this (child) process re-attaches, the others wait until
     * it has. reattaching holds the epoch being re-attached: a value from an
     * older epoch was left by a thread that a fork() did not copy (we are a
     * grandchild), and is taken over. Relaxed load of reattaching: the CAS
     * decides (its acquire pairs with nothing: no store of reattaching
     * releases). Acquire on fork_epoch: pairs with the release store
     * below, as in rb_check_fork. */
    for (;;) {
        uint32_t cur = atomic_load_explicit(&rb->reattaching, memory_order_relaxed);
        if (cur == epoch) {
            while (atomic_load_explicit(&rb->fork_epoch, memory_order_acquire) != epoch)
                sched_yield();
            return RB_OK;
        }
        if (atomic_compare_exchange_weak_explicit(&rb->reattaching, &cur, epoch, memory_order_acquire,
                                                  memory_order_relaxed))
            break;
    }
    if (atomic_load_explicit(&rb->fork_epoch, memory_order_relaxed) != epoch) {
        /* A peek open in the parent is the parent's: forget it here. */
        atomic_store_explicit(&rb->peeking, 0, memory_order_relaxed);
        /* So is an ephemeral group: the parent's handle removes it. */
        rb->grp_ephemeral = 0;
        rb_membarrier_register();
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", rb->fd);
        int e = errno;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK), attached = 0;
        if (fd >= 0) {
            int old = rb->fd;
            if (attach_fd(rb, fd) == RB_OK) {
                close(old); /* the parent's description: its lock stays with the parent */
                attached = 1;
                rb_group_mark_slot(rb); /* our new slot is a member too */
            } else
                close(fd);
        }
        /* Still the parent's slot: its intent entry 0 and its count_own
         * stay with the parent's owning threads (whose rb_self one of
         * ours may have), so no thread of ours takes the plain-store paths
         * (ring.c, rb_count2). Relaxed:
         * the release of fork_epoch below publishes it to our threads. */
        if (!attached) {
            atomic_store_explicit(&rb->intent_owner, UINTPTR_MAX, memory_order_relaxed);
            atomic_store_explicit(&rb->count_owner, UINTPTR_MAX, memory_order_relaxed); /* likewise */
        }
        errno = e;
        atomic_store_explicit(&rb->fork_epoch, epoch, memory_order_release);
    }
    return RB_OK;
}

/* Relaxed: the child runs one thread here, and its threads start later. */
static void on_fork_child(void) { atomic_fetch_add_explicit(&rb_fork_epoch, 1, memory_order_relaxed); }

__attribute__((constructor)) static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* ---- test-only kill points ---------------------------------------------- */

#ifdef RB_KILLPOINTS
/* Test-only, off every measured path: plain seq_cst atomics. */
static const char *_Atomic kill_name;
static _Atomic unsigned kill_left;
static _Atomic int kill_sig;

RB_API void rb_test_killpoint(const char *name, unsigned nth, int sig)
{
    atomic_store(&kill_left, nth == 0 ? 1 : nth);
    atomic_store(&kill_sig, sig);
    atomic_store(&kill_name, name);
}

void rb_killpoint(const char *name)
{
    const char *armed = atomic_load(&kill_name);
    if (armed != NULL && strcmp(armed, name) == 0 && atomic_fetch_sub(&kill_left, 1) == 1) {
        atomic_store(&kill_name, NULL); /* once (SIGSTOP continues) */
        raise(atomic_load(&kill_sig));
    }
}
#endif
