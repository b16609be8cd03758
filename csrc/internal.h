/*
 * internal.h - the file layout and the process-local handle, shared by the
 * library's source files. Not installed. docs/format.md documents the same
 * layout byte by byte; the static asserts below keep the two in step.
 */
#ifndef RB_INTERNAL_H
#define RB_INTERNAL_H

#include "ringbuf.h"

#include <stdatomic.h>
#include <pthread.h>
#include <stdint.h>

#if ATOMIC_LLONG_LOCK_FREE != 2 || ATOMIC_INT_LOCK_FREE != 2
#error "ringbuf needs lock-free 32- and 64-bit atomics (they live in a shared file)"
#endif

/* Tells the CPU we are spinning (saves power, frees the sibling thread). */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define RB_MAGIC "RINGBUF\0"
#define RB_MAGIC_LEN 8
#define RB_FILE_ID_LEN 16 /* the file's random identity (rb_info's file_id) */
#define RB_STATE_READY 0x59444552u /* "REDY": header complete */
#define RB_LINE 128                /* two cache lines: adjacent-line prefetch */

/* Slots: every open handle owns one slot of the table that follows the
 * header page, and holds an OFD lock on the slot's first byte for as long as
 * it is open. The kernel drops the lock when the last descriptor of the
 * handle closes, including when its process dies: that is how others tell a
 * slow process from a dead one (docs/design.md, "Crash recovery"). */
#define RB_SLOTS 512u
#define RB_SLOT_SIZE 512u
#define RB_SLOT_INTENTS 5u       /* reservations in flight at once per handle */
#define RB_PAGE0 4096u           /* the header page */
#define RB_GROUPS_OFF (RB_PAGE0 + RB_SLOTS * RB_SLOT_SIZE) /* the group table */
#define RB_GROUP_SIZE 256u
#define RB_HEADER_SIZE (RB_GROUPS_OFF + RB_GROUPS_MAX * RB_GROUP_SIZE) /* bytes before the data region */

/* A record: an 8-byte header word, then the payload, padded to 8 bytes.
 * Header word: bits 0-31 payload length, bits 32-39 flags, bits 40-63 the
 * writer's id (slot | generation << 9). A zero word means "nothing here
 * yet". A DISCARD record may have length 0 (an 8-byte gap left by a killed
 * producer, docs/format.md). */
#define RB_REC_HDR 8u
#define RB_REC_BUSY 0x01u    /* reserved, payload being written */
#define RB_REC_DISCARD 0x02u /* never delivered; skipped by consumers */
/* The header word's fields: each is defined here once, and read and written
 * only through the rb_rec_* helpers below. */
#define RB_REC_LEN_MASK 0xFFFFFFFFu
#define RB_REC_FLAGS_SHIFT 32u
#define RB_REC_FLAGS_MASK 0xFFu
#define RB_REC_WRITER_SHIFT 40u
#define RB_WRITER_MASK 0xFFFFFFu
/* An id: slot index in the low RB_SLOT_BITS, generation above. */
#define RB_SLOT_BITS 9u
#define RB_GEN_MASK 0x7FFFu /* 15 bits: never 0 in an id */

static inline uint64_t rb_rec_make(uint64_t len, uint32_t flags, uint32_t writer)
{
    return len | ((uint64_t)flags << RB_REC_FLAGS_SHIFT) |
           ((uint64_t)(writer & RB_WRITER_MASK) << RB_REC_WRITER_SHIFT);
}
static inline uint64_t rb_rec_len(uint64_t word) { return word & RB_REC_LEN_MASK; }
static inline uint32_t rb_rec_flags(uint64_t word)
{
    return (uint32_t)(word >> RB_REC_FLAGS_SHIFT) & RB_REC_FLAGS_MASK;
}
static inline uint32_t rb_rec_writer(uint64_t word) { return (uint32_t)(word >> RB_REC_WRITER_SHIFT); }
/* Whether a header word can be a record of a ring with this max_message:
 * known flags, never BUSY and DISCARD together (abort and recovery replace
 * BUSY by DISCARD), a length up to max_message, 0 only when DISCARD. */
static inline int rb_rec_valid(uint64_t word, uint64_t max_message)
{
    uint32_t flags = rb_rec_flags(word);
    uint64_t len = rb_rec_len(word);
    return (flags & ~(RB_REC_BUSY | RB_REC_DISCARD)) == 0 && flags != (RB_REC_BUSY | RB_REC_DISCARD) &&
           len <= max_message && (len != 0 || flags == RB_REC_DISCARD);
}
/* Bytes a record of len payload bytes occupies in the ring. */
static inline uint64_t rb_rec_size(uint64_t len) { return (RB_REC_HDR + len + 7u) & ~(uint64_t)7u; }
/* An id (writer or read-turn holder): slot index and that slot's generation. */
static inline uint32_t rb_id_slot(uint32_t id) { return id & (RB_SLOTS - 1); }
static inline uint32_t rb_id_gen(uint32_t id) { return (id >> RB_SLOT_BITS) & RB_GEN_MASK; }
static inline uint32_t rb_id_make(uint32_t slot, uint32_t gen) { return slot | gen << RB_SLOT_BITS; }
/* The writer field of a record made by id (rb_rec_make stores it so). */
static inline uint32_t rb_id_writer(uint32_t id) { return id & RB_WRITER_MASK; }

