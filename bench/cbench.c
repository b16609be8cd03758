/*
 * cbench.c - the C part of `invoke bench`, linked against libringbuf.so.
 *
 *   bench/build/cbench [--budget SECONDS] [--reps N] [--ring BYTES] [--dir DIR]
 *                      [--case PRODUCERS,SIZE,single|batch | --latency | --pair]
 *
 * Cases, each repeated --reps times (default 3) in fresh processes (fork)
 * on a new ring file in --dir (default /dev/shm), the median reported; the
 * repetitions interleave (every case once, then again), so that a change
 * in the machine's load weighs on all cases alike. --case runs one
 * throughput case alone (to profile it):
 *   - throughput: P producer processes (1, 2, 4) and one consumer process,
 *     64-byte and 4 KiB messages; single-message mode (rb_write_wait /
 *     rb_read_wait) and, for one producer, batched mode (rb_write_many_wait
 *     / rb_read_many_wait). Producers write for --budget seconds (default
 *     0.5), then an end marker with their count; the consumer checks every
 *     message's length and per-producer sequence number, the counts and the
 *     total bytes.
 *   - memcpy: in each round, the same total bytes as that round's
 *     1-producer single-message run, copied in the same message sizes from
 *     a source buffer like the producers' into a buffer of the ring's
 *     capacity, in one process; and a large-block memcpy bandwidth figure
 *     (64 MiB blocks). The physical reference.
 *   - ping-pong: 64-byte round trips between two processes over two rings
 *     with rb_write_wait / rb_read_wait, p50 and p99.
 * --latency runs only the wake-up latency case (--reps is ignored;
 * --budget is the time per kind of consumer, default 2 s in this mode):
 *   - latency: how long a sleeping consumer takes to get a message, from
 *     before the producer's rb_write to after the consumer's rb_read
 *     returns, p50 and p99, for a consumer in epoll_wait on rb_event_fd
 *     (then rb_read until RB_EEMPTY) and one blocked in rb_read_wait, in
 *     the same run: the producer alternates between them, one message at a
 *     time, LAT_GAP_NS apart (longer than the blocking calls' spin, so
 *     that both consumers are asleep when it comes), and waits for the
 *     consumer's acknowledgement (carrying the time it read the message)
 *     on a third ring. At most LAT_MAX rounds.
 * --pair runs only the call cost case (--reps runs of --budget seconds):
 *   - pair: one process, one handle, a loop of rb_write + rb_read of one
 *     64-byte message on a ring of --ring bytes: the library's cost per
 *     call pair without another process, the figure least moved by the
 *     machine's scheduling (bench/ab.py compares it across revisions).
 * Times come from CLOCK_MONOTONIC. Prints one JSON object on stdout
 * (progress on stderr); exits 1 if any case failed its checks.
 */
#define _GNU_SOURCE
#include <ringbuf.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXP 4
#define MAXREPS 15
#define BENCH_NAME "cbench"
#include "benchutil.h"
#define MARKER_LEN 16 /* end marker: producer id, count (no timed message is this long) */
#define SEQ_BITS 56
#define SEQ_MASK ((1ull << SEQ_BITS) - 1)
#define SRC_BYTES (2u << 20)      /* each producer's pre-built messages */
#define BATCH_BYTES (64u << 10)   /* a producer's batch */
#define READ_BYTES (256u << 10)   /* a batched consumer's buffer */
#define READ_COUNT 4096
#define LARGE_BLOCK (64u << 20)
#define PING_WARMUP 5000
#define PING_MAX 2000000
#define LAT_MAX 20000   /* latency rounds, both kinds together */
#define LAT_WARMUP 200  /* first rounds not counted */
#define LAT_GAP_NS 200000

static double budget_s = 0.5;
static int reps = 3;
static size_t ring_bytes = 1u << 20;
static const char *dir = "/dev/shm";
static int failures;

static rb_ring *open_ring(const char *path)
{
    rb_ring *rb;
    int rc = rb_open(path, &rb);
    if (rc != RB_OK)
        die("rb_open %s: %s", path, rb_strerror(rc));
    return rb;
}

