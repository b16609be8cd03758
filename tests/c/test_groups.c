/*
 * test_groups.c - consumer groups (issue 12): every group gets every
 * message, the default group and RB_NO_DEFAULT_GROUP (RB_ENOGROUP),
 * rb_group_remove, RB_EGROUPS at the 65th group, ephemeral groups vanishing
 * with their handle, overwrite rings (RB_ELOST and rb_take_lost's exact
 * counts), name validation; and multi-threaded fan-out runs (1 writer,
 * 3 groups of 2 reader threads; an overwriting writer and readers that
 * validate every message) so that TSan checks the per-group protocol.
 *
 * RB_STRESS_SCALE (default 1) scales the message counts of the runs;
 * RB_STRESS_TIMEOUT (seconds, default 120) bounds each.
 */
#include "runner.h"
#include "testutil.h"

#include "ringbuf.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>

#define NOGROUP_FLAGS RB_NO_DEFAULT_GROUP

static int create(struct fx *f, size_t cap, unsigned flags)
{
    f->dir = tu_mkdtemp();
    if (f->dir == NULL)
        return 0;
    snprintf(f->path, sizeof f->path, "%s/ring", f->dir);
    int rc = rb_create(f->path, cap, flags, &f->rb);
    if (rc != RB_OK) {
        FAILF("rb_create(%s, %#x) -> %d (%s)", f->path, flags, rc, rb_strerror(rc));
        f->rb = NULL;
        return 0;
    }
    return 1;
}

static rb_ring *open_group(const char *path, const char *group, unsigned flags)
{
    rb_ring *rb = NULL;
    int rc = rb_open_group(path, group, flags, &rb);
    if (rc != RB_OK) {
        FAILF("rb_open_group(%s, %s, %#x) -> %d (%s)", path, group ? group : "NULL", flags, rc, rb_strerror(rc));
        return NULL;
    }
    return rb;
}

/* rb_groups into a static array; returns the count (-1 on error). */
static struct rb_group_info g_info[RB_GROUPS_MAX + 8];
static int list_groups(rb_ring *rb)
{
    size_t n = 0;
    int rc = rb_groups(rb, g_info, sizeof g_info / sizeof g_info[0], &n);
    if (rc != RB_OK) {
        FAILF("rb_groups -> %d (%s)", rc, rb_strerror(rc));
        return -1;
    }
    return (int)n;
}

/* The entry of the named group ("" with kind: the default or an ephemeral
 * one) in g_info after list_groups, or NULL. */
static const struct rb_group_info *find_group(int n, const char *name, uint32_t kind)
{
    for (int i = 0; i < n; i++)
        if (strcmp(g_info[i].name, name) == 0 && g_info[i].kind == kind)
            return &g_info[i];
    return NULL;
}

/* ---- basics ------------------------------------------------------------------ */

TEST(status_codes_of_groups)
{
    CHECK_EQ(RB_ELOST, -12);
    CHECK_EQ(RB_ENOGROUP, -13);
    CHECK_EQ(RB_EGROUPS, -14);
    const int codes[] = {RB_ELOST, RB_ENOGROUP, RB_EGROUPS};
    for (size_t i = 0; i < 3; i++) {
        const char *m = rb_strerror(codes[i]);
        CHECK(m != NULL && strcmp(m, rb_strerror(12345)) != 0 && strcmp(m, rb_strerror(-100)) != 0);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(m, rb_strerror(codes[j])) != 0);
    }
}

TEST(default_group_reads_as_before)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, 0));
    CHECK_EQ(rb_ring_flags(f.rb), 0);
    AUTO_RING(r);
    REQUIRE((r = open_group(f.path, NULL, 0)) != NULL); /* rb_open_group(NULL) is rb_open */
    for (uint64_t s = 0; s < 3; s++)
        CHECK_EQ(put(f.rb, s, 100 + s), RB_OK);
    CHECK(GET_CHECK(r, 0, 100));
    CHECK(GET_CHECK(f.rb, 1, 101)); /* the creator is a member of the default group too */
    CHECK(GET_CHECK(r, 2, 102));
    int n = list_groups(f.rb);
    REQUIRE_EQ(n, 1);
    CHECK_EQ(g_info[0].kind, RB_GROUP_KIND_DEFAULT);
    CHECK_STR_EQ(g_info[0].name, "");
    CHECK_EQ(g_info[0].members, 2);
    CHECK_EQ(g_info[0].backlog_messages, 0);
    CHECK_EQ(g_info[0].counted, 1);
    CHECK_EQ(g_info[0].pid, 0);
    CHECK(positions(r) == RB_OK && g_head == g_tail && g_tail == rec_size(100) + rec_size(101) + rec_size(102));
}

