/*
 * test_wait.c - the blocking calls (rb_*_wait): timeouts, wake-ups across
 * threads and processes, CPU use while blocked, and how long a call spins or
 * waits for the space it needs and for the read turn. rb_shutdown of blocked
 * calls is in test_shutdown.c, the blocking stress runs in
 * test_wait_stress.c.
 *
 * Timing checks are sanity windows, not targets: the machine may be shared
 * and noisy, and TSan is slow. A lost wake-up does not hang a waiter (parks
 * are capped at 100 ms) but shows up as slowness.
 *
 * Whether a call really parked is read from the waiter counts in the file
 * header (docs/format.md), so that the wake-up tests exercise the futex path
 * and not only the spin.
 */
#include "runner.h"
#include "testutil.h"

#include <limits.h>
#include <sys/mman.h>

/* ---- timeouts ------------------------------------------------------------------ */

TEST(zero_timeout_does_not_wait)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    unsigned char buf[4096], m[2048];
    size_t len = 777, lens[8] = {0}, n = 99;
    const void *p = PSENT;
    void *wp = WSENT;

    /* Empty: the reading calls report RB_ETIMEDOUT at once. */
    int64_t t0 = now_ns();
    CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, &len, 0), RB_ETIMEDOUT);
    CHECK_EQ_U(len, 777);
    CHECK_EQ(rb_read_many_wait(rb, buf, sizeof buf, lens, 8, &n, 0), RB_ETIMEDOUT);
    CHECK_EQ_U(n, 0);
    CHECK_EQ(rb_peek_wait(rb, &p, &len, 0), RB_ETIMEDOUT);
    CHECK(p == PSENT);
    CHECK_EQ_U(len, 777);
    double dt = secs(now_ns() - t0);
    if (dt >= 0.5)
        FAILF("three calls with timeout 0 on an empty ring took %.3f s", dt);
    CHECK_EQ(rb_release(rb), RB_EINVAL); /* the failed peek kept nothing */
    CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);

    /* Possible now: RB_OK. */
    make_msg(m, 100, 1);
    CHECK_EQ(rb_write_wait(rb, m, 100, 0), RB_OK);
    size_t wl[2] = {200, 300};
    make_msg(m, 200, 2);
    make_msg(m + 200, 300, 3);
    CHECK_EQ(rb_write_many_wait(rb, m, wl, 2, &n, 0), RB_OK);
    CHECK_EQ_U(n, 2);
    CHECK_EQ(rb_reserve_wait(rb, 50, &wp, 0), RB_OK);
    if (CHECK(wp != WSENT && wp != NULL)) {
        make_msg(wp, 50, 4);
        CHECK_EQ(rb_commit(rb, wp), RB_OK);
    }
    make_msg(m, 60, 5);
    struct iovec v[2] = {{m, 20}, {m + 20, 40}};
    CHECK_EQ(rb_writev_wait(rb, v, 2, 0), RB_OK);
    CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, &len, 0), RB_OK);
    CHECK(is_msg(buf, len, 1, 100));
    CHECK_EQ(rb_read_many_wait(rb, buf, sizeof buf, lens, 2, &n, 0), RB_OK);
    if (CHECK_EQ_U(n, 2)) {
        CHECK(is_msg(buf, lens[0], 2, 200));
        CHECK(is_msg(buf + lens[0], lens[1], 3, 300));
    }
    CHECK_EQ(rb_peek_wait(rb, &p, &len, 0), RB_OK);
    CHECK(is_msg(p, len, 4, 50));
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, &len, 0), RB_OK);
    CHECK(is_msg(buf, len, 5, 60));

    /* Full: the writing calls report RB_ETIMEDOUT at once, writing nothing. */
    size_t fl[8];
    int nf = fill_exact(rb, 10, fl, 8);
    REQUIRE(nf > 0);
    uint64_t h0, tl0;
    CHECK_EQ(rb_positions(rb, &h0, &tl0), RB_OK);
    t0 = now_ns();
    CHECK_EQ(rb_write_wait(rb, m, 1, 0), RB_ETIMEDOUT);
    size_t one = 1;
    n = 99;
    CHECK_EQ(rb_write_many_wait(rb, m, &one, 1, &n, 0), RB_ETIMEDOUT);
    CHECK_EQ_U(n, 0);
    wp = WSENT;
    CHECK_EQ(rb_reserve_wait(rb, 1, &wp, 0), RB_ETIMEDOUT);
    CHECK(wp == WSENT);
    v[1].iov_len = 0;
    CHECK_EQ(rb_writev_wait(rb, v, 2, 0), RB_ETIMEDOUT);
    dt = secs(now_ns() - t0);
    if (dt >= 0.5)
        FAILF("four calls with timeout 0 on a full ring took %.3f s", dt);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, h0);
    CHECK_EQ_U(g_tail, tl0);
    for (int i = 0; i < nf; i++)
        GET_CHECK(rb, 10 + (uint64_t)i, fl[i]);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
}

/* One timed call on an empty (reads) or full (writes) ring, in this thread:
 * RB_ETIMEDOUT after at least timeout and well within timeout + 2 s, with
 * the outputs untouched. */
