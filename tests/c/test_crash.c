/*
 * test_crash.c - crash safety (docs/design.md, "Crash recovery"):
 *  - deterministic kills at each named step of the write and read protocols
 *    (the library is compiled into this test with -DRB_KILLPOINTS, so a
 *    child can arm rb_test_killpoint() and die exactly there);
 *  - a stopped (SIGSTOP) writer or reader is waited for, never robbed;
 *  - committed messages survive every process and are read after reopening;
 *  - a random kill harness: producers (each a process of 3 writer threads
 *    on one handle, writing with every kind of call) and consumers at full
 *    speed, SIGKILLed at random moments for RB_KILL_CYCLES cycles (default
 *    200).
 */
#include "runner.h"
#include "testutil.h"
#include "../../csrc/internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Stall timeout for these tests, and the longest a survivor may take to get
 * past a dead process's leftovers: the timeout plus generous slack for a
 * shared 2-core machine. */
#define STALL_NS (20 * MS)
#define RECOVERY_BOUND_NS (STALL_NS + 480 * MS)

/* The shared fixture (testutil.h), with the stall timeout of these tests. */
static int fx_open_stall(struct fx *f, size_t cap)
{
    if (!fx_open(f, cap))
        return 0;
    rb_set_stall_timeout(f->rb, STALL_NS);
    return 1;
}

/* Reads the next message (waiting up to the recovery bound) and checks it
 * is message seq of len bytes. Returns the time the read took. */
static int64_t expect_msg(rb_ring *rb, uint64_t seq, size_t len, const char *what)
{
    unsigned char buf[4096], want[4096];
    size_t got = 0;
    int64_t t0 = now_ns();
    int rc = rb_read_wait(rb, buf, sizeof buf, &got, RECOVERY_BOUND_NS);
    int64_t took = now_ns() - t0;
    if (rc != RB_OK) {
        FAILF("%s: reading seq %llu -> %d (%s) after %lld ms", what, (unsigned long long)seq, rc, rb_strerror(rc),
              (long long)(took / MS));
        return took;
    }
    make_msg(want, len, seq);
    if (got != len || memcmp(buf, want, len) != 0)
        FAILF("%s: expected seq %llu (%zu bytes), got %zu other bytes", what, (unsigned long long)seq, len, got);
    return took;
}

/* Nothing more to read: what is left in the ring (a dead writer's record)
 * is skipped within the recovery bound, and head reaches tail. */
static void expect_empty(rb_ring *rb, const char *what)
{
    unsigned char buf[4096];
    size_t got;
    uint64_t h, t;
    int64_t until = now_ns() + RECOVERY_BOUND_NS;
    do {
        int rc = rb_read(rb, buf, sizeof buf, &got);
        if (rc != RB_EEMPTY) {
            FAILF("%s: ring should be empty, rb_read -> %d (%s), %zu bytes", what, rc, rb_strerror(rc), got);
            return;
        }
        rb_positions(rb, &h, &t);
    } while (h != t && (usleep(1000), now_ns() < until));
    if (h != t)
        FAILF("%s: head %llu != tail %llu at the end", what, (unsigned long long)h, (unsigned long long)t);
}

/* Runs fn(rb, arg) in a child on its own handle of path; returns the pid. */
typedef void (*child_fn)(rb_ring *rb, const void *arg);
static pid_t spawn(const char *path, child_fn fn, const void *arg)
{
    pid_t pid = fork();
    if (pid == 0) {
        rb_ring *rb;
        if (rb_open(path, &rb) != RB_OK)
            _exit(3);
        fn(rb, arg);
        rb_close(rb);
        _exit(0);
    }
    return pid;
}

/* Waits for pid; 1 if it died of sig. */
static int died_of(pid_t pid, int sig)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFSIGNALED(st) && WTERMSIG(st) == sig;
}

static int wait_stopped(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, WUNTRACED) < 0 && errno == EINTR)
        ;
    return WIFSTOPPED(st);
}

static uint64_t word_at(rb_ring *rb, uint64_t pos)
{
    return atomic_load(rb_rec_word(rb, pos));
}

/* ---- producers killed at each step ------------------------------------- */

struct wcase {
    const char *point; /* kill point */
    unsigned nth;      /* at its nth pass */
    int batch;         /* 0: rb_write of seq 100; 1: rb_write_many of 100..102;
                        * 2: rb_writev of seq 100 (vectors: vec_lens) */
    int delivered;     /* how many of the killed write's messages are delivered */
};

static const size_t batch_lens[3] = {100, 150, 200};
/* Half-way (where write.copying kills) falls inside the third vector. */
static const size_t vec_lens[5] = {30, 0, 120, 0, 50};

static void child_write(rb_ring *rb, const void *arg)
{
    const struct wcase *c = arg;
    unsigned char buf[1024];
    rb_test_killpoint(c->point, c->nth, SIGKILL);
    if (c->batch == 0) {
        make_msg(buf, 200, 100);
        rb_write(rb, buf, 200);
    } else if (c->batch == 2) {
        make_msg(buf, 200, 100);
        struct iovec iov[5];
        size_t off = 0;
        for (int i = 0; i < 5; i++) {
            iov[i] = (struct iovec){buf + off, vec_lens[i]};
            off += vec_lens[i];
        }
        rb_writev(rb, iov, 5);
    } else {
        size_t off = 0;
        for (int i = 0; i < 3; i++) {
            make_msg(buf + off, batch_lens[i], 100 + (uint64_t)i);
            off += batch_lens[i];
        }
        size_t written;
        rb_write_many(rb, buf, batch_lens, 3, &written);
    }
    _exit(0); /* the kill point was not reached: the test fails */
}

