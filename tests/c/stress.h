/*
 * stress.h - what the stress runs of test_stress.c and test_wait_stress.c
 * share: producers and consumers on one ring, as threads or as processes,
 * each consumer logging every message it gets, and at the end the
 * exactly-once and per-producer order checks over those logs.
 *
 * A test embeds struct st_run as the first member of its own run state and
 * keeps its own message format, producers and consumers. Log entries are
 * producer << 56 | seq, or, for messages too short to name their seq,
 * producer << 56 | ST_TINY | whatever the message carries (checked as a
 * multiset per producer).
 *
 * Include after runner.h, testutil.h and ringbuf.h.
 */
#ifndef RB_STRESS_H
#define RB_STRESS_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define ST_MAXP 8
#define ST_MAXC 8
#define ST_MAX_REPORTS 10
#define ST_TINY (1ull << 55)
#define ST_SEQ_MASK (ST_TINY - 1)

/* Shared by all workers: in a MAP_SHARED anonymous mapping (st_map) so that
 * forked children write into the parent's copy. */
struct st_run {
    const char *name;
    int nprod, ncons;
    int processes;      /* fork instead of threads */
    int shared_handle;  /* threads: all use one handle (else one each) */
    uint64_t per_prod, total, salt;
    char path[512];
    rb_ring *shared;    /* threads, shared_handle */
    int64_t deadline;   /* now_ns() */
    atomic_int abort;
    _Atomic uint64_t errors, received;
    _Atomic uint64_t nlog[ST_MAXC];
    uint64_t *log[ST_MAXC]; /* in the same mapping */
};

/* A worker: i < nprod are producers, or whatever order the test chooses. */
typedef void (*st_fn)(struct st_run *r, int i);

/* The message count per producer: n scaled, at least 1000, at most max. */
static TU_UNUSED uint64_t st_scaled(uint64_t n, double scale, uint64_t max)
{
    uint64_t v = (uint64_t)((double)n * scale);
    if (v < 1000)
        v = 1000;
    return v > max ? max : v;
}

/* Maps run_size bytes of run state (struct st_run first, initialised from
 * init: name, nprod, ncons, processes, shared_handle, per_prod) and the
 * consumers' logs; NULL on failure. Unmap *maplen bytes. */
static TU_UNUSED void *st_map(size_t run_size, const struct st_run *init, size_t *maplen)
{
    const uint64_t total = init->per_prod * (uint64_t)init->nprod;
    const size_t logbytes = (size_t)total * sizeof(uint64_t);
    *maplen = run_size + (size_t)init->ncons * logbytes;
    void *map = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    memset(map, 0, run_size);
    struct st_run *r = map;
    r->name = init->name;
    r->nprod = init->nprod;
    r->ncons = init->ncons;
    r->processes = init->processes;
    r->shared_handle = init->shared_handle;
    r->per_prod = init->per_prod;
    r->total = total;
    r->salt = mix64((uint64_t)(uintptr_t)init->name);
    for (int c = 0; c < init->ncons; c++)
        r->log[c] = (uint64_t *)(void *)((char *)map + run_size + (size_t)c * logbytes);
    return map;
}

/* A failure of the run: the first ST_MAX_REPORTS are printed, the rest
 * only counted. */
