/*
 * test_zerocopy.c - the zero-copy calls: rb_reserve/rb_commit/rb_abort
 * (and rb_reserve_wait), rb_peek/rb_release/rb_peek_cancel (and
 * rb_peek_wait), rb_peek_many (and rb_peek_many_wait): FIFO order with
 * outstanding reservations, aborted records skipped (and zeroed when a
 * writer reclaims them), misuse,
 * contiguous views across the end of the ring, the read turn a peek holds,
 * batches and their positions, and a commit racing an abort.
 *
 * RB_STRESS_SCALE (default 1) scales the rounds of the commit/abort race.
 */
#include "runner.h"
#include "testutil.h"

/* ---- zero-copy writes ------------------------------------------------------------------ */

struct commit_arg {
    rb_ring *rb;
    void *p;
    int rc;
};

static void *commit_thread(void *arg)
{
    struct commit_arg *cm = arg;
    cm->rc = rb_commit(cm->rb, cm->p);
    return NULL;
}

TEST(reserve_commit_delivers)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    unsigned char buf[4096];
    size_t len;
    CHECK_EQ(put(rb, 1, 20), RB_OK); /* at 0, 32 bytes */
    GET_CHECK(rb, 1, 20);
    void *p = NULL;
    REQUIRE_EQ(rb_reserve(rb, 1000, &p), RB_OK);
    REQUIRE(p != NULL);
    CHECK_EQ_U((uintptr_t)p % 8, 0);
    /* Reserved at 32: tail moved, head did not, the header word is BUSY. */
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 32);
    CHECK_EQ_U(g_tail, 32 + rec_size(1000));
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE + 32), rec_word(1000, REC_BUSY, writer_id(f.path)));
    make_msg(p, 1000, 2);
    /* The payload is written in place, into the file. */
    unsigned char e[1000], disk[1000];
    make_msg(e, 1000, 2);
    CHECK_EQ(tu_pread(f.path, HEADER_SIZE + 40, disk, sizeof disk), 0);
    CHECK_MEM_EQ(disk, e, 1000);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(rb_commit(rb, p), RB_OK);
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE + 32), rec_word(1000, 0, writer_id(f.path)));
    GET_CHECK(rb, 2, 1000);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);

    /* The largest message, and one byte. */
    REQUIRE_EQ(rb_reserve(rb, 2048, &p), RB_OK);
    make_msg(p, 2048, 3);
    void *q = NULL;
    REQUIRE_EQ(rb_reserve(rb, 1, &q), RB_OK);
    make_msg(q, 1, 4);
    CHECK_EQ(rb_commit(rb, q), RB_OK);
    CHECK_EQ(rb_commit(rb, p), RB_OK);
    GET_CHECK(rb, 3, 2048);
    GET_CHECK(rb, 4, 1);

    /* Any thread may commit a reservation, while a reader waits for it. */
    REQUIRE_EQ(rb_reserve(rb, 500, &p), RB_OK);
    make_msg(p, 500, 5);
    struct call c;
    call_init(&c, rb, OP_READ_WAIT, 5 * SEC);
    call_start(&c);
    struct commit_arg cm = {rb, p, 12345};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, commit_thread, &cm) == 0);
    pthread_join(th, NULL);
    CHECK_EQ(cm.rc, RB_OK);
    if (CALL_FINISH(&c, 10.0)) {
        CHECK_EQ(c.rc, RB_OK);
        CHECK(is_msg(c.buf, c.got, 5, 500));
    }
}

TEST(abort_is_never_delivered)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    unsigned char buf[4096];
    size_t len;
    /* Aborted before the next message is written, and after. */
    void *a = NULL, *b = NULL;
    REQUIRE_EQ(rb_reserve(rb, 300, &a), RB_OK);
    memset(a, 0xAB, 300);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE + 0), rec_word(300, REC_DISCARD, writer_id(f.path)));
    CHECK_EQ(put(rb, 1, 100), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 200, &b), RB_OK);
    memset(b, 0xCD, 200);
    CHECK_EQ(put(rb, 2, 50), RB_OK);
    CHECK_EQ(rb_abort(rb, b), RB_OK);
    GET_CHECK(rb, 1, 100);
    GET_CHECK(rb, 2, 50);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    const uint64_t t0 = rec_size(300) + rec_size(100) + rec_size(200) + rec_size(50);
    CHECK_EQ_U(g_tail, t0);
    /* Skipped, not zeroed yet: reads move the group head only, and no
     * writer needed the space (head, the reclaim boundary, is still 0). The
     * free part after tail is zero. */
    size_t n;
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), 0);
    CHECK_EQ(tu_data_nonzero(f.path, 4096, 0, rec_size(300)) > 0, 1);
    CHECK_EQ(tu_data_nonzero(f.path, 4096, t0, 4096), 0);

    /* An aborted record's space comes back once a reader passes it. */
    REQUIRE_EQ(rb_reserve(rb, 2048, &a), RB_OK); /* 2056 */
    REQUIRE_EQ(rb_reserve(rb, 2032, &b), RB_OK); /* 2040: full */
    /* b needed the space read: its writer reclaimed it (head moved to the
     * group head), zeroing the records read, the aborted ones with 0xAB
     * and 0xCD in them included: b's payload, which lies there, is zero. */
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), t0);
    CHECK_EQ(tu_data_nonzero(f.path, 4096, t0 + rec_size(2048) + 8, t0 + 4096), 0);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(put(rb, 3, 1), RB_EFULL);            /* not yet */
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY); /* skips it, stops at b */
    CHECK_EQ(put(rb, 3, 2048), RB_OK);
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), t0 + rec_size(2048));
    make_msg(b, 2032, 4);
    CHECK_EQ(rb_commit(rb, b), RB_OK);
    GET_CHECK(rb, 4, 2032);
    GET_CHECK(rb, 3, 2048);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);

    /* rb_read_many and rb_peek skip them too, also several in a row. */
    for (int i = 0; i < 3; i++) {
        REQUIRE_EQ(rb_reserve(rb, 10 + (size_t)i, &a), RB_OK);
        CHECK_EQ(rb_abort(rb, a), RB_OK);
    }
    CHECK_EQ(put(rb, 5, 60), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 70, &a), RB_OK);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(put(rb, 6, 80), RB_OK);
    size_t lens[8];
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 8, &n), RB_OK);
    if (CHECK_EQ_U(n, 2)) {
        CHECK(is_msg(buf, lens[0], 5, 60));
        CHECK(is_msg(buf + 60, lens[1], 6, 80));
    }
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