/* The header page at offset 0 of the file. Fixed-width fields, little-endian
 * (the host's: a ring is shared on one host). */
struct rb_header {
    /* Line 0: immutable after creation. */
    char magic[RB_MAGIC_LEN];      /*   0 */
    uint32_t version;              /*   8 */
    uint32_t header_size;          /*  12 */
    uint64_t capacity;             /*  16 */
    uint64_t max_message;          /*  24 */
    uint32_t state;                /*  32 */
    uint32_t flags;                /*  36 */
    uint64_t created_ns;           /*  40 */
    uint32_t slot_count;           /*  48: RB_SLOTS */
    uint32_t slot_size;            /*  52: RB_SLOT_SIZE */
    unsigned char file_id[RB_FILE_ID_LEN]; /* 56: random, written at creation */
    unsigned char pad0[RB_LINE - 56 - RB_FILE_ID_LEN];
    /* Producers' line: next free byte position, advanced by CAS. */
    _Atomic uint64_t tail;         /* 128 */
    unsigned char pad1[RB_LINE - 8];
    /* The reclaim line: bytes below head are free for writers (zeroed),
     * moved by the holder of the reclaim lock (groups.c, rb_reclaim). */
    _Atomic uint64_t head;         /* 256 */
    _Atomic uint32_t reclaim_turn; /* 264: the reclaim lock: 0 = free, else holder's id */
    _Atomic uint32_t turn_seq;     /* 268: futex word, bumped when a group's read turn is given back */
    _Atomic uint32_t turn_waiters; /* 272: consumers parked on turn_seq (any group) */
    uint32_t pad2a;                /* 276 */
    /* tail when a group was last made at "latest": below it, records
     * every group head has passed may still be unfinished (reserved
     * before the group was made, never read by it), so a reclaim walks
     * them (groups.c, rb_reclaim). Only grows; under the reclaim lock. */
    _Atomic uint64_t join_tail;    /* 280 */
    /* The end of the range the reclaim lock's holder is zeroing, stored
     * before it zeroes; whoever takes a dead holder's lock over zeroes
     * [head, release_end) again and stores head first (finish_release). */
    _Atomic uint64_t release_end;  /* 288 */
    unsigned char pad2[RB_LINE - 40];
    /* Consumers waiting for data (futex word, bumped by producers). */
    _Atomic uint32_t data_seq;     /* 384 */
    _Atomic uint32_t data_waiters; /* 388 */
    /* Set (never cleared) by a process that waits without membarrier():
     * from then on wakers use full fences (wait.c, rb_waker_fence). */
    _Atomic uint32_t heavy_waiters;/* 392 */
    unsigned char pad3[RB_LINE - 12];
    /* Producers waiting for space (futex word, bumped by consumers). */
    _Atomic uint32_t space_seq;    /* 512 */
    _Atomic uint32_t space_waiters;/* 516 */
    unsigned char pad4[RB_LINE - 8];
    /* Slots ever taken (a high-water mark: scans stop there). */
    _Atomic uint32_t slots_used;   /* 640 */
    /* Group table entries ever used (a high-water mark, as slots_used). */
    _Atomic uint32_t groups_used;  /* 644 */
    unsigned char reserved[RB_PAGE0 - 5 * RB_LINE - 8];
};

/* Header flags (offset 36): the rb_create flags that describe the ring. */
#define RB_HDR_FLAGS (RB_OVERWRITE | RB_NO_DEFAULT_GROUP)

/* A consumer group (RB_GROUP_SIZE bytes) at RB_GROUPS_OFF + index *
 * RB_GROUP_SIZE. Entry 0 is the default group's (kind DEFAULT) while it
 * exists; once it is removed, or in a ring made without it, any group may
 * take entry 0. gen is odd while the
 * group exists: creating it adds 1, removing it adds 1 (both under the
 * reclaim lock and the group's turn), so a member that remembers the odd
 * value it joined sees any removal (docs/design.md, "Consumer groups"). */
