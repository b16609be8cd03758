/*
 * groups.c - consumer groups and reclaiming: the group table (joining,
 * creating, removing, listing groups) and rb_reclaim, which frees for
 * writers what every group has read (and, in an overwrite ring, what some
 * had not). docs/design.md, "Consumer groups", gives the protocol.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <sys/mman.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long rb_group_remove waits for a member to give the group's read
 * turn back. */
#define RB_REMOVE_WAIT_NS 1000000000LL

uint32_t rb_groups_used(const rb_ring *rb)
{
    /* Relaxed: a hint bounding scans, as rb_slots_used. A group made after
     * we looked was made under the reclaim lock, which orders it against
     * every scan that matters (rb_reclaim holds the lock). */
    uint32_t n = atomic_load_explicit(&rb->hdr->groups_used, memory_order_relaxed);
    return n > RB_GROUPS_MAX ? RB_GROUPS_MAX : n;
}

/* ---- the reclaim lock ---------------------------------------------------- */

/* Zeroes [s, e) and moves head to e (we hold the reclaim lock), saying
 * first where it stops (release_end): a holder killed while zeroing, or
 * after zeroing but before storing head, leaves zero words below records
 * that nothing could tell from reservations in progress, so whoever takes
 * its lock over finishes the job first (finish_release). */