TEST(commit_abort_misuse_is_einval)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    void *p = NULL, *q = NULL;
    REQUIRE_EQ(rb_reserve(rb, 64, &p), RB_OK); /* at 0: the payload starts 8 bytes into the data */
    unsigned char *u = p;
    memset(p, 0, 64);
    unsigned char stack[64];
    CHECK_EQ(rb_commit(rb, NULL), RB_EINVAL);
    CHECK_EQ(rb_abort(rb, NULL), RB_EINVAL);
    CHECK_EQ(rb_commit(NULL, p), RB_EINVAL);
    CHECK_EQ(rb_abort(NULL, p), RB_EINVAL);
    CHECK_EQ(rb_commit(rb, stack), RB_EINVAL);    /* not in the ring */
    CHECK_EQ(rb_commit(rb, u - 8), RB_EINVAL);    /* the start of the data region */
    CHECK_EQ(rb_commit(rb, u - 16), RB_EINVAL);   /* the slot table */
    CHECK_EQ(rb_commit(rb, u - 4096), RB_EINVAL); /* the slot table */
    CHECK_EQ(rb_commit(rb, u - 8 - HEADER_SIZE), RB_EINVAL); /* the header page */
    CHECK_EQ(rb_commit(rb, u + 4096), RB_EINVAL); /* the same record in the second mapping */
    CHECK_EQ(rb_abort(rb, u + 4096), RB_EINVAL);
    CHECK_EQ(rb_commit(rb, u + 2 * 4096), RB_EINVAL); /* past the mappings */
    for (int k = 1; k < 8; k++) {
        CHECK_EQ(rb_commit(rb, u + k), RB_EINVAL); /* misaligned */
        CHECK_EQ(rb_abort(rb, u + k), RB_EINVAL);
    }
    /* Inside the payload: RB_EINVAL only because these payload bytes are
     * zero. rb_commit tells a reservation by its BUSY header word, so an
     * 8-aligned pointer into a payload whose bytes look like a BUSY word is
     * accepted and overwrites them (reported; not tested here). */
    CHECK_EQ(rb_commit(rb, u + 8), RB_EINVAL);
    CHECK_EQ(rb_commit(rb, u + 128), RB_EINVAL); /* free space */
    CHECK_EQ(rb_abort(rb, u + 128), RB_EINVAL);
    /* None of that touched the reservation. */
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE), rec_word(64, REC_BUSY, writer_id(f.path)));
    unsigned char buf[256];
    size_t len;
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    make_msg(p, 64, 1);
    CHECK_EQ(rb_commit(rb, p), RB_OK);
    CHECK_EQ(rb_commit(rb, p), RB_EINVAL); /* twice */
    CHECK_EQ(rb_abort(rb, p), RB_EINVAL);  /* abort after commit */
    REQUIRE_EQ(rb_reserve(rb, 32, &q), RB_OK);
    CHECK_EQ(rb_abort(rb, q), RB_OK);
    CHECK_EQ(rb_abort(rb, q), RB_EINVAL);  /* twice */
    CHECK_EQ(rb_commit(rb, q), RB_EINVAL); /* commit after abort */
    GET_CHECK(rb, 1, 64);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    /* After consumption the words stay (committed, discarded) until a
     * writer reclaims them: still RB_EINVAL. */
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE), rec_word(64, 0, writer_id(f.path)));
    CHECK_EQ(rb_commit(rb, p), RB_EINVAL);
    CHECK_EQ(rb_abort(rb, q), RB_EINVAL);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ_U(g_tail, rec_size(64) + rec_size(32));
    /* And once reclaimed: 1-byte messages fill the rest of the ring, and
     * the one that needs the space read reclaims it and lands at 0 (over
     * p's word), q's word (at 72) is zero: still RB_EINVAL. */
    int k = tu_write_until_reclaim(rb, f.path, 10, 1, 1000);
    CHECK_EQ(k, (4096 - (int)(rec_size(64) + rec_size(32))) / 16 + 1);
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), rec_size(64) + rec_size(32));
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE), rec_word(1, 0, writer_id(f.path)));
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE + rec_size(64)), 0);
    CHECK_EQ(rb_commit(rb, p), RB_EINVAL);
    CHECK_EQ(rb_abort(rb, q), RB_EINVAL);
    for (int i = 0; i < k; i++)
        GET_CHECK(rb, 10 + (uint64_t)i, 1);
}

/* Moves an empty ring so that head = tail = idx (mod capacity), by writing
 * and reading filler messages. */
static int advance_to(rb_ring *rb, uint64_t idx)
{
    uint64_t h, t;
    if (rb_positions(rb, &h, &t) != RB_OK || h != t)
        return 0;
    const uint64_t cap = rb_capacity(rb), maxrec = rec_size(rb_max_message_size(rb));
    uint64_t need = (idx - t) & (cap - 1);
    if (need == 8)
        need += cap;
    unsigned char buf[4096];
    while (need > 0) {
        uint64_t rec = need <= maxrec ? need : maxrec;
        if (need - rec == 8)
            rec -= 8;
        size_t len = (size_t)(rec - 8), got;
        memset(buf, 0x11, len);
        if (rb_write(rb, buf, len) != RB_OK || rb_read(rb, buf, sizeof buf, &got) != RB_OK || got != len)
            return 0;
        need -= rec;
    }
    return rb_positions(rb, &h, &t) == RB_OK && (t & (cap - 1)) == idx;
}