static void check_timeout(rb_ring *empty, rb_ring *full, enum op op, int64_t timeout)
{
    static const unsigned char m[64];
    static const size_t lens[2] = {40, 24};
    struct call c;
    int is_read = op == OP_READ_WAIT || op == OP_READ_MANY_WAIT || op == OP_PEEK_WAIT;
    call_init(&c, is_read ? empty : full, op, timeout);
    c.msg = m;
    c.len = sizeof m;
    c.lens = lens;
    c.nlens = 2;
    call_main(&c);
    int64_t dt = c.t1 - c.t0;
    if (c.rc != RB_ETIMEDOUT)
        FAILF("%s(timeout %lld ns) -> %d (%s), expected RB_ETIMEDOUT", op_names[op], (long long)timeout, c.rc,
              rb_strerror(c.rc));
    if (dt < timeout || dt >= timeout + 2 * SEC)
        FAILF("%s(timeout %lld ns) returned after %lld ns", op_names[op], (long long)timeout, (long long)dt);
    if (c.got != 777 || c.ptr != WSENT || c.pptr != PSENT)
        FAILF("%s: outputs changed on RB_ETIMEDOUT", op_names[op]);
    if ((op == OP_READ_MANY_WAIT || op == OP_WRITE_MANY_WAIT) && c.count != 0)
        FAILF("%s: count %zu on RB_ETIMEDOUT, expected 0", op_names[op], c.count);
}

