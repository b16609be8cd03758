/*
 * testutil.h - helpers shared by the C tests: the file layout, temporary
 * directories, file patching, hashing, a ring in a temporary directory,
 * numbered messages, and a library call run in a thread of its own (to
 * block in it while the test goes on). Include after runner.h.
 */
#ifndef RB_TESTUTIL_H
#define RB_TESTUTIL_H

#include "ringbuf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TU_UNUSED __attribute__((unused))

/* File layout (csrc/internal.h, docs/format.md). */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_HEADER_SIZE = 12,
    OFF_CAPACITY = 16,
    OFF_MAX_MESSAGE = 24,
    OFF_STATE = 32,
    OFF_FLAGS = 36,
    OFF_CREATED_NS = 40,
    OFF_SLOT_COUNT = 48,
    OFF_SLOT_SIZE = 52,
    OFF_FILE_ID = 56, /* 16 random bytes */
    OFF_TAIL = 128,
    OFF_HEAD = 256,
    OFF_RECLAIM_TURN = 264, /* the reclaim lock */
    /* The wait queues: a futex word and a count of the sleepers on it. */
    OFF_TURN_SEQ = 268,
    OFF_TURN_WAITERS = 272,
    OFF_DATA_SEQ = 384,
    OFF_DATA_WAITERS = 388,
    OFF_SPACE_SEQ = 512,
    OFF_SPACE_WAITERS = 516,
    OFF_SLOTS_USED = 640,
    OFF_GROUPS_USED = 644,
    /* The slot table follows the header page: one slot per open handle. */
    OFF_SLOTS = 4096,
    SLOT_COUNT = 512,
    SLOT_SIZE = 512,
    SLOT_OFF_GEN = 0,
    SLOT_OFF_PID = 4,
    SLOT_OFF_COUNT_OWN = 128, /* a handle's counters (docs/format.md, "Counters") */
    SLOT_OFF_COUNT_SHARED = 256,
    SLOT_OFF_GROUP = 20,
    SLOT_OFF_GROUP_GEN = 24,
    /* The group table follows the slot table: entry 0 is the default group. */
    OFF_GROUPS = OFF_SLOTS + SLOT_COUNT * SLOT_SIZE,
    GROUP_COUNT = 64,
    GROUP_SIZE = 256,
    GROUP_OFF_HEAD = 0,
    GROUP_OFF_TURN = 8,
    GROUP_OFF_GEN = 12,
    GROUP_OFF_LOST_PENDING = 16,
    GROUP_OFF_LOST = 24,
    GROUP_OFF_OWNER = 32,
    GROUP_OFF_KIND = 36,
    GROUP_OFF_CREATED_NS = 40,
    GROUP_OFF_NAME = 128,
    /* Bytes before the data region: the header page, the slot and group tables. */
    HEADER_SIZE = OFF_GROUPS + GROUP_COUNT * GROUP_SIZE
};
#define STATE_READY 0x59444552u
#define REC_BUSY 0x01u
#define REC_DISCARD 0x02u

/* Bytes a message of len bytes occupies in the ring. */
static inline uint64_t rec_size(uint64_t len) { return (8u + len + 7u) & ~(uint64_t)7u; }

static inline uint64_t rec_word(uint64_t len, uint32_t flags, uint32_t writer)
{
    return len | ((uint64_t)(flags & 0xFFu) << 32) | ((uint64_t)(writer & 0xFFFFFFu) << 40);
}

/* Offset in the file of slot's field at off (SLOT_OFF_*). */
static inline off_t slot_off(uint32_t slot, off_t off) { return OFF_SLOTS + (off_t)slot * SLOT_SIZE + off; }

/* The id (slot | generation << 9) that the handle owning slot writes into
 * record words and the read turn (the first handle opened on a fresh ring
 * has slot 0, generation 1: id 512). */
static inline uint32_t slot_id(uint32_t slot, uint32_t gen) { return slot | gen << 9; }

/* A fresh directory under $TMPDIR or /tmp; the caller frees the string. */
static TU_UNUSED char *tu_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    size_t n = strlen(base) + 32;
    char *p = malloc(n);
    if (p == NULL)
        return NULL;
    snprintf(p, n, "%s/rbtest.XXXXXX", base);
    if (mkdtemp(p) == NULL) {
        fprintf(stdout, "mkdtemp(%s) failed: %s\n", p, strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

/* Removes a directory tree (no symlinks followed). */
static TU_UNUSED int tu_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *c = malloc(n);
        if (c == NULL) {
            rc = -1;
            break;
        }
        snprintf(c, n, "%s/%s", path, e->d_name);
        if (tu_rmtree(c) != 0)
            rc = -1;
        free(c);
    }
    closedir(d);
    if (rmdir(path) != 0)
        rc = -1;
    return rc;
}

