/*
 * test_api.c - unit tests of every public function of ringbuf.h and of the
 * status codes each one can return, single-threaded.
 */
#include "runner.h"
#include "testutil.h"

#include "ringbuf.h"

#include <limits.h>
#include <sys/wait.h>

/* ---- fixtures ------------------------------------------------------------ */

#define CLOSE(r) (rb_close(r), (r) = NULL)

/* A recognisable non-NULL pointer that must come back untouched. */
#define SENTINEL ((rb_ring *)(uintptr_t)0x5e5e5e5e)

/* Is the data region of the ring file at path all zero in [from, to)
 * (positions, taken modulo capacity)? */
static int data_zero(const char *path, uint64_t cap, uint64_t from, uint64_t to)
{
    size_t n;
    unsigned char *f = tu_slurp(path, &n);
    if (f == NULL || n != HEADER_SIZE + cap) {
        free(f);
        return 0;
    }
    int ok = 1;
    for (uint64_t p = from; p < to; p++)
        if (f[HEADER_SIZE + (p & (cap - 1))] != 0) {
            ok = 0;
            break;
        }
    free(f);
    return ok;
}

/* ---- version and status messages ----------------------------------------- */

TEST(version)
{
    CHECK_EQ(rb_version(), RB_VERSION_NUMBER);
    CHECK_EQ(RB_VERSION_NUMBER, RB_VERSION_MAJOR * 10000 + RB_VERSION_MINOR * 100 + RB_VERSION_PATCH);
    CHECK_EQ(RB_FORMAT_VERSION, 4);
}

/* Every member of enum rb_status: its value and its exact message (csrc/
 * status.c). The values are ABI and the binding shows the messages: a
 * change here must be deliberate. */
TEST(status_codes_have_stable_values_and_messages)
{
    static const struct {
        const char *name;
        int code, value;
        const char *text;
    } st[] = {
        {"RB_OK", RB_OK, 0, "success"},
        {"RB_EFULL", RB_EFULL, -1, "ring buffer is full"},
        {"RB_EEMPTY", RB_EEMPTY, -2, "ring buffer is empty"},
        {"RB_ESIZE", RB_ESIZE, -3, "message size is 0 or larger than the maximum message size"},
        {"RB_ECLOSED", RB_ECLOSED, -4, "ring buffer is closed"},
        {"RB_ETIMEDOUT", RB_ETIMEDOUT, -5, "timed out"},
        {"RB_ECORRUPT", RB_ECORRUPT, -6, "not a valid ring buffer file (damaged, forged or not a ring)"},
        {"RB_ETRUNC", RB_ETRUNC, -7, "buffer too small for the message"},
        {"RB_EINVAL", RB_EINVAL, -8, "invalid argument"},
        {"RB_ESYS", RB_ESYS, -9, "system call failed (see errno)"},
        {"RB_EINTR", RB_EINTR, -10, "interrupted by a signal"},
        /* RB_FORMAT_VERSION is pinned to 4 by the version test. */
        {"RB_EVERSION", RB_EVERSION, -11, "ring file of another format version than this library's (4)"},
        {"RB_ELOST", RB_ELOST, -12,
         "messages were lost: an overwrite ring's writers reclaimed them before this consumer group read them"},
        {"RB_ENOGROUP", RB_ENOGROUP, -13, "no such consumer group (removed, or the ring has no default group)"},
        /* RB_GROUPS_MAX is 64 (ringbuf.h). */
        {"RB_EGROUPS", RB_EGROUPS, -14, "no room for another consumer group (64 per ring)"},
    };
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
        if (st[i].code != st[i].value)
            FAILF("%s is %d, expected %d", st[i].name, st[i].code, st[i].value);
        const char *m = rb_strerror(st[i].code);
        if (m == NULL || strcmp(m, st[i].text) != 0)
            FAILF("rb_strerror(%s) is \"%s\", expected \"%s\"", st[i].name, m ? m : "(null)", st[i].text);
    }
    /* The codes are 0 .. -14 with no gaps: one past either end is unknown. */
    static const int unknown[] = {1, -15, 2, -100, 12345, INT_MAX, INT_MIN, INT_MIN + 1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *m = rb_strerror(unknown[i]);
        if (!CHECK(m != NULL))
            continue;
        CHECK(m[0] != '\0');
        CHECK_STR_EQ(m, "unknown ring buffer status code");
    }
}

TEST(strerror_every_code)
{
    static const int codes[] = {RB_OK,       RB_EFULL,  RB_EEMPTY, RB_ESIZE, RB_ECLOSED, RB_ETIMEDOUT,
                                RB_ECORRUPT, RB_ETRUNC, RB_EINVAL, RB_ESYS,  RB_EINTR,   RB_EVERSION,
                                RB_ELOST,    RB_ENOGROUP, RB_EGROUPS};
    const size_t n = sizeof codes / sizeof codes[0];
    /* The values themselves: status_codes_have_stable_values_and_messages. */
    const char *unknown = rb_strerror(1);
    REQUIRE(unknown != NULL);
    CHECK(unknown[0] != '\0');
    for (size_t i = 0; i < n; i++) {
        const char *m = rb_strerror(codes[i]);
        if (!CHECK(m != NULL))
            continue;
        CHECK(m[0] != '\0');
        CHECK(strcmp(m, unknown) != 0);
        CHECK(m == rb_strerror(codes[i])); /* static */
        for (size_t j = 0; j < i; j++) {
            const char *o = rb_strerror(codes[j]);
            if (o != NULL && strcmp(m, o) == 0)
                FAILF("codes %d and %d share the message \"%s\"", codes[i], codes[j], m);
        }
    }
    static const int others[] = {1, 2, -15, -16, 100, -100, 12345, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        const char *m = rb_strerror(others[i]);
        if (!CHECK(m != NULL))
            continue;
        CHECK(m[0] != '\0');
        for (size_t j = 0; j < n; j++)
            if (strcmp(m, rb_strerror(codes[j])) == 0)
                FAILF("unknown code %d reads like code %d: \"%s\"", others[i], codes[j], m);
    }
}

/* ---- the file layout ------------------------------------------------------ */

/* testutil.h's layout table is the one the C tests read and patch files
 * with; each entry must be the row of docs/format.md it names (the library
 * is held to the same numbers by csrc/internal.h's static asserts). */
TEST(layout_table_matches_docs_format_md)
{
    size_t n = 0;
    unsigned char *raw = tu_slurp(RB_FORMAT_MD, &n);
    if (raw == NULL) {
        FAILF("cannot read %s", RB_FORMAT_MD);
        return;
    }
    char *doc = malloc(n + 1);
    memcpy(doc, raw, n);
    doc[n] = '\0';
    free(raw);
    static const struct {
        int off, size;
        const char *field;
    } rows[] = {
        {OFF_MAGIC, 8, "magic"},
        {OFF_VERSION, 4, "version"},
        {OFF_HEADER_SIZE, 4, "header_size"},
        {OFF_CAPACITY, 8, "capacity"},
        {OFF_MAX_MESSAGE, 8, "max_message"},
        {OFF_STATE, 4, "state"},
        {OFF_FLAGS, 4, "flags"},
        {OFF_CREATED_NS, 8, "created_ns"},
        {OFF_SLOT_COUNT, 4, "slot_count"},
        {OFF_SLOT_SIZE, 4, "slot_size"},
        {OFF_TAIL, 8, "tail"},
        {OFF_HEAD, 8, "head"},
        {OFF_RECLAIM_TURN, 4, "reclaim_turn"},
        {OFF_TURN_SEQ, 4, "turn_seq"},
        {OFF_TURN_WAITERS, 4, "turn_waiters"},
        {OFF_DATA_SEQ, 4, "data_seq"},
        {OFF_DATA_WAITERS, 4, "data_waiters"},
        {OFF_SPACE_SEQ, 4, "space_seq"},
        {OFF_SPACE_WAITERS, 4, "space_waiters"},
        {OFF_SLOTS_USED, 4, "slots_used"},
        {OFF_GROUPS_USED, 4, "groups_used"},
        {SLOT_OFF_GEN, 4, "gen"}, /* offsets in a slot */
        {SLOT_OFF_PID, 4, "pid"},
        {SLOT_OFF_COUNT_OWN, 128, "count_own[16]"},
        {SLOT_OFF_COUNT_SHARED, 128, "count_shared[16]"},
        {SLOT_OFF_GROUP, 4, "group"},
        {SLOT_OFF_GROUP_GEN, 4, "group_gen"},
        {GROUP_OFF_HEAD, 8, "group head"}, /* offsets in a group entry */
        {GROUP_OFF_TURN, 4, "turn"},
        {GROUP_OFF_GEN, 4, "gen"},
        {GROUP_OFF_LOST_PENDING, 8, "lost_pending"},
        {GROUP_OFF_LOST, 8, "lost"},
        {GROUP_OFF_OWNER, 4, "owner"},
        {GROUP_OFF_KIND, 4, "kind"},
        {GROUP_OFF_CREATED_NS, 8, "created_ns"},
        {GROUP_OFF_NAME, 64, "name"},
    };
    char want[256];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(want, sizeof want, "\n| %d | %d | `%s` |", rows[i].off, rows[i].size, rows[i].field);
        if (strstr(doc, want) == NULL)
            FAILF("docs/format.md has no row \"%s\"", want + 1);
    }
    snprintf(want, sizeof want, "\n| %d | %d | slot table: %d slots of %d bytes", (int)OFF_SLOTS,
             (int)(SLOT_COUNT * SLOT_SIZE), (int)SLOT_COUNT, (int)SLOT_SIZE);
    if (strstr(doc, want) == NULL)
        FAILF("docs/format.md has no row \"%s\"", want + 1);
    snprintf(want, sizeof want, "\n| %d | %d | group table: %d entries of %d bytes", (int)OFF_GROUPS,
             (int)(GROUP_COUNT * GROUP_SIZE), (int)GROUP_COUNT, (int)GROUP_SIZE);
    if (strstr(doc, want) == NULL)
        FAILF("docs/format.md has no row \"%s\"", want + 1);
    snprintf(want, sizeof want, "\n| %d | capacity | data region", (int)HEADER_SIZE);
    if (strstr(doc, want) == NULL)
        FAILF("docs/format.md has no row \"%s\"", want + 1);
    snprintf(want, sizeof want, "| `state` | `0x%08x`", STATE_READY);
    CHECK(strstr(doc, want) != NULL);
    snprintf(want, sizeof want, "bit %d `BUSY`", __builtin_ctz(REC_BUSY));
    CHECK(strstr(doc, want) != NULL);
    snprintf(want, sizeof want, "bit %d `DISCARD`", __builtin_ctz(REC_DISCARD));
    CHECK(strstr(doc, want) != NULL);
    free(doc);
}

/* ---- rb_create ------------------------------------------------------------- */

TEST(create_capacity_rounding)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    static const struct {
        size_t size;
        size_t cap;
    } cases[] = {
        {1, 4096},       {100, 4096},      {4095, 4096},       {4096, 4096},           {4097, 8192},
        {8191, 8192},    {8192, 8192},     {8193, 16384},      {65535, 65536},         {65536, 65536},
        {100000, 131072}, {1 << 20, 1 << 20}, {(1 << 20) + 1, 2 << 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "r%zu", i);
        const char *path = tu_path(dir, name);
        AUTO_RING(rb);
        int rc = rb_create(path, cases[i].size, 0, &rb);
        if (!CHECK_EQ(rc, RB_OK))
            continue;
        CHECK_EQ_U(rb_capacity(rb), cases[i].cap);
        CHECK_EQ_U(rb_max_message_size(rb), cases[i].cap / 2);
        CHECK_EQ(tu_file_size(path), HEADER_SIZE + (off_t)cases[i].cap);
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, 0);
        CHECK_EQ_U(g_tail, 0);
        /* The rounded capacity is the usable one: a max-size message and a
         * record filling the rest both fit. */
        CHECK_EQ(put(rb, i, cases[i].cap / 2), RB_OK);
        CHECK_EQ(put(rb, i + 1, cases[i].cap / 2 - 16), RB_OK);
        CHECK_EQ(put(rb, i + 2, 1), RB_EFULL);
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_tail, cases[i].cap);
        GET_CHECK(rb, i, cases[i].cap / 2);
        GET_CHECK(rb, i + 1, cases[i].cap / 2 - 16);
    }
}