TEST(timeouts_elapse)
{
    AUTO_FX(e);
    REQUIRE(fx_open(&e, 4096));
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    size_t fl[8];
    int nf = fill_exact(f.rb, 0, fl, 8);
    REQUIRE(nf > 0);
    static const enum op ops[] = {OP_READ_WAIT,       OP_READ_MANY_WAIT, OP_PEEK_WAIT,  OP_WRITE_WAIT,
                                  OP_WRITE_MANY_WAIT, OP_RESERVE_WAIT,   OP_WRITEV_WAIT};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        check_timeout(e.rb, f.rb, ops[i], 1);
        check_timeout(e.rb, f.rb, ops[i], 20 * MS);
        check_timeout(e.rb, f.rb, ops[i], 150 * MS);
    }
    /* Longer than several park caps: the wait parks again until the end. */
    check_timeout(e.rb, f.rb, OP_READ_WAIT, 350 * MS);
    check_timeout(e.rb, f.rb, OP_WRITE_WAIT, 350 * MS);
    /* Nothing changed. */
    CHECK_EQ(positions(e.rb), RB_OK);
    CHECK_EQ_U(g_head, 0);
    CHECK_EQ_U(g_tail, 0);
    CHECK_EQ(rb_release(e.rb), RB_EINVAL);
    CHECK_EQ_U(tu_read_u32(e.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    CHECK_EQ_U(tu_read_u32(e.path, OFF_DATA_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_SPACE_WAITERS), 0);
    for (int i = 0; i < nf; i++)
        GET_CHECK(f.rb, (uint64_t)i, fl[i]);
}

TEST(negative_and_huge_timeouts_wait_forever)
{
    AUTO_FX(e);
    REQUIRE(fx_open(&e, 4096));
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    size_t fl[8];
    int nf = fill_exact(f.rb, 0, fl, 8);
    REQUIRE(nf == 2);
    static const int64_t forever[] = {-1, INT64_MIN, INT64_MAX, INT64_MAX - 1};
    struct call r[4], w[4];
    unsigned char wm[4][300];
    for (int i = 0; i < 4; i++) {
        call_init(&r[i], e.rb, i & 1 ? OP_READ_MANY_WAIT : OP_READ_WAIT, forever[i]);
        call_init(&w[i], f.rb, i & 1 ? OP_RESERVE_WAIT : OP_WRITE_WAIT, forever[i]);
        make_msg(wm[i], sizeof wm[i], 100 + (uint64_t)i);
        w[i].msg = wm[i];
        w[i].len = sizeof wm[i];
        call_start(&r[i]);
        call_start(&w[i]);
    }
    WAIT_PARKED(e.path, OFF_DATA_WAITERS, 4);
    WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 4);
    sleep_ns(300 * MS); /* several park caps */
    for (int i = 0; i < 4; i++) {
        if (call_done(&r[i]))
            FAILF("%s(timeout %lld) returned %d without a message", op_names[r[i].op], (long long)forever[i],
                  r[i].rc);
        if (call_done(&w[i]))
            FAILF("%s(timeout %lld) returned %d on a full ring", op_names[w[i].op], (long long)forever[i],
                  w[i].rc);
    }
    /* Four messages for the four readers, one at a time (rb_read_many_wait
     * takes all there are), and room for the four writers. */
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(put(e.rb, 50 + (uint64_t)i, 10 + (size_t)i), RB_OK);
        int64_t end = now_ns() + 10 * SEC;
        while (positions(e.rb) == RB_OK && g_head != g_tail && now_ns() < end)
            sleep_ns(200000);
        CHECK_EQ_U(g_head, g_tail);
    }
    int seen[4] = {0};
    for (int i = 0; i < 4; i++) {
        if (!CALL_FINISH(&r[i], 5.0))
            continue;
        CHECK_EQ(r[i].rc, RB_OK);
        size_t l = r[i].op == OP_READ_MANY_WAIT ? r[i].rlens[0] : r[i].got;
        if (r[i].op == OP_READ_MANY_WAIT && !CHECK_EQ_U(r[i].count, 1))
            continue;
        if (l >= 10 && l < 14 && is_msg(r[i].buf, l, 50 + (l - 10), l))
            seen[l - 10]++;
        else
            FAILF("reader %d got a wrong message of %zu bytes", i, l);
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(seen[i], 1);
    GET_CHECK(f.rb, 0, fl[0]); /* 2056 bytes free: room for all four */
    for (int i = 0; i < 4; i++) {
        if (!CALL_FINISH(&w[i], 5.0))
            continue;
        CHECK_EQ(w[i].rc, RB_OK);
        if (w[i].op == OP_RESERVE_WAIT)
            CHECK_EQ(w[i].fin_rc, RB_OK);
    }
    GET_CHECK(f.rb, 1, fl[1]);
    /* The writers' messages, in some order. */
    int wseen[4] = {0};
    for (int i = 0; i < 4; i++) {
        unsigned char b[512];
        size_t l = 0;
        if (!CHECK_EQ(rb_read(f.rb, b, sizeof b, &l), RB_OK))
            break;
        int k = 0;
        while (k < 4 && !is_msg(b, l, 100 + (uint64_t)k, 300))
            k++;
        if (k < 4)
            wseen[k]++;
        else
            FAILF("a wrong message of %zu bytes from the writers", l);
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(wseen[i], 1);
}

/* The blocking calls return at once when they need not wait: a partial
 * batch, a truncation, a bad size or argument. */
TEST(wait_calls_return_without_waiting_when_they_can)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const int64_t T = 3 * SEC; /* a hang shows up as RB_ETIMEDOUT after 3 s */
    unsigned char m[3 * 1000], buf[4096];
    size_t lens[16], n, len;
    int64_t t0 = now_ns();

    /* Room for one 1000-byte message, not two: a prefix of one. */
    CHECK_EQ(put(rb, 1, 2048), RB_OK); /* 2056 */
    CHECK_EQ(put(rb, 2, 900), RB_OK);  /* 912: 1128 left */
    size_t three[3] = {1000, 1000, 1000};
    for (int i = 0; i < 3; i++)
        make_msg(m + 1000 * i, 1000, 10 + (uint64_t)i);
    n = 99;
    CHECK_EQ(rb_write_many_wait(rb, m, three, 3, &n, T), RB_OK);
    CHECK_EQ_U(n, 1);
    n = 99;
    CHECK_EQ(rb_write_many_wait(rb, m, three, 3, &n, 0), RB_ETIMEDOUT);
    CHECK_EQ_U(n, 0);

    /* Truncation: nothing consumed, the needed size reported. */
    len = 0;
    CHECK_EQ(rb_read_wait(rb, buf, 100, &len, T), RB_ETRUNC);
    CHECK_EQ_U(len, 2048);
    lens[0] = 0;
    n = 99;
    CHECK_EQ(rb_read_many_wait(rb, buf, 2047, lens, 16, &n, T), RB_ETRUNC);
    CHECK_EQ_U(lens[0], 2048);
    CHECK_EQ_U(n, 0);

    /* Several messages: one call takes all that fit. */
    CHECK_EQ(rb_read_many_wait(rb, buf, sizeof buf, lens, 16, &n, T), RB_OK);
    if (CHECK_EQ_U(n, 3)) {
        CHECK(is_msg(buf, lens[0], 1, 2048));
        CHECK(is_msg(buf + 2048, lens[1], 2, 900));
        CHECK(is_msg(buf + 2948, lens[2], 10, 1000));
    }

    /* Bad sizes and arguments. */
    const size_t max = rb_max_message_size(rb);
    CHECK_EQ(rb_write_wait(rb, m, 0, T), RB_ESIZE);
    CHECK_EQ(rb_write_wait(rb, buf, max + 1, T), RB_ESIZE);
    size_t bad[2] = {10, 0};
    n = 99;
    CHECK_EQ(rb_write_many_wait(rb, m, bad, 2, &n, T), RB_ESIZE);
    CHECK_EQ_U(n, 0);
    bad[1] = max + 1;
    CHECK_EQ(rb_write_many_wait(rb, buf, bad, 2, &n, T), RB_ESIZE);
    void *wp = WSENT;
    CHECK_EQ(rb_reserve_wait(rb, 0, &wp, T), RB_ESIZE);
    CHECK_EQ(rb_reserve_wait(rb, max + 1, &wp, T), RB_ESIZE);
    CHECK(wp == WSENT);
    CHECK_EQ(rb_write_wait(NULL, m, 5, T), RB_EINVAL);
    CHECK_EQ(rb_write_wait(rb, NULL, 5, T), RB_EINVAL);
    CHECK_EQ(rb_write_many_wait(rb, m, three, 1, NULL, T), RB_EINVAL);
    CHECK_EQ(rb_reserve_wait(rb, 5, NULL, T), RB_EINVAL);
    CHECK_EQ(rb_reserve_wait(NULL, 5, &wp, T), RB_EINVAL);
    CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, NULL, T), RB_EINVAL);
    CHECK_EQ(rb_read_wait(NULL, buf, sizeof buf, &len, T), RB_EINVAL);
    CHECK_EQ(rb_read_many_wait(rb, buf, sizeof buf, NULL, 4, &n, T), RB_EINVAL);
    const void *p = PSENT;
    CHECK_EQ(rb_peek_wait(rb, NULL, &len, T), RB_EINVAL);
    CHECK_EQ(rb_peek_wait(rb, &p, NULL, T), RB_EINVAL);
    CHECK_EQ(rb_peek_wait(NULL, &p, &len, T), RB_EINVAL);
    CHECK(p == PSENT);
    /* Zero counts. */
    n = 99;
    CHECK_EQ(rb_write_many_wait(rb, m, three, 0, &n, T), RB_OK);
    CHECK_EQ_U(n, 0);
    n = 99;
    CHECK_EQ(rb_read_many_wait(rb, buf, sizeof buf, lens, 0, &n, T), RB_OK);
    CHECK_EQ_U(n, 0);
    double dt = secs(now_ns() - t0);
    if (dt >= 2.0)
        FAILF("calls that need not wait took %.3f s in all", dt);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