/* dir + "/" + name in a static ring of buffers (good for a few at a time). */
static TU_UNUSED const char *tu_path(const char *dir, const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

/* Number of entries in dir other than . and ..; names joined by ' ' into
 * list (if not NULL). -1 on error. */
static TU_UNUSED int tu_count_entries(const char *dir, char *list, size_t list_size)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    if (list != NULL && list_size > 0)
        list[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        if (list != NULL) {
            size_t used = strlen(list);
            snprintf(list + used, list_size - used, "%s%s", used ? " " : "", e->d_name);
        }
    }
    closedir(d);
    return n;
}

/* Writes len bytes at off of the file at path. 0 or -1. */
static TU_UNUSED int tu_patch(const char *path, off_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = pwrite(fd, data, len, off);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static TU_UNUSED int tu_patch_u32(const char *path, off_t off, uint32_t v) { return tu_patch(path, off, &v, sizeof v); }
static TU_UNUSED int tu_patch_u64(const char *path, off_t off, uint64_t v) { return tu_patch(path, off, &v, sizeof v); }

static TU_UNUSED int tu_pread(const char *path, off_t off, void *data, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = pread(fd, data, len, off);
    close(fd);
    return r == (ssize_t)len ? 0 : -1;
}

static TU_UNUSED uint64_t tu_read_u64(const char *path, off_t off)
{
    uint64_t v = 0xDEADDEADDEADDEADull;
    if (tu_pread(path, off, &v, sizeof v) != 0)
        fprintf(stdout, "tu_read_u64(%s, %ld) failed\n", path, (long)off);
    return v;
}

static TU_UNUSED uint32_t tu_read_u32(const char *path, off_t off)
{
    uint32_t v = 0xDEADDEADu;
    if (tu_pread(path, off, &v, sizeof v) != 0)
        fprintf(stdout, "tu_read_u32(%s, %ld) failed\n", path, (long)off);
    return v;
}

/* The id of the handle owning (or that last owned) slot of the ring file at
 * path, read from the slot's generation. */
static TU_UNUSED uint32_t tu_slot_id(const char *path, uint32_t slot)
{
    return slot_id(slot, tu_read_u32(path, slot_off(slot, SLOT_OFF_GEN)));
}

/* Reads a whole file into a malloc'd buffer. */
static TU_UNUSED unsigned char *tu_slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *b = malloc(n ? n : 1);
    if (b == NULL || (n > 0 && pread(fd, b, n, 0) != (ssize_t)n)) {
        free(b);
        close(fd);
        return NULL;
    }
    close(fd);
    *len = n;
    return b;
}

static TU_UNUSED int tu_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t w = len ? write(fd, data, len) : 0;
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static TU_UNUSED off_t tu_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : (off_t)-1;
}

/* FNV-1a, 64 bit. */
static inline uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ull

/* splitmix64: a good 64-bit mix / PRNG step. */
static inline uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Fills buf with bytes derived from seed (a different stream per seed). */
static inline void fill_pattern(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t s = mix64(seed);
    size_t i = 0;
    while (i + 8 <= len) {
        s = mix64(s);
        memcpy(buf + i, &s, 8);
        i += 8;
    }
    if (i < len) {
        s = mix64(s);
        memcpy(buf + i, &s, len - i);
    }
}

/* ---- time ------------------------------------------------------------------- */

static TU_UNUSED int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A positive number from the environment, else dflt. */
static TU_UNUSED double env_double(const char *name, double dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return dflt;
    char *end;
    double d = strtod(v, &end);
    return (end != v && d > 0) ? d : dflt;
}

/* ---- rings and messages ----------------------------------------------------- */

#define MS 1000000LL
#define SEC 1000000000LL
/* A blocking call this long is suspicious: about one park cap (100 ms). */
#define SLOW_NS (90 * MS)

/* Recognisable non-NULL pointers that must come back untouched. */
#define PSENT ((const void *)(uintptr_t)0x5e5e5e58)
#define WSENT ((void *)(uintptr_t)0x5e5e5e58)