TEST(create_header_fields)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t before = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 10000, 0, &rb), RB_OK);
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t after = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    size_t n;
    unsigned char *f = tu_slurp(path, &n);
    REQUIRE(f != NULL);
    CHECK_EQ_U(n, HEADER_SIZE + 16384);
    CHECK_MEM_EQ(f + OFF_MAGIC, "RINGBUF\0", 8);
    uint32_t u32;
    uint64_t u64;
    memcpy(&u32, f + OFF_VERSION, 4);
    CHECK_EQ_U(u32, RB_FORMAT_VERSION);
    memcpy(&u32, f + OFF_HEADER_SIZE, 4);
    CHECK_EQ_U(u32, HEADER_SIZE);
    memcpy(&u64, f + OFF_CAPACITY, 8);
    CHECK_EQ_U(u64, 16384);
    memcpy(&u64, f + OFF_MAX_MESSAGE, 8);
    CHECK_EQ_U(u64, 8192);
    memcpy(&u32, f + OFF_STATE, 4);
    CHECK_EQ_U(u32, STATE_READY);
    memcpy(&u32, f + OFF_FLAGS, 4);
    CHECK_EQ_U(u32, 0);
    memcpy(&u64, f + OFF_CREATED_NS, 8);
    CHECK(u64 >= before && u64 <= after);
    memcpy(&u64, f + OFF_TAIL, 8);
    CHECK_EQ_U(u64, 0);
    memcpy(&u64, f + OFF_HEAD, 8);
    CHECK_EQ_U(u64, 0);
    memcpy(&u32, f + OFF_RECLAIM_TURN, 4);
    CHECK_EQ_U(u32, 0);
    memcpy(&u32, f + OFF_SLOT_COUNT, 4);
    CHECK_EQ_U(u32, SLOT_COUNT);
    memcpy(&u32, f + OFF_SLOT_SIZE, 4);
    CHECK_EQ_U(u32, SLOT_SIZE);
    /* The creating handle owns slot 0, generation 1; no other slot taken. */
    memcpy(&u32, f + OFF_SLOTS_USED, 4);
    CHECK_EQ_U(u32, 1);
    memcpy(&u32, f + slot_off(0, SLOT_OFF_GEN), 4);
    CHECK_EQ_U(u32, 1);
    memcpy(&u32, f + slot_off(0, SLOT_OFF_PID), 4);
    CHECK_EQ_U(u32, (uint32_t)getpid());
    /* ... and is a member of the default group (index 0 + 1, its gen 1). */
    memcpy(&u32, f + slot_off(0, SLOT_OFF_GROUP), 4);
    CHECK_EQ_U(u32, 1);
    memcpy(&u32, f + slot_off(0, SLOT_OFF_GROUP_GEN), 4);
    CHECK_EQ_U(u32, 1);
    /* The default group, entry 0 of the group table: exists (gen 1), kind
     * default, made now, head 0, turn free, unnamed; one entry used. */
    memcpy(&u32, f + OFF_GROUPS_USED, 4);
    CHECK_EQ_U(u32, 1);
    memcpy(&u32, f + OFF_GROUPS + GROUP_OFF_GEN, 4);
    CHECK_EQ_U(u32, 1);
    memcpy(&u32, f + OFF_GROUPS + GROUP_OFF_KIND, 4);
    CHECK_EQ_U(u32, RB_GROUP_KIND_DEFAULT);
    memcpy(&u64, f + OFF_GROUPS + GROUP_OFF_CREATED_NS, 8);
    CHECK(u64 >= before && u64 <= after);
    /* The file's identity: random, so (almost surely) not all zero. */
    static const unsigned char zero_id[16];
    CHECK(memcmp(f + OFF_FILE_ID, zero_id, 16) != 0);
    /* Everything else (padding, reserved words, the rest of the slot table,
     * the data region) is zero. */
    size_t nonzero = 0;
    for (size_t i = OFF_FILE_ID + 16; i < n; i++)
        if (f[i] != 0 && i != OFF_TAIL && !(i >= OFF_HEAD && i < OFF_RECLAIM_TURN + 4) &&
            !(i >= OFF_SLOTS_USED && i < OFF_GROUPS_USED + 4) &&
            !(i >= (size_t)slot_off(0, SLOT_OFF_GEN) && i < (size_t)slot_off(0, SLOT_OFF_PID) + 4) &&
            !(i >= (size_t)slot_off(0, SLOT_OFF_GROUP) && i < (size_t)slot_off(0, SLOT_OFF_GROUP_GEN) + 4) &&
            !(i >= OFF_GROUPS + GROUP_OFF_GEN && i < OFF_GROUPS + GROUP_OFF_GEN + 4) &&
            !(i >= OFF_GROUPS + GROUP_OFF_KIND && i < OFF_GROUPS + GROUP_OFF_CREATED_NS + 8))
            nonzero++;
    CHECK_EQ_U(nonzero, 0);
    free(f);
}

TEST(create_invalid_arguments)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    rb_ring *rb = SENTINEL;
    CHECK_EQ(rb_create(path, 0, 0, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, RB_MAX_CAPACITY + 1, 0, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, SIZE_MAX, 0, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, SIZE_MAX, RB_REMOVE, &rb), RB_EINVAL);
    /* 0x2 and 0x4 are RB_OVERWRITE and RB_NO_DEFAULT_GROUP: 0x8 is the
     * first unknown bit. */
    CHECK_EQ(rb_create(path, 4096, 0x8u, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, 4096, RB_REMOVE | 0x8u, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, 4096, RB_OVERWRITE | RB_NO_DEFAULT_GROUP | 0x10u, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, 4096, 0x80000000u, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, 4096, ~0u, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(NULL, 4096, 0, &rb), RB_EINVAL);
    CHECK_EQ(rb_create(path, 4096, 0, NULL), RB_EINVAL);
    CHECK_EQ(rb_create_mode(path, 4096, 0, 010000, &rb), RB_EINVAL);
    CHECK_EQ(rb_create_mode(path, 4096, 0, 0170600, &rb), RB_EINVAL);
    CHECK_EQ(rb_create_mode(path, 4096, 0, ~0u, &rb), RB_EINVAL);
    CHECK_EQ(rb_create_mode(path, 0, 0, 0600, &rb), RB_EINVAL);
    CHECK_EQ(rb_create_mode(path, 4096, 0x8u, 0600, &rb), RB_EINVAL);
    CHECK_EQ(rb_create_mode(NULL, 4096, 0, 0600, &rb), RB_EINVAL);
    CHECK_EQ(rb_create_mode(path, 4096, 0, 0600, NULL), RB_EINVAL);
    CHECK(rb == SENTINEL);
    /* Nothing was created, not even a temporary file. */
    char list[1024];
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 0);
    if (list[0])
        FAILF("left in the directory: %s", list);
}

TEST(create_existing_path_fails_eexist)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    /* An arbitrary file. */
    const char *path = tu_path(dir, "file");
    static const char text[] = "not a ring, leave me alone\n";
    REQUIRE(tu_write_file(path, text, sizeof text - 1) == 0);
    rb_ring *rb = SENTINEL;
    errno = 0;
    CHECK_EQ(rb_create(path, 4096, 0, &rb), RB_ESYS);
    CHECK_EQ(errno, EEXIST);
    errno = 0;
    CHECK_EQ(rb_create_mode(path, 4096, 0, 0644, &rb), RB_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK(rb == SENTINEL);
    size_t n;
    unsigned char *f = tu_slurp(path, &n);
    REQUIRE(f != NULL);
    CHECK_EQ_U(n, sizeof text - 1);
    CHECK_MEM_EQ(f, text, sizeof text - 1);
    free(f);

    /* A live ring with messages in it. */
    const char *rpath = tu_path(dir, "ring");
    AUTO_RING(r1);
    REQUIRE_EQ(rb_create(rpath, 4096, 0, &r1), RB_OK);
    CHECK_EQ(put(r1, 1, 100), RB_OK);
    CHECK_EQ(put(r1, 2, 200), RB_OK);
    size_t n0;
    unsigned char *before = tu_slurp(rpath, &n0);
    REQUIRE(before != NULL);
    errno = 0;
    CHECK_EQ(rb_create(rpath, 8192, 0, &rb), RB_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK(rb == SENTINEL);
    size_t n1;
    unsigned char *after = tu_slurp(rpath, &n1);
    REQUIRE(after != NULL);
    CHECK_EQ_U(n1, n0);
    if (n1 == n0)
        CHECK_MEM_EQ(after, before, n0);
    free(before);
    free(after);
    GET_CHECK(r1, 1, 100);
    GET_CHECK(r1, 2, 200);

    /* A directory and a (dangling) symbolic link are existing paths too. */
    const char *sub = tu_path(dir, "sub");
    REQUIRE(mkdir(sub, 0700) == 0);
    errno = 0;
    CHECK_EQ(rb_create(sub, 4096, 0, &rb), RB_ESYS);
    CHECK_EQ(errno, EEXIST);
    const char *link = tu_path(dir, "dangling");
    REQUIRE(symlink("nowhere", link) == 0);
    errno = 0;
    CHECK_EQ(rb_create(link, 4096, 0, &rb), RB_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK(rb == SENTINEL);
    struct stat st;
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
    CHECK(lstat(tu_path(dir, "nowhere"), &st) != 0);

    char list[1024];
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 4);
    if (tu_count_entries(dir, NULL, 0) != 4)
        FAILF("directory holds: %s", list);
}

TEST(create_remove_replaces)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    static const char text[] = "old contents";
    REQUIRE(tu_write_file(path, text, sizeof text - 1) == 0);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 8192, RB_REMOVE, &rb), RB_OK);
    CHECK_EQ_U(rb_capacity(rb), 8192);
    CHECK_EQ(tu_file_size(path), HEADER_SIZE + 8192);
    CHECK_EQ(put(rb, 7, 77), RB_OK);
    CLOSE(rb);
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    GET_CHECK(rb, 7, 77);
    CLOSE(rb);
    /* RB_REMOVE on a path that does not exist simply creates. */
    const char *p2 = tu_path(dir, "fresh");
    REQUIRE_EQ(rb_create(p2, 4096, RB_REMOVE, &rb), RB_OK);
    CLOSE(rb);
    /* Replacing a ring with a ring of another size. */
    REQUIRE_EQ(rb_create(p2, 65536, RB_REMOVE, &rb), RB_OK);
    CHECK_EQ_U(rb_capacity(rb), 65536);
    CLOSE(rb);
    char list[1024];
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 2);
    if (tu_count_entries(dir, NULL, 0) != 2)
        FAILF("directory holds: %s", list);
}

TEST(create_remove_old_mapping_keeps_working)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(old);
    AUTO_RING(nw);
    AUTO_RING(reopened);
    REQUIRE_EQ(rb_create(path, 4096, 0, &old), RB_OK);
    CHECK_EQ(put(old, 1, 10), RB_OK);
    CHECK_EQ(put(old, 2, 20), RB_OK);
    REQUIRE_EQ(rb_create(path, 4096, RB_REMOVE, &nw), RB_OK);
    /* The new ring is empty; the old one still has its messages. */
    size_t len = 999;
    unsigned char buf[64];
    CHECK_EQ(rb_read(nw, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ_U(len, 999);
    GET_CHECK(old, 1, 10);
    CHECK_EQ(put(old, 3, 30), RB_OK);
    CHECK_EQ(put(nw, 100, 40), RB_OK);
    GET_CHECK(old, 2, 20);
    GET_CHECK(old, 3, 30);
    CHECK_EQ(rb_read(old, buf, sizeof buf, &len), RB_EEMPTY);
    /* Opening the path gets the new ring. */
    REQUIRE_EQ(rb_open(path, &reopened), RB_OK);
    GET_CHECK(reopened, 100, 40);
    CHECK_EQ(rb_read(nw, buf, sizeof buf, &len), RB_EEMPTY);
    /* The old ring keeps working through many wraps. */
    for (uint64_t s = 0; s < 2000; s++) {
        CHECK_EQ(put(old, s, 1 + s % 500), RB_OK);
        GET_CHECK(old, s, 1 + s % 500);
    }
}

/* The same with another process holding the old ring. */
TEST(create_remove_other_process_keeps_old_ring)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    CHECK_EQ(put(rb, 1, 111), RB_OK);
    CLOSE(rb);
    int to_child[2], to_parent[2];
    REQUIRE(pipe(to_child) == 0 && pipe(to_parent) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(20);
        rb_ring *old = NULL;
        char c = 'o';
        int ok = rb_open(path, &old) == RB_OK;
        if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
            _exit(3);
        /* The parent has replaced the file by now. */
        ok = ok && GET_CHECK(old, 1, 111);
        for (uint64_t s = 0; ok && s < 500; s++)
            ok = put(old, 1000 + s, 1 + s % 700) == RB_OK && GET_CHECK(old, 1000 + s, 1 + s % 700);
        ok = ok && put(old, 2, 222) == RB_OK; /* left in the old ring */
        rb_close(old);
        _exit(ok ? 0 : 1);
    }
    char c;
    CHECK(read(to_parent[0], &c, 1) == 1);
    CHECK_EQ(rb_create(path, 4096, RB_REMOVE, &rb), RB_OK);
    CHECK(write(to_child[1], &c, 1) == 1);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(to_child[0]);
    close(to_child[1]);
    close(to_parent[0]);
    close(to_parent[1]);
    /* Nothing the child did shows in the new ring. */
    if (rb != NULL) {
        unsigned char buf[1024];
        size_t len;
        uint64_t h, t;
        CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
        CHECK_EQ(rb_positions(rb, &h, &t), RB_OK);
        CHECK_EQ_U(t, 0);
    }
}

TEST(create_mode)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    mode_t saved = umask(0);
    struct stat st;
    AUTO_RING(rb);
    if (CHECK_EQ(rb_create(tu_path(dir, "default"), 4096, 0, &rb), RB_OK)) {
        CHECK(stat(tu_path(dir, "default"), &st) == 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK_EQ(st.st_mode & 07777, 0600);
        CLOSE(rb);
    }
    if (CHECK_EQ(rb_create_mode(tu_path(dir, "m640"), 4096, 0, 0640, &rb), RB_OK)) {
        CHECK(stat(tu_path(dir, "m640"), &st) == 0);
        CHECK_EQ(st.st_mode & 07777, 0640);
        CLOSE(rb);
    }
    if (CHECK_EQ(rb_create_mode(tu_path(dir, "m660"), 4096, 0, 0660, &rb), RB_OK)) {
        CHECK(stat(tu_path(dir, "m660"), &st) == 0);
        CHECK_EQ(st.st_mode & 07777, 0660);
        CLOSE(rb);
    }
    if (CHECK_EQ(rb_create_mode(tu_path(dir, "replaced"), 4096, 0, 0600, &rb), RB_OK))
        CLOSE(rb);
    if (CHECK_EQ(rb_create_mode(tu_path(dir, "replaced"), 4096, RB_REMOVE, 0644, &rb), RB_OK)) {
        CHECK(stat(tu_path(dir, "replaced"), &st) == 0);
        CHECK_EQ(st.st_mode & 07777, 0644);
        CLOSE(rb);
    }
    /* The umask applies. */
    umask(022);
    if (CHECK_EQ(rb_create_mode(tu_path(dir, "umask"), 4096, 0, 0666, &rb), RB_OK)) {
        CHECK(stat(tu_path(dir, "umask"), &st) == 0);
        CHECK_EQ(st.st_mode & 07777, 0644);
        CLOSE(rb);
    }
    umask(saved);
}