static void create_ring(const char *path)
{
    rb_ring *rb;
    int rc = rb_create(path, ring_bytes, RB_REMOVE, &rb);
    if (rc != RB_OK)
        die("rb_create %s: %s", path, rb_strerror(rc));
    rb_close(rb);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}


/* Random bytes for the pre-built messages (xorshift, fixed seed). */
static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

/* ---- process plumbing ---------------------------------------------------- */


/* ---- throughput ---------------------------------------------------------- */

struct tp_shared {
    int64_t t_start[MAXP];
    int64_t t_end;
    uint64_t received, bytes, errors;
    uint64_t sent[MAXP];     /* from the end markers */
    uint64_t next_seq[MAXP]; /* what the consumer saw */
};

struct tp_result {
    double msgs_per_s, gb_per_s, seconds;
    uint64_t messages;
    int ok;
};

static void check(int rc, const char *what)
{
    if (rc != RB_OK) {
        fprintf(stderr, "cbench: %s: %s\n", what, rb_strerror(rc));
        _exit(4);
    }
}

static void producer(const char *path, int id, size_t size, int batched, struct gate *g, struct tp_shared *sh)
{
    rb_ring *rb = open_ring(path);
    size_t per_batch = batched ? (BATCH_BYTES / size > 0 ? BATCH_BYTES / size : 1) : 1;
    size_t pool = SRC_BYTES / size / per_batch * per_batch; /* messages, a multiple of the batch */
    if (pool == 0)
        pool = per_batch;
    unsigned char *src = malloc(pool * size);
    size_t *lens = malloc(per_batch * sizeof *lens);
    if (src == NULL || lens == NULL)
        die("out of memory");
    fill_random(src, pool * size, (uint64_t)id + 1);
    for (size_t i = 0; i < per_batch; i++)
        lens[i] = size;
    child_ready_and_wait(g);

    int64_t t0 = now_ns(), end = t0 + (int64_t)(budget_s * 1e9);
    sh->t_start[id] = t0;
    uint64_t seq = 0, tag = (uint64_t)id << SEQ_BITS;
    size_t k = 0; /* index in the pool */
    if (!batched) {
        for (;;) {
            if ((seq & 255) == 0 && now_ns() >= end)
                break;
            unsigned char *m = src + k * size;
            uint64_t word = tag | seq;
            memcpy(m, &word, 8);
            check(rb_write_wait(rb, m, size, -1), "rb_write_wait");
            seq++;
            if (++k == pool)
                k = 0;
        }
    } else {
        while (now_ns() < end) {
            unsigned char *m = src + k * size;
            for (size_t i = 0; i < per_batch; i++) {
                uint64_t word = tag | (seq + i);
                memcpy(m + i * size, &word, 8);
            }
            size_t done = 0;
            while (done < per_batch) {
                size_t written;
                check(rb_write_many_wait(rb, m + done * size, lens + done, per_batch - done, &written, -1),
                      "rb_write_many_wait");
                done += written;
            }
            seq += per_batch;
            k += per_batch;
            if (k == pool)
                k = 0;
        }
    }
    uint64_t marker[2] = {(uint64_t)id, seq};
    check(rb_write_wait(rb, marker, MARKER_LEN, -1), "rb_write_wait (marker)");
    rb_close(rb);
    _exit(0);
}

/* One received message: checks its length and sequence number. Returns 1
 * when it was the last end marker. */
static inline int account(struct tp_shared *sh, const unsigned char *m, size_t len, size_t size, int nprod,
                          int *markers)
{
    if (len == size) {
        uint64_t word;
        memcpy(&word, m, 8);
        uint64_t p = word >> SEQ_BITS, s = word & SEQ_MASK;
        if (p >= (uint64_t)nprod || s != sh->next_seq[p])
            sh->errors++;
        else
            sh->next_seq[p]++;
        sh->received++;
        sh->bytes += len;
        return 0;
    }
    if (len == MARKER_LEN) {
        uint64_t marker[2];
        memcpy(marker, m, sizeof marker);
        if (marker[0] >= (uint64_t)nprod)
            sh->errors++;
        else
            sh->sent[marker[0]] = marker[1];
        return ++*markers == nprod;
    }
    sh->errors++;
    return 0;
}