struct rb_group {
    _Atomic uint64_t head;         /*   0: next record the group reads */
    _Atomic uint32_t turn;         /*   8: the group's read turn: 0 = free, else holder's id */
    _Atomic uint32_t gen;          /*  12: odd: the group exists */
    _Atomic uint64_t lost_pending; /*  16: overwrite rings: lost, not yet reported to a member */
    _Atomic uint64_t lost;         /*  24: overwrite rings: lost since the group was made */
    _Atomic uint32_t owner;        /*  32: ephemeral: the owning handle's id, else 0 */
    _Atomic uint32_t kind;         /*  36: RB_GROUP_KIND_* */
    _Atomic uint64_t created_ns;   /*  40 */
    unsigned char pad0[RB_LINE - 48];
    char name[RB_GROUP_NAME_MAX + 1]; /* 128: NUL-terminated, "" when unnamed */
    unsigned char pad1[RB_GROUP_SIZE - RB_LINE - RB_GROUP_NAME_MAX - 1];
};

/* A reservation in flight: [start, end) is being reserved or was just
 * reserved, and its header words are not all written yet. end == 0: free. */
struct rb_intent {
    _Atomic uint64_t start;
    _Atomic uint64_t end;
};

/* A handle's counters (docs/format.md, "Counters"): how many of each event
 * its calls saw. Monotonic: never reset, also when a new owner takes the
 * slot, so that the sum over all slots (rb_stats) is the ring's total
 * since its creation, across handles that closed or died. */
enum rb_counter {
    RB_C_WRITTEN,        /* messages committed (rb_write*, rb_commit)    */
    RB_C_WRITTEN_BYTES,  /* their payload bytes                          */
    RB_C_READ,           /* messages consumed (rb_read*, rb_release)      */
    RB_C_READ_BYTES,     /* their payload bytes                          */
    RB_C_ABORTED,        /* reservations aborted (rb_abort)               */
    RB_C_FULL,           /* non-blocking writes that found no room (RB_EFULL) */
    RB_C_EMPTY,          /* non-blocking reads that found nothing (RB_EEMPTY) */
    RB_C_PARKS,          /* waits that slept (futex waits)               */
    RB_C_PARKED_NS,      /* nanoseconds spent asleep in them             */
    RB_C_WAKES,          /* wake-up calls made for others (futex wakes)   */
    RB_C_RECOVERED,      /* dead writers' records or gaps discarded     */
    RB_C_TURNS_TAKEN,    /* read turns taken over from dead consumers     */
    RB_COUNTERS = 16     /* room for more (docs/format.md)               */
};

/* One handle's slot (RB_SLOT_SIZE bytes), at RB_PAGE0 + index * RB_SLOT_SIZE. */
struct rb_slot {
    _Atomic uint32_t gen;          /*  0: generation of the current (or last) owner, 1..RB_GEN_MASK */
    _Atomic uint32_t pid;          /*  4: owner's pid, for diagnostics only */
    _Atomic uint32_t parked[3];    /*  8: this slot's share of the data/space/turn waiter counts */
    _Atomic uint32_t group;        /* 20: the owner's group: index + 1, 0 none (rb_groups counts members) */
    _Atomic uint32_t group_gen;    /* 24: that group's gen when the owner joined */
    unsigned char pad0[20];        /* 28 */
    struct rb_intent intent[RB_SLOT_INTENTS]; /* 48 */
    /* 128: the counters written with relaxed loads and stores, by one
     * writer per word at a time (rb_count2_own: the owner of intent entry
     * 0, the read-turn holder, the counting thread); 256: those added to
     * atomically by any other thread (rb_count2_shared). */
    _Atomic uint64_t count_own[RB_COUNTERS];
    _Atomic uint64_t count_shared[RB_COUNTERS];
    unsigned char pad1[RB_SLOT_SIZE - 384];
};

_Static_assert(sizeof(struct rb_header) == RB_PAGE0, "header is one page");
_Static_assert(sizeof(struct rb_slot) == RB_SLOT_SIZE, "slot size");
_Static_assert(sizeof(struct rb_group) == RB_GROUP_SIZE, "group size");
_Static_assert(offsetof(struct rb_group, name) == 128, "group name offset");
_Static_assert(offsetof(struct rb_slot, group) == 20, "slot group offset");
_Static_assert(offsetof(struct rb_header, groups_used) == 644, "groups_used offset");
_Static_assert(offsetof(struct rb_header, join_tail) == 280, "join_tail offset");
_Static_assert(offsetof(struct rb_header, release_end) == 288, "release_end offset");
_Static_assert((RB_SLOTS & (RB_SLOTS - 1)) == 0 && RB_SLOTS == 1u << RB_SLOT_BITS, "slot bits");
_Static_assert(RB_REC_FLAGS_SHIFT == 32 && RB_REC_WRITER_SHIFT == RB_REC_FLAGS_SHIFT + 8 &&
                   RB_WRITER_MASK == (1u << (64 - RB_REC_WRITER_SHIFT)) - 1,
               "header word: length 0-31, flags 32-39, writer 40-63");