TEST(create_leaves_no_temporary_files)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    rb_ring *out = SENTINEL;
    char list[2048];
    /* Success. */
    REQUIRE_EQ(rb_create(tu_path(dir, "a"), 4096, 0, &rb), RB_OK);
    CLOSE(rb);
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 1);
    CHECK_STR_EQ(list, "a");
    /* Success replacing. */
    REQUIRE_EQ(rb_create(tu_path(dir, "a"), 8192, RB_REMOVE, &rb), RB_OK);
    CLOSE(rb);
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 1);
    CHECK_STR_EQ(list, "a");
    /* Failure: exists. */
    CHECK_EQ(rb_create(tu_path(dir, "a"), 4096, 0, &out), RB_ESYS);
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 1);
    CHECK_STR_EQ(list, "a");
    /* Failure: RB_REMOVE onto a non-empty directory (rename fails). */
    REQUIRE(mkdir(tu_path(dir, "d"), 0700) == 0);
    REQUIRE(tu_write_file(tu_path(dir, "d/x"), "x", 1) == 0);
    errno = 0;
    CHECK_EQ(rb_create(tu_path(dir, "d"), 4096, RB_REMOVE, &out), RB_ESYS);
    CHECK(errno != 0);
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 2);
    CHECK_EQ(tu_count_entries(tu_path(dir, "d"), NULL, 0), 1);
    /* Failure: the directory does not exist. */
    errno = 0;
    CHECK_EQ(rb_create(tu_path(dir, "missing/ring"), 4096, 0, &out), RB_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK_EQ(tu_count_entries(dir, list, sizeof list), 2);
    if (tu_count_entries(dir, NULL, 0) != 2)
        FAILF("directory holds: %s", list);
    CHECK(out == SENTINEL);
}

/* ---- rb_open --------------------------------------------------------------- */

TEST(open_missing_symlink_directory)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    rb_ring *rb = SENTINEL;
    errno = 0;
    CHECK_EQ(rb_open(tu_path(dir, "missing"), &rb), RB_ESYS);
    CHECK_EQ(errno, ENOENT);

    const char *path = tu_path(dir, "ring");
    AUTO_RING(r);
    REQUIRE_EQ(rb_create(path, 4096, 0, &r), RB_OK);
    CLOSE(r);
    REQUIRE(symlink("ring", tu_path(dir, "link")) == 0);
    errno = 0;
    CHECK_EQ(rb_open(tu_path(dir, "link"), &rb), RB_ESYS);
    CHECK_EQ(errno, ELOOP);

    REQUIRE(mkdir(tu_path(dir, "sub"), 0700) == 0);
    errno = 0;
    CHECK_EQ(rb_open(tu_path(dir, "sub"), &rb), RB_ESYS);
    CHECK(errno != 0);

    CHECK_EQ(rb_open(NULL, &rb), RB_EINVAL);
    CHECK(rb == SENTINEL);
    CHECK_EQ(rb_open(path, NULL), RB_EINVAL);

    /* Without permission to open it read-write (meaningless as root). */
    if (geteuid() != 0) {
        REQUIRE(chmod(path, 0400) == 0);
        errno = 0;
        CHECK_EQ(rb_open(path, &rb), RB_ESYS);
        CHECK_EQ(errno, EACCES);
        CHECK(rb == SENTINEL);
    }
}

TEST(open_fifo_and_device_not_regular)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *fifo = tu_path(dir, "fifo");
    REQUIRE(mkfifo(fifo, 0600) == 0);
    /* Probe in a child first so that a hanging open fails the test instead
     * of the whole run. */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* not the runner's handler */
        alarm(5);
        rb_ring *rb = NULL;
        int rc = rb_open(fifo, &rb);
        _exit(rc == RB_ECORRUPT ? 0 : 10 - rc);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) {
        FAILF("rb_open of a FIFO hung (child killed by signal %d)", WTERMSIG(status));
        return;
    }
    if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        FAILF("rb_open of a FIFO in a child: exit status %d (10 - status code)", WEXITSTATUS(status));
        return;
    }
    rb_ring *rb = SENTINEL;
    CHECK_EQ(rb_open(fifo, &rb), RB_ECORRUPT);
    CHECK(rb == SENTINEL);
    /* A character device. */
    CHECK_EQ(rb_open("/dev/null", &rb), RB_ECORRUPT);
    CHECK(rb == SENTINEL);
}

TEST(open_short_or_wrong_size_files)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    rb_ring *out = SENTINEL;
    const char *empty = tu_path(dir, "empty");
    REQUIRE(tu_write_file(empty, "", 0) == 0);
    CHECK_EQ(rb_open(empty, &out), RB_ECORRUPT);

    /* A valid header page alone, a part of it, and sizes around the right
     * one. */
    const char *ref = tu_path(dir, "ref");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(ref, 8192, 0, &rb), RB_OK);
    CHECK_EQ(put(rb, 1, 10), RB_OK);
    CLOSE(rb);
    size_t n;
    unsigned char *img = tu_slurp(ref, &n);
    REQUIRE(img != NULL);
    REQUIRE_EQ(n, HEADER_SIZE + 8192);
    static const off_t sizes[] = {1, 8, 64, 300, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1,
                                  HEADER_SIZE + 4096, HEADER_SIZE + 8192 - 1, HEADER_SIZE + 8192 + 1,
                                  HEADER_SIZE + 8192 + 4096, HEADER_SIZE + 16384, 2 * (HEADER_SIZE + 8192)};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%zu", i);
        const char *p = tu_path(dir, name);
        REQUIRE(tu_write_file(p, img, (size_t)sizes[i] < n ? (size_t)sizes[i] : n) == 0);
        if ((size_t)sizes[i] > n)
            REQUIRE(truncate(p, sizes[i]) == 0);
        int rc = rb_open(p, &out);
        if (rc != RB_ECORRUPT)
            FAILF("file of %lld bytes: rb_open -> %d (%s), expected RB_ECORRUPT", (long long)sizes[i], rc,
                  rb_strerror(rc));
        if (rc == RB_OK)
            rb_close(out), out = SENTINEL;
    }
    /* The unmodified copy opens. */
    const char *copy = tu_path(dir, "copy");
    REQUIRE(tu_write_file(copy, img, n) == 0);
    if (CHECK_EQ(rb_open(copy, &rb), RB_OK)) {
        GET_CHECK(rb, 1, 10);
        CLOSE(rb);
    }
    free(img);
    CHECK(out == SENTINEL);
}

struct patch {
    off_t off;
    int width; /* 1, 4 or 8; 0 = end of list */
    uint64_t value;
};

struct forge_case {
    const char *what;
    struct patch p[3];
    off_t size; /* new file size; 0 = unchanged */
    int expect;
};

#define C8K 8192u
#define FSIZE(cap) ((off_t)HEADER_SIZE + (off_t)(cap))
/* The default group's head: forged positions move it too (rb_open checks
 * that it lies in [head, tail], 8-aligned). */
#define G0_HEAD (OFF_GROUPS + GROUP_OFF_HEAD)

static const struct forge_case forge_cases[] = {
    /* Controls: these are valid. */
    {"unmodified", {{0, 0, 0}}, 0, RB_OK},
    {"full ring positions", {{OFF_TAIL, 8, C8K}}, 0, RB_OK},
    {"large equal positions", {{OFF_HEAD, 8, 1ull << 40}, {OFF_TAIL, 8, 1ull << 40}, {G0_HEAD, 8, 1ull << 40}}, 0,
     RB_OK},
    {"created_ns is free-form", {{OFF_CREATED_NS, 8, 12345}}, 0, RB_OK},
    /* Magic. */
    {"magic first byte", {{OFF_MAGIC, 1, 'X'}}, 0, RB_ECORRUPT},
    {"magic last byte", {{OFF_MAGIC + 7, 1, 'x'}}, 0, RB_ECORRUPT},
    {"magic zero", {{OFF_MAGIC, 8, 0}}, 0, RB_ECORRUPT},
    {"magic lower case", {{OFF_MAGIC, 1, 'r'}}, 0, RB_ECORRUPT},
    /* Version. */
    {"version 0", {{OFF_VERSION, 4, 0}}, 0, RB_EVERSION},
    {"version 1 (before the slot table)", {{OFF_VERSION, 4, 1}}, 0, RB_EVERSION},
    {"version + 1", {{OFF_VERSION, 4, RB_FORMAT_VERSION + 1}}, 0, RB_EVERSION},
    {"version byte-swapped", {{OFF_VERSION, 4, 0x01000000}}, 0, RB_EVERSION},
    {"version max", {{OFF_VERSION, 4, 0xFFFFFFFF}}, 0, RB_EVERSION},
    /* Header size. */
    {"header_size 0", {{OFF_HEADER_SIZE, 4, 0}}, 0, RB_ECORRUPT},
    {"header_size 2048", {{OFF_HEADER_SIZE, 4, 2048}}, 0, RB_ECORRUPT},
    {"header_size 4096 (version 1's)", {{OFF_HEADER_SIZE, 4, 4096}}, 0, RB_ECORRUPT},
    {"header_size 4097", {{OFF_HEADER_SIZE, 4, 4097}}, 0, RB_ECORRUPT},
    {"header_size + 8", {{OFF_HEADER_SIZE, 4, HEADER_SIZE + 8}}, 0, RB_ECORRUPT},
    {"header_size 8192", {{OFF_HEADER_SIZE, 4, 8192}}, 0, RB_ECORRUPT},
    {"header_size 8192, file grown to match", {{OFF_HEADER_SIZE, 4, 8192}}, 8192 + C8K, RB_ECORRUPT},
    /* The slot table's shape. */
    {"slot_count 0", {{OFF_SLOT_COUNT, 4, 0}}, 0, RB_ECORRUPT},
    {"slot_count 256", {{OFF_SLOT_COUNT, 4, SLOT_COUNT / 2}}, 0, RB_ECORRUPT},
    {"slot_count 1024", {{OFF_SLOT_COUNT, 4, SLOT_COUNT * 2}}, 0, RB_ECORRUPT},
    {"slot_size 0", {{OFF_SLOT_SIZE, 4, 0}}, 0, RB_ECORRUPT},
    {"slot_size 64", {{OFF_SLOT_SIZE, 4, SLOT_SIZE / 2}}, 0, RB_ECORRUPT},
    /* Capacity (file size and max_message kept consistent so that only the
     * capacity itself is wrong). */
    {"capacity 12288 (not a power of two)",
     {{OFF_CAPACITY, 8, 12288}, {OFF_MAX_MESSAGE, 8, 6144}},
     FSIZE(12288),
     RB_ECORRUPT},
    {"capacity 8200 (not a power of two)", {{OFF_CAPACITY, 8, 8200}, {OFF_MAX_MESSAGE, 8, 4100}}, FSIZE(8200),
     RB_ECORRUPT},
    {"capacity 0", {{OFF_CAPACITY, 8, 0}, {OFF_MAX_MESSAGE, 8, 0}}, FSIZE(0), RB_ECORRUPT},
    {"capacity 2048 (below minimum)", {{OFF_CAPACITY, 8, 2048}, {OFF_MAX_MESSAGE, 8, 1024}}, FSIZE(2048),
     RB_ECORRUPT},
    {"capacity 8 (below minimum)", {{OFF_CAPACITY, 8, 8}, {OFF_MAX_MESSAGE, 8, 4}}, FSIZE(8), RB_ECORRUPT},
    {"capacity 2^33 (above maximum), sparse file",
     {{OFF_CAPACITY, 8, 1ull << 33}, {OFF_MAX_MESSAGE, 8, 1ull << 32}},
     FSIZE(1ull << 33),
     RB_ECORRUPT},
    {"capacity 2^63", {{OFF_CAPACITY, 8, 1ull << 63}, {OFF_MAX_MESSAGE, 8, 1ull << 62}}, 0, RB_ECORRUPT},
    {"capacity 16384, file for 8192", {{OFF_CAPACITY, 8, 16384}, {OFF_MAX_MESSAGE, 8, 8192}}, 0, RB_ECORRUPT},
    {"capacity 4096, file for 8192", {{OFF_CAPACITY, 8, 4096}, {OFF_MAX_MESSAGE, 8, 2048}}, 0, RB_ECORRUPT},
    /* max_message. */
    {"max_message capacity/2 - 1", {{OFF_MAX_MESSAGE, 8, C8K / 2 - 1}}, 0, RB_ECORRUPT},
    {"max_message capacity/2 + 1", {{OFF_MAX_MESSAGE, 8, C8K / 2 + 1}}, 0, RB_ECORRUPT},
    {"max_message capacity/2 - 8", {{OFF_MAX_MESSAGE, 8, C8K / 2 - 8}}, 0, RB_ECORRUPT},
    {"max_message capacity", {{OFF_MAX_MESSAGE, 8, C8K}}, 0, RB_ECORRUPT},
    {"max_message 0", {{OFF_MAX_MESSAGE, 8, 0}}, 0, RB_ECORRUPT},
    {"max_message huge", {{OFF_MAX_MESSAGE, 8, ~0ull}}, 0, RB_ECORRUPT},
    /* File size. */
    {"file one byte short", {{0, 0, 0}}, FSIZE(C8K) - 1, RB_ECORRUPT},
    {"file one byte long", {{0, 0, 0}}, FSIZE(C8K) + 1, RB_ECORRUPT},
    {"file a page long", {{0, 0, 0}}, FSIZE(C8K) + 4096, RB_ECORRUPT},
    {"file a page short", {{0, 0, 0}}, FSIZE(C8K) - 4096, RB_ECORRUPT},
    /* State and flags. */
    {"state 0 (not ready)", {{OFF_STATE, 4, 0}}, 0, RB_ECORRUPT},
    {"state ready + 1", {{OFF_STATE, 4, STATE_READY + 1}}, 0, RB_ECORRUPT},
    {"state byte-swapped", {{OFF_STATE, 4, 0x52454459}}, 0, RB_ECORRUPT},
    {"flags 1", {{OFF_FLAGS, 4, 1}}, 0, RB_ECORRUPT},
    {"flags high bit", {{OFF_FLAGS, 4, 0x80000000u}}, 0, RB_ECORRUPT},
    /* Positions. */
    {"head > tail", {{OFF_HEAD, 8, 16}, {OFF_TAIL, 8, 8}}, 0, RB_ECORRUPT},
    {"head > tail = 0", {{OFF_HEAD, 8, 8}}, 0, RB_ECORRUPT},
    {"head > tail, large", {{OFF_HEAD, 8, (1ull << 40) + 8}, {OFF_TAIL, 8, 1ull << 40}}, 0, RB_ECORRUPT},
    {"tail - head = capacity + 8", {{OFF_TAIL, 8, C8K + 8}}, 0, RB_ECORRUPT},
    {"tail - head = 2 * capacity", {{OFF_TAIL, 8, 2 * C8K}}, 0, RB_ECORRUPT},
    {"tail - head > capacity, large",
     {{OFF_HEAD, 8, 1ull << 40}, {OFF_TAIL, 8, (1ull << 40) + C8K + 8}},
     0,
     RB_ECORRUPT},
    {"tail huge", {{OFF_TAIL, 8, ~7ull}}, 0, RB_ECORRUPT},
    {"equal positions at 2^63 (arithmetic could wrap)", {{OFF_HEAD, 8, 1ull << 63}, {OFF_TAIL, 8, 1ull << 63}}, 0,
     RB_ECORRUPT},
    {"equal positions just below 2^63",
     {{OFF_HEAD, 8, (1ull << 63) - 8}, {OFF_TAIL, 8, (1ull << 63) - 8}, {G0_HEAD, 8, (1ull << 63) - 8}},
     0,
     RB_OK},
    {"head and tail unaligned", {{OFF_HEAD, 8, 4}, {OFF_TAIL, 8, 4}}, 0, RB_ECORRUPT},
    {"head unaligned", {{OFF_HEAD, 8, 4}, {OFF_TAIL, 8, 8}}, 0, RB_ECORRUPT},
    {"tail unaligned", {{OFF_TAIL, 8, 12}}, 0, RB_ECORRUPT},
    {"tail odd", {{OFF_TAIL, 8, 1}}, 0, RB_ECORRUPT},
    {"head and tail odd, equal", {{OFF_HEAD, 8, 1001}, {OFF_TAIL, 8, 1001}}, 0, RB_ECORRUPT},
    /* The default group's head (checked as rb_open joins the group). */
    {"head and tail moved, default group head left at 0", {{OFF_HEAD, 8, 1ull << 40}, {OFF_TAIL, 8, 1ull << 40}}, 0,
     RB_ECORRUPT},
    {"default group head > tail", {{G0_HEAD, 8, 8}}, 0, RB_ECORRUPT},
    {"default group head > tail, large",
     {{OFF_HEAD, 8, 1ull << 40}, {OFF_TAIL, 8, 1ull << 40}, {G0_HEAD, 8, (1ull << 40) + 8}},
     0,
     RB_ECORRUPT},
    {"default group head < head", {{OFF_HEAD, 8, 16}, {OFF_TAIL, 8, 16}, {G0_HEAD, 8, 8}}, 0, RB_ECORRUPT},
    {"default group head unaligned", {{OFF_TAIL, 8, 16}, {G0_HEAD, 8, 4}}, 0, RB_ECORRUPT},
    {"default group head huge", {{G0_HEAD, 8, ~7ull}}, 0, RB_ECORRUPT},
};

