/*
 * recover.c - crash recovery: what a consumer does when the record at the
 * head, or the read turn, stays stuck longer than the stall timeout. Only
 * a dead owner's work is ever taken over; a slow (or stopped) one is waited
 * for. docs/design.md, "Crash recovery", gives the argument.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <string.h>

RB_API int rb_set_stall_timeout(rb_ring *rb, int64_t timeout_ns)
{
    if (rb == NULL)
        return RB_EINVAL;
    /* Relaxed: a setting; a call already running may use the old value. */
    atomic_store_explicit(&rb->stall_ns, timeout_ns < 0 ? -1 : timeout_ns, memory_order_relaxed);
    return RB_OK;
}

/* Relaxed: a setting, as in rb_set_stall_timeout. */
static int64_t stall_ns(rb_ring *rb) { return atomic_load_explicit(&rb->stall_ns, memory_order_relaxed); }

/* ---- lock words: a group's read turn, the reclaim lock ------------------ */

int rb_lock_stuck(rb_ring *rb, uint32_t id, struct rb_lockstall *st)
{
    int64_t limit = stall_ns(rb);
    if (limit < 0)
        return 0;
    int64_t now = rb_now_ns();
    /* Relaxed: per-handle bookkeeping; racing threads only shift when the
     * next check happens. */
    if (atomic_load_explicit(&st->id, memory_order_relaxed) != id) {
        atomic_store_explicit(&st->id, id, memory_order_relaxed);
        atomic_store_explicit(&st->since, now, memory_order_relaxed);
        return limit == 0;
    }
    return now - atomic_load_explicit(&st->since, memory_order_relaxed) >= limit;
}

int rb_turn_dead(rb_ring *rb, uint32_t id)
{
    if (!rb_lock_stuck(rb, id, &rb->turn_stall))
        return 0;
    /* Dead: leave the stall clock alone, so that the read this answer
     * leads to finds the turn stuck too and takes it over at once. */
    if (!rb_id_alive(rb, id))
        return 1;
    /* Alive: as rb_take_dead_lock, look again only a full timeout from now
     * (relaxed: as in rb_lock_stuck). */
    atomic_store_explicit(&rb->turn_stall.since, rb_now_ns(), memory_order_relaxed);
    return 0;
}

