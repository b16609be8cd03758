/*
 * test_stress.c - many producers and consumers on one small ring, as
 * threads (one shared handle, or one handle each) and as processes, with
 * rb_write/rb_read, rb_write_many/rb_read_many and rb_writev (each message
 * cut into vectors at random points).
 *
 * Every message carries its producer, its sequence number and its length,
 * and a checksum (FNV-1a) of the rest, which is derived from (producer,
 * seq); its length is a function of (producer, seq) too. Messages shorter
 * than 16 bytes cannot hold that header: they carry the producer and a
 * pattern, and are counted per producer. Each consumer checks every message
 * it reads and logs (producer, seq) in the order it read them; at the end
 * the logs must hold every message exactly once, and in each consumer's log
 * the sequence numbers of each producer must be strictly increasing.
 *
 * RB_STRESS_SCALE (default 1) scales the message counts;
 * RB_STRESS_TIMEOUT (seconds, default 120) bounds each run.
 */
#include "runner.h"
#include "testutil.h"

#include "ringbuf.h"
#include "stress.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#define MAXP ST_MAXP
#define MAXC ST_MAXC
#define TINY 16 /* messages shorter than this carry no header */

enum wmode { W_SINGLE, W_MANY, W_VEC };
enum rmode { R_SINGLE, R_MANY, R_SMALLBUF };

struct config {
    const char *name;
    int nprod, ncons;
    uint64_t per_prod;  /* messages per producer at scale 1 */
    size_t cap;
    size_t small_max;   /* usual sizes: 16 .. small_max */
    size_t large_max;   /* occasional: small_max + 1 .. large_max */
    int shared_handle;  /* threads: all use one handle (else one each) */
    int processes;      /* fork instead of threads */
    enum wmode wmode[MAXP];
    enum rmode rmode[MAXC];
};

struct run {
    struct st_run s; /* first: the mapping starts with it */
    struct config cfg;
    _Atomic uint64_t efull, eempty, etrunc, partial;
};

/* ---- messages ------------------------------------------------------------------ */

static size_t msg_len(const struct run *r, int prod, uint64_t seq)
{
    uint64_t x = mix64(((uint64_t)prod << 56) ^ seq ^ r->s.salt);
    unsigned c = (unsigned)(x % 1000);
    x >>= 10;
    if (c < 50)
        return 1 + (size_t)(x % (TINY - 1));
    if (c < 990)
        return TINY + (size_t)(x % (r->cfg.small_max - TINY + 1));
    return r->cfg.small_max + 1 + (size_t)(x % (r->cfg.large_max - r->cfg.small_max));
}

static unsigned char tiny_byte(int prod, size_t len, size_t i)
{
    return (unsigned char)(prod * 31 + (int)len * 7 + (int)i * 13 + 5);
}

static uint64_t msg_seed(int prod, uint64_t seq) { return ((uint64_t)prod << 48) ^ (seq * 0x9E3779B97F4A7C15ull); }

static void encode(unsigned char *b, size_t len, int prod, uint64_t seq)
{
    if (len < TINY) {
        b[0] = (unsigned char)(0xE0 | prod);
        for (size_t i = 1; i < len; i++)
            b[i] = tiny_byte(prod, len, i);
        return;
    }
    uint32_t p = (uint32_t)prod, l = (uint32_t)len;
    memcpy(b, &p, 4);
    memcpy(b + 4, &l, 4);
    memcpy(b + 8, &seq, 8);
    if (len < 24) {
        fill_pattern(b + 16, len - 16, msg_seed(prod, seq));
        return;
    }
    fill_pattern(b + 24, len - 24, msg_seed(prod, seq));
    uint64_t h = fnv1a(FNV_OFFSET, b, 16);
    h = fnv1a(h, b + 24, len - 24);
    memcpy(b + 16, &h, 8);
}

/* Checks one message; returns its log entry (stress.h), or UINT64_MAX
 * if it is broken. */