TEST(producer_killed_at_each_step)
{
    static const struct wcase cases[] = {
        {"reserve.intent", 1, 0, 0},  {"write.reserved", 1, 0, 0}, {"write.marking", 1, 0, 0},
        {"write.copying", 1, 0, 0},   {"write.committed", 1, 0, 1}, {"reserve.intent", 1, 1, 0},
        {"write.reserved", 1, 1, 0},  {"write.marking", 1, 1, 0},  {"write.marking", 2, 1, 0},
        {"write.copying", 1, 1, 0},   {"write.copying", 3, 1, 2},  {"write.committed", 1, 1, 1},
        {"write.committed", 2, 1, 2}, {"reserve.intent", 1, 2, 0},  {"write.reserved", 1, 2, 0},
        {"write.marking", 1, 2, 0},   {"write.copying", 1, 2, 0},  {"write.committed", 1, 2, 1},
    };
    int64_t worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct wcase *c = &cases[i];
        char what[96];
        static const char *const kinds[] = {"write", "write_many", "writev"};
        snprintf(what, sizeof what, "%s #%u %s", c->point, c->nth, kinds[c->batch]);
        AUTO_FX(f);
        REQUIRE(fx_open_stall(&f, 4096));
        CHECK_EQ(put(f.rb, 1, 20), RB_OK);
        CHECK_EQ(put(f.rb, 2, 30), RB_OK);
        if (!died_of(spawn(f.path, child_write, c), SIGKILL)) {
            FAILF("%s: the child was not killed at its kill point", what);
            continue;
        }
        /* Writers carry on (the dead writer's space is not reused until
         * consumers pass it), and readers get everything committed, in
         * order, and nothing of the dead write that was not committed. */
        CHECK_EQ(put(f.rb, 3, 40), RB_OK);
        CHECK_EQ(put(f.rb, 4, 50), RB_OK);
        expect_msg(f.rb, 1, 20, what);
        expect_msg(f.rb, 2, 30, what);
        for (int k = 0; k < c->delivered; k++) {
            int64_t took = expect_msg(f.rb, 100 + (uint64_t)k, c->batch == 1 ? batch_lens[k] : 200, what);
            worst = took > worst ? took : worst;
        }
        int64_t took = expect_msg(f.rb, 3, 40, what);
        worst = took > worst ? took : worst;
        expect_msg(f.rb, 4, 50, what);
        expect_empty(f.rb, what);
        /* The ring keeps working across its whole capacity afterwards. */
        for (uint64_t s = 10; s < 200; s++) {
            CHECK_EQ(put(f.rb, s, 1 + s % 300), RB_OK);
            expect_msg(f.rb, s, 1 + s % 300, what);
        }
    }
    printf("    longest read past a killed writer: %.1f ms (stall timeout %.0f ms)\n", (double)worst / MS,
           (double)STALL_NS / MS);
}

static void child_reserve_half(rb_ring *rb, const void *arg)
{
    (void)arg;
    void *p;
    if (rb_reserve(rb, 300, &p) != RB_OK)
        _exit(4);
    memset(p, 0xAB, 150);
    raise(SIGKILL);
}

static void child_reserve_close(rb_ring *rb, const void *arg)
{
    (void)arg;
    void *p;
    if (rb_reserve(rb, 300, &p) != RB_OK)
        _exit(4);
    memset(p, 0xAB, 300);
    rb_close(rb); /* without committing: its slot is free, the record dead */
    _exit(0);
}

TEST(zero_copy_writer_gone)
{
    child_fn fns[2] = {child_reserve_half, child_reserve_close};
    for (int i = 0; i < 2; i++) {
        AUTO_FX(f);
        REQUIRE(fx_open_stall(&f, 4096));
        CHECK_EQ(put(f.rb, 1, 20), RB_OK);
        pid_t pid = spawn(f.path, fns[i], NULL);
        if (i == 0)
            CHECK(died_of(pid, SIGKILL));
        else
            CHECK(!died_of(pid, SIGKILL));
        CHECK_EQ(put(f.rb, 2, 20), RB_OK);
        expect_msg(f.rb, 1, 20, "zero-copy");
        expect_msg(f.rb, 2, 20, "zero-copy");
        expect_empty(f.rb, "zero-copy");
    }
}

/* A writer that lost the race for tail and died before updating its intent
 * entry leaves a stale entry covering someone else's record: forged here
 * (a dead slot's entry over a live writer's gap, and over a dead one's). */
TEST(stale_intent_of_a_dead_loser)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    CHECK_EQ(put(f.rb, 1, 20), RB_OK); /* [0, 32) */
    /* A dead slot (never attached, no lock) claims [32, 32 + 64). */
    struct rb_slot *dead = &f.rb->slots[7];
    atomic_store(&dead->intent[0].start, 32);
    atomic_store(&dead->intent[0].end, 32 + 64);
    atomic_store(&f.rb->hdr->slots_used, 8);
    /* Our own live reservation really owns [32, 32 + 216): 200 bytes. */
    void *p;
    REQUIRE_EQ(rb_reserve(f.rb, 200, &p), RB_OK);
    /* Make its header look unwritten and re-announce it, as between the
     * CAS and the header store. */
    uint64_t w = word_at(f.rb, 32);
    atomic_store(rb_rec_word(f.rb, 32), 0);
    atomic_store(&f.rb->me->intent[0].start, 32);
    atomic_store(&f.rb->me->intent[0].end, 32 + 216);
    rb_set_stall_timeout(f.rb, 0);
    expect_msg(f.rb, 1, 20, "stale intent");
    unsigned char buf[512];
    size_t got;
    for (int i = 0; i < 5; i++)
        CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &got), RB_EEMPTY); /* live: waited for */
    CHECK_EQ_U(word_at(f.rb, 32), 0);
    /* The writer finishes. */
    atomic_store(rb_rec_word(f.rb, 32), w);
    atomic_store(&f.rb->me->intent[0].end, 0);
    make_msg(p, 200, 9);
    CHECK_EQ(rb_commit(f.rb, p), RB_OK);
    expect_msg(f.rb, 9, 200, "stale intent");
    /* Now a dead gap [248, 248 + 48) with two dead entries: the real one and
     * a stale shorter one; recovery steps to the nearer end, then on. */
    CHECK_EQ(put(f.rb, 2, 20), RB_OK);
    expect_msg(f.rb, 2, 20, "stale intent");
    uint64_t h = 248 + 32;
    atomic_store(&f.rb->hdr->tail, h + 48);
    atomic_store(&dead->intent[0].start, h);
    atomic_store(&dead->intent[0].end, h + 48);
    atomic_store(&dead->intent[1].start, h - 8);
    atomic_store(&dead->intent[1].end, h + 16);
    CHECK_EQ(put(f.rb, 3, 20), RB_OK);
    expect_msg(f.rb, 3, 20, "stale intent");
    expect_empty(f.rb, "stale intent");
}

TEST(gap_without_intent_is_corrupt)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    atomic_store(&f.rb->hdr->tail, 64); /* forged: 64 bytes in use, all zero */
    rb_set_stall_timeout(f.rb, 0);
    unsigned char buf[64];
    size_t got;
    CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &got), RB_ECORRUPT);
    CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &got, 50 * MS), RB_ECORRUPT);
    rb_set_stall_timeout(f.rb, -1); /* never recover: just "empty" */
    CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &got), RB_EEMPTY);
}

/* ---- consumers killed at each step ------------------------------------- */

struct rcase {
    const char *point;
    int mode;     /* 0 rb_read, 1 rb_read_many (3), 2 rb_peek then die,
                   * 3 rb_peek_many (4) then die, 4 rb_peek_many (4) then
                   * rb_release (killed at its kill point) */
    int consumed; /* messages gone with the dead consumer */
};

static void child_read(rb_ring *rb, const void *arg)
{
    const struct rcase *c = arg;
    unsigned char buf[4096];
    size_t got, lens[3], n;
    if (c->point != NULL)
        rb_test_killpoint(c->point, 1, SIGKILL);
    if (c->mode == 0)
        rb_read(rb, buf, sizeof buf, &got);
    else if (c->mode == 1)
        rb_read_many(rb, buf, sizeof buf, lens, 3, &n);
    else if (c->mode == 2) {
        const void *p;
        if (rb_peek(rb, &p, &got) == RB_OK)
            raise(SIGKILL);
    } else {
        const void *ptrs[4];
        size_t plens[4];
        if (rb_peek_many(rb, ptrs, plens, NULL, 4, &n) == RB_OK && n == 4) {
            if (c->mode == 3)
                raise(SIGKILL);
            rb_release(rb);
        }
    }
    _exit(0);
}