TEST(open_forged_headers)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    for (size_t i = 0; i < sizeof forge_cases / sizeof forge_cases[0]; i++) {
        const struct forge_case *c = &forge_cases[i];
        char name[32];
        snprintf(name, sizeof name, "f%zu", i);
        const char *path = tu_path(dir, name);
        AUTO_RING(rb);
        if (!CHECK_EQ(rb_create(path, C8K, 0, &rb), RB_OK))
            continue;
        CLOSE(rb);
        int bad = 0;
        for (int k = 0; k < 3 && c->p[k].width != 0; k++) {
            uint64_t v = c->p[k].value;
            unsigned char b = (unsigned char)v;
            uint32_t v32 = (uint32_t)v;
            const void *src = c->p[k].width == 1   ? (const void *)&b
                              : c->p[k].width == 4 ? (const void *)&v32
                                                   : (const void *)&v;
            bad |= tu_patch(path, c->p[k].off, src, (size_t)c->p[k].width);
        }
        if (c->size != 0)
            bad |= truncate(path, c->size);
        if (bad) {
            FAILF("%s: could not forge the file: %s", c->what, strerror(errno));
            continue;
        }
        rb = SENTINEL;
        errno = 0;
        int rc = rb_open(path, &rb);
        if (rc != c->expect)
            FAILF("%s: rb_open -> %d (%s), expected %d (%s)", c->what, rc, rb_strerror(rc), c->expect,
                  rb_strerror(c->expect));
        if (rc == RB_OK) {
            if (rb == SENTINEL || rb == NULL) {
                FAILF("%s: RB_OK without a handle", c->what);
            } else {
                /* A valid ring works. */
                unsigned char buf[16];
                size_t len;
                if (c->expect == RB_OK && strcmp(c->what, "full ring positions") != 0) {
                    CHECK_EQ(put(rb, i, 33), RB_OK);
                    GET_CHECK(rb, i, 33);
                }
                CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
                CLOSE(rb);
            }
            rb = NULL;
        } else if (rb != SENTINEL) {
            FAILF("%s: *out changed on error", c->what);
            rb = NULL;
        } else {
            rb = NULL;
        }
        unlink(path);
    }
}

/* ---- rb_close, argument checks ------------------------------------------- */

TEST(close_null_and_file_stays)
{
    CHECK_EQ(rb_close(NULL), RB_OK);
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    rb_ring *rb = NULL;
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    CHECK_EQ(rb_close(rb), RB_OK);
    CHECK_EQ(tu_file_size(path), HEADER_SIZE + 4096);
}

TEST(null_arguments)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    unsigned char buf[64] = {1, 2, 3};
    size_t len = 555, lens[4] = {1, 2, 3, 4}, cnt = 555;

    CHECK_EQ(rb_write(NULL, buf, 3), RB_EINVAL);
    CHECK_EQ(rb_write(rb, NULL, 3), RB_EINVAL);

    CHECK_EQ(rb_write_many(NULL, buf, lens, 1, &cnt), RB_EINVAL);
    CHECK_EQ_U(cnt, 0);
    cnt = 555;
    CHECK_EQ(rb_write_many(rb, NULL, lens, 1, &cnt), RB_EINVAL);
    CHECK_EQ_U(cnt, 0);
    cnt = 555;
    CHECK_EQ(rb_write_many(rb, buf, NULL, 1, &cnt), RB_EINVAL);
    CHECK_EQ_U(cnt, 0);
    CHECK_EQ(rb_write_many(rb, buf, lens, 1, NULL), RB_EINVAL);
    CHECK_EQ(rb_write_many(rb, NULL, NULL, 0, NULL), RB_EINVAL);

    CHECK_EQ(rb_read(NULL, buf, sizeof buf, &len), RB_EINVAL);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, NULL), RB_EINVAL);
    CHECK_EQ(rb_read(rb, NULL, 10, &len), RB_EINVAL);
    CHECK_EQ_U(len, 555);

    CHECK_EQ(rb_read_many(NULL, buf, sizeof buf, lens, 4, &cnt), RB_EINVAL);
    CHECK_EQ_U(cnt, 0);
    cnt = 555;
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 4, NULL), RB_EINVAL);
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, NULL, 4, &cnt), RB_EINVAL);
    CHECK_EQ_U(cnt, 0);
    cnt = 555;
    CHECK_EQ(rb_read_many(rb, NULL, 10, lens, 4, &cnt), RB_EINVAL);
    CHECK_EQ_U(cnt, 0);

    uint64_t h = 77, t = 88;
    CHECK_EQ(rb_positions(NULL, &h, &t), RB_EINVAL);
    CHECK_EQ_U(h, 77);
    CHECK_EQ_U(t, 88);
    CHECK_EQ(rb_positions(rb, NULL, NULL), RB_OK);
    CHECK_EQ(rb_positions(rb, &h, NULL), RB_OK);
    CHECK_EQ(rb_positions(rb, NULL, &t), RB_OK);
    CHECK_EQ_U(h, 0);
    CHECK_EQ_U(t, 0);

    /* None of this wrote or consumed anything. */
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 0);
    CHECK_EQ_U(g_tail, 0);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);

    /* A NULL buffer of size 0 is allowed: it only asks for the length. */
    CHECK_EQ(rb_read(rb, NULL, 0, &len), RB_EEMPTY);
    CHECK_EQ(rb_read_many(rb, NULL, 0, lens, 4, &cnt), RB_EEMPTY);
    CHECK_EQ(put(rb, 1, 42), RB_OK);
    CHECK_EQ(rb_read(rb, NULL, 0, &len), RB_ETRUNC);
    CHECK_EQ_U(len, 42);
    lens[0] = 0;
    CHECK_EQ(rb_read_many(rb, NULL, 0, lens, 4, &cnt), RB_ETRUNC);
    CHECK_EQ_U(lens[0], 42);
    CHECK_EQ_U(cnt, 0);
    GET_CHECK(rb, 1, 42);
}

/* ---- rb_write / rb_read ---------------------------------------------------- */

TEST(write_read_round_trip)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    static const char msg[] = "hello, ring";
    CHECK_EQ(rb_write(rb, msg, sizeof msg), RB_OK);
    unsigned char buf[100];
    memset(buf, 0xAA, sizeof buf);
    size_t len = 0;
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_OK);
    CHECK_EQ_U(len, sizeof msg);
    CHECK_MEM_EQ(buf, msg, sizeof msg);
    /* Nothing beyond the message was written to buf. */
    size_t clobbered = 0;
    for (size_t i = sizeof msg; i < sizeof buf; i++)
        clobbered += buf[i] != 0xAA;
    CHECK_EQ_U(clobbered, 0);
    /* Empty now; the output is left alone. */
    len = 12345;
    memset(buf, 0xAA, sizeof buf);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ_U(len, 12345);
    CHECK_EQ(buf[0], 0xAA);
    /* A buffer of exactly the message's size. */
    CHECK_EQ(rb_write(rb, msg, 5), RB_OK);
    CHECK_EQ(rb_read(rb, buf, 5, &len), RB_OK);
    CHECK_EQ_U(len, 5);
    CHECK_MEM_EQ(buf, msg, 5);
    /* One byte messages, every byte value. */
    for (int v = 0; v < 256; v++) {
        unsigned char b = (unsigned char)v, o = 0;
        CHECK_EQ(rb_write(rb, &b, 1), RB_OK);
        CHECK_EQ(rb_read(rb, &o, 1, &len), RB_OK);
        CHECK_EQ(o, v);
    }
}

TEST(fifo_order)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 65536, 0, &rb), RB_OK);
    for (uint64_t s = 0; s < 300; s++)
        REQUIRE_EQ(put(rb, s, 1 + (s * 37) % 200), RB_OK);
    for (uint64_t s = 0; s < 300; s++)
        GET_CHECK(rb, s, 1 + (s * 37) % 200);
    size_t len;
    unsigned char b[8];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
}

TEST(message_size_limits)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    static const size_t caps[] = {4096, 65536};
    for (size_t c = 0; c < 2; c++) {
        char name[16];
        snprintf(name, sizeof name, "r%zu", c);
        AUTO_RING(rb);
        REQUIRE_EQ(rb_create(tu_path(dir, name), caps[c], 0, &rb), RB_OK);
        size_t max = rb_max_message_size(rb);
        CHECK_EQ_U(max, caps[c] / 2);
        unsigned char *big = calloc(1, max + 2);
        REQUIRE(big != NULL);
        /* Too large and empty messages: RB_ESIZE, nothing written. */
        CHECK_EQ(rb_write(rb, big, max + 1), RB_ESIZE);
        CHECK_EQ(rb_write(rb, big, SIZE_MAX), RB_ESIZE);
        CHECK_EQ(rb_write(rb, big, 0), RB_ESIZE);
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_tail, 0);
        /* The largest message goes through; with it in the ring, the rest
         * of the capacity (max - 8 bytes) holds a message of max - 16. */
        CHECK_EQ(put(rb, 1, max), RB_OK);
        CHECK_EQ(put(rb, 2, max - 8), RB_EFULL);
        CHECK_EQ(put(rb, 2, max - 16), RB_OK);
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_tail, rec_size(max) + rec_size(max - 16));
        CHECK_EQ_U(g_tail, caps[c]);
        CHECK_EQ(rb_write(rb, big, max + 1), RB_ESIZE);
        CHECK_EQ(rb_write(rb, big, 0), RB_ESIZE);
        GET_CHECK(rb, 1, max);
        GET_CHECK(rb, 2, max - 16);
        /* Twice the largest in a row, crossing the end. */
        CHECK_EQ(put(rb, 3, max), RB_OK);
        GET_CHECK(rb, 3, max);
        CHECK_EQ(put(rb, 4, max), RB_OK);
        GET_CHECK(rb, 4, max);
        free(big);
    }
}

