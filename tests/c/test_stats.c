/*
 * test_stats.c - the counters (rb_stats): exact after known traffic, from
 * one thread and several, across handles that close, are reopened or are
 * killed, for waits, wake-ups and crash recovery; monotonic while others
 * count; the struct's size handling; forged counters in the file.
 */
#include "runner.h"
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

static struct rb_stats stats_of(rb_ring *rb)
{
    struct rb_stats s;
    memset(&s, 0xAB, sizeof s);
    int rc = rb_stats(rb, &s);
    if (rc != RB_OK)
        FAILF("rb_stats -> %d", rc);
    return s;
}

#define CHECK_STAT(s, field, want) CHECK_EQ_U((s).field, (uint64_t)(want))

/* Every kind of call, from one thread: each counter exact. */
TEST(counts_exact_from_one_thread)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    struct rb_stats s = stats_of(rb);
    CHECK_STAT(s, written, 0);
    CHECK_STAT(s, read, 0);
    CHECK_STAT(s, empty, 0);
    CHECK(s.created_ns > 1700000000ull * 1000000000ull);
    CHECK_EQ_U(s.created_ns, tu_read_u64(f.path, OFF_CREATED_NS));

    unsigned char buf[4096];
    size_t len;
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);             /* empty 1 */
    /* The waits are 20 ms: one of 1 ms often ended in its spin phase (50
     * us of pauses and sched_yield, where a yield on a loaded machine can
     * give the CPU away for milliseconds) without parking. */
    CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, &len, 20 * MS), RB_ETIMEDOUT); /* a park */
    const void *p;
    CHECK_EQ(rb_peek(rb, &p, &len), RB_EEMPTY); /* empty 2 */
    CHECK_EQ(put(rb, 1, 100), RB_OK);
    CHECK_EQ(put(rb, 2, 1), RB_OK);
    size_t lens[3] = {10, 20, 30}, written = 0;
    CHECK_EQ(rb_write_many(rb, buf, lens, 3, &written), RB_OK);
    CHECK_EQ_U(written, 3);
    void *w;
    REQUIRE_EQ(rb_reserve(rb, 7, &w), RB_OK);
    memset(w, 7, 7);
    CHECK_EQ(rb_commit(rb, w), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 9, &w), RB_OK);
    CHECK_EQ(rb_abort(rb, w), RB_OK);
    CHECK_EQ(rb_write(rb, buf, 2040), RB_OK);                        /* now 2000 do not fit */
    CHECK_EQ(rb_write(rb, buf, 2000), RB_EFULL);                     /* full 1 */
    CHECK_EQ(rb_write_wait(rb, buf, 2000, 20 * MS), RB_ETIMEDOUT);   /* a park */
    CHECK_EQ(rb_reserve(rb, 2000, &w), RB_EFULL);                    /* full 2 */
    CHECK_EQ(rb_write(rb, buf, 0), RB_ESIZE);                        /* not counted */
    CHECK_EQ(rb_write(rb, buf, 3000), RB_ESIZE);                     /* not counted */
    s = stats_of(rb);
    CHECK_STAT(s, written, 7);
    CHECK_STAT(s, written_bytes, 100 + 1 + 60 + 7 + 2040);
    CHECK_STAT(s, aborted, 1);
    CHECK_STAT(s, full, 2);
    CHECK_STAT(s, empty, 2);
    CHECK_STAT(s, read, 0);

    GET_CHECK(rb, 1, 100);
    size_t got[8], count = 0;
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, got, 4, &count), RB_OK);
    CHECK_EQ_U(count, 4); /* 1 + 10 + 20 + 30 bytes */
    REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
    CHECK_EQ(rb_peek_cancel(rb), RB_OK); /* not consumed: not counted */
    REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
    CHECK_EQ_U(len, 7);
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_OK); /* the aborted record skipped, then 2040 */
    CHECK_EQ_U(len, 2040);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY); /* empty 3 */
    s = stats_of(rb);
    CHECK_STAT(s, read, 7);
    CHECK_STAT(s, read_bytes, 100 + 1 + 60 + 7 + 2040);
    CHECK_STAT(s, empty, 3);
    CHECK(s.parks >= 2 && s.parks <= 6); /* the two waits above that timed out slept */
    CHECK(s.parked_ns > 0);
    CHECK_STAT(s, recovered, 0);
    CHECK_STAT(s, turns_taken, 0);
}

