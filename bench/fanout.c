/*
 * fanout.c - the C fan-out benchmark of `invoke bench` (group "fanout",
 * issue 12), linked against libringbuf.so.
 *
 *   bench/build/fanout [--budget SECONDS] [--reps N] [--ring BYTES] [--dir DIR]
 *                      [--subs LIST] [--modes LIST] [--messages N]
 *
 * One producer process and K subscriber processes (--subs, default 1,2,4),
 * each subscriber on an ephemeral consumer group of its own
 * (rb_open_group(path, NULL, RB_GROUP_EPHEMERAL, ...)), on a lossless ring
 * of --ring bytes (default 1 MiB) in --dir (default /dev/shm) created
 * without the default group (RB_NO_DEFAULT_GROUP: nobody else holds the
 * writer back). The subscribers attach before the producer starts, so
 * each group starts before the first message. The producer writes N
 * 64-byte messages with rb_write_wait, each carrying its sequence number in
 * its first 8 bytes and the number's complement in its last 8; every
 * subscriber reads until it has N and checks each message's length and both
 * words (each subscriber gets every message exactly once, in order, whole),
 * then, once the producer is done, that no message is left (no duplicate).
 *
 * Modes (--modes, default single,batch,hogs): "single" subscribers read
 * with rb_read_wait (the headline: one call per message on both sides);
 * "batch" subscribers with rb_read_many_wait (the producer still writes one
 * message per rb_write_wait): what the producer gets when its subscribers
 * need less CPU per message; "hogs" (K > 1 only), the control for CPU
 * sharing: one subscriber (as "single") and K - 1 processes that only spin
 * (no ring) until it is done, so that K + 1 processes share the CPUs as
 * with K subscribers, without fan-out: the producer's rate there is what
 * sharing the CPUs alone leaves it.
 *
 * N per (K, mode) comes from an untimed calibration run of --messages
 * (default 500000) messages, scaled to --budget seconds (default 1) of the
 * producer's time; --reps runs (default 3) of every case then interleave
 * (every case once, then again), so that a change in the machine's load
 * weighs on all cases alike; medians reported.
 *
 * Reported per case: the producer's rate (N over its first write to its last
 * write's return), the deliveries per second (K * N over the producer's
 * first write to the last subscriber's last read), and, from the median
 * run, each process's CPU time (getrusage: user, system, voluntary and
 * involuntary context switches) over its timed part, and the ring's
 * counters (rb_stats: parks, wake-ups, time parked) over the run: with K
 * subscribers K + 1 processes share the machine's CPUs. machine_busy_cpus
 * is how many CPUs every process on the machine kept busy over the run
 * (/proc/stat): more than busy_cpus (ours) means other work shared them.
 *
 * Times come from CLOCK_MONOTONIC. Prints one JSON object on stdout
 * (progress on stderr); exits 1 if any case failed its checks.
 */
#define _GNU_SOURCE
#include <ringbuf.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXSUBS 8
#define MAXREPS 15
#define BENCH_NAME "fanout"
#include "benchutil.h"
#define MAXCASES 16
#define SIZE 64
#define READ_BYTES (256u << 10) /* a batched subscriber's buffer */
#define READ_COUNT 4096
#define READ_TIMEOUT_NS (10 * 1000000000LL) /* a subscriber gives up (and fails) */

enum mode { MODE_SINGLE, MODE_BATCH, MODE_HOGS, NMODES };
static const char *const mode_names[NMODES] = {"single", "batch", "hogs"};

static double budget_s = 1.0;
static int reps = 3;
static size_t ring_bytes = 1u << 20;
static const char *dir = "/dev/shm";
static uint64_t calib_messages = 500000;


/* ---- one run --------------------------------------------------------------- */

/* The machine's busy and total CPU time so far (/proc/stat, in ticks): the
 * CPU that every process used, ours and the other work on the machine. */
static void machine_ticks(unsigned long long *busy, unsigned long long *total)
{
    unsigned long long v[10] = {0};
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8)
        return;
    /* user nice system idle iowait irq softirq steal (guest counted in user) */
    for (int i = 0; i < 8; i++)
        *total += v[i];
    *busy = *total - v[3] - v[4];
}

/* A process's CPU over its timed part (getrusage deltas). */
struct cpu {
    double user_s, sys_s;
    int64_t nvcsw, nivcsw;
};

static struct rusage usage_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru;
}