TEST(full_ring_writes_nothing)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    /* 100-byte messages: records of 112 bytes, 36 fit (4032), 64 left. */
    uint64_t s = 0;
    while (put(rb, s, 100) == RB_OK)
        s++;
    CHECK_EQ_U(s, 4096 / 112);
    CHECK_EQ(positions(rb), RB_OK);
    uint64_t t0 = g_tail;
    CHECK_EQ_U(t0, s * 112);
    size_t n0;
    unsigned char *before = tu_slurp(path, &n0);
    REQUIRE(before != NULL);
    /* Neither this message nor any that does not fit in 64 bytes. */
    CHECK_EQ(put(rb, 1000, 100), RB_EFULL);
    CHECK_EQ(put(rb, 1001, 57), RB_EFULL);
    CHECK_EQ(put(rb, 1002, 2048), RB_EFULL);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail, t0);
    CHECK_EQ_U(g_head, 0);
    size_t n1;
    unsigned char *after = tu_slurp(path, &n1);
    REQUIRE(after != NULL);
    CHECK_EQ_U(n1, n0);
    /* Nothing changed but our slot's counters: three more "full" calls. */
    const off_t counts = slot_off(0, SLOT_OFF_COUNT_OWN);
    uint64_t full0, full1;
    memcpy(&full0, before + counts + 8 * 5, 8);
    memcpy(&full1, after + counts + 8 * 5, 8);
    CHECK_EQ_U(full1 - full0, 3);
    if (n1 == n0) {
        memset(before + counts, 0, 256);
        memset(after + counts, 0, 256);
        CHECK_MEM_EQ(after, before, n0);
    }
    free(before);
    free(after);
    /* But a message of 56 bytes fills the last 64. */
    CHECK_EQ(put(rb, s, 56), RB_OK);
    CHECK_EQ(put(rb, s + 1, 1), RB_EFULL);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail, 4096);
    for (uint64_t i = 0; i < s; i++)
        GET_CHECK(rb, i, 100);
    GET_CHECK(rb, s, 56);
    size_t len;
    unsigned char b[8];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
}

TEST(truncated_read_leaves_message)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    CHECK_EQ(put(rb, 1, 100), RB_OK);
    CHECK_EQ(put(rb, 2, 10), RB_OK);
    unsigned char buf[200];
    memset(buf, 0xAA, sizeof buf);
    size_t len = 0;
    CHECK_EQ(rb_read(rb, buf, 99, &len), RB_ETRUNC);
    CHECK_EQ_U(len, 100);
    size_t clobbered = 0;
    for (size_t i = 0; i < sizeof buf; i++)
        clobbered += buf[i] != 0xAA;
    CHECK_EQ_U(clobbered, 0);
    len = 0;
    CHECK_EQ(rb_read(rb, buf, 1, &len), RB_ETRUNC);
    CHECK_EQ_U(len, 100);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 0);
    CHECK_EQ_U(g_tail, 112 + 24);
    GET_CHECK(rb, 1, 100);
    GET_CHECK(rb, 2, 10);
}

/* ---- rb_write_many ----------------------------------------------------------- */

/* Packs messages seq0.. of lens into a fresh buffer. */
static unsigned char *pack(uint64_t seq0, const size_t *lens, size_t count)
{
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += lens[i];
    unsigned char *b = malloc(total ? total : 1), *p = b;
    for (size_t i = 0; i < count; i++) {
        make_msg(p, lens[i], seq0 + i);
        p += lens[i];
    }
    return b;
}

TEST(write_many)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    size_t written = 99;

    /* All fit. */
    size_t l1[] = {1, 7, 8, 9, 100, 2048};
    unsigned char *d1 = pack(0, l1, 6);
    CHECK_EQ(rb_write_many(rb, d1, l1, 6, &written), RB_OK);
    CHECK_EQ_U(written, 6);
    uint64_t expect_tail = 0;
    for (int i = 0; i < 6; i++)
        expect_tail += rec_size(l1[i]);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail, expect_tail);
    for (uint64_t i = 0; i < 6; i++)
        GET_CHECK(rb, i, l1[i]);
    free(d1);

    /* count 0: nothing to do, NULL data and lens allowed. */
    written = 99;
    CHECK_EQ(rb_write_many(rb, NULL, NULL, 0, &written), RB_OK);
    CHECK_EQ_U(written, 0);

    /* A bad length anywhere: RB_ESIZE and nothing written. */
    CHECK_EQ(positions(rb), RB_OK);
    uint64_t t0 = g_tail;
    size_t l2[] = {10, 20, 0, 30};
    unsigned char *d2 = pack(100, l2, 4);
    written = 99;
    CHECK_EQ(rb_write_many(rb, d2, l2, 4, &written), RB_ESIZE);
    CHECK_EQ_U(written, 0);
    size_t l3[] = {10, 20, 30, 2049};
    unsigned char *d3 = pack(100, l3, 4);
    written = 99;
    CHECK_EQ(rb_write_many(rb, d3, l3, 4, &written), RB_ESIZE);
    CHECK_EQ_U(written, 0);
    size_t l4[] = {0};
    written = 99;
    CHECK_EQ(rb_write_many(rb, d3, l4, 1, &written), RB_ESIZE);
    CHECK_EQ_U(written, 0);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail, t0);
    size_t len;
    unsigned char b[8];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
    free(d2);
    free(d3);

    /* Partial: records of 1008 bytes, four fit in 4096; the fifth and the
     * small sixth (which would fit in the 64 left) are not written. */
    size_t l5[] = {1000, 1000, 1000, 1000, 1000, 8};
    unsigned char *d5 = pack(200, l5, 6);
    written = 99;
    CHECK_EQ(rb_write_many(rb, d5, l5, 6, &written), RB_OK);
    CHECK_EQ_U(written, 4);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail - g_head, 4 * 1008);
    /* Not even the first fits: RB_EFULL, nothing written. */
    written = 99;
    CHECK_EQ(rb_write_many(rb, d5 + 4000, l5 + 4, 2, &written), RB_EFULL);
    CHECK_EQ_U(written, 0);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail - g_head, 4 * 1008);
    /* The small one alone fits. */
    written = 99;
    CHECK_EQ(rb_write_many(rb, d5 + 5000, l5 + 5, 1, &written), RB_OK);
    CHECK_EQ_U(written, 1);
    for (uint64_t i = 0; i < 4; i++)
        GET_CHECK(rb, 200 + i, 1000);
    GET_CHECK(rb, 205, 8);
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
    free(d5);
}

/* ---- rb_writev ------------------------------------------------------------------ */

/* Writes message seq of len bytes through rb_writev in the given piece
 * lengths (their sum must be len; NULL bases where nulls[i]), then reads it
 * back and checks it byte for byte, and that tail moved by one record. */
static int writev_check(rb_ring *rb, uint64_t seq, size_t len, const size_t *pieces, int n, const char *nulls)
{
    unsigned char *m = malloc(len), *back = malloc(len + 64);
    struct iovec iov[128];
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = nulls != NULL && nulls[i] ? NULL : m + off;
        iov[i].iov_len = pieces[i];
        off += pieces[i];
    }
    int ok = CHECK_EQ_U(off, len);
    make_msg(m, len, seq);
    uint64_t h0, t0;
    rb_positions(rb, &h0, &t0);
    ok &= CHECK_EQ(rb_writev(rb, iov, n), RB_OK);
    ok &= CHECK_EQ(positions(rb), RB_OK) && CHECK_EQ_U(g_tail - t0, rec_size(len));
    size_t got = 0;
    ok &= CHECK_EQ(rb_read(rb, back, len + 64, &got), RB_OK) && CHECK_EQ_U(got, len) && CHECK_MEM_EQ(back, m, len);
    free(m);
    free(back);
    return ok;
}

TEST(writev_round_trip)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    /* One vector, two (a header and its payload), three. */
    static const size_t one[] = {100}, two[] = {8, 92}, three[] = {1, 1, 1};
    CHECK(writev_check(rb, 1, 100, one, 1, NULL));
    CHECK(writev_check(rb, 2, 100, two, 2, NULL));
    CHECK(writev_check(rb, 3, 3, three, 3, NULL));
    /* Empty vectors first, in between and last, with and without a base. */
    static const size_t gaps[] = {0, 0, 10, 0, 0, 20, 0, 30, 0};
    static const char gap_nulls[] = {1, 0, 0, 1, 0, 0, 1, 0, 1};
    CHECK(writev_check(rb, 4, 60, gaps, 9, gap_nulls));
    CHECK(writev_check(rb, 5, 60, gaps, 9, NULL));
    /* Many vectors of 0 to 6 bytes. */
    size_t many[128], total = 0;
    for (int i = 0; i < 128; i++)
        total += many[i] = (size_t)(i * 5 % 7);
    CHECK(writev_check(rb, 6, total, many, 128, NULL));
    /* The largest message, in three pieces. */
    static const size_t big[] = {1000, 48, 1000};
    CHECK(writev_check(rb, 7, 2048, big, 3, NULL));
    /* A record crossing the end of the ring, at every 8-byte offset of its
     * last 200 bytes, cut so that vector boundaries fall on both sides of
     * the end and on it. */
    static const size_t cross[] = {7, 0, 50, 1, 99, 0, 43};
    for (uint64_t k = 0; k < 25; k++) {
        CHECK_EQ(positions(rb), RB_OK);
        uint64_t target = (g_tail / 4096 + 1) * 4096 - 200 + 8 * k;
        while (target < g_tail + 16)
            target += 4096;
        while (g_tail < target) {
            uint64_t gap = target - g_tail;
            size_t fl = gap > 2056 + 16 ? 2048 : gap > 2056 ? 1024 : (size_t)(gap - 8);
            if (!CHECK_EQ(put(rb, 1u << 30, fl), RB_OK))
                return;
            GET_CHECK(rb, 1u << 30, fl);
            CHECK_EQ(positions(rb), RB_OK);
        }
        if (!CHECK(writev_check(rb, 100 + k, 200, cross, 7, NULL)))
            break;
    }
    size_t len;
    unsigned char b[8];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
}

TEST(writev_statuses)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    const char *path = tu_path(dir, "ring");
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    unsigned char m[4096] = {1, 2, 3};
    struct iovec ok[2] = {{m, 10}, {m + 10, 10}};

    /* RB_EINVAL: no ring, a negative count, no vectors, a NULL base with
     * bytes to copy (checked before the size, also in the last vector). */
    CHECK_EQ(rb_writev(NULL, ok, 2), RB_EINVAL);
    CHECK_EQ(rb_writev(NULL, NULL, 0), RB_EINVAL);
    CHECK_EQ(rb_writev(rb, ok, -1), RB_EINVAL);
    CHECK_EQ(rb_writev(rb, NULL, -1), RB_EINVAL);
    CHECK_EQ(rb_writev(rb, NULL, 1), RB_EINVAL);
    struct iovec null_base[3] = {{m, 10}, {NULL, 5}, {m, 10}};
    CHECK_EQ(rb_writev(rb, null_base, 3), RB_EINVAL);
    struct iovec null_last[2] = {{m, 10}, {NULL, 1}};
    CHECK_EQ(rb_writev(rb, null_last, 2), RB_EINVAL);
    struct iovec null_and_big[2] = {{m, 4096}, {NULL, 1}};
    CHECK_EQ(rb_writev(rb, null_and_big, 2), RB_EINVAL);

    /* RB_ESIZE: nothing to write (no vectors, or only empty ones), more
     * than the maximum, and sums past SIZE_MAX: one that would wrap to a
     * plausible length (17 + SIZE_MAX == 16), and one to exactly 0. */
    CHECK_EQ(rb_writev(rb, NULL, 0), RB_ESIZE);
    CHECK_EQ(rb_writev(rb, ok, 0), RB_ESIZE);
    struct iovec empties[3] = {{m, 0}, {NULL, 0}, {m, 0}};
    CHECK_EQ(rb_writev(rb, empties, 3), RB_ESIZE);
    struct iovec too_big[3] = {{m, 1000}, {m, 0}, {m, 1049}};
    CHECK_EQ(rb_writev(rb, too_big, 3), RB_ESIZE);
    struct iovec max_ok[3] = {{m, 1000}, {m, 0}, {m, 1048}};
    struct iovec wraps[2] = {{m, SIZE_MAX}, {m, 17}};
    CHECK_EQ(rb_writev(rb, wraps, 2), RB_ESIZE);
    struct iovec wraps_to_0[3] = {{m, SIZE_MAX / 2 + 1}, {m, SIZE_MAX / 2}, {m, 1}};
    CHECK_EQ(rb_writev(rb, wraps_to_0, 3), RB_ESIZE);
    struct iovec huge[2] = {{m, SIZE_MAX}, {m, SIZE_MAX}};
    CHECK_EQ(rb_writev(rb, huge, 2), RB_ESIZE);
    /* The same through rb_writev_wait, which does not wait for any of it. */
    int64_t t0 = now_ns();
    CHECK_EQ(rb_writev_wait(NULL, ok, 2, -1), RB_EINVAL);
    CHECK_EQ(rb_writev_wait(rb, ok, -1, -1), RB_EINVAL);
    CHECK_EQ(rb_writev_wait(rb, NULL, 1, -1), RB_EINVAL);
    CHECK_EQ(rb_writev_wait(rb, null_base, 3, -1), RB_EINVAL);
    CHECK_EQ(rb_writev_wait(rb, NULL, 0, -1), RB_ESIZE);
    CHECK_EQ(rb_writev_wait(rb, empties, 3, -1), RB_ESIZE);
    CHECK_EQ(rb_writev_wait(rb, too_big, 3, -1), RB_ESIZE);
    CHECK_EQ(rb_writev_wait(rb, wraps, 2, -1), RB_ESIZE);
    CHECK(now_ns() - t0 < 500 * MS);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_tail, 0);

    /* RB_EFULL (rb_writev_wait: RB_ETIMEDOUT), writing nothing. */
    CHECK_EQ(rb_writev(rb, max_ok, 3), RB_OK);
    size_t fl[8];
    REQUIRE(fill_exact(rb, 10, fl, 8) > 0);
    size_t n0;
    unsigned char *before = tu_slurp(path, &n0);
    REQUIRE(before != NULL);
    struct iovec tiny[2] = {{m, 1}, {NULL, 0}};
    CHECK_EQ(rb_writev(rb, tiny, 2), RB_EFULL);
    CHECK_EQ(rb_writev(rb, ok, 2), RB_EFULL);
    CHECK_EQ(rb_writev_wait(rb, tiny, 2, 0), RB_ETIMEDOUT);
    CHECK_EQ(rb_writev_wait(rb, ok, 2, 20 * MS), RB_ETIMEDOUT);
    size_t n1;
    unsigned char *after = tu_slurp(path, &n1);
    REQUIRE(after != NULL);
    if (CHECK_EQ_U(n1, n0)) {
        /* Nothing changed but our slot's counters: three non-blocking
         * "full" results (rb_writev_wait with 0 does not wait), a park. */
        const off_t counts = slot_off(0, SLOT_OFF_COUNT_OWN);
        uint64_t full0, full1;
        memcpy(&full0, before + counts + 8 * 5, 8);
        memcpy(&full1, after + counts + 8 * 5, 8);
        CHECK_EQ_U(full1 - full0, 3);
        memset(before + counts, 0, 256);
        memset(after + counts, 0, 256);
        CHECK_MEM_EQ(after, before, n0);
    }
    free(before);
    free(after);
    /* Room again after a read: the smaller one goes in. */
    unsigned char b[4096];
    size_t len;
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_OK);
    CHECK_EQ_U(len, 2048);
    CHECK_EQ(rb_writev_wait(rb, ok, 2, 0), RB_OK);

    /* RB_ECLOSED after rb_shutdown, for whatever size; bad vectors are
     * still RB_EINVAL (as rb_write's NULL message). */
    CHECK_EQ(rb_shutdown(rb), RB_OK);
    CHECK_EQ(rb_writev(rb, ok, 2), RB_ECLOSED);
    CHECK_EQ(rb_writev(rb, too_big, 3), RB_ECLOSED);
    CHECK_EQ(rb_writev(rb, NULL, 0), RB_ECLOSED);
    CHECK_EQ(rb_writev_wait(rb, ok, 2, -1), RB_ECLOSED);
    CHECK_EQ(rb_writev(rb, null_base, 3), RB_EINVAL);
    CHECK_EQ(rb_writev(rb, ok, -1), RB_EINVAL);
}

