/*
 * fuzz_ring.c - the library against corrupt and forged ring files.
 *
 * Per input: build a ring file from the input, rb_open it, and if it opens,
 * drive every non-blocking call on it (info, positions, peek/cancel/release,
 * peek_many, read_many, read until empty, writes, reserve/commit, shutdown, close).
 * Every status must be one the call documents, and every invariant the
 * harness can check from outside must hold; anything else abort()s, which
 * libFuzzer reports as a finding.
 *
 * Built two ways (tests/fuzz/Makefile): with clang -fsanitize=fuzzer as a
 * libFuzzer target, and with -DRB_FUZZ_REPLAY (any compiler, no libFuzzer)
 * as a replay driver whose main() runs each file or directory given.
 *
 * Input format. Random bytes almost never pass rb_open's magic, version and
 * size checks, so most inputs start from a valid ring made by the library
 * itself at run time (so the harness follows format changes) and patch it:
 *
 *   byte 0      mode: 0xF0-0xFF -> RAW: the rest of the input is the file;
 *               0xE0-0xEF -> a base ring with consumer groups (enum
 *               gbase, (mode - 0xE0) % NGBASE); otherwise BASE ring number
 *               (mode % NBASE), then:
 *   bytes 1-4   parameters steering the calls (buffer sizes, lengths, which
 *               of release/cancel, commit/abort, shutdown)
 *   rest        patch operations applied to the base ring's bytes, each an
 *               op byte (kind = op & 7, bit 7 a modifier) and its operands;
 *               kinds are enum op below. Fields are named by index into
 *               fields[] (offsets from struct rb_header, not hard-coded),
 *               records by their word index from the default group's
 *               head (where a plain reader reads).
 *
 * Missing input bytes read as 0, so every input is valid. tests/fuzz/
 * gen_corpus.py writes the seeds and knows these numbers: keep them in step.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BASE_CAPACITY 4096u
#define MAX_CAPACITY_GROWN 65536u /* RESIZE never makes a larger data region */

static int verbose;              /* replay -v: what each input did */
static const char *current_input; /* replay: the file being run */

/* rc: the unexpected status, or 1 for a failed CHECK. */
static void failed(int line, const char *what, int rc)
{
    fprintf(stderr, "fuzz_ring.c:%d: check failed: %s", line, what);
    if (rc <= 0)
        fprintf(stderr, " (got %d: %s)", rc, rb_strerror(rc));
    fputc('\n', stderr);
    if (current_input != NULL)
        fprintf(stderr, "fuzz replay: the input was %s\n", current_input);
    abort();
}
#define CHECK(cond) ((cond) ? (void)0 : failed(__LINE__, #cond, 1))
/* Status rc must be one of the set built with ST(). */
#define ST(s) (1u << -(s))
#define EXPECT(rc, set) ((rc) <= 0 && (rc) > -32 && (ST(rc) & (set)) ? (void)0 : failed(__LINE__, #rc " in " #set, rc))

/* ---- input reader --------------------------------------------------------- */

struct input {
    const uint8_t *p;
    size_t n;
};

static uint64_t take(struct input *in, int bytes) /* little-endian, 0 past the end */
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++, in->p++, in->n--) {
        if (in->n == 0)
            return v;
        v |= (uint64_t)*in->p << (8 * i);
    }
    return v;
}

/* ---- base rings, made with the library once per process ------------------ */

enum base {
    BASE_EMPTY,        /* fresh ring */
    BASE_MESSAGES,     /* messages of 1, 7, 8, 9, 64, 200, 1000 and max bytes */
    BASE_WRAPPED,      /* positions past the end; a record crosses it */
    BASE_BUSY_HEAD,    /* an uncommitted reservation at head, messages after */
    BASE_DISCARD_HEAD, /* aborted records at head and in the middle */
    BASE_PEEKING,      /* partially read, a peek open: read_turn held */
    BASE_FULL,         /* written until RB_EFULL */
    BASE_DRAINED,      /* empty, but positions far from 0 */
    NBASE
};

struct image {
    unsigned char *bytes;
    size_t len;
};

/* Rings with consumer groups (format 4). */
enum gbase {
    GBASE_GROUPS,     /* default group, durable "audit" (earliest, partly read), "late" (latest) */
    GBASE_NO_DEFAULT, /* no default group; durable "g" behind, an ephemeral group of a handle now closed */
    GBASE_OVERWRITE,  /* an overwrite ring whose default group was overrun (a loss pending) */
    GBASE_LAZY,       /* everything read, nothing reclaimed yet: tail == head + capacity */
    NGBASE
};

static struct image bases[NBASE];
static struct image gbases[NGBASE];
static char path[128];

static void write_file(const unsigned char *bytes, size_t len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    for (size_t done = 0; done < len;) {
        ssize_t w = write(fd, bytes + done, len - done);
        CHECK(w > 0);
        done += (size_t)w;
    }
    CHECK(close(fd) == 0);
}

static void snapshot(struct image *img)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    CHECK(fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0);
    img->len = (size_t)st.st_size;
    img->bytes = malloc(img->len);
    CHECK(img->bytes != NULL && pread(fd, img->bytes, img->len, 0) == (ssize_t)img->len);
    close(fd);
}

static uint8_t pattern(unsigned seed, size_t i) { return (uint8_t)(seed * 131u + i * 7u + (i >> 8)); }

static int put(rb_ring *rb, size_t len, unsigned seed)
{
    unsigned char *msg = malloc(len);
    CHECK(msg != NULL);
    for (size_t i = 0; i < len; i++)
        msg[i] = pattern(seed, i);
    int rc = rb_write(rb, msg, len);
    free(msg);
    return rc;
}

static void get(rb_ring *rb)
{
    unsigned char buf[BASE_CAPACITY];
    size_t len;
    CHECK(rb_read(rb, buf, sizeof buf, &len) == RB_OK);
}