/* ---- wake-ups across threads ------------------------------------------------------ */

TEST(reader_woken_by_writer_thread)
{
    static const enum op ops[] = {OP_READ_WAIT, OP_READ_MANY_WAIT, OP_PEEK_WAIT};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        AUTO_FX(f);
        REQUIRE(fx_open(&f, 4096));
        AUTO_RING(w);
        REQUIRE_EQ(rb_open(f.path, &w), RB_OK);
        unsigned char m[1234];
        make_msg(m, sizeof m, 42 + i);
        struct call r, wr;
        call_init(&r, f.rb, ops[i], -1);
        call_start(&r);
        WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1);
        /* Another thread writes 100 ms later (through another handle). */
        call_init(&wr, w, OP_WRITE, 0);
        wr.delay_ns = 100 * MS;
        wr.msg = m;
        wr.len = sizeof m;
        call_start(&wr);
        if (CALL_FINISH(&wr, 5.0))
            CHECK_EQ(wr.rc, RB_OK);
        if (!CALL_FINISH(&r, 5.0))
            continue;
        if (r.rc != RB_OK)
            FAILF("%s -> %d (%s)", op_names[ops[i]], r.rc, rb_strerror(r.rc));
        if (ops[i] == OP_READ_MANY_WAIT)
            CHECK_EQ_U(r.count, 1);
        if (ops[i] == OP_PEEK_WAIT)
            CHECK_EQ(r.fin_rc, RB_OK);
        if (!is_msg(r.buf, r.got, 42 + i, sizeof m))
            FAILF("%s: wrong message (%zu bytes)", op_names[ops[i]], r.got);
        if (r.t1 < wr.t0)
            FAILF("%s returned before the message was written", op_names[ops[i]]);
        if (r.t1 - wr.t1 >= 2 * SEC)
            FAILF("%s returned %.3f s after the write", op_names[ops[i]], secs(r.t1 - wr.t1));
        CHECK_EQ_U(tu_read_u32(f.path, OFF_DATA_WAITERS), 0);
        CHECK(tu_read_u32(f.path, OFF_DATA_SEQ) >= 1); /* the writer bumped the futex word */
    }
}

/* A writer parked on a full ring proceeds when a reader frees space: by
 * rb_read, by rb_peek + rb_release, and by skipping an aborted record. */
TEST(writer_woken_by_reader_thread)
{
    static const enum op wops[] = {OP_WRITE_WAIT, OP_WRITE_MANY_WAIT, OP_RESERVE_WAIT, OP_WRITEV_WAIT};
    static const enum op rops[] = {OP_READ, OP_PEEK, OP_READ, OP_PEEK};
    for (size_t i = 0; i < 4; i++) {
        AUTO_FX(f);
        REQUIRE(fx_open(&f, 4096));
        size_t fl[8];
        REQUIRE(fill_exact(f.rb, 0, fl, 8) == 2);
        /* 2056 bytes are freed: room for 1008, not for 1008 + 1112. */
        unsigned char m[2100];
        size_t wl[2] = {1000, 1100};
        make_msg(m, 1000, 77);
        make_msg(m + 1000, 1100, 78);
        struct call w, r;
        call_init(&w, f.rb, wops[i], -1);
        w.msg = m;
        w.len = 1000;
        w.lens = wl;
        w.nlens = 2;
        call_start(&w);
        WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1);
        sleep_ns(20 * MS);
        CHECK(!call_done(&w));
        call_init(&r, f.rb, rops[i], 0);
        r.delay_ns = 100 * MS;
        call_start(&r);
        CALL_FINISH(&r, 5.0);
        CHECK_EQ(r.rc, RB_OK);
        CHECK(is_msg(r.buf, r.got, 0, fl[0]));
        if (rops[i] == OP_PEEK)
            CHECK_EQ(r.fin_rc, RB_OK);
        if (!CALL_FINISH(&w, 5.0))
            continue;
        CHECK_EQ(w.rc, RB_OK);
        if (w.t1 < r.t0 || w.t1 - r.t1 >= 2 * SEC)
            FAILF("%s returned %.3f s after the read", op_names[wops[i]], secs(w.t1 - r.t1));
        if (wops[i] == OP_WRITE_MANY_WAIT)
            CHECK_EQ_U(w.count, 1); /* only one of the two fits */
        if (wops[i] == OP_RESERVE_WAIT)
            CHECK_EQ(w.fin_rc, RB_OK);
        GET_CHECK(f.rb, 1, fl[1]);
        GET_CHECK(f.rb, 77, 1000);
        unsigned char b[64];
        size_t l;
        CHECK_EQ(rb_read(f.rb, b, sizeof b, &l), RB_EEMPTY);
        CHECK_EQ_U(tu_read_u32(f.path, OFF_SPACE_WAITERS), 0);
    }

    /* The space is freed by a read that only skips an aborted record (and
     * then finds a reservation not yet committed: RB_EEMPTY). */
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    void *a = NULL, *b = NULL;
    REQUIRE_EQ(rb_reserve(f.rb, 2048, &a), RB_OK); /* 2056 */
    REQUIRE_EQ(rb_reserve(f.rb, 2032, &b), RB_OK); /* 2040: full */
    make_msg(b, 2032, 5);
    unsigned char m[1000];
    make_msg(m, sizeof m, 6);
    struct call w;
    call_init(&w, f.rb, OP_WRITE_WAIT, -1);
    w.msg = m;
    w.len = sizeof m;
    call_start(&w);
    WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1);
    CHECK_EQ(rb_abort(f.rb, a), RB_OK); /* frees nothing yet */
    sleep_ns(150 * MS);
    CHECK(!call_done(&w));
    unsigned char buf[4096];
    size_t len;
    CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, 2056);
    if (CALL_FINISH(&w, 5.0))
        CHECK_EQ(w.rc, RB_OK);
    CHECK_EQ(rb_commit(f.rb, b), RB_OK);
    GET_CHECK(f.rb, 5, 2032);
    GET_CHECK(f.rb, 6, 1000);
}