/* ---- rb_read_many ------------------------------------------------------------ */

TEST(read_many)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    for (uint64_t s = 1; s <= 12; s++)
        REQUIRE_EQ(put(rb, s, s), RB_OK); /* message s has s bytes */
    unsigned char buf[256], expect[64];
    size_t lens[16], count = 99;

    /* max_count caps the batch; messages are packed back to back. */
    memset(buf, 0xAA, sizeof buf);
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 4, &count), RB_OK);
    CHECK_EQ_U(count, 4);
    size_t off = 0;
    for (size_t i = 0; i < 4 && i < count; i++) {
        CHECK_EQ_U(lens[i], i + 1);
        make_msg(expect, i + 1, i + 1);
        CHECK_MEM_EQ(buf + off, expect, i + 1);
        off += lens[i];
    }
    CHECK_EQ_U(off, 1 + 2 + 3 + 4);
    CHECK_EQ(buf[off], 0xAA);

    /* The buffer runs out: exactly 5 + 6 + 7 bytes take three. */
    memset(buf, 0xAA, sizeof buf);
    CHECK_EQ(rb_read_many(rb, buf, 18, lens, 16, &count), RB_OK);
    CHECK_EQ_U(count, 3);
    off = 0;
    for (size_t i = 0; i < 3 && i < count; i++) {
        CHECK_EQ_U(lens[i], i + 5);
        make_msg(expect, i + 5, i + 5);
        CHECK_MEM_EQ(buf + off, expect, i + 5);
        off += lens[i];
    }
    /* One byte short of the next two (8 + 9) takes one. */
    CHECK_EQ(rb_read_many(rb, buf, 16, lens, 16, &count), RB_OK);
    CHECK_EQ_U(count, 1);
    CHECK_EQ_U(lens[0], 8);

    /* The first does not fit: RB_ETRUNC, lens[0] = needed, nothing
     * consumed, buf untouched. */
    CHECK_EQ(positions(rb), RB_OK);
    uint64_t h0 = g_head;
    memset(buf, 0xAA, sizeof buf);
    count = 99;
    lens[0] = 0;
    CHECK_EQ(rb_read_many(rb, buf, 8, lens, 16, &count), RB_ETRUNC);
    CHECK_EQ_U(lens[0], 9);
    CHECK_EQ_U(count, 0);
    CHECK_EQ(buf[0], 0xAA);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, h0);

    /* max_count 0: RB_OK, nothing consumed, lens may be NULL. */
    count = 99;
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, NULL, 0, &count), RB_OK);
    CHECK_EQ_U(count, 0);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, h0);

    /* The rest: stops when the ring is empty. */
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 16, &count), RB_OK);
    CHECK_EQ_U(count, 4);
    off = 0;
    for (size_t i = 0; i < 4 && i < count; i++) {
        CHECK_EQ_U(lens[i], i + 9);
        make_msg(expect, i + 9, i + 9);
        CHECK_MEM_EQ(buf + off, expect, i + 9);
        off += lens[i];
    }
    count = 99;
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 16, &count), RB_EEMPTY);
    CHECK_EQ_U(count, 0);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
}

/* ---- positions and accounting ---------------------------------------------- */

TEST(positions_advance_by_record_size)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 8192, 0, &rb), RB_OK);
    static const size_t lens[] = {1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 100, 1000, 4095, 4096};
    const size_t n = sizeof lens / sizeof lens[0];
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_U(rec_size(lens[i]), (8 + lens[i] + 7) & ~(size_t)7);
    CHECK_EQ_U(rec_size(1), 16);
    CHECK_EQ_U(rec_size(8), 16);
    CHECK_EQ_U(rec_size(9), 24);
    uint64_t head = 0, tail = 0, seq = 0, rseq = 0;
    size_t qlen[64];
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < n; i++) {
            /* Make room by reading the oldest messages. */
            while (tail - head + rec_size(lens[i]) > 8192) {
                if (!GET_CHECK(rb, rseq, qlen[rseq % 64]))
                    return;
                head += rec_size(qlen[rseq % 64]);
                rseq++;
                CHECK_EQ(positions(rb), RB_OK);
                CHECK_EQ_U(g_head, head);
                CHECK_EQ_U(g_tail, tail);
            }
            if (!CHECK_EQ(put(rb, seq, lens[i]), RB_OK))
                return;
            qlen[seq % 64] = lens[i];
            seq++;
            tail += rec_size(lens[i]);
            CHECK_EQ(positions(rb), RB_OK);
            CHECK_EQ_U(g_tail, tail);
            CHECK_EQ_U(g_head, head);
        }
    }
    while (rseq < seq) {
        if (!GET_CHECK(rb, rseq, qlen[rseq % 64]))
            return;
        head += rec_size(qlen[rseq % 64]);
        rseq++;
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, head);
    }
    CHECK_EQ_U(head, tail);
    CHECK(tail > 2 * 8192);
}

TEST(free_space_accounting_exact)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    static const size_t sizes[] = {1, 7, 8, 9, 16, 24, 50, 100, 120, 248, 504, 1000, 1020, 1500, 2040, 2048};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const size_t L = sizes[k];
        const uint64_t rec = rec_size(L), fits = 4096 / rec;
        char name[16];
        snprintf(name, sizeof name, "r%zu", k);
        AUTO_RING(rb);
        REQUIRE_EQ(rb_create(tu_path(dir, name), 4096, 0, &rb), RB_OK);
        /* Twice: from position 0 and from wherever the first round left
         * the positions (not a multiple of the record size in general). */
        uint64_t seq = 0, next_read = 0;
        for (int round = 0; round < 3; round++) {
            uint64_t n = 0;
            int rc;
            while ((rc = put(rb, seq, L)) == RB_OK) {
                seq++;
                n++;
                if (n > fits)
                    break;
            }
            if (CHECK_EQ(rc, RB_EFULL) && n != fits)
                FAILF("size %zu round %d: wrote %llu messages, expected %llu", L, round, (unsigned long long)n,
                      (unsigned long long)fits);
            CHECK_EQ(positions(rb), RB_OK);
            CHECK_EQ_U(g_tail - g_head, fits * rec);
            /* Reading one makes room for exactly one. */
            GET_CHECK(rb, next_read, L);
            next_read++;
            CHECK_EQ(put(rb, seq, L), RB_OK);
            seq++;
            CHECK_EQ(put(rb, seq, L), RB_EFULL);
            /* Drain. */
            while (next_read < seq) {
                if (!GET_CHECK(rb, next_read, L))
                    break;
                next_read++;
            }
            /* Shift the positions by a record of another size. */
            CHECK_EQ(put(rb, 999999, 24 + 8 * (size_t)round), RB_OK);
            GET_CHECK(rb, 999999, 24 + 8 * (size_t)round);
        }
    }
}

TEST(free_space_with_write_many)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    /* 50 messages of 100 bytes (112 each): exactly 36 fit. */
    size_t lens[50];
    for (int i = 0; i < 50; i++)
        lens[i] = 100;
    unsigned char *d = pack(0, lens, 50);
    size_t written = 0;
    CHECK_EQ(rb_write_many(rb, d, lens, 50, &written), RB_OK);
    CHECK_EQ_U(written, 36);
    GET_CHECK(rb, 0, 100);
    CHECK_EQ(rb_write_many(rb, d + 36 * 100, lens, 14, &written), RB_OK);
    CHECK_EQ_U(written, 1);
    CHECK_EQ(rb_write_many(rb, d + 37 * 100, lens, 13, &written), RB_EFULL);
    for (uint64_t i = 1; i < 37; i++)
        GET_CHECK(rb, i, 100);
    free(d);
}

/* ---- persistence ---------------------------------------------------------------- */

TEST(data_survives_close_and_reopen)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 8192, 0, &rb), RB_OK);
    /* Move the positions past a wrap first. */
    for (uint64_t s = 0; s < 20; s++) {
        CHECK_EQ(put(rb, s, 700), RB_OK);
        GET_CHECK(rb, s, 700);
    }
    for (uint64_t s = 100; s < 110; s++)
        CHECK_EQ(put(rb, s, 1 + s * 13 % 700), RB_OK);
    GET_CHECK(rb, 100, 1 + 100 * 13 % 700);
    CHECK_EQ(positions(rb), RB_OK);
    uint64_t h = g_head, t = g_tail;
    CLOSE(rb);
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    CHECK_EQ_U(rb_capacity(rb), 8192);
    CHECK_EQ_U(rb_max_message_size(rb), 4096);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, h);
    CHECK_EQ_U(g_tail, t);
    for (uint64_t s = 101; s < 105; s++)
        GET_CHECK(rb, s, 1 + s * 13 % 700);
    CLOSE(rb);
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    CHECK_EQ(put(rb, 200, 333), RB_OK);
    for (uint64_t s = 105; s < 110; s++)
        GET_CHECK(rb, s, 1 + s * 13 % 700);
    GET_CHECK(rb, 200, 333);
    size_t len;
    unsigned char b[8];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
    CHECK_EQ_U(tu_read_u32(path, OFF_GROUPS + GROUP_OFF_TURN), 0);
    CHECK_EQ_U(tu_read_u32(path, OFF_RECLAIM_TURN), 0);
}

TEST(two_handles_one_process)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(a);
    AUTO_RING(b);
    REQUIRE_EQ(rb_create(path, 4096, 0, &a), RB_OK);
    REQUIRE_EQ(rb_open(path, &b), RB_OK);
    for (uint64_t s = 0; s < 3000; s++) {
        rb_ring *w = (s & 1) ? a : b, *r = (s % 3) ? b : a;
        CHECK_EQ(put(w, s, 1 + s % 1000), RB_OK);
        if (!GET_CHECK(r, s, 1 + s % 1000))
            break;
    }
    uint64_t ha, ta, hb, tb;
    CHECK_EQ(rb_positions(a, &ha, &ta), RB_OK);
    CHECK_EQ(rb_positions(b, &hb, &tb), RB_OK);
    CHECK_EQ_U(ha, hb);
    CHECK_EQ_U(ta, tb);
    CHECK_EQ_U(ha, ta);
    /* The full test must not trust a stale view of the other handle: fill
     * through a, drain through b, fill again through a. */
    uint64_t n = 0;
    while (put(a, n, 500) == RB_OK)
        n++;
    CHECK_EQ_U(n, 4096 / 512);
    for (uint64_t s = 0; s < n; s++)
        GET_CHECK(b, s, 500);
    uint64_t m = 0;
    while (put(a, 100 + m, 500) == RB_OK)
        m++;
    CHECK_EQ_U(m, n);
    for (uint64_t s = 0; s < m; s++)
        GET_CHECK(b, 100 + s, 500);
}

/* The reclaim boundary: head at offset 256 of the file (rb_info's
 * reclaimed), as rb_info and the file both report it. */
static uint64_t reclaimed(rb_ring *rb, const char *path)
{
    struct rb_info in;
    memset(&in, 0, sizeof in);
    CHECK_EQ(rb_info_ex(rb, &in, sizeof in, RB_INFO_NO_COUNT), RB_OK);
    CHECK_EQ_U(in.reclaimed, tu_read_u64(path, OFF_HEAD));
    return in.reclaimed;
}

/* Reads no longer zero what they consume: they move their group's head.
 * Writers zero records read by every group when they need the space (the
 * reclaim), moving head (offset 256) up to the lowest group head. At all
 * times the free part [tail, head + capacity) is zero. */