TEST(consumer_killed_at_each_step)
{
    static const struct rcase cases[] = {
        {"read.turn", 0, 0}, {"read.copied", 0, 0}, {"read.consumed", 0, 1}, {"read.turn", 1, 0},
        {"read.copied", 1, 0}, {"read.consumed", 1, 3}, {NULL, 2, 0}, {NULL, 3, 0},
        {"read.turn", 4, 0}, {"read.consumed", 4, 4},
    };
    int64_t worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct rcase *c = &cases[i];
        char what[96];
        static const char *const modes[] = {"read", "read_many", "peek", "peek_many", "peek_many release"};
        snprintf(what, sizeof what, "%s %s", c->point ? c->point : "peek held", modes[c->mode]);
        AUTO_FX(f);
        REQUIRE(fx_open_stall(&f, 4096));
        for (uint64_t s = 1; s <= 6; s++)
            CHECK_EQ(put(f.rb, s, 10 * s), RB_OK);
        if (!died_of(spawn(f.path, child_read, c), SIGKILL)) {
            FAILF("%s: the child was not killed at its kill point", what);
            continue;
        }
        /* At-least-once: what the dead consumer had not finished taking is
         * delivered again; what it had (all of it copied out) is gone. */
        for (uint64_t s = 1 + (uint64_t)c->consumed; s <= 6; s++) {
            int64_t took = expect_msg(f.rb, s, 10 * s, what);
            worst = took > worst ? took : worst;
        }
        expect_empty(f.rb, what);
        CHECK_EQ_U(atomic_load(&f.rb->grp->turn), 0);
        /* Writers and readers go on across the whole ring. */
        for (uint64_t s = 10; s < 200; s++) {
            CHECK_EQ(put(f.rb, s, 1 + s % 300), RB_OK);
            expect_msg(f.rb, s, 1 + s % 300, what);
        }
    }
    printf("    longest read past a killed reader: %.1f ms\n", (double)worst / MS);
}

/* ---- writers killed while reclaiming ----------------------------------- */

/* Fills the ring with messages 1..n of 200 bytes and reads them all: the
 * group has read everything, nothing is freed yet (head 0), so the next
 * write must reclaim. Returns n. */
static uint64_t fill_and_read(rb_ring *rb, const char *what)
{
    uint64_t n = 0;
    while (put(rb, n + 1, 200) == RB_OK)
        n++;
    for (uint64_t s = 1; s <= n; s++)
        expect_msg(rb, s, 200, what);
    uint64_t h = 1;
    rb_positions(rb, &h, NULL);
    struct rb_info in;
    rb_info(rb, &in);
    if (in.reclaimed != 0 || n < 10)
        FAILF("%s: %llu messages, reclaimed %llu before the test", what, (unsigned long long)n,
              (unsigned long long)in.reclaimed);
    return n;
}

/* Every byte of the free region [tail, head + capacity) is zero: a zeroing
 * cut short by a kill was finished (invariant 2, docs/design.md). */
static void expect_free_zero(rb_ring *rb, const char *what)
{
    struct rb_info in;
    rb_info(rb, &in);
    for (uint64_t p = in.tail; p < in.reclaimed + rb->capacity; p++)
        if (rb->data[p & rb->mask] != 0) {
            FAILF("%s: free byte at %llu is not zero", what, (unsigned long long)p);
            return;
        }
}

static void child_reclaim(rb_ring *rb, const void *arg)
{
    rb_set_stall_timeout(rb, STALL_NS);
    rb_test_killpoint((const char *)arg, 1, SIGKILL);
    put(rb, 1000, 300); /* must reclaim: killed at the point */
    _exit(0);
}

TEST(writer_killed_while_reclaiming)
{
    static const char *const points[] = {"reclaim.zeroing", "reclaim.zeroed", "reclaim.released"};
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        AUTO_FX(f);
        REQUIRE(fx_open_stall(&f, 4096));
        fill_and_read(f.rb, points[i]);
        if (!died_of(spawn(f.path, child_reclaim, points[i]), SIGKILL)) {
            FAILF("%s: the child was not killed at its kill point", points[i]);
            continue;
        }
        /* The next writer takes the reclaim lock over (after the stall
         * timeout), finishes the zeroing and writes; readers go on across
         * the whole ring, several times round. */
        int64_t t0 = now_ns();
        CHECK_EQ(put_wait(f.rb, 2000, 300, RECOVERY_BOUND_NS), RB_OK);
        CHECK(now_ns() - t0 < RECOVERY_BOUND_NS);
        expect_msg(f.rb, 2000, 300, points[i]);
        expect_free_zero(f.rb, points[i]);
        for (uint64_t s = 10; s < 200; s++) {
            CHECK_EQ(put_wait(f.rb, s, 1 + s % 300, RECOVERY_BOUND_NS), RB_OK);
            expect_msg(f.rb, s, 1 + s % 300, points[i]);
        }
        expect_free_zero(f.rb, points[i]);
        CHECK_EQ_U(atomic_load(&f.rb->hdr->reclaim_turn), 0);
    }
}

/* A writer taking over a dead reclaimer's lock dies (or stops) in turn,
 * right after its takeover: the dead one's unfinished zeroing must still be
 * finished by the next writer, and a new handle taking the first dead
 * writer's slot meanwhile must not matter. */
static void child_take_over(rb_ring *rb, const void *arg)
{
    rb_set_stall_timeout(rb, STALL_NS);
    rb_test_killpoint("turn.taken", 1, (int)(intptr_t)arg);
    /* Only a stopped-and-continued child gets past its takeover. */
    _exit(put_wait(rb, 3000, 300, RECOVERY_BOUND_NS) == RB_OK ? 0 : 1); /* must reclaim */
}

TEST(writer_taking_over_a_dead_reclaimer_dies_too)
{
    for (int stop = 0; stop < 2; stop++) {
        const char *what = stop ? "take-over stopped" : "take-over killed";
        AUTO_FX(f);
        REQUIRE(fx_open_stall(&f, 4096));
        fill_and_read(f.rb, what);
        REQUIRE(died_of(spawn(f.path, child_reclaim, "reclaim.zeroed"), SIGKILL));
        pid_t pid = spawn(f.path, child_take_over, (const void *)(intptr_t)(stop ? SIGSTOP : SIGKILL));
        if (!stop)
            CHECK(died_of(pid, SIGKILL));
        else {
            REQUIRE(wait_stopped(pid));
            rb_ring *again; /* takes a dead slot: the first writer's */
            REQUIRE_EQ(rb_open(f.path, &again), RB_OK);
            rb_close(again);
            kill(pid, SIGCONT);
            int st;
            waitpid(pid, &st, 0);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            expect_msg(f.rb, 3000, 300, what);
        }
        CHECK_EQ(put_wait(f.rb, 4000, 40, RECOVERY_BOUND_NS), RB_OK);
        expect_msg(f.rb, 4000, 40, what);
        expect_empty(f.rb, what);
        expect_free_zero(f.rb, what);
    }
}

