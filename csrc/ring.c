/*
 * ring.c - the concurrent algorithm: reserving, writing and committing
 * records (producers), reading and releasing them (consumers).
 * docs/design.md explains the protocol and why each memory order suffices.
 *
 * Invariants (positions are byte counts that only grow, index = pos & mask):
 *   head <= tail <= head + capacity
 *   every byte in [tail, head + capacity) is zero (consumers zero what they
 *   release), so a zero header word means "not written yet".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <sched.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

static inline _Atomic uint64_t *slot(const rb_ring *rb, uint64_t pos)
{
    return (_Atomic uint64_t *)(void *)(rb->data + (pos & rb->mask));
}

/* ---- producers --------------------------------------------------------- */

/* Reserves need bytes at *pos with one CAS on tail. */
static int reserve(rb_ring *rb, uint64_t need, uint64_t *pos)
{
    /* Acquire pairs with the release below (another thread of this handle
     * refreshed the cache): what that thread saw of the consumers' zeroing
     * is then visible to us too. */
    uint64_t h = atomic_load_explicit(&rb->head_cache, memory_order_acquire);
    for (;;) {
        /* Relaxed: the CAS below validates t; t >= h holds because h was
         * read (with acquire, via head's release chain) before this load. */
        uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
        if (t - h > rb->capacity - need) { /* need <= capacity: no wrap */
            /* Acquire pairs with the consumers' release of head: their
             * zeroing of the freed bytes happens-before our writes there. */
            uint64_t fresh = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
            if (fresh == h)
                return RB_EFULL; /* head has not moved: really full */
            /* Release: publishes the refreshed bound to sibling threads
             * together with the happens-before it carries. */
            atomic_store_explicit(&rb->head_cache, fresh, memory_order_release);
            h = fresh;
            continue;
        }
        /* Relaxed both ways: the CAS only has to make [t, t+need) ours
         * alone; publication to consumers goes through each record's
         * header (release), not through tail. */
        if (atomic_compare_exchange_weak_explicit(&rb->hdr->tail, &t, t + need, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *pos = t;
            return RB_OK;
        }
    }
}

/* Fills the record at pos and commits it. */
static void put_record(rb_ring *rb, uint64_t pos, const void *msg, uint64_t len)
{
    _Atomic uint64_t *h = slot(rb, pos);
    /* Relaxed: BUSY only tells a consumer to wait; it reads nothing else. */
    atomic_store_explicit(h, rb_rec_make(len, RB_REC_BUSY, rb->id), memory_order_relaxed);
    /* The data is mapped twice back to back: the copy never wraps. */
    memcpy(rb->data + (pos & rb->mask) + RB_REC_HDR, msg, (size_t)len);
    /* Release: the payload above is visible to whoever acquires this word
     * and sees the record committed. */
    atomic_store_explicit(h, rb_rec_make(len, 0, rb->id), memory_order_release);
}

RB_API int rb_write(rb_ring *rb, const void *msg, size_t len)
{
    if (rb == NULL || msg == NULL)
        return RB_EINVAL;
    if (len == 0 || len > rb->max_message)
        return RB_ESIZE;
    uint64_t pos;
    int rc = reserve(rb, rb_rec_size(len), &pos);
    if (rc != RB_OK)
        return rc;
    put_record(rb, pos, msg, len);
    return RB_OK;
}

RB_API int rb_write_many(rb_ring *rb, const void *data, const size_t *lens, size_t count, size_t *written)
{
    if (written != NULL)
        *written = 0;
    if (rb == NULL || written == NULL || (count > 0 && (data == NULL || lens == NULL)))
        return RB_EINVAL;
    if (count == 0)
        return RB_OK;
    for (size_t i = 0; i < count; i++)
        if (lens[i] == 0 || lens[i] > rb->max_message)
            return RB_ESIZE;

    /* Reserve the longest prefix that fits, with one CAS. */
    uint64_t h = atomic_load_explicit(&rb->head_cache, memory_order_acquire); /* as in reserve() */
    uint64_t pos;
    size_t n;
    for (;;) {
        uint64_t t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed); /* as in reserve() */
        uint64_t used = t - h, need = 0;
        uint64_t free_bytes = used < rb->capacity ? rb->capacity - used : 0;
        for (n = 0; n < count && need + rb_rec_size(lens[n]) <= free_bytes; n++)
            need += rb_rec_size(lens[n]);
        if (n < count) {
            uint64_t fresh = atomic_load_explicit(&rb->hdr->head, memory_order_acquire); /* as in reserve() */
            if (fresh != h) {
                atomic_store_explicit(&rb->head_cache, fresh, memory_order_release); /* as in reserve() */
                h = fresh;
                continue;
            }
            if (n == 0)
                return RB_EFULL;
        }
        if (atomic_compare_exchange_weak_explicit(&rb->hdr->tail, &t, t + need, memory_order_relaxed,
                                                  memory_order_relaxed)) { /* as in reserve() */
            pos = t;
            break;
        }
    }
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        put_record(rb, pos, p, lens[i]);
        pos += rb_rec_size(lens[i]);
        p += lens[i];
    }
    *written = n;
    return RB_OK;
}