_Static_assert(RB_WRITER_MASK == (1u << RB_SLOT_BITS) * (RB_GEN_MASK + 1) - 1, "an id fills the writer field");
_Static_assert(RB_HEADER_SIZE % 4096 == 0, "data region is page-aligned");
_Static_assert(offsetof(struct rb_header, slot_count) == 48, "slot_count offset");
_Static_assert(offsetof(struct rb_header, file_id) == 56, "file_id offset");
_Static_assert(sizeof(((struct rb_info *)0)->file_id) == RB_FILE_ID_LEN, "rb_info's file_id");
_Static_assert(offsetof(struct rb_header, tail) == 128, "tail offset");
_Static_assert(offsetof(struct rb_header, head) == 256, "head offset");
_Static_assert(offsetof(struct rb_header, reclaim_turn) == 264, "reclaim_turn offset");
_Static_assert(offsetof(struct rb_header, turn_seq) == 268, "turn_seq offset");
_Static_assert(offsetof(struct rb_header, turn_waiters) == 272, "turn_waiters offset");
_Static_assert(offsetof(struct rb_header, data_seq) == 384, "data_seq offset");
_Static_assert(offsetof(struct rb_header, heavy_waiters) == 392, "heavy_waiters offset");
_Static_assert(offsetof(struct rb_header, space_seq) == 512, "space_seq offset");
_Static_assert(offsetof(struct rb_header, slots_used) == 640, "slots_used offset");
_Static_assert(offsetof(struct rb_slot, parked) == 8, "parked offset");
_Static_assert(offsetof(struct rb_slot, intent) == 48, "intent offset");
_Static_assert(offsetof(struct rb_slot, count_own) == 128, "count_own offset");
_Static_assert(offsetof(struct rb_slot, count_shared) == 256, "count_shared offset");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 has no hidden lock");

/* Default time a record (or the read turn) may stay stuck before a consumer
 * checks whether its owner is alive (rb_set_stall_timeout). */
#define RB_STALL_DEFAULT_NS 100000000

/* Watching a lock word (a group's read turn, the reclaim lock) for a holder
 * that keeps it past the stall timeout (recover.c). Relaxed atomics: a
 * race only shifts a timing. */
struct rb_lockstall {
    _Atomic uint32_t id;
    _Atomic int64_t since;
};

/* Watching the record at one position for a writer that never finishes it
 * (recover.c, rb_recover_head): the turn holder's (head_stall) and the
 * reclaim lock holder's (reclaim_rec_stall) are apart, plain: each is used
 * only by the holder of its lock. */
struct rb_recstall {
    uint64_t pos;
    int64_t since;
};

/* The process-local handle. */
struct rb_ring {
    struct rb_header *hdr;   /* start of the mapping                    */
    struct rb_slot *slots;   /* the slot table (in the mapping)         */
    unsigned char *data;     /* data region, mapped twice back to back */
    size_t map_len;
    uint64_t capacity;
    uint64_t mask;           /* capacity - 1                          */
    uint64_t max_message;
    int overwrite;           /* the ring was made with RB_OVERWRITE      */
    /* Our consumer group: its entry (NULL: none, reads return
     * RB_ENOGROUP) and the odd gen it had when we joined (groups.c). */
    struct rb_group *grp;
    uint32_t grp_gen;
    int grp_ephemeral;       /* the group is ours: removed by rb_close   */
    /* Overwrite rings: messages our group lost that reads reported
     * (RB_ELOST) and rb_take_lost has not returned yet. */
    _Atomic uint64_t lost;
    uint32_t id;             /* writer id / turn holder id: slot | gen << 9 */
    uint32_t slot;           /* our slot index                        */
    struct rb_slot *me;      /* our slot                              */
    int fd;                  /* holds our slot's OFD lock until rb_close */
    /* Producers' cached copy of head, shared by the threads using this
     * handle: refreshed only when it says "full". */
    _Atomic uint64_t head_cache;
    /* The thread (rb_self) that owns intent entry 0 of our slot: the
     * first that writes through this handle (0: none yet; UINTPTR_MAX:
     * none ever, a fork child sharing its parent's slot). It claims that
     * entry with plain stores; other threads claim entries 1.. by CAS
     * (ring.c, claim_intent). */
    _Atomic uintptr_t intent_owner;
    /* Consumers' cached copy of tail (a lower bound), used only by the
     * thread holding the read turn, to check that a record ends below it. */
    uint64_t tail_cache;
    /* Set by rb_shutdown: new calls return RB_ECLOSED, waits end. */
    _Atomic uint32_t closing;
    /* The records this handle's rb_peek or rb_peek_many returned: where
     * they end (peek_end: DISCARD records between its messages included;
     * rb_release moves the group head there), how many messages and
     * payload bytes it holds (for the counters). Only the turn holder
     * touches them (peeking is atomic so rb_release can test it). */
    _Atomic uint32_t peeking;
    uint64_t peek_end, peek_count, peek_bytes;
    /* Crash recovery (recover.c). stall_ns: rb_set_stall_timeout. The head
     * record stuck at head_stall_pos since head_stall_since is tracked by
     * the turn holder only; the turn holder stuck since turn_stall.since by
     * any thread; likewise the reclaim lock and the record stuck where the
     * reclaim lock's holder walks. */
    _Atomic int64_t stall_ns;
    struct rb_recstall head_stall;
    struct rb_lockstall turn_stall;
    struct rb_lockstall reclaim_stall;
    struct rb_recstall reclaim_rec_stall;
    /* When this handle last looked for dead ephemeral groups (groups.c). */
    _Atomic int64_t eph_check_since;
    /* fork(): the child gets its own slot at its first call (slots.c).
     * reattaching: the epoch being re-attached (0: none). */
    _Atomic uint32_t fork_epoch;
    _Atomic uint32_t reattaching;
    /* When this handle set heavy_waiters (wait.c). */
    _Atomic int64_t heavy_since;
    /* Event descriptors (event.c): the readable and writable notifiers
     * (NULL until rb_event_fd asks for one), the epoll descriptor over both
     * (-1: none) and the fork epoch it was made in, and (in a fork child)
     * the parent's notifiers, kept until rb_close. */
    struct rb_notifier *_Atomic notify[2];
    int notify_epfd;
    uint32_t notify_epoch;
    struct rb_notifier *notify_stale;
    /* Wake-ups in a row that found nobody parked although waiters were
     * counted (wait.c). Relaxed: a process-local heuristic. */
    _Atomic uint32_t empty_wakes;
    /* The thread (rb_self) that writes our slot's count_own words other
     * than written* and read* (0: none yet; rb_count2): docs/design.md,
     * "Counters". */
    _Atomic uintptr_t count_owner;
};