static void release_range(rb_ring *rb, uint64_t s, uint64_t e)
{
    /* Relaxed: read by the next holder after our release of the lock, or
     * after our death, which the kernel orders (docs/design.md, "Crash
     * recovery"). The compiler must not move the zeroing before it: a
     * killed process leaves a prefix of its program. */
    atomic_store_explicit(&rb->hdr->release_end, e, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    RB_KILLPOINT("reclaim.zeroing");
    /* Plain stores suffice: every group has read these bytes (their
     * release of the group head, which we acquired, ordered their reads
     * before this), or an overwrite ring moved the groups that had not past
     * them first; and the release of head publishes the zeros to producers
     * before they can reuse the bytes. The range is at most a capacity: the
     * double mapping makes it contiguous. */
    memset(rb->data + (s & rb->mask), 0, (size_t)(e - s));
    RB_KILLPOINT("reclaim.zeroed");
    /* Release pairs with the producers' acquire load of head in reserve():
     * the zeroed bytes are visible before anyone writes there again. */
    atomic_store_explicit(&rb->hdr->head, e, memory_order_release);
    RB_KILLPOINT("reclaim.released");
}

static void clear_overrun_tags(rb_ring *rb);

/* We took the reclaim lock over from a dead holder: finish what it left.
 * Its zeroing: [head, release_end) again, trusted only if it is a
 * plausible part of [head, tail] (an old or forged value is ignored: then
 * release_end <= head, or it points nowhere sensible). Its overrun in
 * progress: a group head still tagged (RB_HEAD_OVERRUN) is untagged, the
 * loss count short by what the dead holder had not added yet. Relaxed: see
 * release_range; tail is only a bound. */
static void finish_release(rb_ring *rb)
{
    uint64_t e = atomic_load_explicit(&rb->hdr->release_end, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&rb->hdr->head, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
    if (rb->overwrite)
        clear_overrun_tags(rb);
    /* The dead holder freed only what every group head had passed (an
     * overwrite ring moved them first), and group heads only grow: a
     * release_end past the lowest one is forged (found by invoke fuzz: the
     * taker zeroed records no group had read). Acquire: as rb_reclaim's
     * scan. */
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        if (!(atomic_load_explicit(&g->gen, memory_order_acquire) & 1u))
            continue;
        uint64_t gh = atomic_load_explicit(&g->head, memory_order_acquire) & ~(uint64_t)RB_HEAD_OVERRUN;
        if (gh < e)
            e = gh;
    }
    if (e > h && e <= t && e - h <= rb->capacity && ((h | e) & 7u) == 0)
        release_range(rb, h, e);
}

/* One round of waiting for a lock someone else holds: 0 once budget_ns
 * (>= 0; < 0: no limit) has passed since the first round (*end, 0 before
 * it; the clock is read every 64 rounds), else 1 after a pause (the first
 * 256 rounds) or a yield. */
static int wait_round(unsigned spins, int64_t budget_ns, int64_t *end)
{
    if ((spins & 63) == 0 && budget_ns >= 0) {
        int64_t now = rb_now_ns();
        if (*end == 0)
            *end = now + budget_ns;
        else if (now >= *end)
            return 0;
    }
    if (spins < 256)
        cpu_relax();
    else
        sched_yield();
    return 1;
}

/* Takes the reclaim lock: 1 taken at once, 2 taken after another holder
 * let it go (it was freeing space: the caller may find enough now), 0 not
 * taken (budget_ns ran out: the holder is slow, or stopped), -1 closing.
 * budget_ns < 0 waits as long as it takes. A dead holder is taken over
 * after the stall timeout (rb_take_dead_lock). With TAKE_CLOSING, a
 * handle being shut down still waits (rb_shutdown's own removal). */
#define TAKE_CLOSING 0x1u  /* go on after rb_shutdown */
#define TAKE_NO_DEAD 0x2u  /* a try that leaves a dead holder's turn alone */
static int lock_reclaim_ex(rb_ring *rb, int64_t budget_ns, unsigned how)
{
    int64_t end = 0;
    int waited = 0;
    for (unsigned spins = 0;; spins++) {
        uint32_t expected = 0;
        /* Acquire pairs with the last holder's release in rb_reclaim_unlock:
         * its head store, zeroing and group table changes are visible to
         * us. Release: a writer that finds our id here and checks whether
         * we are alive sees our slot's generation (rb_id_alive). Relaxed on
         * failure: the holder's id is a hint for rb_take_dead_lock. */
        if (atomic_compare_exchange_weak_explicit(&rb->hdr->reclaim_turn, &expected, rb->id, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return waited ? 2 : 1;
        waited = 1;
        if (expected != 0 && (spins & 63) == 0 &&
            rb_take_dead_lock(rb, &rb->hdr->reclaim_turn, expected, &rb->reclaim_stall)) {
            finish_release(rb);
            return 2;
        }
        if (!(how & TAKE_CLOSING) && is_closing_relaxed(rb))
            return -1;
        if (!wait_round(spins, budget_ns, &end))
            return 0;
    }
}

static int lock_reclaim(rb_ring *rb, int64_t budget_ns) { return lock_reclaim_ex(rb, budget_ns, 0); }

static void wake_space(rb_ring *rb)
{
    /* Fence between our stores (head, the lock) and rb_wake's load of the
     * waiter count; pairs with the fence in rb_wait ("Waiting"). */
    rb_waker_fence(rb);
    struct rb_waitq q = rb_space_q(rb);
    rb_wake(rb, &q);
}

void rb_reclaim_unlock(rb_ring *rb)
{
    /* Release: our head store, zeroing and table changes happen-before the
     * next holder. Writers waiting for space may be waiting for us to let
     * go (space_ready): wake them. */
    atomic_store_explicit(&rb->hdr->reclaim_turn, 0, memory_order_release);
    wake_space(rb);
}

int rb_reclaim_trylock(rb_ring *rb) { return lock_reclaim(rb, 20000) > 0; }

/* ---- group turns (taken here only to change the table) --------------------- */

/* Takes group g's read turn, waiting up to budget_ns (< 0: no wait beyond a
 * try, taking over a dead holder at once unless TAKE_NO_DEAD; else after
 * the stall timeout): 1 taken, 0 not. how: TAKE_* as lock_reclaim_ex. */
static int take_group_turn(rb_ring *rb, struct rb_group *g, int64_t budget_ns, unsigned how)
{
    int64_t end = 0;
    for (unsigned spins = 0;; spins++) {
        uint32_t expected = 0;
        /* Acq_rel, as a reader's take_turn (ring.c). */
        if (atomic_compare_exchange_weak_explicit(&g->turn, &expected, rb->id, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return 1;
        /* Our own id: a peek open on this handle (never given back while we
         * wait) or another thread of ours reading (it will be). Relaxed:
         * peeking is this handle's. */
        if (expected == rb->id && atomic_load_explicit(&rb->peeking, memory_order_relaxed))
            return 0;
        if (expected != 0 && (budget_ns < 0 || (spins & 63) == 0)) {
            /* A dead holder: no stall wait when not waiting at all. */
            if (budget_ns < 0 && !(how & TAKE_NO_DEAD) && !rb_id_alive(rb, expected)) {
                if (atomic_compare_exchange_strong_explicit(&g->turn, &expected, rb->id, memory_order_acq_rel,
                                                            memory_order_relaxed))
                    return 1;
            } else if (budget_ns >= 0 && rb_take_dead_lock(rb, &g->turn, expected, &rb->turn_stall))
                return 1;
        }
        if (budget_ns < 0 || (!(how & TAKE_CLOSING) && is_closing_relaxed(rb)))
            return 0;
        if (!wait_round(spins, budget_ns, &end))
            return 0;
    }
}

static void give_group_turn(rb_ring *rb, struct rb_group *g)
{
    /* Release: the table change we made under the turn happens-before the
     * next holder's check of gen. Then wake readers parked for a turn. */
    atomic_store_explicit(&g->turn, 0, memory_order_release);
    rb_waker_fence(rb);
    struct rb_waitq q = rb_turn_q(rb);
    rb_wake(rb, &q);
}

/* Removes group g (gen odd): we hold the reclaim lock and g's turn. */
static void remove_locked(struct rb_group *g, uint32_t gen)
{
    /* Relaxed: published by the release of g's turn (members check gen
     * under it) and of the reclaim lock (scans of the table). */
    atomic_store_explicit(&g->owner, 0, memory_order_relaxed);
    atomic_store_explicit(&g->gen, gen + 1, memory_order_relaxed);
}

/* An ephemeral group whose owner is dead. */
static int ephemeral_dead(rb_ring *rb, struct rb_group *g)
{
    /* Relaxed: kind and owner were published with gen (acquired by the
     * caller) and do not change while the group exists. */
    if (atomic_load_explicit(&g->kind, memory_order_relaxed) != RB_GROUP_KIND_EPHEMERAL)
        return 0;
    uint32_t owner = atomic_load_explicit(&g->owner, memory_order_relaxed);
    return owner != 0 && !rb_id_alive(rb, owner);
}

/* Removes the ephemeral groups whose owners died. We hold the reclaim
 * lock. A group whose turn a live handle holds is left for the next look. */
static void reap_ephemeral(rb_ring *rb)
{
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        /* Acquire: pairs with the creator's release of gen. */
        uint32_t gen = atomic_load_explicit(&g->gen, memory_order_acquire);
        if (!(gen & 1u) || !ephemeral_dead(rb, g))
            continue;
        if (!take_group_turn(rb, g, -1, 0))
            continue;
        if (atomic_load_explicit(&g->gen, memory_order_relaxed) == gen)
            remove_locked(g, gen);
        give_group_turn(rb, g);
    }
}

/* Whether it is time for this handle to look for dead ephemeral groups
 * (one fcntl per group: at most once per stall timeout). */
static int eph_check_due(rb_ring *rb, int64_t now)
{
    int64_t limit = atomic_load_explicit(&rb->stall_ns, memory_order_relaxed);
    if (limit < 0)
        return 0;
    /* Relaxed: per-handle bookkeeping, as the stall clocks. */
    return now - atomic_load_explicit(&rb->eph_check_since, memory_order_relaxed) >= limit;
}

/* ---- reclaiming ------------------------------------------------------------ */

/* Walks finished records (committed or discarded) from p until stop (or
 * t); stops at a record not finished (after trying to recover it, if its
 * writer died) or an impossible one. Returns where it stopped: a record
 * boundary. We hold the reclaim lock. */
static uint64_t walk_finished(rb_ring *rb, uint64_t p, uint64_t t, uint64_t stop)
{
    while (p < t && p < stop) {
        /* Acquire pairs with the writer's commit or abort (release): the
         * record is done with before we zero it. */
        uint64_t w = atomic_load_explicit(rb_rec_word(rb, p), memory_order_acquire);
        if (w == 0 || rb_rec_flags(w) == RB_REC_BUSY) {
            if (rb_recover_head(rb, p, &rb->reclaim_rec_stall) == 1)
                continue; /* a dead writer's: now discarded */
            break;
        }
        if (!rb_rec_valid(w, rb->max_message) || rb_rec_size(rb_rec_len(w)) > t - p)
            break; /* a forged record: readers report it */
        p += rb_rec_size(rb_rec_len(w));
    }
    return p;
}

/* Messages (records not discarded) in [p, e): finished records, which
 * nobody changes while we hold the reclaim lock. */
static uint64_t count_messages(rb_ring *rb, uint64_t p, uint64_t e)
{
    uint64_t n = 0;
    while (p < e) {
        /* Relaxed: walk_finished acquired every one of these words. */
        uint64_t w = atomic_load_explicit(rb_rec_word(rb, p), memory_order_relaxed);
        if (!rb_rec_valid(w, rb->max_message))
            break;
        if (!(rb_rec_flags(w) & RB_REC_DISCARD))
            n++;
        p += rb_rec_size(rb_rec_len(w));
    }
    return n;
}

/* Overwrite rings: moves every group that has not read up to m there,
 * counting what it lost. A member's read in progress finds its group
 * moved (its CAS of the group head fails, ring.c) and delivers nothing of
 * what it copied. We hold the reclaim lock. */
static void overrun_groups(rb_ring *rb, uint64_t h, uint64_t m)
{
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        /* Acquire: as in rb_reclaim's scan. */
        if (!(atomic_load_explicit(&g->gen, memory_order_acquire) & 1u))
            continue;
        /* Acquire: the member's copies out happened-before our zeroing
         * (it released the head it stored). */
        uint64_t gh = atomic_load_explicit(&g->head, memory_order_acquire);
        while ((gh & ~(uint64_t)7) < m) {
            uint64_t from = gh & ~(uint64_t)7; /* a forged tag or misalignment: count whole words */
            uint64_t lost = count_messages(rb, from < h ? h : from, m);
            /* Tag the new head (RB_HEAD_OVERRUN) until the loss is counted:
             * a member that finds the head moved must also find the count,
             * or it would deliver messages after the gap before reporting
             * the gap (rb_group_head waits for the tag to go). Acquire,
             * also on failure (where we count again from the new value):
             * as the load above. Release: a member whose CAS fails, or
             * that loads the head afterwards, sees a head consistent with
             * the bytes (rb_group_join's and rb_positions' bounds). */
            if (atomic_compare_exchange_strong_explicit(&g->head, &gh, m | RB_HEAD_OVERRUN, memory_order_acq_rel,
                                                        memory_order_acquire)) {
                RB_KILLPOINT("reclaim.overrun");
                if (lost != 0) {
                    /* Relaxed: counts, published by the release below. The
                     * one members report first: a kill between the two
                     * leaves only the statistic short. */
                    atomic_fetch_add_explicit(&g->lost_pending, lost, memory_order_relaxed);
                    atomic_fetch_add_explicit(&g->lost, lost, memory_order_relaxed);
                }
                /* Release: a member that acquires the untagged head sees the
                 * count (lost_found). */
                atomic_store_explicit(&g->head, m, memory_order_release);
                break;
            }
        }
    }
}

/* A dead holder of the reclaim lock was overrunning: untag what it left
 * tagged (its loss count is short by what it had not added). We hold the
 * lock. */
static void clear_overrun_tags(rb_ring *rb)
{
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        /* Relaxed: the dead holder's stores are visible through its death
         * (docs/design.md, "Orders in recovery"); release: as the untag in
         * overrun_groups. */
        uint64_t gh = atomic_load_explicit(&g->head, memory_order_relaxed);
        if (gh & RB_HEAD_OVERRUN)
            atomic_compare_exchange_strong_explicit(&g->head, &gh, gh & ~(uint64_t)RB_HEAD_OVERRUN,
                                                    memory_order_release, memory_order_relaxed);
    }
}

int rb_group_head(rb_ring *rb, uint64_t *head)
{
    /* Acquire: a writer may have moved it (overrun_groups: its untagging
     * release, which also publishes the loss count). */
    uint64_t gh = atomic_load_explicit(&rb->grp->head, memory_order_acquire);
    if (__builtin_expect(!(gh & RB_HEAD_OVERRUN), 1)) {
        *head = gh;
        return RB_OK;
    }
    /* A writer is counting what it took from us: a few instructions,
     * unless it was preempted or killed there. Its lock is released (or
     * taken over, after the stall timeout, finishing its work) once the
     * tag is gone. */
    for (int round = 0; round < 2; round++) {
        for (unsigned spins = 0; spins < 1024; spins++) {
            gh = atomic_load_explicit(&rb->grp->head, memory_order_acquire);
            if (!(gh & RB_HEAD_OVERRUN)) {
                *head = gh;
                return RB_OK;
            }
            cpu_relax();
        }
        if (lock_reclaim(rb, 20000) > 0) {
            /* Its holder was done, or dead and finished by us; a tag still
             * there now belongs to nobody (a forged file): clear it. */
            clear_overrun_tags(rb);
            rb_reclaim_unlock(rb);
        }
    }
    return RB_EEMPTY;
}

int rb_has_ephemeral(rb_ring *rb)
{
    /* Relaxed: a hint, as rb_reclaimable. */
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        if ((atomic_load_explicit(&g->gen, memory_order_relaxed) & 1u) &&
            atomic_load_explicit(&g->kind, memory_order_relaxed) == RB_GROUP_KIND_EPHEMERAL)
            return 1;
    }
    return 0;
}

uint64_t rb_reclaimable(rb_ring *rb, int *any)
{
    /* Relaxed throughout: a hint; rb_reclaim decides under the lock. */
    uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed), m = t;
    *any = 0;
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        if (!(atomic_load_explicit(&g->gen, memory_order_relaxed) & 1u))
            continue;
        uint64_t gh = atomic_load_explicit(&g->head, memory_order_relaxed) & ~(uint64_t)7;
        *any = 1;
        if (gh < m)
            m = gh;
    }
    return m;
}