static uint64_t verify(struct run *r, const unsigned char *b, size_t len)
{
    if (len == 0 || len > r->cfg.large_max) {
        st_report(&r->s, "message of impossible length %zu", len);
        return UINT64_MAX;
    }
    if (len < TINY) {
        int prod = b[0] & 0x0F;
        if ((b[0] & 0xF0) != 0xE0 || prod >= r->cfg.nprod) {
            st_report(&r->s, "tiny message of %zu bytes: bad first byte 0x%02x", len, b[0]);
            return UINT64_MAX;
        }
        for (size_t i = 1; i < len; i++)
            if (b[i] != tiny_byte(prod, len, i)) {
                st_report(&r->s, "tiny message of %zu bytes from producer %d: byte %zu is 0x%02x", len, prod, i, b[i]);
                return UINT64_MAX;
            }
        return ((uint64_t)prod << 56) | ST_TINY;
    }
    uint32_t p, l;
    uint64_t seq;
    memcpy(&p, b, 4);
    memcpy(&l, b + 4, 4);
    memcpy(&seq, b + 8, 8);
    if (p >= (uint32_t)r->cfg.nprod || l != len || seq >= r->s.per_prod) {
        st_report(&r->s, "bad header: producer %u, length field %u (read %zu), seq %llu", p, l, len,
                  (unsigned long long)seq);
        return UINT64_MAX;
    }
    if (msg_len(r, (int)p, seq) != len) {
        st_report(&r->s, "producer %u seq %llu: length %zu, it was sent with %zu", p, (unsigned long long)seq, len,
                  msg_len(r, (int)p, seq));
        return UINT64_MAX;
    }
    if (len < 24) {
        unsigned char e[8];
        fill_pattern(e, len - 16, msg_seed((int)p, seq));
        if (memcmp(e, b + 16, len - 16) != 0) {
            st_report(&r->s, "producer %u seq %llu (%zu bytes): payload differs", p, (unsigned long long)seq, len);
            return UINT64_MAX;
        }
    } else {
        uint64_t h = fnv1a(FNV_OFFSET, b, 16), got;
        h = fnv1a(h, b + 24, len - 24);
        memcpy(&got, b + 16, 8);
        if (h != got) {
            st_report(&r->s, "producer %u seq %llu (%zu bytes): checksum mismatch", p, (unsigned long long)seq, len);
            return UINT64_MAX;
        }
    }
    return ((uint64_t)p << 56) | seq;
}

/* ---- workers -------------------------------------------------------------------- */

static void producer(struct run *r, int id)
{
    int own;
    rb_ring *rb = st_ring(&r->s, &own);
    if (rb == NULL)
        return;
    const size_t maxm = r->cfg.large_max;
    const int many = r->cfg.wmode[id] == W_MANY;
    unsigned char *buf = malloc(many ? 8 * maxm : maxm);
    size_t lens[8];
    uint64_t seq = 0, spins = 0, rng = mix64((uint64_t)id + 77);
    while (seq < r->s.per_prod) {
        int rc;
        size_t n = 1;
        if (many) {
            rng = mix64(rng);
            size_t k = 1 + (size_t)(rng % 8), off = 0;
            if (k > r->s.per_prod - seq)
                k = (size_t)(r->s.per_prod - seq);
            for (size_t i = 0; i < k; i++) {
                lens[i] = msg_len(r, id, seq + i);
                encode(buf + off, lens[i], id, seq + i);
                off += lens[i];
            }
            do {
                n = 0;
                rc = rb_write_many(rb, buf, lens, k, &n);
                if (rc == RB_EFULL) {
                    if (n != 0)
                        st_report(&r->s, "rb_write_many: RB_EFULL with *written = %zu", n);
                    atomic_fetch_add_explicit(&r->efull, 1, memory_order_relaxed);
                    sched_yield();
                    if ((++spins & 255) == 0 && st_timed_out(&r->s))
                        goto out;
                }
            } while (rc == RB_EFULL);
            if (rc == RB_OK && (n == 0 || n > k)) {
                st_report(&r->s, "rb_write_many wrote %zu of %zu", n, k);
                break;
            }
            if (rc == RB_OK && n < k)
                atomic_fetch_add_explicit(&r->partial, 1, memory_order_relaxed);
        } else if (r->cfg.wmode[id] == W_VEC) {
            size_t len = msg_len(r, id, seq);
            encode(buf, len, id, seq);
            struct iovec iov[8];
            rng = mix64(rng);
            int nv = tu_split(buf, len, rng, iov, 8);
            while ((rc = rb_writev(rb, iov, nv)) == RB_EFULL) {
                atomic_fetch_add_explicit(&r->efull, 1, memory_order_relaxed);
                sched_yield();
                if ((++spins & 255) == 0 && st_timed_out(&r->s))
                    goto out;
            }
        } else {
            size_t len = msg_len(r, id, seq);
            encode(buf, len, id, seq);
            while ((rc = rb_write(rb, buf, len)) == RB_EFULL) {
                atomic_fetch_add_explicit(&r->efull, 1, memory_order_relaxed);
                sched_yield();
                if ((++spins & 255) == 0 && st_timed_out(&r->s))
                    goto out;
            }
        }
        if (rc != RB_OK) {
            st_report(&r->s, "producer %d seq %llu: write -> %d (%s)", id, (unsigned long long)seq, rc,
                      rb_strerror(rc));
            atomic_store(&r->s.abort, 1);
            break;
        }
        seq += n;
        if ((seq & 1023) < n && st_timed_out(&r->s))
            break;
    }
out:
    free(buf);
    if (own)
        rb_close(rb);
}