static double tv_s(struct timeval tv)
{
    return tv.tv_sec + tv.tv_usec / 1e6;
}

static struct cpu usage_since(const struct rusage *a)
{
    struct rusage b = usage_now();
    return (struct cpu){
        .user_s = tv_s(b.ru_utime) - tv_s(a->ru_utime),
        .sys_s = tv_s(b.ru_stime) - tv_s(a->ru_stime),
        .nvcsw = b.ru_nvcsw - a->ru_nvcsw,
        .nivcsw = b.ru_nivcsw - a->ru_nivcsw,
    };
}

struct sub_shared {
    int64_t t_last; /* the last read's return */
    uint64_t received, errors, extra;
    uint64_t first_bad; /* the position (0-based) of the first wrong message */
    int status;         /* RB status that stopped it, RB_OK if none */
    struct cpu cpu;
};

struct run_shared {
    int64_t t0, t1; /* the producer's first write, its last write's return */
    _Atomic int producer_done;
    _Atomic int subscribers_done; /* hogs spin until the subscriber is done */
    struct cpu producer_cpu;
    struct sub_shared sub[MAXSUBS];
};

struct run_result {
    int ok;
    double producer_rate, delivery_rate, wall_s;
    double machine_busy_cpus; /* every process's, from /proc/stat, over the run */
    struct cpu producer_cpu, sub_cpu[MAXSUBS];
    struct rb_stats stats;
};

static void fail_exit(int rc, const char *what)
{
    fprintf(stderr, "fanout: %s: %s\n", what, rb_strerror(rc));
    _exit(4);
}

static void producer(const char *path, uint64_t n, struct gate *g, struct run_shared *sh)
{
    rb_ring *rb;
    int rc = rb_open(path, &rb);
    if (rc != RB_OK)
        fail_exit(rc, "rb_open (producer)");
    unsigned char msg[SIZE];
    for (int i = 0; i < SIZE; i++)
        msg[i] = (unsigned char)(i * 37 + 11);
    child_ready_and_wait(g);
    struct rusage ru = usage_now();
    sh->t0 = now_ns();
    for (uint64_t seq = 0; seq < n; seq++) {
        uint64_t inv = ~seq;
        memcpy(msg, &seq, 8);
        memcpy(msg + SIZE - 8, &inv, 8);
        rc = rb_write_wait(rb, msg, SIZE, -1);
        if (rc != RB_OK)
            fail_exit(rc, "rb_write_wait");
    }
    sh->t1 = now_ns();
    sh->producer_cpu = usage_since(&ru);
    atomic_store(&sh->producer_done, 1);
    rb_close(rb);
    _exit(0);
}

/* Checks one message (the k-th this subscriber got). */
static inline void account(struct sub_shared *me, const unsigned char *m, size_t len, uint64_t k)
{
    uint64_t seq, inv;
    if (len == SIZE) {
        memcpy(&seq, m, 8);
        memcpy(&inv, m + SIZE - 8, 8);
        if (seq == k && inv == ~k)
            return;
    }
    if (me->errors++ == 0)
        me->first_bad = k;
}

/* A process of "hogs" mode: spins, without the ring, until the subscriber
 * is done. */
static void hog(int id, struct gate *g, struct run_shared *sh)
{
    child_ready_and_wait(g);
    struct rusage ru = usage_now();
    while (!atomic_load_explicit(&sh->subscribers_done, memory_order_relaxed))
        ;
    sh->sub[id].cpu = usage_since(&ru);
    _exit(0);
}