TEST(no_default_group_reads_enogroup_writes_always_succeed)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, RB_NO_DEFAULT_GROUP));
    CHECK_EQ(rb_ring_flags(f.rb), RB_NO_DEFAULT_GROUP);
    unsigned char buf[4096];
    size_t len = 0, lens[4], count = 7;
    const void *p = PSENT;
    /* with no group at all, nobody is owed a message: the ring never fills */
    for (uint64_t s = 0; s < 50; s++)
        CHECK_EQ(put(f.rb, s, rb_max_message_size(f.rb)), RB_OK);
    CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &len), RB_ENOGROUP);
    int64_t t0 = now_ns();
    CHECK_EQ(rb_read_wait(f.rb, buf, sizeof buf, &len, 2 * SEC), RB_ENOGROUP); /* at once */
    CHECK_EQ(rb_read_many(f.rb, buf, sizeof buf, lens, 4, &count), RB_ENOGROUP);
    CHECK_EQ(rb_read_many_wait(f.rb, buf, sizeof buf, lens, 4, &count, -1), RB_ENOGROUP);
    CHECK_EQ(rb_peek(f.rb, &p, &len), RB_ENOGROUP);
    CHECK_EQ(rb_peek_wait(f.rb, &p, &len, 2 * SEC), RB_ENOGROUP);
    CHECK(now_ns() - t0 < SEC);
    CHECK_EQ(rb_release(f.rb), RB_EINVAL); /* nothing was peeked */
    /* opening the default group never fails; reading through it does */
    AUTO_RING(r);
    REQUIRE((r = open_group(f.path, NULL, 0)) != NULL);
    CHECK_EQ(rb_read(r, buf, sizeof buf, &len), RB_ENOGROUP);
    CHECK_EQ(list_groups(f.rb), 0);
    /* a group made now starts at the next message, or at the oldest still there */
    AUTO_RING(late);
    AUTO_RING(early);
    REQUIRE((late = open_group(f.path, "late", 0)) != NULL);
    REQUIRE((early = open_group(f.path, "early", RB_START_EARLIEST)) != NULL);
    CHECK_EQ(rb_read(late, buf, sizeof buf, &len), RB_EEMPTY);
    /* freeing is lazy: each write found no room and freed every record
     * before it, so the oldest still there is the last */
    CHECK(GET_CHECK(early, 49, rb_max_message_size(f.rb)));
    CHECK_EQ(put(f.rb, 1000, 10), RB_OK);
    CHECK(GET_CHECK(late, 1000, 10));
    CHECK_EQ(list_groups(f.rb), 2);
}

TEST(two_groups_each_get_every_message)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, 0));
    AUTO_RING(a);
    AUTO_RING(b);
    REQUIRE((a = open_group(f.path, "a", 0)) != NULL);
    REQUIRE((b = open_group(f.path, "b", 0)) != NULL);
    /* three groups: default (f.rb), a, b; 4 records of 1008 bytes fill the ring */
    for (uint64_t s = 0; s < 4; s++)
        CHECK_EQ(put(f.rb, s, 1000), RB_OK);
    CHECK(GET_CHECK(a, 0, 1000));
    CHECK(GET_CHECK(a, 1, 1000));
    CHECK(GET_CHECK(a, 2, 1000));
    CHECK_EQ(put(f.rb, 4, 1000), RB_EFULL); /* b and the default group have read nothing */
    CHECK(GET_CHECK(b, 0, 1000));
    CHECK_EQ(put(f.rb, 4, 1000), RB_EFULL); /* the default group has not read 0 */
    CHECK(GET_CHECK(f.rb, 0, 1000));
    CHECK_EQ(put(f.rb, 4, 1000), RB_OK); /* message 0: read by every group, freed */
    int n = list_groups(f.rb);
    REQUIRE_EQ(n, 3);
    const struct rb_group_info *ga = find_group(n, "a", RB_GROUP_KIND_DURABLE);
    const struct rb_group_info *gb = find_group(n, "b", RB_GROUP_KIND_DURABLE);
    const struct rb_group_info *gd = find_group(n, "", RB_GROUP_KIND_DEFAULT);
    REQUIRE(ga != NULL && gb != NULL && gd != NULL);
    CHECK_EQ(ga->backlog_messages, 2);
    CHECK_EQ(ga->backlog_bytes, 2000);
    CHECK_EQ(ga->position, 3 * rec_size(1000));
    CHECK_EQ(gb->backlog_messages, 4);
    CHECK_EQ(gb->backlog_bytes, 4000);
    CHECK_EQ(gb->position, rec_size(1000));
    CHECK_EQ(gd->backlog_messages, 4);
    CHECK_EQ(ga->members, 1);
    CHECK_EQ(ga->lost + gb->lost + gd->lost, 0);
    CHECK(positions(b) == RB_OK && g_head == rec_size(1000) && g_tail == 5 * rec_size(1000));
    for (uint64_t s = 1; s < 5; s++)
        CHECK(GET_CHECK(b, s, 1000));
    for (uint64_t s = 1; s < 5; s++)
        CHECK(GET_CHECK(f.rb, s, 1000));
    /* now a is the slowest (3 and 4 unread): 2 more fit, whichever group lags */
    int w = 0;
    while (w < 10 && put(f.rb, 5 + (uint64_t)w, 1000) == RB_OK)
        w++;
    CHECK_EQ(w, 2);
    CHECK(GET_CHECK(a, 3, 1000));
    CHECK_EQ(put(f.rb, 7, 1000), RB_OK);
    CHECK_EQ(put(f.rb, 8, 1000), RB_EFULL);
}

