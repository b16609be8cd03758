/*
 * internal.h - the file layout and the process-local handle, shared by the
 * library's source files. Not installed. docs/format.md documents the same
 * layout byte by byte; the static asserts below keep the two in step.
 */
#ifndef RB_INTERNAL_H
#define RB_INTERNAL_H

#include "ringbuf.h"

#include <stdatomic.h>
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
#define RB_STATE_READY 0x59444552u /* "REDY": header complete */
#define RB_HEADER_SIZE 4096u       /* bytes before the data region */
#define RB_LINE 128                /* two cache lines: adjacent-line prefetch */

/* A record: an 8-byte header word, then the payload, padded to 8 bytes.
 * Header word: bits 0-31 payload length, bits 32-39 flags, bits 40-63 the
 * writer's id (its pid; 0 = unknown). A zero word means "nothing here yet". */
#define RB_REC_HDR 8u
#define RB_REC_BUSY 0x01u    /* reserved, payload being written */
#define RB_REC_DISCARD 0x02u /* never delivered; skipped by consumers */
#define RB_REC_FLAGS_KNOWN (RB_REC_BUSY | RB_REC_DISCARD)
#define RB_WRITER_MASK 0xFFFFFFu

static inline uint64_t rb_rec_make(uint64_t len, uint32_t flags, uint32_t writer)
{
    return len | ((uint64_t)flags << 32) | ((uint64_t)(writer & RB_WRITER_MASK) << 40);
}
static inline uint64_t rb_rec_len(uint64_t word) { return word & 0xFFFFFFFFu; }
static inline uint32_t rb_rec_flags(uint64_t word) { return (uint32_t)(word >> 32) & 0xFFu; }
/* Bytes a record of len payload bytes occupies in the ring. */
static inline uint64_t rb_rec_size(uint64_t len) { return (RB_REC_HDR + len + 7u) & ~(uint64_t)7u; }

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
    unsigned char pad0[RB_LINE - 48];
    /* Producers' line: next free byte position, advanced by CAS. */
    _Atomic uint64_t tail;         /* 128 */
    unsigned char pad1[RB_LINE - 8];
    /* Consumers' line: first unconsumed position, and the read turn. */
    _Atomic uint64_t head;         /* 256 */
    _Atomic uint32_t read_turn;    /* 264: 0 = free, else holder's id */
    _Atomic uint32_t turn_seq;     /* 268: futex word, bumped when the turn is given back */
    _Atomic uint32_t turn_waiters; /* 272: consumers parked on turn_seq */
    unsigned char pad2[RB_LINE - 20];
    /* Consumers waiting for data (futex word, bumped by producers). */
    _Atomic uint32_t data_seq;     /* 384 */
    _Atomic uint32_t data_waiters; /* 388 */
    unsigned char pad3[RB_LINE - 8];
    /* Producers waiting for space (futex word, bumped by consumers). */
    _Atomic uint32_t space_seq;    /* 512 */
    _Atomic uint32_t space_waiters;/* 516 */
    unsigned char pad4[RB_LINE - 8];
    /* 640..4095: reserved, zero (liveness words). */
    unsigned char reserved[RB_HEADER_SIZE - 5 * RB_LINE];
};

_Static_assert(sizeof(struct rb_header) == RB_HEADER_SIZE, "header is one page");
_Static_assert(offsetof(struct rb_header, tail) == 128, "tail offset");
_Static_assert(offsetof(struct rb_header, head) == 256, "head offset");
_Static_assert(offsetof(struct rb_header, read_turn) == 264, "read_turn offset");
_Static_assert(offsetof(struct rb_header, turn_seq) == 268, "turn_seq offset");
_Static_assert(offsetof(struct rb_header, turn_waiters) == 272, "turn_waiters offset");
_Static_assert(offsetof(struct rb_header, data_seq) == 384, "data_seq offset");
_Static_assert(offsetof(struct rb_header, space_seq) == 512, "space_seq offset");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 has no hidden lock");

/* The process-local handle. */
struct rb_ring {
    struct rb_header *hdr;   /* start of the mapping                    */
    unsigned char *data;     /* data region, mapped twice back to back */
    size_t map_len;
    uint64_t capacity;
    uint64_t mask;           /* capacity - 1                          */
    uint64_t max_message;
    uint32_t id;             /* writer id / turn holder id: our pid    */
    int fd;
    /* Producers' cached copy of head, shared by the threads using this
     * handle: refreshed only when it says "full". */
    _Atomic uint64_t head_cache;
    /* Consumers' cached copy of tail (a lower bound), used only by the
     * thread holding the read turn, to check that a record ends below it. */
    uint64_t tail_cache;
    /* Set by rb_shutdown: new calls return RB_ECLOSED, waits end. */
    _Atomic uint32_t closing;
    /* The record this handle's rb_peek returned; only the turn holder
     * touches them (peeking is atomic so rb_release can test it). */
    _Atomic uint32_t peeking;
    uint64_t peek_pos;
};

/* Maps the ring in fd after validating its header; fills rb. */
int rb_map_fd(int fd, struct rb_ring *rb);


/* ---- waiting (wait.c) -------------------------------------------------- */

/* A place to park: a futex word and a count of those parked on it. */
struct rb_waitq {
    _Atomic uint32_t *word;
    _Atomic uint32_t *waiters;
};

#define RB_FOREVER INT64_MAX

/* Monotonic clock in ns, and the deadline timeout_ns from now (< 0: never). */
int64_t rb_now_ns(void);
int64_t rb_deadline(int64_t timeout_ns);

/* Spins briefly, then parks until ready(rb, arg) is true (RB_OK: retry the
 * operation), the deadline passes (RB_ETIMEDOUT), the handle is shut down
 * (RB_ECLOSED) or a signal handler interrupts the sleep (RB_EINTR). */
int rb_wait(rb_ring *rb, const struct rb_waitq *q, int (*ready)(rb_ring *, uint64_t), uint64_t arg,
            int64_t deadline);

/* Wakes whoever is parked on q. The caller has made its state change
 * visible and issued a seq_cst fence after it (see docs/design.md). */
void rb_wake(const struct rb_waitq *q);
/* Wakes q's waiters even if none is counted (shutdown). */
void rb_wake_always(const struct rb_waitq *q);

#endif /* RB_INTERNAL_H */