static void build_group_bases(void)
{
    for (int b = 0; b < NGBASE; b++) {
        rb_ring *rb, *g = NULL, *e = NULL;
        unsigned flags = b == GBASE_NO_DEFAULT ? RB_NO_DEFAULT_GROUP : b == GBASE_OVERWRITE ? RB_OVERWRITE : 0;
        CHECK(rb_create(path, BASE_CAPACITY, RB_REMOVE | flags, &rb) == RB_OK);
        switch ((enum gbase)b) {
        case GBASE_GROUPS:
            CHECK(put(rb, 100, 1) == RB_OK && put(rb, 200, 2) == RB_OK);
            CHECK(rb_open_group(path, "audit", RB_START_EARLIEST, &g) == RB_OK);
            CHECK(rb_open_group(path, "late", 0, &e) == RB_OK);
            CHECK(put(rb, 300, 3) == RB_OK && put(rb, 50, 4) == RB_OK);
            get(rb);
            get(rb);
            get(g);
            break;
        case GBASE_NO_DEFAULT:
            CHECK(rb_open_group(path, "g", RB_START_EARLIEST, &g) == RB_OK);
            CHECK(rb_open_group(path, NULL, RB_GROUP_EPHEMERAL, &e) == RB_OK);
            for (unsigned i = 0; i < 10; i++)
                CHECK(put(rb, 150, i) == RB_OK);
            get(g);
            break;
        case GBASE_OVERWRITE:
            for (unsigned i = 0; i < 60; i++)
                CHECK(put(rb, 200, i) == RB_OK); /* laps the default group, which reads nothing */
            break;
        case GBASE_LAZY:
            for (unsigned i = 0; put(rb, 120, i) == RB_OK; i++)
                ;
            while (1) {
                unsigned char buf[BASE_CAPACITY];
                size_t len;
                if (rb_read(rb, buf, sizeof buf, &len) != RB_OK)
                    break;
            }
            break;
        case NGBASE:
            break;
        }
        snapshot(&gbases[b]); /* with the handles still open: the ephemeral group is in the file */
        if (e != NULL)
            CHECK(rb_close(e) == RB_OK);
        if (g != NULL)
            CHECK(rb_close(g) == RB_OK);
        CHECK(rb_close(rb) == RB_OK);
        CHECK(unlink(path) == 0);
    }
}

static void build_bases(void)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof path, "%s/rbfuzz-%ld.ring", dir, (long)getpid());
    build_group_bases();
    for (int b = 0; b < NBASE; b++) {
        rb_ring *rb;
        CHECK(rb_create(path, BASE_CAPACITY, RB_REMOVE, &rb) == RB_OK);
        size_t max = rb_max_message_size(rb);
        void *busy = NULL, *p;
        const void *cp;
        size_t len;
        switch ((enum base)b) {
        case BASE_EMPTY:
        case NBASE:
            break;
        case BASE_MESSAGES: {
            const size_t lens[] = {1, 7, 8, 9, 64, 200, 1000, max};
            for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
                CHECK(put(rb, lens[i], (unsigned)i) == RB_OK);
            break;
        }
        case BASE_WRAPPED:
            CHECK(put(rb, max, 1) == RB_OK && put(rb, 1000, 2) == RB_OK);
            get(rb);
            get(rb);
            CHECK(put(rb, 1500, 3) == RB_OK && put(rb, 100, 4) == RB_OK && put(rb, 7, 5) == RB_OK);
            break;
        case BASE_BUSY_HEAD:
            CHECK(rb_reserve(rb, 100, &busy) == RB_OK);
            CHECK(put(rb, 10, 1) == RB_OK && put(rb, 20, 2) == RB_OK);
            break;
        case BASE_DISCARD_HEAD:
            CHECK(rb_reserve(rb, 50, &p) == RB_OK && rb_abort(rb, p) == RB_OK);
            CHECK(put(rb, 10, 1) == RB_OK && put(rb, 300, 2) == RB_OK);
            CHECK(rb_reserve(rb, 40, &p) == RB_OK && rb_abort(rb, p) == RB_OK);
            CHECK(put(rb, 6, 3) == RB_OK);
            break;
        case BASE_PEEKING:
            CHECK(put(rb, 30, 1) == RB_OK && put(rb, 40, 2) == RB_OK && put(rb, 50, 3) == RB_OK);
            get(rb);
            CHECK(rb_peek(rb, &cp, &len) == RB_OK);
            break;
        case BASE_FULL:
            for (unsigned i = 0; put(rb, 100, i) == RB_OK; i++)
                ;
            break;
        case BASE_DRAINED:
            for (unsigned i = 0; i < 20; i++) {
                CHECK(put(rb, 333, i) == RB_OK);
                get(rb);
            }
            break;
        }
        snapshot(&bases[b]); /* with the handle still open: its state is in the file */
        if (busy != NULL)
            CHECK(rb_abort(rb, busy) == RB_OK);
        CHECK(rb_close(rb) == RB_OK);
        CHECK(unlink(path) == 0);
    }
}

/* ---- patching ------------------------------------------------------------- */

/* The header fields patch operations name by index (gen_corpus.py: FIELDS;
 * new fields go at the end, so that old inputs keep their meaning). Slot
 * fields are those of slots 0 and 1 (the base rings' handles). */