/* Reads everything a handle's group has and checks it is, in order, the
 * last messages written (seq first_seq.. of lens[]): whole messages only. */
static void expect_suffix(rb_ring *rb, const uint64_t *seqs, const size_t *lens, size_t n, const char *what)
{
    unsigned char buf[4096], want[4096];
    size_t got, k = n;
    int rc;
    uint64_t lost;
    while ((rc = rb_read_wait(rb, buf, sizeof buf, &got, 50 * MS)) == RB_OK || rc == RB_ELOST) {
        if (rc == RB_ELOST) {
            rb_take_lost(rb, &lost);
            continue;
        }
        if (k == n) { /* the first: find it */
            for (k = 0; k < n; k++) {
                make_msg(want, lens[k], seqs[k]);
                if (got == lens[k] && memcmp(buf, want, got) == 0)
                    break;
            }
            if (k == n) {
                FAILF("%s: a message of %zu bytes that was never written (torn?)", what, got);
                return;
            }
        } else {
            make_msg(want, lens[k], seqs[k]);
            if (got != lens[k] || memcmp(buf, want, got) != 0) {
                FAILF("%s: expected seq %llu next, got %zu other bytes", what, (unsigned long long)seqs[k], got);
                return;
            }
        }
        k++;
    }
    if (rc != RB_ETIMEDOUT)
        FAILF("%s: read -> %d (%s)", what, rc, rb_strerror(rc));
    else if (k != n)
        FAILF("%s: the reads stopped %zu messages before the last written", what, n - k);
}

/* A ring with no group: its records are nobody's, so a reclaim walks them
 * from head. A writer killed in the middle of zeroing (or after, before
 * storing head) left zero words there: the next holder of the lock must
 * finish that zeroing first, or its walk stops at the zeros and the ring
 * stays full for good; and a group made at "earliest" must start past
 * them. (A review found both.) */
TEST(writer_killed_while_reclaiming_a_ring_without_groups)
{
    static const char *const points[] = {"reclaim.zeroing", "reclaim.zeroed", "reclaim.released"};
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        for (int earliest_first = 0; earliest_first < 2; earliest_first++) {
            char what[96];
            snprintf(what, sizeof what, "%s, %s", points[i], earliest_first ? "group made first" : "write first");
            AUTO_DIR(dir);
            REQUIRE(dir != NULL);
            const char *path = tu_path(dir, "ring");
            AUTO_RING(rb);
            REQUIRE_EQ(rb_create(path, 4096, RB_NO_DEFAULT_GROUP, &rb), RB_OK);
            rb_set_stall_timeout(rb, STALL_NS);
            uint64_t seqs[64];
            size_t lens[64], n = 0;
            for (; n < 19; n++) { /* 19 records of 208 bytes: 144 left, the next write reclaims */
                seqs[n] = n + 1;
                lens[n] = 200;
                REQUIRE_EQ(put(rb, seqs[n], lens[n]), RB_OK);
            }
            if (!died_of(spawn(path, child_reclaim, points[i]), SIGKILL)) {
                FAILF("%s: the child was not killed at its kill point", what);
                continue;
            }
            AUTO_RING(g);
            if (earliest_first) /* takes the dead writer's lock over to make the group */
                REQUIRE_EQ(rb_open_group(path, "late", RB_START_EARLIEST, &g), RB_OK);
            int64_t t0 = now_ns();
            for (uint64_t s = 2000; s < 2010; s++, n++) {
                seqs[n] = s;
                lens[n] = 300;
                CHECK_EQ(put_wait(rb, s, 300, RECOVERY_BOUND_NS), RB_OK);
            }
            CHECK(now_ns() - t0 < 2 * RECOVERY_BOUND_NS);
            if (!earliest_first)
                REQUIRE_EQ(rb_open_group(path, "late", RB_START_EARLIEST, &g), RB_OK);
            rb_set_stall_timeout(g, STALL_NS);
            expect_suffix(g, seqs, lens, n, what);
            expect_free_zero(rb, what);
        }
    }
}

/* An overwrite ring: a writer killed after moving a group's head (tagged)
 * and before counting the loss. Readers must not wait for good: the next
 * writer (or a reader, after the stall timeout) takes the lock over and
 * clears the tag; the loss count is short by that overrun (documented). */
TEST(overwriter_killed_while_overrunning)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 4096, RB_OVERWRITE, &rb), RB_OK);
    rb_set_stall_timeout(rb, STALL_NS);
    uint64_t seqs[64];
    size_t lens[64], n = 0;
    for (; n < 19; n++) {
        seqs[n] = n + 1;
        lens[n] = 200;
        REQUIRE_EQ(put(rb, seqs[n], lens[n]), RB_OK);
    }
    REQUIRE(died_of(spawn(path, child_reclaim, "reclaim.overrun"), SIGKILL));
    /* The reader alone: it finds its head tagged and, after the stall
     * timeout, takes the dead writer's lock over. */
    unsigned char buf[4096];
    size_t got;
    int64_t t0 = now_ns();
    int rc;
    while ((rc = rb_read_wait(rb, buf, sizeof buf, &got, RECOVERY_BOUND_NS)) == RB_ELOST) {
        uint64_t lost;
        rb_take_lost(rb, &lost);
    }
    CHECK_EQ(rc, RB_OK);
    CHECK(now_ns() - t0 < RECOVERY_BOUND_NS);
    CHECK_EQ_U(atomic_load(&rb->grp->head) & RB_HEAD_OVERRUN, 0);
    while (rb_read(rb, buf, sizeof buf, &got) == RB_OK) /* the rest of the old messages */
        ;
    /* Then writers and readers go on. */
    for (uint64_t s = 3000; s < 3100; s++) {
        CHECK_EQ(put_wait(rb, s, 100, RECOVERY_BOUND_NS), RB_OK);
        expect_msg(rb, s, 100, "after the overrun");
    }
}

/* A writer stopped (not dead) while holding the reclaim lock: shutting
 * down a handle with an ephemeral group does not wait for it (the group
 * stays until the lock is free, then dies with its handle). */
static void child_reclaim_stopped(rb_ring *rb, const void *arg)
{
    (void)arg;
    rb_test_killpoint("reclaim.zeroing", 1, SIGSTOP);
    _exit(put(rb, 1000, 300) == RB_OK ? 0 : 1);
}