static TU_UNUSED int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static TU_UNUSED void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / SEC, .tv_nsec = ns % SEC};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static TU_UNUSED int verbose(void)
{
    const char *v = getenv("RT_VERBOSE");
    return v != NULL && *v != '\0' && strcmp(v, "0") != 0;
}

/* The id that the fixture's handle (the first opened on its ring: slot 0)
 * writes into record words and the read turn. */
static TU_UNUSED uint32_t writer_id(const char *path) { return tu_slot_id(path, 0); }

/* A ring in a fresh temporary directory, both removed at scope exit. */
struct fx {
    char *dir;
    char path[512];
    rb_ring *rb;
};

static TU_UNUSED void fx_cleanup(struct fx *f)
{
    if (f->rb != NULL)
        rb_close(f->rb);
    if (f->dir != NULL) {
        tu_rmtree(f->dir);
        free(f->dir);
    }
}

static TU_UNUSED int fx_open(struct fx *f, size_t cap)
{
    f->dir = tu_mkdtemp();
    if (f->dir == NULL)
        return 0;
    snprintf(f->path, sizeof f->path, "%s/ring", f->dir);
    int rc = rb_create(f->path, cap, 0, &f->rb);
    if (rc != RB_OK) {
        FAILF("rb_create(%s) -> %d (%s)", f->path, rc, rb_strerror(rc));
        f->rb = NULL;
        return 0;
    }
    return 1;
}

#define AUTO_FX(f) __attribute__((cleanup(fx_cleanup))) struct fx f = {0}

static TU_UNUSED void dir_cleanup(char **p)
{
    if (*p != NULL) {
        tu_rmtree(*p);
        free(*p);
    }
}

/* A fresh temporary directory, removed when the variable goes out of scope. */
#define AUTO_DIR(d) __attribute__((cleanup(dir_cleanup))) char *d = tu_mkdtemp()

static TU_UNUSED void ring_cleanup(rb_ring **p)
{
    if (*p != NULL)
        rb_close(*p);
}
#define AUTO_RING(r) __attribute__((cleanup(ring_cleanup))) rb_ring *r = NULL

static TU_UNUSED uint64_t g_head, g_tail;
static TU_UNUSED int positions(rb_ring *rb) { return rb_positions(rb, &g_head, &g_tail); }

/* Message number seq: length from the caller, bytes from seq. */
static TU_UNUSED void make_msg(void *buf, size_t len, uint64_t seq) { fill_pattern(buf, len, seq * 0x10001u + len); }

/* Writes message seq of length len; returns the status. Up to 4 KiB it
 * does not allocate: test_crash writes from a signal handler. */
static TU_UNUSED int put(rb_ring *rb, uint64_t seq, size_t len)
{
    unsigned char small[4096];
    unsigned char *b = len <= sizeof small ? small : malloc(len);
    make_msg(b, len, seq);
    int rc = rb_write(rb, b, len);
    if (b != small)
        free(b);
    return rc;
}

/* put() with rb_write_wait. */
static TU_UNUSED int put_wait(rb_ring *rb, uint64_t seq, size_t len, int64_t timeout_ns)
{
    unsigned char small[4096];
    unsigned char *b = len <= sizeof small ? small : malloc(len);
    make_msg(b, len, seq);
    int rc = rb_write_wait(rb, b, len, timeout_ns);
    if (b != small)
        free(b);
    return rc;
}

/* Cuts the len bytes at buf into 1 to max vectors at points drawn from
 * seed: any may be empty (then its base is sometimes NULL), and the empty
 * ones also come first and last. Returns how many. */
static TU_UNUSED int tu_split(const void *buf, size_t len, uint64_t seed, struct iovec *iov, int max)
{
    unsigned char *b = (unsigned char *)(uintptr_t)buf;
    int n = 1 + (int)(mix64(seed) % (uint64_t)max);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        seed = mix64(seed);
        size_t k = len - off;
        if (i < n - 1)
            k = (seed & 3) == 0 ? 0 : (size_t)(seed >> 8) % (k + 1);
        iov[i].iov_base = k == 0 && (seed & 4) ? NULL : b + off;
        iov[i].iov_len = k;
        off += k;
    }
    return n;
}

/* put() with rb_writev: message seq of length len, cut into up to 16
 * vectors (tu_split with seed). */