TEST(reservations_are_contiguous_across_the_end)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const uint64_t cap = 4096;
    static const size_t sizes[] = {1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 255, 256, 1000, 1500, 2047, 2048};
    const size_t nsizes = sizeof sizes / sizeof sizes[0];
    unsigned char *base = NULL; /* start of the data region, from the first reservation */
    unsigned char pat[2048], disk[4096], out[4096];
    uint64_t iter = 0, crossing = 0;
    int fails = 0;
    for (uint64_t idx = 0; idx < cap && fails < 10; idx += 8) {
        for (size_t s = 0; s < nsizes && fails < 10; s++, iter++) {
            const size_t len = sizes[s];
            if (!advance_to(rb, idx)) {
                FAILF("could not move the ring to offset %llu", (unsigned long long)idx);
                fails++;
                continue;
            }
            void *p = NULL;
            int rc = rb_reserve(rb, len, &p);
            if (rc != RB_OK) {
                FAILF("rb_reserve(%zu) at offset %llu -> %d", len, (unsigned long long)idx, rc);
                fails++;
                continue;
            }
            if (base == NULL)
                base = (unsigned char *)p - 8 - idx;
            if ((unsigned char *)p != base + idx + 8) {
                FAILF("rb_reserve(%zu) at offset %llu: pointer %p, expected %p", len, (unsigned long long)idx, p,
                      (void *)(base + idx + 8));
                fails++;
            }
            /* Every byte is writable, and lands in the file at the right
             * offset, also past the end of the ring (the second mapping). */
            fill_pattern(pat, len, iter);
            memcpy(p, pat, len);
            const int crosses = idx + 8 + len > cap;
            crossing += crosses;
            const int do_abort = crosses && iter % 4 == 0;
            if (crosses) {
                CHECK_EQ(tu_pread(f.path, HEADER_SIZE, disk, cap), 0);
                for (size_t j = 0; j < len; j++)
                    if (disk[(idx + 8 + j) & (cap - 1)] != pat[j]) {
                        FAILF("size %zu at offset %llu: byte %zu not in the file", len, (unsigned long long)idx, j);
                        fails++;
                        break;
                    }
            }
            rc = do_abort ? rb_abort(rb, p) : rb_commit(rb, p);
            if (rc != RB_OK) {
                FAILF("commit/abort of size %zu at offset %llu -> %d", len, (unsigned long long)idx, rc);
                fails++;
            }
            size_t got = 0;
            if (do_abort) {
                /* Skipped (the group head passes it), and zeroed on both
                 * sides of the end once a writer reclaims it: 1-byte
                 * messages after it until one needs its space, read back.
                 * Then only they are in the ring; every other byte, the
                 * aborted record's among them (all of its bytes past the
                 * end, those before it that no message took), is zero. */
                CHECK_EQ(rb_read(rb, out, sizeof out, &got), RB_EEMPTY);
                uint64_t h, t, t2;
                CHECK_EQ(rb_positions(rb, &h, &t), RB_OK);
                CHECK_EQ_U(h, t);
                const int k = tu_write_until_reclaim(rb, f.path, iter, 1, 1000);
                if (!CHECK(k > 0) || !CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), t)) {
                    fails++;
                    continue;
                }
                for (int j = 0; j < k; j++)
                    GET_CHECK(rb, iter + (uint64_t)j, 1);
                CHECK_EQ(rb_positions(rb, &h, &t2), RB_OK);
                CHECK_EQ_U(t2 - t, (uint64_t)k * rec_size(1));
                /* [t2, t + cap) is the free part. It holds all of the
                 * aborted record's bytes past the end (from B, the end it
                 * crosses, to t) unless a message took the first of them:
                 * only when the record starts less than 16 bytes before B
                 * (the messages end at most 16 bytes past the reclaim
                 * boundary before, at or below the record's start). */
                const uint64_t rec_start = t - rec_size(len), end_b = (t - 1) & ~(cap - 1);
                if (rec_start + 16 <= end_b)
                    CHECK(t2 <= end_b + cap);
                CHECK_EQ(tu_pread(f.path, HEADER_SIZE, disk, cap), 0);
                for (uint64_t j = t2; j < t + cap; j++)
                    if (disk[j & (cap - 1)] != 0) {
                        FAILF("aborted size %zu at offset %llu: byte at offset %llu of the data not zeroed", len,
                              (unsigned long long)idx, (unsigned long long)(j & (cap - 1)));
                        fails++;
                        break;
                    }
            } else if (iter % 2) {
                rc = rb_read(rb, out, sizeof out, &got);
                if (rc != RB_OK || got != len || memcmp(out, pat, len) != 0) {
                    FAILF("size %zu at offset %llu: read back -> %d, %zu bytes%s", len, (unsigned long long)idx, rc,
                          got, rc == RB_OK && got == len ? ", different" : "");
                    fails++;
                }
            } else {
                const void *q = NULL;
                rc = rb_peek(rb, &q, &got);
                if (rc != RB_OK || q != p || got != len || memcmp(q, pat, len) != 0) {
                    FAILF("size %zu at offset %llu: peek -> %d, %p (reserved %p), %zu bytes", len,
                          (unsigned long long)idx, rc, q, p, got);
                    fails++;
                }
                if (rc == RB_OK)
                    CHECK_EQ(rb_release(rb), RB_OK);
            }
        }
    }
    CHECK(crossing >= 900); /* about (sum of sizes) / 8 */
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

TEST(reservation_holds_back_later_messages)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    unsigned char buf[4096];
    size_t len, lens[4], n;
    const void *p;
    void *a = NULL;
    REQUIRE_EQ(rb_reserve(rb, 100, &a), RB_OK);
    CHECK_EQ(put(rb, 2, 200), RB_OK);
    CHECK_EQ(put(rb, 3, 300), RB_OK);
    /* FIFO: nothing is delivered past the outstanding reservation. */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
        CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 4, &n), RB_EEMPTY);
        CHECK_EQ(rb_peek(rb, &p, &len), RB_EEMPTY);
    }
    CHECK_EQ(rb_read_wait(rb, buf, sizeof buf, &len, 100 * MS), RB_ETIMEDOUT);
    CHECK_EQ(rb_peek_wait(rb, &p, &len, 50 * MS), RB_ETIMEDOUT);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 0);
    /* A blocked reader waits for the commit, then gets the reserved one. */
    struct call c;
    call_init(&c, rb, OP_READ_WAIT, -1);
    call_start(&c);
    WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1);
    sleep_ns(150 * MS);
    CHECK(!call_done(&c));
    make_msg(a, 100, 1);
    CHECK_EQ(rb_commit(rb, a), RB_OK);
    if (CALL_FINISH(&c, 5.0)) {
        CHECK_EQ(c.rc, RB_OK);
        CHECK(is_msg(c.buf, c.got, 1, 100));
    }
    GET_CHECK(rb, 2, 200);
    GET_CHECK(rb, 3, 300);
}