TEST(shutdown_does_not_wait_for_a_stopped_reclaimer)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    fill_and_read(f.rb, "stopped reclaimer");
    rb_ring *sub;
    REQUIRE_EQ(rb_open_group(f.path, NULL, RB_GROUP_EPHEMERAL, &sub), RB_OK);
    pid_t pid = spawn(f.path, child_reclaim_stopped, NULL);
    REQUIRE(wait_stopped(pid));
    int64_t t0 = now_ns();
    CHECK_EQ(rb_shutdown(sub), RB_OK);
    int64_t took = now_ns() - t0;
    CHECK(took < 600 * MS);
    kill(pid, SIGCONT);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rb_close(sub); /* the lock is free now: the group goes */
    struct rb_group_info gi[4];
    size_t count = 0;
    CHECK_EQ(rb_groups(f.rb, gi, 4, &count), RB_OK);
    CHECK_EQ_U(count, 1); /* the default group */
    printf("    rb_shutdown behind a stopped reclaimer: %.1f ms\n", (double)took / MS);
}

/* ---- slow is not dead ---------------------------------------------------- */

static void child_write_stopped(rb_ring *rb, const void *arg)
{
    rb_test_killpoint((const char *)arg, 1, SIGSTOP);
    CHECK_EQ(put(rb, 100, 300), RB_OK); /* resumes after SIGCONT */
    _exit(rt_failures ? 1 : 0);
}

TEST(stopped_writer_is_waited_for)
{
    const char *points[] = {"write.reserved", "write.copying"};
    for (int i = 0; i < 2; i++) {
        AUTO_FX(f);
        REQUIRE(fx_open_stall(&f, 4096));
        rb_set_stall_timeout(f.rb, 5 * MS);
        CHECK_EQ(put(f.rb, 1, 20), RB_OK);
        pid_t pid = spawn(f.path, child_write_stopped, points[i]);
        REQUIRE(wait_stopped(pid));
        expect_msg(f.rb, 1, 20, points[i]);
        /* Stopped for 60 stall timeouts: its record is not taken away. */
        unsigned char buf[512];
        size_t got;
        CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &got, 300 * MS), RB_ETIMEDOUT);
        uint64_t w = word_at(f.rb, 32);
        CHECK(w == 0 || rb_rec_flags(w) == RB_REC_BUSY);
        kill(pid, SIGCONT);
        int st;
        waitpid(pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        expect_msg(f.rb, 100, 300, points[i]);
        expect_empty(f.rb, points[i]);
    }
}

static void child_peek_stopped(rb_ring *rb, const void *arg)
{
    (void)arg;
    const void *p;
    size_t len;
    if (rb_peek(rb, &p, &len) != RB_OK)
        _exit(5);
    raise(SIGSTOP);
    rb_release(rb);
    _exit(0);
}

TEST(stopped_reader_keeps_its_turn)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    rb_set_stall_timeout(f.rb, 5 * MS);
    CHECK_EQ(put(f.rb, 1, 20), RB_OK);
    CHECK_EQ(put(f.rb, 2, 20), RB_OK);
    pid_t pid = spawn(f.path, child_peek_stopped, NULL);
    REQUIRE(wait_stopped(pid));
    unsigned char buf[64];
    size_t got;
    CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &got, 300 * MS), RB_ETIMEDOUT);
    kill(pid, SIGCONT);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    expect_msg(f.rb, 2, 20, "stopped reader"); /* message 1 went to the child */
    expect_empty(f.rb, "stopped reader");
}

/* ---- committed means delivered, across processes and reopening ---------- */

static void child_write_50_then_die(rb_ring *rb, const void *arg)
{
    (void)arg;
    for (uint64_t s = 1; s <= 50; s++)
        if (put(rb, s, 1 + s * 7 % 500) != RB_OK)
            _exit(6);
    rb_test_killpoint("write.copying", 1, SIGKILL);
    put(rb, 51, 400);
    _exit(0);
}

TEST(committed_survives_everyone)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 64 * 1024));
    rb_close(f.rb);
    f.rb = NULL;
    /* Every handle is gone: only the file remains. */
    CHECK(died_of(spawn(f.path, child_write_50_then_die, NULL), SIGKILL));
    REQUIRE_EQ(rb_open(f.path, &f.rb), RB_OK);
    rb_set_stall_timeout(f.rb, STALL_NS);
    for (uint64_t s = 1; s <= 50; s++)
        expect_msg(f.rb, s, 1 + s * 7 % 500, "reopened");
    expect_empty(f.rb, "reopened");
}

/* ---- waiter counts and slots -------------------------------------------- */

static void child_read_forever(rb_ring *rb, const void *arg)
{
    (void)arg;
    unsigned char buf[64];
    size_t got;
    rb_read_wait(rb, buf, sizeof buf, &got, -1);
    _exit(0);
}

TEST(dead_waiters_count_is_taken_back)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    pid_t pid = spawn(f.path, child_read_forever, NULL);
    int64_t until = now_ns() + 5000 * MS;
    while (atomic_load(&f.rb->hdr->data_waiters) == 0 && now_ns() < until)
        usleep(1000);
    REQUIRE_EQ(atomic_load(&f.rb->hdr->data_waiters), 1);
    kill(pid, SIGKILL);
    CHECK(died_of(pid, SIGKILL));
    CHECK_EQ(atomic_load(&f.rb->hdr->data_waiters), 1); /* left behind */
    rb_ring *again;
    REQUIRE_EQ(rb_open(f.path, &again), RB_OK); /* takes the dead slot */
    CHECK_EQ(atomic_load(&f.rb->hdr->data_waiters), 0);
    rb_close(again);
}

TEST(slots_are_per_handle_and_reused)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    rb_ring *a, *b;
    REQUIRE_EQ(rb_open(f.path, &a), RB_OK);
    REQUIRE_EQ(rb_open(f.path, &b), RB_OK);
    CHECK(f.rb->slot != a->slot && a->slot != b->slot && f.rb->slot != b->slot);
    struct rb_info in;
    CHECK_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ_U(in.attached, 3);
    uint32_t a_slot = a->slot, a_id = a->id;
    rb_close(a);
    CHECK_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ_U(in.attached, 2);
    REQUIRE_EQ(rb_open(f.path, &a), RB_OK);
    CHECK_EQ_U(a->slot, a_slot);
    CHECK(a->id != a_id); /* a new generation: the old owner's records are dead */
    rb_close(a);
    rb_close(b);
}