/* A reader parked for data must be woken when ANOTHER reader moves head onto
 * a committed message, not only when a producer commits one.
 *
 * Reader A's rb_read_many (max 2) copies r1 into the first page of its
 * buffer and faults copying r2 into the second page (PROT_NONE): the
 * SIGSEGV handler holds it there, at the point where r1 is copied but the
 * group head has not moved yet (in format 3 readers zeroed r1's header
 * word as they went, so B found the word at head zero). Reader B,
 * parked in rb_read_wait and woken by the commit of r1..r3, re-checks during
 * that window (it runs on the same CPU under SCHED_IDLE, so only once A is
 * stopped), finds nothing and parks again. A is then let go: head moves to
 * r3, which B must get promptly. If nobody wakes B it sleeps until its
 * 100 ms park cap. (An implementation may instead have B wait for the read
 * turn while A holds it; then give_turn wakes it, and the test passes too.) */
static unsigned char *g_guard;
static atomic_int g_stalled, g_go, g_a_done;

static void on_guard_fault(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    unsigned char *a = si->si_addr;
    if (g_guard == NULL || a < g_guard || a >= g_guard + 4096) {
        signal(SIGSEGV, SIG_DFL); /* not ours: fault again, and die */
        return;
    }
    atomic_store(&g_stalled, 1);
    while (!atomic_load(&g_go)) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    mprotect(g_guard, 4096, PROT_READ | PROT_WRITE);
}

struct ctl {
    const char *path;
    int on_data; /* B was parked for data (not for the turn) while A was stopped */
};

/* Lets A go 20 ms after it stopped, noting where B was parked. */
static void *stall_controller(void *arg)
{
    struct ctl *x = arg;
    while (!atomic_load(&g_stalled)) {
        if (atomic_load(&g_a_done))
            return NULL;
        sleep_ns(100000);
    }
    sleep_ns(20 * MS);
    x->on_data = tu_read_u32(x->path, OFF_DATA_WAITERS) >= 1 && tu_read_u32(x->path, OFF_TURN_WAITERS) == 0;
    atomic_store(&g_go, 1);
    return NULL;
}

TEST(reader_woken_when_another_reader_moves_head)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 65536));
    AUTO_RING(hb);
    REQUIRE_EQ(rb_open(f.path, &hb), RB_OK);
    AUTO_RING(ha);
    REQUIRE_EQ(rb_open(f.path, &ha), RB_OK);
    unsigned char *buf = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(buf != MAP_FAILED);
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_guard_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGSEGV, &sa, &old_sa) == 0);
    cpu_set_t old_set, one;
    CHECK(pthread_getaffinity_np(pthread_self(), sizeof old_set, &old_set) == 0);
    const int cpu = sched_getcpu();
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    CHECK(pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0);

    static unsigned char m[4096 + 200];
    make_msg(m, 4096, 1);
    make_msg(m + 4096, 100, 2);
    make_msg(m + 4196, 100, 3);
    size_t lens[3] = {4096, 100, 100};
    int staged = 0, rounds = 0, on_data = 0;
    double best = 1e9, worst = 0;
    for (; rounds < 8 && staged < 3; rounds++) {
        atomic_store(&g_stalled, 0);
        atomic_store(&g_go, 0);
        atomic_store(&g_a_done, 0);
        g_guard = buf + 4096;
        if (!CHECK(mprotect(g_guard, 4096, PROT_NONE) == 0))
            break;
        struct call b;
        call_init(&b, hb, OP_READ_WAIT, -1);
        b.idle_cpu = cpu + 1;
        call_start(&b);
        if (!WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1) || b.idle_cpu < 0) {
            if (b.idle_cpu < 0)
                FAILF("could not run a thread on CPU %d under SCHED_IDLE", cpu);
            CALL_FINISH(&b, 0.0);
            break;
        }
        sleep_ns(5 * MS);
        struct ctl x = {f.path, 0};
        pthread_t tc;
        if (!CHECK(pthread_create(&tc, NULL, stall_controller, &x) == 0)) {
            CALL_FINISH(&b, 0.0);
            break;
        }
        size_t n = 0, rl[2], count = 0;
        CHECK_EQ(rb_write_many(f.rb, m, lens, 3, &n), RB_OK); /* wakes B ... */
        int rc = rb_read_many(ha, buf, 8192, rl, 2, &count);  /* ... A stops between r1 and r2 */
        const int64_t ta = now_ns();
        atomic_store(&g_a_done, 1);
        pthread_join(tc, NULL);
        CHECK_EQ(rc, RB_OK);
        if (!CALL_FINISH(&b, 5.0))
            break;
        CHECK_EQ(b.rc, RB_OK);
        /* It counts if A stopped between r1 and r2 and B waited through it
         * (B did not get r1 or r2 first). */
        if (atomic_load(&g_stalled) && count == 2 && b.rc == RB_OK && b.got == 100 && b.t1 > ta) {
            staged++;
            on_data += x.on_data;
            CHECK(is_msg(buf, rl[0], 1, 4096));
            CHECK(is_msg(buf + 4096, rl[1], 2, 100));
            CHECK(is_msg(b.buf, b.got, 3, 100));
            const double dt = secs(b.t1 - ta);
            best = dt < best ? dt : best;
            worst = dt > worst ? dt : worst;
        }
        unsigned char d[8192];
        size_t dl;
        while (rb_read(f.rb, d, sizeof d, &dl) == RB_OK)
            ;
    }
    g_guard = NULL;
    sigaction(SIGSEGV, &old_sa, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof old_set, &old_set);
    munmap(buf, 8192);
    if (staged == 0)
        FAILF("could not stage the scenario in %d rounds (B never waited through A's read)", rounds);
    else if (best >= 0.05)
        FAILF("lost wake-up: a reader parked in rb_read_wait slept %.1f ms (in each of %d rounds, up to %.1f ms) "
              "with a message at the head after another reader's rb_read_many moved head onto it",
              best * 1e3, staged, worst * 1e3);
    if (verbose())
        fprintf(stdout,
                "  %d of %d rounds staged (B parked for data in %d, for the turn in the others); B got the "
                "message %.3f to %.3f ms after A returned\n",
                staged, rounds, on_data, best * 1e3, worst * 1e3);
}