static void st_report(struct st_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static TU_UNUSED void st_report(struct st_run *r, const char *fmt, ...)
{
    uint64_t n = atomic_fetch_add(&r->errors, 1);
    if (n < ST_MAX_REPORTS) {
        char m[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m, sizeof m, fmt, ap);
        va_end(ap);
        FAILF("%s: %s", r->name, m);
    } else {
        atomic_fetch_add(&rt_failures, 1);
    }
}

/* 1 if the run was aborted or is past its deadline (which aborts it). */
static TU_UNUSED int st_timed_out(struct st_run *r)
{
    if (atomic_load_explicit(&r->abort, memory_order_relaxed))
        return 1;
    if (now_ns() > r->deadline) {
        if (atomic_exchange(&r->abort, 1) == 0)
            st_report(r, "timed out: %llu of %llu messages received", (unsigned long long)atomic_load(&r->received),
                      (unsigned long long)r->total);
        return 1;
    }
    return 0;
}

/* The handle a worker uses: the shared one, or its own (*own = 1, close it). */
static TU_UNUSED rb_ring *st_ring(struct st_run *r, int *own)
{
    *own = 0;
    if (!r->processes && r->shared_handle)
        return r->shared;
    rb_ring *rb = NULL;
    int rc = rb_open(r->path, &rb);
    if (rc != RB_OK) {
        st_report(r, "rb_open(%s) -> %d (%s)", r->path, rc, rb_strerror(rc));
        atomic_store(&r->abort, 1);
        return NULL;
    }
    *own = 1;
    return rb;
}

/* Counts a received message and logs its entry e in consumer id's log
 * (UINT64_MAX: broken, already reported). */
static TU_UNUSED void st_log(struct st_run *r, int id, uint64_t e)
{
    if (e != UINT64_MAX) {
        uint64_t n = atomic_load_explicit(&r->nlog[id], memory_order_relaxed);
        if (n < r->total) {
            r->log[id][n] = e;
            atomic_store_explicit(&r->nlog[id], n + 1, memory_order_relaxed);
        } else {
            st_report(r, "consumer %d received more than %llu messages", id, (unsigned long long)r->total);
        }
    }
    atomic_fetch_add_explicit(&r->received, 1, memory_order_relaxed);
}

/* Forks n workers, child i running fn(r, i) and exiting 1 if it failed a
 * check; their pids in pids. Returns how many were started. */
static TU_UNUSED int st_fork(struct st_run *r, int n, st_fn fn, pid_t *pids)
{
    int np = 0;
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            FAILF("fork: %s", strerror(errno));
            atomic_store(&r->abort, 1);
            break;
        }
        if (pid == 0) {
            /* The child does not use the parent's handle. */
            fn(r, i);
            _exit(atomic_load(&rt_failures) != 0 ? 1 : 0);
        }
        pids[np++] = pid;
    }
    return np;
}

/* A worker thread: fn(r, i). */
struct st_worker {
    struct st_run *r;
    int i;
    st_fn fn;
};

static TU_UNUSED void *st_thread_main(void *arg)
{
    struct st_worker *w = arg;
    w->fn(w->r, w->i);
    return NULL;
}

static TU_UNUSED int st_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The log entry message seq of producer p must come out as, and its length. */
typedef uint64_t (*st_expect_fn)(const struct st_run *r, int p, uint64_t seq, size_t *len);

/* Every message received exactly once (the tiny ones: as a multiset per
 * producer), and in each consumer's log each producer's seqs increasing. */
static TU_UNUSED void st_check_logs(struct st_run *r, st_expect_fn expect)
{
    const int np = r->nprod, nc = r->ncons;
    const uint64_t N = r->per_prod;
    unsigned char *seen = calloc((size_t)np * N, 1);
    uint64_t nrecv = 0;
    for (int c = 0; c < nc; c++)
        nrecv += atomic_load(&r->nlog[c]);
    uint64_t *got = malloc((size_t)(nrecv + 1) * sizeof(uint64_t));
    uint64_t *want = malloc((size_t)(np * N + 1) * sizeof(uint64_t));
    uint64_t ngot = 0, nwant = 0, dups = 0, order = 0, missing = 0;
    for (int c = 0; c < nc; c++) {
        uint64_t last[ST_MAXP];
        int have[ST_MAXP] = {0};
        const uint64_t n = atomic_load(&r->nlog[c]);
        for (uint64_t i = 0; i < n; i++) {
            const uint64_t e = r->log[c][i];
            const int p = (int)(e >> 56);
            if (e & ST_TINY) {
                got[ngot++] = e;
                continue;
            }
            const uint64_t s = e & ST_SEQ_MASK;
            if (seen[(size_t)p * N + s]++ != 0 && dups++ < ST_MAX_REPORTS)
                FAILF("%s: producer %d seq %llu received twice", r->name, p, (unsigned long long)s);
            if (have[p] && s <= last[p] && order++ < ST_MAX_REPORTS)
                FAILF("%s: consumer %d got producer %d seq %llu after seq %llu", r->name, c, p, (unsigned long long)s,
                      (unsigned long long)last[p]);
            last[p] = s;
            have[p] = 1;
        }
    }
    for (int p = 0; p < np; p++) {
        for (uint64_t s = 0; s < N; s++) {
            size_t len;
            const uint64_t e = expect(r, p, s, &len);
            if (e & ST_TINY)
                want[nwant++] = e;
            else if (seen[(size_t)p * N + s] == 0 && missing++ < ST_MAX_REPORTS)
                FAILF("%s: producer %d seq %llu (%zu bytes) never received", r->name, p, (unsigned long long)s, len);
        }
    }
    /* Sorted, each producer's tiny entries are one range. */
    qsort(got, (size_t)ngot, sizeof(uint64_t), st_cmp_u64);
    qsort(want, (size_t)nwant, sizeof(uint64_t), st_cmp_u64);
    uint64_t g = 0, w = 0;
    for (int p = 0; p < np; p++) {
        const uint64_t g0 = g, w0 = w;
        while (g < ngot && (int)(got[g] >> 56) == p)
            g++;
        while (w < nwant && (int)(want[w] >> 56) == p)
            w++;
        if (g - g0 != w - w0 || memcmp(got + g0, want + w0, (size_t)(g - g0) * sizeof(uint64_t)) != 0)
            FAILF("%s: producer %d: the tiny messages received (%llu) differ from those sent (%llu)", r->name, p,
                  (unsigned long long)(g - g0), (unsigned long long)(w - w0));
    }
    if (dups > ST_MAX_REPORTS || order > ST_MAX_REPORTS || missing > ST_MAX_REPORTS)
        FAILF("%s: %llu duplicates, %llu out of order, %llu missing in all", r->name, (unsigned long long)dups,
              (unsigned long long)order, (unsigned long long)missing);
    free(got);
    free(want);
    free(seen);
}

