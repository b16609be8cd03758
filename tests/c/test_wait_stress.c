/*
 * test_wait_stress.c - blocking stress runs with exactly-once checks: a
 * ping-pong between two rings and producers and consumers that block and
 * wake all the time, as threads and as processes.
 *
 * A lost wake-up does not hang a waiter (parks are capped at 100 ms) but
 * shows up as slowness, so these tests bound the elapsed time and count the
 * calls that took about a park cap (RT_VERBOSE=1 prints these figures).
 *
 * RB_STRESS_SCALE (default 1) scales the message counts and round trips;
 * RB_STRESS_TIMEOUT (seconds, default 60) bounds each stress run.
 */
#include "runner.h"
#include "testutil.h"

#include "stress.h"

#include <sys/mman.h>

/* ---- ping-pong: lost wake-ups show up as slowness ------------------------------------------ */

struct pp {
    char a[512], b[512]; /* ping ring, pong ring */
    uint64_t n;
    int64_t deadline;
    atomic_int stop;
    _Atomic uint64_t slow;
    int64_t max_rtt, total_ns;
};

/* The pong side: echoes every message of ring a into ring b, each byte
 * xor 0x5A; sleeps before a quarter of the replies so that the ping side
 * parks. Returns 0 or an error code. */
static int pp_ponger(struct pp *x)
{
    rb_ring *a = NULL, *b = NULL;
    if (rb_open(x->a, &a) != RB_OK || rb_open(x->b, &b) != RB_OK)
        return 20;
    int err = 0;
    unsigned char buf[128];
    for (uint64_t i = 0; i < x->n && !err; i++) {
        size_t len = 0;
        int rc;
        while ((rc = rb_read_wait(a, buf, sizeof buf, &len, 2 * SEC)) == RB_ETIMEDOUT)
            if (atomic_load(&x->stop) || now_ns() > x->deadline) {
                err = 21;
                break;
            }
        if (err)
            break;
        uint64_t seq;
        if (rc != RB_OK || len < 8) {
            err = 22;
            break;
        }
        memcpy(&seq, buf, 8);
        if (seq != i) {
            err = 23;
            break;
        }
        for (size_t k = 0; k < len; k++)
            buf[k] ^= 0x5A;
        if (mix64(i) % 4 == 0)
            sleep_ns(200000);
        if (rb_write_wait(b, buf, len, 2 * SEC) != RB_OK)
            err = 24;
    }
    rb_close(a);
    rb_close(b);
    return err;
}

static int pp_pinger(struct pp *x)
{
    rb_ring *a = NULL, *b = NULL;
    if (rb_open(x->a, &a) != RB_OK || rb_open(x->b, &b) != RB_OK)
        return 30;
    int err = 0;
    unsigned char m[128], r[128];
    const int64_t start = now_ns();
    for (uint64_t i = 0; i < x->n && !err; i++) {
        size_t len = 8 + (size_t)(i % 57), got = 0;
        memcpy(m, &i, 8);
        fill_pattern(m + 8, len - 8, i);
        if (mix64(i ^ 0xABCDEF) % 4 == 0)
            sleep_ns(200000);
        int64_t t0 = now_ns();
        if (rb_write_wait(a, m, len, 2 * SEC) != RB_OK) {
            err = 31;
            break;
        }
        int rc;
        while ((rc = rb_read_wait(b, r, sizeof r, &got, 2 * SEC)) == RB_ETIMEDOUT)
            if (now_ns() > x->deadline) {
                err = 32;
                break;
            }
        if (err)
            break;
        int64_t rtt = now_ns() - t0;
        if (rtt > x->max_rtt)
            x->max_rtt = rtt;
        if (rtt >= SLOW_NS)
            atomic_fetch_add(&x->slow, 1);
        if (rc != RB_OK || got != len) {
            err = 33;
            break;
        }
        for (size_t k = 0; k < len; k++)
            if ((r[k] ^ 0x5A) != m[k]) {
                err = 34;
                break;
            }
        if (now_ns() > x->deadline)
            err = 35;
    }
    x->total_ns = now_ns() - start;
    if (err)
        atomic_store(&x->stop, 1);
    rb_close(a);
    rb_close(b);
    return err;
}