TEST(reservations_committed_out_of_order)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    unsigned char buf[4096];
    size_t len;
    /* Several orders of five reservations, one of them aborted. */
    static const int orders[][5] = {{2, 0, 4, 1, 3}, {4, 3, 2, 1, 0}, {1, 3, 0, 4, 2}, {0, 1, 2, 3, 4}};
    for (size_t o = 0; o < sizeof orders / sizeof orders[0]; o++) {
        void *r[5];
        const int aborted = (int)o % 5;
        for (int i = 0; i < 5; i++) {
            REQUIRE_EQ(rb_reserve(rb, 50 + 10 * (size_t)i, &r[i]), RB_OK);
            make_msg(r[i], 50 + 10 * (size_t)i, 10 * o + (uint64_t)i);
        }
        int committed[5] = {0};
        for (int k = 0; k < 5; k++) {
            const int i = orders[o][k];
            CHECK_EQ(i == aborted ? rb_abort(rb, r[i]) : rb_commit(rb, r[i]), RB_OK);
            committed[i] = 1;
            /* Everything up to the first outstanding one is readable, in
             * reservation order. */
            static int delivered[5];
            if (k == 0)
                memset(delivered, 0, sizeof delivered);
            for (int j = 0; j < 5 && committed[j]; j++) {
                if (delivered[j] || j == aborted)
                    continue;
                GET_CHECK(rb, 10 * o + (uint64_t)j, 50 + 10 * (size_t)j);
                delivered[j] = 1;
            }
            CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
        }
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, g_tail);
    }
}

TEST(reserve_full_and_size)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    void *p = WSENT;
    CHECK_EQ(rb_reserve(rb, 0, &p), RB_ESIZE);
    CHECK_EQ(rb_reserve(rb, 2049, &p), RB_ESIZE);
    CHECK_EQ(rb_reserve(rb, (size_t)-1, &p), RB_ESIZE);
    CHECK_EQ(rb_reserve(rb, 10, NULL), RB_EINVAL);
    CHECK_EQ(rb_reserve(NULL, 10, &p), RB_EINVAL);
    CHECK(p == WSENT);
    void *a = NULL, *b = NULL;
    REQUIRE_EQ(rb_reserve(rb, 2048, &a), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 2024, &b), RB_OK); /* 2032: 8 bytes left */
    CHECK_EQ(rb_reserve(rb, 1, &p), RB_EFULL);
    CHECK(p == WSENT);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail, 4088);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(rb_reserve(rb, 1, &p), RB_EFULL); /* until a reader passes it */
    unsigned char buf[16];
    size_t len;
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(rb_reserve(rb, 2048, &p), RB_OK);
    CHECK_EQ(rb_abort(rb, p), RB_OK);
    CHECK_EQ(rb_abort(rb, b), RB_OK);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

TEST(reserve_wait_waits_and_times_out)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    size_t fl[8];
    REQUIRE(fill_exact(f.rb, 0, fl, 8) == 2);
    void *p = WSENT;
    int64_t t0 = now_ns();
    CHECK_EQ(rb_reserve_wait(f.rb, 100, &p, 200 * MS), RB_ETIMEDOUT);
    int64_t dt = now_ns() - t0;
    CHECK(dt >= 200 * MS && dt < 200 * MS + 2 * SEC);
    CHECK(p == WSENT);
    unsigned char m[2000];
    make_msg(m, sizeof m, 9);
    struct call c;
    call_init(&c, f.rb, OP_RESERVE_WAIT, -1);
    c.msg = m;
    c.len = sizeof m;
    call_start(&c);
    WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1);
    sleep_ns(100 * MS);
    CHECK(!call_done(&c));
    GET_CHECK(f.rb, 0, fl[0]);
    if (CALL_FINISH(&c, 5.0)) {
        CHECK_EQ(c.rc, RB_OK);
        CHECK_EQ(c.fin_rc, RB_OK);
    }
    GET_CHECK(f.rb, 1, fl[1]);
    GET_CHECK(f.rb, 9, 2000);
}

/* ---- zero-copy reads --------------------------------------------------------------------- */