static TU_UNUSED int putv(rb_ring *rb, uint64_t seq, size_t len, uint64_t seed)
{
    unsigned char small[4096];
    unsigned char *b = len <= sizeof small ? small : malloc(len);
    make_msg(b, len, seq);
    struct iovec iov[16];
    int rc = rb_writev(rb, iov, tu_split(b, len, seed, iov, 16));
    if (b != small)
        free(b);
    return rc;
}

/* Is buf message seq of length len? */
static TU_UNUSED int is_msg(const void *buf, size_t got, uint64_t seq, size_t len)
{
    if (got != len)
        return 0;
    unsigned char *e = malloc(len ? len : 1);
    make_msg(e, len, seq);
    int ok = memcmp(buf, e, len) == 0;
    free(e);
    return ok;
}

/* Reads one message (non-blocking) and checks it is message seq of len. */
static TU_UNUSED int get_check(rb_ring *rb, uint64_t seq, size_t len, const char *file, int line)
{
    size_t cap = len + 64, got = (size_t)-1;
    unsigned char *b = malloc(cap);
    int rc = rb_read(rb, b, cap, &got);
    int ok = rc == RB_OK && is_msg(b, got, seq, len);
    if (rc != RB_OK)
        rt_fail(file, line, "rb_read for seq %llu -> %d (%s)", (unsigned long long)seq, rc, rb_strerror(rc));
    else if (!ok)
        rt_fail(file, line, "seq %llu: got %zu bytes, expected message of %zu (or its bytes differ)",
                (unsigned long long)seq, got, len);
    free(b);
    return ok;
}
#define GET_CHECK(rb, seq, len) get_check((rb), (seq), (len), __FILE__, __LINE__)

/* Writes messages seq0, seq0 + 1, ... until the ring is exactly full (not
 * even a 1-byte message fits); returns how many, their lengths in lens. */
static TU_UNUSED int fill_exact(rb_ring *rb, uint64_t seq0, size_t *lens, int max)
{
    uint64_t h, t;
    if (rb_positions(rb, &h, &t) != RB_OK)
        return -1;
    uint64_t free_b = rb_capacity(rb) - (t - h), maxrec = rec_size(rb_max_message_size(rb));
    int n = 0;
    while (free_b >= 16 && n < max) {
        uint64_t rec = free_b < maxrec ? free_b : maxrec;
        if (free_b - rec == 8)
            rec -= 8; /* leave 16, not 8 */
        size_t len = (size_t)(rec - 8);
        if (put(rb, seq0 + (uint64_t)n, len) != RB_OK)
            return -1;
        lens[n++] = len;
        free_b -= rec;
    }
    return free_b == 0 ? n : -1;
}

/* Nonzero bytes of the data region of the ring file at path (capacity
 * cap) at positions [from, to), taken modulo cap; -1 if unreadable. */
static TU_UNUSED long tu_data_nonzero(const char *path, uint64_t cap, uint64_t from, uint64_t to)
{
    size_t n;
    unsigned char *f = tu_slurp(path, &n);
    long nz = -1;
    if (f != NULL && n == HEADER_SIZE + cap) {
        nz = 0;
        for (uint64_t p = from; p < to; p++)
            nz += f[HEADER_SIZE + (p & (cap - 1))] != 0;
    }
    free(f);
    return nz;
}

/* Reads consume nothing in the file: they move their group's head, and a
 * writer that needs the space zeroes what every group read (the reclaim,
 * moving head at offset 256). Writes messages seq0, seq0 + 1, ... of len
 * bytes until one of them reclaims (head moves); returns how many, -1 on
 * a failed write or none after max. */
static TU_UNUSED int tu_write_until_reclaim(rb_ring *rb, const char *path, uint64_t seq0, size_t len, int max)
{
    const uint64_t h0 = tu_read_u64(path, OFF_HEAD);
    for (int n = 0; n < max;) {
        if (put(rb, seq0 + (uint64_t)n, len) != RB_OK)
            return -1;
        n++;
        if (tu_read_u64(path, OFF_HEAD) != h0)
            return n;
    }
    return -1;
}