/* The most one reclaim zeroes beyond what the writer needs: bounds how
 * long the lock is held (a memset of 4 MiB takes a few hundred
 * microseconds), and so how much one write pays for the others' reads.
 * Rings up to this size never walk to find where to stop: a stop below the
 * lowest group head must be at a record boundary, found by walking the
 * records (a few instructions each). */
#define RB_RECLAIM_CHUNK ((uint64_t)4 << 20)

int rb_reclaim(rb_ring *rb, uint64_t need)
{
    /* A non-blocking write waits at most this long for another writer's
     * reclaim (as a read waits for the turn). */
    int got = lock_reclaim(rb, 20000);
    if (got <= 0)
        return 0;
    /* Relaxed head: only holders of the lock store it, and our lock's
     * acquire made the last store visible. Acquire tail: pairs with the
     * producers' release CAS, so that recovery (walk_finished) sees the
     * intent entries of the reservations below it. */
    uint64_t h = atomic_load_explicit(&rb->hdr->head, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_acquire);
    int64_t now = rb_now_ns();
    if (eph_check_due(rb, now)) {
        atomic_store_explicit(&rb->eph_check_since, now, memory_order_relaxed);
        reap_ephemeral(rb);
    }
    uint64_t m = t;
    int any = 0;
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        /* Acquire: pairs with the creator's release of gen, so its head is
         * the one it set (or a later one). */
        if (!(atomic_load_explicit(&g->gen, memory_order_acquire) & 1u))
            continue;
        /* Acquire pairs with the members' release of the group head: their
         * copies out of the bytes below it happen-before our zeroing. */
        uint64_t gh = atomic_load_explicit(&g->head, memory_order_acquire);
        any = 1;
        if (gh < m)
            m = gh;
    }
    if (m < h || (m & 7u) != 0)
        m = h; /* a forged group head (or tag): free nothing on its account */
    /* Free what the writer needs (head up to target), and up to a chunk
     * more of what every group has read, at record boundaries. */
    uint64_t target = t + need > h + rb->capacity ? t + need - rb->capacity : h;
    uint64_t limit = target > h + RB_RECLAIM_CHUNK ? target : h + RB_RECLAIM_CHUNK;
    /* Relaxed: written under the lock we hold. */
    uint64_t jt = atomic_load_explicit(&rb->hdr->join_tail, memory_order_relaxed);
    if (!any)
        m = walk_finished(rb, h, t, limit); /* nobody is owed anything */
    else if (m > limit || h < jt) {
        /* A boundary below the lowest head (the chunk's end), and records
         * below join_tail, which a group made at "latest" passed without
         * reading them: they may still be being written. */
        uint64_t check = m > limit ? limit : (m < jt ? m : jt);
        uint64_t p = walk_finished(rb, h, m, check);
        if (m > limit || p < check)
            m = p;
    }
    if (rb->overwrite && m < target) {
        uint64_t e = walk_finished(rb, m, t, target);
        if (e > m) {
            overrun_groups(rb, h, e);
            /* The groups' moves come before our zeroing for every reader (a
             * release store orders only what came before it): a reader that
             * loads a header word, finds it zeroed or new, and then loads
             * its group head finds it moved. On ARM a DMB; on x86 nothing.
             * (The zeroing is plain stores racing the reader's loads: a
             * seqlock's race, outside the C11 model: docs/design.md.) */
            atomic_thread_fence(memory_order_release);
            m = e;
        }
    }
    int moved = got == 2; /* another holder freed space meanwhile: look again */
    if (m > h) {
        release_range(rb, h, m);
        moved = 1;
    }
    rb_reclaim_unlock(rb);
    return moved;
}