static void consume(struct run *r, int id, const unsigned char *b, size_t len) { st_log(&r->s, id, verify(r, b, len)); }

static void consumer(struct run *r, int id)
{
    int own;
    rb_ring *rb = st_ring(&r->s, &own);
    if (rb == NULL)
        return;
    const size_t maxm = r->cfg.large_max;
    const enum rmode mode = r->cfg.rmode[id];
    /* R_MANY: a buffer too small for the largest messages now and then,
     * R_SMALLBUF: rb_read into 256 bytes, then a full-size buffer on
     * RB_ETRUNC. */
    const size_t small = mode == R_MANY ? 2048 : 256;
    unsigned char *big = malloc(maxm), *sbuf = malloc(small);
    size_t lens[32];
    uint64_t spins = 0;
    while (atomic_load_explicit(&r->s.received, memory_order_relaxed) < r->s.total) {
        int rc;
        size_t len = 0, count = 0;
        if (mode == R_SINGLE) {
            rc = rb_read(rb, big, maxm, &len);
            if (rc == RB_OK)
                consume(r, id, big, len);
        } else {
            if (mode == R_MANY) {
                rc = rb_read_many(rb, sbuf, small, lens, 32, &count);
                if (rc == RB_OK) {
                    size_t off = 0;
                    if (count == 0 || count > 32)
                        st_report(&r->s, "rb_read_many: RB_OK with count %zu", count);
                    for (size_t i = 0; i < count && i < 32; i++) {
                        if (off + lens[i] > small) {
                            st_report(&r->s, "rb_read_many: lens overflow the buffer");
                            break;
                        }
                        consume(r, id, sbuf + off, lens[i]);
                        off += lens[i];
                    }
                } else if (rc == RB_ETRUNC) {
                    len = lens[0];
                }
            } else {
                rc = rb_read(rb, sbuf, small, &len);
                if (rc == RB_OK)
                    consume(r, id, sbuf, len);
            }
            if (rc == RB_ETRUNC) {
                atomic_fetch_add_explicit(&r->etrunc, 1, memory_order_relaxed);
                if (len <= small || len > maxm)
                    st_report(&r->s, "RB_ETRUNC with a needed length of %zu for a buffer of %zu", len, small);
                /* Someone else may take it first: read whatever is next. */
                rc = rb_read(rb, big, maxm, &len);
                if (rc == RB_OK)
                    consume(r, id, big, len);
            }
        }
        if (rc == RB_EEMPTY) {
            atomic_fetch_add_explicit(&r->eempty, 1, memory_order_relaxed);
            sched_yield();
            if ((++spins & 255) == 0 && st_timed_out(&r->s))
                break;
            continue;
        }
        if (rc != RB_OK) {
            st_report(&r->s, "consumer %d: read -> %d (%s)", id, rc, rb_strerror(rc));
            atomic_store(&r->s.abort, 1);
            break;
        }
        if ((++spins & 1023) == 0 && st_timed_out(&r->s))
            break;
    }
    free(big);
    free(sbuf);
    if (own)
        rb_close(rb);
}

/* Worker i: producers 0 .. nprod - 1, then the consumers. */
static void worker(struct st_run *s, int i)
{
    struct run *r = (struct run *)(void *)s;
    if (i < s->nprod)
        producer(r, i);
    else
        consumer(r, i - s->nprod);
}

static uint64_t expect(const struct st_run *s, int p, uint64_t seq, size_t *len)
{
    const struct run *r = (const struct run *)(const void *)s;
    *len = msg_len(r, p, seq);
    return ((uint64_t)p << 56) | (*len < TINY ? ST_TINY : seq);
}

/* ---- a run ------------------------------------------------------------------------- */