/* Polls the 32-bit word at off of the file until it is >= n. */
static TU_UNUSED int wait_word(const char *path, off_t off, uint32_t n, double seconds)
{
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        if (tu_read_u32(path, off) >= n)
            return 1;
        if (now_ns() > end)
            return 0;
        sleep_ns(200000);
    }
}
#define WAIT_PARKED(path, off, n)                                                                   \
    (wait_word((path), (off), (n), 10.0)                                                            \
         ? 1                                                                                        \
         : (FAILF("no %u waiter(s) parked at offset %d within 10 s", (unsigned)(n), (int)(off)), 0))

/* Waits for a child for up to seconds; kills it if it is still running.
 * Returns its status, or -1 if it had to be killed. */
static TU_UNUSED int wait_child(pid_t pid, double seconds)
{
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        int status;
        pid_t p = waitpid(pid, &status, WNOHANG);
        if (p == pid)
            return status;
        if (p < 0 && errno != EINTR)
            return -2;
        if (now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleep_ns(MS);
    }
}

static TU_UNUSED int child_alive(pid_t pid)
{
    int status;
    return waitpid(pid, &status, WNOHANG) == 0;
}

#define CHECK_CHILD_OK(st, what)                                                                    \
    do {                                                                                            \
        int st_ = (st);                                                                             \
        if (st_ == -1)                                                                              \
            FAILF("%s: child still running at the time limit; killed", what);                       \
        else if (st_ < 0 || !WIFEXITED(st_) || WEXITSTATUS(st_) != 0)                               \
            FAILF("%s: child ended with status 0x%x (exit code %d)", what, st_,                     \
                  st_ >= 0 && WIFEXITED(st_) ? WEXITSTATUS(st_) : -1);                              \
    } while (0)

/* ---- a call in a thread of its own ------------------------------------------ */

enum op {
    OP_READ_WAIT,
    OP_READ_MANY_WAIT,
    OP_PEEK_WAIT,
    OP_WRITE_WAIT,
    OP_WRITE_MANY_WAIT,
    OP_RESERVE_WAIT,
    OP_READ,       /* non-blocking */
    OP_WRITE,      /* non-blocking */
    OP_PEEK,       /* non-blocking, then rb_release */
    OP_WRITEV_WAIT /* msg in three vectors: a third, none, the rest */
};
static TU_UNUSED const char *const op_names[] = {"rb_read_wait",    "rb_read_many_wait", "rb_peek_wait",
                                       "rb_write_wait",   "rb_write_many_wait", "rb_reserve_wait",
                                       "rb_read",         "rb_write",          "rb_peek",
                                       "rb_writev_wait"};

struct call {
    rb_ring *rb;
    enum op op;
    int64_t timeout_ns;
    int64_t delay_ns;         /* sleep this long first */
    int idle_cpu;             /* > 0: run on CPU idle_cpu - 1 under SCHED_IDLE */
    const unsigned char *msg; /* writes: the message (write_many: packed) */
    size_t len;               /* writes: its length; reads: buffer size (0: all of buf) */
    const size_t *lens;       /* write_many */
    size_t nlens;
    /* results */
    int rc;
    int fin_rc;       /* rb_commit after a reservation, rb_release after a peek */
    size_t got;       /* read length / peek length */
    size_t count;     /* read_many count, write_many written */
    size_t rlens[16]; /* read_many lengths */
    void *ptr;        /* reservation */
    const void *pptr; /* peek */
    unsigned char buf[8192];
    int64_t t0, t1, cpu_ns;
    long nvcsw, nivcsw;
    pthread_t th;
    int started;
    atomic_int done;
};

static TU_UNUSED void call_init(struct call *c, rb_ring *rb, enum op op, int64_t timeout_ns)
{
    memset(c, 0, sizeof *c);
    c->rb = rb;
    c->op = op;
    c->timeout_ns = timeout_ns;
    c->rc = c->fin_rc = 12345;
    c->got = 777;
    c->count = 99;
    c->ptr = WSENT;
    c->pptr = PSENT;
}

/* Runs the call in the calling thread. A successful reservation is filled
 * with msg and committed, a successful peek copied to buf and released. */