int rb_recover_locked(rb_ring *rb, uint64_t h)
{
    /* Relaxed tail: a hint (nothing in flight at h: just empty); the
     * recovery acquires it again. */
    if (atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed) <= h ||
        !rb_rec_stuck(rb, h, rb_now_ns(), &rb->head_stall))
        return 0;
    if (lock_reclaim(rb, 0) <= 0)
        return 0;
    int rc = 0;
    /* Under the lock no writer moves our group head or head (relaxed: the
     * lock's acquire ordered their last moves before us): if h is still
     * both ours and not freed, the record there is not being reclaimed. */
    if (atomic_load_explicit(&rb->grp->head, memory_order_relaxed) == h &&
        atomic_load_explicit(&rb->hdr->head, memory_order_relaxed) <= h)
        rc = rb_recover_head(rb, h, &rb->head_stall);
    rb_reclaim_unlock(rb);
    return rc;
}

/* ---- joining, creating and removing groups ---------------------------------- */

static int valid_name(const char *name)
{
    size_t n = strnlen(name, RB_GROUP_NAME_MAX + 1);
    return n >= 1 && n <= RB_GROUP_NAME_MAX;
}

/* The durable group called name, or NULL; *gen its gen. */
static struct rb_group *find_named(rb_ring *rb, const char *name, uint32_t *gen)
{
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        /* Acquire: pairs with the creator's release of gen (its name). */
        uint32_t v = atomic_load_explicit(&g->gen, memory_order_acquire);
        if (!(v & 1u) || atomic_load_explicit(&g->kind, memory_order_relaxed) != RB_GROUP_KIND_DURABLE)
            continue;
        if (strncmp(g->name, name, RB_GROUP_NAME_MAX + 1) == 0) {
            *gen = v;
            return g;
        }
    }
    return NULL;
}