static void subscriber(const char *path, int id, int batched, uint64_t n, struct gate *g, struct run_shared *sh)
{
    struct sub_shared *me = &sh->sub[id];
    rb_ring *rb;
    /* The group is made here, before the gate: it starts before the first
     * message (RB_START_EARLIEST would do the same on an empty ring). */
    int rc = rb_open_group(path, NULL, RB_GROUP_EPHEMERAL, &rb);
    if (rc != RB_OK)
        fail_exit(rc, "rb_open_group (subscriber)");
    unsigned char *buf = malloc(READ_BYTES);
    size_t *lens = malloc(READ_COUNT * sizeof *lens);
    if (buf == NULL || lens == NULL)
        die("out of memory");
    memset(buf, 0, READ_BYTES);
    child_ready_and_wait(g);
    struct rusage ru = usage_now();
    uint64_t k = 0;
    while (k < n) {
        if (!batched) {
            size_t len;
            rc = rb_read_wait(rb, buf, READ_BYTES, &len, READ_TIMEOUT_NS);
            if (rc != RB_OK)
                break;
            account(me, buf, len, k++);
        } else {
            size_t count;
            rc = rb_read_many_wait(rb, buf, READ_BYTES, lens, READ_COUNT, &count, READ_TIMEOUT_NS);
            if (rc != RB_OK)
                break;
            const unsigned char *m = buf;
            for (size_t i = 0; i < count; i++) {
                account(me, m, lens[i], k++);
                m += lens[i];
            }
        }
    }
    me->t_last = now_ns();
    me->cpu = usage_since(&ru);
    atomic_fetch_add(&sh->subscribers_done, 1);
    me->received = k;
    me->status = k >= n ? RB_OK : rc;
    if (k >= n) {
        /* Nothing more once the producer is done: no message twice. */
        while (!atomic_load(&sh->producer_done)) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        size_t len;
        while ((rc = rb_read(rb, buf, READ_BYTES, &len)) == RB_OK)
            me->extra++;
        if (rc != RB_EEMPTY)
            me->status = rc;
    }
    rb_close(rb);
    _exit(me->status == RB_OK && me->errors == 0 && me->extra == 0 && k == n ? 0 : 5);
}

/* One run: the producer and nprocs other processes (subscribers, or in
 * hogs mode one subscriber and nprocs - 1 hogs). */
static struct run_result run_once(int nprocs, enum mode mode, uint64_t n)
{
    int nsubs = mode == MODE_HOGS ? 1 : nprocs;
    char path[600];
    snprintf(path, sizeof path, "%s/fanout-%d.ring", dir, (int)getpid());
    rb_ring *rb;
    int rc = rb_create(path, ring_bytes, RB_REMOVE | RB_NO_DEFAULT_GROUP, &rb);
    if (rc != RB_OK)
        die("rb_create %s: %s", path, rb_strerror(rc));
    struct run_shared *sh = shared_map(sizeof *sh);
    memset(sh, 0, sizeof *sh);
    struct gate g;
    gate_init(&g);
    pid_t pids[MAXSUBS + 1];
    for (int i = 0; i <= nprocs; i++) {
        pids[i] = spawn();
        if (pids[i] == 0) {
            rb_close(rb); /* the parent's handle is not the children's business */
            if (i == nprocs)
                producer(path, n, &g, sh);
            if (i >= nsubs)
                hog(i, &g, sh);
            subscriber(path, i, mode == MODE_BATCH, n, &g, sh);
        }
    }
    /* A run is about budget_s; a machine far slower than the calibration
     * run still finishes (or is stopped) in bounded time. */
    unsigned long long busy0, total0, busy1, total1;
    machine_ticks(&busy0, &total0);
    int bad = gate_run(&g, pids, nprocs + 1, (int64_t)((budget_s * 30 + 30) * 1e9));
    machine_ticks(&busy1, &total1);
    struct run_result r = {0};
    if (total1 > total0)
        r.machine_busy_cpus = (double)(busy1 - busy0) / (total1 - total0) * sysconf(_SC_NPROCESSORS_ONLN);
    rb_stats(rb, &r.stats); /* every handle's counts stay in the file */
    rb_close(rb);
    unlink(path);
    int64_t t_last = sh->t1;
    for (int i = 0; i < nsubs; i++) {
        struct sub_shared *s = &sh->sub[i];
        if (s->received != n || s->errors || s->extra || s->status != RB_OK) {
            bad = 1;
            fprintf(stderr,
                    "fanout: %d subscribers (%s): subscriber %d got %llu of %llu messages, %llu wrong (first at "
                    "%llu), %llu more after the last; %s\n",
                    nprocs, mode_names[mode], i, (unsigned long long)s->received,
                    (unsigned long long)n, (unsigned long long)s->errors, (unsigned long long)s->first_bad,
                    (unsigned long long)s->extra, rb_strerror(s->status));
        }
        if (s->t_last > t_last)
            t_last = s->t_last;
    }
    for (int i = 0; i < nprocs; i++)
        r.sub_cpu[i] = sh->sub[i].cpu;
    if (bad || sh->t1 <= sh->t0) {
        if (!bad)
            fprintf(stderr, "fanout: %d subscribers: no time measured\n", nprocs);
        munmap(sh, sizeof *sh);
        return r;
    }
    r.ok = 1;
    r.producer_rate = n / ((sh->t1 - sh->t0) / 1e9);
    r.wall_s = (t_last - sh->t0) / 1e9;
    r.delivery_rate = (double)nsubs * n / r.wall_s;
    r.producer_cpu = sh->producer_cpu;
    munmap(sh, sizeof *sh);
    return r;
}