/* This thread's identity, unique among the live threads of the process (a
 * value may be reused by a thread started after one that ended): the
 * thread pointer, with one instruction (pthread_self is a function call in
 * glibc). On x86-64 the TCB's self-pointer at %fs:0 (what pthread_self
 * returns, glibc and musl); on aarch64 TPIDR_EL0, at a fixed offset from
 * it. Inline assembly rather than __builtin_thread_pointer, which x86-64
 * has only from GCC 11 and clang 14. Elsewhere, pthread_self. */
static inline uintptr_t rb_self(void)
{
    uintptr_t tp;
#if defined(__GNUC__) && defined(__x86_64__)
    __asm__("movq %%fs:0, %0" : "=r"(tp));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("mrs %0, tpidr_el0" : "=r"(tp));
#else
    tp = (uintptr_t)pthread_self();
#endif
    return tp;
}

/* Adds n to counter c of our slot, and m to counter c + 1 (a count and its
 * bytes sit side by side), with relaxed loads and stores: for a caller
 * that is the only writer of those words of count_own at this moment. No
 * locked instruction on the hot paths, which would first wait for our
 * earlier stores to drain (as claim_intent avoids, ring.c). Relaxed: a
 * counter orders nothing, and a reader (rb_stats) only needs each value
 * to be one that was stored. Who may call it (docs/design.md, "Counters"):
 * for written and written_bytes, the thread owning intent entry 0
 * (rb->intent_owner: writes through entry 0 are its alone); for read and
 * read_bytes, the thread holding the read turn (which serializes every
 * reader of the ring); for the other counters, the handle's counting
 * thread (rb_count2). (A signal handler that counts on such a thread,
 * between its load and its store, can lose its count.) */
static inline void rb_count2_own(rb_ring *rb, enum rb_counter c, uint64_t n, uint64_t m)
{
    _Atomic uint64_t *p = &rb->me->count_own[c];
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n, memory_order_relaxed);
    if (m != 0)
        atomic_store_explicit(p + 1, atomic_load_explicit(p + 1, memory_order_relaxed) + m, memory_order_relaxed);
}

/* The same with relaxed atomic adds to count_shared: for any thread. */
static inline void rb_count2_shared(rb_ring *rb, enum rb_counter c, uint64_t n, uint64_t m)
{
    atomic_fetch_add_explicit(&rb->me->count_shared[c], n, memory_order_relaxed);
    if (m != 0)
        atomic_fetch_add_explicit(&rb->me->count_shared[c + 1], m, memory_order_relaxed);
}

/* Adds n and m to counters c and c + 1 (not written, written_bytes, read,
 * read_bytes: see rb_count2_own): the handle's counting thread, the first
 * that counts (count_owner), adds to count_own; its other threads to
 * count_shared. */
static inline void rb_count2(rb_ring *rb, enum rb_counter c, uint64_t n, uint64_t m)
{
    uintptr_t self = rb_self();
    uintptr_t owner = atomic_load_explicit(&rb->count_owner, memory_order_relaxed);
    if (owner == self || (owner == 0 && atomic_compare_exchange_strong_explicit(&rb->count_owner, &owner, self,
                                                                               memory_order_relaxed,
                                                                               memory_order_relaxed)))
        rb_count2_own(rb, c, n, m);
    else
        rb_count2_shared(rb, c, n, m);
}
/* Adds n to counter c of our slot (rb_count2). */
static inline void rb_count(rb_ring *rb, enum rb_counter c, uint64_t n) { rb_count2(rb, c, n, 0); }