struct writer_arg {
    rb_ring *rb;
    int id, n;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    unsigned char buf[64];
    for (int i = 0; i < a->n; i++) {
        size_t len = 1 + (size_t)(i + a->id) % 64;
        memset(buf, a->id, len);
        if (rb_write_wait(a->rb, buf, len, 10 * SEC) != RB_OK)
            return (void *)1;
    }
    return NULL;
}

static uint64_t expected_bytes(int id, int n)
{
    uint64_t b = 0;
    for (int i = 0; i < n; i++)
        b += 1 + (uint64_t)(i + id) % 64;
    return b;
}

/* Four writer threads on one handle (one counts with plain stores, the
 * others atomically) and a reader: every message counted once. */
TEST(counts_exact_across_threads)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 1 << 16));
    enum { THREADS = 4 };
    const int n = (int)(20000 * env_double("RB_STRESS_SCALE", 1.0)) + 100;
    pthread_t th[THREADS];
    struct writer_arg args[THREADS];
    uint64_t bytes = 0;
    for (int t = 0; t < THREADS; t++) {
        args[t] = (struct writer_arg){f.rb, t, n};
        bytes += expected_bytes(t, n);
        REQUIRE_EQ(pthread_create(&th[t], NULL, writer, &args[t]), 0);
    }
    unsigned char buf[64];
    size_t len;
    uint64_t read = 0, read_bytes = 0;
    struct rb_stats last = stats_of(f.rb);
    while (read < (uint64_t)n * THREADS) {
        int rc = rb_read_wait(f.rb, buf, sizeof buf, &len, 10 * SEC);
        REQUIRE_EQ(rc, RB_OK);
        read++;
        read_bytes += len;
        if (read % 1024 == 0) { /* monotonic while others count */
            struct rb_stats s = stats_of(f.rb);
            CHECK(s.written >= last.written && s.read >= last.read && s.written_bytes >= last.written_bytes);
            CHECK(s.read >= read - 1024);
            last = s;
        }
    }
    for (int t = 0; t < THREADS; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        CHECK(ret == NULL);
    }
    struct rb_stats s = stats_of(f.rb);
    CHECK_STAT(s, written, (uint64_t)n * THREADS);
    CHECK_STAT(s, written_bytes, bytes);
    CHECK_STAT(s, read, read);
    CHECK_STAT(s, read_bytes, bytes);
    CHECK_EQ_U(read_bytes, bytes);
}

/* Counts stay in the file when a handle closes, and a handle that takes
 * the slot again adds to them. */
TEST(counts_survive_close_and_slot_reuse)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    for (int round = 1; round <= 3; round++) {
        rb_ring *h = NULL;
        REQUIRE_EQ(rb_open(f.path, &h), RB_OK);
        for (int i = 0; i < 10; i++)
            CHECK_EQ(put(h, (uint64_t)i, 16), RB_OK);
        for (int i = 0; i < 10; i++)
            GET_CHECK(f.rb, (uint64_t)i, 16);
        rb_close(h);
        struct rb_stats s = stats_of(f.rb);
        CHECK_STAT(s, written, 10 * round);
        CHECK_STAT(s, written_bytes, 160 * round);
        CHECK_STAT(s, read, 10 * round);
    }
    /* The same slot each time (slot 1: the fixture's handle holds 0). */
    CHECK_EQ_U(tu_read_u32(f.path, OFF_SLOTS_USED), 2);
    CHECK_EQ_U(tu_read_u64(f.path, slot_off(1, SLOT_OFF_COUNT_OWN)), 30);
}

/* A process killed after writing: its counts stay. One killed holding a
 * reservation, and one killed holding the read turn: recovery counts. */
TEST(counts_survive_a_killed_process_and_count_recoveries)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    CHECK_EQ(rb_set_stall_timeout(f.rb, 10 * MS), RB_OK);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rb_ring *h;
        if (rb_open(f.path, &h) != RB_OK)
            _exit(2);
        for (int i = 0; i < 5; i++)
            if (put(h, (uint64_t)i, 32) != RB_OK)
                _exit(3);
        void *w;
        if (rb_reserve(h, 40, &w) != RB_OK) /* left reserved: the reader recovers it */
            _exit(4);
        raise(SIGKILL);
    }
    int st;
    REQUIRE_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    struct rb_stats s = stats_of(f.rb);
    CHECK_STAT(s, written, 5);
    CHECK_STAT(s, written_bytes, 160);
    for (int i = 0; i < 5; i++)
        GET_CHECK(f.rb, (uint64_t)i, 32);
    unsigned char buf[64];
    size_t len;
    CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &len, 50 * MS), RB_ETIMEDOUT); /* recovers, then empty */
    s = stats_of(f.rb);
    CHECK_STAT(s, recovered, 1);
    CHECK_STAT(s, turns_taken, 0);

    /* A consumer killed while it peeks: the next read takes its turn over. */
    CHECK_EQ(put(f.rb, 9, 8), RB_OK);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rb_ring *h;
        const void *p;
        if (rb_open(f.path, &h) != RB_OK || rb_peek(h, &p, &len) != RB_OK)
            _exit(2);
        raise(SIGKILL);
    }
    REQUIRE_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFSIGNALED(st));
    CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &len, 5 * SEC), RB_OK);
    s = stats_of(f.rb);
    CHECK_STAT(s, turns_taken, 1);
    CHECK_STAT(s, read, 6);
}