static void *pp_ponger_thread(void *arg)
{
    return (void *)(intptr_t)pp_ponger(arg);
}

static void pingpong(int processes)
{
    AUTO_FX(fa);
    REQUIRE(fx_open(&fa, 4096));
    AUTO_FX(fb);
    REQUIRE(fx_open(&fb, 4096));
    struct pp *x = mmap(NULL, sizeof *x, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(x != MAP_FAILED);
    memset(x, 0, sizeof *x);
    snprintf(x->a, sizeof x->a, "%s", fa.path);
    snprintf(x->b, sizeof x->b, "%s", fb.path);
    const double scale = env_double("RB_STRESS_SCALE", 1.0);
    x->n = (uint64_t)((processes ? 1000 : 2000) * scale);
    if (x->n < 200)
        x->n = 200;
    const double bound = 60.0;
    x->deadline = now_ns() + (int64_t)(bound * 1e9);
    const uint32_t seq_a0 = tu_read_u32(fa.path, OFF_DATA_SEQ), seq_b0 = tu_read_u32(fb.path, OFF_DATA_SEQ);
    int perr = 0, cerr = 0;
    if (processes) {
        fflush(stdout);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            _exit(pp_ponger(x));
        perr = pp_pinger(x);
        int st = wait_child(pid, 15.0);
        if (st == -1 || st < 0 || !WIFEXITED(st))
            cerr = 99;
        else
            cerr = WEXITSTATUS(st);
    } else {
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, pp_ponger_thread, x) == 0);
        perr = pp_pinger(x);
        void *ret;
        pthread_join(th, &ret);
        cerr = (int)(intptr_t)ret;
    }
    if (perr != 0 || cerr != 0)
        FAILF("ping-pong failed: ping side error %d, pong side error %d", perr, cerr);
    const uint64_t slow = atomic_load(&x->slow);
    const uint32_t parks = (tu_read_u32(fa.path, OFF_DATA_SEQ) - seq_a0) + (tu_read_u32(fb.path, OFF_DATA_SEQ) - seq_b0);
    if (secs(x->total_ns) >= bound)
        FAILF("%llu round trips took %.1f s (bound %.0f s): lost wake-ups?", (unsigned long long)x->n,
              secs(x->total_ns), bound);
    /* A lost wake-up costs a park cap (100 ms): a few on a loaded machine
     * are possible, a pattern is not. */
    if (slow > x->n / 50)
        FAILF("%llu of %llu round trips took >= 90 ms (lost wake-ups?)", (unsigned long long)slow,
              (unsigned long long)x->n);
    /* The sleeps made the other side park: the futex path was used. */
    CHECK(parks > 0);
    if (verbose())
        fprintf(stdout, "  %llu round trips in %.3f s (%.1f us each), slowest %.3f ms, %llu >= 90 ms, %u wakes\n",
                (unsigned long long)x->n, secs(x->total_ns), (double)x->total_ns / 1e3 / (double)x->n,
                (double)x->max_rtt / 1e6, (unsigned long long)slow, parks);
    CHECK_EQ_U(tu_read_u32(fa.path, OFF_DATA_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(fb.path, OFF_DATA_WAITERS), 0);
    munmap(x, sizeof *x);
}

TEST(pingpong_threads) { pingpong(0); }
TEST(pingpong_processes) { pingpong(1); }

/* ---- blocking stress ------------------------------------------------------------------------ */

/*
 * 2 producers and 2 consumers, all blocking, on a 4096-byte ring with
 * messages of 1 to 1500 bytes: both sides block and wake all the time.
 *
 * A message of producer p, sequence number seq, has a length that is a
 * function of (p, seq). Byte 0 is 0xA0 | p, bytes 1-3 the low 24 bits of
 * seq (as many as fit), bytes 4-7 (from 8 bytes on) a checksum of the rest,
 * then a pattern derived from (p, seq). Messages of 4 bytes and more name
 * their seq fully and are checked byte for byte; those of 1 to 3 bytes
 * carry p and part of seq, and are checked as a multiset per producer.
 * Each consumer logs what it got; at the end every message must have been
 * received exactly once, and each consumer must have seen each producer's
 * messages in increasing seq order.
 *
 * When the producers are done, the main thread (or parent) writes one stop
 * message per consumer; a consumer that gets more than one (a batch) writes
 * the extra ones back.
 */