static void run_config(const struct config *cfg)
{
    const double scale = env_double("RB_STRESS_SCALE", 1.0);
    const double timeout = env_double("RB_STRESS_TIMEOUT", 120.0);
    const struct st_run init = {.name = cfg->name,
                                .nprod = cfg->nprod,
                                .ncons = cfg->ncons,
                                .processes = cfg->processes,
                                .shared_handle = cfg->shared_handle,
                                .per_prod = st_scaled(cfg->per_prod, scale, UINT64_MAX)};
    size_t maplen;
    struct run *r = st_map(sizeof(struct run), &init, &maplen);
    REQUIRE(r != NULL);
    r->cfg = *cfg;
    const uint64_t total = r->s.total;

    char *dir = tu_mkdtemp();
    if (!CHECK(dir != NULL)) {
        munmap(r, maplen);
        return;
    }
    snprintf(r->s.path, sizeof r->s.path, "%s/ring", dir);
    rb_ring *rb = NULL;
    int rc = rb_create(r->s.path, cfg->cap, 0, &rb);
    if (!CHECK_EQ(rc, RB_OK))
        goto cleanup;
    if (!CHECK(cfg->large_max <= rb_max_message_size(rb)))
        goto cleanup;
    r->s.shared = rb;

    const int64_t t0 = now_ns();
    r->s.deadline = t0 + (int64_t)(timeout * 1e9);
    if (cfg->processes) {
        pid_t pids[MAXP + MAXC];
        const int np = st_fork(&r->s, cfg->nprod + cfg->ncons, worker, pids);
        /* Wait, and kill what is still running well past the deadline
         * (e.g. stuck inside the library). */
        int left = np;
        while (left > 0) {
            int status;
            pid_t p = waitpid(-1, &status, WNOHANG);
            if (p > 0) {
                left--;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                    FAILF("%s: worker process %d ended with status 0x%x", cfg->name, (int)p, status);
                continue;
            }
            if (p < 0 && errno != EINTR) {
                FAILF("waitpid: %s", strerror(errno));
                break;
            }
            if (now_ns() > r->s.deadline + 10 * 1000000000LL) {
                FAILF("%s: workers still running 10 s after the deadline; killing them", cfg->name);
                for (int k = 0; k < np; k++)
                    kill(pids[k], SIGKILL);
                while (waitpid(-1, NULL, 0) > 0)
                    ;
                break;
            }
            usleep(2000);
        }
    } else {
        pthread_t th[MAXP + MAXC];
        struct st_worker w[MAXP + MAXC];
        int nt = 0;
        /* Consumers and producers alternately, so both kinds start early. */
        for (int i = 0; i < MAXP || i < MAXC; i++) {
            for (int kind = 0; kind < 2; kind++) {
                int is_prod = kind == 1;
                if (i >= (is_prod ? cfg->nprod : cfg->ncons))
                    continue;
                w[nt] = (struct st_worker){.r = &r->s, .i = is_prod ? i : cfg->nprod + i, .fn = worker};
                if (pthread_create(&th[nt], NULL, st_thread_main, &w[nt]) != 0) {
                    FAILF("pthread_create failed");
                    atomic_store(&r->s.abort, 1);
                    break;
                }
                nt++;
            }
        }
        for (int i = 0; i < nt; i++)
            pthread_join(th[i], NULL);
        if (nt != cfg->nprod + cfg->ncons)
            FAILF("%s: started %d threads of %d", cfg->name, nt, cfg->nprod + cfg->ncons);
    }
    const double dt = (double)(now_ns() - t0) / 1e9;

    CHECK_EQ_U(atomic_load(&r->s.received), total);
    st_check_logs(&r->s, expect);

    /* The ring is empty and clean afterwards (what the consumers read is
     * zeroed by the writers that reclaim it, st_check_drained). */
    const uint64_t tail = st_check_drained(rb, r->s.path, cfg->cap);
    unsigned char b[16];
    size_t len;
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
    /* It wrapped many times (thousands at the default scale). */
    CHECK(tail / cfg->cap >= (scale >= 1.0 ? 1000u : 1u));
    if (getenv("RT_VERBOSE") != NULL)
        fprintf(stdout,
                "  %s: %llu messages in %.2f s (%.0f/s), %llu wraps, efull %llu eempty %llu etrunc %llu "
                "partial %llu\n",
                cfg->name, (unsigned long long)total, dt, (double)total / dt, (unsigned long long)(tail / cfg->cap),
                (unsigned long long)atomic_load(&r->efull), (unsigned long long)atomic_load(&r->eempty),
                (unsigned long long)atomic_load(&r->etrunc), (unsigned long long)atomic_load(&r->partial));

cleanup:
    rb_close(rb);
    tu_rmtree(dir);
    free(dir);
    munmap(r, maplen);
}