TEST(handle_inherited_through_fork_gets_its_own_slot)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    CHECK_EQ(put(f.rb, 1, 20), RB_OK);
    uint32_t parent_id = f.rb->id;
    pid_t pid = fork();
    if (pid == 0) {
        int ok = put(f.rb, 2, 20) == RB_OK && f.rb->id != parent_id;
        struct rb_info in;
        ok = ok && rb_info(f.rb, &in) == RB_OK && in.attached == 2;
        _exit(ok ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ_U(f.rb->id, parent_id);
    CHECK_EQ_U(rb_rec_writer(word_at(f.rb, 0)), parent_id);
    CHECK(rb_rec_writer(word_at(f.rb, 32)) != parent_id);
    expect_msg(f.rb, 1, 20, "fork");
    expect_msg(f.rb, 2, 20, "fork");
}

/* A peek or a reservation open in the parent when it forks is the parent's:
 * the child's copy of the handle cannot release, cancel, commit or abort
 * it, and closing the copy does not give the parent's turn away. */
TEST(fork_does_not_hand_a_peek_or_reservation_to_the_child)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    for (uint64_t s = 1; s <= 3; s++)
        CHECK_EQ(put(f.rb, s, 20), RB_OK);
    const void *p;
    size_t len;
    void *res;
    REQUIRE_EQ(rb_peek(f.rb, &p, &len), RB_OK);
    REQUIRE_EQ(rb_reserve(f.rb, 40, &res), RB_OK);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = rb_commit(f.rb, res) == RB_EINVAL && rb_abort(f.rb, res) == RB_EINVAL &&
                 rb_release(f.rb) == RB_EINVAL && rb_peek_cancel(f.rb) == RB_EINVAL;
        rb_close(f.rb);
        _exit(ok ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ_U(atomic_load(&f.rb->grp->turn), f.rb->id); /* still ours */
    CHECK_EQ(rb_release(f.rb), RB_OK);
    make_msg(res, 40, 9);
    CHECK_EQ(rb_commit(f.rb, res), RB_OK);
    expect_msg(f.rb, 2, 20, "fork");
    expect_msg(f.rb, 3, 20, "fork");
    expect_msg(f.rb, 9, 40, "fork");
    expect_empty(f.rb, "fork");
}

/* A waiter that cannot use membarrier() makes every waker use full fences
 * (heavy_waiters), and is still woken promptly. */
static void child_heavy_reader(rb_ring *rb, const void *arg)
{
    (void)arg;
    rb_test_no_membarrier = 1;
    unsigned char buf[64];
    size_t got;
    for (uint64_t s = 1; s <= 200; s++) {
        int64_t t0 = now_ns();
        if (rb_read_wait(rb, buf, sizeof buf, &got, 5000 * MS) != RB_OK || now_ns() - t0 > 50 * MS)
            _exit(1);
    }
    _exit(0);
}

TEST(waiters_without_membarrier_get_full_fences)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    pid_t pid = spawn(f.path, child_heavy_reader, NULL);
    for (uint64_t s = 1; s <= 200; s++) {
        usleep(s % 7 == 0 ? 3000 : 100); /* often parked, sometimes spinning */
        CHECK_EQ(put(f.rb, s, 20), RB_OK);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ_U(atomic_load(&f.rb->hdr->heavy_waiters), 1);
}

/* RINGBUF_MEMBARRIER=0 opts a process out of membarrier: its own wake-ups
 * then use full fences, and it still wakes and is woken promptly. */
TEST(membarrier_opt_out)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    pid_t pid = fork();
    if (pid == 0) {
        setenv("RINGBUF_MEMBARRIER", "0", 1);
        rb_ring *rb;
        if (rb_open(f.path, &rb) != RB_OK)
            _exit(2);
        int light = atomic_load(&rb_light_epoch) == atomic_load(&rb_fork_epoch) + 1;
        unsigned char buf[64];
        size_t got;
        /* Parked until the parent writes; then a write that wakes it. */
        int ok = !light && rb_read_wait(rb, buf, sizeof buf, &got, 5000 * MS) == RB_OK && put(rb, 1, 20) == RB_OK;
        rb_close(rb);
        _exit(ok ? 0 : 1);
    }
    int64_t until = now_ns() + 5000 * MS;
    while (atomic_load(&f.rb->hdr->data_waiters) == 0 && now_ns() < until)
        usleep(1000);
    CHECK_EQ(put(f.rb, 2, 20), RB_OK);
    uint64_t h = 0, t;
    while (h == 0 && now_ns() < until) { /* the child reads message 2 ... */
        usleep(1000);
        rb_positions(f.rb, &h, &t);
    }
    /* ... then we park for its message 1. */
    expect_msg(f.rb, 1, 20, "opt-out");
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ_U(atomic_load(&rb_light_epoch), atomic_load(&rb_fork_epoch) + 1); /* we are registered */
    CHECK_EQ_U(atomic_load(&f.rb->hdr->heavy_waiters), 0); /* opting out is not "cannot wait light" */
}

/* ---- writer threads of one handle, each with its own intent entry ------- */

static _Atomic int parked_in_handler;

/* SIGUSR1 from a kill point: this thread stops there for good (the others
 * go on) until the process is killed. */
static void park_thread(int sig)
{
    (void)sig;
    atomic_store(&parked_in_handler, 1);
    for (;;)
        pause();
}

static void *second_writer(void *arg)
{
    rb_ring *rb = arg;
    while (!atomic_load(&parked_in_handler))
        usleep(100);
    if (put(rb, 2, 40) != RB_OK)
        _exit(5);
    _exit(0); /* the whole process: the first thread never finishes its write */
}

/* In a child: writes message 0, so that this thread owns intent entry 0,
 * runs between(rb) if given, then writes message 1, during which SIGUSR1
 * (caught by handler) arrives after the CAS on tail, before the header
 * word. The handler must not return. */
static void signal_in_second_write(rb_ring *rb, void (*handler)(int), void (*between)(rb_ring *))
{
    struct sigaction sa = {.sa_handler = handler};
    sigaction(SIGUSR1, &sa, NULL);
    if (put(rb, 0, 40) != RB_OK)
        _exit(6);
    if (between != NULL)
        between(rb);
    rb_test_killpoint("write.reserved", 1, SIGUSR1);
    put(rb, 1, 40);
    _exit(7);
}

static void start_second_writer(rb_ring *rb)
{
    pthread_t th;
    if (pthread_create(&th, NULL, second_writer, rb) != 0)
        _exit(4);
}

static void child_two_writer_threads(rb_ring *rb, const void *arg)
{
    (void)arg;
    signal_in_second_write(rb, park_thread, start_second_writer);
}

TEST(writer_threads_of_one_handle_keep_their_intents)
{
    /* The first writer thread of a handle owns intent entry 0 and claims it
     * without a CAS; the others must never take it. Here the owner stops
     * between its CAS on tail and its header word, while a second thread
     * of the same handle writes the next message and the process ends. If
     * the second thread had used (and then cleared) entry 0, the owner's
     * gap would have no intent left, and readers would report the ring
     * corrupt instead of skipping it. */
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    pid_t pid = spawn(f.path, child_two_writer_threads, NULL);
    int st;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    expect_msg(f.rb, 0, 40, "before the gap");
    expect_msg(f.rb, 2, 40, "after the dead owner's gap");
    expect_empty(f.rb, "two writer threads");
}

static rb_ring *handler_rb;

/* SIGUSR1 from a kill point: log one message through the interrupted
 * thread's handle, then die (a crash logger). */
static void log_and_die(int sig)
{
    (void)sig;
    put(handler_rb, 9, 40);
    signal(SIGKILL, SIG_DFL);
    raise(SIGKILL);
}

static void child_logs_from_a_handler(rb_ring *rb, const void *arg)
{
    (void)arg;
    handler_rb = rb;
    signal_in_second_write(rb, log_and_die, NULL);
}