/* ---- wake-ups across processes ----------------------------------------------------- */

/* Child: opens the ring by path and reads three messages with the three
 * blocking reads (waiting forever); exit code says what went wrong. */
static int child_reader(const char *path)
{
    rb_ring *rb = NULL;
    if (rb_open(path, &rb) != RB_OK)
        return 10;
    unsigned char buf[4096];
    size_t len = 0, lens[4], n = 0;
    if (rb_read_wait(rb, buf, sizeof buf, &len, -1) != RB_OK)
        return 11;
    if (!is_msg(buf, len, 1, 1234))
        return 12;
    if (rb_read_many_wait(rb, buf, sizeof buf, lens, 4, &n, -1) != RB_OK)
        return 13;
    if (n != 1 || !is_msg(buf, lens[0], 2, 2000))
        return 14;
    const void *p;
    if (rb_peek_wait(rb, &p, &len, -1) != RB_OK)
        return 15;
    if (!is_msg(p, len, 3, 7))
        return 16;
    if (rb_release(rb) != RB_OK)
        return 17;
    rb_close(rb);
    return 0;
}

/* Waits until the ring is empty again (the child consumed what we wrote)
 * and the child is parked for data again. */
static int wait_consumed_and_parked(rb_ring *rb, const char *path)
{
    int64_t end = now_ns() + 10 * SEC;
    while (positions(rb) == RB_OK && g_head != g_tail && now_ns() < end)
        sleep_ns(200000);
    if (g_head != g_tail) {
        FAILF("the child did not consume the message within 10 s");
        return 0;
    }
    return WAIT_PARKED(path, OFF_DATA_WAITERS, 1);
}

TEST(reader_woken_across_processes)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(child_reader(f.path));
    static const size_t lens[3] = {1234, 2000, 7};
    for (int i = 0; i < 3; i++) {
        if (!(i == 0 ? WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1) : wait_consumed_and_parked(f.rb, f.path)))
            break;
        sleep_ns(100 * MS);
        if (!CHECK(child_alive(pid)))
            break;
        CHECK_EQ(put(f.rb, 1 + (uint64_t)i, lens[i]), RB_OK);
    }
    CHECK_CHILD_OK(wait_child(pid, 10.0), "blocked reader child");
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_DATA_WAITERS), 0);
}

/* Child: writes into a full ring with rb_write_wait, then reserves with
 * rb_reserve_wait (both forever). */
static int child_writer(const char *path)
{
    rb_ring *rb = NULL;
    if (rb_open(path, &rb) != RB_OK)
        return 10;
    unsigned char m[1000];
    make_msg(m, sizeof m, 21);
    if (rb_write_wait(rb, m, sizeof m, -1) != RB_OK)
        return 11;
    void *p = NULL;
    if (rb_reserve_wait(rb, 1500, &p, -1) != RB_OK)
        return 12;
    make_msg(p, 1500, 22);
    if (rb_commit(rb, p) != RB_OK)
        return 13;
    rb_close(rb);
    return 0;
}