/* The first position a reader may not look at: head + capacity. Bytes a
 * group has read are freed only when a writer needs them (rb_reclaim), so
 * with tail == head + capacity a group that has read everything waits at
 * tail, where the word is the oldest record's (read, not freed yet), not
 * zero. Acquire: the zeroing of everything below head happens-before our
 * look at the words above it (invariant 2, docs/design.md). Loaded before
 * the words it guards. */
static inline uint64_t rb_read_limit(const rb_ring *rb)
{
    return atomic_load_explicit(&rb->hdr->head, memory_order_acquire) + rb->capacity;
}

/* The header word of the record at position pos. Every atomic access to a
 * header word goes through here: the index is pos & mask, in the first
 * mapping (a header word never crosses the end of the ring). */
static inline _Atomic uint64_t *rb_rec_word(const rb_ring *rb, uint64_t pos)
{
    return (_Atomic uint64_t *)(void *)(rb->data + (pos & rb->mask));
}
/* The payload of the record at position pos: contiguous even where it
 * crosses the end of the ring (the data region is mapped twice). */
static inline unsigned char *rb_rec_payload(const rb_ring *rb, uint64_t pos)
{
    return rb->data + (pos & rb->mask) + RB_REC_HDR;
}

/* Maps the ring in fd after validating its header; fills rb. */
int rb_map_fd(int fd, struct rb_ring *rb);

/* ---- slots and liveness (slots.c) --------------------------------------- */

/* Takes a free slot for rb (whose fd is open, ring mapped): RB_OK, or
 * RB_ESYS (errno EUSERS when all RB_SLOTS are taken). */
int rb_slot_attach(rb_ring *rb);
/* 1 if the handle owning slot holds its lock (or slot is ours), else 0. */
int rb_slot_alive(rb_ring *rb, uint32_t slot);
/* 1 if id (writer or turn holder) belongs to a live handle, else 0. */
int rb_id_alive(rb_ring *rb, uint32_t id);
/* Number of slots to scan: the high-water mark, clamped. */
uint32_t rb_slots_used(const rb_ring *rb);

/* rb_shutdown has been called: the entry check of every call (ring.c,
 * event.c). */
static inline int is_closing_relaxed(const rb_ring *rb)
{
    /* Relaxed: a call racing rb_shutdown may run to completion either way
     * (the mapping stays valid until rb_close), and nothing is read through
     * the flag; waits re-check it themselves (wait.c, is_closing_acquire). */
    return atomic_load_explicit(&rb->closing, memory_order_relaxed) != 0;
}

/* Incremented in a fork child (pthread_atfork); a handle whose fork_epoch
 * differs was inherited and takes a slot of its own first. */
extern _Atomic uint32_t rb_fork_epoch;
int rb_after_fork(rb_ring *rb);
static inline int rb_check_fork(rb_ring *rb)
{
    /* Relaxed on the global: written by this process only, by the atfork
     * handler before any other thread exists in the child. Acquire on the
     * handle's epoch: pairs with rb_after_fork's release store, so a thread
     * that sees the re-attached epoch also sees the new id, slot and
     * descriptor. */
    if (__builtin_expect(atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed) !=
                             atomic_load_explicit(&rb->fork_epoch, memory_order_acquire),
                         0))
        return rb_after_fork(rb);
    return RB_OK;
}

/* ---- crash recovery (recover.c) ---------------------------------------- */

/* The lock word is held by id: if it has been held for the stall timeout
 * (as st has watched) and id's handle is dead, CASes it from id to ours and
 * returns 1 (we hold it; the caller finishes what the dead holder left);
 * else 0. */
int rb_take_dead_lock(rb_ring *rb, _Atomic uint32_t *word, uint32_t id, struct rb_lockstall *st);
/* 1 if id has held the lock watched by st for the stall timeout, as far as
 * this handle has watched (no syscall: a hint for waiters to look closer). */
int rb_lock_stuck(rb_ring *rb, uint32_t id, struct rb_lockstall *st);
/* True if the group's read turn holder id has kept it for the stall
 * timeout and is dead (a read would take the turn over: the stall clock is
 * left as it is, so that the read finds the turn stuck too). For a live
 * holder the check is made again only a timeout later. Takes nothing. */
int rb_turn_dead(rb_ring *rb, uint32_t id);
/* We hold the lock that st belongs to and the record at h is not ready. If
 * it has been stuck for the stall timeout and its writer is dead, marks it
 * (or the gap it left) DISCARD and returns 1: look again. 0: nothing to do
 * yet. RB_ECORRUPT: the ring cannot be in this state. */