static TU_UNUSED void *call_main(void *arg)
{
    struct call *c = arg;
    if (c->idle_cpu > 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(c->idle_cpu - 1, &one);
        struct sched_param sp = {0};
        if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0 ||
            pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
            c->idle_cpu = -1; /* tell the caller */
    }
    if (c->delay_ns > 0)
        sleep_ns(c->delay_ns);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_THREAD, &ru0);
    int64_t cpu0 = thread_cpu_ns();
    c->t0 = now_ns();
    const size_t bsize = c->len && c->len < sizeof c->buf ? c->len : sizeof c->buf;
    switch (c->op) {
    case OP_READ_WAIT:
        c->rc = rb_read_wait(c->rb, c->buf, bsize, &c->got, c->timeout_ns);
        break;
    case OP_READ:
        c->rc = rb_read(c->rb, c->buf, bsize, &c->got);
        break;
    case OP_READ_MANY_WAIT:
        c->rc = rb_read_many_wait(c->rb, c->buf, bsize, c->rlens, 16, &c->count, c->timeout_ns);
        if (c->rc == RB_OK)
            c->got = c->rlens[0];
        break;
    case OP_PEEK_WAIT:
    case OP_PEEK:
        c->rc = c->op == OP_PEEK ? rb_peek(c->rb, &c->pptr, &c->got)
                                 : rb_peek_wait(c->rb, &c->pptr, &c->got, c->timeout_ns);
        if (c->rc == RB_OK) {
            memcpy(c->buf, c->pptr, c->got < sizeof c->buf ? c->got : sizeof c->buf);
            c->fin_rc = rb_release(c->rb);
        }
        break;
    case OP_WRITE_WAIT:
        c->rc = rb_write_wait(c->rb, c->msg, c->len, c->timeout_ns);
        break;
    case OP_WRITE:
        c->rc = rb_write(c->rb, c->msg, c->len);
        break;
    case OP_WRITE_MANY_WAIT:
        c->rc = rb_write_many_wait(c->rb, c->msg, c->lens, c->nlens, &c->count, c->timeout_ns);
        break;
    case OP_WRITEV_WAIT: {
        unsigned char *m = (unsigned char *)(uintptr_t)c->msg;
        struct iovec v[3] = {{m, c->len / 3}, {NULL, 0}, {m + c->len / 3, c->len - c->len / 3}};
        c->rc = rb_writev_wait(c->rb, v, 3, c->timeout_ns);
        break;
    }
    case OP_RESERVE_WAIT:
        c->rc = rb_reserve_wait(c->rb, c->len, &c->ptr, c->timeout_ns);
        if (c->rc == RB_OK) {
            memcpy(c->ptr, c->msg, c->len);
            c->fin_rc = rb_commit(c->rb, c->ptr);
        }
        break;
    }
    c->t1 = now_ns();
    c->cpu_ns = thread_cpu_ns() - cpu0;
    getrusage(RUSAGE_THREAD, &ru1);
    c->nvcsw = ru1.ru_nvcsw - ru0.ru_nvcsw;
    c->nivcsw = ru1.ru_nivcsw - ru0.ru_nivcsw;
    atomic_store(&c->done, 1);
    return NULL;
}

static TU_UNUSED int call_start(struct call *c)
{
    atomic_store(&c->done, 0);
    c->started = pthread_create(&c->th, NULL, call_main, c) == 0;
    if (!c->started)
        FAILF("pthread_create failed");
    return c->started;
}

static TU_UNUSED int call_done(struct call *c) { return atomic_load(&c->done); }

/* Waits up to seconds for the call to return; joins it if it did. */
static TU_UNUSED int call_join(struct call *c, double seconds)
{
    if (!c->started)
        return 0;
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    while (!atomic_load(&c->done)) {
        if (now_ns() > end)
            return 0;
        sleep_ns(500000);
    }
    pthread_join(c->th, NULL);
    c->started = 0;
    return 1;
}

/* Joins the call; a call that does not return within seconds is a failure,
 * and is then ended with rb_shutdown on its handle. */
static TU_UNUSED int call_finish(struct call *c, double seconds, const char *file, int line)
{
    if (!c->started)
        return 0;
    if (call_join(c, seconds))
        return 1;
    rt_fail(file, line, "%s did not return within %.1f s", op_names[c->op], seconds);
    rb_shutdown(c->rb);
    if (!call_join(c, 10.0)) {
        fprintf(stdout, "%s:%d: %s still blocked 10 s after rb_shutdown; giving up\n", file, line,
                op_names[c->op]);
        fflush(stdout);
        _exit(3);
    }
    return 0;
}
#define CALL_FINISH(c, s) call_finish((c), (s), __FILE__, __LINE__)

static TU_UNUSED double secs(int64_t ns) { return (double)ns / 1e9; }

#endif /* RB_TESTUTIL_H */