TEST(writer_in_a_signal_handler_keeps_the_interrupted_intent)
{
    /* The handler's write finds intent entry 0 held by the write it
     * interrupted and takes another: the interrupted write's gap stays
     * covered and is skipped, the logged message is delivered. */
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    pid_t pid = spawn(f.path, child_logs_from_a_handler, NULL);
    CHECK(died_of(pid, SIGKILL));
    expect_msg(f.rb, 0, 40, "before the handler");
    expect_msg(f.rb, 9, 40, "the handler's message");
    expect_empty(f.rb, "after the handler");
}

/* A fork child that cannot take a slot of its own shares its parent's, and
 * must never use the parent's intent entry 0 (its thread has the same
 * pthread_self as the parent's owner). Exit status: 0 if all went well. */
static void child_fills_slots_then_forks(rb_ring *rb, const void *arg)
{
    const char *path = arg;
    if (put(rb, 0, 40) != RB_OK) /* this thread owns intent entry 0 */
        _exit(10);
    rb_ring *extra;
    uint32_t taken = 0;
    while (taken < RB_SLOTS && rb_open(path, &extra) == RB_OK)
        taken++; /* kept open: every slot is in use */
    if (taken == RB_SLOTS || errno != EUSERS)
        _exit(11);
    uint32_t parent_slot = rb->slot;
    pid_t pid = fork();
    if (pid == 0) {
        if (put(rb, 1, 40) != RB_OK)
            _exit(12);
        if (rb->slot != parent_slot)
            _exit(13); /* it found a slot after all: the test proves nothing */
        _exit(atomic_load(&rb->intent_owner) == UINTPTR_MAX ? 0 : 14);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        _exit(15);
    _exit(WEXITSTATUS(st));
}

TEST(fork_child_sharing_the_parents_slot_never_owns_intent_entry_0)
{
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 4096));
    pid_t pid = spawn(f.path, child_fills_slots_then_forks, f.path);
    int st;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    if (!CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        printf("    child exit status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    expect_msg(f.rb, 0, 40, "the parent's message");
    expect_msg(f.rb, 1, 40, "the child's message");
    expect_empty(f.rb, "fork fallback");
}

/* ---- the random kill harness --------------------------------------------- */

#define KH_PRODUCERS 2
#define KH_CONSUMERS 2
/* Writer threads per producer process, sharing its handle: the first to
 * write owns intent entry 0, the others claim entries by CAS. */
/* Writer threads per producer process. Under ThreadSanitizer, one: TSan
 * cannot see synchronisation that goes through another process (a consumer
 * process frees space by releasing head), so two writer threads of one
 * process reusing that space look like a data race to it. */
#if defined(__SANITIZE_THREAD__)
#define KH_THREADS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KH_THREADS 1
#endif
#endif
#ifndef KH_THREADS
#define KH_THREADS 3
#endif
#define KH_MAXP 16384  /* writer incarnations (KH_THREADS per process) */
#define KH_MAXSEQ 4096 /* messages per incarnation (it is killed long before) */
#define KH_HDR 24

struct kh_shared {
    _Atomic uint64_t committed[KH_MAXP]; /* messages whose write returned */
    _Atomic uint8_t seen[KH_MAXP][KH_MAXSEQ];
    _Atomic uint64_t torn, dups, bad_ids;
    _Atomic int64_t longest_call;
    _Atomic int stop;
};

static struct kh_shared *kh;

static size_t kh_make(unsigned char *buf, uint32_t p, uint32_t seq, uint64_t r)
{
    size_t len = KH_HDR + (size_t)(r % 400);
    uint32_t hdr[2] = {p, seq};
    memcpy(buf, hdr, 8);
    uint64_t l = len;
    memcpy(buf + 8, &l, 8);
    fill_pattern(buf + KH_HDR, len - KH_HDR, (uint64_t)p << 32 | seq);
    uint64_t sum = fnv1a(FNV_OFFSET, buf, 16);
    sum = fnv1a(sum, buf + KH_HDR, len - KH_HDR);
    memcpy(buf + 16, &sum, 8);
    return len;
}

static void kh_note_call(int64_t t0)
{
    int64_t took = now_ns() - t0, old = atomic_load(&kh->longest_call);
    while (took > old && !atomic_compare_exchange_weak(&kh->longest_call, &old, took))
        ;
}

static void kh_producer(rb_ring *rb, const void *arg)
{
    uint32_t p = (uint32_t)(uintptr_t)arg;
    uint64_t r = mix64(p);
    unsigned char buf[4 * 512];
    for (uint32_t seq = 0; seq + 4 < KH_MAXSEQ && !atomic_load(&kh->stop);) {
        r = mix64(r);
        int mode = (int)(r % 4), rc;
        int64_t t0 = now_ns();
        if (mode == 0) {
            size_t len = kh_make(buf, p, seq, r >> 8);
            rc = rb_write_wait(rb, buf, len, 200 * MS);
            if (rc == RB_OK)
                seq++;
        } else if (mode == 1) {
            size_t lens[4], off = 0, n = 1 + (size_t)(r >> 8) % 4, written = 0;
            for (size_t i = 0; i < n; i++) {
                lens[i] = kh_make(buf + off, p, seq + (uint32_t)i, r >> (12 + i));
                off += lens[i];
            }
            rc = rb_write_many_wait(rb, buf, lens, n, &written, 200 * MS);
            seq += (uint32_t)written;
        } else if (mode == 3) {
            size_t len = kh_make(buf, p, seq, r >> 8);
            struct iovec iov[8];
            rc = rb_writev_wait(rb, iov, tu_split(buf, len, r, iov, 8), 200 * MS);
            if (rc == RB_OK)
                seq++;
        } else {
            size_t len = kh_make(buf, p, seq, r >> 8);
            void *dst;
            rc = rb_reserve_wait(rb, len, &dst, 200 * MS);
            if (rc == RB_OK) {
                memcpy(dst, buf, len);
                rc = rb_commit(rb, dst);
                seq++;
            }
        }
        if (rc != RB_OK && rc != RB_ETIMEDOUT)
            _exit(7);
        atomic_store(&kh->committed[p], seq);
        if (rc == RB_OK)
            kh_note_call(t0);
    }
    for (;;)
        pause(); /* out of sequence numbers: wait to be killed */
}

struct kh_writer {
    rb_ring *rb;
    uint32_t p;
};

static void *kh_writer_main(void *arg)
{
    struct kh_writer *w = arg;
    kh_producer(w->rb, (const void *)(uintptr_t)w->p);
    return NULL;
}

/* A producer process: KH_THREADS writers p0, p0 + 1, ... on one handle. */
static void kh_producer_process(const char *path, uint32_t p0)
{
    rb_ring *rb;
    if (rb_open(path, &rb) != RB_OK)
        _exit(3);
    rb_set_stall_timeout(rb, STALL_NS);
    struct kh_writer w[KH_THREADS];
    pthread_t th;
    for (uint32_t i = 1; i < KH_THREADS; i++) {
        w[i] = (struct kh_writer){rb, p0 + i};
        if (pthread_create(&th, NULL, kh_writer_main, &w[i]) != 0)
            _exit(4);
    }
    kh_producer(rb, (const void *)(uintptr_t)p0);
    _exit(0);
}

static void kh_check(const unsigned char *m, size_t len)
{
    uint32_t hdr[2];
    uint64_t l, sum;
    if (len < KH_HDR) {
        atomic_fetch_add(&kh->torn, 1);
        return;
    }
    memcpy(hdr, m, 8);
    memcpy(&l, m + 8, 8);
    memcpy(&sum, m + 16, 8);
    uint64_t want = fnv1a(fnv1a(FNV_OFFSET, m, 16), m + KH_HDR, len - KH_HDR);
    if (l != len || sum != want) {
        atomic_fetch_add(&kh->torn, 1);
        return;
    }
    if (hdr[0] >= KH_MAXP || hdr[1] >= KH_MAXSEQ) {
        atomic_fetch_add(&kh->bad_ids, 1);
        return;
    }
    if (atomic_fetch_add(&kh->seen[hdr[0]][hdr[1]], 1) != 0)
        atomic_fetch_add(&kh->dups, 1);
}

static void kh_consumer(rb_ring *rb, const void *arg)
{
    (void)arg;
    while (!atomic_load(&kh->stop)) {
        const void *p;
        size_t len;
        int64_t t0 = now_ns();
        int rc = rb_peek_wait(rb, &p, &len, 200 * MS);
        if (rc == RB_OK) {
            kh_note_call(t0);
            /* Logged before release: a consumer killed after this point
             * may see the message delivered again (counted as a dup). */
            kh_check(p, len);
            rb_release(rb);
        } else if (rc != RB_ETIMEDOUT)
            _exit(8);
    }
}

static void kh_open(rb_ring *rb, const void *arg)
{
    rb_set_stall_timeout(rb, STALL_NS);
    ((child_fn)(uintptr_t)arg)(rb, NULL);
}

TEST(random_kill_harness)
{
    const char *env = getenv("RB_KILL_CYCLES");
    int cycles = env != NULL && *env != '\0' ? atoi(env) : 200;
    kh = mmap(NULL, sizeof *kh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(kh != MAP_FAILED);
    AUTO_FX(f);
    REQUIRE(fx_open_stall(&f, 16 * 1024));
    rb_close(f.rb);
    f.rb = NULL;

    pid_t procs[KH_PRODUCERS + KH_CONSUMERS];
    uint32_t next_p = 0, prod_kills = 0, cons_kills = 0;
    /* Writer incarnation p writes messages (p, 0..). */
    for (int i = 0; i < KH_PRODUCERS + KH_CONSUMERS; i++) {
        if (i < KH_PRODUCERS) {
            procs[i] = fork();
            if (procs[i] == 0)
                kh_producer_process(f.path, next_p);
            next_p += KH_THREADS;
        } else
            procs[i] = spawn(f.path, kh_open, (const void *)(uintptr_t)kh_consumer);
    }
    uint64_t r = mix64((uint64_t)now_ns());
    int64_t t_start = now_ns(), t_shown = t_start;
    for (int c = 0; c < cycles && next_p <= KH_MAXP - KH_THREADS; c++) {
        if (now_ns() - t_shown >= 5 * SEC) { /* long runs (--kill-cycles): show they are alive */
            t_shown = now_ns();
            printf("    kill cycle %d of %d, %.0f s, %u producers and %u consumers killed so far\n", c, cycles,
                   (double)(t_shown - t_start) / 1e9, prod_kills, cons_kills);
            fflush(stdout);
        }
        r = mix64(r);
        usleep((useconds_t)(500 + r % 8000));
        int victim = (int)((r >> 20) % (KH_PRODUCERS + KH_CONSUMERS));
        kill(procs[victim], SIGKILL);
        if (!died_of(procs[victim], SIGKILL))
            FAILF("cycle %d: process %d did not die of SIGKILL (crashed or exited on its own)", c, victim);
        if (victim < KH_PRODUCERS) {
            prod_kills++;
            uint32_t p = next_p;
            next_p += KH_THREADS;
            procs[victim] = fork();
            if (procs[victim] == 0)
                kh_producer_process(f.path, p);
        } else {
            cons_kills++;
            procs[victim] = spawn(f.path, kh_open, (const void *)(uintptr_t)kh_consumer);
        }
    }
    /* The end: the consumers are killed, the producers fill the ring and
     * are killed mid-flight too. A new process opens the file and must find
     * every committed message. */
    for (int i = KH_PRODUCERS; i < KH_PRODUCERS + KH_CONSUMERS; i++)
        kill(procs[i], SIGKILL);
    usleep(20000);
    for (int i = 0; i < KH_PRODUCERS; i++)
        kill(procs[i], SIGKILL);
    for (int i = 0; i < KH_PRODUCERS + KH_CONSUMERS; i++)
        died_of(procs[i], SIGKILL);
    int64_t run_ns = now_ns() - t_start;
    REQUIRE_EQ(rb_open(f.path, &f.rb), RB_OK);
    rb_set_stall_timeout(f.rb, STALL_NS);
    size_t drained = 0;
    for (;;) {
        const void *p;
        size_t len;
        int rc = rb_peek_wait(f.rb, &p, &len, RECOVERY_BOUND_NS);
        if (rc != RB_OK) {
            CHECK_EQ(rc, RB_ETIMEDOUT);
            break;
        }
        kh_check(p, len);
        rb_release(f.rb);
        drained++;
    }
    expect_empty(f.rb, "after the harness");
    struct rb_info in;
    CHECK_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ_U(in.busy, 0);
    CHECK_EQ_U(in.attached, 1);

    /* Every committed message arrived, none that was never written did, and
     * a duplicate needs a consumer killed after logging, before release. */
    uint64_t total = 0, missing = 0, phantom = 0;
    for (uint32_t p = 0; p < next_p; p++) {
        uint64_t c = atomic_load(&kh->committed[p]);
        for (uint64_t s = 0; s < KH_MAXSEQ; s++) {
            int seen = atomic_load(&kh->seen[p][s]) != 0;
            total += (uint64_t)seen;
            if (s < c && !seen)
                missing++;
            if (s >= c + 4 && seen)
                phantom++;
        }
    }
    CHECK_EQ_U(atomic_load(&kh->torn), 0);
    CHECK_EQ_U(atomic_load(&kh->bad_ids), 0);
    CHECK_EQ_U(missing, 0);
    CHECK_EQ_U(phantom, 0);
    CHECK(atomic_load(&kh->dups) <= cons_kills + KH_CONSUMERS);
    int64_t longest = atomic_load(&kh->longest_call);
    CHECK(longest < RECOVERY_BOUND_NS + 200 * MS);
    printf("    %d kill cycles in %.1f s: %u producers and %u consumers killed, %llu messages delivered "
           "(%zu after reopening), %llu duplicates, longest successful call %.1f ms\n",
           cycles, (double)run_ns / 1e9, prod_kills, cons_kills, (unsigned long long)total, drained,
           (unsigned long long)atomic_load(&kh->dups), (double)longest / MS);
    munmap(kh, sizeof *kh);
}