/* ---- consumers --------------------------------------------------------- */

/* Consumers take turns: one CAS on a word only consumers touch. */
static void take_turn(rb_ring *rb)
{
    for (unsigned spins = 0;; spins++) {
        uint32_t expected = 0;
        /* Acquire pairs with the previous holder's release in give_turn():
         * its head store and zeroing are visible to us. */
        if (atomic_compare_exchange_weak_explicit(&rb->hdr->read_turn, &expected, rb->id, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        if (spins < 64)
            cpu_relax();
        else
            sched_yield();
    }
}

static void give_turn(rb_ring *rb)
{
    /* Release: our head store and zeroing happen-before the next holder. */
    atomic_store_explicit(&rb->hdr->read_turn, 0, memory_order_release);
}

/* Looks at the record at head h (we hold the turn). Returns RB_OK with its
 * header word, RB_EEMPTY, or RB_ECORRUPT. */
static int peek_record(rb_ring *rb, uint64_t h, uint64_t *word)
{
    /* Acquire pairs with the producer's committing release store: the
     * payload is visible once we see the record committed. */
    uint64_t w = atomic_load_explicit(slot(rb, h), memory_order_acquire);
    if (w == 0)
        return RB_EEMPTY;
    uint32_t flags = rb_rec_flags(w);
    uint64_t len = rb_rec_len(w);
    /* A length is 1 to max_message (docs/format.md): no writer makes an
     * empty record. */
    if ((flags & ~RB_REC_FLAGS_KNOWN) != 0 || len == 0 || len > rb->max_message)
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

/* Zeroes a consumed record so the free region stays zero. */
static void wipe_record(rb_ring *rb, uint64_t h, uint64_t size)
{
    /* Payload first, header word last; plain stores suffice: the release
     * of head publishes them to producers before they can reuse the bytes. */
    memset(rb->data + (h & rb->mask) + RB_REC_HDR, 0, (size_t)(size - RB_REC_HDR));
    atomic_store_explicit(slot(rb, h), 0, memory_order_relaxed);
}

static void release_head(rb_ring *rb, uint64_t h)
{
    /* Release pairs with the producers' acquire load of head in reserve():
     * the zeroed bytes are visible before anyone writes there again. */
    atomic_store_explicit(&rb->hdr->head, h, memory_order_release);
}

/* Reads up to max_count records into buf (we hold the turn). */
static int read_records(rb_ring *rb, unsigned char *buf, size_t buf_size, size_t *lens, size_t max_count,
                        size_t *count)
{
    /* Relaxed: only turn holders store head, and our turn's acquire made
     * the last holder's store visible. */
    uint64_t start = atomic_load_explicit(&rb->hdr->head, memory_order_relaxed);
    uint64_t h = start;
    size_t n = 0, used = 0;
    int rc = RB_OK;
    while (n < max_count) {
        uint64_t w;
        rc = peek_record(rb, h, &w);
        if (rc != RB_OK)
            break;
        uint64_t len = rb_rec_len(w), size = rb_rec_size(len);
        if (rb_rec_flags(w) & RB_REC_DISCARD) {
            wipe_record(rb, h, size);
            h += size;
            continue;
        }
        if (len > buf_size - used) {
            if (n == 0) {
                lens[0] = (size_t)len;
                rc = RB_ETRUNC;
            }
            break;
        }
        memcpy(buf + used, rb->data + (h & rb->mask) + RB_REC_HDR, (size_t)len);
        wipe_record(rb, h, size);
        lens[n++] = (size_t)len;
        used += (size_t)len;
        h += size;
    }
    if (h != start)
        release_head(rb, h);
    *count = n;
    if (n > 0 || max_count == 0)
        return RB_OK;
    return rc;
}

RB_API int rb_read(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len)
{
    if (rb == NULL || msg_len == NULL || (buf == NULL && buf_size > 0))
        return RB_EINVAL;
    size_t len, n;
    take_turn(rb);
    int rc = read_records(rb, buf, buf_size, &len, 1, &n);
    give_turn(rb);
    if (rc == RB_OK || rc == RB_ETRUNC)
        *msg_len = len;
    return rc;
}

RB_API int rb_read_many(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count)
{
    if (count != NULL)
        *count = 0;
    if (rb == NULL || count == NULL || (max_count > 0 && lens == NULL) || (buf == NULL && buf_size > 0))
        return RB_EINVAL;
    if (max_count == 0)
        return RB_OK;
    take_turn(rb);
    int rc = read_records(rb, buf, buf_size, lens, max_count, count);
    give_turn(rb);
    return rc;
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
    uint64_t h, t, h2 = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
    int tries = 0;
    do {
        h = h2;
        t = atomic_load_explicit(&rb->hdr->tail, memory_order_relaxed);
        h2 = atomic_load_explicit(&rb->hdr->head, memory_order_acquire);
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