static void consumer(const char *path, size_t size, int nprod, int batched, struct gate *g, struct tp_shared *sh)
{
    rb_ring *rb = open_ring(path);
    unsigned char *buf = malloc(READ_BYTES);
    size_t *lens = malloc(READ_COUNT * sizeof *lens);
    if (buf == NULL || lens == NULL)
        die("out of memory");
    memset(buf, 0, READ_BYTES);
    child_ready_and_wait(g);
    int markers = 0, last = 0;
    while (!last) {
        if (!batched) {
            size_t len;
            check(rb_read_wait(rb, buf, READ_BYTES, &len, -1), "rb_read_wait");
            last = account(sh, buf, len, size, nprod, &markers);
        } else {
            size_t count;
            check(rb_read_many_wait(rb, buf, READ_BYTES, lens, READ_COUNT, &count, -1), "rb_read_many_wait");
            const unsigned char *m = buf;
            for (size_t i = 0; i < count; i++) {
                last |= account(sh, m, lens[i], size, nprod, &markers);
                m += lens[i];
            }
        }
    }
    sh->t_end = now_ns();
    rb_close(rb);
    _exit(0);
}

static struct tp_result throughput_once(int nprod, size_t size, int batched)
{
    char path[600];
    snprintf(path, sizeof path, "%s/cbench-%d.ring", dir, (int)getpid());
    create_ring(path);
    struct tp_shared *sh = shared_map(sizeof *sh);
    memset(sh, 0, sizeof *sh);
    struct gate g;
    gate_init(&g);
    pid_t pids[MAXP + 1];
    for (int i = 0; i <= nprod; i++) {
        pids[i] = spawn();
        if (pids[i] == 0) {
            if (i == nprod)
                consumer(path, size, nprod, batched, &g, sh);
            producer(path, i, size, batched, &g, sh);
        }
    }
    int bad = gate_run(&g, pids, nprod + 1, (int64_t)((budget_s * 20 + 10) * 1e9));
    unlink(path);
    struct tp_result r = {0};
    int64_t t0 = sh->t_start[0];
    uint64_t sent = 0;
    for (int i = 0; i < nprod; i++) {
        t0 = sh->t_start[i] < t0 ? sh->t_start[i] : t0;
        sent += sh->sent[i];
        if (sh->sent[i] != sh->next_seq[i])
            bad = 1;
    }
    if (bad || sh->errors != 0 || sh->received != sent || sh->bytes != sent * size || sh->t_end <= t0) {
        fprintf(stderr,
                "cbench: %d producer(s), %zu B: check failed (sent %llu, received %llu, bytes %llu, errors %llu)\n",
                nprod, size, (unsigned long long)sent, (unsigned long long)sh->received,
                (unsigned long long)sh->bytes, (unsigned long long)sh->errors);
        munmap(sh, sizeof *sh);
        return r;
    }
    r.seconds = (sh->t_end - t0) / 1e9;
    r.messages = sh->received;
    r.msgs_per_s = r.messages / r.seconds;
    r.gb_per_s = r.msgs_per_s * (double)size / 1e9;
    r.ok = 1;
    munmap(sh, sizeof *sh);
    return r;
}

/* ---- memcpy references ------------------------------------------------------ */

/* Copies messages of size bytes, count in all, from a pre-built source (as
 * a producer's) into a buffer of the ring's capacity; returns seconds. */
static double memcpy_messages(unsigned char *src, size_t pool, unsigned char *dst, size_t size, uint64_t count)
{
    size_t mask = ring_bytes - 1, off = 0, k = 0;
    int64_t t0 = now_ns();
    for (uint64_t i = 0; i < count; i++) {
        memcpy(dst + off, src + k * size, size);
        __asm__ __volatile__("" : : "r"(dst) : "memory");
        off = (off + size + 8) & mask; /* a record's header and payload */
        if (off + size > ring_bytes)
            off = 0;
        if (++k == pool)
            k = 0;
    }
    return (now_ns() - t0) / 1e9;
}