TEST(read_records_are_zeroed_when_reclaimed)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    for (uint64_t s = 0; s < 50; s++) {
        CHECK_EQ(put(rb, s, 1 + s * 29 % 700), RB_OK);
        CHECK_EQ(put(rb, s + 1000, 3), RB_OK);
        GET_CHECK(rb, s, 1 + s * 29 % 700);
        GET_CHECK(rb, s + 1000, 3);
        /* After every step: the free part is zero, and what was read but
         * not reclaimed yet stays (lazily) in [reclaimed, head). */
        CHECK_EQ(positions(rb), RB_OK);
        uint64_t r = reclaimed(rb, path);
        CHECK_EQ_U(g_head, g_tail);
        CHECK(r <= g_head && g_tail - r <= 4096);
        if (!CHECK(data_zero(path, 4096, g_tail, r + 4096)))
            break;
    }
    /* It wrapped, so writers reclaimed; the last records read are still
     * there (a read zeroes nothing), and all of it is writable. */
    CHECK_EQ(positions(rb), RB_OK);
    const uint64_t t0 = g_tail, r0 = reclaimed(rb, path);
    CHECK(t0 > 4096 && r0 > 0);
    CHECK(r0 < t0);
    CHECK(!data_zero(path, 4096, r0, t0));
    struct rb_info in;
    REQUIRE_EQ(rb_info(rb, &in), RB_OK);
    CHECK_EQ_U(in.head, t0);
    CHECK_EQ_U(in.tail, t0);
    CHECK_EQ_U(in.reclaimed, r0);
    CHECK_EQ_U(in.writable, 4096);
    CHECK_EQ_U(in.messages, 0);
    /* Write until a write needs the space of what was read: that write
     * reclaims everything the group read (up to its head, t0), zeroing it,
     * and no more. */
    uint64_t n = 0;
    while (reclaimed(rb, path) == r0 && n < 16)
        CHECK_EQ(put(rb, 100 + n++, 300), RB_OK);
    CHECK_EQ_U(reclaimed(rb, path), t0);
    CHECK_EQ_U(n, (r0 + 4096 - t0) / rec_size(300) + 1);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, t0);
    CHECK_EQ_U(g_tail, t0 + n * rec_size(300));
    CHECK(data_zero(path, 4096, g_tail, t0 + 4096));
    REQUIRE_EQ(rb_info(rb, &in), RB_OK);
    CHECK_EQ_U(in.messages, n);
    CHECK_EQ_U(in.writable, 4096 - n * rec_size(300));
    /* Reading them moves the group head only. */
    GET_CHECK(rb, 100, 300);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, t0 + rec_size(300));
    CHECK_EQ_U(reclaimed(rb, path), t0);
    CHECK(!data_zero(path, 4096, t0, t0 + 8));
    CHECK(data_zero(path, 4096, g_tail, t0 + 4096));
    for (uint64_t s = 1; s < n; s++)
        GET_CHECK(rb, 100 + s, 300);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, g_tail);
    CHECK_EQ_U(reclaimed(rb, path), t0);
}

/* ---- forged records ------------------------------------------------------------ */

/* Rewrites the header word of the record at position pos of the ring file. */
static uint64_t record_word(const char *path, uint64_t cap, uint64_t pos)
{
    return tu_read_u64(path, HEADER_SIZE + (off_t)(pos & (cap - 1)));
}
static int set_record_word(const char *path, uint64_t cap, uint64_t pos, uint64_t w)
{
    return tu_patch_u64(path, HEADER_SIZE + (off_t)(pos & (cap - 1)), w);
}

TEST(discard_record_is_skipped)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    CHECK_EQ(put(rb, 1, 20), RB_OK); /* at 0, 32 bytes */
    CHECK_EQ(put(rb, 2, 30), RB_OK); /* at 32, 40 bytes */
    CHECK_EQ(put(rb, 3, 40), RB_OK); /* at 72, 48 bytes */
    CHECK_EQ(put(rb, 4, 50), RB_OK); /* at 120, 64 bytes */
    CLOSE(rb);
    uint64_t w = record_word(path, 4096, 0);
    CHECK_EQ_U(w & 0xFFFFFFFFu, 20);
    CHECK_EQ_U((w >> 32) & 0xFF, 0);
    CHECK_EQ_U(w >> 40, tu_slot_id(path, 0)); /* the writer's id: its slot and generation */
    CHECK_EQ_U(tu_slot_id(path, 0), slot_id(0, 1));
    /* Discard the head record and the third one. */
    REQUIRE(set_record_word(path, 4096, 0, (w & ~(0xFFull << 32)) | ((uint64_t)REC_DISCARD << 32)) == 0);
    w = record_word(path, 4096, 72);
    REQUIRE(set_record_word(path, 4096, 72, (w & ~(0xFFull << 32)) | ((uint64_t)REC_DISCARD << 32)) == 0);
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    GET_CHECK(rb, 2, 30);
    GET_CHECK(rb, 4, 50);
    size_t len;
    unsigned char b[64];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 184);
    CHECK_EQ_U(g_tail, 184);
    CLOSE(rb);
    /* Read (and skipped) records are not zeroed by the reads: the ring was
     * never full, so no writer reclaimed them; the rest is zero. */
    CHECK_EQ_U(tu_read_u64(path, OFF_HEAD), 0);
    CHECK_EQ_U(tu_read_u64(path, OFF_GROUPS + GROUP_OFF_HEAD), 184);
    CHECK(data_zero(path, 4096, 184, 4096));

    /* With rb_read_many, and a ring holding nothing but a discarded record:
     * RB_EEMPTY, and its space is reclaimed. */
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    CHECK_EQ(put(rb, 5, 10), RB_OK); /* at 184 */
    CHECK_EQ(put(rb, 6, 10), RB_OK); /* at 208 */
    CHECK_EQ(put(rb, 7, 10), RB_OK); /* at 232 */
    CLOSE(rb);
    for (uint64_t pos = 184; pos <= 232; pos += 48) {
        w = record_word(path, 4096, pos);
        REQUIRE(set_record_word(path, 4096, pos, w | ((uint64_t)REC_DISCARD << 32)) == 0);
    }
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    size_t lens[4], count = 9;
    unsigned char buf[64], e[10];
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 4, &count), RB_OK);
    CHECK_EQ_U(count, 1);
    CHECK_EQ_U(lens[0], 10);
    make_msg(e, 10, 6);
    CHECK_MEM_EQ(buf, e, 10);
    CHECK_EQ(rb_read_many(rb, buf, sizeof buf, lens, 4, &count), RB_EEMPTY);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 256);
    CHECK_EQ_U(g_tail, 256);
    /* The whole capacity is usable again: the writes reclaim the discarded
     * records with the rest. */
    uint64_t n = 0;
    while (put(rb, 10 + n, 504) == RB_OK)
        n++;
    CHECK_EQ_U(n, 8);
    CHECK_EQ_U(tu_read_u64(path, OFF_HEAD), 256);
    for (uint64_t s = 0; s < n; s++)
        GET_CHECK(rb, 10 + s, 504);
}

struct bad_record {
    const char *what;
    uint64_t len;
    uint32_t flags;
};

TEST(impossible_record_is_corrupt)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    static const struct bad_record cases[] = {
        {"length max_message + 1", 2049, 0},
        {"length capacity", 4096, 0},
        {"length 2^32 - 1", 0xFFFFFFFFu, 0},
        {"unknown flag 0x04", 20, 0x04},
        {"unknown flag 0x80", 20, 0x80},
        {"unknown flag with DISCARD", 20, 0x06},
        {"BUSY and DISCARD together (fuzzing found rb_info counting it)", 20, 0x03},
        {"discarded, length max_message + 1", 2049, REC_DISCARD},
        {"length 0, not discarded (only a DISCARD record may be empty)", 0, 0},
        {"length 0, BUSY and DISCARD", 0, REC_BUSY | REC_DISCARD},
        /* A record at the head that reaches past tail (a forged file): two
         * 20-byte messages are in the ring, 64 bytes in use. Consuming it
         * would move head beyond tail and lose later writes. */
        {"length 57 (a 72-byte record, past tail)", 57, 0},
        {"length 2000 (past tail)", 2000, 0},
        {"length max_message (past tail)", 2048, 0},
        {"discarded, length 2000 (past tail)", 2000, REC_DISCARD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%zu", i);
        const char *path = tu_path(dir, name);
        AUTO_RING(rb);
        REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
        CHECK_EQ(put(rb, 1, 20), RB_OK);
        CHECK_EQ(put(rb, 2, 20), RB_OK);
        CLOSE(rb);
        REQUIRE(set_record_word(path, 4096, 0, rec_word(cases[i].len, cases[i].flags, tu_slot_id(path, 0))) == 0);
        REQUIRE_EQ(rb_open(path, &rb), RB_OK);
        unsigned char buf[4096];
        size_t len = 777, lens[4] = {0}, count = 9;
        int rc = rb_read(rb, buf, sizeof buf, &len);
        if (rc != RB_ECORRUPT)
            FAILF("%s: rb_read -> %d (%s), expected RB_ECORRUPT", cases[i].what, rc, rb_strerror(rc));
        CHECK_EQ_U(len, 777);
        rc = rb_read_many(rb, buf, sizeof buf, lens, 4, &count);
        if (rc != RB_ECORRUPT)
            FAILF("%s: rb_read_many -> %d (%s), expected RB_ECORRUPT", cases[i].what, rc, rb_strerror(rc));
        CHECK_EQ_U(count, 0);
        /* rb_info's walk agrees with the readers. */
        struct rb_info info;
        rc = rb_info(rb, &info);
        if (rc != RB_ECORRUPT)
            FAILF("%s: rb_info -> %d (%s), expected RB_ECORRUPT", cases[i].what, rc, rb_strerror(rc));
        /* Nothing was consumed: it stays corrupt. */
        CHECK_EQ(positions(rb), RB_OK);
        CHECK_EQ_U(g_head, 0);
        CHECK_EQ_U(g_tail, 64);
        CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_ECORRUPT);
        CHECK_EQ(rb_read(rb, NULL, 0, &len), RB_ECORRUPT);
        CLOSE(rb);
        CHECK_EQ_U(tu_read_u32(path, OFF_GROUPS + GROUP_OFF_TURN), 0);
        CHECK_EQ_U(tu_read_u32(path, OFF_RECLAIM_TURN), 0);
    }
}

TEST(busy_record_at_head_reads_empty)
{
    /* A reserved record whose writer has not committed yet: consumers see
     * nothing to read (and do not skip it). The writer is alive: the
     * record is forged with the id of a handle that stays open. */
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    const char *path = tu_path(dir, "ring");
    AUTO_RING(rb);
    AUTO_RING(writer);
    REQUIRE_EQ(rb_create(path, 4096, 0, &rb), RB_OK);
    CHECK_EQ(put(rb, 1, 20), RB_OK);
    CHECK_EQ(put(rb, 2, 20), RB_OK);
    CLOSE(rb);
    REQUIRE_EQ(rb_open(path, &writer), RB_OK); /* slot 0 again, next generation */
    uint64_t w = record_word(path, 4096, 0);
    REQUIRE(set_record_word(path, 4096, 0, rec_word(20, REC_BUSY, tu_slot_id(path, 0))) == 0);
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    /* Even checking at once whether the writer is alive, the reader waits. */
    CHECK_EQ(rb_set_stall_timeout(rb, 0), RB_OK);
    unsigned char buf[64];
    size_t len = 5;
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY);
    CHECK_EQ(positions(rb), RB_OK);
    CHECK_EQ_U(g_head, 0);
    /* Committing it (as its writer would) releases both. */
    CLOSE(rb);
    REQUIRE(set_record_word(path, 4096, 0, w) == 0);
    REQUIRE_EQ(rb_open(path, &rb), RB_OK);
    GET_CHECK(rb, 1, 20);
    GET_CHECK(rb, 2, 20);
}

/* ---- wrapping ---------------------------------------------------------------- */

TEST(wrap_at_every_offset)
{
    /* Start a message at every 8-byte offset of the last 600 bytes of the
     * ring, so that its header and payload straddle the end in every way. */
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    static const size_t lens[] = {1, 8, 9, 100, 599, 2048};
    uint64_t seq = 0;
    for (uint64_t off = 4096 - 600; off < 4096 + 8; off += 8) {
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            CHECK_EQ(positions(rb), RB_OK);
            /* Advance to the next multiple of 4096 plus off with fillers. */
            uint64_t target = (g_tail + 4096 - 1) / 4096 * 4096 + (off & 4095);
            if (target - g_tail == 8)
                target += 4096; /* no record is 8 bytes long */
            while (g_tail < target) {
                uint64_t gap = target - g_tail;
                /* 2056-byte records, then one of exactly the rest (>= 16). */
                size_t fl = gap >= 2056 + 16 || gap == 2056 ? 2048 : (size_t)(gap - 8);
                if (gap > 2056 && gap < 2056 + 16)
                    fl = 1024; /* leave a gap that one record can fill */
                if (!CHECK_EQ(put(rb, 1u << 30, fl), RB_OK))
                    return;
                GET_CHECK(rb, 1u << 30, fl);
                CHECK_EQ(positions(rb), RB_OK);
            }
            CHECK_EQ_U(g_tail & 4095, off & 4095);
            CHECK_EQ(put(rb, seq, lens[k]), RB_OK);
            GET_CHECK(rb, seq, lens[k]);
            seq++;
        }
    }
}

/* Many messages through a small ring with random sizes and a random number
 * in flight, each checked byte for byte, positions checked after every
 * call. use_many: 0 rb_write and rb_read only; 1 also rb_write_many and
 * rb_read_many; 2 also rb_writev (cut at random) and rb_read_many. */