#define FIELD(f) {offsetof(struct rb_header, f), sizeof(((struct rb_header *)0)->f)}
#define SLOT_FIELD(i, f) {RB_PAGE0 + (i) * RB_SLOT_SIZE + offsetof(struct rb_slot, f), sizeof(((struct rb_slot *)0)->f)}
#define GROUP_FIELD(i, f, n) {RB_GROUPS_OFF + (i) * RB_GROUP_SIZE + offsetof(struct rb_group, f), n}
static const struct {
    size_t off, size;
} fields[] = {
    FIELD(magic),     FIELD(version),      FIELD(header_size), FIELD(capacity),     FIELD(max_message),
    FIELD(state),     FIELD(flags),        FIELD(created_ns),  FIELD(tail),         FIELD(head),
    FIELD(reclaim_turn), FIELD(turn_seq),     FIELD(turn_waiters), FIELD(data_seq),    FIELD(data_waiters),
    FIELD(space_seq), FIELD(space_waiters), FIELD(slot_count), FIELD(slot_size),    FIELD(slots_used),
    FIELD(join_tail), FIELD(release_end),
    SLOT_FIELD(0, gen), SLOT_FIELD(0, parked[0]), SLOT_FIELD(0, intent[0].start), SLOT_FIELD(0, intent[0].end),
    SLOT_FIELD(1, gen), SLOT_FIELD(1, intent[0].start), SLOT_FIELD(1, intent[0].end),
    SLOT_FIELD(0, count_own[0]), SLOT_FIELD(0, count_shared[1]), SLOT_FIELD(1, count_own[2]),
    SLOT_FIELD(1, count_shared[8]),
    /* Format 4: the group table (entry 0: the default group's, or the
     * first group's in a ring without one; entry 1: the next group). */
    GROUP_FIELD(0, head, 8), GROUP_FIELD(0, turn, 4), GROUP_FIELD(0, gen, 4), GROUP_FIELD(0, lost_pending, 8),
    GROUP_FIELD(0, kind, 4), GROUP_FIELD(1, head, 8), GROUP_FIELD(1, gen, 4), GROUP_FIELD(1, kind, 4),
    GROUP_FIELD(1, owner, 4), GROUP_FIELD(1, name, 8), GROUP_FIELD(1, turn, 4), FIELD(groups_used),
    SLOT_FIELD(0, group), SLOT_FIELD(1, group_gen),
};
#define G0_HEAD 33 /* fields[] index of group entry 0's head */
#define NFIELDS (sizeof fields / sizeof fields[0])

enum op {
    OP_HEADER_BYTES, /* u16 offset (mod header size), u8 n (1-16), n bytes */
    OP_DATA_BYTES,   /* u16 offset (mod data length), u8 n (1-16), n bytes */
    OP_FIELD_SET,    /* u8 field, then as many bytes as the field has */
    OP_FIELD_ADD,    /* u8 field, s8 delta (times 8 if bit 7 of op) */
    OP_RECORD,       /* u8 k, u32 len, u8 flags, u8 writer (ours if bit 7): the word at head + 8k */
    OP_RESIZE,       /* u8 v: file = data offset + (4096 << v % 5) if v >= 128, else v * 64 bytes */
    OP_SHIFT,        /* u16 k: head and tail += k * capacity (<< 35 if bit 7) */
    OP_FILL,         /* u16 offset (data), u16 n (mod 512), u8 byte: memset */
};

struct file {
    unsigned char *b;
    size_t len, max;   /* bytes used, bytes allocated */
    size_t data_off;   /* the base ring's header_size */
    uint64_t base_cap; /* the base ring's capacity */
};

static uint64_t get_field(const struct file *f, size_t i)
{
    uint64_t v = 0;
    if (fields[i].off + fields[i].size <= f->len)
        memcpy(&v, f->b + fields[i].off, fields[i].size); /* little-endian host */
    return v;
}

static void set_field(struct file *f, size_t i, uint64_t v)
{
    if (fields[i].off + fields[i].size <= f->len)
        memcpy(f->b + fields[i].off, &v, fields[i].size);
}

static void put_bytes(struct file *f, size_t off, struct input *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)take(in, 1);
        if (off + i < f->len)
            f->b[off + i] = v;
    }
}

static size_t field_index(size_t off)
{
    for (size_t i = 0; i < NFIELDS; i++)
        if (fields[i].off == off)
            return i;
    abort();
}
#define FIELD_INDEX(f) field_index(offsetof(struct rb_header, f))

static void apply(struct file *f, struct input *in)
{
    while (in->n > 0) {
        unsigned op = (unsigned)take(in, 1);
        size_t data_len = f->len > f->data_off ? f->len - f->data_off : 0;
        switch ((enum op)(op & 7)) {
        case OP_HEADER_BYTES: {
            size_t off = (size_t)take(in, 2) % sizeof(struct rb_header);
            put_bytes(f, off, in, 1 + take(in, 1) % 16);
            break;
        }
        case OP_DATA_BYTES: {
            size_t off = (size_t)take(in, 2), n = 1 + take(in, 1) % 16;
            if (data_len > 0)
                put_bytes(f, f->data_off + off % data_len, in, n);
            break;
        }
        case OP_FIELD_SET: {
            size_t i = (size_t)take(in, 1) % NFIELDS;
            set_field(f, i, take(in, (int)fields[i].size));
            break;
        }
        case OP_FIELD_ADD: {
            size_t i = (size_t)take(in, 1) % NFIELDS;
            int64_t d = (int8_t)take(in, 1);
            set_field(f, i, get_field(f, i) + (uint64_t)(op & 0x80 ? d * 8 : d));
            break;
        }
        case OP_RECORD: {
            uint64_t k = take(in, 1), len = take(in, 4);
            uint32_t flags = (uint32_t)take(in, 1), writer = (uint32_t)take(in, 1);
            if (op & 0x80)
                writer = (uint32_t)getpid();
            uint64_t word = rb_rec_make(len, flags, writer);
            uint64_t at = f->data_off + ((get_field(f, G0_HEAD) + 8 * k) & (f->base_cap - 1) & ~7ull);
            if (at + 8 <= f->len)
                memcpy(f->b + at, &word, 8);
            break;
        }
        case OP_RESIZE: {
            unsigned v = (unsigned)take(in, 1);
            size_t len = v >= 128 ? f->data_off + ((size_t)BASE_CAPACITY << (v % 5)) : (size_t)v * 64;
            if (len > f->max)
                len = f->max;
            if (len > f->len)
                memset(f->b + f->len, 0, len - f->len);
            f->len = len;
            break;
        }
        case OP_SHIFT: {
            uint64_t by = take(in, 2) * f->base_cap;
            if (op & 0x80)
                by <<= 35;
            set_field(f, FIELD_INDEX(head), get_field(f, FIELD_INDEX(head)) + by);
            set_field(f, FIELD_INDEX(tail), get_field(f, FIELD_INDEX(tail)) + by);
            for (size_t g = 0; g < RB_GROUPS_MAX; g++) { /* every group's head, used or not */
                size_t off = RB_GROUPS_OFF + g * RB_GROUP_SIZE + offsetof(struct rb_group, head);
                uint64_t v;
                if (off + 8 <= f->len) {
                    memcpy(&v, f->b + off, 8);
                    v += by;
                    memcpy(f->b + off, &v, 8);
                }
            }
            break;
        }
        case OP_FILL: {
            size_t off = (size_t)take(in, 2), n = take(in, 2) % 512;
            int c = (int)take(in, 1);
            if (data_len > 0) {
                off = f->data_off + off % data_len;
                memset(f->b + off, c, n < f->len - off ? n : f->len - off);
            }
            break;
        }
        }
    }
}