int rb_recover_head(rb_ring *rb, uint64_t h, struct rb_recstall *st);
/* Whether the record at h has been stuck for the stall timeout, as st has
 * watched (we hold the lock st belongs to). */
int rb_rec_stuck(rb_ring *rb, uint64_t h, int64_t now, struct rb_recstall *st);
/* rb_recover_head for a reader of an overwrite ring, at its group head h
 * (we hold the group's turn): under the reclaim lock, taken only once the
 * record has been stuck for the stall timeout; 0 if the lock is busy. */
int rb_recover_locked(rb_ring *rb, uint64_t h);

/* ---- consumer groups and reclaiming (groups.c) --------------------------- */

/* Frees space for writers: takes the reclaim lock (waiting for a holder
 * that is freeing space, taking over a dead one) and moves head up to what
 * every group has read (lossless; with no group, every finished record);
 * in an overwrite ring, then on over the oldest records until need bytes
 * are free, overrunning the groups that had not read them. Returns 1 if
 * head moved (or another holder moved it meanwhile), 0 if nothing could be
 * freed now. */
int rb_reclaim(rb_ring *rb, uint64_t need);
/* What rb_reclaim could free now without overrunning anyone, as a hint for
 * waiting writers and rb_info: the lowest head among the groups (tail with
 * no group). No lock, no syscall. */
uint64_t rb_reclaimable(rb_ring *rb, int *any);
/* An overwrite ring's group head while a writer overruns the group: the
 * new head with this bit set, until the writer has counted the loss
 * (overrun_groups); readers wait for it to clear (rb_group_head). */
#define RB_HEAD_OVERRUN 1u
/* Our group's head, once no writer is in the middle of overrunning it
 * (overwrite rings: waits up to about 20 us, taking over a dead writer's
 * reclaim lock after the stall timeout; RB_EEMPTY if the writer is slow).
 * Acquire. We hold the group's turn. */
int rb_group_head(rb_ring *rb, uint64_t *head);
/* Whether an ephemeral group exists (a hint, no lock). */
int rb_has_ephemeral(rb_ring *rb);
void rb_reclaim_unlock(rb_ring *rb);
/* The reclaim lock within about 20 us: 1 taken, 0 not. */
int rb_reclaim_trylock(rb_ring *rb);
/* Whether rb_open_group's name and flags make sense. */
int rb_group_args_ok(const char *name, unsigned flags);
/* Joins the handle to its group at open (rb_open_group). */
int rb_group_join(rb_ring *rb, const char *name, unsigned flags);
/* Records the handle's group in its slot (for rb_groups' member counts). */
void rb_group_mark_slot(rb_ring *rb);
/* rb_shutdown, rb_close: removes the handle's ephemeral group, waiting up
 * to wait_ns for a read of its own in progress. */
void rb_group_leave(rb_ring *rb, int64_t wait_ns);
static inline struct rb_group *rb_group_at(const rb_ring *rb, uint32_t i)
{
    return (struct rb_group *)(void *)((unsigned char *)rb->hdr + RB_GROUPS_OFF + (uint64_t)i * RB_GROUP_SIZE);
}
/* Entries to scan: the high-water mark, clamped. */
uint32_t rb_groups_used(const rb_ring *rb);

/* ---- test-only kill points ---------------------------------------------- */

/* Built with -DRB_KILLPOINTS (tests/c only), RB_KILLPOINT(name) makes the
 * process send itself sig (SIGKILL, SIGSTOP) at the nth pass through a
 * named step of the protocol, as armed by rb_test_killpoint(); otherwise it
 * compiles to nothing. */
#ifdef RB_KILLPOINTS
RB_API void rb_test_killpoint(const char *name, unsigned nth, int sig);
/* Makes this process's waits behave as if membarrier were unavailable. */
extern int rb_test_no_membarrier;
void rb_killpoint(const char *name);
#define RB_KILLPOINT(name) rb_killpoint(name)
#else
#define RB_KILLPOINT(name) ((void)0)
#endif


/* ---- waiting (wait.c) -------------------------------------------------- */

/* A place to park: a futex word and a count of those parked on it. */
struct rb_waitq {
    _Atomic uint32_t *word;
    _Atomic uint32_t *waiters;
    unsigned index; /* which of our slot's parked[] counters */
};

/* The three queues: consumers waiting for data, producers for space,
 * consumers for the read turn (index = their place in rb_slot.parked). */
static inline struct rb_waitq rb_data_q(rb_ring *rb)
{
    return (struct rb_waitq){&rb->hdr->data_seq, &rb->hdr->data_waiters, 0};
}
static inline struct rb_waitq rb_space_q(rb_ring *rb)
{
    return (struct rb_waitq){&rb->hdr->space_seq, &rb->hdr->space_waiters, 1};
}
static inline struct rb_waitq rb_turn_q(rb_ring *rb)
{
    return (struct rb_waitq){&rb->hdr->turn_seq, &rb->hdr->turn_waiters, 2};
}