static double memcpy_large(void)
{
    unsigned char *a = malloc(LARGE_BLOCK), *b = malloc(LARGE_BLOCK);
    if (a == NULL || b == NULL)
        die("out of memory");
    fill_random(a, LARGE_BLOCK, 7);
    memset(b, 0, LARGE_BLOCK);
    int64_t t0 = now_ns(), end = t0 + (int64_t)(budget_s * 1e9);
    uint64_t copies = 0;
    do {
        memcpy(b, a, LARGE_BLOCK);
        __asm__ __volatile__("" : : "r"(b) : "memory");
        copies++;
    } while (now_ns() < end);
    double gb = copies * (double)LARGE_BLOCK / 1e9 / ((now_ns() - t0) / 1e9);
    free(a);
    free(b);
    return gb;
}

/* ---- ping-pong ----------------------------------------------------------- */

struct pp_shared {
    double p50_us, p99_us;
    uint64_t rounds;
};

static void pinger(const char *ping, const char *pong, struct gate *g, struct pp_shared *sh)
{
    rb_ring *tx = open_ring(ping), *rx = open_ring(pong);
    int64_t *rtt = malloc(PING_MAX * sizeof *rtt);
    if (rtt == NULL)
        die("out of memory");
    memset(rtt, 0, PING_MAX * sizeof *rtt);
    unsigned char msg[64] = {0}, buf[64];
    size_t len;
    child_ready_and_wait(g);
    int64_t end = 0;
    uint64_t n = 0;
    for (uint64_t i = 0; n < PING_MAX; i++) {
        int64_t t0 = now_ns();
        check(rb_write_wait(tx, msg, sizeof msg, -1), "rb_write_wait");
        check(rb_read_wait(rx, buf, sizeof buf, &len, -1), "rb_read_wait");
        int64_t t1 = now_ns();
        if (len != sizeof msg)
            _exit(5);
        if (i == PING_WARMUP)
            end = t1 + (int64_t)(budget_s * 1e9);
        if (i >= PING_WARMUP) {
            rtt[n++] = t1 - t0;
            if (t1 >= end)
                break;
        }
    }
    check(rb_write_wait(tx, "!", 1, -1), "rb_write_wait (stop)");
    qsort(rtt, n, sizeof *rtt, cmp_i64);
    sh->rounds = n;
    sh->p50_us = rtt[n / 2] / 1e3;
    sh->p99_us = rtt[n * 99 / 100] / 1e3;
    _exit(0);
}

static void echoer(const char *ping, const char *pong, struct gate *g)
{
    rb_ring *rx = open_ring(ping), *tx = open_ring(pong);
    unsigned char buf[64];
    size_t len;
    child_ready_and_wait(g);
    for (;;) {
        check(rb_read_wait(rx, buf, sizeof buf, &len, -1), "rb_read_wait");
        if (len == 1)
            break;
        check(rb_write_wait(tx, buf, len, -1), "rb_write_wait");
    }
    _exit(0);
}

static int pingpong_once(struct pp_shared *out)
{
    char ping[600], pong[600];
    snprintf(ping, sizeof ping, "%s/cbench-%d.ping", dir, (int)getpid());
    snprintf(pong, sizeof pong, "%s/cbench-%d.pong", dir, (int)getpid());
    create_ring(ping);
    create_ring(pong);
    struct pp_shared *sh = shared_map(sizeof *sh);
    memset(sh, 0, sizeof *sh);
    struct gate g;
    gate_init(&g);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = spawn();
        if (pids[i] == 0) {
            if (i == 0)
                pinger(ping, pong, &g, sh);
            echoer(ping, pong, &g);
        }
    }
    int bad = gate_run(&g, pids, 2, (int64_t)((budget_s * 20 + 10) * 1e9));
    unlink(ping);
    unlink(pong);
    *out = *sh;
    munmap(sh, sizeof *sh);
    return !bad && out->rounds > 0;
}

/* ---- wake-up latency ------------------------------------------------------- */

enum { LAT_WAIT, LAT_EPOLL, LAT_KINDS };
static const char *const lat_names[LAT_KINDS] = {"rb_read_wait", "epoll"};

struct lat_shared {
    double p50_us[LAT_KINDS], p99_us[LAT_KINDS];
    uint64_t rounds[LAT_KINDS];
};