/* ---- the durable group outlives its members ---------------------------------------------------- */

TEST(durable_group_keeps_its_position_while_no_member_is_attached)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 8192, RB_NO_DEFAULT_GROUP));
    rb_ring *a = open_group(f.path, "audit", 0);
    REQUIRE(a != NULL);
    for (uint64_t s = 0; s < 5; s++)
        CHECK_EQ(put(f.rb, s, 500), RB_OK);
    CHECK(GET_CHECK(a, 0, 500));
    CHECK(GET_CHECK(a, 1, 500));
    rb_close(a);
    int n = list_groups(f.rb);
    REQUIRE_EQ(n, 1);
    CHECK_EQ(g_info[0].members, 0);
    CHECK_EQ(g_info[0].backlog_messages, 3);
    CHECK_STR_EQ(g_info[0].name, "audit");
    /* it holds writers back while nobody is attached */
    int w = 0;
    while (w < 100 && put(f.rb, 100 + (uint64_t)w, 500) == RB_OK)
        w++;
    CHECK_EQ(w, (int)((8192 - 3 * rec_size(500)) / rec_size(500)));
    /* and resumes where it was, whatever RB_START_EARLIEST says */
    AUTO_RING(b);
    REQUIRE((b = open_group(f.path, "audit", RB_START_EARLIEST)) != NULL);
    for (uint64_t s = 2; s < 5; s++)
        CHECK(GET_CHECK(b, s, 500));
    CHECK(GET_CHECK(b, 100, 500));
}

TEST(group_remove)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, 0));
    AUTO_RING(a);
    AUTO_RING(a2);
    REQUIRE((a = open_group(f.path, "a", 0)) != NULL);
    REQUIRE((a2 = open_group(f.path, "a", 0)) != NULL);
    for (uint64_t s = 0; s < 3; s++)
        CHECK_EQ(put(f.rb, s, 1000), RB_OK);
    CHECK(GET_CHECK(f.rb, 0, 1000));
    CHECK(GET_CHECK(f.rb, 1, 1000));
    CHECK(GET_CHECK(f.rb, 2, 1000));
    CHECK_EQ(put(f.rb, 3, 1000), RB_OK);
    CHECK_EQ(put(f.rb, 4, 1000), RB_EFULL); /* group a holds them */
    CHECK_EQ(rb_group_remove(f.rb, "b"), RB_ENOGROUP);
    CHECK_EQ(rb_group_remove(a2, "a"), RB_OK); /* a member may remove its own group */
    CHECK_EQ(rb_group_remove(f.rb, "a"), RB_ENOGROUP);
    unsigned char buf[2048];
    size_t len = 0;
    CHECK_EQ(rb_read(a, buf, sizeof buf, &len), RB_ENOGROUP);
    CHECK_EQ(rb_read_wait(a2, buf, sizeof buf, &len, -1), RB_ENOGROUP);
    /* its unread messages no longer hold writers back */
    CHECK_EQ(put(f.rb, 4, 1000), RB_OK);
    CHECK_EQ(list_groups(f.rb), 1);
    /* a new group of that name is another group: the old members stay out */
    AUTO_RING(a3);
    REQUIRE((a3 = open_group(f.path, "a", 0)) != NULL);
    CHECK_EQ(put(f.rb, 5, 10), RB_OK);
    CHECK(GET_CHECK(a3, 5, 10));
    CHECK_EQ(rb_read(a, buf, sizeof buf, &len), RB_ENOGROUP);
    CHECK(GET_CHECK(f.rb, 3, 1000));
    CHECK(GET_CHECK(f.rb, 4, 1000));
    CHECK(GET_CHECK(f.rb, 5, 10));
    /* the default group is removed with NULL */
    CHECK_EQ(rb_group_remove(a3, NULL), RB_OK);
    CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &len), RB_ENOGROUP);
    CHECK_EQ(rb_group_remove(a3, NULL), RB_ENOGROUP);
    int n = list_groups(f.rb);
    CHECK_EQ(n, 1);
    CHECK(find_group(n, "a", RB_GROUP_KIND_DURABLE) != NULL);
    /* removing is refused on a closed handle */
    CHECK_EQ(rb_shutdown(a), RB_OK);
    CHECK_EQ(rb_group_remove(a, "a"), RB_ECLOSED);
}