#define RB_FOREVER INT64_MAX

/* Monotonic clock in ns, and the deadline timeout_ns from now (< 0: never). */
int64_t rb_now_ns(void);
int64_t rb_deadline(int64_t timeout_ns);

/* Spins (about 50 us, less if the deadline comes first) until ready(rb, arg)
 * is true (RB_OK), the handle is shut down (RB_ECLOSED), or the time is up
 * (RB_ETIMEDOUT). Never sleeps, so no waker needs to know about it. */
int rb_spin(rb_ring *rb, int (*ready)(rb_ring *, uint64_t), uint64_t arg, int64_t deadline);

/* rb_spin, then parks until ready(rb, arg) is true (RB_OK: retry the
 * operation), the deadline passes (RB_ETIMEDOUT), the handle is shut down
 * (RB_ECLOSED) or a signal handler interrupts the sleep (RB_EINTR). */
int rb_wait(rb_ring *rb, const struct rb_waitq *q, int (*ready)(rb_ring *, uint64_t), uint64_t arg,
            int64_t deadline);

/* Wakes whoever is parked on q. The caller has made its state change
 * visible and called rb_waker_fence after it (see docs/design.md). When
 * counted waiters keep not being there (killed while parked), takes their
 * counts back (rb_reap_parked), so that wakers stop making needless
 * futex calls. */
void rb_wake(rb_ring *rb, const struct rb_waitq *q);

/* Takes back the waiter counts that dead handles left on q's queue (slots
 * whose lock is free): slots.c. */
void rb_reap_parked(rb_ring *rb, const struct rb_waitq *q);

/* The waker's half of the wake-up handshake, between its state change and
 * its load of the waiter count. A full fence would cost every write and
 * read, while waiters are rare (docs/design.md, "Asymmetric fences"), so
 * when every waiter can make the waker's CPU run one instead
 * (membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), issued by the waiter
 * before it parks), the waker only stops the compiler: an
 * asymmetric fence, as in liburcu and folly. rb_light_epoch: this process
 * registered for that (rb_fork_epoch + 1 when it did, in its current fork
 * generation: a conservative check, registration survives fork). */
extern _Atomic uint32_t rb_light_epoch;
static inline void rb_waker_fence(const rb_ring *rb)
{
    /* Relaxed: see "Waiting" in docs/design.md: a waiter that cannot use
     * membarrier sets heavy_waiters before its first park and keeps its
     * parks short until wakers must have seen it. */
    if (atomic_load_explicit(&rb_light_epoch, memory_order_relaxed) ==
            atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed) + 1 &&
        atomic_load_explicit(&rb->hdr->heavy_waiters, memory_order_relaxed) == 0)
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
}
/* Registers this process for membarrier (once per fork generation). */
void rb_membarrier_register(void);
/* Wakes q's waiters even if none is counted (shutdown). Returns how many
 * the kernel woke. */
long rb_wake_always(const struct rb_waitq *q);

/* ---- event descriptors (event.c) ---------------------------------------- */

/* Waits until a read may make progress, as the blocking reads do (ring.c):
 * RB_OK, RB_ETIMEDOUT, RB_ECLOSED. */
int rb_await_data(rb_ring *rb, int64_t deadline);
/* Without waiting: 1 if a read can make progress, 0 if the ring is empty,
 * -1 if another consumer holds the read turn (*holder: its id). ring.c. */
int rb_probe_data(rb_ring *rb, uint32_t *holder);
/* Waits until the read turn is free or its holder has kept it for the
 * stall timeout, as a blocking read waits for the turn (ring.c). */
int rb_await_turn(rb_ring *rb, int64_t deadline);
/* True when need bytes are free (a hint: the write re-checks); the
 * readiness test of the blocking writes (ring.c). */
int rb_space_ready(rb_ring *rb, uint64_t need);

/* A non-blocking call of rb found the ring empty (RB_EV_READABLE) or too
 * full for a record of need bytes (RB_EV_WRITABLE): if an event
 * descriptor of that kind exists, it stops polling ready until that
 * changes. Costs a relaxed load when there is none. */
void rb_event_rearm_slow(rb_ring *rb, unsigned kind, uint64_t need);
static inline void rb_event_rearm(rb_ring *rb, unsigned kind, uint64_t need)
{
    /* Relaxed: a hint; the slow path loads it again with acquire. */
    if (atomic_load_explicit(&rb->notify[kind == RB_EV_WRITABLE], memory_order_relaxed) != NULL)
        rb_event_rearm_slow(rb, kind, need);
}

/* Stops the handle's notifier threads and closes its event descriptors
 * (rb_close). */
void rb_event_close(rb_ring *rb);

#endif /* RB_INTERNAL_H */