/* The data region of a ring file (capacity cap, max_message max), read
 * whole: nonzero bytes in the free part [tail, reclaimed + cap) (0 is
 * right), and whether [reclaimed, tail) is a chain of finished records
 * (committed or discarded) ending exactly at tail. */
static TU_UNUSED size_t st_check_region(const char *path, size_t cap, uint64_t max, uint64_t reclaimed, uint64_t tail)
{
    size_t n, nonzero = 0;
    unsigned char *f = tu_slurp(path, &n);
    if (!CHECK(f != NULL && n == HEADER_SIZE + cap) || !CHECK(reclaimed <= tail && tail - reclaimed <= cap)) {
        free(f);
        return (size_t)-1;
    }
    const unsigned char *d = f + HEADER_SIZE;
    for (uint64_t p = tail; p < reclaimed + cap; p++)
        nonzero += d[p & (cap - 1)] != 0;
    uint64_t p = reclaimed;
    while (p < tail) {
        uint64_t w;
        memcpy(&w, d + (p & (cap - 1)), 8);
        const uint64_t len = w & 0xFFFFFFFFu;
        const uint32_t fl = (uint32_t)(w >> 32) & 0xFFu;
        if (w == 0 || (fl & ~(uint32_t)REC_DISCARD) != 0 || len > max || (len == 0 && fl != REC_DISCARD) ||
            rec_size(len) > tail - p) {
            FAILF("record word 0x%016llx at %llu ([reclaimed %llu, tail %llu) should hold finished records)",
                  (unsigned long long)w, (unsigned long long)p, (unsigned long long)reclaimed,
                  (unsigned long long)tail);
            break;
        }
        p += rec_size(len);
    }
    CHECK(p >= tail);
    free(f);
    return nonzero;
}

/* After a run: the ring is empty, nobody holds the default group's read
 * turn or the reclaim lock, and the ring is clean. Reads zero nothing: they
 * move their group's head; a writer that needs the space zeroes what every
 * group read (the reclaim, moving head at offset 256 up to the lowest
 * group head). So the free part [tail, reclaimed + capacity) is zero, and
 * [reclaimed, tail) holds finished records only; then 1-byte messages
 * until one needs the space make a writer reclaim all that was read: read
 * back, everything but them is zero. Returns the tail the run left. */
static TU_UNUSED uint64_t st_check_drained(rb_ring *rb, const char *path, size_t cap)
{
    uint64_t head = 0, tail = 0;
    CHECK_EQ(rb_positions(rb, &head, &tail), RB_OK);
    CHECK_EQ_U(head, tail);
    CHECK_EQ_U(tu_read_u32(path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    CHECK_EQ_U(tu_read_u32(path, OFF_RECLAIM_TURN), 0);
    const uint64_t max = rb_max_message_size(rb), reclaimed = tu_read_u64(path, OFF_HEAD);
    CHECK_EQ_U(st_check_region(path, cap, max, reclaimed, tail), 0);
    if (reclaimed == tail || head != tail)
        return tail; /* nothing read is left to reclaim (or the run failed) */
    const int k = tu_write_until_reclaim(rb, path, 0, 1, (int)(cap / 16) + 1);
    if (!CHECK(k > 0))
        return tail;
    CHECK_EQ_U(tu_read_u64(path, OFF_HEAD), tail);
    for (int i = 0; i < k; i++)
        GET_CHECK(rb, (uint64_t)i, 1);
    uint64_t h2 = 0, t2 = 0;
    CHECK_EQ(rb_positions(rb, &h2, &t2), RB_OK);
    CHECK_EQ_U(h2, t2);
    CHECK_EQ_U(t2 - tail, (uint64_t)k * rec_size(1));
    CHECK_EQ_U(st_check_region(path, cap, max, tail, t2), 0);
    return tail;
}

#endif /* RB_STRESS_H */
