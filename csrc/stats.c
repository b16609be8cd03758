/*
 * stats.c - the ring's counters (rb_stats): the sums of the counters every
 * handle keeps in its slot (internal.h, rb_count2; docs/format.md,
 * "Counters").
 */
#include "internal.h"

#include <string.h>

/* a + b, saturating: a forged file's counters may sum past 2^64. */
static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

RB_API int rb_stats_sized(rb_ring *rb, struct rb_stats *out, size_t size)
{
    if (rb == NULL || out == NULL || size == 0)
        return RB_EINVAL;
    if (is_closing_relaxed(rb))
        return RB_ECLOSED;
    uint64_t sum[RB_COUNTERS] = {0};
    /* Every slot ever taken: counts stay in a slot after its owner went.
     * Relaxed loads: each counter is only stored or added to, so every
     * value read is one that was stored, and no later read of it is
     * smaller (coherence); nothing else is read through them. */
    for (uint32_t i = 0, n = rb_slots_used(rb); i < n; i++) {
        const struct rb_slot *s = &rb->slots[i];
        for (unsigned c = 0; c < RB_COUNTERS; c++) {
            sum[c] = sat_add(sum[c], atomic_load_explicit(&s->count_own[c], memory_order_relaxed));
            sum[c] = sat_add(sum[c], atomic_load_explicit(&s->count_shared[c], memory_order_relaxed));
        }
    }
    struct rb_stats st = {
        .written = sum[RB_C_WRITTEN],
        .written_bytes = sum[RB_C_WRITTEN_BYTES],
        .read = sum[RB_C_READ],
        .read_bytes = sum[RB_C_READ_BYTES],
        .aborted = sum[RB_C_ABORTED],
        .full = sum[RB_C_FULL],
        .empty = sum[RB_C_EMPTY],
        .parks = sum[RB_C_PARKS],
        .parked_ns = sum[RB_C_PARKED_NS],
        .wakes = sum[RB_C_WAKES],
        .recovered = sum[RB_C_RECOVERED],
        .turns_taken = sum[RB_C_TURNS_TAKEN],
        .created_ns = rb->hdr->created_ns, /* immutable after creation */
    };
    /* As rb_info_sized: exactly the caller's size (docs/abi.md). */
    size_t n = size < sizeof st ? size : sizeof st;
    memcpy(out, &st, n);
    memset((char *)out + n, 0, size - n);
    return RB_OK;
}