#define SP 2
#define SC 2
#define S_MAXLEN 1500
#define S_SHORT 4
#define S_WAIT (2 * SEC)

enum wkind { WK_WRITE, WK_MANY, WK_RESERVE, WK_VEC };
enum rkind { RK_READ, RK_MANY, RK_PEEK };

struct scfg {
    const char *name;
    int processes;
    int shared_handle;
    size_t cap;
    uint64_t per_prod;
    enum wkind w[SP];
    enum rkind r[SC];
};

struct srun {
    struct st_run s; /* first: the mapping starts with it */
    struct scfg cfg;
    _Atomic uint64_t calls, slow, max_ns, timeouts, aborted, swapped, batches, regiven;
};

static const unsigned char STOP[8] = {0xC5, 'S', 'T', 'O', 'P', '!', '!', 0xC5};

static size_t s_len(const struct srun *r, int p, uint64_t seq)
{
    uint64_t x = mix64(((uint64_t)p << 40) ^ seq ^ r->s.salt);
    unsigned c = (unsigned)(x % 100);
    x >>= 8;
    if (c < 3)
        return 1 + (size_t)(x % 7);
    return 1 + (size_t)(x % S_MAXLEN);
}

static uint32_t s_sum(const unsigned char *b, size_t len)
{
    uint32_t l = (uint32_t)len;
    uint64_t h = fnv1a(FNV_OFFSET, b, 4);
    h = fnv1a(h, &l, 4);
    h = fnv1a(h, b + 8, len - 8);
    return (uint32_t)(h ^ (h >> 32));
}

static void s_encode(const struct srun *r, unsigned char *b, size_t len, int p, uint64_t seq)
{
    const unsigned char hdr[4] = {(unsigned char)(0xA0 | p), (unsigned char)seq, (unsigned char)(seq >> 8),
                                  (unsigned char)(seq >> 16)};
    memcpy(b, hdr, len < 4 ? len : 4);
    if (len <= 4)
        return;
    const size_t off = len >= 8 ? 8 : 4;
    fill_pattern(b + off, len - off, mix64(((uint64_t)p << 32) ^ seq ^ r->s.salt));
    if (len >= 8) {
        uint32_t h = s_sum(b, len);
        memcpy(b + 4, &h, 4);
    }
}

/* The log entry of a message of 1 to 3 bytes: what it carries. */
static uint64_t s_tiny_entry(int p, const unsigned char *b, size_t len)
{
    uint64_t part = len >= 2 ? b[1] : 0;
    if (len >= 3)
        part |= (uint64_t)b[2] << 8;
    return ((uint64_t)p << 56) | ST_TINY | ((uint64_t)len << 32) | part;
}

/* Checks a message; returns its log entry or UINT64_MAX. */
static uint64_t s_verify(struct srun *r, const unsigned char *b, size_t len)
{
    if (len == 0 || len > S_MAXLEN) {
        st_report(&r->s, "message of impossible length %zu", len);
        return UINT64_MAX;
    }
    const int p = b[0] & 0x0F;
    if ((b[0] & 0xF0) != 0xA0 || p >= SP) {
        st_report(&r->s, "message of %zu bytes: bad first byte 0x%02x", len, b[0]);
        return UINT64_MAX;
    }
    if (len < S_SHORT)
        return s_tiny_entry(p, b, len);
    const uint64_t seq = b[1] | ((uint64_t)b[2] << 8) | ((uint64_t)b[3] << 16);
    if (seq >= r->s.per_prod || s_len(r, p, seq) != len) {
        st_report(&r->s, "producer %d seq %llu: length %zu (sent with %zu)", p, (unsigned long long)seq, len,
                  seq < r->s.per_prod ? s_len(r, p, seq) : 0);
        return UINT64_MAX;
    }
    if (len >= 8) {
        uint32_t h;
        memcpy(&h, b + 4, 4);
        if (h != s_sum(b, len)) {
            st_report(&r->s, "producer %d seq %llu (%zu bytes): checksum mismatch", p, (unsigned long long)seq, len);
            return UINT64_MAX;
        }
    }
    unsigned char e[S_MAXLEN];
    s_encode(r, e, len, p, seq);
    if (memcmp(e, b, len) != 0) {
        st_report(&r->s, "producer %d seq %llu (%zu bytes): payload differs", p, (unsigned long long)seq, len);
        return UINT64_MAX;
    }
    return ((uint64_t)p << 56) | seq;
}