TEST(egroups_at_the_65th_group)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, 0)); /* the default group is the first */
    char name[16];
    for (int i = 1; i < RB_GROUPS_MAX; i++) {
        snprintf(name, sizeof name, "g%d", i);
        rb_ring *r = open_group(f.path, name, 0);
        REQUIRE(r != NULL);
        rb_close(r);
    }
    CHECK_EQ(list_groups(f.rb), RB_GROUPS_MAX);
    rb_ring *r = NULL;
    CHECK_EQ(rb_open_group(f.path, "one-too-many", 0, &r), RB_EGROUPS);
    CHECK(r == NULL);
    CHECK_EQ(rb_open_group(f.path, NULL, RB_GROUP_EPHEMERAL, &r), RB_EGROUPS);
    /* joining a group that exists is not making one */
    CHECK_EQ(rb_open_group(f.path, "g7", 0, &r), RB_OK);
    rb_close(r);
    r = NULL;
    /* rb_groups reports every group, also past max */
    size_t count = 0;
    struct rb_group_info two[2];
    CHECK_EQ(rb_groups(f.rb, two, 2, &count), RB_OK);
    CHECK_EQ(count, RB_GROUPS_MAX);
    CHECK_EQ(rb_groups(f.rb, NULL, 0, &count), RB_OK);
    CHECK_EQ(count, RB_GROUPS_MAX);
    /* a removed group's entry is free again */
    CHECK_EQ(rb_group_remove(f.rb, "g5"), RB_OK);
    CHECK_EQ(rb_open_group(f.path, NULL, RB_GROUP_EPHEMERAL, &r), RB_OK);
    rb_ring *r2 = NULL;
    CHECK_EQ(rb_open_group(f.path, "again", 0, &r2), RB_EGROUPS);
    rb_close(r); /* the ephemeral group goes with its handle */
    CHECK_EQ(rb_open_group(f.path, "again", 0, &r2), RB_OK);
    rb_close(r2);
    CHECK_EQ(list_groups(f.rb), RB_GROUPS_MAX);
}

TEST(ephemeral_group_vanishes_on_close)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, RB_NO_DEFAULT_GROUP));
    rb_ring *e = open_group(f.path, NULL, RB_GROUP_EPHEMERAL);
    REQUIRE(e != NULL);
    int n = list_groups(f.rb);
    REQUIRE_EQ(n, 1);
    CHECK_EQ(g_info[0].kind, RB_GROUP_KIND_EPHEMERAL);
    CHECK_STR_EQ(g_info[0].name, "");
    CHECK_EQ(g_info[0].pid, (uint32_t)getpid());
    CHECK_EQ(g_info[0].members, 1);
    /* it holds writers back while it is open */
    int w = 0;
    while (w < 100 && put(f.rb, (uint64_t)w, 1000) == RB_OK)
        w++;
    CHECK_EQ(w, 4);
    CHECK(GET_CHECK(e, 0, 1000));
    CHECK_EQ(put(f.rb, 4, 1000), RB_OK);
    CHECK_EQ(put(f.rb, 5, 1000), RB_EFULL);
    /* two ephemeral groups of one process are two groups */
    AUTO_RING(e2);
    REQUIRE((e2 = open_group(f.path, NULL, RB_GROUP_EPHEMERAL | RB_START_EARLIEST)) != NULL);
    CHECK_EQ(list_groups(f.rb), 2);
    CHECK(GET_CHECK(e2, 1, 1000)); /* the oldest message not freed */
    rb_close(e);
    n = list_groups(f.rb);
    REQUIRE_EQ(n, 1);
    CHECK_EQ(g_info[0].backlog_messages, 3);
    rb_close(e2);
    e2 = NULL;
    CHECK_EQ(list_groups(f.rb), 0);
    /* nobody is owed anything now */
    for (uint64_t s = 0; s < 20; s++)
        CHECK_EQ(put(f.rb, 10 + s, 1000), RB_OK);
}

TEST(ephemeral_group_of_a_dead_process_vanishes)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, RB_NO_DEFAULT_GROUP));
    CHECK_EQ(rb_set_stall_timeout(f.rb, 20 * MS), RB_OK);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rb_ring *e = NULL;
        if (rb_open_group(f.path, NULL, RB_GROUP_EPHEMERAL, &e) != RB_OK)
            _exit(3);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* the dead subscriber's group is still in the table: writers find it
     * dead within about the stall timeout */
    int w = 0;
    int64_t t0 = now_ns();
    for (uint64_t s = 0; s < 8; s++) {
        unsigned char b[1000];
        make_msg(b, sizeof b, s);
        CHECK_EQ(rb_write_wait(f.rb, b, sizeof b, 2 * SEC), RB_OK);
        w++;
    }
    CHECK_EQ(w, 8);
    CHECK(now_ns() - t0 < SEC);
    CHECK_EQ(list_groups(f.rb), 0);
}