/* ---- exercising an open ring ---------------------------------------------- */

struct pos {
    uint64_t head, tail;
};

static struct pos positions(rb_ring *rb)
{
    struct pos p;
    int rc = rb_positions(rb, &p.head, &p.tail);
    EXPECT(rc, ST(RB_OK));
    CHECK(p.head <= p.tail && p.tail - p.head <= rb_capacity(rb));
    CHECK(p.head % 8 == 0 && p.tail % 8 == 0);
    return p;
}

/* [p, p + len) lies inside the handle's mapping (its data region: not the header). */
static void check_in_ring(rb_ring *rb, const void *p, size_t len)
{
    const unsigned char *d = rb->data, *c = p;
    CHECK(c >= d && c + len <= d + 2 * rb_capacity(rb));
}

/* The record header word at position pos, read through the handle's mapping. */
static uint64_t word_at(rb_ring *rb, uint64_t pos)
{
    uint64_t w;
    memcpy(&w, rb->data + (pos & (rb_capacity(rb) - 1)), sizeof w);
    return w;
}

/* Touches every byte (so that ASan and the MMU see each access). */
static unsigned sum(const void *p, size_t len)
{
    unsigned s = 0;
    for (size_t i = 0; i < len; i++)
        s += ((const volatile unsigned char *)p)[i];
    return s;
}

struct counts {
    uint64_t messages, bytes;
};

static void check_info(rb_ring *rb, struct rb_info *info, int rc)
{
    EXPECT(rc, ST(RB_OK) | ST(RB_ECORRUPT));
    struct pos p = positions(rb);
    CHECK(info->capacity == rb_capacity(rb) && info->max_message == rb_max_message_size(rb));
    CHECK(info->format_version == RB_FORMAT_VERSION);
    CHECK(info->head == p.head && info->tail == p.tail); /* no other thread moves them */
    CHECK(info->counted == 0 || info->counted == 1);
    if (!info->counted)
        CHECK(info->messages == 0 && info->message_bytes == 0 && info->busy == 0 && info->discarded == 0);
    /* Each counted message took at least 16 bytes (header and one 8-byte
     * unit of payload), each discarded record at least 8 (a dead gap's
     * DISCARD records may have length 0: a header alone). */
    CHECK(info->message_bytes <= p.tail - p.head && info->message_bytes >= info->messages);
    CHECK(info->messages * 16 + info->discarded * 8 <= p.tail - p.head);
}

/* Reads until the ring says anything but RB_OK; returns that status. A
 * buffer too small (rd_size) is retried with one of the size asked for. */
static int drain(rb_ring *rb, size_t rd_size, struct counts *c)
{
    size_t cap = rb_capacity(rb), max = rb_max_message_size(rb);
    unsigned char *buf = malloc(rd_size ? rd_size : 1); /* exact size: ASan sees overflows */
    CHECK(buf != NULL);
    int rc;
    for (size_t iter = 0;; iter++) {
        CHECK(iter <= cap / 16 + 1); /* each message takes 16 bytes or more */
        struct pos before = positions(rb);
        size_t len = 0;
        rc = rb_read(rb, buf, rd_size, &len);
        EXPECT(rc, ST(RB_OK) | ST(RB_EEMPTY) | ST(RB_ETRUNC) | ST(RB_ECORRUPT) | ST(RB_ELOST) | ST(RB_ENOGROUP));
        if (rc == RB_ELOST) { /* an overwrite ring overran the group: the next read goes on */
            uint64_t lost = 0;
            CHECK(rb_take_lost(rb, &lost) == RB_OK && lost >= 1);
            continue;
        }
        if (rc == RB_ETRUNC) {
            CHECK(len > rd_size && len <= max);
            unsigned char *big = malloc(len);
            size_t len2 = 0;
            CHECK(big != NULL);
            rc = rb_read(rb, big, len, &len2);
            /* The same message, and now it fits (in an overwrite ring a
             * writer could have moved us on meanwhile: not here, where
             * nobody writes; but a forged lost count reads as a loss). */
            EXPECT(rc, ST(RB_OK) | ST(RB_ELOST));
            CHECK(rc == RB_ELOST || len2 == len);
            sum(big, len);
            free(big);
        } else if (rc == RB_OK) {
            CHECK(len >= 1 && len <= rd_size && len <= max);
        } else {
            struct pos after = positions(rb);
            CHECK(after.tail == before.tail);
            break;
        }
        struct pos after = positions(rb);
        CHECK(after.tail == before.tail && after.head - before.head >= rb_rec_size(len));
        c->messages++;
        c->bytes += len;
    }
    free(buf);
    return rc;
}