TEST(peek_and_release)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const void *p = PSENT;
    size_t len = 777;
    CHECK_EQ(rb_peek(rb, &p, &len), RB_EEMPTY);
    CHECK(p == PSENT);
    CHECK_EQ_U(len, 777);
    CHECK_EQ(rb_release(rb), RB_EINVAL);
    CHECK_EQ(rb_release(NULL), RB_EINVAL);
    CHECK_EQ(rb_peek(NULL, &p, &len), RB_EINVAL);
    CHECK_EQ(rb_peek(rb, NULL, &len), RB_EINVAL);
    CHECK_EQ(rb_peek(rb, &p, NULL), RB_EINVAL);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);

    CHECK_EQ(put(rb, 1, 300), RB_OK);
    CHECK_EQ(put(rb, 2, 40), RB_OK);
    for (int round = 0; round < 2; round++) {
        const uint64_t seq = 1 + (uint64_t)round;
        const size_t mlen = round ? 40 : 300;
        uint64_t h0 = round ? rec_size(300) : 0;
        REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
        CHECK(is_msg(p, len, seq, mlen));
        CHECK_EQ_U((uintptr_t)p % 8, 0);
        /* Nothing consumed yet; the reader holds the read turn. */
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, h0);
        CHECK_EQ_U(g_tail, rec_size(300) + rec_size(40));
        CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), writer_id(f.path));
        CHECK_EQ_U(tu_read_u32(f.path, OFF_RECLAIM_TURN), 0); /* writers are not held off */
        CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE + (off_t)h0), rec_word(mlen, 0, writer_id(f.path)));
        CHECK(is_msg(p, len, seq, mlen)); /* still there */
        CHECK_EQ(rb_release(rb), RB_OK);
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, h0 + rec_size(mlen));
        CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
        CHECK_EQ(rb_release(rb), RB_EINVAL);
    }
    /* Released records stay until a writer needs their space, and are
     * zeroed then; the free part is zero all along. */
    const uint64_t end = rec_size(300) + rec_size(40);
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), 0);
    CHECK_EQ(tu_data_nonzero(f.path, 4096, end, 4096), 0);
    CHECK_EQ(rb_peek(rb, &p, &len), RB_EEMPTY);
    CHECK_EQ(rb_release(rb), RB_EINVAL);
    const int k = tu_write_until_reclaim(rb, f.path, 10, 1000, 8);
    CHECK_EQ(k, 4); /* 3 fit in 4096 - 352 bytes */
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), end);
    CHECK_EQ(tu_data_nonzero(f.path, 4096, end + (uint64_t)k * rec_size(1000), end + 4096), 0);
    for (int i = 0; i < k; i++) {
        REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
        CHECK(is_msg(p, len, 10 + (uint64_t)i, 1000));
        CHECK_EQ(rb_release(rb), RB_OK);
    }
}

TEST(peek_wait_times_out_and_wakes)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    const void *p = PSENT;
    size_t len = 777;
    int64_t t0 = now_ns();
    CHECK_EQ(rb_peek_wait(f.rb, &p, &len, 150 * MS), RB_ETIMEDOUT);
    int64_t dt = now_ns() - t0;
    CHECK(dt >= 150 * MS && dt < 150 * MS + 2 * SEC);
    CHECK(p == PSENT);
    CHECK_EQ_U(len, 777);
    CHECK_EQ(rb_release(f.rb), RB_EINVAL);
    /* A message written by another thread while we wait. */
    unsigned char m[333];
    make_msg(m, sizeof m, 3);
    struct call w;
    call_init(&w, f.rb, OP_WRITE, 0);
    w.delay_ns = 100 * MS;
    w.msg = m;
    w.len = sizeof m;
    call_start(&w);
    t0 = now_ns();
    int rc = rb_peek_wait(f.rb, &p, &len, 10 * SEC);
    int64_t t1 = now_ns();
    CALL_FINISH(&w, 5.0);
    CHECK_EQ(w.rc, RB_OK);
    if (CHECK_EQ(rc, RB_OK)) {
        CHECK(is_msg(p, len, 3, sizeof m));
        CHECK(t1 >= w.t0 && t1 - w.t1 < 2 * SEC);
        CHECK_EQ(rb_release(f.rb), RB_OK);
    }
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

TEST(peek_skips_aborted_records)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const void *p;
    size_t len;
    void *a, *b;
    REQUIRE_EQ(rb_reserve(rb, 100, &a), RB_OK);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(put(rb, 1, 10), RB_OK);
    REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
    CHECK(is_msg(p, len, 1, 10));
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    /* Only aborted records: RB_EEMPTY, and their space comes back. */
    REQUIRE_EQ(rb_reserve(rb, 2048, &a), RB_OK);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(rb_peek(rb, &p, &len), RB_EEMPTY);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ(rb_release(rb), RB_EINVAL);
    /* An aborted record, then a reservation: skipped up to it. */
    REQUIRE_EQ(rb_reserve(rb, 30, &a), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 40, &b), RB_OK);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(rb_peek_wait(rb, &p, &len, 20 * MS), RB_ETIMEDOUT);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail - g_head, rec_size(40));
    make_msg(b, 40, 2);
    CHECK_EQ(rb_commit(rb, b), RB_OK);
    REQUIRE_EQ(rb_peek_wait(rb, &p, &len, 0), RB_OK);
    CHECK(is_msg(p, len, 2, 40));
    CHECK_EQ(rb_release(rb), RB_OK);
    /* rb_peek_wait woken by an abort followed by a commit. */
    struct call c;
    call_init(&c, rb, OP_PEEK_WAIT, -1);
    REQUIRE_EQ(rb_reserve(rb, 30, &a), RB_OK);
    call_start(&c);
    WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    sleep_ns(150 * MS);
    CHECK(!call_done(&c));
    CHECK_EQ(put(rb, 3, 33), RB_OK);
    if (CALL_FINISH(&c, 5.0)) {
        CHECK_EQ(c.rc, RB_OK);
        CHECK(is_msg(c.buf, c.got, 3, 33));
        CHECK_EQ(c.fin_rc, RB_OK);
    }
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