/* ---- overwrite rings ------------------------------------------------------------------------ */

TEST(overwrite_elost_and_take_lost_exact)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, RB_OVERWRITE | RB_NO_DEFAULT_GROUP));
    CHECK_EQ(rb_ring_flags(f.rb), RB_OVERWRITE | RB_NO_DEFAULT_GROUP);
    AUTO_RING(g);
    AUTO_RING(e);
    REQUIRE((g = open_group(f.path, "g", 0)) != NULL);
    REQUIRE((e = open_group(f.path, NULL, RB_GROUP_EPHEMERAL)) != NULL);
    uint64_t lost = 99;
    CHECK_EQ(rb_take_lost(g, &lost), RB_OK);
    CHECK_EQ(lost, 0);
    for (uint64_t s = 0; s < 4; s++)
        CHECK_EQ(put(f.rb, s, 1000), RB_OK); /* 4 records of 1008: full */
    CHECK(GET_CHECK(g, 0, 1000));
    CHECK_EQ(put(f.rb, 4, 1000), RB_OK); /* reclaims 0: e loses it */
    CHECK_EQ(put(f.rb, 5, 1000), RB_OK); /* reclaims 1: both lose it */
    for (uint64_t s = 6; s < 9; s++)
        CHECK_EQ(put(f.rb, s, 1000), RB_OK); /* reclaims 2, 3, 4 */
    unsigned char buf[2048];
    size_t len = 0;
    CHECK_EQ(rb_read(e, buf, sizeof buf, &len), RB_ELOST);
    CHECK_EQ(rb_take_lost(e, &lost), RB_OK);
    CHECK_EQ(lost, 5);
    CHECK_EQ(rb_take_lost(e, &lost), RB_OK);
    CHECK_EQ(lost, 0); /* taken */
    CHECK(GET_CHECK(e, 5, 1000)); /* then the oldest message still there */
    size_t lens[8], count = 0;
    CHECK_EQ(rb_read_many(g, buf, sizeof buf, lens, 8, &count), RB_ELOST);
    CHECK_EQ(count, 0);
    CHECK_EQ(rb_take_lost(g, &lost), RB_OK);
    CHECK_EQ(lost, 4);
    CHECK(GET_CHECK(g, 5, 1000));
    int n = list_groups(f.rb);
    REQUIRE_EQ(n, 2);
    const struct rb_group_info *gg = find_group(n, "g", RB_GROUP_KIND_DURABLE);
    const struct rb_group_info *ge = find_group(n, "", RB_GROUP_KIND_EPHEMERAL);
    REQUIRE(gg != NULL && ge != NULL);
    CHECK_EQ(gg->lost, 4);
    CHECK_EQ(ge->lost, 5);
    CHECK_EQ(gg->backlog_messages, 3);
    /* the writer never waits in an overwrite ring */
    for (uint64_t s = 9; s < 200; s++)
        CHECK_EQ(put(f.rb, s, 1 + s * 13 % 2048), RB_OK);
    CHECK_EQ(rb_read_wait(g, buf, sizeof buf, &len, SEC), RB_ELOST);
    CHECK_EQ(rb_take_lost(g, &lost), RB_OK);
    /* what it lost and what is still there: every message since 6 */
    uint64_t rest = 0;
    while (rb_read(g, buf, sizeof buf, &len) == RB_OK)
        rest++;
    CHECK_EQ(lost + rest, 200 - 6);
    CHECK(rest >= 2 && rest < 20);
    CHECK_EQ(rb_take_lost(NULL, &lost), RB_EINVAL);
    CHECK_EQ(rb_take_lost(g, NULL), RB_EINVAL);
}

/* A reader of an overwrite ring waits as any reader does: it gives up at
 * its timeout, sleeps meanwhile (no CPU), and wakes for a message. */