/* A message: the producer's clock before its write. The acknowledgement:
 * the consumer's clock after its read (CLOCK_MONOTONIC: one clock for all
 * processes). */
struct lat_msg {
    int64_t t;
};

static void ack(rb_ring *tx, int64_t t)
{
    struct lat_msg a = {t};
    check(rb_write_wait(tx, &a, sizeof a, -1), "rb_write_wait (ack)");
}

/* Blocked in rb_read_wait: wakes on the ring's futex. */
static void lat_wait_consumer(const char *data, const char *acks, struct gate *g)
{
    rb_ring *rx = open_ring(data), *tx = open_ring(acks);
    struct lat_msg m;
    size_t len;
    child_ready_and_wait(g);
    for (;;) {
        check(rb_read_wait(rx, &m, sizeof m, &len, -1), "rb_read_wait");
        int64_t t1 = now_ns();
        if (len != sizeof m)
            break; /* the stop message */
        ack(tx, t1);
    }
    _exit(0);
}

/* In epoll_wait on the handle's readable descriptor: wakes on the eventfd
 * that the handle's notifier thread signals. */
static void lat_epoll_consumer(const char *data, const char *acks, struct gate *g)
{
    rb_ring *rx = open_ring(data), *tx = open_ring(acks);
    int fd, ep = epoll_create1(EPOLL_CLOEXEC);
    check(rb_event_fd(rx, RB_EV_READABLE, &fd), "rb_event_fd");
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        _exit(6);
    child_ready_and_wait(g);
    for (;;) {
        if (epoll_wait(ep, &ev, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            _exit(7);
        }
        struct lat_msg m;
        size_t len;
        int rc;
        while ((rc = rb_read(rx, &m, sizeof m, &len)) == RB_OK) {
            int64_t t1 = now_ns();
            if (len != sizeof m)
                _exit(0); /* the stop message */
            ack(tx, t1);
        }
        if (rc != RB_EEMPTY)
            check(rc, "rb_read");
    }
}

static void lat_producer(const char *const data[LAT_KINDS], const char *acks, struct gate *g,
                         struct lat_shared *sh)
{
    rb_ring *tx[LAT_KINDS], *rx = open_ring(acks);
    for (int k = 0; k < LAT_KINDS; k++)
        tx[k] = open_ring(data[k]);
    int64_t *lat[LAT_KINDS];
    uint64_t n[LAT_KINDS] = {0};
    for (int k = 0; k < LAT_KINDS; k++)
        if ((lat[k] = malloc(LAT_MAX * sizeof *lat[k])) == NULL)
            die("out of memory");
    child_ready_and_wait(g);
    /* Both kinds share the time: each gets budget_s. */
    int64_t end = now_ns() + (int64_t)(2 * budget_s * 1e9);
    for (uint64_t i = 0; i < LAT_MAX + LAT_WARMUP; i++) {
        int k = (int)(i & 1); /* alternate: load changes weigh on both alike */
        struct timespec gap = {0, LAT_GAP_NS};
        nanosleep(&gap, NULL);
        struct lat_msg m = {now_ns()}, a;
        size_t len;
        check(rb_write(tx[k], &m, sizeof m), "rb_write");
        check(rb_read_wait(rx, &a, sizeof a, &len, -1), "rb_read_wait (ack)");
        if (len != sizeof a || a.t < m.t)
            _exit(5);
        if (i >= LAT_WARMUP)
            lat[k][n[k]++] = a.t - m.t;
        if (i >= LAT_WARMUP && now_ns() >= end)
            break;
    }
    for (int k = 0; k < LAT_KINDS; k++) {
        check(rb_write_wait(tx[k], "!", 1, -1), "rb_write_wait (stop)");
        qsort(lat[k], n[k], sizeof *lat[k], cmp_i64);
        sh->rounds[k] = n[k];
        if (n[k] > 0) {
            sh->p50_us[k] = lat[k][n[k] / 2] / 1e3;
            sh->p99_us[k] = lat[k][n[k] * 99 / 100] / 1e3;
        }
    }
    _exit(0);
}

static int latency_run(void)
{
    char data[LAT_KINDS][600], acks[600];
    const char *dp[LAT_KINDS];
    for (int k = 0; k < LAT_KINDS; k++) {
        snprintf(data[k], sizeof data[k], "%s/cbench-%d.lat%d", dir, (int)getpid(), k);
        create_ring(data[k]);
        dp[k] = data[k];
    }
    snprintf(acks, sizeof acks, "%s/cbench-%d.ack", dir, (int)getpid());
    create_ring(acks);
    struct lat_shared *sh = shared_map(sizeof *sh);
    memset(sh, 0, sizeof *sh);
    struct gate g;
    gate_init(&g);
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = spawn();
        if (pids[i] == 0) {
            if (i == 0)
                lat_producer(dp, acks, &g, sh);
            if (i == 1)
                lat_wait_consumer(data[LAT_WAIT], acks, &g);
            lat_epoll_consumer(data[LAT_EPOLL], acks, &g);
        }
    }
    /* Worst case: every round takes a whole park cap (100 ms). */
    int bad = gate_run(&g, pids, 3, (int64_t)((budget_s * 20 + 30) * 1e9));
    for (int k = 0; k < LAT_KINDS; k++)
        unlink(data[k]);
    unlink(acks);
    int ok = !bad && sh->rounds[LAT_WAIT] > 0 && sh->rounds[LAT_EPOLL] > 0;
    printf("{\n  \"library_version\": %d, \"ok\": %s, \"gap_us\": %d, \"size\": %zu,\n  \"latency\": {",
           rb_version(), ok ? "true" : "false", LAT_GAP_NS / 1000, sizeof(struct lat_msg));
    for (int k = 0; k < LAT_KINDS; k++) {
        fprintf(stderr, "cbench: wake-up latency, %s: p50 %.2f us, p99 %.2f us (%llu rounds)\n", lat_names[k],
                sh->p50_us[k], sh->p99_us[k], (unsigned long long)sh->rounds[k]);
        printf("%s\n    \"%s\": {\"p50_us\": %.3f, \"p99_us\": %.3f, \"rounds\": %llu}", k ? "," : "",
               lat_names[k], sh->p50_us[k], sh->p99_us[k], (unsigned long long)sh->rounds[k]);
    }
    printf("\n  }\n}\n");
    munmap(sh, sizeof *sh);
    return ok ? 0 : 1;
}