/* While a peek is outstanding, other readers do not get past it. */
TEST(peek_holds_the_read_turn)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    rb_ring *rb = f.rb;
    for (uint64_t s = 1; s <= 4; s++)
        CHECK_EQ(put(rb, s, 100 * s), RB_OK);
    const void *p;
    size_t len;
    REQUIRE_EQ(rb_peek(rb, &p, &len), RB_OK);
    CHECK(is_msg(p, len, 1, 100));

    /* Non-blocking reads on another handle give up quickly. */
    unsigned char buf[4096];
    size_t lens[4], n, l;
    const void *q;
    int64_t t0 = now_ns();
    CHECK_EQ(rb_read(h2, buf, sizeof buf, &l), RB_EEMPTY);
    int64_t dt = now_ns() - t0;
    if (dt >= 200 * MS)
        FAILF("rb_read took %.3f s to give up on a held read turn", secs(dt));
    CHECK_EQ(rb_read_many(h2, buf, sizeof buf, lens, 4, &n), RB_EEMPTY);
    CHECK_EQ(rb_peek(h2, &q, &l), RB_EEMPTY);
    CHECK_EQ(rb_read_wait(h2, buf, sizeof buf, &l, 0), RB_ETIMEDOUT);
    t0 = now_ns();
    CHECK_EQ(rb_read_wait(h2, buf, sizeof buf, &l, 100 * MS), RB_ETIMEDOUT);
    dt = now_ns() - t0;
    CHECK(dt >= 100 * MS && dt < 100 * MS + 2 * SEC);
    /* Writers are not held up. */
    CHECK_EQ(put(h2, 5, 500), RB_OK);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 0);

    /* Blocked readers, on another handle and on this one (other threads),
     * wait for the turn and then get the NEXT messages. */
    struct call c1, c2;
    call_init(&c1, h2, OP_READ_WAIT, -1);
    call_init(&c2, rb, OP_READ_MANY_WAIT, -1);
    /* Room for one of the messages 2 (200 bytes) or 3 (300), never both:
     * c2 must not take everything and leave c1 waiting forever. */
    c2.len = 450;
    call_start(&c1);
    WAIT_PARKED(f.path, OFF_TURN_WAITERS, 1);
    call_start(&c2);
    WAIT_PARKED(f.path, OFF_TURN_WAITERS, 2);
    sleep_ns(150 * MS);
    CHECK(!call_done(&c1));
    CHECK(!call_done(&c2));
    CHECK(is_msg(p, len, 1, 100)); /* undisturbed */
    CHECK_EQ(rb_release(rb), RB_OK);
    int got[6] = {0};
    if (CALL_FINISH(&c1, 5.0) && CHECK_EQ(c1.rc, RB_OK)) {
        for (uint64_t s = 2; s <= 5; s++)
            if (is_msg(c1.buf, c1.got, s, 100 * s))
                got[s]++;
    }
    if (CALL_FINISH(&c2, 5.0) && CHECK_EQ(c2.rc, RB_OK)) {
        size_t off = 0;
        for (size_t i = 0; i < c2.count; i++) {
            for (uint64_t s = 2; s <= 5; s++)
                if (is_msg(c2.buf + off, c2.rlens[i], s, 100 * s))
                    got[s]++;
            off += c2.rlens[i];
        }
    }
    CHECK_EQ(got[1], 0);
    CHECK_EQ(got[2], 1); /* whoever came first got message 2 */
    /* Any left over are read here, each exactly once. */
    while (rb_read(rb, buf, sizeof buf, &l) == RB_OK)
        for (uint64_t s = 2; s <= 5; s++)
            if (is_msg(buf, l, s, 100 * s))
                got[s]++;
    for (int s = 2; s <= 5; s++)
        CHECK_EQ(got[s], 1);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_TURN_WAITERS), 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
}

/* ---- fixes from the design review ------------------------------------------------- */

/* Closing a handle with a peek open gives the read turn back (the message
 * stays for the next reader) instead of leaving it taken in the file. */
TEST(close_with_an_open_peek_gives_the_turn_back)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    CHECK_EQ(put(f.rb, 1, 100), RB_OK);
    CHECK_EQ(put(f.rb, 2, 200), RB_OK);
    rb_ring *a;
    REQUIRE_EQ(rb_open(f.path, &a), RB_OK);
    const void *q;
    size_t len;
    REQUIRE_EQ(rb_peek(a, &q, &len), RB_OK);
    CHECK_EQ(rb_close(a), RB_OK);
    CHECK_EQ(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    GET_CHECK(f.rb, 1, 100);
    GET_CHECK(f.rb, 2, 200);
}

struct finisher {
    pthread_barrier_t *start;
    void *_Atomic *ptr;
    rb_ring *rb;
    int abort;
    long iterations;
    long ok;
};

static void *finisher_main(void *arg)
{
    struct finisher *w = arg;
    for (long i = 0; i < w->iterations; i++) {
        pthread_barrier_wait(w->start);
        void *p = atomic_load(w->ptr);
        if ((w->abort ? rb_abort(w->rb, p) : rb_commit(w->rb, p)) == RB_OK)
            w->ok++;
        pthread_barrier_wait(w->start);
    }
    return NULL;
}

/* A commit and an abort racing on one reservation: exactly one acts. */
TEST(racing_commit_and_abort_act_once)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    long iterations = (long)(20000 * env_double("RB_STRESS_SCALE", 1.0));
    if (iterations < 100)
        iterations = 100;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 3);
    void *_Atomic ptr = NULL;
    struct finisher w[2] = {{&start, &ptr, f.rb, 0, iterations, 0}, {&start, &ptr, f.rb, 1, iterations, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, finisher_main, &w[i]);
    long delivered = 0, bad = 0;
    unsigned char buf[64];
    for (long i = 0; i < iterations; i++) {
        void *p;
        if (rb_reserve(f.rb, 8, &p) != RB_OK) {
            bad++;
            p = NULL;
        } else
            memcpy(p, "racing!!", 8);
        atomic_store(&ptr, p);
        pthread_barrier_wait(&start); /* both finish it */
        pthread_barrier_wait(&start);
        size_t len;
        int rc = rb_read(f.rb, buf, sizeof buf, &len);
        if (rc == RB_OK)
            delivered += len == 8 && memcmp(buf, "racing!!", 8) == 0 ? 1 : 1000000;
        else if (rc != RB_EEMPTY)
            bad++;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    CHECK_EQ(bad, 0);
    CHECK_EQ(w[0].ok + w[1].ok, iterations); /* one winner per reservation */
    CHECK_EQ(delivered, w[0].ok);            /* delivered exactly when the commit won */
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

/* rb_peek_cancel ends a peek without consuming: the message stays at the
 * head and the turn is free for others. */
TEST(peek_cancel_keeps_the_message)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    CHECK_EQ(rb_peek_cancel(f.rb), RB_EINVAL);
    CHECK_EQ(rb_peek_cancel(NULL), RB_EINVAL);
    CHECK_EQ(put(f.rb, 1, 100), RB_OK);
    const void *q;
    size_t len;
    REQUIRE_EQ(rb_peek(f.rb, &q, &len), RB_OK);
    CHECK_EQ(rb_peek_cancel(f.rb), RB_OK);
    CHECK_EQ(rb_release(f.rb), RB_EINVAL); /* nothing outstanding any more */
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, 0);
    GET_CHECK(h2, 1, 100);
}