/* A message the harness wrote, to be read back when the ring was empty. */
struct sent {
    size_t len;
    unsigned seed;
};

/* A write of a record of size bytes found no room: explained by the state
 * (full for our group; or another group further behind; or the oldest
 * record unfinished, in a ring with no group or an overwrite ring; or
 * records below join_tail still being written; or a forged group head
 * making the reclaim free nothing). Not explained: a lossless ring whose
 * only group (ours) left room. */
static int no_room_explained(rb_ring *rb, struct pos before, uint64_t size)
{
    struct rb_info in;
    CHECK(rb_info_ex(rb, &in, sizeof in, RB_INFO_NO_COUNT) == RB_OK);
    return before.tail - before.head + size > rb_capacity(rb) || in.groups != 1 || (in.ring_flags & RB_OVERWRITE) ||
           atomic_load(&rb->hdr->join_tail) > in.reclaimed || in.reclaimed < before.head || in.writable < size;
}

/* Checks a write's outcome against the positions before and after it. */
static void check_write(rb_ring *rb, int rc, size_t len, struct pos before)
{
    struct pos after = positions(rb);
    size_t max = rb_max_message_size(rb);
    struct rb_info in;
    CHECK(rb_info_ex(rb, &in, sizeof in, RB_INFO_NO_COUNT) == RB_OK);
    /* Our group's head moves only in an overwrite ring (a write overruns
     * it); a handle without a group sees head, which a write may reclaim. */
    CHECK(after.head == before.head || ((in.ring_flags & RB_OVERWRITE) && after.head > before.head) ||
          (after.head > before.head && after.head <= in.reclaimed));
    if (len == 0 || len > max) {
        EXPECT(rc, ST(RB_ESIZE));
        CHECK(after.tail == before.tail);
    } else if (rc == RB_OK) {
        CHECK(after.tail == before.tail + rb_rec_size(len));
    } else {
        EXPECT(rc, ST(RB_EFULL));
        CHECK(after.tail == before.tail);
        CHECK(no_room_explained(rb, before, rb_rec_size(len)));
    }
}

/* The group calls on a forged table: listing, joining by name and as a
 * subscriber (each read until it stops), removing. Every status one the
 * call documents; nothing crashes or hangs (forged heads are not walked). */
static void exercise_groups(rb_ring *rb, const uint8_t prm[4])
{
    struct rb_group_info gi[RB_GROUPS_MAX];
    size_t count = 99;
    int rc = rb_groups(rb, gi, RB_GROUPS_MAX, &count);
    EXPECT(rc, ST(RB_OK));
    CHECK(count <= RB_GROUPS_MAX);
    for (size_t i = 0; i < count; i++) {
        CHECK(gi[i].name[RB_GROUP_NAME_MAX] == '\0');
        CHECK(gi[i].counted == 0 || gi[i].counted == 1);
        if (!gi[i].counted)
            CHECK(gi[i].backlog_messages == 0 && gi[i].backlog_bytes == 0);
        CHECK(gi[i].backlog_bytes >= gi[i].backlog_messages);
    }
    static const char *const names[] = {"audit", "late", "g", "new"};
    const char *name = names[prm[2] & 3];
    for (int k = 0; k < 2; k++) {
        rb_ring *g = NULL;
        unsigned flags = (prm[3] & 4 ? RB_START_EARLIEST : 0) | (k ? RB_GROUP_EPHEMERAL : 0);
        rc = rb_open_group(path, k ? NULL : name, flags, &g);
        /* The file is unlinked once opened: ESYS (ENOENT) then. */
        EXPECT(rc, ST(RB_OK) | ST(RB_ECORRUPT) | ST(RB_EVERSION) | ST(RB_ESYS) | ST(RB_EGROUPS));
        if (rc != RB_OK)
            continue;
        CHECK(rb_set_stall_timeout(g, 0) == RB_OK);
        struct counts c = {0, 0};
        int last = drain(g, rb_max_message_size(g), &c);
        EXPECT(last, ST(RB_EEMPTY) | ST(RB_ECORRUPT) | ST(RB_ENOGROUP));
        uint64_t lost = 0;
        CHECK(rb_take_lost(g, &lost) == RB_OK);
        CHECK(rb_close(g) == RB_OK);
    }
    rc = rb_group_remove(rb, prm[2] & 4 ? NULL : name);
    EXPECT(rc, ST(RB_OK) | ST(RB_ENOGROUP) | ST(RB_ETIMEDOUT));
    CHECK(rb_sync(rb) == RB_OK);
    uint64_t lost;
    CHECK(rb_take_lost(rb, &lost) == RB_OK);
}