static void wrap_run(uint64_t cap, size_t max_len, uint64_t nmsg, uint64_t seed, int use_many)
{
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), cap, 0, &rb), RB_OK);
    const size_t maxm = rb_max_message_size(rb);
    if (max_len > maxm)
        max_len = maxm;
    uint64_t wseq = 0, rseq = 0, head = 0, tail = 0, rng = seed;
    size_t *qlen = malloc(nmsg * sizeof *qlen); /* length of message s */
    unsigned char *buf = malloc(2 * cap), *exp = malloc(maxm);
    REQUIRE(qlen != NULL && buf != NULL && exp != NULL);
    for (uint64_t s = 0; s < nmsg; s++) {
        rng = mix64(rng);
        /* Mostly smallish, some up to max_len. */
        size_t r = (size_t)(rng >> 8);
        qlen[s] = 1 + ((rng & 3) == 0 ? r % max_len : r % (max_len < 300 ? max_len : 300));
    }
    int failed = 0;
    while (rseq < nmsg && !failed) {
        rng = mix64(rng);
        unsigned burst = 1 + (unsigned)(rng % 8);
        /* Write a burst (stop at full). */
        for (unsigned b = 0; b < burst && wseq < nmsg; b++) {
            int rc;
            size_t nw = 1;
            if (use_many == 2 && (rng & 16)) {
                rc = putv(rb, wseq, qlen[wseq], rng ^ wseq);
            } else if (use_many && (rng & 16)) {
                size_t cnt = 1 + (size_t)((rng >> 20) % 5);
                if (cnt > nmsg - wseq)
                    cnt = (size_t)(nmsg - wseq);
                size_t total = 0;
                for (size_t i = 0; i < cnt; i++)
                    total += qlen[wseq + i];
                unsigned char *d = pack(wseq, qlen + wseq, cnt);
                rc = rb_write_many(rb, d, qlen + wseq, cnt, &nw);
                free(d);
                (void)total;
            } else {
                rc = put(rb, wseq, qlen[wseq]);
            }
            if (rc == RB_EFULL) {
                /* Must really be full for that message. */
                if (tail - head + rec_size(qlen[wseq]) <= cap) {
                    FAILF("RB_EFULL with %llu used of %llu for a record of %llu", (unsigned long long)(tail - head),
                          (unsigned long long)cap, (unsigned long long)rec_size(qlen[wseq]));
                    failed = 1;
                }
                break;
            }
            if (!CHECK_EQ(rc, RB_OK)) {
                failed = 1;
                break;
            }
            for (size_t i = 0; i < nw; i++)
                tail += rec_size(qlen[wseq + i]);
            wseq += nw;
            if (!CHECK_EQ(positions(rb), RB_OK) || !CHECK_EQ_U(g_tail, tail) || !CHECK_EQ_U(g_head, head)) {
                failed = 1;
                break;
            }
        }
        /* Read a burst (stop at empty). */
        rng = mix64(rng);
        burst = 1 + (unsigned)(rng % 8);
        for (unsigned b = 0; b < burst && !failed; b++) {
            if (use_many && (rng & 32)) {
                size_t lens[8], count = 0;
                size_t bsz = (size_t)(rng >> 24) % (2 * cap);
                int rc = rb_read_many(rb, buf, bsz, lens, 8, &count);
                if (rc == RB_EEMPTY) {
                    if (!CHECK_EQ_U(rseq, wseq))
                        failed = 1;
                    break;
                }
                if (rc == RB_ETRUNC) {
                    if (!CHECK(rseq < wseq && lens[0] == qlen[rseq] && lens[0] > bsz))
                        failed = 1;
                    continue;
                }
                if (!CHECK_EQ(rc, RB_OK)) {
                    failed = 1;
                    break;
                }
                size_t off = 0;
                for (size_t i = 0; i < count; i++) {
                    if (!CHECK_EQ_U(lens[i], qlen[rseq])) {
                        failed = 1;
                        break;
                    }
                    make_msg(exp, lens[i], rseq);
                    if (memcmp(buf + off, exp, lens[i]) != 0) {
                        FAILF("seq %llu (len %zu, at position %llu): payload differs", (unsigned long long)rseq,
                              lens[i], (unsigned long long)head);
                        failed = 1;
                        break;
                    }
                    off += lens[i];
                    head += rec_size(lens[i]);
                    rseq++;
                }
                /* It stopped for a reason: empty, count, or no room. */
                if (!failed && count < 8 && rseq < wseq && qlen[rseq] <= bsz - off) {
                    FAILF("rb_read_many stopped early: %zu read, next %zu bytes, %zu left", count, qlen[rseq],
                          bsz - off);
                    failed = 1;
                }
            } else {
                size_t len = 0;
                int rc = rb_read(rb, buf, maxm, &len);
                if (rc == RB_EEMPTY) {
                    if (!CHECK_EQ_U(rseq, wseq))
                        failed = 1;
                    break;
                }
                if (!CHECK_EQ(rc, RB_OK) || !CHECK_EQ_U(len, qlen[rseq])) {
                    failed = 1;
                    break;
                }
                make_msg(exp, len, rseq);
                if (memcmp(buf, exp, len) != 0) {
                    FAILF("seq %llu (len %zu, at position %llu): payload differs", (unsigned long long)rseq, len,
                          (unsigned long long)head);
                    failed = 1;
                    break;
                }
                head += rec_size(len);
                rseq++;
            }
            if (!CHECK_EQ(positions(rb), RB_OK) || !CHECK_EQ_U(g_tail, tail) || !CHECK_EQ_U(g_head, head))
                failed = 1;
        }
    }
    CHECK_EQ_U(rseq, nmsg);
    /* It really went around many times. */
    CHECK(tail / cap >= 100);
    free(qlen);
    free(buf);
    free(exp);
}

TEST(wrap_random_sizes_4k) { wrap_run(4096, 2048, 100000, 1, 0); }
TEST(wrap_random_sizes_small_messages) { wrap_run(4096, 64, 40000, 2, 0); }
TEST(wrap_random_sizes_16k) { wrap_run(16384, 8192, 20000, 3, 0); }
TEST(wrap_random_sizes_many) { wrap_run(4096, 2048, 100000, 4, 1); }
TEST(wrap_random_sizes_many_small) { wrap_run(8192, 100, 40000, 5, 1); }
TEST(wrap_random_sizes_writev) { wrap_run(4096, 2048, 100000, 6, 2); }
TEST(wrap_random_sizes_writev_small) { wrap_run(8192, 100, 40000, 7, 2); }

TEST(wrap_every_size)
{
    /* Every size from 1 to max, in a ring kept partly full so that they
     * land at all kinds of offsets. */
    AUTO_DIR(dir);
    REQUIRE(dir != NULL);
    AUTO_RING(rb);
    REQUIRE_EQ(rb_create(tu_path(dir, "ring"), 4096, 0, &rb), RB_OK);
    uint64_t rseq = 1;
    for (size_t len = 1; len <= 2048; len++) {
        while (put(rb, len, len) == RB_EFULL) {
            if (!GET_CHECK(rb, rseq, rseq))
                return;
            rseq++;
        }
    }
    while (rseq <= 2048) {
        if (!GET_CHECK(rb, rseq, rseq))
            return;
        rseq++;
    }
    size_t len;
    unsigned char b[8];
    CHECK_EQ(rb_read(rb, b, sizeof b, &len), RB_EEMPTY);
}

/* ---- rb_info ------------------------------------------------------------------- */

/* rb_info: a snapshot that counts the records between head and tail
 * without consuming them. */
TEST(info_counts_records)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    struct rb_info in;
    CHECK_EQ(rb_info(NULL, &in), RB_EINVAL);
    CHECK_EQ(rb_info(f.rb, NULL), RB_EINVAL);
    CHECK_EQ(put(f.rb, 1, 100), RB_OK);
    CHECK_EQ(put(f.rb, 2, 50), RB_OK);
    void *p, *p2;
    REQUIRE_EQ(rb_reserve(f.rb, 10, &p), RB_OK);
    REQUIRE_EQ(rb_reserve(f.rb, 20, &p2), RB_OK);
    REQUIRE_EQ(rb_abort(f.rb, p2), RB_OK);
    REQUIRE_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ(in.counted, 1);
    CHECK_EQ_U(in.attached, 1);
    CHECK_EQ_U(in.capacity, 4096);
    CHECK_EQ_U(in.max_message, 2048);
    CHECK_EQ_U(in.format_version, RB_FORMAT_VERSION);
    CHECK_EQ_U(in.head, 0);
    CHECK_EQ_U(in.tail, rec_size(100) + rec_size(50) + rec_size(10) + rec_size(20));
    CHECK_EQ_U(in.messages, 2);
    CHECK_EQ_U(in.message_bytes, 150);
    CHECK_EQ_U(in.busy, 1);
    CHECK_EQ_U(in.discarded, 1);
    CHECK_EQ_U(in.read_turn, 0);
    /* While another handle holds the turn (a peek), nothing is counted. */
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    const void *q;
    size_t len;
    REQUIRE_EQ(rb_peek(h2, &q, &len), RB_OK);
    REQUIRE_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ(in.counted, 0);
    CHECK_EQ_U(in.read_turn, (uint32_t)getpid()); /* the holder's pid */
    CHECK_EQ_U(in.attached, 2);
    CHECK_EQ(rb_release(h2), RB_OK);
    CHECK_EQ(rb_commit(f.rb, p), RB_OK);
    REQUIRE_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ_U(in.messages, 2); /* 2 and the committed reservation */
    CHECK_EQ_U(in.busy, 0);
    GET_CHECK(f.rb, 2, 50);
    /* The group head moved past what was read; nothing was reclaimed (no
     * write needed the space), and what was read is writable. */
    const uint64_t tail = rec_size(100) + rec_size(50) + rec_size(10) + rec_size(20);
    REQUIRE_EQ(rb_info(f.rb, &in), RB_OK);
    CHECK_EQ_U(in.head, rec_size(100) + rec_size(50));
    CHECK_EQ_U(in.tail, tail);
    CHECK_EQ_U(in.reclaimed, 0);
    CHECK_EQ_U(in.writable, 4096 - (tail - in.head));
    CHECK_EQ_U(in.ring_flags, 0);
    CHECK_EQ_U(in.groups, 1);
    CHECK_EQ_U(in.messages, 1);
}

/* rb_info_ex(RB_INFO_NO_COUNT): the same snapshot without the walk; the
 * read turn is never taken, so a peek elsewhere changes nothing and a free
 * turn stays free. */
TEST(info_without_count_leaves_the_read_turn_alone)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    struct rb_info in;
    CHECK_EQ(rb_info_ex(NULL, &in, sizeof in, RB_INFO_NO_COUNT), RB_EINVAL);
    CHECK_EQ(rb_info_ex(f.rb, NULL, sizeof in, RB_INFO_NO_COUNT), RB_EINVAL);
    CHECK_EQ(rb_info_ex(f.rb, &in, 0, RB_INFO_NO_COUNT), RB_EINVAL);
    CHECK_EQ(rb_info_ex(f.rb, &in, sizeof in, 0x2u), RB_EINVAL);
    CHECK_EQ(put(f.rb, 1, 100), RB_OK);
    CHECK_EQ(put(f.rb, 2, 50), RB_OK);
    memset(&in, 0xff, sizeof in);
    REQUIRE_EQ(rb_info_ex(f.rb, &in, sizeof in, RB_INFO_NO_COUNT), RB_OK);
    CHECK_EQ(in.counted, 0);
    CHECK_EQ_U(in.messages, 0);
    CHECK_EQ_U(in.message_bytes, 0);
    CHECK_EQ_U(in.busy, 0);
    CHECK_EQ_U(in.discarded, 0);
    CHECK_EQ_U(in.capacity, 4096);
    CHECK_EQ_U(in.max_message, 2048);
    CHECK_EQ_U(in.format_version, RB_FORMAT_VERSION);
    CHECK_EQ_U(in.head, 0);
    CHECK_EQ_U(in.tail, rec_size(100) + rec_size(50));
    CHECK_EQ_U(in.reclaimed, 0);
    CHECK_EQ_U(in.writable, 4096 - in.tail);
    CHECK_EQ_U(in.ring_flags, 0);
    CHECK_EQ_U(in.groups, 1);
    CHECK_EQ_U(in.read_turn, 0);
    CHECK_EQ_U(in.attached, 1);
    /* flags 0 is rb_info. */
    REQUIRE_EQ(rb_info_ex(f.rb, &in, sizeof in, 0), RB_OK);
    CHECK_EQ(in.counted, 1);
    CHECK_EQ_U(in.messages, 2);
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    const void *q;
    size_t len;
    REQUIRE_EQ(rb_peek(h2, &q, &len), RB_OK);
    REQUIRE_EQ(rb_info_ex(f.rb, &in, sizeof in, RB_INFO_NO_COUNT), RB_OK);
    CHECK_EQ(in.counted, 0);
    CHECK_EQ_U(in.read_turn, (uint32_t)getpid());
    CHECK_EQ_U(in.attached, 2);
    CHECK_EQ(rb_release(h2), RB_OK);
    GET_CHECK(f.rb, 2, 50);
}

/* file_id: 16 random bytes at offset 56, written at creation; rb_info
 * reports them (also without counting), the same through every handle on
 * the file; a file created again at the same path gets new ones. */
TEST(file_id_is_random_and_stable)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    struct rb_info a, b;
    REQUIRE_EQ(rb_info(f.rb, &a), RB_OK);
    static const uint8_t zero[16];
    CHECK(memcmp(a.file_id, zero, sizeof zero) != 0);
    size_t n;
    unsigned char *file = tu_slurp(f.path, &n);
    if (CHECK(file != NULL && n > OFF_FILE_ID + 16))
        CHECK_MEM_EQ(file + OFF_FILE_ID, a.file_id, 16);
    free(file);
    AUTO_RING(h2);
    REQUIRE_EQ(rb_open(f.path, &h2), RB_OK);
    memset(&b, 0, sizeof b);
    REQUIRE_EQ(rb_info_ex(h2, &b, sizeof b, RB_INFO_NO_COUNT), RB_OK);
    CHECK_MEM_EQ(b.file_id, a.file_id, 16);
    /* Traffic does not change it. */
    CHECK_EQ(put(f.rb, 1, 100), RB_OK);
    GET_CHECK(h2, 1, 100);
    REQUIRE_EQ(rb_info(f.rb, &b), RB_OK);
    CHECK_MEM_EQ(b.file_id, a.file_id, 16);
    /* Created again at the same path: another identity. */
    rb_ring *again;
    REQUIRE_EQ(rb_create(f.path, 4096, RB_REMOVE, &again), RB_OK);
    REQUIRE_EQ(rb_info(again, &b), RB_OK);
    CHECK(memcmp(b.file_id, a.file_id, 16) != 0);
    CHECK(memcmp(b.file_id, zero, sizeof zero) != 0);
    rb_close(again);
}
