/*
 * test_shutdown.c - rb_shutdown: it wakes the calls blocked on its handle
 * (for data, for space, for the read turn) with RB_ECLOSED, also when it
 * races with a waiter about to park; later calls return RB_ECLOSED without
 * waiting; reservations and peeks in progress can still be finished; other
 * handles are unaffected.
 *
 * RB_STRESS_SCALE (default 1) scales the rounds of the parking race.
 */
#include "runner.h"
#include "testutil.h"

/* ---- rb_shutdown -------------------------------------------------------------------- */

TEST(shutdown_wakes_blocked_calls)
{
    /* The head is a reservation (so readers wait for data) and the ring is
     * full (so writers wait for space): seven calls blocked on one handle. */
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    void *a = NULL;
    REQUIRE_EQ(rb_reserve(f.rb, 2048, &a), RB_OK);
    make_msg(a, 2048, 1);
    REQUIRE_EQ(put(f.rb, 2, 2032), RB_OK);
    static const enum op ops[] = {OP_READ_WAIT,       OP_READ_MANY_WAIT, OP_PEEK_WAIT,  OP_WRITE_WAIT,
                                  OP_WRITE_MANY_WAIT, OP_RESERVE_WAIT,   OP_WRITEV_WAIT};
    enum { N = sizeof ops / sizeof ops[0] };
    struct call c[N];
    static const unsigned char m[100];
    static const size_t ml[1] = {100};
    for (int i = 0; i < N; i++) {
        call_init(&c[i], f.rb, ops[i], -1);
        c[i].msg = m;
        c[i].len = sizeof m;
        c[i].lens = ml;
        c[i].nlens = 1;
        call_start(&c[i]);
    }
    WAIT_PARKED(f.path, OFF_DATA_WAITERS, 3);
    WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 4);
    sleep_ns(50 * MS);
    for (int i = 0; i < N; i++)
        if (call_done(&c[i]))
            FAILF("%s returned %d before rb_shutdown", op_names[ops[i]], c[i].rc);
    int64_t ts = now_ns();
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    for (int i = 0; i < N; i++) {
        if (!CALL_FINISH(&c[i], 5.0))
            continue;
        if (c[i].rc != RB_ECLOSED)
            FAILF("%s -> %d (%s) after rb_shutdown, expected RB_ECLOSED", op_names[ops[i]], c[i].rc,
                  rb_strerror(c[i].rc));
        if (c[i].t1 - ts >= 2 * SEC)
            FAILF("%s returned %.3f s after rb_shutdown", op_names[ops[i]], secs(c[i].t1 - ts));
        if ((ops[i] == OP_READ_MANY_WAIT || ops[i] == OP_WRITE_MANY_WAIT) && c[i].count != 0)
            FAILF("%s: count %zu after RB_ECLOSED", op_names[ops[i]], c[i].count);
        if (c[i].got != 777 || c[i].ptr != WSENT || c[i].pptr != PSENT)
            FAILF("%s: outputs changed on RB_ECLOSED", op_names[ops[i]]);
    }
    /* The reservation can still be committed; another handle reads it. */
    CHECK_EQ(rb_commit(f.rb, a), RB_OK);
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    AUTO_RING(o);
    REQUIRE_EQ(rb_open(f.path, &o), RB_OK);
    GET_CHECK(o, 1, 2048);
    GET_CHECK(o, 2, 2032);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_DATA_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_SPACE_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_TURN_WAITERS), 0);
}

TEST(shutdown_wakes_calls_waiting_for_the_read_turn)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(o);
    REQUIRE_EQ(rb_open(f.path, &o), RB_OK);
    CHECK_EQ(put(o, 1, 100), RB_OK);
    CHECK_EQ(put(o, 2, 200), RB_OK);
    const void *p;
    size_t len;
    REQUIRE_EQ(rb_peek(o, &p, &len), RB_OK); /* holds the read turn */
    static const enum op ops[] = {OP_READ_WAIT, OP_READ_MANY_WAIT, OP_PEEK_WAIT};
    struct call c[3];
    for (int i = 0; i < 3; i++) {
        call_init(&c[i], f.rb, ops[i], -1);
        call_start(&c[i]);
    }
    WAIT_PARKED(f.path, OFF_TURN_WAITERS, 3);
    int64_t ts = now_ns();
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    for (int i = 0; i < 3; i++) {
        if (!CALL_FINISH(&c[i], 5.0))
            continue;
        CHECK_EQ(c[i].rc, RB_ECLOSED);
        if (c[i].t1 - ts >= 2 * SEC)
            FAILF("%s returned %.3f s after rb_shutdown", op_names[ops[i]], secs(c[i].t1 - ts));
    }
    /* The other handle's peek is untouched. */
    CHECK(is_msg(p, len, 1, 100));
    CHECK_EQ(rb_release(o), RB_OK);
    GET_CHECK(o, 2, 200);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_TURN_WAITERS), 0);
}