/* ---- the tests -------------------------------------------------------------------- */

TEST(threads_shared_handle)
{
    struct config c = {.name = "threads_shared_handle",
                       .nprod = 2,
                       .ncons = 2,
                       .per_prod = 200000,
                       .cap = 4096,
                       .small_max = 300,
                       .large_max = 1500,
                       .shared_handle = 1};
    run_config(&c);
}

TEST(threads_handle_per_thread)
{
    struct config c = {.name = "threads_handle_per_thread",
                       .nprod = 2,
                       .ncons = 2,
                       .per_prod = 200000,
                       .cap = 16384,
                       .small_max = 300,
                       .large_max = 4000,
                       .shared_handle = 0};
    run_config(&c);
}

TEST(threads_write_many_read_many)
{
    struct config c = {.name = "threads_write_many_read_many",
                       .nprod = 2,
                       .ncons = 2,
                       .per_prod = 200000,
                       .cap = 4096,
                       .small_max = 300,
                       .large_max = 2048,
                       .shared_handle = 1,
                       .wmode = {W_MANY, W_MANY},
                       .rmode = {R_MANY, R_MANY}};
    run_config(&c);
}

TEST(threads_mixed_calls)
{
    /* 3 + 3 threads, each its own handle, every kind of call at once. */
    struct config c = {.name = "threads_mixed_calls",
                       .nprod = 3,
                       .ncons = 3,
                       .per_prod = 100000,
                       .cap = 16384,
                       .small_max = 300,
                       .large_max = 8192,
                       .shared_handle = 0,
                       .wmode = {W_SINGLE, W_MANY, W_SINGLE},
                       .rmode = {R_SINGLE, R_MANY, R_SMALLBUF}};
    run_config(&c);
}

TEST(threads_oversubscribed)
{
    /* 4 + 4 threads on one handle: on a machine with fewer cores, threads
     * get preempted between reserving and committing, and while holding
     * the read turn. */
    struct config c = {.name = "threads_oversubscribed",
                       .nprod = 4,
                       .ncons = 4,
                       .per_prod = 100000,
                       .cap = 4096,
                       .small_max = 300,
                       .large_max = 1024,
                       .shared_handle = 1,
                       .wmode = {W_SINGLE, W_MANY, W_SINGLE, W_MANY},
                       .rmode = {R_SINGLE, R_MANY, R_SMALLBUF, R_SINGLE}};
    run_config(&c);
}

TEST(threads_writev)
{
    /* Three producers cutting every message into vectors, one handle each,
     * against both kinds of reader. */
    struct config c = {.name = "threads_writev",
                       .nprod = 3,
                       .ncons = 2,
                       .per_prod = 100000,
                       .cap = 4096,
                       .small_max = 300,
                       .large_max = 2048,
                       .shared_handle = 0,
                       .wmode = {W_VEC, W_VEC, W_VEC},
                       .rmode = {R_SINGLE, R_MANY}};
    run_config(&c);
}

TEST(processes)
{
    struct config c = {.name = "processes",
                       .nprod = 2,
                       .ncons = 2,
                       .per_prod = 100000,
                       .cap = 16384,
                       .small_max = 300,
                       .large_max = 4000,
                       .processes = 1};
    run_config(&c);
}

TEST(processes_many)
{
    struct config c = {.name = "processes_many",
                       .nprod = 2,
                       .ncons = 2,
                       .per_prod = 100000,
                       .cap = 4096,
                       .small_max = 300,
                       .large_max = 2048,
                       .processes = 1,
                       .wmode = {W_SINGLE, W_MANY},
                       .rmode = {R_SMALLBUF, R_MANY}};
    run_config(&c);
}

TEST(processes_writev)
{
    struct config c = {.name = "processes_writev",
                       .nprod = 2,
                       .ncons = 2,
                       .per_prod = 100000,
                       .cap = 4096,
                       .small_max = 300,
                       .large_max = 2048,
                       .processes = 1,
                       .wmode = {W_VEC, W_VEC},
                       .rmode = {R_SINGLE, R_SMALLBUF}};
    run_config(&c);
}

/* rb_create with RB_REMOVE publishes atomically: a concurrent rb_open sees
 * a complete ring (old or new) or, before the first, no file; never a
 * partial one. */
struct race {
    char path[512];
    atomic_int stop;
    _Atomic uint64_t opened, missing, bad;
    int bad_rc;
};