/* Makes a new group in a free entry (we hold the reclaim lock). */
static int create_locked(rb_ring *rb, const char *name, unsigned flags, struct rb_group **out, uint32_t *gen_out)
{
    struct rb_group *g = NULL;
    uint32_t idx = 0, gen = 0;
    for (int pass = 0; pass < 2 && g == NULL; pass++) {
        if (pass == 1)
            reap_ephemeral(rb); /* full: make room from dead subscribers */
        for (uint32_t i = 0; i < RB_GROUPS_MAX; i++) {
            struct rb_group *c = rb_group_at(rb, i);
            uint32_t v = atomic_load_explicit(&c->gen, memory_order_relaxed);
            /* A free entry whose turn is free: a dead remover's left turn
             * is taken over below. */
            if (v & 1u)
                continue;
            if (!take_group_turn(rb, c, -1, 0))
                continue;
            g = c;
            idx = i;
            gen = v + 1;
            break;
        }
    }
    if (g == NULL)
        return RB_EGROUPS;
    /* Relaxed stores, published by the release of gen below: whoever
     * acquires an odd gen sees the group complete. */
    uint64_t start = (flags & RB_START_EARLIEST) ? atomic_load_explicit(&rb->hdr->head, memory_order_relaxed)
                                                 /* Acquire: every reservation before it is below its
                                                  * start (not ours to read). */
                                                 : atomic_load_explicit(&rb->hdr->tail, memory_order_acquire);
    atomic_store_explicit(&g->head, start, memory_order_relaxed);
    /* Records below a "latest" start may still be being written: until
     * head passes this, a reclaim walks them (rb_reclaim). Relaxed: under
     * the lock, as every reader of it. */
    if (!(flags & RB_START_EARLIEST) && start > atomic_load_explicit(&rb->hdr->join_tail, memory_order_relaxed))
        atomic_store_explicit(&rb->hdr->join_tail, start, memory_order_relaxed);
    atomic_store_explicit(&g->lost, 0, memory_order_relaxed);
    atomic_store_explicit(&g->lost_pending, 0, memory_order_relaxed);
    atomic_store_explicit(&g->kind, name != NULL ? RB_GROUP_KIND_DURABLE : RB_GROUP_KIND_EPHEMERAL,
                          memory_order_relaxed);
    atomic_store_explicit(&g->owner, name != NULL ? 0 : rb->id, memory_order_relaxed);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store_explicit(&g->created_ns, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                          memory_order_relaxed);
    memset(g->name, 0, sizeof g->name);
    if (name != NULL)
        memcpy(g->name, name, strnlen(name, RB_GROUP_NAME_MAX));
    /* Raise the high-water mark before the group exists (relaxed: the
     * release of the reclaim lock publishes it to the next reclaim). */
    uint32_t used = atomic_load_explicit(&rb->hdr->groups_used, memory_order_relaxed);
    while (used < idx + 1 &&
           !atomic_compare_exchange_weak_explicit(&rb->hdr->groups_used, &used, idx + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    /* Release: the fields above are visible to whoever acquires gen. */
    atomic_store_explicit(&g->gen, gen, memory_order_release);
    give_group_turn(rb, g);
    *out = g;
    *gen_out = gen;
    return RB_OK;
}

/* The default group (entry 0, when it holds the default group: a ring
 * made without one may give entry 0 to another group), or NULL; *gen its
 * gen. */
static struct rb_group *find_default(rb_ring *rb, uint32_t *gen)
{
    struct rb_group *g = rb_group_at(rb, 0);
    /* Acquire: pairs with the release of gen by whoever made it (kind is
     * published with it). */
    uint32_t v = atomic_load_explicit(&g->gen, memory_order_acquire);
    if (!(v & 1u) || atomic_load_explicit(&g->kind, memory_order_relaxed) != RB_GROUP_KIND_DEFAULT)
        return NULL;
    *gen = v;
    return g;
}

int rb_group_join(rb_ring *rb, const char *name, unsigned flags)
{
    struct rb_group *g;
    uint32_t gen;
    int rc = RB_OK;
    if (name == NULL && !(flags & RB_GROUP_EPHEMERAL)) {
        g = find_default(rb, &gen);
        if (g == NULL) {
            g = rb_group_at(rb, 0);
            gen = 0; /* no default group: reads return RB_ENOGROUP */
        }
    } else {
        if (lock_reclaim(rb, -1) <= 0)
            return RB_ECLOSED;
        g = name != NULL ? find_named(rb, name, &gen) : NULL;
        if (g == NULL)
            rc = create_locked(rb, name, flags, &g, &gen);
        rb_reclaim_unlock(rb);
        if (rc != RB_OK)
            return rc;
    }
    if (gen != 0) {
        /* A forged group head would make reads wander: the group's head
         * lies in [head, tail], 8-aligned (but for an overrun's tag), and
         * its entry below groups_used (or reclaims would not see it).
         * Read in this order, each bound holds even while others read and
         * write (heads only grow, and a group head is never below head). */
        uint32_t idx = (uint32_t)(((unsigned char *)g - (unsigned char *)rb_group_at(rb, 0)) / RB_GROUP_SIZE);
        uint64_t hh = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
        uint64_t gh = atomic_load_explicit(&g->head, memory_order_acquire) &
                      ~(uint64_t)(rb->overwrite ? RB_HEAD_OVERRUN : 0); /* only overwrite rings tag heads */
        uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
        if ((gh & 7u) != 0 || gh < hh || gh > t || idx >= rb_groups_used(rb))
            return RB_ECORRUPT;
    }
    rb->grp = g;
    rb->grp_gen = gen;
    rb->grp_ephemeral = name == NULL && (flags & RB_GROUP_EPHEMERAL);
    rb_group_mark_slot(rb);
    return RB_OK;
}

void rb_group_mark_slot(rb_ring *rb)
{
    if (rb->grp == NULL)
        return;
    uint32_t idx = (uint32_t)(((unsigned char *)rb->grp - (unsigned char *)rb_group_at(rb, 0)) / RB_GROUP_SIZE);
    /* Relaxed: diagnostics (rb_groups counts members). */
    atomic_store_explicit(&rb->me->group, idx + 1, memory_order_relaxed);
    atomic_store_explicit(&rb->me->group_gen, rb->grp_gen, memory_order_relaxed);
}

/* Removes group g, which had gen when we found it: takes its turn first
 * (waiting for a member's read or peek, up to wait_ns), then the reclaim
 * lock. how: TAKE_CLOSING for the handle's own group at shutdown. */
static int remove_group(rb_ring *rb, struct rb_group *g, uint32_t gen, int64_t wait_ns, unsigned how)
{
    if (!take_group_turn(rb, g, wait_ns, how))
        return !(how & TAKE_CLOSING) && is_closing_relaxed(rb) ? RB_ECLOSED : RB_ETIMEDOUT;
    int rc = RB_OK, got = lock_reclaim_ex(rb, wait_ns, how);
    if (got <= 0)
        rc = got == 0 ? RB_ETIMEDOUT : RB_ECLOSED;
    else {
        if (atomic_load_explicit(&g->gen, memory_order_relaxed) == gen)
            remove_locked(g, gen);
        else
            rc = RB_ENOGROUP;
        rb_reclaim_unlock(rb);
    }
    give_group_turn(rb, g);
    return rc;
}

void rb_group_leave(rb_ring *rb, int64_t wait_ns)
{
    if (!rb->grp_ephemeral || rb->grp == NULL)
        return;
    /* Our own group: nobody else reads it but this handle's threads (or a
     * fork child sharing the handle), whose read in progress is waited for
     * (up to wait_ns). Called by rb_shutdown (which has set closing: the
     * waits go on regardless) and rb_close; if the wait runs out, rb_close
     * tries again, and failing that the group dies with the handle (a dead
     * owner's group is removed by the next look, reap_ephemeral). */
    int rc = remove_group(rb, rb->grp, rb->grp_gen, wait_ns, TAKE_CLOSING);
    if (rc == RB_OK || rc == RB_ENOGROUP)
        rb->grp_ephemeral = 0;
}

RB_API int rb_group_remove(rb_ring *rb, const char *name)
{
    if (rb == NULL || (name != NULL && !valid_name(name)))
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    rb_check_fork(rb);
    struct rb_group *g;
    uint32_t gen = 0;
    if (name == NULL) {
        if ((g = find_default(rb, &gen)) == NULL)
            return RB_ENOGROUP;
    } else if ((g = find_named(rb, name, &gen)) == NULL)
        return RB_ENOGROUP;
    /* Our own read turn on the group (an open peek) would be waited for
     * forever: that is the caller's mistake, refused. */
    if (g == rb->grp && atomic_load_explicit(&g->turn, memory_order_relaxed) == rb->id &&
        atomic_load_explicit(&rb->peeking, memory_order_relaxed))
        return RB_EINVAL;
    return remove_group(rb, g, gen, RB_REMOVE_WAIT_NS, 0);
}

int rb_group_args_ok(const char *name, unsigned flags)
{
    if ((flags & ~(RB_GROUP_EPHEMERAL | RB_START_EARLIEST)) != 0)
        return 0;
    if (name != NULL && ((flags & RB_GROUP_EPHEMERAL) || !valid_name(name)))
        return 0;
    return 1;
}

RB_API int rb_take_lost(rb_ring *rb, uint64_t *count)
{
    if (rb == NULL || count == NULL)
        return RB_EINVAL;
    /* Relaxed: a count; the read that added to it returned RB_ELOST to
     * this handle's caller before. */
    *count = atomic_exchange_explicit(&rb->lost, 0, memory_order_relaxed);
    return RB_OK;
}

RB_API unsigned rb_ring_flags(const rb_ring *rb)
{
    /* Plain: written before the file was published, never after. */
    return rb == NULL ? 0u : rb->hdr->flags & RB_HDR_FLAGS;
}

/* ---- listing ------------------------------------------------------------------ */

/* Counts the committed messages from p (group g's head) to tail, under g's
 * turn (taken without waiting): 1 counted, 0 not. Overwrite rings also
 * need the reclaim lock (writers could zero what we walk). */
static int count_backlog(rb_ring *rb, struct rb_group *g, uint32_t gen, struct rb_group_info *gi)
{
    /* A dead member's turn is left for the group's next reader to take
     * over (after its stall timeout), as rb_info leaves it: listing does
     * not change the ring. */
    if (!take_group_turn(rb, g, -1, TAKE_NO_DEAD))
        return 0;
    int locked = 0;
    if (rb->overwrite && !(locked = lock_reclaim(rb, 20000) > 0)) {
        give_group_turn(rb, g);
        return 0;
    }
    int ok = atomic_load_explicit(&g->gen, memory_order_relaxed) == gen;
    if (ok) {
        /* Relaxed head: our turn's acquire made the last member's store
         * visible (an overwrite ring's writers do not move it while we
         * hold their lock). Acquire tail: as rb_info's walk. A forged head
         * (below head, past tail, unaligned) is not walked. */
        uint64_t h = atomic_load_explicit(&g->head, memory_order_relaxed);
        uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_acquire);
        uint64_t hh = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
        gi->position = h;
        if ((h & 7u) != 0 || h < hh || h > t)
            ok = 0;
        while (ok && h < t) {
            /* Acquire: as a reader's look at a record. */
            uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_acquire);
            uint64_t len = rb_rec_len(w);
            if (w == 0 || !rb_rec_valid(w, rb->max_message) || rb_rec_size(len) > t - h)
                break;
            if (!(rb_rec_flags(w) & (RB_REC_DISCARD | RB_REC_BUSY))) {
                gi->backlog_messages++;
                gi->backlog_bytes += len;
            }
            h += rb_rec_size(len);
        }
    }
    if (locked)
        rb_reclaim_unlock(rb);
    give_group_turn(rb, g);
    return ok;
}