static void s_stat(struct srun *r, int64_t t0)
{
    const uint64_t dt = (uint64_t)(now_ns() - t0);
    atomic_fetch_add_explicit(&r->calls, 1, memory_order_relaxed);
    if (dt >= (uint64_t)SLOW_NS)
        atomic_fetch_add_explicit(&r->slow, 1, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&r->max_ns, memory_order_relaxed);
    while (dt > m && !atomic_compare_exchange_weak(&r->max_ns, &m, dt))
        ;
}

/* Now and then a pause longer than the 50 us spin, so that the other side
 * parks on the futex and must be woken. */
static void s_jitter(uint64_t rng)
{
    if ((rng >> 40) % 64 == 0)
        sleep_ns(60000 + (int64_t)((rng >> 48) % 100000));
}

static void s_producer(struct srun *r, int id)
{
    int own;
    rb_ring *rb = st_ring(&r->s, &own);
    if (rb == NULL)
        return;
    const enum wkind kind = r->cfg.w[id];
    unsigned char *buf = malloc(8 * S_MAXLEN);
    size_t lens[8];
    uint64_t rng = mix64((uint64_t)id + 1000 + r->s.salt), seq = 0;
    while (seq < r->s.per_prod && !atomic_load_explicit(&r->s.abort, memory_order_relaxed)) {
        int rc = RB_OK;
        size_t n = 1;
        rng = mix64(rng);
        int64_t t0 = now_ns();
        if (kind == WK_WRITE) {
            size_t len = s_len(r, id, seq);
            s_encode(r, buf, len, id, seq);
            rc = rb_write_wait(rb, buf, len, S_WAIT);
        } else if (kind == WK_VEC) {
            size_t len = s_len(r, id, seq);
            s_encode(r, buf, len, id, seq);
            struct iovec iov[8];
            rc = rb_writev_wait(rb, iov, tu_split(buf, len, rng, iov, 8), S_WAIT);
        } else if (kind == WK_MANY) {
            size_t k = 1 + (size_t)(rng % 8), off = 0;
            if (k > r->s.per_prod - seq)
                k = (size_t)(r->s.per_prod - seq);
            for (size_t i = 0; i < k; i++) {
                lens[i] = s_len(r, id, seq + i);
                s_encode(r, buf + off, lens[i], id, seq + i);
                off += lens[i];
            }
            n = 0;
            rc = rb_write_many_wait(rb, buf, lens, k, &n, S_WAIT);
            if ((rc == RB_OK && (n < 1 || n > k)) || (rc != RB_OK && n != 0))
                st_report(&r->s, "rb_write_many_wait -> %d with %zu written of %zu", rc, n, k);
            atomic_fetch_add_explicit(&r->batches, 1, memory_order_relaxed);
        } else {
            void *p = NULL;
            if (rng % 16 == 0) {
                /* A reservation that is aborted: never delivered. */
                size_t alen = 1 + (size_t)((rng >> 8) % S_MAXLEN);
                rc = rb_reserve_wait(rb, alen, &p, S_WAIT);
                if (rc == RB_OK) {
                    memset(p, 0xEE, alen);
                    if (rb_abort(rb, p) != RB_OK)
                        st_report(&r->s, "rb_abort failed");
                    atomic_fetch_add_explicit(&r->aborted, 1, memory_order_relaxed);
                }
            }
            size_t len = s_len(r, id, seq);
            if (rc == RB_OK)
                rc = rb_reserve_wait(rb, len, &p, S_WAIT);
            if (rc == RB_OK) {
                s_encode(r, p, len, id, seq); /* in place */
                void *p2 = NULL;
                /* Now and then a second one (never waiting while holding
                 * the first), committed first. */
                if (seq + 1 < r->s.per_prod && (rng >> 20) % 8 == 0 &&
                    rb_reserve(rb, s_len(r, id, seq + 1), &p2) == RB_OK) {
                    s_encode(r, p2, s_len(r, id, seq + 1), id, seq + 1);
                    if (rb_commit(rb, p2) != RB_OK)
                        st_report(&r->s, "rb_commit of the second reservation failed");
                    n = 2;
                    atomic_fetch_add_explicit(&r->swapped, 1, memory_order_relaxed);
                }
                if (rb_commit(rb, p) != RB_OK)
                    st_report(&r->s, "rb_commit failed");
            }
        }
        s_stat(r, t0);
        if (rc == RB_ETIMEDOUT) {
            atomic_fetch_add_explicit(&r->timeouts, 1, memory_order_relaxed);
            if (st_timed_out(&r->s))
                break;
            continue;
        }
        if (rc != RB_OK) {
            st_report(&r->s, "producer %d seq %llu: -> %d (%s)", id, (unsigned long long)seq, rc, rb_strerror(rc));
            atomic_store(&r->s.abort, 1);
            break;
        }
        seq += n;
        s_jitter(rng);
    }
    free(buf);
    if (own)
        rb_close(rb);
}