static void *race_opener(void *arg)
{
    struct race *x = arg;
    while (!atomic_load(&x->stop)) {
        rb_ring *rb = NULL;
        errno = 0;
        int rc = rb_open(x->path, &rb);
        if (rc == RB_OK) {
            atomic_fetch_add(&x->opened, 1);
            if (rb_capacity(rb) != 4096 && rb_capacity(rb) != 8192)
                atomic_fetch_add(&x->bad, 1);
            rb_close(rb);
        } else if (rc == RB_ESYS && errno == ENOENT) {
            atomic_fetch_add(&x->missing, 1);
        } else {
            x->bad_rc = rc;
            atomic_fetch_add(&x->bad, 1);
        }
    }
    return NULL;
}

TEST(create_replace_open_race)
{
    char *dir = tu_mkdtemp();
    REQUIRE(dir != NULL);
    struct race x;
    memset(&x, 0, sizeof x);
    snprintf(x.path, sizeof x.path, "%s/ring", dir);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, race_opener, &x) == 0);
    const double scale = env_double("RB_STRESS_SCALE", 1.0);
    int n = (int)(2000 * scale);
    if (n < 200)
        n = 200;
    for (int i = 0; i < n; i++) {
        rb_ring *rb = NULL;
        int rc = rb_create(x.path, (i & 1) ? 8192 : 4096, RB_REMOVE, &rb);
        if (!CHECK_EQ(rc, RB_OK))
            break;
        char m[8] = "abcdefg";
        CHECK_EQ(rb_write(rb, m, sizeof m), RB_OK);
        rb_close(rb);
    }
    atomic_store(&x.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&x.bad) != 0)
        FAILF("rb_open saw a bad ring %llu times (last status %d: %s)", (unsigned long long)atomic_load(&x.bad),
              x.bad_rc, rb_strerror(x.bad_rc));
    CHECK(atomic_load(&x.opened) > 0);
    /* Only the ring is left: no temporary files. */
    char list[4096];
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 1);
    CHECK_STR_EQ(list, "ring");
    if (getenv("RT_VERBOSE") != NULL)
        fprintf(stdout, "  %d creates, %llu opens, %llu before the first\n", n,
                (unsigned long long)atomic_load(&x.opened), (unsigned long long)atomic_load(&x.missing));
    tu_rmtree(dir);
    free(dir);
}

/* ---- opening and observing a busy ring ---------------------------------------------- */

struct busy_ring {
    rb_ring *rb;
    atomic_int stop;
};

static void *busy_producer(void *arg)
{
    struct busy_ring *b = arg;
    char msg[24] = "busy ring message";
    while (!atomic_load(&b->stop))
        if (rb_write(b->rb, msg, sizeof msg) != RB_OK)
            sched_yield();
    return NULL;
}

static void *busy_consumer(void *arg)
{
    struct busy_ring *b = arg;
    char buf[64];
    size_t len;
    while (!atomic_load(&b->stop))
        if (rb_read(b->rb, buf, sizeof buf, &len) != RB_OK)
            sched_yield();
    return NULL;
}

/* rb_open reads head and tail in separate loads: if it is preempted between
 * them while others stream through the ring, a naive check sees
 * tail - head > capacity and rejects a healthy ring. Likewise rb_positions
 * must never report head > tail or tail - head > capacity. */
TEST(open_and_positions_while_busy)
{
    char *dir = tu_mkdtemp();
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "busy");
    struct busy_ring b = {0};
    REQUIRE_EQ(rb_create(path, 4096, 0, &b.rb), RB_OK);
    /* More threads than cores, so that the opener is often preempted. */
    pthread_t p[2], c[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&p[i], NULL, busy_producer, &b);
        pthread_create(&c[i], NULL, busy_consumer, &b);
    }
    long opens = (long)(50000 * env_double("RB_STRESS_SCALE", 1.0)), bad_open = 0, bad_pos = 0;
    for (long i = 0; i < opens; i++) {
        rb_ring *other;
        int rc = rb_open(path, &other);
        if (rc != RB_OK) {
            bad_open++;
            continue;
        }
        for (int k = 0; k < 20; k++) {
            uint64_t h, t;
            rb_positions(other, &h, &t);
            if (t < h || t - h > 4096)
                bad_pos++;
        }
        rb_close(other);
    }
    atomic_store(&b.stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(p[i], NULL);
        pthread_join(c[i], NULL);
    }
    CHECK_EQ(bad_open, 0);
    CHECK_EQ(bad_pos, 0);
    rb_close(b.rb);
    tu_rmtree(dir);
    free(dir);
}
