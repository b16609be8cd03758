/*
 * ring.c - the concurrent algorithm: reserving, writing and committing
 * records (producers), reading and releasing them (consumers), and the
 * blocking and zero-copy forms of both.
 * docs/design.md explains the protocol and why each memory order suffices.
 *
 * Invariants (positions are byte counts that only grow, index = pos & mask):
 *   head <= group head <= tail <= head + capacity, for every group
 *   every byte in [tail, head + capacity) is zero (rb_reclaim zeroes what it
 *   frees), so a zero header word means "not written yet".
 *   a record in [head, tail) whose header word is still zero is covered by
 *   an intent entry of its writer's slot (crash recovery, recover.c).
 * Readers of a group read from the group's head and move it; writers free
 * what every group has read (rb_reclaim, groups.c) when they find the ring
 * full.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* How long a non-blocking call waits for another consumer's turn to end
 * before it reports RB_EEMPTY. */
#define RB_TURN_SPIN_NS 20000
/* A writer that finds the ring full spins first until this part of it is
 * free (reserve_wait; why a quarter: docs/design.md, "Measured and tried"). */
#define RB_REFILL_DIV 4



/* ---- readiness tests for rb_wait (hints: the operation re-checks) ------- */

static void give_turn(rb_ring *rb, int released);

/* Whether a read can make progress: 1 for a committed or discarded record
 * at the head, or a stuck one whose writer died (now discarded), or a word
 * the read will report as corrupt; 0 for an empty ring; -1 when another
 * consumer holds the read turn (*holder: its id; the reader then waits for
 * the turn on the turn queue). The word at head is read only while holding
 * the turn: without it, head may be stale and the word there already a new
 * record's payload, being written with plain stores. */
static int probe_data(rb_ring *rb, uint32_t *holder)
{
    struct rb_group *g = rb->grp;
    if (rb->grp_gen == 0)
        return 1; /* no group: the read reports RB_ENOGROUP */
    uint32_t expected = 0;
    /* Relaxed load first, to avoid writing the line while another reads.
     * Acq_rel CAS as in take_turn(). */
    uint32_t seen = atomic_load_explicit(&g->turn, memory_order_relaxed);
    if (seen != 0) {
        *holder = seen;
        return -1;
    }
    if (!atomic_compare_exchange_strong_explicit(&g->turn, &expected, rb->id, memory_order_acq_rel,
                                                 memory_order_relaxed)) {
        *holder = expected;
        return -1;
    }
    /* Relaxed gen: as in take_turn. Relaxed head: as in read_records();
     * acquire word: as in peek_record(). */
    if (atomic_load_explicit(&g->gen, memory_order_relaxed) != rb->grp_gen) {
        give_turn(rb, 0);
        return 1; /* removed: the read reports RB_ENOGROUP */
    }
    /* Acquire in an overwrite ring: a writer may have moved it (as in
     * read_records_ow). */
    uint64_t h = atomic_load_explicit(&g->head, rb->overwrite ? memory_order_acquire : memory_order_relaxed);
    if (h & RB_HEAD_OVERRUN) {
        /* A writer is overrunning us: its commit wakes us; if it has held
         * its lock for the stall timeout, the read looks (rb_group_head
         * takes a dead one's lock over). Relaxed: hints. */
        uint32_t holder = atomic_load_explicit(&rb->hdr->reclaim_turn, memory_order_relaxed);
        give_turn(rb, 0);
        return holder == 0 || rb_lock_stuck(rb, holder, &rb->reclaim_stall);
    }
    if (h >= rb_read_limit(rb)) {
        give_turn(rb, 0);
        return 0; /* everything read, the ring full of it: nothing new */
    }
    uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_acquire);
    /* Anything but a zero or BUSY word lets the read decide (a corrupt
     * word is reported by the read). */
    int ready = w != 0 && rb_rec_flags(w) != RB_REC_BUSY;
    if (!ready && rb->overwrite)
        /* A writer overran us (the word may be a reclaimed record's: the
         * read reports the loss), or a stuck record to recover (under the
         * reclaim lock, as read_records_ow). Relaxed lost_pending: a hint
         * the read acts on; acquire head: as above. */
        ready = atomic_load_explicit(&g->lost_pending, memory_order_relaxed) != 0 ||
                atomic_load_explicit(&g->head, memory_order_acquire) != h || rb_recover_locked(rb, h) != 0;
    else if (!ready)
        ready = rb_recover_head(rb, h, &rb->head_stall) != 0; /* 1: recovered; RB_ECORRUPT: the read reports it */
    give_turn(rb, 0);
    return ready;
}

int rb_probe_data(rb_ring *rb, uint32_t *holder) { return probe_data(rb, holder); }

/* rb_wait's readiness test for reads: data, or the turn taken by another. */
static int data_ready(rb_ring *rb, uint64_t unused)
{
    (void)unused;
    uint32_t holder;
    return probe_data(rb, &holder) != 0;
}

/* Waits until a read may make progress (RB_OK), or the deadline passes. */
static int await_data(rb_ring *rb, int64_t deadline)
{
    struct rb_waitq q = rb_data_q(rb);
    return rb_wait(rb, &q, data_ready, 0, deadline);
}

int rb_await_data(rb_ring *rb, int64_t deadline) { return await_data(rb, deadline); }

static int space_ready(rb_ring *rb, uint64_t need)
{
    /* Acquire on head first, so the tail read after it is not older;
     * relaxed tail: a hint, reserve()'s CAS decides. */
    uint64_t h = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
    if (t - h <= rb->capacity - need)
        return 1;
    /* Not free yet; ready if a reclaim would free it (reserve() then
     * reclaims), unless another writer is reclaiming (it wakes us when it
     * lets go; a holder stuck for the stall timeout is checked by the
     * reclaim). Relaxed: hints. */
    uint32_t holder = atomic_load_explicit(&rb->hdr->reclaim_turn, memory_order_relaxed);
    if (holder != 0)
        return rb_lock_stuck(rb, holder, &rb->reclaim_stall); /* stuck: the reclaim takes a dead one over */
    int any;
    uint64_t m = rb_reclaimable(rb, &any);
    /* Relaxed: a hint (written under the reclaim lock). */
    int walk = rb->overwrite || !any || h < atomic_load_explicit(&rb->hdr->join_tail, memory_order_relaxed);
    if (any && !walk && t - m <= rb->capacity - need)
        return 1; /* a reclaim frees what every group has read */
    if (walk) {
        /* A writer frees the oldest records (overwrite, or nobody owed
         * them), or walks them (below join_tail, where a group made at
         * "latest" passed records still in flight): not past one still
         * being written (a hint: the word may be stale; its commit wakes
         * us, notify_data). */
        uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_relaxed);
        return w != 0 && rb_rec_flags(w) != RB_REC_BUSY;
    }
    /* A dead subscriber's ephemeral group may be what holds us back: the
     * reclaim looks for those once per stall timeout. (A writable event
     * descriptor's notifier, which never reclaims, then says "writable"
     * once per stall timeout while a live subscriber holds writers back.) */
    int64_t limit = atomic_load_explicit(&rb->stall_ns, memory_order_relaxed);
    return limit >= 0 && rb_now_ns() - atomic_load_explicit(&rb->eph_check_since, memory_order_relaxed) >= limit &&
           rb_has_ephemeral(rb);
}

int rb_space_ready(rb_ring *rb, uint64_t need) { return space_ready(rb, need); }

/* The turn is free, or its holder has kept it for the stall timeout (then
 * take_turn checks whether the holder is alive). */