/* Handles one message; returns 1 if it was a stop message. */
static int s_consume(struct srun *r, int id, const unsigned char *b, size_t len)
{
    if (len == sizeof STOP && memcmp(b, STOP, sizeof STOP) == 0)
        return 1;
    st_log(&r->s, id, s_verify(r, b, len));
    return 0;
}

static void s_consumer(struct srun *r, int id)
{
    int own;
    rb_ring *rb = st_ring(&r->s, &own);
    if (rb == NULL)
        return;
    const enum rkind kind = r->cfg.r[id];
    unsigned char *buf = malloc(4096);
    size_t lens[16];
    int stops = 0;
    uint64_t rng = mix64((uint64_t)id + 2000 + r->s.salt);
    while (stops == 0 && !atomic_load_explicit(&r->s.abort, memory_order_relaxed)) {
        int rc;
        rng = mix64(rng);
        s_jitter(rng);
        int64_t t0 = now_ns();
        if (kind == RK_READ) {
            size_t len = 0;
            rc = rb_read_wait(rb, buf, S_MAXLEN, &len, S_WAIT); /* exactly the largest message */
            if (rc == RB_OK)
                stops += s_consume(r, id, buf, len);
        } else if (kind == RK_MANY) {
            size_t count = 0;
            rc = rb_read_many_wait(rb, buf, 3000, lens, 16, &count, S_WAIT);
            if (rc == RB_OK) {
                if (count < 1 || count > 16)
                    st_report(&r->s, "rb_read_many_wait: count %zu", count);
                size_t off = 0;
                for (size_t i = 0; i < count && i < 16; i++) {
                    if (off + lens[i] > 3000) {
                        st_report(&r->s, "rb_read_many_wait: lengths overflow the buffer");
                        break;
                    }
                    stops += s_consume(r, id, buf + off, lens[i]);
                    off += lens[i];
                }
            } else if (count != 0) {
                st_report(&r->s, "rb_read_many_wait -> %d with count %zu", rc, count);
            }
        } else {
            const void *p = NULL;
            size_t len = 0;
            rc = rb_peek_wait(rb, &p, &len, S_WAIT);
            if (rc == RB_OK) {
                stops += s_consume(r, id, p, len); /* checked in place */
                int rr = rb_release(rb);
                if (rr != RB_OK)
                    st_report(&r->s, "rb_release -> %d", rr);
            }
        }
        s_stat(r, t0);
        if (rc == RB_ETIMEDOUT) {
            atomic_fetch_add_explicit(&r->timeouts, 1, memory_order_relaxed);
            if (st_timed_out(&r->s))
                break;
            continue;
        }
        if (rc != RB_OK) {
            st_report(&r->s, "consumer %d: -> %d (%s)", id, rc, rb_strerror(rc));
            atomic_store(&r->s.abort, 1);
            break;
        }
    }
    /* Stop messages meant for the other consumers go back. */
    for (int k = 1; k < stops; k++) {
        atomic_fetch_add(&r->regiven, 1);
        while (rb_write_wait(rb, STOP, sizeof STOP, S_WAIT) == RB_ETIMEDOUT && !st_timed_out(&r->s))
            ;
    }
    free(buf);
    if (own)
        rb_close(rb);
}