TEST(calls_after_shutdown_return_eclosed)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(o);
    REQUIRE_EQ(rb_open(f.path, &o), RB_OK);
    rb_ring *rb = f.rb;
    CHECK_EQ(put(rb, 1, 100), RB_OK);
    CHECK_EQ(put(rb, 2, 200), RB_OK);
    CHECK_EQ(rb_shutdown(rb), RB_OK);

    unsigned char m[64] = {1}, buf[4096];
    size_t one = 64, len = 777, lens[4], n;
    struct iovec v = {m, sizeof m};
    const void *p = PSENT;
    void *wp = WSENT;
    static const int64_t tos[] = {-1, 0, 1, 100 * MS};
    int64_t t0 = now_ns();
    for (size_t i = 0; i < sizeof tos / sizeof tos[0]; i++) {
        const int64_t T = tos[i];
        CHECK_EQ(rb_write_wait(rb, m, sizeof m, T), RB_ECLOSED);
        n = 99;
        CHECK_EQ(rb_write_many_wait(rb, m, &one, 1, &n, T), RB_ECLOSED);
        CHECK_EQ_U(n, 0);
        CHECK_EQ(rb_reserve_wait(rb, 10, &wp, T), RB_ECLOSED);
        CHECK_EQ(rb_writev_wait(rb, &v, 1, T), RB_ECLOSED);
        CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, &len, T), RB_ECLOSED);
        n = 99;
        CHECK_EQ(rb_read_many_wait(rb, buf, sizeof buf, lens, 4, &n, T), RB_ECLOSED);
        CHECK_EQ_U(n, 0);
        CHECK_EQ(rb_peek_wait(rb, &p, &len, T), RB_ECLOSED);
    }
    CHECK_EQ(rb_write(rb, m, sizeof m), RB_ECLOSED);
    n = 99;
    CHECK_EQ(rb_write_many(rb, m, &one, 1, &n), RB_ECLOSED);
    CHECK_EQ_U(n, 0);
    CHECK_EQ(rb_reserve(rb, 10, &wp), RB_ECLOSED);
    CHECK_EQ(rb_writev(rb, &v, 1), RB_ECLOSED);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_ECLOSED);
    n = 99;
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 4, &n), RB_ECLOSED);
    CHECK_EQ_U(n, 0);
    CHECK_EQ(rb_peek(rb, &p, &len), RB_ECLOSED);
    CHECK(p == PSENT);
    CHECK(wp == WSENT);
    CHECK_EQ_U(len, 777);
    double dt = secs(now_ns() - t0);
    if (dt >= 1.0)
        FAILF("calls on a shut-down handle took %.3f s (they must not wait)", dt);
    /* Nothing was written or consumed. */
    CHECK_EQ(positions(o), RB_OK);
    CHECK_EQ_U(g_head, 0);
    CHECK_EQ_U(g_tail, rec_size(100) + rec_size(200));
    /* The finishing calls still validate their arguments. */
    CHECK_EQ(rb_release(rb), RB_EINVAL);
    CHECK_EQ(rb_commit(rb, buf + 8), RB_EINVAL);
    CHECK_EQ(rb_abort(rb, NULL), RB_EINVAL);
    /* Again, and NULL. */
    CHECK_EQ(rb_shutdown(rb), RB_OK);
    CHECK_EQ(rb_shutdown(rb), RB_OK);
    CHECK_EQ(rb_shutdown(NULL), RB_EINVAL);
    CHECK_EQ_U(rb_capacity(rb), 4096);
    CHECK_EQ_U(rb_max_message_size(rb), 2048);
    /* The other handle, and a handle opened now, are unaffected. */
    GET_CHECK(o, 1, 100);
    AUTO_RING(o2);
    REQUIRE_EQ(rb_open(f.path, &o2), RB_OK);
    GET_CHECK(o2, 2, 200);
    CHECK_EQ(put(o2, 3, 300), RB_OK);
    GET_CHECK(o, 3, 300);
    /* rb_close frees the shut-down handle (ASan checks for leaks). */
    CHECK_EQ(rb_close(f.rb), RB_OK);
    f.rb = NULL;
}

TEST(commit_abort_release_after_shutdown)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    CHECK_EQ(put(rb, 1, 100), RB_OK);
    void *r1 = NULL, *r2 = NULL;
    REQUIRE_EQ(rb_reserve(rb, 300, &r1), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 400, &r2), RB_OK);
    const void *p = NULL;
    size_t len = 0;
    REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
    CHECK(is_msg(p, len, 1, 100));
    CHECK_EQ(rb_shutdown(rb), RB_OK);
    /* New calls fail, also while a peek is outstanding ... */
    unsigned char buf[512];
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_ECLOSED);
    CHECK_EQ(rb_peek(rb, &p, &len), RB_ECLOSED);
    /* ... but the ones in progress can be finished, once. */
    make_msg(r1, 300, 2);
    make_msg(r2, 400, 3);
    CHECK_EQ(rb_commit(rb, r1), RB_OK);
    CHECK_EQ(rb_abort(rb, r2), RB_OK);
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(rb_release(rb), RB_EINVAL);
    CHECK_EQ(rb_commit(rb, r1), RB_EINVAL);
    CHECK_EQ(rb_abort(rb, r2), RB_EINVAL);
    CHECK_EQ(rb_commit(rb, r2), RB_EINVAL);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    CHECK_EQ(rb_close(rb), RB_OK);
    f.rb = NULL;
    AUTO_RING(o);
    REQUIRE_EQ(rb_open(f.path, &o), RB_OK);
    GET_CHECK(o, 2, 300);
    CHECK_EQ(rb_read(o, buf, sizeof buf, &len), RB_EEMPTY); /* the aborted one is skipped */
    CHECK_EQ(positions(o), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ_U(g_tail, rec_size(100) + rec_size(300) + rec_size(400));
}