static void exercise(rb_ring *rb, const uint8_t prm[4])
{
    /* Recovery paths run at once: every slot of a fuzzed file is dead (no
     * process holds its lock), so stuck records and turns are recovered. */
    CHECK(rb_set_stall_timeout(rb, 0) == RB_OK);
    size_t cap = rb_capacity(rb), max = rb_max_message_size(rb);
    CHECK(cap >= RB_MIN_CAPACITY && cap <= RB_MAX_CAPACITY && (cap & (cap - 1)) == 0 && max == cap / 2);
    struct counts got = {0, 0};
    unsigned ring_flags = rb_ring_flags(rb);
    CHECK((ring_flags & ~(RB_OVERWRITE | RB_NO_DEFAULT_GROUP)) == 0);
    int ow = (ring_flags & RB_OVERWRITE) != 0;
    /* Peeks are refused on an overwrite ring; a handle without a group
     * reads nothing. */
    const unsigned peek_ok = ow ? ST(RB_EINVAL) : ST(RB_OK) | ST(RB_EEMPTY) | ST(RB_ECORRUPT) | ST(RB_ENOGROUP);

    struct rb_info info0;
    int info_rc = rb_info(rb, &info0);
    check_info(rb, &info0, info_rc);
    /* Forged counters are only summed (saturating): never a crash. */
    struct rb_stats st0;
    CHECK(rb_stats(rb, &st0) == RB_OK);

    /* Peek, cancel, peek again (the same message), then release or cancel. */
    const void *ptr = NULL, *ptr2 = NULL;
    size_t len = 0, len2 = 0;
    struct pos before = positions(rb);
    int rc = rb_peek(rb, &ptr, &len);
    EXPECT(rc, peek_ok);
    if (rc == RB_OK) {
        CHECK(len >= 1 && len <= max);
        check_in_ring(rb, ptr, len);
        sum(ptr, len);
        rc = rb_peek_cancel(rb);
        EXPECT(rc, ST(RB_OK));
        rc = rb_peek(rb, &ptr2, &len2);
        EXPECT(rc, ST(RB_OK));
        CHECK(ptr2 == ptr && len2 == len);
        if (prm[3] & 1) {
            rc = rb_release(rb);
            EXPECT(rc, ST(RB_OK));
            struct pos after = positions(rb);
            CHECK(after.head - before.head >= rb_rec_size(len));
            got.messages++;
            got.bytes += len;
        } else {
            rc = rb_peek_cancel(rb);
            EXPECT(rc, ST(RB_OK));
        }
    }
    rc = rb_release(rb); /* no peek outstanding */
    EXPECT(rc, ST(RB_EINVAL));
    rc = rb_peek_cancel(rb);
    EXPECT(rc, ST(RB_EINVAL));

    /* A batch peek (max_count 0 to 7): consecutive records in ring order
     * inside [head, tail), each payload where its position says; then
     * released (all consumed) or cancelled (all left). */
    {
        const void *ptrs[8];
        size_t plens[8], pmax = prm[0] & 7, pn = 99;
        uint64_t ppos[8];
        before = positions(rb);
        rc = rb_peek_many(rb, ptrs, plens, ppos, pmax, &pn);
        EXPECT(rc, pmax == 0 ? ST(RB_OK) : peek_ok);
        CHECK(rc == RB_OK ? pn <= pmax && (pn >= 1 || pmax == 0) : pn == 0);
        uint64_t pbytes = 0;
        for (size_t i = 0; i < pn; i++) {
            CHECK(plens[i] >= 1 && plens[i] <= max);
            CHECK(ppos[i] >= (i == 0 ? before.head : ppos[i - 1] + rb_rec_size(plens[i - 1])));
            CHECK(ppos[i] + rb_rec_size(plens[i]) <= before.tail);
            CHECK((const unsigned char *)ptrs[i] == rb->data + (ppos[i] & (cap - 1)) + 8);
            check_in_ring(rb, ptrs[i], plens[i]);
            sum(ptrs[i], plens[i]);
            pbytes += plens[i];
        }
        if (rc == RB_OK && pn > 0) {
            if (prm[3] & 16) {
                rc = rb_release(rb);
                EXPECT(rc, ST(RB_OK));
                struct pos after = positions(rb);
                CHECK(after.head == ppos[pn - 1] + rb_rec_size(plens[pn - 1]));
                got.messages += pn;
                got.bytes += pbytes;
            } else {
                rc = rb_peek_cancel(rb);
                EXPECT(rc, ST(RB_OK));
            }
        }
        rc = rb_release(rb); /* no peek outstanding (max_count 0 keeps none) */
        EXPECT(rc, ST(RB_EINVAL));
    }

    /* One batch read into an exact-size buffer. */
    size_t bsize = (size_t)(prm[1] >> 4) * 300, maxc = prm[1] & 7, lens[8] = {0}, count = 99;
    unsigned char *buf = bsize ? malloc(bsize) : NULL;
    CHECK(bsize == 0 || buf != NULL);
    before = positions(rb);
    rc = rb_read_many(rb, buf, bsize, lens, maxc, &count);
    EXPECT(rc, ST(RB_OK) | ST(RB_EEMPTY) | ST(RB_ETRUNC) | ST(RB_ECORRUPT) | ST(RB_ELOST) | ST(RB_ENOGROUP));
    if (rc == RB_ELOST) {
        uint64_t lost = 0;
        CHECK(rb_take_lost(rb, &lost) == RB_OK);
    }
    struct pos after = positions(rb);
    CHECK(after.tail == before.tail);
    if (maxc == 0)
        CHECK(rc == RB_OK && count == 0);
    if (rc == RB_OK && maxc > 0) {
        CHECK(count >= 1 && count <= maxc);
        size_t total = 0;
        uint64_t space = 0;
        for (size_t i = 0; i < count; i++) {
            CHECK(lens[i] >= 1 && lens[i] <= max);
            total += lens[i];
            space += rb_rec_size(lens[i]);
        }
        CHECK(total <= bsize && after.head - before.head >= space);
        sum(buf, total);
        got.messages += count;
        got.bytes += total;
    } else if (rc != RB_OK) {
        CHECK(count == 0);
        if (rc == RB_ETRUNC)
            CHECK(lens[0] > bsize && lens[0] <= max);
    }
    free(buf);

    /* The rest, one message at a time. */
    size_t rd_size = prm[0] >= 128 ? max : (size_t)prm[0] * 8;
    int last = drain(rb, rd_size, &got);
    struct pos p = positions(rb);
    /* rb_info's walk and the reads apply the same checks: when the walk met
     * no record still being written, the reads delivered what it counted
     * and stopped where it stopped. (At tail the walk stops, but a read
     * looks at the word there: a forged one is RB_ECORRUPT.) */
    if (info0.counted && info0.busy == 0 && !ow) {
        CHECK(got.messages == info0.messages && got.bytes == info0.message_bytes);
        if (info_rc == RB_OK)
            CHECK(p.head == p.tail && (last == RB_EEMPTY || last == RB_ECORRUPT));
        else /* the walk checks a BUSY record's size against tail, a read only waits at it */
            CHECK(last == RB_ECORRUPT || (last == RB_EEMPTY && (rb_rec_flags(word_at(rb, p.head)) & RB_REC_BUSY)));
    }
    /* With a record still being written (busy), the walk stopped there, but
     * the reads may deliver more: every slot of a fuzzed file is dead, so
     * recovery discards that record (or gap) and they go on. */
    if (verbose)
        fprintf(stderr, "  info %s: %llu messages, %llu busy, %llu discarded%s; read %llu, then %s\n",
                rb_strerror(info_rc), (unsigned long long)info0.messages, (unsigned long long)info0.busy,
                (unsigned long long)info0.discarded, info0.counted ? "" : " (turn taken)",
                (unsigned long long)got.messages, rb_strerror(last));
    /* An empty ring whose read turn is free: what we write comes back. */
    int verify = info0.counted && p.head == p.tail && !ow;

    /* Writes: valid and invalid sizes, a batch, a reservation. */
    struct sent sent[16];
    size_t nsent = 0;
    const size_t wlens[] = {1 + prm[2], 8, max, 0, max + 1, 1 + ((size_t)prm[2] << 4) % max};
    for (size_t i = 0; i < sizeof wlens / sizeof wlens[0]; i++) {
        before = positions(rb);
        rc = put(rb, wlens[i], (unsigned)i);
        check_write(rb, rc, wlens[i], before);
        if (rc == RB_OK)
            sent[nsent++] = (struct sent){wlens[i], (unsigned)i};
    }

    size_t blens[3] = {3, 50, prm[2] & 1 ? 0 : 1 + (size_t)prm[2] * 3}, written = 99;
    unsigned char batch[3 + 50 + 1 + 255 * 3];
    size_t off = 0;
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < blens[i]; j++)
            batch[off++] = pattern(10 + (unsigned)i, j);
    before = positions(rb);
    rc = rb_write_many(rb, batch, blens, 3, &written);
    after = positions(rb);
    CHECK(after.head >= before.head); /* moved: an overwrite ring, or no group (see check_write) */
    if (blens[2] == 0) {
        EXPECT(rc, ST(RB_ESIZE));
        CHECK(written == 0 && after.tail == before.tail);
    } else if (rc == RB_OK) {
        CHECK(written >= 1 && written <= 3);
        uint64_t space = 0;
        for (size_t i = 0; i < written; i++) {
            space += rb_rec_size(blens[i]);
            sent[nsent++] = (struct sent){blens[i], 10 + (unsigned)i};
        }
        CHECK(after.tail == before.tail + space);
        if (written < 3)
            CHECK(no_room_explained(rb, after, rb_rec_size(blens[written])));
    } else {
        EXPECT(rc, ST(RB_EFULL));
        CHECK(written == 0 && after.tail == before.tail);
    }

    /* One message gathered from three vectors, one of them empty. */
    size_t vlen = 1 + (size_t)prm[2] * 11 % max, cut = vlen / 3;
    unsigned char *vmsg = malloc(vlen);
    CHECK(vmsg != NULL);
    for (size_t j = 0; j < vlen; j++)
        vmsg[j] = pattern(30, j);
    struct iovec iov[3] = {{vmsg, cut}, {NULL, 0}, {vmsg + cut, vlen - cut}};
    before = positions(rb);
    rc = rb_writev(rb, iov, 3);
    check_write(rb, rc, vlen, before);
    if (rc == RB_OK)
        sent[nsent++] = (struct sent){vlen, 30};
    free(vmsg);

    size_t rlen = 1 + (size_t)prm[2] * 5 % max;
    void *res = NULL;
    before = positions(rb);
    rc = rb_reserve(rb, rlen, &res);
    check_write(rb, rc, rlen, before);
    int busy_left = 0;
    if (rc == RB_OK) {
        check_in_ring(rb, res, rlen);
        for (size_t j = 0; j < rlen; j++)
            ((unsigned char *)res)[j] = pattern(20, j);
        if (prm[3] & 8) {
            busy_left = 1; /* rb_close leaves it BUSY */
        } else if (prm[3] & 4) {
            rc = rb_abort(rb, res);
            EXPECT(rc, ST(RB_OK));
        } else {
            rc = rb_commit(rb, res);
            EXPECT(rc, ST(RB_OK));
            sent[nsent++] = (struct sent){rlen, 20};
        }
        if (!busy_left) {
            rc = rb_commit(rb, res); /* no longer a reservation */
            EXPECT(rc, ST(RB_EINVAL));
        }
    }

    /* Read back. */
    struct rb_info info1;
    rc = rb_info(rb, &info1);
    check_info(rb, &info1, rc);
    unsigned char *msg = malloc(max);
    CHECK(msg != NULL);
    for (size_t i = 0; verify && i < nsent; i++) {
        size_t n = 0;
        rc = rb_read(rb, msg, max, &n);
        EXPECT(rc, ST(RB_OK));
        CHECK(n == sent[i].len);
        for (size_t j = 0; j < n; j++)
            CHECK(msg[j] == pattern(sent[i].seed, j));
    }
    free(msg);
    struct counts more = {0, 0};
    last = drain(rb, max, &more);
    if (verify) {
        CHECK(more.messages == 0);
        /* Bytes past tail were never written by us: a forged file may have
         * left garbage there, which reads as a corrupt record. */
        EXPECT(last, ST(RB_EEMPTY) | ST(RB_ECORRUPT));
    }

    /* The waiting forms, with a 1 us timeout: their readiness tests read the
     * (forged) positions, words and read turn too. Nothing changed since the
     * drain, so reads end as it did. */
    const int64_t us = 1000;
    size_t n = 0;
    unsigned char *one = malloc(max);
    CHECK(one != NULL);
    rc = rb_read_wait(rb, one, max, &n, us);
    CHECK(rc == (last == RB_EEMPTY ? RB_ETIMEDOUT : last));
    rc = rb_peek_wait(rb, &ptr, &len, us);
    CHECK(rc == (ow ? RB_EINVAL : last == RB_EEMPTY ? RB_ETIMEDOUT : last));
    {
        const void *ptrs[2];
        size_t plens[2], pn;
        rc = rb_peek_many_wait(rb, ptrs, plens, NULL, 2, &pn, us);
        CHECK(rc == (ow ? RB_EINVAL : last == RB_EEMPTY ? RB_ETIMEDOUT : last));
    }
    free(one);
    before = positions(rb);
    rc = rb_write_wait(rb, &prm[2], 1, us);
    check_write(rb, rc == RB_ETIMEDOUT ? RB_EFULL : rc, 1, before);
    before = positions(rb);
    rc = rb_reserve_wait(rb, max, &res, us);
    check_write(rb, rc == RB_ETIMEDOUT ? RB_EFULL : rc, max, before);
    if (rc == RB_OK) {
        rc = rb_abort(rb, res);
        EXPECT(rc, ST(RB_OK));
    }
    rc = rb_reserve(rb, 0, &res);
    EXPECT(rc, ST(RB_ESIZE));
    rc = rb_reserve(rb, max + 1, &res);
    EXPECT(rc, ST(RB_ESIZE));

    exercise_groups(rb, prm);

    if (prm[3] & 2) {
        rc = rb_shutdown(rb);
        EXPECT(rc, ST(RB_OK));
        unsigned char byte = 1;
        struct rb_info info2;
        rc = rb_read(rb, &byte, 1, &n);
        EXPECT(rc, ST(RB_ECLOSED));
        rc = rb_write(rb, &byte, 1);
        EXPECT(rc, ST(RB_ECLOSED));
        rc = rb_info(rb, &info2);
        EXPECT(rc, ST(RB_ECLOSED));
        rc = rb_shutdown(rb);
        EXPECT(rc, ST(RB_OK));
    }
    rc = rb_close(rb);
    EXPECT(rc, ST(RB_OK));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (bases[0].bytes == NULL)
        build_bases();
    struct input in = {data, size};
    unsigned mode = (unsigned)take(&in, 1);
    uint8_t prm[4];
    for (int i = 0; i < 4; i++)
        prm[i] = (uint8_t)take(&in, 1);

    if (mode >= 0xF0) {
        /* RAW: parameters as above, then the file itself. */
        write_file(in.p, in.n);
    } else {
        const struct image *base = mode >= 0xE0 ? &gbases[(mode - 0xE0) % NGBASE] : &bases[mode % NBASE];
        struct file f = {.len = base->len};
        uint32_t hs;
        memcpy(&hs, base->bytes + offsetof(struct rb_header, header_size), sizeof hs);
        f.data_off = hs;
        memcpy(&f.base_cap, base->bytes + offsetof(struct rb_header, capacity), sizeof f.base_cap);
        f.max = f.data_off + MAX_CAPACITY_GROWN;
        CHECK(f.max >= base->len);
        f.b = malloc(f.max);
        CHECK(f.b != NULL);
        memcpy(f.b, base->bytes, base->len);
        apply(&f, &in);
        write_file(f.b, f.len);
        free(f.b);
    }

    rb_ring *rb = NULL;
    int rc = rb_open(path, &rb);
    int unlinked = unlink(path); /* the mapping stays; nothing left behind */
    /* ESYS: e.g. a forged capacity the address space cannot map twice. */
    EXPECT(rc, ST(RB_OK) | ST(RB_ECORRUPT) | ST(RB_EVERSION) | ST(RB_ESYS));
    CHECK(unlinked == 0);
    if (verbose)
        fprintf(stderr, "  rb_open: %s\n", rb_strerror(rc));
    if (rc == RB_OK)
        exercise(rb, prm);
    return 0;
}