RB_API int rb_groups_sized(rb_ring *rb, struct rb_group_info *out, size_t max, size_t *count, size_t size)
{
    if (rb == NULL || count == NULL || (max > 0 && out == NULL) || size == 0)
        return RB_EINVAL;
    *count = 0;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    rb_check_fork(rb);
    /* Dead subscribers' groups go first, if the lock comes soon (a writer
     * slow in a reclaim keeps it: then they are listed, and go later). */
    if (lock_reclaim(rb, 20000) > 0) {
        reap_ephemeral(rb);
        rb_reclaim_unlock(rb);
    }
    size_t k = 0;
    uint32_t slots = rb_slots_used(rb);
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++) {
        struct rb_group *g = rb_group_at(rb, i);
        /* Acquire: pairs with the creator's release of gen. */
        uint32_t gen = atomic_load_explicit(&g->gen, memory_order_acquire);
        if (!(gen & 1u))
            continue;
        if (k < max) {
            struct rb_group_info gi;
            memset(&gi, 0, sizeof gi);
            /* Relaxed: fixed while the group exists (published with gen). */
            gi.kind = atomic_load_explicit(&g->kind, memory_order_relaxed);
            if (gi.kind == RB_GROUP_KIND_DURABLE)
                memcpy(gi.name, g->name, RB_GROUP_NAME_MAX);
            gi.name[RB_GROUP_NAME_MAX] = '\0';
            uint32_t owner = atomic_load_explicit(&g->owner, memory_order_relaxed);
            if (gi.kind == RB_GROUP_KIND_EPHEMERAL && owner != 0)
                gi.pid = atomic_load_explicit(&rb->slots[rb_id_slot(owner)].pid, memory_order_relaxed);
            gi.position = atomic_load_explicit(&g->head, memory_order_relaxed) &
                          ~(uint64_t)(rb->overwrite ? RB_HEAD_OVERRUN : 0); /* an overrun in progress */
            gi.lost = atomic_load_explicit(&g->lost, memory_order_relaxed);
            for (uint32_t s = 0; s < slots; s++)
                if (atomic_load_explicit(&rb->slots[s].group, memory_order_relaxed) == i + 1 &&
                    atomic_load_explicit(&rb->slots[s].group_gen, memory_order_relaxed) == gen &&
                    rb_slot_alive(rb, s))
                    gi.members++;
            gi.counted = count_backlog(rb, g, gen, &gi);
            size_t c = size < sizeof gi ? size : sizeof gi;
            unsigned char *dst = (unsigned char *)out + k * size;
            memcpy(dst, &gi, c);
            memset(dst + c, 0, size - c);
        }
        k++;
    }
    *count = k;
    return RB_OK;
}

/* ---- durability ------------------------------------------------------------ */

RB_API int rb_sync(rb_ring *rb)
{
    if (rb == NULL)
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    rb_check_fork(rb);
    /* The file is mapped once from offset 0 (header, slots, groups, data)
     * and the data again right after: syncing the first mapping covers
     * every byte of the file. Then fdatasync, for filesystems whose msync
     * leaves metadata behind. On tmpfs both return at once. */
    if (msync(rb->hdr, (size_t)(RB_HEADER_SIZE + rb->capacity), MS_SYNC) != 0)
        return RB_ESYS;
    if (fdatasync(rb->fd) != 0 && errno != EINVAL && errno != EROFS)
        return RB_ESYS;
    return RB_OK;
}