TEST(overwrite_ring_waits_end_at_their_timeout_and_sleep)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, RB_OVERWRITE | RB_NO_DEFAULT_GROUP));
    AUTO_RING(g);
    REQUIRE((g = open_group(f.path, "g", 0)) != NULL);
    for (int history = 0; history < 2; history++) {
        if (history) { /* the same after messages came and went */
            for (uint64_t s = 0; s < 10; s++)
                CHECK_EQ(put(f.rb, s, 1000), RB_OK);
            unsigned char buf[2048];
            size_t len;
            CHECK_EQ(rb_read(g, buf, sizeof buf, &len), RB_ELOST);
            while (rb_read(g, buf, sizeof buf, &len) == RB_OK)
                ;
        }
        const enum op ops[] = {OP_READ_WAIT, OP_READ_MANY_WAIT};
        for (size_t i = 0; i < 2; i++) {
            struct call c;
            call_init(&c, g, ops[i], 200 * MS);
            REQUIRE(call_start(&c));
            if (!call_join(&c, 3.0)) {
                FAILF("%s(200 ms) on an empty overwrite ring has not returned after 3 s", op_names[ops[i]]);
                rb_shutdown(g); /* it must return now; then stop */
                call_join(&c, 10.0);
                return;
            }
            CHECK_EQ(c.rc, RB_ETIMEDOUT);
            CHECK(c.t1 - c.t0 >= 190 * MS);
            if (c.cpu_ns > 60 * MS)
                FAILF("%s: %.0f ms of CPU in a 200 ms wait (it spins instead of sleeping)", op_names[ops[i]],
                      (double)c.cpu_ns / 1e6);
        }
    }
    /* and a waiting reader gets a message written meanwhile */
    struct call c;
    call_init(&c, g, OP_READ_WAIT, 5 * SEC);
    REQUIRE(call_start(&c));
    sleep_ns(50 * MS);
    CHECK_EQ(put(f.rb, 77, 100), RB_OK);
    if (!call_join(&c, 6.0)) {
        rb_shutdown(g);
        call_join(&c, 10.0);
        FAILF("rb_read_wait did not return");
        return;
    }
    CHECK_EQ(c.rc, RB_OK);
    CHECK(is_msg(c.buf, c.got, 77, 100));
}

/* ---- names and flags -------------------------------------------------------------------------- */

TEST(names_and_flags_validated)
{
    AUTO_FX(f);
    REQUIRE(create(&f, 4096, 0));
    char longest[RB_GROUP_NAME_MAX + 2];
    memset(longest, 'n', sizeof longest);
    longest[RB_GROUP_NAME_MAX + 1] = '\0'; /* 64 bytes: one too many */
    rb_ring *r = WSENT;
    CHECK_EQ(rb_open_group(f.path, "", 0, &r), RB_EINVAL);
    CHECK_EQ(rb_open_group(f.path, longest, 0, &r), RB_EINVAL);
    CHECK_EQ(rb_open_group(f.path, "x", RB_GROUP_EPHEMERAL, &r), RB_EINVAL);
    CHECK_EQ(rb_open_group(f.path, "x", 0x80u, &r), RB_EINVAL);
    CHECK_EQ(rb_open_group(f.path, NULL, 0x80u, &r), RB_EINVAL);
    CHECK_EQ(rb_open_group(NULL, "x", 0, &r), RB_EINVAL);
    CHECK_EQ(rb_open_group(f.path, "x", 0, NULL), RB_EINVAL);
    CHECK(r == WSENT);
    CHECK_EQ(rb_group_remove(f.rb, ""), RB_EINVAL);
    CHECK_EQ(rb_group_remove(f.rb, longest), RB_EINVAL);
    CHECK_EQ(rb_group_remove(NULL, "x"), RB_EINVAL);
    CHECK_EQ(list_groups(f.rb), 1); /* nothing was made */
    longest[RB_GROUP_NAME_MAX] = '\0'; /* 63 bytes: the longest */
    REQUIRE_EQ(rb_open_group(f.path, longest, 0, &r), RB_OK);
    rb_close(r);
    /* UTF-8 names, compared byte for byte */
    REQUIRE_EQ(rb_open_group(f.path, "gr\xc3\xbcppe", 0, &r), RB_OK);
    rb_close(r);
    int n = list_groups(f.rb);
    CHECK_EQ(n, 3);
    CHECK(find_group(n, longest, RB_GROUP_KIND_DURABLE) != NULL);
    CHECK(find_group(n, "gr\xc3\xbcppe", RB_GROUP_KIND_DURABLE) != NULL);
    /* rb_groups' arguments */
    size_t count = 0;
    CHECK_EQ(rb_groups(NULL, g_info, 4, &count), RB_EINVAL);
    CHECK_EQ(rb_groups(f.rb, g_info, 4, NULL), RB_EINVAL);
    CHECK_EQ(rb_groups(f.rb, NULL, 4, &count), RB_EINVAL);
    CHECK_EQ(rb_groups_sized(f.rb, g_info, 4, &count, 0), RB_EINVAL);
    /* a shorter (older) struct gets its own fields and nothing past them */
    struct {
        struct rb_group_info head;
        unsigned char guard[64];
    } small[3];
    memset(small, 0xAB, sizeof small);
    CHECK_EQ(rb_groups_sized(f.rb, &small[0].head, 1, &count, offsetof(struct rb_group_info, position)), RB_OK);
    CHECK_EQ(count, 3);
    const unsigned char *after = (const unsigned char *)&small[0].head + offsetof(struct rb_group_info, position);
    CHECK(after[0] == 0xAB && after[7] == 0xAB);
    /* rb_create's flags */
    rb_ring *c = NULL;
    CHECK_EQ(rb_create(tu_path(f.dir, "bad"), 4096, 0x80u, &c), RB_EINVAL);
    CHECK(c == NULL);
    CHECK_EQ(rb_ring_flags(NULL), 0);
}