/* ---- cases and output --------------------------------------------------------- */

struct fcase {
    int nsubs, ok; /* nsubs: the processes besides the producer (hogs mode: 1 subscriber, nsubs - 1 hogs) */
    enum mode mode;
    uint64_t n;
    double prate[MAXREPS], drate[MAXREPS];
    struct run_result runs[MAXREPS];
};

static void print_cpu(const char *name, const struct cpu *c, double wall_s, uint64_t n)
{
    double cpu_s = c->user_s + c->sys_s;
    printf("\"%s\": {\"user_s\": %.4f, \"sys_s\": %.4f, \"cpu_s\": %.4f, \"share_of_a_cpu\": %.3f, "
           "\"cpu_ns_per_msg\": %.1f, \"voluntary_switches\": %lld, \"involuntary_switches\": %lld}",
           name, c->user_s, c->sys_s, cpu_s, wall_s > 0 ? cpu_s / wall_s : 0, n ? cpu_s * 1e9 / n : 0,
           (long long)c->nvcsw, (long long)c->nivcsw);
}

static void print_case(const struct fcase *c, const char *sep)
{
    double pm = median(c->prate, reps), dm = median(c->drate, reps);
    /* The run whose producer rate is the median (for an even number of
     * runs, the one just above): its CPU figures. */
    int mi = 0;
    double best = -1;
    for (int r = 0; r < reps; r++)
        if (c->prate[r] >= pm && (best < 0 || c->prate[r] < best)) {
            best = c->prate[r];
            mi = r;
        }
    const struct run_result *m = &c->runs[mi];
    int real = c->mode == MODE_HOGS ? 1 : c->nsubs;
    fprintf(stderr, "fanout: %d %s, %s: producer %.2fM msgs/s, deliveries %.2fM/s%s\n", c->nsubs,
            c->mode == MODE_HOGS ? "processes (1 subscriber)" : "subscriber(s)", mode_names[c->mode], pm / 1e6,
            dm / 1e6, c->ok ? "" : " (FAILED)");
    printf("%s    {\"subscribers\": %d, \"mode\": \"%s\", \"hogs\": %d, \"size\": %d, \"ok\": %s, "
           "\"messages\": %llu, \"producer_msgs_per_s\": %.0f, \"deliveries_per_s\": %.0f",
           sep, real, mode_names[c->mode], c->nsubs - real, SIZE, c->ok ? "true" : "false",
           (unsigned long long)c->n, pm, dm);
    printf(", \"runs_producer_msgs_per_s\": [");
    for (int r = 0; r < reps; r++)
        printf("%s%.0f", r ? ", " : "", c->prate[r]);
    printf("], \"runs_deliveries_per_s\": [");
    for (int r = 0; r < reps; r++)
        printf("%s%.0f", r ? ", " : "", c->drate[r]);
    printf("]");
    if (c->ok) {
        double wall = m->wall_s, producer_wall = c->n / c->prate[mi];
        double total = m->producer_cpu.user_s + m->producer_cpu.sys_s;
        printf(",\n      \"median_run\": {\"wall_s\": %.4f, \"producer_s\": %.4f, ", wall, producer_wall);
        print_cpu("producer", &m->producer_cpu, producer_wall, c->n);
        printf(", \"subscribers\": [");
        for (int i = 0; i < c->nsubs; i++) {
            printf(i == real ? "], \"hogs\": [{" : i ? ", {" : "{");
            total += m->sub_cpu[i].user_s + m->sub_cpu[i].sys_s;
            print_cpu("cpu", &m->sub_cpu[i], wall, c->n);
            printf("}");
        }
        printf(real == c->nsubs ? "], \"hogs\": [" : "");
        printf("],\n        \"busy_cpus\": %.3f, \"machine_busy_cpus\": %.3f, \"rb_stats\": {\"written\": %llu, \"read\": %llu, \"parks\": "
               "%llu, \"parked_ns\": %llu, \"wakes\": %llu}}",
               wall > 0 ? total / wall : 0, m->machine_busy_cpus, (unsigned long long)m->stats.written,
               (unsigned long long)m->stats.read, (unsigned long long)m->stats.parks,
               (unsigned long long)m->stats.parked_ns, (unsigned long long)m->stats.wakes);
    }
    printf("}");
}