static void *late_writer(void *p)
{
    sleep_ns(30 * MS);
    put(p, 1, 8);
    return NULL;
}

/* A reader that sleeps until a writer comes: a park, its time, and the
 * writer's wake-up. */
TEST(counts_parks_and_wakes)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(w);
    REQUIRE_EQ(rb_open(f.path, &w), RB_OK);
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, late_writer, w), 0);
    unsigned char buf[16];
    size_t len;
    int64_t t0 = now_ns();
    CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &len, 5 * SEC), RB_OK);
    int64_t waited = now_ns() - t0;
    pthread_join(th, NULL);
    struct rb_stats s = stats_of(f.rb);
    CHECK(s.parks >= 1);
    CHECK(s.parked_ns >= 10 * MS && s.parked_ns <= (uint64_t)waited);
    CHECK(s.wakes >= 1);
    CHECK_STAT(s, read, 1);
    CHECK_STAT(s, empty, 0); /* it waited and got one: not an empty read */
}

/* rb_stats_sized writes exactly the caller's size: an older caller gets
 * its prefix, a newer one zeros past ours. */
TEST(stats_sized_writes_exactly_the_callers_size)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    CHECK_EQ(put(f.rb, 1, 10), RB_OK);
    unsigned char big[sizeof(struct rb_stats) + 16];
    memset(big, 0xCD, sizeof big);
    CHECK_EQ(rb_stats_sized(f.rb, (struct rb_stats *)(void *)big, sizeof big), RB_OK);
    for (size_t i = sizeof(struct rb_stats); i < sizeof big; i++)
        CHECK_EQ_U(big[i], 0);
    uint64_t small[3];
    memset(small, 0xCD, sizeof small);
    unsigned char guard[8];
    memset(guard, 0xEE, sizeof guard);
    CHECK_EQ(rb_stats_sized(f.rb, (struct rb_stats *)(void *)small, 2 * sizeof(uint64_t)), RB_OK);
    CHECK_EQ_U(small[0], 1);
    CHECK_EQ_U(small[1], 10);
    CHECK_EQ_U(small[2], 0xCDCDCDCDCDCDCDCDull); /* past the caller's size: untouched */
    struct rb_stats s;
    CHECK_EQ(rb_stats_sized(NULL, &s, sizeof s), RB_EINVAL);
    CHECK_EQ(rb_stats_sized(f.rb, NULL, sizeof s), RB_EINVAL);
    CHECK_EQ(rb_stats_sized(f.rb, &s, 0), RB_EINVAL);
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    CHECK_EQ(rb_stats(f.rb, &s), RB_ECLOSED);
}

/* Forged counters (anyone who can write the file can): sums saturate,
 * nothing crashes. */
TEST(forged_counters_saturate)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    CHECK_EQ(put(f.rb, 1, 10), RB_OK);
    CHECK_EQ(tu_patch_u64(f.path, slot_off(7, SLOT_OFF_COUNT_SHARED), UINT64_MAX - 5), 0);
    CHECK_EQ(tu_patch_u64(f.path, slot_off(9, SLOT_OFF_COUNT_OWN), 1000), 0);
    struct rb_stats s = stats_of(f.rb);
    CHECK_STAT(s, written, 1); /* slots 7 and 9 were never taken: not summed */
    CHECK_EQ(tu_patch_u32(f.path, OFF_SLOTS_USED, 10), 0);
    s = stats_of(f.rb);
    CHECK_STAT(s, written, UINT64_MAX);
    CHECK_EQ(tu_patch_u32(f.path, OFF_SLOTS_USED, UINT32_MAX), 0); /* clamped to the table */
    s = stats_of(f.rb);
    CHECK_STAT(s, written, UINT64_MAX);
}