/* Worker i: consumers 0 .. SC - 1, then the producers. */
static void s_worker(struct st_run *s, int i)
{
    struct srun *r = (struct srun *)(void *)s;
    if (i < SC)
        s_consumer(r, i);
    else
        s_producer(r, i - SC);
}

static uint64_t s_expect(const struct st_run *s, int p, uint64_t seq, size_t *len)
{
    const struct srun *r = (const struct srun *)(const void *)s;
    *len = s_len(r, p, seq);
    if (*len >= S_SHORT)
        return ((uint64_t)p << 56) | seq;
    unsigned char b[S_SHORT];
    s_encode(r, b, *len, p, seq);
    return s_tiny_entry(p, b, *len);
}

/* Writes the stop messages (one per consumer). */
static void s_stop(struct srun *r, rb_ring *rb)
{
    for (int c = 0; c < SC; c++)
        while (rb_write_wait(rb, STOP, sizeof STOP, S_WAIT) == RB_ETIMEDOUT)
            if (st_timed_out(&r->s))
                return;
}

static void s_run(const struct scfg *cfg)
{
    const double scale = env_double("RB_STRESS_SCALE", 1.0);
    const double timeout = env_double("RB_STRESS_TIMEOUT", 60.0);
    const struct st_run init = {.name = cfg->name,
                                .nprod = SP,
                                .ncons = SC,
                                .processes = cfg->processes,
                                .shared_handle = cfg->shared_handle,
                                .per_prod = st_scaled(cfg->per_prod, scale, 0xFFFFFF)};
    size_t maplen;
    struct srun *r = st_map(sizeof(struct srun), &init, &maplen);
    REQUIRE(r != NULL);
    r->cfg = *cfg;
    const uint64_t per_prod = r->s.per_prod;
    AUTO_FX(f);
    if (!fx_open(&f, cfg->cap)) {
        munmap(r, maplen);
        return;
    }
    snprintf(r->s.path, sizeof r->s.path, "%s", f.path);
    r->s.shared = f.rb;

    const int64_t t0 = now_ns();
    r->s.deadline = t0 + (int64_t)(timeout * 1e9);
    if (cfg->processes) {
        pid_t pids[SP + SC];
        const int n = st_fork(&r->s, SP + SC, s_worker, pids);
        /* Producers first, then the stop messages, then the consumers. */
        for (int i = SC; i < n; i++)
            CHECK_CHILD_OK(wait_child(pids[i], secs(r->s.deadline - now_ns()) + 10), cfg->name);
        s_stop(r, f.rb);
        for (int i = 0; i < SC && i < n; i++)
            CHECK_CHILD_OK(wait_child(pids[i], secs(r->s.deadline - now_ns()) + 10), cfg->name);
    } else {
        pthread_t th[SP + SC];
        struct st_worker w[SP + SC];
        int started[SP + SC] = {0};
        for (int i = 0; i < SP + SC; i++) {
            w[i] = (struct st_worker){.r = &r->s, .i = i, .fn = s_worker};
            started[i] = pthread_create(&th[i], NULL, st_thread_main, &w[i]) == 0;
            if (!started[i]) {
                FAILF("pthread_create failed");
                atomic_store(&r->s.abort, 1);
            }
        }
        for (int i = SC; i < SP + SC; i++)
            if (started[i])
                pthread_join(th[i], NULL);
        s_stop(r, f.rb);
        for (int i = 0; i < SC; i++)
            if (started[i])
                pthread_join(th[i], NULL);
    }
    const int64_t dt = now_ns() - t0;

    CHECK_EQ_U(atomic_load(&r->s.received), per_prod * SP);
    st_check_logs(&r->s, s_expect);
    /* Afterwards: empty, clean, nobody holding the turn or counted as
     * waiting. */
    const uint64_t tail = st_check_drained(f.rb, f.path, cfg->cap);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_DATA_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_SPACE_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_TURN_WAITERS), 0);
    const uint32_t data_wakes = tu_read_u32(f.path, OFF_DATA_SEQ), space_wakes = tu_read_u32(f.path, OFF_SPACE_SEQ),
                   turn_wakes = tu_read_u32(f.path, OFF_TURN_SEQ);
    /* Both sides parked and were woken, repeatedly (how often depends on
     * the machine: waits spin and yield for 50 µs before parking). */
    CHECK(data_wakes >= 10);
    CHECK(space_wakes >= 10);
    /* A lost wake-up costs a park cap: a few slow calls on a loaded machine
     * are possible, a pattern is not. */
    const uint64_t calls = atomic_load(&r->calls), slow = atomic_load(&r->slow);
    if (slow > 20 + calls / 200)
        FAILF("%s: %llu of %llu blocking calls took >= 90 ms (lost wake-ups?)", cfg->name, (unsigned long long)slow,
              (unsigned long long)calls);
    if (verbose())
        fprintf(stdout,
                "  %s: %llu messages in %.2f s (%.0f/s), %llu wraps; %llu blocking calls, %llu >= 90 ms, slowest "
                "%.1f ms, %llu timeouts; wakes: data %u space %u turn %u; aborted %llu, swapped %llu, "
                "stops given back %llu\n",
                cfg->name, (unsigned long long)(per_prod * SP), secs(dt), (double)(per_prod * SP) / secs(dt),
                (unsigned long long)(tail / cfg->cap), (unsigned long long)calls, (unsigned long long)slow,
                (double)atomic_load(&r->max_ns) / 1e6, (unsigned long long)atomic_load(&r->timeouts), data_wakes,
                space_wakes, turn_wakes, (unsigned long long)atomic_load(&r->aborted),
                (unsigned long long)atomic_load(&r->swapped), (unsigned long long)atomic_load(&r->regiven));
    munmap(r, maplen);
}