/* ---- call cost ------------------------------------------------------------- */

static void print_runs(const char *name, const double *v, const char *fmt);

static int pair_run(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/cbench-%d.pair", dir, (int)getpid());
    create_ring(path);
    rb_ring *rb = open_ring(path);
    unsigned char msg[64], buf[64];
    fill_random(msg, sizeof msg, 3);
    size_t len;
    double ns[MAXREPS];
    int ok = 1;
    for (int r = 0; r < reps; r++) {
        int64_t t0 = now_ns(), end = t0 + (int64_t)(budget_s * 1e9), t1;
        uint64_t pairs = 0;
        do {
            for (int i = 0; i < 1024; i++) {
                memcpy(msg, &pairs, sizeof pairs);
                if (rb_write(rb, msg, sizeof msg) != RB_OK || rb_read(rb, buf, sizeof buf, &len) != RB_OK ||
                    len != sizeof msg || memcmp(buf, msg, sizeof msg) != 0)
                    ok = 0;
                pairs++;
            }
            t1 = now_ns();
        } while (t1 < end && ok);
        ns[r] = (double)(t1 - t0) / pairs;
    }
    rb_close(rb);
    unlink(path);
    double med = median(ns, reps);
    fprintf(stderr, "cbench: rb_write + rb_read of 64 B in one thread: %.2f ns a pair%s\n", med, ok ? "" : " (FAILED)");
    printf("{\n  \"library_version\": %d, \"ok\": %s, \"size\": 64, \"reps\": %d, \"budget_s\": %g,\n"
           "  \"pair\": {\"ns\": %.3f, \"pairs_per_s\": %.0f",
           rb_version(), ok ? "true" : "false", reps, budget_s, med, 1e9 / med);
    print_runs("runs_ns", ns, "%.3f");
    printf("}\n}\n");
    return ok ? 0 : 1;
}