int rb_take_dead_lock(rb_ring *rb, _Atomic uint32_t *word, uint32_t id, struct rb_lockstall *st)
{
    if (!rb_lock_stuck(rb, id, st))
        return 0;
    /* Look again only a full timeout from now, whatever we find (relaxed:
     * as in rb_lock_stuck). */
    atomic_store_explicit(&st->since, rb_now_ns(), memory_order_relaxed);
    if (rb_id_alive(rb, id))
        return 0; /* slow, not dead: keep waiting */
    /* Acq_rel, as in taking the lock. The dead holder released nothing;
     * what it wrote is visible because it is dead: the kernel tore it down
     * before it dropped the lock whose absence we just saw
     * (docs/design.md). */
    uint32_t expected = id;
    if (!atomic_compare_exchange_strong_explicit(word, &expected, rb->id, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return 0; /* someone else took it over, or it was given back */
    RB_KILLPOINT("turn.taken");
    rb_count(rb, RB_C_TURNS_TAKEN, 1);
    atomic_store_explicit(&st->id, 0, memory_order_relaxed); /* relaxed: as in rb_lock_stuck */
    return 1;
}

/* ---- the record at the head --------------------------------------------- */

/* Whether the record at h has been stuck for the stall timeout (we hold the
 * lock st belongs to: it is ours). */
int rb_rec_stuck(rb_ring *rb, uint64_t h, int64_t now, struct rb_recstall *st)
{
    int64_t limit = stall_ns(rb);
    if (limit < 0)
        return 0;
    if (h != st->pos || st->since == 0) {
        st->pos = h;
        st->since = now;
        return limit == 0;
    }
    return now - st->since >= limit;
}

/* A BUSY record whose writer is dead: discard it. */
static int recover_busy(rb_ring *rb, uint64_t h, uint64_t w, uint64_t t)
{
    uint64_t len = rb_rec_len(w);
    if (len == 0 || len > rb->max_message || rb_rec_size(len) > t - h)
        return RB_ECORRUPT;
    if (rb_id_alive(rb, rb_rec_writer(w)))
        return 0;
    /* Relaxed: we hold the turn and read the word back ourselves; the CAS
     * (not a store) leaves alone a word that changed after all. */
    if (atomic_compare_exchange_strong_explicit(rb_rec_word(rb, h), &w,
                                                rb_rec_make(len, RB_REC_DISCARD, rb_rec_writer(w)),
                                                memory_order_relaxed, memory_order_relaxed))
        rb_count(rb, RB_C_RECOVERED, 1);
    return 1;
}

/* A zero header word in [head, tail): a writer took the space and has not
 * written the header yet. It announced the range in an intent entry of its
 * slot before taking it, and clears the entry only after its headers are
 * written. Entries of other writers may also cover h (one that lost the
 * race for tail and died before updating its entry): all of them ending
 * past h are candidates, the real one among them. If any candidate is
 * alive, wait. If all are dead, discard up to the nearest end among them:
 * never past the real writer's end, so nothing of anyone else is touched
 * (a nearer end only splits the dead gap in two). */
static int recover_gap(rb_ring *rb, uint64_t h, uint64_t t)
{
    uint64_t end = 0;
    for (uint32_t slot = 0, n = rb_slots_used(rb); slot < n; slot++) {
        for (unsigned i = 0; i < RB_SLOT_INTENTS; i++) {
            struct rb_intent *in = &rb->slots[slot].intent[i];
            /* Acquire end: pairs with drop_intent's release. Acquire
             * start: pairs with the release of a new start, so that if the
             * entry was dropped and reused meanwhile, the re-read of the
             * word below sees the header written before the drop. */
            uint64_t e = atomic_load_explicit(&in->end, memory_order_acquire);
            uint64_t s = atomic_load_explicit(&in->start, memory_order_acquire);
            if (e == 0 || s > h || e <= h)
                continue;
            if (rb_slot_alive(rb, slot))
                return 0; /* possibly the writer, still at work: wait */
            if (end == 0 || e < end)
                end = e;
        }
    }
    /* The writer may have written its header meanwhile (then its entry may
     * be gone): its release of the entry made the word visible to us. */
    uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_acquire);
    if (w != 0)
        return 1;
    /* No entry covers the gap, or a forged one points nowhere sensible. */
    if (end == 0 || end > t || end - h > rb->capacity || (end & 7u) != 0)
        return RB_ECORRUPT;
    /* Fill [h, end) with DISCARD records, each at most max_message + 8
     * bytes (length 0: an 8-byte gap). Relaxed: we hold the turn and are
     * the only reader; the writer is dead. */
    for (uint64_t p = h; p < end;) {
        uint64_t size = end - p < rb->max_message + RB_REC_HDR ? end - p : rb->max_message + RB_REC_HDR;
        uint64_t discard = rb_rec_make(size - RB_REC_HDR, RB_REC_DISCARD, 0);
        atomic_store_explicit(rb_rec_word(rb, p), discard, memory_order_relaxed);
        p += size;
    }
    rb_count(rb, RB_C_RECOVERED, 1); /* one gap, in one or more DISCARD pieces */
    return 1;
}

int rb_recover_head(rb_ring *rb, uint64_t h, struct rb_recstall *st)
{
    /* Acquire: pairs with the producers' release CAS on tail, so that the
     * intent entry of whoever moved tail past h is visible to recover_gap. */
    uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_acquire);
    if (t <= h)
        return 0; /* nothing in flight: the ring is just empty */
    if ((h & 7u) != 0)
        return RB_ECORRUPT; /* head was forged after we opened */
    int64_t now = rb_now_ns();
    if (!rb_rec_stuck(rb, h, now, st))
        return 0;
    /* Relaxed: recover_busy's CAS and recover_gap's acquire re-read it. */
    uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_relaxed);
    int rc;
    if (w == 0)
        rc = recover_gap(rb, h, t);
    else if (rb_rec_flags(w) == RB_REC_BUSY)
        rc = recover_busy(rb, h, w, t);
    else
        rc = 1; /* committed or discarded meanwhile, or corrupt: the read decides */
    /* "Alive, keep waiting": look again only a full timeout from now. A
     * corrupt state stays reported at every call. */
    if (rc == 0)
        st->since = now;
    return rc;
}