/* rb_data_region: the region every reserved and peeked payload lies in, at
 * the offset of its record; twice the capacity long, its halves the same
 * bytes (the double mapping). */
TEST(data_region_holds_every_payload)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const uint64_t cap = 4096;
    void *vbase = (void *)PSENT;
    size_t len = 777;
    CHECK_EQ(rb_data_region(NULL, &vbase, &len), RB_EINVAL);
    CHECK_EQ(rb_data_region(rb, NULL, &len), RB_EINVAL);
    CHECK_EQ(rb_data_region(rb, &vbase, NULL), RB_EINVAL);
    CHECK(vbase == (void *)PSENT);
    REQUIRE_EQ(rb_data_region(rb, &vbase, &len), RB_OK);
    CHECK_EQ_U(len, 2 * cap);
    unsigned char *base = vbase;
    /* The halves alias: a byte written through one reads through the other. */
    base[cap + 100] = 0x5a;
    CHECK_EQ_U(base[100], 0x5a);
    base[100] = 0;
    CHECK_EQ_U(base[cap + 100], 0);
    static const size_t sizes[] = {1, 100, 2048};
    for (uint64_t idx = 0; idx < cap; idx += 8 * 61) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            REQUIRE(advance_to(rb, idx));
            void *p = NULL;
            REQUIRE_EQ(rb_reserve(rb, sizes[s], &p), RB_OK);
            CHECK((unsigned char *)p == base + idx + 8);
            CHECK((unsigned char *)p + sizes[s] <= base + len);
            memset(p, 0x33, sizes[s]);
            REQUIRE_EQ(rb_commit(rb, p), RB_OK);
            const void *q = NULL;
            size_t qlen = 0;
            REQUIRE_EQ(rb_peek(rb, &q, &qlen), RB_OK);
            CHECK(q == p);
            CHECK_EQ_U(qlen, sizes[s]);
            CHECK_EQ(rb_release(rb), RB_OK);
        }
    }
}

/* ---- rb_peek_many ---------------------------------------------------------------------- */

/* A batch: arguments, max_count larger than what is there, positions from
 * head by record sizes, DISCARD records in the middle inside the range,
 * rb_release consuming everything (and counting it), rb_peek_cancel leaving
 * everything. */
TEST(peek_many_batches)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const void *ptrs[8];
    size_t lens[8], n = 777;
    uint64_t pos[8];
    /* Arguments. */
    CHECK_EQ(rb_peek_many(NULL, ptrs, lens, pos, 8, &n), RB_EINVAL);
    CHECK_EQ_U(n, 0);
    CHECK_EQ(rb_peek_many(rb, NULL, lens, pos, 8, &n), RB_EINVAL);
    CHECK_EQ(rb_peek_many(rb, ptrs, NULL, pos, 8, &n), RB_EINVAL);
    CHECK_EQ(rb_peek_many(rb, ptrs, lens, pos, 8, NULL), RB_EINVAL);
    CHECK_EQ(rb_peek_many(rb, ptrs, lens, pos, 8, &n), RB_EEMPTY);
    CHECK_EQ(rb_peek_many_wait(rb, ptrs, lens, pos, 8, &n, 0), RB_ETIMEDOUT);
    CHECK_EQ(put(rb, 1, 10), RB_OK);
    n = 777;
    CHECK_EQ(rb_peek_many(rb, NULL, NULL, NULL, 0, &n), RB_OK); /* nothing asked: no turn kept */
    CHECK_EQ_U(n, 0);
    CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    CHECK_EQ(rb_release(rb), RB_EINVAL);

    /* 1 is there; then an aborted record, 2, two aborted records, 3, and a
     * reservation still open (4) that ends the batch. */
    void *a, *b, *c, *d;
    REQUIRE_EQ(rb_reserve(rb, 50, &a), RB_OK);
    CHECK_EQ(rb_abort(rb, a), RB_OK);
    CHECK_EQ(put(rb, 2, 20), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 1, &b), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 70, &c), RB_OK);
    CHECK_EQ(rb_abort(rb, c), RB_OK);
    CHECK_EQ(rb_abort(rb, b), RB_OK);
    CHECK_EQ(put(rb, 3, 300), RB_OK);
    REQUIRE_EQ(rb_reserve(rb, 40, &d), RB_OK);
    uint64_t end3 = rec_size(10) + rec_size(50) + rec_size(20) + rec_size(1) + rec_size(70) + rec_size(300);
    struct rb_stats s0;
    REQUIRE_EQ(rb_stats(rb, &s0), RB_OK);
    for (int round = 0; round < 2; round++) {
        REQUIRE_EQ(rb_peek_many(rb, ptrs, lens, pos, 8, &n), RB_OK);
        REQUIRE(CHECK_EQ_U(n, 3));
        CHECK(is_msg(ptrs[0], lens[0], 1, 10));
        CHECK(is_msg(ptrs[1], lens[1], 2, 20));
        CHECK(is_msg(ptrs[2], lens[2], 3, 300));
        CHECK_EQ_U(pos[0], 0);
        CHECK_EQ_U(pos[1], rec_size(10) + rec_size(50));
        CHECK_EQ_U(pos[2], pos[1] + rec_size(20) + rec_size(1) + rec_size(70));
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, 0); /* nothing consumed */
        CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), writer_id(f.path));
        CHECK_EQ_U(tu_read_u32(f.path, OFF_RECLAIM_TURN), 0);
        if (round == 0)
            CHECK_EQ(rb_peek_cancel(rb), RB_OK); /* all left */
    }
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(rb_release(rb), RB_EINVAL);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, end3); /* the DISCARD records between them too */
    CHECK_EQ_U(tu_read_u32(f.path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    struct rb_stats s1;
    REQUIRE_EQ(rb_stats(rb, &s1), RB_OK);
    CHECK_EQ_U(s1.read - s0.read, 3);
    CHECK_EQ_U(s1.read_bytes - s0.read_bytes, 330);
    /* Released records stay until a writer reclaims them (the ring never
     * filled: head, the reclaim boundary, is still 0). Past the open
     * reservation's record everything is zero. */
    CHECK_EQ_U(tu_read_u64(f.path, OFF_HEAD), 0);
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE), rec_word(10, 0, writer_id(f.path)));
    CHECK_EQ_U(tu_read_u64(f.path, HEADER_SIZE + (off_t)end3), rec_word(40, REC_BUSY, writer_id(f.path)));
    CHECK_EQ(tu_data_nonzero(f.path, 4096, end3 + rec_size(40), 4096), 0);
    /* The reservation at the head: nothing to peek until it is committed. */
    CHECK_EQ(rb_peek_many(rb, ptrs, lens, NULL, 8, &n), RB_EEMPTY);
    make_msg(d, 40, 4);
    CHECK_EQ(rb_commit(rb, d), RB_OK);
    CHECK_EQ(put(rb, 5, 8), RB_OK);
    CHECK_EQ(put(rb, 6, 9), RB_OK);
    /* max_count stops the batch; positions may be NULL. */
    REQUIRE_EQ(rb_peek_many(rb, ptrs, lens, NULL, 2, &n), RB_OK);
    CHECK_EQ_U(n, 2);
    CHECK(is_msg(ptrs[0], lens[0], 4, 40));
    CHECK(is_msg(ptrs[1], lens[1], 5, 8));
    CHECK_EQ(rb_release(rb), RB_OK);
    REQUIRE_EQ(rb_peek_many(rb, ptrs, lens, pos, 1, &n), RB_OK);
    CHECK_EQ_U(n, 1);
    CHECK(is_msg(ptrs[0], lens[0], 6, 9));
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(pos[0], g_head);
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