TEST(shutdown_affects_only_its_handle)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    AUTO_RING(h3);
    REQUIRE_EQ(rb_open(f.path, &h3), RB_OK);
    struct call c1, c2;
    call_init(&c1, f.rb, OP_READ_WAIT, -1);
    call_init(&c2, h2, OP_READ_WAIT, -1);
    call_start(&c1);
    call_start(&c2);
    WAIT_PARKED(f.path, OFF_DATA_WAITERS, 2);
    int64_t ts = now_ns();
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    if (CALL_FINISH(&c1, 5.0)) {
        CHECK_EQ(c1.rc, RB_ECLOSED);
        CHECK(c1.t1 - ts < 2 * SEC);
    }
    sleep_ns(300 * MS); /* several park caps */
    CHECK(!call_done(&c2));
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    CHECK_EQ(put(f.rb, 1, 10), RB_ECLOSED);
    CHECK_EQ(put(h3, 2, 20), RB_OK);
    if (CALL_FINISH(&c2, 5.0)) {
        CHECK_EQ(c2.rc, RB_OK);
        CHECK(is_msg(c2.buf, c2.got, 2, 20));
    }
    CHECK_EQ(put(h2, 3, 30), RB_OK);
    GET_CHECK(h3, 3, 30);
}

/* rb_shutdown lands while the waiter spins, is about to park, or is parked:
 * it must return RB_ECLOSED promptly every time. */
TEST(shutdown_races_with_parking)
{
    AUTO_FX(e); /* empty: waits for data */
    REQUIRE(fx_open(&e, 4096));
    AUTO_FX(f); /* full: waits for space */
    REQUIRE(fx_open(&f, 4096));
    size_t fl[8];
    REQUIRE(fill_exact(f.rb, 0, fl, 8) > 0);
    AUTO_FX(t); /* read turn held: waits for the turn */
    REQUIRE(fx_open(&t, 4096));
    CHECK_EQ(put(t.rb, 1, 10), RB_OK);
    const void *p;
    size_t len;
    REQUIRE_EQ(rb_peek(t.rb, &p, &len), RB_OK);

    const double scale = env_double("RB_STRESS_SCALE", 1.0);
    int n = (int)(300 * scale);
    if (n < 60)
        n = 60;
    static const unsigned char m[64];
    int slow = 0, fails = 0;
    int64_t worst = 0;
    uint64_t rng = 12345;
    for (int i = 0; i < n && fails < 5; i++) {
        const char *path = i % 3 == 0 ? e.path : i % 3 == 1 ? f.path : t.path;
        rb_ring *h = NULL;
        if (!CHECK_EQ(rb_open(path, &h), RB_OK))
            break;
        struct call c;
        call_init(&c, h, i % 3 == 1 ? OP_WRITE_WAIT : (i / 3) % 2 ? OP_PEEK_WAIT : OP_READ_WAIT, -1);
        c.msg = m;
        c.len = sizeof m;
        call_start(&c);
        rng = mix64(rng);
        sleep_ns((int64_t)(rng % 200000)); /* 0 to 200 us: spinning or parking */
        int64_t ts = now_ns();
        CHECK_EQ(rb_shutdown(h), RB_OK);
        if (CALL_FINISH(&c, 5.0)) {
            if (c.rc != RB_ECLOSED) {
                FAILF("round %d: %s -> %d (%s) after rb_shutdown", i, op_names[c.op], c.rc, rb_strerror(c.rc));
                fails++;
            }
            int64_t dt = c.t1 - ts;
            if (dt > worst)
                worst = dt;
            if (dt >= SLOW_NS)
                slow++;
            if (dt >= 2 * SEC) {
                FAILF("round %d: %s returned %.3f s after rb_shutdown", i, op_names[c.op], secs(dt));
                fails++;
            }
        } else {
            fails++;
        }
        rb_close(h);
    }
    /* A lost wake-up costs a park cap (100 ms): a few on a loaded machine
     * are possible, a pattern is not. */
    if (slow > n / 20)
        FAILF("%d of %d shut-down waiters took >= 90 ms to return (lost wake-ups?)", slow, n);
    if (verbose())
        fprintf(stdout, "  %d shutdowns, slowest return %.3f ms, %d >= 90 ms\n", n, (double)worst / 1e6, slow);
    CHECK_EQ(rb_release(t.rb), RB_OK);
    CHECK_EQ_U(tu_read_u32(e.path, OFF_DATA_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_SPACE_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(t.path, OFF_TURN_WAITERS), 0);
}