static void usage(void)
{
    fprintf(stderr, "usage: fanout [--budget SECONDS] [--reps N] [--ring BYTES] [--dir DIR] [--subs 1,2,4] "
                    "[--modes single,batch,hogs] [--messages N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int subs[MAXCASES], nsubs = 0, nmodes = 0;
    enum mode modes[NMODES];
    const char *subs_arg = "1,2,4", *modes_arg = "single,batch,hogs";
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--budget") == 0)
            budget_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--ring") == 0)
            ring_bytes = (size_t)strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--dir") == 0)
            dir = argv[++i];
        else if (strcmp(argv[i], "--subs") == 0)
            subs_arg = argv[++i];
        else if (strcmp(argv[i], "--modes") == 0)
            modes_arg = argv[++i];
        else if (strcmp(argv[i], "--messages") == 0)
            calib_messages = strtoull(argv[++i], NULL, 0);
        else
            usage();
    }
    for (const char *p = subs_arg; *p;) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > MAXSUBS || nsubs == MAXCASES / 2)
            usage();
        subs[nsubs++] = (int)k;
        p = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            usage();
    }
    char mbuf[64];
    snprintf(mbuf, sizeof mbuf, "%s", modes_arg);
    for (char *save = NULL, *t = strtok_r(mbuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int m = 0;
        while (m < NMODES && strcmp(t, mode_names[m]) != 0)
            m++;
        if (m == NMODES || nmodes == NMODES)
            usage();
        modes[nmodes++] = (enum mode)m;
    }
    if (budget_s <= 0 || reps < 1 || reps > MAXREPS || ring_bytes < 4096 || (ring_bytes & (ring_bytes - 1)) ||
        nsubs == 0 || nmodes == 0 || calib_messages < 1000)
        usage();

    static struct fcase cases[NMODES * MAXCASES];
    int ncases = 0;
    for (int mo = 0; mo < nmodes; mo++)
        for (int s = 0; s < nsubs; s++)
            if (modes[mo] != MODE_HOGS || subs[s] > 1)
                cases[ncases++] = (struct fcase){.nsubs = subs[s], .mode = modes[mo], .ok = 1};
    int failures = 0;
    for (int c = 0; c < ncases; c++) {
        /* Calibration (and warm-up): untimed, N for about budget_s of the
         * producer's time. */
        struct run_result r = run_once(cases[c].nsubs, cases[c].mode, calib_messages);
        if (!r.ok) {
            cases[c].ok = 0;
            cases[c].n = calib_messages;
            continue;
        }
        double n = r.producer_rate * budget_s;
        cases[c].n = n < 100000 ? 100000 : n > 500e6 ? 500000000 : (uint64_t)n;
        fprintf(stderr, "fanout: K=%d, %s: %llu messages a run\n", cases[c].nsubs, mode_names[cases[c].mode],
                (unsigned long long)cases[c].n);
    }
    for (int rep = 0; rep < reps; rep++) {
        fprintf(stderr, "fanout: round %d of %d\n", rep + 1, reps);
        for (int c = 0; c < ncases; c++) {
            if (!cases[c].ok)
                continue;
            struct run_result r = run_once(cases[c].nsubs, cases[c].mode, cases[c].n);
            cases[c].ok &= r.ok;
            cases[c].runs[rep] = r;
            cases[c].prate[rep] = r.producer_rate;
            cases[c].drate[rep] = r.delivery_rate;
        }
    }
    printf("{\n  \"budget_s\": %g, \"reps\": %d, \"ring_bytes\": %zu, \"size\": %d, \"cpus\": %ld, "
           "\"library_version\": %d,\n  \"cases\": [",
           budget_s, reps, ring_bytes, SIZE, sysconf(_SC_NPROCESSORS_ONLN), rb_version());
    for (int c = 0; c < ncases; c++) {
        failures += !cases[c].ok;
        print_case(&cases[c], c ? ",\n" : "\n");
    }
    printf("\n  ],\n  \"ok\": %s\n}\n", failures ? "false" : "true");
    return failures ? 1 : 0;
}