/* A batch across the end of the ring: every payload contiguous, positions
 * keep growing past the capacity; a full ring is one batch. */
TEST(peek_many_across_the_end)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    const uint64_t cap = 4096;
    REQUIRE(advance_to(rb, cap - 3 * 64));
    CHECK_EQ(positions(rb), RB_OK);
    const uint64_t h0 = g_head;
    /* 64-byte records (56-byte payloads): 3 before the end, more after. */
    for (uint64_t s = 1; s <= 10; s++)
        REQUIRE_EQ(put(rb, s, 56), RB_OK);
    const void *ptrs[16];
    size_t lens[16], n;
    uint64_t pos[16];
    REQUIRE_EQ(rb_peek_many(rb, ptrs, lens, pos, 16, &n), RB_OK);
    REQUIRE(CHECK_EQ_U(n, 10));
    for (size_t i = 0; i < n; i++) {
        CHECK(is_msg(ptrs[i], lens[i], i + 1, 56));
        CHECK_EQ_U(pos[i], h0 + 64 * i);
    }
    CHECK(pos[9] > cap);
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, h0 + 640);
    CHECK_EQ_U(g_head, g_tail);
    /* A full ring (64 records of 64 bytes): one batch, no more. */
    for (uint64_t s = 1; s <= cap / 64; s++)
        REQUIRE_EQ(put(rb, s, 56), RB_OK);
    CHECK_EQ(put(rb, 99, 1), RB_EFULL);
    const void *all[128];
    size_t alens[128];
    uint64_t apos[128];
    REQUIRE_EQ(rb_peek_many(rb, all, alens, apos, 128, &n), RB_OK);
    REQUIRE(CHECK_EQ_U(n, cap / 64));
    for (size_t i = 0; i < n; i++)
        CHECK(is_msg(all[i], alens[i], i + 1, 56));
    CHECK_EQ(rb_release(rb), RB_OK);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ_U(g_head, apos[0] + cap);
}

/* The batch keeps the read turn until rb_release: another handle reads
 * nothing meanwhile, then gets what follows the batch. */
TEST(peek_many_holds_the_read_turn)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    rb_ring *rb = f.rb;
    for (uint64_t s = 1; s <= 3; s++)
        CHECK_EQ(put(rb, s, 100), RB_OK);
    const void *ptrs[2];
    size_t lens[2], n, l;
    REQUIRE_EQ(rb_peek_many(rb, ptrs, lens, NULL, 2, &n), RB_OK);
    CHECK_EQ_U(n, 2);
    unsigned char buf[4096];
    CHECK_EQ(rb_read(h2, buf, sizeof buf, &l), RB_EEMPTY);
    CHECK_EQ(rb_peek_many(h2, ptrs, lens, NULL, 2, &n), RB_EEMPTY);
    CHECK_EQ(rb_release(rb), RB_OK);
    GET_CHECK(h2, 3, 100);
}

/* A blocking rb_peek_many_wait times out, and wakes on a write from
 * another thread. */
TEST(peek_many_wait_times_out_and_wakes)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    const void *ptrs[4];
    size_t lens[4], n = 777;
    int64_t t0 = now_ns();
    CHECK_EQ(rb_peek_many_wait(f.rb, ptrs, lens, NULL, 4, &n, 100 * MS), RB_ETIMEDOUT);
    int64_t dt = now_ns() - t0;
    CHECK(dt >= 100 * MS && dt < 100 * MS + 2 * SEC);
    CHECK_EQ_U(n, 0);
    CHECK_EQ(rb_release(f.rb), RB_EINVAL);
    unsigned char m[333];
    make_msg(m, sizeof m, 3);
    struct call w;
    call_init(&w, f.rb, OP_WRITE, 0);
    w.delay_ns = 100 * MS;
    w.msg = m;
    w.len = sizeof m;
    call_start(&w);
    uint64_t pos[4];
    int rc = rb_peek_many_wait(f.rb, ptrs, lens, pos, 4, &n, 10 * SEC);
    CALL_FINISH(&w, 5.0);
    CHECK_EQ(w.rc, RB_OK);
    if (CHECK_EQ(rc, RB_OK)) {
        CHECK_EQ_U(n, 1);
        CHECK(is_msg(ptrs[0], lens[0], 3, sizeof m));
        CHECK_EQ_U(pos[0], 0);
        CHECK_EQ(rb_release(f.rb), RB_OK);
    }
    CHECK_EQ(positions(f.rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}