/* ---- main ----------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: cbench [--budget SECONDS] [--reps N] [--ring BYTES] [--dir DIR] "
                    "[--case PRODUCERS,SIZE,single|batch | --latency | --pair]\n");
    exit(2);
}

/* One throughput case's runs. */
struct tp_case {
    int nprod, batched;
    size_t size;
    double rate[MAXREPS];
    uint64_t msgs[MAXREPS];
    int ok;
};

static void print_runs(const char *name, const double *v, const char *fmt)
{
    printf(", \"%s\": [", name);
    for (int r = 0; r < reps; r++) {
        printf(r ? ", " : "");
        printf(fmt, v[r]);
    }
    printf("]");
}

/* Prints a case's JSON row (the median run) and returns the median run's
 * message count (for an even number of runs, the rate times the median
 * time is not a run: the count of the run just above the median). */
static uint64_t print_case(const struct tp_case *c, const char *sep)
{
    double med = median(c->rate, reps);
    uint64_t med_msgs = 0;
    double best = -1;
    for (int r = 0; r < reps; r++)
        if (c->rate[r] >= med && (best < 0 || c->rate[r] < best)) {
            best = c->rate[r];
            med_msgs = c->msgs[r];
        }
    fprintf(stderr, "cbench: %d producer(s), %zu B, %s: %.2fM msgs/s%s\n", c->nprod, c->size,
            c->batched ? "batched" : "single", med / 1e6, c->ok ? "" : " (FAILED)");
    printf("%s    {\"producers\": %d, \"size\": %zu, \"mode\": \"%s\", \"ok\": %s, \"msgs_per_s\": %.0f, "
           "\"gb_per_s\": %.4f, \"messages\": %llu",
           sep, c->nprod, c->size, c->batched ? "batch" : "single", c->ok ? "true" : "false", med,
           med * c->size / 1e9, (unsigned long long)med_msgs);
    print_runs("runs_msgs_per_s", c->rate, "%.0f");
    printf("}");
    return med_msgs;
}

static void run_case(struct tp_case *c, int r)
{
    struct tp_result res = throughput_once(c->nprod, c->size, c->batched);
    c->ok &= res.ok;
    c->rate[r] = res.msgs_per_s;
    c->msgs[r] = res.messages;
}