TEST(writer_woken_across_processes)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    size_t fl[8];
    REQUIRE(fill_exact(f.rb, 0, fl, 8) == 2); /* 2056 + 2040 bytes */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(child_writer(f.path));
    if (WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1)) {
        sleep_ns(100 * MS);
        CHECK(child_alive(pid));
        GET_CHECK(f.rb, 0, fl[0]); /* frees 2056: the 1000-byte write fits, then 1048 are left */
        /* Wait for the write, and for the child to park for 1512 bytes. */
        int64_t end = now_ns() + 10 * SEC;
        while (positions(f.rb) == RB_OK && g_tail != 4096 + 1008 && now_ns() < end)
            sleep_ns(200000);
        CHECK_EQ_U(g_tail, 4096 + 1008);
        if (WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1)) {
            sleep_ns(100 * MS);
            CHECK(child_alive(pid));
            GET_CHECK(f.rb, 1, fl[1]);
        }
    }
    CHECK_CHILD_OK(wait_child(pid, 10.0), "blocked writer child");
    GET_CHECK(f.rb, 21, 1000);
    GET_CHECK(f.rb, 22, 1500);
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_SPACE_WAITERS), 0);
}

/* ---- CPU while blocked ------------------------------------------------------------------ */

/* Writers waiting for a record still being written that they must free
 * first (a ring with no group, an overwrite ring, or records below a group
 * made at "latest") park, and the commit of that record wakes them (a
 * second review found them spinning until their deadline). */
TEST(writer_behind_an_unfinished_oldest_record_parks)
{
    static const char *const what[3] = {"no group", "overwrite", "below a 'latest' group"};
    for (int kind = 0; kind < 3; kind++) {
        AUTO_DIR(dir);
        REQUIRE(dir != NULL);
        const char *path = tu_path(dir, "ring");
        AUTO_RING(w);
        AUTO_RING(r);
        AUTO_RING(g);
        unsigned flags = RB_NO_DEFAULT_GROUP | (kind == 1 ? RB_OVERWRITE : 0);
        REQUIRE_EQ(rb_create(path, 4096, flags, &w), RB_OK);
        REQUIRE_EQ(rb_open(path, &r), RB_OK);
        void *res;
        REQUIRE_EQ(rb_reserve(r, 100, &res), RB_OK); /* the oldest record, unfinished */
        if (kind == 2)
            REQUIRE_EQ(rb_open_group(path, "g", 0, &g), RB_OK); /* starts past it */
        uint64_t s = 0;
        while (put(w, s, 200) == RB_OK)
            s++;
        unsigned char buf[4096];
        size_t len;
        while (g != NULL && rb_read(g, buf, sizeof buf, &len) == RB_OK)
            ;
        static const unsigned char m[200];
        struct call c;
        call_init(&c, w, OP_WRITE_WAIT, SEC);
        c.msg = m;
        c.len = sizeof m;
        call_start(&c);
        sleep_ns(300 * MS);
        CHECK_EQ(rb_commit(r, res), RB_OK);
        if (!CALL_FINISH(&c, 10.0))
            continue;
        CHECK_EQ(c.rc, RB_OK);
        const int64_t wall = c.t1 - c.t0;
        if (wall >= SEC)
            FAILF("%s: the commit did not wake the writer (%.3f s)", what[kind], secs(wall));
        if (c.cpu_ns >= 100 * MS)
            FAILF("%s: %.3f s of CPU in %.3f s blocked", what[kind], secs(c.cpu_ns), secs(wall));
    }
}

TEST(blocked_calls_use_little_cpu)
{
    AUTO_FX(e);
    REQUIRE(fx_open(&e, 4096));
    AUTO_FX(e2);
    REQUIRE(fx_open(&e2, 4096));
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    size_t fl[8];
    REQUIRE(fill_exact(f.rb, 0, fl, 8) > 0);
    AUTO_FX(t);
    REQUIRE(fx_open(&t, 4096));
    AUTO_RING(t2);
    REQUIRE_EQ(rb_open(t.path, &t2), RB_OK);
    CHECK_EQ(put(t.rb, 1, 10), RB_OK);
    const void *p;
    size_t len;
    REQUIRE_EQ(rb_peek(t2, &p, &len), RB_OK);
    static const unsigned char m[64];

    struct call c[4];
    call_init(&c[0], e.rb, OP_READ_WAIT, SEC);     /* for data, times out */
    call_init(&c[1], f.rb, OP_WRITE_WAIT, SEC);    /* for space, times out */
    call_init(&c[2], t.rb, OP_READ_WAIT, SEC);     /* for the read turn, times out */
    call_init(&c[3], e2.rb, OP_READ_WAIT, -1);     /* forever, a message after 1 s */
    c[1].msg = m;
    c[1].len = sizeof m;
    int64_t t0 = now_ns();
    for (int i = 0; i < 4; i++)
        call_start(&c[i]);
    sleep_ns(SEC);
    int64_t tw = now_ns();
    CHECK_EQ(put(e2.rb, 2, 20), RB_OK);
    static const int expect[4] = {RB_ETIMEDOUT, RB_ETIMEDOUT, RB_ETIMEDOUT, RB_OK};
    static const char *const what[4] = {"waiting for data", "waiting for space", "waiting for the read turn",
                                        "waiting forever for data"};
    for (int i = 0; i < 4; i++) {
        if (!CALL_FINISH(&c[i], 10.0))
            continue;
        CHECK_EQ(c[i].rc, expect[i]);
        const int64_t wall = c[i].t1 - c[i].t0;
        if (wall < (i == 3 ? tw - t0 - 100 * MS : SEC))
            FAILF("%s: returned after %.3f s", what[i], secs(wall));
        if (c[i].cpu_ns >= 100 * MS)
            FAILF("%s: %.3f s of CPU in %.3f s blocked (%ld voluntary, %ld involuntary switches)", what[i],
                  secs(c[i].cpu_ns), secs(wall), c[i].nvcsw, c[i].nivcsw);
        if (verbose())
            fprintf(stdout, "  %s: %.1f ms CPU in %.3f s, %ld voluntary / %ld involuntary switches\n", what[i],
                    (double)c[i].cpu_ns / 1e6, secs(wall), c[i].nvcsw, c[i].nivcsw);
    }
    CHECK(is_msg(c[3].buf, c[3].got, 2, 20));
    CHECK_EQ(rb_release(t2), RB_OK);
}