TEST(stress_threads_write_wait_read_wait)
{
    struct scfg c = {.name = "stress_threads_write_wait_read_wait",
                     .shared_handle = 1,
                     .cap = 4096,
                     .per_prod = 100000,
                     .w = {WK_WRITE, WK_WRITE},
                     .r = {RK_READ, RK_READ}};
    s_run(&c);
}

TEST(stress_threads_many_wait)
{
    struct scfg c = {.name = "stress_threads_many_wait",
                     .cap = 4096,
                     .per_prod = 100000,
                     .w = {WK_MANY, WK_MANY},
                     .r = {RK_MANY, RK_MANY}};
    s_run(&c);
}

TEST(stress_threads_reserve_peek)
{
    struct scfg c = {.name = "stress_threads_reserve_peek",
                     .cap = 4096,
                     .per_prod = 100000,
                     .w = {WK_RESERVE, WK_RESERVE},
                     .r = {RK_PEEK, RK_PEEK}};
    s_run(&c);
}

TEST(stress_threads_mixed_shared_handle)
{
    struct scfg c = {.name = "stress_threads_mixed_shared_handle",
                     .shared_handle = 1,
                     .cap = 4096,
                     .per_prod = 100000,
                     .w = {WK_RESERVE, WK_MANY},
                     .r = {RK_PEEK, RK_MANY}};
    s_run(&c);
}

TEST(stress_threads_writev_wait)
{
    struct scfg c = {.name = "stress_threads_writev_wait",
                     .shared_handle = 1,
                     .cap = 4096,
                     .per_prod = 100000,
                     .w = {WK_VEC, WK_VEC},
                     .r = {RK_READ, RK_MANY}};
    s_run(&c);
}

TEST(stress_processes_wait)
{
    struct scfg c = {.name = "stress_processes_wait",
                     .processes = 1,
                     .cap = 4096,
                     .per_prod = 60000,
                     .w = {WK_WRITE, WK_RESERVE},
                     .r = {RK_READ, RK_PEEK}};
    s_run(&c);
}

TEST(stress_processes_many_wait)
{
    struct scfg c = {.name = "stress_processes_many_wait",
                     .processes = 1,
                     .cap = 4096,
                     .per_prod = 60000,
                     .w = {WK_MANY, WK_WRITE},
                     .r = {RK_MANY, RK_READ}};
    s_run(&c);
}

TEST(stress_processes_writev_wait)
{
    struct scfg c = {.name = "stress_processes_writev_wait",
                     .processes = 1,
                     .cap = 4096,
                     .per_prod = 60000,
                     .w = {WK_VEC, WK_RESERVE},
                     .r = {RK_PEEK, RK_READ}};
    s_run(&c);
}