int main(int argc, char **argv)
{
    struct tp_case one = {0};
    int latency = 0, pair = 0, budget_set = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--latency") == 0) {
            latency = 1;
            continue;
        }
        if (strcmp(argv[i], "--pair") == 0) {
            pair = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--budget") == 0) {
            budget_s = atof(argv[++i]);
            budget_set = 1;
        } else if (strcmp(argv[i], "--reps") == 0)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--ring") == 0)
            ring_bytes = (size_t)strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--dir") == 0)
            dir = argv[++i];
        else if (strcmp(argv[i], "--case") == 0) {
            char mode[16] = "";
            if (sscanf(argv[++i], "%d,%zu,%15s", &one.nprod, &one.size, mode) != 3 || one.nprod < 1 ||
                one.nprod > MAXP || one.size < MARKER_LEN + 1 ||
                (strcmp(mode, "single") != 0 && strcmp(mode, "batch") != 0))
                usage();
            one.batched = strcmp(mode, "batch") == 0;
        } else
            usage();
    }
    if (budget_s <= 0 || reps < 1 || reps > MAXREPS || ring_bytes < 4096 || (ring_bytes & (ring_bytes - 1)) ||
        one.size > ring_bytes / 4 || latency + pair + (one.nprod > 0) > 1)
        usage();
    if (pair)
        return pair_run();
    if (latency) {
        if (!budget_set)
            budget_s = 2.0;
        return latency_run();
    }

    printf("{\n  \"budget_s\": %g, \"reps\": %d, \"ring_bytes\": %zu, \"library_version\": %d,\n", budget_s, reps,
           ring_bytes, rb_version());
    printf("  \"throughput\": [");
    if (one.nprod > 0) { /* one case, e.g. to profile it */
        one.ok = 1;
        for (int r = 0; r < reps; r++)
            run_case(&one, r);
        failures += !one.ok;
        print_case(&one, "\n");
        printf("\n  ],\n  \"ok\": %s\n}\n", failures ? "false" : "true");
        return failures ? 1 : 0;
    }

    /* Every case once, then every case again: a change in the machine's
     * load during the run weighs on all cases (and their memcpy) alike.
     * memcpy copies, in each round, what that round's 1-producer
     * single-message run of the same size moved. */
    enum { NSIZES = 2, NSHAPES = 4 };
    static const size_t sizes[NSIZES] = {64, 4096};
    static const struct {
        int nprod, batched;
    } shapes[NSHAPES] = {{1, 0}, {1, 1}, {2, 0}, {4, 0}};
    static struct tp_case cases[NSIZES][NSHAPES];
    double copy_rate[NSIZES][MAXREPS], large[MAXREPS], p50[MAXREPS], p99[MAXREPS];
    uint64_t rounds = 0;
    int pp_ok = 1;
    unsigned char *src = malloc(SRC_BYTES), *dst = malloc(ring_bytes);
    if (src == NULL || dst == NULL)
        die("out of memory");
    fill_random(src, SRC_BYTES, 1);
    memset(dst, 0, ring_bytes);
    for (int s = 0; s < NSIZES; s++)
        for (int c = 0; c < NSHAPES; c++)
            cases[s][c] = (struct tp_case){
                .nprod = shapes[c].nprod, .batched = shapes[c].batched, .size = sizes[s], .ok = 1};
    for (int r = 0; r < reps; r++) {
        fprintf(stderr, "cbench: round %d of %d\n", r + 1, reps);
        for (int s = 0; s < NSIZES; s++) {
            for (int c = 0; c < NSHAPES; c++)
                run_case(&cases[s][c], r);
            uint64_t count = cases[s][0].msgs[r] ? cases[s][0].msgs[r] : 1000000;
            double t = memcpy_messages(src, SRC_BYTES / sizes[s], dst, sizes[s], count);
            copy_rate[s][r] = count / t;
        }
        large[r] = memcpy_large();
        struct pp_shared pp;
        pp_ok &= pingpong_once(&pp);
        p50[r] = pp.p50_us;
        p99[r] = pp.p99_us;
        rounds += pp.rounds;
    }
    free(src);
    free(dst);

    const char *sep = "\n";
    for (int s = 0; s < NSIZES; s++)
        for (int c = 0; c < NSHAPES; c++) {
            failures += !cases[s][c].ok;
            print_case(&cases[s][c], sep);
            sep = ",\n";
        }
    printf("\n  ],\n  \"memcpy\": [");
    for (int s = 0; s < NSIZES; s++) {
        double med = median(copy_rate[s], reps);
        fprintf(stderr, "cbench: memcpy %zu B messages: %.2f GB/s\n", sizes[s], med * sizes[s] / 1e9);
        printf("%s\n    {\"size\": %zu, \"msgs_per_s\": %.0f, \"gb_per_s\": %.4f", s ? "," : "", sizes[s], med,
               med * sizes[s] / 1e9);
        print_runs("runs_msgs_per_s", copy_rate[s], "%.0f");
        printf("}");
    }
    fprintf(stderr, "cbench: memcpy 64 MiB blocks: %.2f GB/s\n", median(large, reps));
    printf("\n  ],\n  \"memcpy_large\": {\"block_bytes\": %u, \"gb_per_s\": %.4f", LARGE_BLOCK, median(large, reps));
    print_runs("runs_gb_per_s", large, "%.3f");
    printf("},\n");

    failures += !pp_ok;
    fprintf(stderr, "cbench: ping-pong p50 %.2f us, p99 %.2f us\n", median(p50, reps), median(p99, reps));
    printf("  \"pingpong\": {\"ok\": %s, \"size\": 64, \"p50_us\": %.3f, \"p99_us\": %.3f, \"rounds\": %llu",
           pp_ok ? "true" : "false", median(p50, reps), median(p99, reps), (unsigned long long)rounds);
    print_runs("runs_p50_us", p50, "%.3f");
    print_runs("runs_p99_us", p99, "%.3f");
    printf("},\n  \"ok\": %s\n}\n", failures ? "false" : "true");
    return failures ? 1 : 0;
}