/* ---- fan-out runs (threads: TSan sees the protocol) ------------------------------------------------ */

#define FAN_GROUPS 3
#define FAN_READERS 2

struct fan {
    char path[512];
    uint64_t n;            /* messages */
    size_t cap;
    int overwrite;
    _Atomic uint32_t *seen; /* FAN_GROUPS * n */
    _Atomic uint64_t got[FAN_GROUPS], lost[FAN_GROUPS];
    _Atomic uint64_t errors;
    atomic_int writer_done;
    int64_t deadline;
};

struct fan_reader {
    struct fan *fan;
    int group, id;
};

/* A message: u64 seq, u64 FNV-1a of the rest, then bytes from seq; its
 * length (16 .. cap/2) from seq. */
static size_t fan_len(const struct fan *fan, uint64_t seq)
{
    uint64_t x = mix64(seq * 0x9E3779B97F4A7C15ull + 1);
    size_t max = fan->cap / 2;
    return (x & 15) == 0 ? max - (size_t)(x >> 8) % 64 : 16 + (size_t)(x >> 8) % 300;
}

static void fan_make(unsigned char *b, size_t len, uint64_t seq)
{
    fill_pattern(b + 16, len - 16, seq);
    uint64_t h = fnv1a(FNV_OFFSET, b + 16, len - 16);
    memcpy(b, &seq, 8);
    memcpy(b + 8, &h, 8);
}

static void fan_error(struct fan *fan, const char *what, uint64_t a, uint64_t b)
{
    if (atomic_fetch_add(&fan->errors, 1) < 10)
        FAILF("%s (%llu, %llu)", what, (unsigned long long)a, (unsigned long long)b);
}

static void *fan_writer(void *arg)
{
    struct fan *fan = arg;
    rb_ring *w = NULL;
    if (rb_open_group(fan->path, NULL, 0, &w) != RB_OK) { /* the default group: absent, writes only */
        fan_error(fan, "writer: rb_open_group", 0, 0);
        atomic_store(&fan->writer_done, 1);
        return NULL;
    }
    unsigned char *b = malloc(fan->cap);
    for (uint64_t s = 0; s < fan->n && now_ns() < fan->deadline; s++) {
        size_t len = fan_len(fan, s);
        fan_make(b, len, s);
        int rc = rb_write_wait(w, b, len, 10 * SEC);
        if (rc != RB_OK) {
            fan_error(fan, "writer: rb_write_wait failed (rc, seq)", (uint64_t)(-rc), s);
            break;
        }
    }
    free(b);
    rb_close(w);
    atomic_store(&fan->writer_done, 1);
    return NULL;
}

static void *fan_reader_main(void *arg)
{
    struct fan_reader *me = arg;
    struct fan *fan = me->fan;
    char name[16];
    snprintf(name, sizeof name, "fan%d", me->group);
    rb_ring *r = NULL;
    if (rb_open_group(fan->path, name, 0, &r) != RB_OK) {
        fan_error(fan, "reader: rb_open_group", (uint64_t)me->group, (uint64_t)me->id);
        return NULL;
    }
    unsigned char *b = malloc(fan->cap);
    size_t lens[16];
    uint64_t last = UINT64_MAX;
    unsigned turn = (unsigned)me->id;
    while (now_ns() < fan->deadline) {
        uint64_t total = atomic_load(&fan->got[me->group]) + atomic_load(&fan->lost[me->group]);
        if (total >= fan->n)
            break;
        size_t count = 0, len = 0;
        int rc;
        if (turn++ % 2) {
            rc = rb_read_wait(r, b, fan->cap, &len, 20 * MS);
            lens[0] = len;
            count = rc == RB_OK;
        } else {
            rc = rb_read_many_wait(r, b, fan->cap, lens, 16, &count, 20 * MS);
        }
        if (rc == RB_ETIMEDOUT)
            continue;
        if (rc == RB_ELOST) {
            uint64_t n = 0;
            rb_take_lost(r, &n);
            if (!fan->overwrite || n == 0)
                fan_error(fan, "RB_ELOST (lossless ring?, count)", (uint64_t)fan->overwrite, n);
            atomic_fetch_add(&fan->lost[me->group], n);
            continue;
        }
        if (rc != RB_OK) {
            fan_error(fan, "reader: read failed (rc, group)", (uint64_t)(-rc), (uint64_t)me->group);
            break;
        }
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            const unsigned char *m = b + off;
            off += lens[i];
            uint64_t seq, h;
            if (lens[i] < 16) {
                fan_error(fan, "short message (len, group)", lens[i], (uint64_t)me->group);
                continue;
            }
            memcpy(&seq, m, 8);
            memcpy(&h, m + 8, 8);
            if (seq >= fan->n || lens[i] != fan_len(fan, seq) || fnv1a(FNV_OFFSET, m + 16, lens[i] - 16) != h) {
                fan_error(fan, "torn or corrupt message (seq, len)", seq, lens[i]);
                continue;
            }
            if (last != UINT64_MAX && seq <= last)
                fan_error(fan, "out of order within a reader (seq, last)", seq, last);
            last = seq;
            atomic_fetch_add(&fan->seen[(size_t)me->group * fan->n + seq], 1);
        }
        atomic_fetch_add(&fan->got[me->group], count);
    }
    free(b);
    rb_close(r);
    return NULL;
}