static int turn_ready(rb_ring *rb, uint64_t unused)
{
    (void)unused;
    /* Relaxed: a hint; take_turn's CAS decides. */
    if (rb->grp_gen == 0)
        return 1;
    uint32_t id = atomic_load_explicit(&rb->grp->turn, memory_order_relaxed);
    return id == 0 || rb_lock_stuck(rb, id, &rb->turn_stall);
}

int rb_await_turn(rb_ring *rb, int64_t deadline)
{
    struct rb_waitq q = rb_turn_q(rb);
    return rb_wait(rb, &q, turn_ready, 0, deadline);
}

/* ---- producers --------------------------------------------------------- */

/* Claims a free intent entry of our slot for [start, end). Several threads
 * may use one handle: each reservation in flight has its own entry. */
static struct rb_intent *claim_intent(rb_ring *rb, uint64_t start, uint64_t end)
{
    /* Entry 0 belongs to one thread, the first that writes through this
     * handle, and takes no locked instruction, which would first wait for
     * our last record's stores to drain (docs/design.md, "Measured and
     * tried"). Only its owner
     * writes it, so it is free when its end is 0, and no other thread can
     * take it between our check and our stores. A signal handler that
     * writes while the owner holds the entry sees end != 0 and takes
     * another; one that runs between the check and the stores is done with
     * the entry before we go on. rb_self is unique among live
     * threads; a reused one belongs to a thread that started after the old
     * owner ended. UINTPTR_MAX: a fork child sharing its parent's slot
     * (slots.c), whose entry 0 is the parent's. Relaxed loads and CAS: only
     * this process's threads read the owner, and the entry's own stores
     * carry the ordering consumers need. */
    uintptr_t self = rb_self();
    uintptr_t owner = atomic_load_explicit(&rb->intent_owner, memory_order_relaxed);
    struct rb_intent *in0 = &rb->me->intent[0];
    if ((owner == self || (owner == 0 && atomic_compare_exchange_strong_explicit(&rb->intent_owner, &owner, self,
                                                                                  memory_order_relaxed,
                                                                                  memory_order_relaxed))) &&
        atomic_load_explicit(&in0->end, memory_order_relaxed) == 0) {
        struct rb_intent *in = in0;
        /* Relaxed end, release start: as in the re-claim in reserve(). */
        atomic_store_explicit(&in->end, end, memory_order_relaxed);
        atomic_store_explicit(&in->start, start, memory_order_release);
        return in;
    }
    for (;;) {
        for (unsigned i = 1; i < RB_SLOT_INTENTS; i++) {
            struct rb_intent *in = &rb->me->intent[i];
            uint64_t free_end = 0;
            /* Relaxed: the CAS only settles which of our threads owns the
             * entry; what it says reaches consumers through the release
             * CAS on tail in reserve(). */
            if (atomic_load_explicit(&in->end, memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong_explicit(&in->end, &free_end, end, memory_order_relaxed,
                                                        memory_order_relaxed)) {
                /* Release: a consumer that acquires this start (recover_gap)
                 * also sees the header words of our previous reservation in
                 * this entry, whose drop came before. */
                atomic_store_explicit(&in->start, start, memory_order_release);
                return in;
            }
        }
        sched_yield(); /* more threads of this handle reserve at once than there are entries */
    }
}

/* Our reservation's header words are all written: the entry is free. */
static void drop_intent(struct rb_intent *in)
{
    /* Release: a consumer that acquires end == 0 also sees the header words
     * written before (recover.c re-reads the word after its scan). */
    atomic_store_explicit(&in->end, 0, memory_order_release);
}

/* Reserves the longest prefix of count records (sizes from lens) that fits,
 * with one CAS on tail. *n receives how many; *pos where they start; *in
 * the intent entry that announces them until their headers are written. */
static int reserve(rb_ring *rb, const size_t *lens, size_t count, uint64_t *pos, size_t *n,
                   struct rb_intent **intent)
{
    struct rb_intent *in = NULL;
    /* Acquire pairs with the release below (another thread of this handle
     * refreshed the cache): what that thread saw of the consumers' zeroing
     * is then visible to us too. */
    uint64_t h = atomic_load_explicit(&rb->head_cache, memory_order_acquire);
    for (;;) {
        /* Relaxed: the CAS below validates t; t >= h holds because h was
         * read (with acquire, via head's release chain) before this load. */
        uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
        uint64_t used = t - h, need = 0;
        uint64_t free_bytes = used < rb->capacity ? rb->capacity - used : 0;
        size_t k = 0;
        while (k < count && need + rb_rec_size(lens[k]) <= free_bytes)
            need += rb_rec_size(lens[k++]);
        if (k < count) {
            /* Acquire pairs with the reclaimer's release of head: its
             * zeroing of the freed bytes happens-before our writes there. */
            uint64_t fresh = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
            if (fresh == h && rb_reclaim(rb, rb_rec_size(lens[k])))
                fresh = atomic_load_explicit(&rb->hdr->head, memory_order_acquire); /* as above */
            if (fresh != h) {
                /* Release: publishes the refreshed bound to sibling threads
                 * together with the happens-before it carries. */
                atomic_store_explicit(&rb->head_cache, fresh, memory_order_release);
                h = fresh;
                continue;
            }
            if (k == 0) {
                if (in != NULL)
                    drop_intent(in);
                return RB_EFULL; /* head has not moved: really full */
            }
        }
        /* Announce [t, t+need) before taking it: if we die after the CAS
         * and before our header words are written, a consumer finds out
         * from this entry whose gap it is, and how long (recover.c). */
        if (in == NULL)
            in = claim_intent(rb, t, t + need);
        else {
            /* Relaxed end: published by the CAS below, as the claim;
             * release start: as in claim_intent. */
            atomic_store_explicit(&in->end, t + need, memory_order_relaxed);
            atomic_store_explicit(&in->start, t, memory_order_release);
        }
        RB_KILLPOINT("reserve.intent");
        /* Release on success: the intent entry is visible to a consumer
         * that acquires a tail past t (recover.c). Otherwise the CAS only
         * has to make [t, t+need) ours alone; publication to consumers goes
         * through each record's header (release), not through tail. */
        if (atomic_compare_exchange_weak_explicit(&rb->hdr->tail, &t, t + need, memory_order_release,
                                                  memory_order_relaxed)) {
            *pos = t;
            *n = k;
            *intent = in;
            return RB_OK;
        }
        RB_KILLPOINT("reserve.lost");
    }
}

/* reserve(), waiting for space until the deadline (0: do not wait). */
static int reserve_wait(rb_ring *rb, const size_t *lens, size_t count, uint64_t *pos, size_t *n,
                        struct rb_intent **in, int64_t deadline)
{
    uint64_t need = rb_rec_size(lens[0]), refill = rb->capacity / RB_REFILL_DIV;
    for (int tries = 0;; tries++) {
        int rc = reserve(rb, lens, count, pos, n, in);
        if (rc != RB_EFULL)
            return rc;
        if (deadline == 0) {
            rb_event_rearm(rb, RB_EV_WRITABLE, need); /* found full: the writable fd stops polling ready */
            return rc;
        }
        /* The readiness tests are hints: one that keeps saying "ready"
         * while reserve keeps failing must not outlive the deadline. */
        if (tries > 0 && deadline != RB_FOREVER && rb_now_ns() >= deadline)
            return RB_ETIMEDOUT;
        /* Full: first spin until a share of the ring is free, not just
         * what we need. A producer faster than its consumers would
         * otherwise take the few bytes each read frees, one message at a
         * time: re-reading head (the consumers' line) for every message,
         * and taking that line from them for every message too
         * (docs/design.md, "Refill"). Only a spin, which no waker has to
         * know about: when that share does not come soon, we wait for just
         * what we need. */
        if (refill > need) {
            rc = rb_spin(rb, space_ready, refill, deadline);
            if (rc == RB_OK)
                continue;
            if (rc == RB_ECLOSED)
                return rc;
        }
        struct rb_waitq q = rb_space_q(rb);
        rc = rb_wait(rb, &q, space_ready, need, deadline);
        if (rc != RB_OK)
            return rc;
    }
}

static void mark_busy(rb_ring *rb, uint64_t pos, uint64_t len)
{
    /* Relaxed: BUSY only tells a consumer to wait; it reads nothing else. */
    atomic_store_explicit(rb_rec_word(rb, pos), rb_rec_make(len, RB_REC_BUSY, rb->id), memory_order_relaxed);
}

static void publish(rb_ring *rb, uint64_t pos, uint64_t len, uint32_t flags)
{
    /* Release: the payload is visible to whoever acquires this word and
     * sees the record committed (or discarded). */
    atomic_store_explicit(rb_rec_word(rb, pos), rb_rec_make(len, flags, rb->id), memory_order_release);
}

/* After publishing the records from pos on: wake consumers parked for
 * data, if any, and writers parked for space if the first is the oldest
 * record (a writer that needs the oldest record finished waits for it: an
 * overwrite ring, a ring with no group, records below join_tail). */
static void notify_data(rb_ring *rb, uint64_t pos)
{
    /* Fence between our commit and rb_wake's load of the waiter counts;
     * pairs with the fence in rb_wait (see docs/design.md, "Waiting"). */
    rb_waker_fence(rb);
    struct rb_waitq q = rb_data_q(rb);
    rb_wake(rb, &q);
    /* Relaxed head: a hint (a writer waiting for our record parks with
     * head at it; a later head only means it no longer needs us). */
    if (((pos ^ atomic_load_explicit(&rb->hdr->head, memory_order_relaxed)) & rb->mask) == 0) {
        q = rb_space_q(rb);
        rb_wake(rb, &q);
    }
}

/* Where a write's payload bytes come from, consumed in order by the
 * records: packed data (rb_write, rb_write_many: one buffer, the messages
 * back to back), or the caller's vectors (rb_writev). */
struct src {
    const unsigned char *p;  /* packed: the next byte; NULL for vectors */
    const struct iovec *iov; /* vectors: the one being copied from */
    const struct iovec *end; /* vectors: past the last one */
    size_t off;              /* vectors: bytes of it already copied */
};

/* Copies len bytes from the vectors, skipping empty ones. The records'
 * lengths add up to the vectors' total, so the cursor never passes the
 * last vector, unless the caller changed the vectors during the call
 * (which rb_writev forbids): then the copy still stays inside them, and
 * what is left of the record is zeros. */
static void gather(unsigned char *dst, struct src *s, size_t len)
{
    const struct iovec *v = s->iov;
    size_t off = s->off;
    while (len > 0) {
        if (v == s->end) {
            memset(dst, 0, len);
            break;
        }
        size_t k = v->iov_len > off ? v->iov_len - off : 0;
        if (k == 0) {
            v++;
            off = 0;
            continue;
        }
        if (k > len)
            k = len;
        memcpy(dst, (const unsigned char *)v->iov_base + off, k);
        dst += k;
        off += k;
        len -= k;
    }
    s->iov = v;
    s->off = off;
}

/* Copies the source's next len bytes to dst. Packed data keeps its own
 * memcpy rather than being gathered as one long vector, which slowed
 * rb_write_many of 64-byte messages (docs/design.md, "Measured and tried"). */
static inline void copy_in(unsigned char *dst, struct src *s, size_t len)
{
    if (s->p != NULL) {
        memcpy(dst, s->p, len);
        s->p += len;
    } else
        gather(dst, s, len);
}

/* Writes records for a reserved prefix: every header word first (BUSY,
 * with our id), so that from then on each record names its writer and the
 * intent entry can go; then each payload, committing as it goes. */
static uint64_t fill(rb_ring *rb, uint64_t pos, struct src src, const size_t *lens, size_t n,
                     struct rb_intent *in)
{
    uint64_t bytes = 0, first = pos; /* bytes: returned, for the counters */
    RB_KILLPOINT("write.reserved");
    uint64_t q = pos;
    for (size_t i = 0; i < n; i++) {
        mark_busy(rb, q, lens[i]);
        RB_KILLPOINT("write.marking");
        q += rb_rec_size(lens[i]);
    }
    drop_intent(in);
    for (size_t i = 0; i < n; i++) {
        /* The data is mapped twice back to back: the copy never wraps. */
        unsigned char *dst = rb_rec_payload(rb, pos);
#ifdef RB_KILLPOINTS
        /* Tests die half-way through a payload (for rb_writev, wherever
         * that falls among the vectors). */
        size_t half = lens[i] / 2;
        copy_in(dst, &src, half);
        RB_KILLPOINT("write.copying");
        copy_in(dst + half, &src, lens[i] - half);
#else
        copy_in(dst, &src, lens[i]);
#endif
        publish(rb, pos, lens[i], 0);
        RB_KILLPOINT("write.committed");
        pos += rb_rec_size(lens[i]);
        bytes += lens[i];
    }
    notify_data(rb, first);
    return bytes;
}

static int check_lens(const rb_ring *rb, const size_t *lens, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (lens[i] == 0 || lens[i] > rb->max_message)
            return RB_ESIZE;
    return RB_OK;
}

/* The protocol of every copying write, once the caller has checked its
 * arguments: reserves the longest prefix of the records that fits (waiting
 * until the deadline) and fills it from src. */
static int write_records(rb_ring *rb, struct src *src, const size_t *lens, size_t count, size_t *written,
                         int64_t deadline)
{
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    if (count == 0)
        return RB_OK;
    int rc = check_lens(rb, lens, count);
    if (rc != RB_OK)
        return rc;
    rb_check_fork(rb);
    uint64_t pos;
    size_t n;
    struct rb_intent *in;
    rc = reserve_wait(rb, lens, count, &pos, &n, &in, deadline);
    if (rc != RB_OK) {
        if (rc == RB_EFULL) /* found no room, not waiting (a wait is counted in parks) */
            rb_count(rb, RB_C_FULL, 1);
        return rc;
    }
    /* Counted as written by the owner of intent entry 0 (its words of
     * count_own are its alone: rb_count2_own) or atomically. */
    int own = in == &rb->me->intent[0];
    uint64_t bytes = fill(rb, pos, *src, lens, n, in);
    if (own)
        rb_count2_own(rb, RB_C_WRITTEN, n, bytes);
    else
        rb_count2_shared(rb, RB_C_WRITTEN, n, bytes);
    *written = n;
    return RB_OK;
}

static int write_many(rb_ring *rb, const void *data, const size_t *lens, size_t count, size_t *written,
                      int64_t deadline)
{
    if (written != NULL)
        *written = 0;
    if (rb == NULL || written == NULL || (count > 0 && (data == NULL || lens == NULL)))
        return RB_EINVAL;
    struct src src = {.p = data};
    return write_records(rb, &src, lens, count, written, deadline);
}

static int write_one(rb_ring *rb, const void *msg, size_t len, int64_t deadline)
{
    if (rb == NULL || msg == NULL)
        return RB_EINVAL;
    size_t written;
    return write_many(rb, msg, &len, 1, &written, deadline);
}

/* One message gathered from iovcnt vectors: its length is their sum, which
 * saturates at SIZE_MAX (too large for any ring: RB_ESIZE, as an empty
 * sum is). Every vector is checked before anything else is. */
static int writev_one(rb_ring *rb, const struct iovec *iov, int iovcnt, int64_t deadline)
{
    if (rb == NULL || iovcnt < 0 || (iovcnt > 0 && iov == NULL))
        return RB_EINVAL;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_base == NULL && iov[i].iov_len > 0)
            return RB_EINVAL;
        len = iov[i].iov_len > SIZE_MAX - len ? SIZE_MAX : len + iov[i].iov_len;
    }
    struct src src = {.iov = iov, .end = iovcnt > 0 ? iov + iovcnt : iov}; /* NULL + 0 is undefined */
    size_t written;
    return write_records(rb, &src, &len, 1, &written, deadline);
}