#ifdef RB_FUZZ_REPLAY
/* Replay driver: runs the harness on each file, and each file of each
 * directory (sorted; dot files and *.md skipped), given as arguments;
 * -v prints what each input did. */
#include <dirent.h>

#ifdef __SANITIZE_ADDRESS__ /* gcc */
#define RB_SANITIZED 1
#elif defined(__has_feature) /* clang */
#if __has_feature(address_sanitizer)
#define RB_SANITIZED 1
#endif
#endif
#ifdef RB_SANITIZED
#include <sanitizer/common_interface_defs.h>
/* A sanitizer's report names the input too. */
static void name_input(void) { fprintf(stderr, "fuzz replay: the input was %s\n", current_input); }
#endif

static int replay_file(const char *name)
{
    current_input = name;
    if (verbose)
        fprintf(stderr, "%s\n", name);
    FILE *fp = fopen(name, "rb");
    if (fp == NULL) {
        perror(name);
        return 1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf != NULL && (got = fread(buf + len, 1, cap - len, fp)) > 0;) {
        len += got;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(fp);
    CHECK(buf != NULL);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int n = 0, bad = 0;
#ifdef RB_SANITIZED
    __sanitizer_set_death_callback(name_input);
#endif
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "-v") == 0) {
            verbose = 1;
            continue;
        }
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            perror(argv[a]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad |= replay_file(argv[a]);
            n++;
            continue;
        }
        struct dirent **ents;
        int k = scandir(argv[a], &ents, NULL, alphasort);
        if (k < 0) {
            perror(argv[a]);
            return 1;
        }
        for (int i = 0; i < k; i++) {
            const char *nm = ents[i]->d_name;
            size_t l = strlen(nm);
            if (nm[0] != '.' && !(l >= 3 && strcmp(nm + l - 3, ".md") == 0)) {
                char full[4096];
                snprintf(full, sizeof full, "%s/%s", argv[a], nm);
                bad |= replay_file(full);
                n++;
            }
            free(ents[i]);
        }
        free(ents);
    }
    printf("fuzz replay: %d inputs\n", n);
    return bad;
}
#endif