static void fan_run(size_t cap, int overwrite, uint64_t n)
{
    AUTO_FX(f);
    REQUIRE(create(&f, cap, RB_NO_DEFAULT_GROUP | (overwrite ? RB_OVERWRITE : 0)));
    struct fan *fan = calloc(1, sizeof *fan);
    REQUIRE(fan != NULL);
    snprintf(fan->path, sizeof fan->path, "%s", f.path);
    fan->n = n;
    fan->cap = cap;
    fan->overwrite = overwrite;
    fan->deadline = now_ns() + (int64_t)(env_double("RB_STRESS_TIMEOUT", 120.0) * 1e9);
    fan->seen = calloc((size_t)FAN_GROUPS * n, sizeof *fan->seen);
    REQUIRE(fan->seen != NULL);
    for (int g = 0; g < FAN_GROUPS; g++) { /* made before the first message */
        char name[16];
        snprintf(name, sizeof name, "fan%d", g);
        rb_ring *r = open_group(f.path, name, 0);
        REQUIRE(r != NULL);
        rb_close(r);
    }
    pthread_t w, rd[FAN_GROUPS * FAN_READERS];
    struct fan_reader args[FAN_GROUPS * FAN_READERS];
    for (int i = 0; i < FAN_GROUPS * FAN_READERS; i++) {
        args[i] = (struct fan_reader){fan, i / FAN_READERS, i % FAN_READERS};
        REQUIRE(pthread_create(&rd[i], NULL, fan_reader_main, &args[i]) == 0);
    }
    REQUIRE(pthread_create(&w, NULL, fan_writer, fan) == 0);
    pthread_join(w, NULL);
    for (int i = 0; i < FAN_GROUPS * FAN_READERS; i++)
        pthread_join(rd[i], NULL);
    CHECK_EQ(atomic_load(&fan->errors), 0);
    for (int g = 0; g < FAN_GROUPS; g++) {
        uint64_t got = atomic_load(&fan->got[g]), lost = atomic_load(&fan->lost[g]);
        if (got + lost != n)
            FAILF("group fan%d: %llu received + %llu reported lost != %llu written (timed out)", g,
                  (unsigned long long)got, (unsigned long long)lost, (unsigned long long)n);
    }
    uint64_t lost_total = 0;
    for (int g = 0; g < FAN_GROUPS; g++) {
        uint64_t dup = 0, missing = 0;
        for (uint64_t s = 0; s < n; s++) {
            uint32_t c = atomic_load(&fan->seen[(size_t)g * n + s]);
            dup += c > 1;
            missing += c == 0;
        }
        CHECK_EQ(dup, 0);
        if (!overwrite) {
            CHECK_EQ(missing, 0);
            CHECK_EQ(atomic_load(&fan->got[g]), n);
            CHECK_EQ(atomic_load(&fan->lost[g]), 0);
        } else {
            /* every message received or reported lost, exactly */
            CHECK_EQ(missing, atomic_load(&fan->lost[g]));
            CHECK_EQ(atomic_load(&fan->got[g]) + atomic_load(&fan->lost[g]), n);
        }
        lost_total += atomic_load(&fan->lost[g]);
    }
    int ng = list_groups(f.rb);
    CHECK_EQ(ng, FAN_GROUPS);
    CHECK(positions(f.rb) == RB_OK);
    for (int i = 0; i < ng; i++) {
        CHECK_EQ(g_info[i].position, g_tail);
        CHECK_EQ(g_info[i].backlog_messages, 0);
        CHECK_EQ(g_info[i].members, 0);
        CHECK_EQ(g_info[i].lost, atomic_load(&fan->lost[g_info[i].name[3] - '0']));
    }
    CHECK(g_tail > 100 * cap); /* wrapped many times */
    if (verbose())
        fprintf(stdout, "  fan-out %s: %llu messages, %.1f wraps, %llu lost in all\n",
                overwrite ? "overwrite" : "lossless", (unsigned long long)n, (double)g_tail / (double)cap,
                (unsigned long long)lost_total);
    free(fan->seen);
    free(fan);
}

TEST(fanout_stress_lossless)
{
    fan_run(8192, 0, (uint64_t)(200000 * env_double("RB_STRESS_SCALE", 1.0)) + 2000);
}

TEST(fanout_stress_overwrite)
{
    fan_run(8192, 1, (uint64_t)(200000 * env_double("RB_STRESS_SCALE", 1.0)) + 2000);
}