RB_API int rb_write(rb_ring *rb, const void *msg, size_t len) { return write_one(rb, msg, len, 0); }

RB_API int rb_write_wait(rb_ring *rb, const void *msg, size_t len, int64_t timeout_ns)
{
    int rc = write_one(rb, msg, len, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EFULL ? RB_ETIMEDOUT : rc;
}

RB_API int rb_write_many(rb_ring *rb, const void *data, const size_t *lens, size_t count, size_t *written)
{
    return write_many(rb, data, lens, count, written, 0);
}

RB_API int rb_write_many_wait(rb_ring *rb, const void *data, const size_t *lens, size_t count, size_t *written,
                              int64_t timeout_ns)
{
    int rc = write_many(rb, data, lens, count, written, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EFULL ? RB_ETIMEDOUT : rc;
}

RB_API int rb_writev(rb_ring *rb, const struct iovec *iov, int iovcnt) { return writev_one(rb, iov, iovcnt, 0); }

RB_API int rb_writev_wait(rb_ring *rb, const struct iovec *iov, int iovcnt, int64_t timeout_ns)
{
    int rc = writev_one(rb, iov, iovcnt, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EFULL ? RB_ETIMEDOUT : rc;
}

/* ---- zero-copy writes --------------------------------------------------- */

static int reserve_one(rb_ring *rb, size_t len, void **ptr, int64_t deadline)
{
    if (rb == NULL || ptr == NULL)
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    if (len == 0 || len > rb->max_message)
        return RB_ESIZE;
    rb_check_fork(rb);
    uint64_t pos;
    size_t n;
    struct rb_intent *in;
    int rc = reserve_wait(rb, &len, 1, &pos, &n, &in, deadline);
    if (rc != RB_OK) {
        if (rc == RB_EFULL) /* found no room, not waiting (a wait is counted in parks) */
            rb_count(rb, RB_C_FULL, 1);
        return rc;
    }
    mark_busy(rb, pos, len);
    drop_intent(in);
    *ptr = rb_rec_payload(rb, pos);
    return RB_OK;
}

RB_API int rb_reserve(rb_ring *rb, size_t len, void **ptr) { return reserve_one(rb, len, ptr, 0); }

RB_API int rb_reserve_wait(rb_ring *rb, size_t len, void **ptr, int64_t timeout_ns)
{
    int rc = reserve_one(rb, len, ptr, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EFULL ? RB_ETIMEDOUT : rc;
}

/* Finds the BUSY record whose payload starts at ptr; returns its position's
 * index (pos & mask) through *idx and its header word through *word. */
static int reserved_record(const rb_ring *rb, const void *ptr, uint64_t *idx, uint64_t *word)
{
    if (rb == NULL || ptr == NULL)
        return RB_EINVAL;
    uintptr_t p = (uintptr_t)ptr, d = (uintptr_t)rb->data;
    if (p < d + RB_REC_HDR || p - d > rb->capacity || (p - d) % 8 != 0)
        return RB_EINVAL;
    uint64_t i = (uint64_t)(p - d) - RB_REC_HDR;
    /* Relaxed: only the reserving producer writes a BUSY word. */
    uint64_t w = atomic_load_explicit(rb_rec_word(rb, i), memory_order_relaxed);
    /* Not reserved, already committed/aborted, or by another process. (A
     * pointer into a payload whose bytes happen to look like one of our
     * BUSY words cannot be told apart: pass only rb_reserve's pointers.) */
    if (rb_rec_flags(w) != RB_REC_BUSY || rb_rec_writer(w) != rb_id_writer(rb->id) ||
        rb_rec_len(w) == 0 || rb_rec_len(w) > rb->max_message)
        return RB_EINVAL;
    *idx = i;
    *word = w;
    return RB_OK;
}

static int finish_reserved(rb_ring *rb, void *ptr, uint32_t flags)
{
    uint64_t i, w;
    int rc = reserved_record(rb, ptr, &i, &w);
    if (rc != RB_OK)
        return rc;
    /* CAS from the BUSY word we saw, so that of two racing commit/abort
     * calls on one pointer only one acts. Release on success: as in
     * publish(); relaxed on failure: we give up and read nothing. */
    if (!atomic_compare_exchange_strong_explicit(rb_rec_word(rb, i), &w, rb_rec_make(rb_rec_len(w), flags, rb->id),
                                                 memory_order_release, memory_order_relaxed))
        return RB_EINVAL;
    notify_data(rb, i); /* i: the record's index, pos & mask */
    if (flags == 0) {
        /* As write_records: the owner of intent entry 0 counts in
         * count_own, any other thread atomically. Relaxed: only this
         * process's threads read the owner (claim_intent). */
        if (atomic_load_explicit(&rb->intent_owner, memory_order_relaxed) == rb_self())
            rb_count2_own(rb, RB_C_WRITTEN, 1, rb_rec_len(w));
        else
            rb_count2_shared(rb, RB_C_WRITTEN, 1, rb_rec_len(w));
    } else
        rb_count(rb, RB_C_ABORTED, 1);
    return RB_OK;
}

/* In a fork child, a handle's id changes at its first call (rb_check_fork),
 * so a reservation or a peek inherited from the parent is refused: it is
 * the parent's to finish. */
RB_API int rb_commit(rb_ring *rb, void *ptr)
{
    if (rb == NULL)
        return RB_EINVAL;
    rb_check_fork(rb);
    return finish_reserved(rb, ptr, 0);
}

RB_API int rb_abort(rb_ring *rb, void *ptr)
{
    if (rb == NULL)
        return RB_EINVAL;
    rb_check_fork(rb);
    return finish_reserved(rb, ptr, RB_REC_DISCARD);
}

/* ---- consumers --------------------------------------------------------- */

/* check_group found the group removed: gives the turn back. Out of line:
 * the read paths never come here. */
__attribute__((noinline, cold)) static int group_gone(rb_ring *rb)
{
    give_turn(rb, 0);
    return RB_ENOGROUP;
}

/* We just took our group's turn: RB_OK if the group is still the one we
 * joined, else gives the turn back and returns RB_ENOGROUP. */
static inline int check_group(rb_ring *rb)
{
    /* Relaxed: whoever removed the group changed gen while holding the
     * turn, and our turn's acquire pairs with its release. */
    if (__builtin_expect(atomic_load_explicit(&rb->grp->gen, memory_order_relaxed) == rb->grp_gen, 1))
        return RB_OK;
    return group_gone(rb);
}

static int take_turn_slow(rb_ring *rb, int64_t deadline);

/* Takes our group's read turn (one CAS on a word only the group's readers
 * touch), waiting at most until the deadline; 0 means "only a short spin"
 * (-> RB_EEMPTY). RB_ENOGROUP: the group does not exist (any more). The
 * uncontended case inline, the rest in take_turn_slow. */
static inline __attribute__((always_inline)) int take_turn(rb_ring *rb, int64_t deadline)
{
    uint32_t expected = 0;
    /* Acq_rel: as in take_turn_slow. */
    if (__builtin_expect(rb->grp_gen != 0, 1) &&
        atomic_compare_exchange_strong_explicit(&rb->grp->turn, &expected, rb->id, memory_order_acq_rel,
                                                memory_order_relaxed)) {
        RB_KILLPOINT("read.turn");
        return check_group(rb);
    }
    return take_turn_slow(rb, deadline);
}

__attribute__((noinline)) static int take_turn_slow(rb_ring *rb, int64_t deadline)
{
    int64_t spin_end = 0;
    if (rb->grp_gen == 0)
        return RB_ENOGROUP; /* the ring has no default group */
    _Atomic uint32_t *turn = &rb->grp->turn;
    for (unsigned spins = 0;; spins++) {
        uint32_t expected = 0;
        /* Acquire pairs with the previous holder's release in give_turn():
         * its group head store is visible to us. Release: a reader that
         * finds our id here and checks whether we are alive sees our
         * slot's generation (rb_id_alive). Relaxed on failure: the holder's
         * id is only a hint for rb_take_dead_lock; what makes acting on it
         * safe is rb_id_alive's acquire fence, which pairs with the
         * holder's release here (its generation, not a stale one, is seen). */
        if (atomic_compare_exchange_weak_explicit(turn, &expected, rb->id, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            RB_KILLPOINT("read.turn");
            return check_group(rb);
        }
        /* A holder that keeps the turn past the stall timeout may be dead
         * (checked once per timeout: a syscall). While spinning, look only
         * every 64 rounds: the check reads the clock. A dead holder left
         * nothing half done: a group head is one store. */
        if (expected != 0 && (deadline != 0 || (spins & 63) == 0) &&
            rb_take_dead_lock(rb, turn, expected, &rb->turn_stall)) {
            RB_KILLPOINT("read.turn");
            return check_group(rb);
        }
        if (is_closing_relaxed(rb))
            return RB_ECLOSED;
        if (deadline != 0) {
            struct rb_waitq q = rb_turn_q(rb);
            int rc = rb_wait(rb, &q, turn_ready, 0, deadline);
            if (rc != RB_OK)
                return rc;
            continue;
        }
        /* Once yielding, read the clock every round: a yield can take long. */
        if (spin_end == 0)
            spin_end = rb_now_ns() + RB_TURN_SPIN_NS;
        else if ((spins >= 256 || (spins & 63) == 0) && rb_now_ns() >= spin_end)
            return RB_EEMPTY;
        if (spins < 256)
            cpu_relax();
        else
            sched_yield();
    }
}

/* Gives the turn back and wakes whoever waits for it or for the space we
 * made reclaimable. */
static void give_turn(rb_ring *rb, int released)
{
    /* Release: our group head store happens-before the next holder. */
    atomic_store_explicit(&rb->grp->turn, 0, memory_order_release);
    /* Fence between our stores (group head, turn) and rb_wake's loads of
     * the waiter counts; pairs with the fence in rb_wait. */
    rb_waker_fence(rb);
    if (released) {
        struct rb_waitq q = rb_space_q(rb);
        rb_wake(rb, &q);
    }
    struct rb_waitq q = rb_turn_q(rb);
    rb_wake(rb, &q);
}

/* Looks at the record at head h (we hold the turn). Returns RB_OK with its
 * header word, RB_EEMPTY, or RB_ECORRUPT. Always inlined: every read and
 * peek calls it per record, and with peek_following as a second caller the
 * compiler made it a call (rb_write + rb_peek + rb_release measured 5-8%
 * slower). */
static inline __attribute__((always_inline)) int peek_record(rb_ring *rb, uint64_t h, uint64_t lim,
                                                             uint64_t *word)
{
    if (h >= lim)
        return RB_EEMPTY; /* the word there is the oldest record's (rb_read_limit) */
    /* Acquire pairs with the producer's committing release store: the
     * payload is visible once we see the record committed. */
    uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_acquire);
    if (w == 0)
        return RB_EEMPTY;
    uint32_t flags = rb_rec_flags(w);
    uint64_t len = rb_rec_len(w);
    /* docs/format.md: a length is 1 to max_message (0 only for a DISCARD
     * gap left by a killed producer), and BUSY and DISCARD never meet. */
    if (!rb_rec_valid(w, rb->max_message))
        return RB_ECORRUPT;
    if (flags & RB_REC_BUSY)
        return RB_EEMPTY; /* reserved, not committed yet */
    /* A committed record ends at or below tail; one that does not was
     * forged (a hostile file), and consuming it would move head past tail.
     * The cached tail is a lower bound, so reload it only when the record
     * seems to pass it. Relaxed: the record's writer moved tail past it
     * with its CAS before the commit we acquired, so this load sees that. */
    uint64_t size = rb_rec_size(len);
    if (h > rb->tail_cache || size > rb->tail_cache - h) {
        rb->tail_cache = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
        if (h > rb->tail_cache || size > rb->tail_cache - h)
            return RB_ECORRUPT;
    }
    *word = w;
    return RB_OK;
}

/* Our group has read (or skipped) up to e (we hold its turn; a lossless
 * ring: nobody else moves the group head). */
static inline void consume(rb_ring *rb, uint64_t e)
{
    /* Release pairs with rb_reclaim's acquire of the group head: our copies
     * out of the bytes below e happen-before it zeroes them. */
    atomic_store_explicit(&rb->grp->head, e, memory_order_release);
    RB_KILLPOINT("read.consumed");
}

/* Skips discarded records at the head; returns the first deliverable
 * record's position and word, or RB_EEMPTY / RB_ECORRUPT (we hold the turn).
 * *h is the head on entry and the position reached on return; the caller
 * consumes what was skipped. A record stuck at the head may be recovered
 * here (recover.c), when its writer is dead. */
static int next_record(rb_ring *rb, uint64_t *h, uint64_t lim, uint64_t *word)
{
    for (;;) {
        int rc = peek_record(rb, *h, lim, word);
        if (rc == RB_EEMPTY && *h < lim) {
            rc = rb_recover_head(rb, *h, &rb->head_stall);
            if (rc == 1)
                continue; /* now discarded: look again */
            return rc == 0 ? RB_EEMPTY : rc;
        }
        if (rc != RB_OK || !(rb_rec_flags(*word) & RB_REC_DISCARD))
            return rc;
        *h += rb_rec_size(rb_rec_len(*word));
    }
}

/* Reads up to max_count records into buf (we hold the turn). *released is
 * set when head moved. */
static int read_records(rb_ring *rb, unsigned char *buf, size_t buf_size, size_t *lens, size_t max_count,
                        size_t *count, int *released)
{
    /* Relaxed: in a lossless ring only our group's turn holders store its
     * head, and our turn's acquire made the last holder's store visible. */
    uint64_t start = atomic_load_explicit(&rb->grp->head, memory_order_relaxed);
    uint64_t h = start, lim = rb_read_limit(rb);
    size_t n = 0, used = 0;
    int rc = RB_OK;
    while (n < max_count) {
        uint64_t w;
        rc = next_record(rb, &h, lim, &w);
        if (rc != RB_OK)
            break;
        uint64_t len = rb_rec_len(w);
        if (len > buf_size - used) {
            if (n == 0) {
                lens[0] = (size_t)len;
                rc = RB_ETRUNC;
            }
            break;
        }
        memcpy(buf + used, rb_rec_payload(rb, h), (size_t)len);
        lens[n++] = (size_t)len;
        used += (size_t)len;
        h += rb_rec_size(len);
    }
    RB_KILLPOINT("read.copied");
    /* Everything read (and skipped) so far is consumed at once: from here
     * on, if we die, these messages count as received by us. */
    *released = h != start;
    if (*released)
        consume(rb, h);
    if (n > 0)
        rb_count2_own(rb, RB_C_READ, n, used); /* we hold the turn: rb_count2_own */
    *count = n;
    return n > 0 ? RB_OK : rc;
}

/* An overwrite ring: a loss our group suffered (overrun_groups, groups.c)
 * and no member reported yet: 1 (the read returns RB_ELOST, having
 * delivered nothing), with the count added to our handle's (rb_take_lost). */
static int lost_found(rb_ring *rb)
{
    /* Relaxed: counts; the exchange takes each loss once, whichever member
     * finds it. */
    if (atomic_load_explicit(&rb->grp->lost_pending, memory_order_relaxed) == 0)
        return 0;
    uint64_t n = atomic_exchange_explicit(&rb->grp->lost_pending, 0, memory_order_relaxed);
    if (n == 0)
        return 0;
    atomic_fetch_add_explicit(&rb->lost, n, memory_order_relaxed);
    return 1;
}

/* Copies a payload that a writer of an overwrite ring may be reclaiming
 * while we copy it: the copy is used only if the group head did not move
 * meanwhile (read_records_ow), so a torn copy is never delivered. The race
 * is by design (a seqlock's reader): hidden from TSan, which would report
 * it; the bytes read are discarded whenever it matters. */
__attribute__((no_sanitize("thread"))) static void copy_racy(unsigned char *dst, const unsigned char *src, size_t n)
{
    memcpy(dst, src, n);
}

/* read_records for an overwrite ring (docs/design.md, "Overwrite rings"):
 * a writer may move our group head past what we read (overrun_groups)
 * while we copy, so the head is moved with a CAS from where we started:
 * if it fails, nothing we copied is delivered, the loss is reported
 * (RB_ELOST) and the next read starts at the oldest message left. We hold
 * the turn. */
__attribute__((noinline)) static int read_records_ow(rb_ring *rb, unsigned char *buf, size_t buf_size,
                                                     size_t *lens, size_t max_count, size_t *count,
                                                     int *released)
{
    struct rb_group *g = rb->grp;
    *released = 0;
    *count = 0;
    for (;;) {
        /* The head first (a writer overrunning us counts the loss before
         * it lets the head be seen: rb_group_head), then the count. */
        uint64_t start;
        int rc = rb_group_head(rb, &start);
        if (rc != RB_OK)
            return rc;
        if (lost_found(rb))
            return RB_ELOST;
        uint64_t h = start, lim = rb_read_limit(rb);
        size_t n = 0, used = 0;
        while (n < max_count) {
            uint64_t w;
            rc = peek_record(rb, h, lim, &w);
            if (rc == RB_EEMPTY && n == 0 && h == start && h < lim) {
                /* Recovery writes DISCARD words: only under the reclaim
                 * lock here, where no writer can reclaim them meanwhile. */
                rc = rb_recover_locked(rb, h);
                if (rc == 1)
                    continue;
                rc = rc == 0 ? RB_EEMPTY : rc;
            }
            if (rc != RB_OK)
                break;
            uint64_t len = rb_rec_len(w);
            if (rb_rec_flags(w) & RB_REC_DISCARD) {
                h += rb_rec_size(len);
                continue;
            }
            if (len > buf_size - used) {
                if (n == 0) {
                    lens[0] = (size_t)len;
                    rc = RB_ETRUNC;
                }
                break;
            }
            copy_racy(buf + used, rb_rec_payload(rb, h), (size_t)len);
            lens[n++] = (size_t)len;
            used += (size_t)len;
            h += rb_rec_size(len);
        }
        RB_KILLPOINT("read.copied");
        uint64_t expected = start;
        if (h != start) {
            /* Release on success: our copies happen-before a writer's
             * acquire of the new head (rb_reclaim). Failure (relaxed): a
             * writer moved the head: what we copied may be torn, drop it
             * and look again (lost_found reports the loss). */
            if (!atomic_compare_exchange_strong_explicit(&g->head, &expected, h, memory_order_release,
                                                         memory_order_relaxed))
                continue;
            *released = 1;
        } else if (rc != RB_OK && atomic_load_explicit(&g->head, memory_order_acquire) != start)
            continue; /* what we found (empty, corrupt, too long) was a reclaimed record's */
        if (n > 0)
            rb_count2_own(rb, RB_C_READ, n, used); /* we hold the turn: rb_count2_own */
        *count = n;
        return n > 0 ? RB_OK : rc;
    }
}

static int read_turns(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count,
                      int64_t deadline);

/* A read (or peek) that found nothing and returned at once: counted (a
 * wait is counted in parks). */
static int count_empty(rb_ring *rb, int rc)
{
    if (rc == RB_EEMPTY)
        rb_count(rb, RB_C_EMPTY, 1);
    return rc;
}

static int read_many(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count,
                     int64_t deadline)
{
    if (count != NULL)
        *count = 0;
    if (rb == NULL || count == NULL || (max_count > 0 && lens == NULL) || (buf == NULL && buf_size > 0))
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    if (max_count == 0)
        return RB_OK;
    rb_check_fork(rb);
    return count_empty(rb, read_turns(rb, buf, buf_size, lens, max_count, count, deadline));
}

/* read_many's loop: takes the turn and reads, waiting for data until the
 * deadline. */
static int read_turns(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count,
                      int64_t deadline)
{
    for (;;) {
        int rc = take_turn(rb, deadline);
        if (rc != RB_OK) {
            if (rc == RB_EEMPTY) /* the turn stayed taken: found empty too */
                rb_event_rearm(rb, RB_EV_READABLE, 0);
            return rc;
        }
        int released;
        if (__builtin_expect(rb->overwrite, 0))
            rc = read_records_ow(rb, buf, buf_size, lens, max_count, count, &released);
        else
            rc = read_records(rb, buf, buf_size, lens, max_count, count, &released);
        give_turn(rb, released);
        if (rc != RB_EEMPTY)
            return rc;
        if (deadline == 0) {
            rb_event_rearm(rb, RB_EV_READABLE, 0); /* found empty: the readable fd stops polling ready */
            return rc;
        }
        rc = await_data(rb, deadline);
        if (rc != RB_OK)
            return rc;
    }
}

static int read_one(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len, int64_t deadline)
{
    if (msg_len == NULL)
        return RB_EINVAL;
    size_t len = 0, n;
    int rc = read_many(rb, buf, buf_size, &len, 1, &n, deadline);
    if (rc == RB_OK || rc == RB_ETRUNC)
        *msg_len = len;
    return rc;
}

RB_API int rb_read(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len)
{
    return read_one(rb, buf, buf_size, msg_len, 0);
}

RB_API int rb_read_wait(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len, int64_t timeout_ns)
{
    int rc = read_one(rb, buf, buf_size, msg_len, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EEMPTY ? RB_ETIMEDOUT : rc;
}

RB_API int rb_read_many(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count)
{
    return read_many(rb, buf, buf_size, lens, max_count, count, 0);
}

RB_API int rb_read_many_wait(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count,
                             size_t *count, int64_t timeout_ns)
{
    int rc = read_many(rb, buf, buf_size, lens, max_count, count, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EEMPTY ? RB_ETIMEDOUT : rc;
}

/* ---- zero-copy reads ---------------------------------------------------- */

static inline int peek_turns(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions, size_t max_count,
                             size_t *count, int64_t deadline);

/* rb_peek (max_count 1) and rb_peek_many: the arguments checked as
 * read_many checks its own. */
static int peek_many(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions, size_t max_count,
                     size_t *count, int64_t deadline)
{
    if (count != NULL)
        *count = 0;
    if (rb == NULL || count == NULL || (max_count > 0 && (ptrs == NULL || lens == NULL)))
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    if (max_count == 0)
        return RB_OK; /* nothing asked: the turn is not taken */
    if (rb->overwrite)
        return RB_EINVAL; /* a writer could reclaim the record while it is held */
    rb_check_fork(rb);
    return count_empty(rb, peek_turns(rb, ptrs, lens, positions, max_count, count, deadline));
}

/* rb_peek_many past its first message: the consecutive committed messages
 * that follow the one ending at e, DISCARD records between them skipped
 * (they stay inside the peeked range), stored from index n on, up to
 * max_count in all. Stops at the first record not committed (zero or BUSY:
 * no recovery here, it is not at the head), at a corrupt one (reported by
 * the next call, which meets it at the head), or a capacity past head (the
 * word there is the first record's own). We hold the turn. Returns how many
 * messages in all; *end: where the last one ends; *bytes: adds their
 * payload bytes. */
__attribute__((noinline)) /* rb_peek never calls it: kept out of its code */
static size_t peek_following(rb_ring *rb, uint64_t lim, uint64_t e, const void **ptrs, size_t *lens,
                             uint64_t *positions, size_t n, size_t max_count, uint64_t *end, uint64_t *bytes)
{
    uint64_t h = e, w;
    while (n < max_count) {
        if (peek_record(rb, h, lim, &w) != RB_OK)
            break;
        uint64_t len = rb_rec_len(w);
        if (rb_rec_flags(w) & RB_REC_DISCARD) {
            h += rb_rec_size(len);
            continue;
        }
        ptrs[n] = rb_rec_payload(rb, h);
        lens[n] = (size_t)len;
        if (positions != NULL)
            positions[n] = h;
        n++;
        *bytes += len;
        h += rb_rec_size(len);
        e = h;
    }
    *end = e;
    return n;
}

/* peek_many's loop, as read_turns. Always inlined, into rb_peek's path
 * (peek_one, with max_count 1 and no positions: the batch code folds away)
 * and into peek_many's: a call more per rb_peek showed in a bench. */
static inline __attribute__((always_inline)) int peek_turns(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions, size_t max_count,
                      size_t *count, int64_t deadline)
{
    for (;;) {
        int rc = take_turn(rb, deadline);
        if (rc != RB_OK) {
            if (rc == RB_EEMPTY) /* the turn stayed taken: found empty too */
                rb_event_rearm(rb, RB_EV_READABLE, 0);
            return rc;
        }
        /* Relaxed: as in read_records. */
        uint64_t start = atomic_load_explicit(&rb->grp->head, memory_order_relaxed), h = start, w;
        uint64_t lim = rb_read_limit(rb);
        rc = next_record(rb, &h, lim, &w);
        if (h != start)
            consume(rb, h); /* discarded records skipped */
        if (rc == RB_OK) {
            if (h != start) {
                /* Space was freed while we keep the turn: the fence and
                 * wake-up give_turn would otherwise do (see give_turn). */
                rb_waker_fence(rb);
                struct rb_waitq q = rb_space_q(rb);
                rb_wake(rb, &q);
            }
            /* Keep the turn until rb_release. Only this turn holder reads
             * the peek_* fields (plain); peeking just guards misuse
             * (relaxed). rb_peek (max_count 1) walks nothing more. */
            uint64_t len = rb_rec_len(w), end = h + rb_rec_size(len), bytes = len;
            size_t n = 1;
            ptrs[0] = rb_rec_payload(rb, h);
            lens[0] = (size_t)len;
            if (positions != NULL)
                positions[0] = h;
            if (max_count > 1)
                n = peek_following(rb, lim, end, ptrs, lens, positions, 1, max_count, &end, &bytes);
            rb->peek_end = end;
            rb->peek_count = n;
            rb->peek_bytes = bytes;
            atomic_store_explicit(&rb->peeking, 1, memory_order_relaxed);
            *count = n;
            return RB_OK;
        }
        give_turn(rb, h != start);
        if (rc != RB_EEMPTY)
            return rc;
        if (deadline == 0) {
            rb_event_rearm(rb, RB_EV_READABLE, 0); /* as in read_many */
            return rc;
        }
        rc = await_data(rb, deadline);
        if (rc != RB_OK)
            return rc;
    }
}

/* rb_peek: peek_many of one message, with its own checks, so that the
 * compiler makes it one function again (as before rb_peek_many). */
static int peek_one(rb_ring *rb, const void **ptr, size_t *len, int64_t deadline)
{
    if (rb == NULL || ptr == NULL || len == NULL || rb->overwrite)
        return RB_EINVAL; /* overwrite: as in peek_many */
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    rb_check_fork(rb);
    size_t n;
    return count_empty(rb, peek_turns(rb, ptr, len, NULL, 1, &n, deadline));
}

RB_API int rb_peek(rb_ring *rb, const void **ptr, size_t *len) { return peek_one(rb, ptr, len, 0); }

RB_API int rb_peek_wait(rb_ring *rb, const void **ptr, size_t *len, int64_t timeout_ns)
{
    int rc = peek_one(rb, ptr, len, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EEMPTY ? RB_ETIMEDOUT : rc;
}

RB_API int rb_peek_many(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions, size_t max_count,
                        size_t *count)
{
    return peek_many(rb, ptrs, lens, positions, max_count, count, 0);
}

RB_API int rb_peek_many_wait(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions,
                             size_t max_count, size_t *count, int64_t timeout_ns)
{
    int rc = peek_many(rb, ptrs, lens, positions, max_count, count, timeout_ns == 0 ? 0 : rb_deadline(timeout_ns));
    return rc == RB_EEMPTY ? RB_ETIMEDOUT : rc;
}

RB_API int rb_peek_cancel(rb_ring *rb)
{
    if (rb == NULL)
        return RB_EINVAL;
    rb_check_fork(rb); /* clears a peek inherited through fork: the parent's */
    uint32_t one = 1;
    /* Relaxed: as in rb_release. The messages stay for the next reader. */
    if (!atomic_compare_exchange_strong_explicit(&rb->peeking, &one, 0, memory_order_relaxed, memory_order_relaxed))
        return RB_EINVAL;
    give_turn(rb, 0);
    return RB_OK;
}

RB_API int rb_release(rb_ring *rb)
{
    if (rb == NULL)
        return RB_EINVAL;
    rb_check_fork(rb); /* as in rb_peek_cancel */
    uint32_t one = 1;
    /* Relaxed: clears the flag once; the peeking thread holds the turn. */
    if (!atomic_compare_exchange_strong_explicit(&rb->peeking, &one, 0, memory_order_relaxed, memory_order_relaxed))
        return RB_EINVAL;
    /* Everything peeked, the DISCARD records between the messages
     * included; rb_peek and rb_peek_many stored the range (plain: this
     * thread holds the turn and peeked). */
    consume(rb, rb->peek_end);
    rb_count2_own(rb, RB_C_READ, rb->peek_count, rb->peek_bytes); /* we still hold the turn: rb_count2_own */
    give_turn(rb, 1);
    return RB_OK;
}

RB_API int rb_data_region(rb_ring *rb, void **base, size_t *len)
{
    if (rb == NULL || base == NULL || len == NULL)
        return RB_EINVAL;
    *base = rb->data;
    *len = (size_t)(2 * rb->capacity); /* mapped twice back to back (file.c) */
    return RB_OK;
}

/* ---- lifetime and diagnostics ------------------------------------------ */

RB_API int rb_shutdown(rb_ring *rb)
{
    if (rb == NULL)
        return RB_EINVAL;
    /* The seq_cst fence before the wake-ups is what matters: a waiter
     * either sees closing in its re-check or has its futex word bumped
     * (by a release bump, which orders closing before it). The release on
     * the exchange itself is more than needed (free on x86). Only the
     * first shutdown goes on. */
    if (atomic_exchange_explicit(&rb->closing, 1, memory_order_release) != 0)
        return RB_OK;
    atomic_thread_fence(memory_order_seq_cst);
    struct rb_waitq qs[3] = {rb_data_q(rb), rb_space_q(rb), rb_turn_q(rb)};
    for (int i = 0; i < 3; i++)
        rb_wake_always(&qs[i]);
    /* An ephemeral group ends with its handle's use: remove it now (the
     * calls just woken give its turn back), not only at rb_close, which a
     * binding may run much later. Not in a fork child that never used the
     * handle: the group is its parent's (as in rb_close). Relaxed: the
     * epochs are this process's (rb_close). */
    if (atomic_load_explicit(&rb->fork_epoch, memory_order_relaxed) ==
        atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed)) {
        rb_group_leave(rb, 100000000);
        /* No longer a member (rb_groups counts members from the slots; the
         * slot itself is kept until rb_close). Relaxed: diagnostics. */
        atomic_store_explicit(&rb->me->group, 0, memory_order_relaxed);
    }
    /* The descriptor stays open until rb_close: it holds our slot's lock,
     * and calls still running must not look dead to others. */
    return RB_OK;
}

RB_API int rb_positions(const rb_ring *rb, uint64_t *head, uint64_t *tail)
{
    if (rb == NULL)
        return RB_EINVAL;
    /* A diagnostic snapshot, nothing is read through it. Acquire on head
     * (then tail) makes the tail at least as new as that head. If head has
     * not moved by a second load, (head, tail) held at one instant, so
     * head <= tail <= head + capacity; on a busy ring, retry a few times,
     * then clamp. */
    /* Our group's head if it exists, else where writers may write up to.
     * Relaxed gen: a snapshot. */
    _Atomic uint64_t *hw = &rb->hdr->head;
    if (rb->grp != NULL && rb->grp_gen != 0 && atomic_load_explicit(&rb->grp->gen, memory_order_relaxed) == rb->grp_gen)
        hw = &rb->grp->head;
    uint64_t tag = rb->overwrite ? RB_HEAD_OVERRUN : 0; /* only overwrite rings tag heads */
    uint64_t h, t, h2 = atomic_load_explicit(hw, memory_order_acquire) & ~tag;
    int tries = 0;
    do {
        h = h2;
        t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
        h2 = atomic_load_explicit(hw, memory_order_acquire) & ~tag;
    } while (h2 != h && ++tries < 100);
    if (h2 != h) {
        h = h2;
        t = t < h ? h : (t - h > rb->capacity ? h + rb->capacity : t);
    }
    if (head != NULL)
        *head = h;
    if (tail != NULL)
        *tail = t;
    return RB_OK;
}

RB_API int rb_info_sized(rb_ring *rb, struct rb_info *out, size_t size)
{
    return rb_info_ex(rb, out, size, 0);
}

RB_API int rb_info_ex(rb_ring *rb, struct rb_info *out, size_t size, unsigned flags)
{
    if (rb == NULL || out == NULL || size == 0 || (flags & ~RB_INFO_NO_COUNT) != 0)
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    rb_check_fork(rb);
    struct rb_info in = {.capacity = rb->capacity, .max_message = rb->max_message, .format_version = RB_FORMAT_VERSION};
    /* Plain copy: written before the file was published, never after. */
    memcpy(in.file_id, rb->hdr->file_id, sizeof in.file_id);
    rb_positions(rb, &in.head, &in.tail);
    /* Relaxed: diagnostic snapshots of counters and positions. */
    uint32_t turn = rb->grp_gen != 0 ? atomic_load_explicit(&rb->grp->turn, memory_order_relaxed) : 0;
    in.reclaimed = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
    uint64_t tnow = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
    int any;
    uint64_t used = tnow - rb_reclaimable(rb, &any);
    in.writable = used < rb->capacity ? rb->capacity - used : 0;
    in.ring_flags = rb_ring_flags(rb);
    for (uint32_t i = 0, n = rb_groups_used(rb); i < n; i++)
        in.groups += atomic_load_explicit(&rb_group_at(rb, i)->gen, memory_order_relaxed) & 1u;
    in.read_turn = turn == 0 ? 0 : atomic_load_explicit(&rb->slots[rb_id_slot(turn)].pid, memory_order_relaxed);
    if (turn != 0 && in.read_turn == 0)
        in.read_turn = UINT32_MAX; /* a forged holder: no pid on record */
    for (uint32_t i = 0, n = rb_slots_used(rb); i < n; i++)
        in.attached += (uint32_t)rb_slot_alive(rb, i);
    in.full_fences = atomic_load_explicit(&rb->hdr->heavy_waiters, memory_order_relaxed) != 0;
    in.data_waiters = atomic_load_explicit(&rb->hdr->data_waiters, memory_order_relaxed);
    in.space_waiters = atomic_load_explicit(&rb->hdr->space_waiters, memory_order_relaxed);
    in.turn_waiters = atomic_load_explicit(&rb->hdr->turn_waiters, memory_order_relaxed);
    int rc = RB_OK, locked = 0;
    int walk = !(flags & RB_INFO_NO_COUNT) && take_turn(rb, 0) == RB_OK;
    /* An overwrite ring's writers could zero what we walk: hold them off
     * (the reclaim lock, after the turn: the order readers take them in),
     * or count nothing. */
    if (walk && rb->overwrite && !(locked = rb_reclaim_trylock(rb))) {
        give_turn(rb, 0);
        walk = 0;
    }
    if (walk) {
        /* Walk under the turn, as a consumer would read (read_records): the
         * words between head and tail are record headers, zero (reserved,
         * not written yet) or committed/BUSY/DISCARD words. */
        /* Relaxed head: as in read_records. Acquire tail: pairs with the
         * producers' release CAS, as recovery's load does. More than
         * needed: the walk needs only a bound (the turn's acquire chain
         * already gives tail >= head, and each word it reads is acquired
         * and checked on its own). */
        uint64_t h = atomic_load_explicit(&rb->grp->head, memory_order_relaxed) &
                     ~(uint64_t)(rb->overwrite ? RB_HEAD_OVERRUN : 0); /* only overwrite rings tag heads */
        uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_acquire);
        in.head = h;
        in.tail = t;
        /* A group head forged since we joined (below head, past tail,
         * unaligned) is not walked: the reads report it. */
        if ((h & 7u) != 0 || h < in.reclaimed || h > t)
            h = t;
        while (h < t) {
            /* Acquire: as in peek_record. */
            uint64_t w = atomic_load_explicit(rb_rec_word(rb, h), memory_order_acquire);
            uint64_t len = rb_rec_len(w);
            uint32_t flags = rb_rec_flags(w);
            if (w == 0) {
                in.busy++; /* reserved, header not written yet: its size is unknown */
                break;
            }
            if (!rb_rec_valid(w, rb->max_message) || rb_rec_size(len) > t - h) {
                rc = RB_ECORRUPT;
                break;
            }
            if (flags & RB_REC_DISCARD)
                in.discarded++;
            else if (flags & RB_REC_BUSY)
                in.busy++;
            else {
                in.messages++;
                in.message_bytes += len;
            }
            h += rb_rec_size(len);
        }
        if (locked)
            rb_reclaim_unlock(rb);
        give_turn(rb, 0);
        in.counted = 1;
    }
    /* The caller's struct may be older (shorter) or newer (longer) than
     * ours: write exactly its size (docs/abi.md). */
    size_t n = size < sizeof in ? size : sizeof in;
    memcpy(out, &in, n);
    memset((char *)out + n, 0, size - n);
    return rc;
}