/* ---- fixes from the design review ------------------------------------------------- */

/* rb_peek frees space when it skips aborted records before the message it
 * returns, and keeps the turn: it must wake producers parked for space
 * itself (they were left to their 100 ms park cap). Checked without timing:
 * the space queue's futex word must have been bumped when rb_peek returns. */
TEST(peek_skipping_aborted_records_wakes_space_waiters)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    void *p;
    REQUIRE_EQ(rb_reserve(rb, 2040, &p), RB_OK); /* 2048 bytes */
    REQUIRE_EQ(rb_abort(rb, p), RB_OK);
    REQUIRE_EQ(put(rb, 1, 2000), RB_OK); /* 2008 bytes: 40 bytes stay free */
    struct call c;
    static unsigned char msg[1000];
    call_init(&c, rb, OP_WRITE_WAIT, -1);
    c.msg = msg;
    c.len = sizeof msg; /* needs 1008 bytes */
    REQUIRE(call_start(&c));
    REQUIRE(WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1));
    uint32_t seq = tu_read_u32(f.path, OFF_SPACE_SEQ);
    const void *q;
    size_t len;
    REQUIRE_EQ(rb_peek(rb, &q, &len), RB_OK); /* skips the aborted record */
    CHECK(is_msg(q, len, 1, 2000));
    CHECK(tu_read_u32(f.path, OFF_SPACE_SEQ) != seq);
    CHECK(CALL_FINISH(&c, 10.0));
    CHECK_EQ(c.rc, RB_OK);
    CHECK_EQ(rb_release(rb), RB_OK);
}

/* A writer that finds the ring full first spins until a quarter of it is
 * free (reserve_wait's refill), but never waits for more than its record
 * needs: once it has parked, one read that frees a single small record
 * lets it through. */
TEST(full_ring_writer_waits_only_for_what_it_needs)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 65536)); /* refill: 16384 bytes */
    rb_ring *rb = f.rb;
    uint64_t n = 0;
    while (put(rb, n, 56) == RB_OK) /* 64-byte records: exactly full */
        n++;
    REQUIRE(n == 1024);
    struct call c;
    static unsigned char msg[56];
    make_msg(msg, sizeof msg, 5000);
    call_init(&c, rb, OP_WRITE_WAIT, -1);
    c.msg = msg;
    c.len = sizeof msg;
    REQUIRE(call_start(&c));
    REQUIRE(WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1));
    unsigned char buf[64];
    size_t got;
    int64_t t_read = now_ns();
    REQUIRE_EQ(rb_read(rb, buf, sizeof buf, &got), RB_OK); /* frees 64 bytes */
    CHECK(is_msg(buf, got, 0, 56));
    if (!CALL_FINISH(&c, 10.0))
        return;
    CHECK_EQ(c.rc, RB_OK);
    if (c.t1 - t_read >= SEC)
        FAILF("the writer returned %.3f s after the read that made room", secs(c.t1 - t_read));
    for (uint64_t i = 1; i < n; i++) {
        REQUIRE_EQ(rb_read(rb, buf, sizeof buf, &got), RB_OK);
        CHECK(is_msg(buf, got, i, 56));
    }
    REQUIRE_EQ(rb_read(rb, buf, sizeof buf, &got), RB_OK);
    CHECK(is_msg(buf, got, 5000, 56));
}

static atomic_int g_spin_stop;
static void *busy_spinner(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&g_spin_stop, memory_order_relaxed))
        ;
    return NULL;
}

/* A non-blocking read that finds the turn held gives up after about 20 µs
 * of spinning plus a yield, even on an oversubscribed machine (it used to
 * read the clock only every 64 yields). The bound is generous. */
TEST(nonblocking_read_is_bounded_while_the_turn_is_held)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    CHECK_EQ(put(f.rb, 1, 100), RB_OK);
    const void *q;
    size_t len;
    REQUIRE_EQ(rb_peek(f.rb, &q, &len), RB_OK);
    atomic_store(&g_spin_stop, 0);
    pthread_t spin[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&spin[i], NULL, busy_spinner, NULL);
    int64_t worst = 0;
    unsigned char buf[256];
    for (int i = 0; i < 100; i++) {
        int64_t t0 = now_ns();
        CHECK_EQ(rb_read(h2, buf, sizeof buf, &len), RB_EEMPTY);
        int64_t dt = now_ns() - t0;
        worst = dt > worst ? dt : worst;
    }
    atomic_store(&g_spin_stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(spin[i], NULL);
    /* The turn is held for the whole test: a read that waited for it would
     * never return. The bound only has to tell "gave up" from "waited": it
     * is loose because one sched_yield among 4 spinners on a loaded 2-core
     * machine can cost a scheduler slice (60 ms was seen to fail there). */
    if (worst > 250 * MS)
        FAILF("a non-blocking rb_read took %.1f ms to give up", (double)worst / 1e6);
    CHECK_EQ(rb_release(f.rb), RB_OK);
}
