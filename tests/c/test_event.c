/*
 * test_event.c - event descriptors (rb_event_fd): arguments, when the
 * descriptor polls readable and when it stops (readable and writable
 * kinds, both at once), that an idle loop does not spin, that writers pay
 * at most one wake-up per change from empty to not empty, shutdown, close,
 * fork, and watchers killed while parked (their waiter counts are reaped).
 * Also runs examples/epoll_consumer against a ring.
 *
 * "Becomes readable" is checked with a poll of a few seconds, "does not
 * poll readable" with a poll of 80 ms: sanity windows for a shared, noisy
 * 2-core machine and the sanitizers, not latency targets.
 */
#include "runner.h"
#include "testutil.h"

#include <limits.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <linux/kcmp.h>

/* ThreadSanitizer (GCC 12's) cannot follow a child of a multi-threaded
 * process that starts a thread: the parent's threads stay registered in
 * the child, and a new thread that reuses one's stack (glibc hands the
 * dead threads' stacks out again) aborts it ("dup thread with used id").
 * The one test that does so (a notifier in the parent, another in the
 * child) runs in the plain and ASan builds only. */
#if defined(__SANITIZE_THREAD__)
#define EV_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EV_TSAN 1
#endif
#endif

#define NOT_READY_MS 80 /* a poll this long that stays quiet: "does not poll readable" */
#define READY_S 3.0     /* "becomes readable" within this */
#define RING 65536

/* ---- helpers ------------------------------------------------------------------- */

/* Polls fd for readability for up to ms (-1: forever): 1 readable, 0 not, -1 error. */
static int poll_in(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t end = ms < 0 ? INT64_MAX : now_ns() + (int64_t)ms * MS;
    for (;;) {
        int left = ms < 0 ? -1 : (int)((end - now_ns() + MS - 1) / MS);
        if (ms >= 0 && left < 0)
            left = 0;
        int r = poll(&p, 1, left);
        if (r > 0)
            return (p.revents & POLLIN) ? 1 : -1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int ready_soon(int fd) { return poll_in(fd, (int)(READY_S * 1000)) == 1; }
static int quiet(int fd) { return poll_in(fd, NOT_READY_MS) == 0; }

#define CHECK_READY(fd, what) (ready_soon(fd) ? 1 : (FAILF("%s: fd did not poll readable within %.0f s", what, READY_S), 0))
#define CHECK_QUIET(fd, what) (quiet(fd) ? 1 : (FAILF("%s: fd polls readable", what), 0))

/* Reads through rb with rb_read until it reports empty and the ring really
 * is empty (a non-blocking read may also report empty while another
 * consumer, here a notifier's readiness test, holds the read turn).
 * Returns the messages read, -1 on an error. */
static int drain(rb_ring *rb)
{
    unsigned char buf[8192];
    int n = 0;
    for (int tries = 0; tries < 100000; tries++) {
        size_t len;
        int rc = rb_read(rb, buf, sizeof buf, &len);
        if (rc == RB_OK) {
            n++;
            continue;
        }
        if (rc != RB_EEMPTY)
            return -1;
        uint64_t h, t;
        if (rb_positions(rb, &h, &t) != RB_OK)
            return -1;
        if (h == t)
            return n;
    }
    return -1;
}

/* The process's thread count (/proc/self/status "Threads:"). */
static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* The thread count once it equals want (threads end a little after join
 * returns in /proc on some kernels), or the last value after 2 s. */
static int thread_count_settles(int want)
{
    int n = thread_count();
    for (int i = 0; i < 200 && n != want; i++) {
        sleep_ns(10 * MS);
        n = thread_count();
    }
    return n;
}

static void *noop_thread(void *arg) { return arg; }

/* Makes sure helper threads of the runtime (TSan's background thread
 * starts at the first pthread_create) exist before a thread count is taken. */
static void settle_runtime_threads(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, noop_thread, NULL) == 0)
        pthread_join(t, NULL);
    sleep_ns(20 * MS);
}

static int rusage_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int)(ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000 + ru.ru_stime.tv_sec * 1000 +
                 ru.ru_stime.tv_usec / 1000);
}

/* 1: a and b (descriptors of this process) are the same open file, 0: not,
 * -1: cannot tell (kcmp unavailable). */
static int same_file(int a, int b)
{
    int e = errno;
    long r = syscall(SYS_kcmp, (long)getpid(), (long)getpid(), KCMP_FILE, (long)a, (long)b);
    errno = e;
    return r == 0 ? 1 : r > 0 ? 0 : -1;
}

/* Waits until one byte arrives on fd (a child's "ready"): 1, or 0 after seconds. */
static int await_byte(int fd, double seconds)
{
    if (poll_in(fd, (int)(seconds * 1000)) != 1)
        return 0;
    char c;
    return read(fd, &c, 1) == 1;
}

static void say_ready(int fd)
{
    char c = 'r';
    if (write(fd, &c, 1) != 1)
        _exit(90);
}

static uint32_t data_seq(const char *path) { return tu_read_u32(path, OFF_DATA_SEQ); }
static uint32_t data_waiters(const char *path) { return tu_read_u32(path, OFF_DATA_WAITERS); }

/* ---- arguments ------------------------------------------------------------------- */

TEST(bad_arguments_are_rejected)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    int fd = 12345;
    CHECK_EQ(rb_event_fd(NULL, RB_EV_READABLE, &fd), RB_EINVAL);
    CHECK_EQ(rb_event_fd(f.rb, RB_EV_READABLE, NULL), RB_EINVAL);
    CHECK_EQ(rb_event_fd(f.rb, 0, &fd), RB_EINVAL);
    CHECK_EQ(rb_event_fd(f.rb, 0x4u, &fd), RB_EINVAL);
    CHECK_EQ(rb_event_fd(f.rb, RB_EV_READABLE | 0x80000000u, &fd), RB_EINVAL);
    CHECK_EQ(fd, 12345);
}

TEST(a_new_descriptor_after_shutdown_is_refused)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    int fd = 12345;
    CHECK_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_ECLOSED);
    CHECK_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &fd), RB_ECLOSED);
    CHECK_EQ(rb_event_fd(f.rb, RB_EV_READABLE | RB_EV_WRITABLE, &fd), RB_ECLOSED);
    CHECK_EQ(fd, 12345);
}

TEST(a_second_call_returns_the_same_descriptor)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    int r1 = -1, r2 = -2, w1 = -1, w2 = -2, b1 = -1, b2 = -2;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &r1), RB_OK);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &r2), RB_OK);
    CHECK_EQ(r1, r2);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &w1), RB_OK);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &w2), RB_OK);
    CHECK_EQ(w1, w2);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE | RB_EV_WRITABLE, &b1), RB_OK);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE | RB_EV_WRITABLE, &b2), RB_OK);
    CHECK_EQ(b1, b2);
    /* Three distinct descriptors, all open. */
    CHECK(r1 != w1 && r1 != b1 && w1 != b1);
    CHECK(r1 >= 0 && w1 >= 0 && b1 >= 0);
    CHECK(fcntl(r1, F_GETFD) >= 0 && fcntl(w1, F_GETFD) >= 0 && fcntl(b1, F_GETFD) >= 0);
}

TEST(both_kinds_descriptor_polls_readable_when_either_does)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    rb_ring *rb = f.rb;
    int both = -1, r = -1, w = -1;
    /* Asked for first: the two single-kind descriptors come with it. */
    REQUIRE_EQ(rb_event_fd(rb, RB_EV_READABLE | RB_EV_WRITABLE, &both), RB_OK);
    REQUIRE_EQ(rb_event_fd(rb, RB_EV_READABLE, &r), RB_OK);
    REQUIRE_EQ(rb_event_fd(rb, RB_EV_WRITABLE, &w), RB_OK);
    CHECK(both != r && both != w);

    /* Empty: writable only. */
    CHECK_QUIET(r, "empty ring, readable fd");
    CHECK_READY(w, "empty ring, writable fd");
    CHECK_READY(both, "empty ring, both-kinds fd");

    /* Neither: the ring is full of reservations not yet committed (a read
     * finds no message, a write no room). */
    void *res[64];
    int nres = 0;
    for (; nres < 64; nres++)
        if (rb_reserve(rb, 248, &res[nres]) != RB_OK)
            break;
    REQUIRE(nres > 1);
    void *p;
    CHECK_EQ(rb_reserve(rb, 1, &p), RB_EFULL); /* re-arms the writable side */
    unsigned char buf[512];
    size_t len;
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_EEMPTY); /* and the readable side */
    CHECK_QUIET(w, "full of reservations, writable fd");
    CHECK_QUIET(r, "full of reservations, readable fd");
    CHECK_QUIET(both, "full of reservations, both-kinds fd");

    /* Committing the first makes it readable (only). */
    memset(res[0], 'a', 248);
    CHECK_EQ(rb_commit(rb, res[0]), RB_OK);
    CHECK_READY(r, "a message committed, readable fd");
    CHECK_READY(both, "a message committed, both-kinds fd");
    CHECK_QUIET(w, "still full, writable fd");

    /* Reading it makes room: writable as well. */
    CHECK_EQ(rb_read(rb, buf, sizeof buf, &len), RB_OK);
    CHECK_EQ_U(len, 248);
    CHECK_READY(w, "room made, writable fd");
    CHECK_READY(both, "room made, both-kinds fd");
    for (int i = 1; i < nres; i++)
        CHECK_EQ(rb_abort(rb, res[i]), RB_OK);
}

/* ---- readable ------------------------------------------------------------------- */

TEST(empty_ring_descriptor_does_not_poll_readable)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    CHECK_QUIET(fd, "fresh fd on an empty ring");
}

TEST(descriptor_made_on_a_non_empty_ring_polls_readable_at_once)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    CHECK_EQ(put(f.rb, 1, 10), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    CHECK_READY(fd, "fresh fd on a ring holding a message");
    GET_CHECK(f.rb, 1, 10);
}

TEST(write_through_another_handle_makes_it_readable)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    AUTO_RING(other);
    REQUIRE_EQ(rb_open(f.path, &other), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    for (uint64_t round = 0; round < 3; round++) {
        CHECK_QUIET(fd, "empty");
        CHECK_EQ(put(other, round, 32), RB_OK);
        CHECK_READY(fd, "after another handle's write");
        GET_CHECK(f.rb, round, 32);
        CHECK_EQ(drain(f.rb), 0);
    }
}

TEST(write_from_another_thread_makes_it_readable)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    static unsigned char m[40];
    make_msg(m, sizeof m, 7);
    for (int round = 0; round < 3; round++) {
        /* The notifier parked first: the wake-up, not its first test, is checked. */
        CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
        struct call c;
        call_init(&c, f.rb, OP_WRITE, 0);
        c.msg = m;
        c.len = sizeof m;
        c.delay_ns = 20 * MS;
        REQUIRE(call_start(&c));
        CHECK_READY(fd, "after another thread's write");
        CALL_FINISH(&c, 10.0);
        CHECK_EQ(c.rc, RB_OK);
        GET_CHECK(f.rb, 7, sizeof m);
        CHECK_EQ(drain(f.rb), 0);
        CHECK_QUIET(fd, "read empty again");
    }
}

TEST(write_from_another_process_makes_it_readable)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rb_ring *mine;
        if (rb_open(f.path, &mine) != RB_OK)
            _exit(10);
        sleep_ns(20 * MS);
        int rc = put(mine, 99, 123);
        rb_close(mine);
        _exit(rc == RB_OK ? 0 : 11);
    }
    CHECK_READY(fd, "after another process's write");
    CHECK_CHILD_OK(wait_child(pid, 10.0), "writer process");
    GET_CHECK(f.rb, 99, 123);
    CHECK_EQ(drain(f.rb), 0);
    CHECK_QUIET(fd, "read empty again");
}

/* A peek held by another live handle: a non-blocking read here finds the
 * turn taken, so the fd must not keep polling readable (a loop would spin)
 * until the peek ends; then it polls readable for the message. */
TEST(a_peek_held_elsewhere_does_not_make_the_fd_spin)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    AUTO_RING(peeker);
    REQUIRE_EQ(rb_open(f.path, &peeker), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    CHECK_EQ(put(peeker, 5, 50), RB_OK);
    const void *p;
    size_t len;
    REQUIRE_EQ(rb_peek(peeker, &p, &len), RB_OK);
    unsigned char buf[256];
    int quiet_rounds = 0;
    for (int i = 0; i < 20 && quiet_rounds < 3; i++) {
        if (quiet(fd)) {
            quiet_rounds++;
            continue;
        }
        CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &len), RB_EEMPTY); /* the turn is the peek's */
    }
    CHECK(quiet_rounds >= 3);
    CHECK_EQ(rb_peek_cancel(peeker), RB_OK); /* the message stays */
    CHECK_READY(fd, "after the peek ended");
    GET_CHECK(f.rb, 5, 50);
}

/* A peek held by a process that is then killed: the event loop is woken and
 * its non-blocking read takes the dead process's turn over (after the
 * stall timeout), getting the message. */
TEST(a_dead_peekers_turn_is_taken_over_by_the_event_loops_read)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    rb_set_stall_timeout(f.rb, 20 * MS);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    CHECK_EQ(put(f.rb, 7, 70), RB_OK);
    int go[2];
    REQUIRE(pipe(go) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        rb_ring *mine;
        const void *p;
        size_t len;
        if (rb_open(f.path, &mine) != RB_OK || rb_peek_wait(mine, &p, &len, 5 * SEC) != RB_OK)
            _exit(10);
        char c = 1;
        if (write(go[1], &c, 1) != 1)
            _exit(11);
        for (;;)
            pause(); /* holding the turn until killed */
    }
    char c;
    REQUIRE(read(go[0], &c, 1) == 1);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    close(go[0]);
    close(go[1]);
    /* An event loop: wait for readiness, then non-blocking reads. */
    unsigned char buf[256];
    size_t len = 0;
    int got = 0, wakeups = 0;
    int64_t end = now_ns() + 5 * SEC;
    while (!got && now_ns() < end) {
        if (poll_in(fd, 1000) != 1)
            continue;
        wakeups++;
        int rc = rb_read(f.rb, buf, sizeof buf, &len);
        if (rc == RB_OK)
            got = 1;
        else
            CHECK_EQ(rc, RB_EEMPTY);
    }
    CHECK(got);
    CHECK_EQ(len, 70);
    CHECK(wakeups <= 20); /* a few stall timeouts' worth, not a spin */
}

/* One way of reading through the watched handle until it reports empty. */
enum read_kind { RK_READ, RK_READ_MANY, RK_PEEK };
static const char *const read_kind_names[] = {"rb_read", "rb_read_many", "rb_peek"};

/* One non-blocking read of kind k: RB_OK (one or more consumed) or its error. */
static int read_once(rb_ring *rb, enum read_kind k)
{
    unsigned char buf[4096];
    size_t len, lens[4], n;
    const void *p;
    switch (k) {
    case RK_READ:
        return rb_read(rb, buf, sizeof buf, &len);
    case RK_READ_MANY:
        return rb_read_many(rb, buf, sizeof buf, lens, 2, &n);
    case RK_PEEK: {
        int rc = rb_peek(rb, &p, &len);
        if (rc == RB_OK && rb_release(rb) != RB_OK)
            return RB_EINVAL;
        return rc;
    }
    }
    return RB_EINVAL;
}

TEST(readable_until_a_nonblocking_read_finds_the_ring_empty)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    AUTO_RING(writer);
    REQUIRE_EQ(rb_open(f.path, &writer), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    for (int k = RK_READ; k <= RK_PEEK; k++) {
        const char *what = read_kind_names[k];
        CHECK_QUIET(fd, what);
        for (uint64_t i = 0; i < 5; i++)
            CHECK_EQ(put(writer, i, 50), RB_OK);
        if (!CHECK_READY(fd, what))
            continue;
        /* Messages left: it stays readable. */
        CHECK_EQ(read_once(f.rb, (enum read_kind)k), RB_OK);
        if (poll_in(fd, 0) != 1)
            FAILF("%s: fd stopped polling readable with messages left", what);
        /* Consumed through another handle: the fd may stay readable (a
         * spurious readiness) until this handle finds the ring empty. */
        CHECK_EQ(drain(writer), k == RK_READ_MANY ? 3 : 4);
        int rc = RB_OK;
        for (int tries = 0; tries < 1000 && rc == RB_OK; tries++)
            rc = read_once(f.rb, (enum read_kind)k);
        CHECK_EQ(rc, RB_EEMPTY);
        CHECK_QUIET(fd, what);
        /* Until the next write. */
        CHECK_EQ(put(writer, 100, 8), RB_OK);
        CHECK_READY(fd, what);
        CHECK_EQ(drain(f.rb), 1);
        CHECK_QUIET(fd, what);
    }
}

/* ---- writable ------------------------------------------------------------------- */

/* One non-blocking write of kind k of len bytes. */
enum write_kind { WK_WRITE, WK_WRITE_MANY, WK_RESERVE, WK_WRITEV };
static const char *const write_kind_names[] = {"rb_write", "rb_write_many", "rb_reserve", "rb_writev"};

static int write_once(rb_ring *rb, enum write_kind k, size_t len)
{
    unsigned char m[2048];
    memset(m, 'w', len);
    size_t lens[2] = {len, len}, n;
    void *p;
    switch (k) {
    case WK_WRITE:
        return rb_write(rb, m, len);
    case WK_WRITE_MANY:
        return rb_write_many(rb, m, lens, 1, &n);
    case WK_RESERVE: {
        int rc = rb_reserve(rb, len, &p);
        if (rc == RB_OK) {
            memcpy(p, m, len);
            if (rb_commit(rb, p) != RB_OK)
                return RB_EINVAL;
        }
        return rc;
    }
    case WK_WRITEV: {
        struct iovec v[2] = {{m, len / 2}, {m + len / 2, len - len / 2}};
        return rb_writev(rb, v, 2);
    }
    }
    return RB_EINVAL;
}

TEST(writable_until_a_nonblocking_write_finds_the_ring_full)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(reader);
    REQUIRE_EQ(rb_open(f.path, &reader), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &fd), RB_OK);
    CHECK_READY(fd, "empty ring");
    for (int k = WK_WRITE; k <= WK_WRITEV; k++) {
        const char *what = write_kind_names[k];
        /* Fill it with 248-byte messages (256-byte records). */
        int n = 0, rc;
        while ((rc = write_once(f.rb, (enum write_kind)k, 248)) == RB_OK && n < 100)
            n++;
        CHECK_EQ(rc, RB_EFULL);
        CHECK_EQ(n, 16);
        CHECK_QUIET(fd, what);
        /* Another handle's read frees one record: writable again. */
        unsigned char buf[512];
        size_t len;
        CHECK_EQ(rb_read(reader, buf, sizeof buf, &len), RB_OK);
        CHECK_READY(fd, what);
        /* It stays writable while there is room... */
        CHECK_EQ(write_once(f.rb, (enum write_kind)k, 100), RB_OK);
        if (poll_in(fd, 0) != 1)
            FAILF("%s: fd stopped polling readable with room left", what);
        /* ...until a write finds the ring full. */
        CHECK_EQ(write_once(f.rb, (enum write_kind)k, 200), RB_EFULL);
        CHECK_QUIET(fd, what);
        CHECK_EQ(drain(reader), 16);
        CHECK_READY(fd, what);
    }
}

TEST(writable_waits_for_the_size_the_refused_write_needed)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(reader);
    REQUIRE_EQ(rb_open(f.path, &reader), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &fd), RB_OK);
    /* Full of 16-byte records, without a refused write (which would arm
     * the notifier for 16 bytes first: see the next test). */
    for (int i = 0; i < 4096 / 16; i++)
        CHECK_EQ(put(f.rb, (uint64_t)i, 8), RB_OK);
    CHECK_EQ(put(f.rb, 0, 1000), RB_EFULL); /* wants 1008 bytes */
    CHECK_QUIET(fd, "full");
    unsigned char buf[64];
    size_t len;
    CHECK_EQ(rb_read(reader, buf, sizeof buf, &len), RB_OK); /* 16 bytes free: not enough */
    CHECK_QUIET(fd, "16 bytes free, 1008 wanted");
    for (int i = 0; i < 63; i++) /* 1024 bytes free */
        CHECK_EQ(rb_read(reader, buf, sizeof buf, &len), RB_OK);
    CHECK_READY(fd, "1024 bytes free, 1008 wanted");
    CHECK_EQ(put(f.rb, 0, 1000), RB_OK);
}

/* A refused write re-arms with what it needed; a notifier already parked
 * for a larger record must test again for the smaller one (the re-arm
 * lowers need and bumps the space queue): the fd polls readable as soon as
 * the smaller write would succeed. */
TEST(writable_after_a_smaller_refused_write_polls_readable_when_it_fits)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    AUTO_RING(reader);
    REQUIRE_EQ(rb_open(f.path, &reader), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &fd), RB_OK);
    for (int i = 0; i < 4096 / 16; i++)
        CHECK_EQ(put(f.rb, (uint64_t)i, 8), RB_OK);
    CHECK_EQ(put(f.rb, 0, 1000), RB_EFULL);                 /* wants 1008 bytes */
    REQUIRE(WAIT_PARKED(f.path, OFF_SPACE_WAITERS, 1));     /* the notifier waits for them */
    CHECK_EQ(put(f.rb, 0, 8), RB_EFULL);                    /* now wants 16 */
    unsigned char buf[64];
    size_t len;
    CHECK_EQ(rb_read(reader, buf, sizeof buf, &len), RB_OK); /* 16 bytes free */
    CHECK_READY(fd, "16 bytes free, 16 wanted by the last refused write");
    CHECK_EQ(put(f.rb, 0, 8), RB_OK);
}

/* ---- cost ------------------------------------------------------------------- */

struct idle_loop {
    rb_ring *rb;
    int fd;
    atomic_int wakeups, reads;
    atomic_int end_rc;
};

/* An event loop: poll forever, then read until empty; ends at RB_ECLOSED. */
static void *idle_loop_main(void *arg)
{
    struct idle_loop *l = arg;
    for (;;) {
        if (poll_in(l->fd, -1) != 1) {
            l->end_rc = -100;
            return NULL;
        }
        atomic_fetch_add(&l->wakeups, 1);
        unsigned char buf[256];
        size_t len;
        int rc;
        while ((rc = rb_read(l->rb, buf, sizeof buf, &len)) == RB_OK)
            atomic_fetch_add(&l->reads, 1);
        if (rc != RB_EEMPTY) {
            l->end_rc = rc;
            return NULL;
        }
    }
}

TEST(an_idle_event_loop_does_not_spin)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    struct idle_loop l = {.rb = f.rb, .fd = -1};
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &l.fd), RB_OK);
    CHECK_EQ(put(f.rb, 1, 16), RB_OK); /* one message, then idle */
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, idle_loop_main, &l) == 0);
    /* Let it take the message and settle into its wait. */
    int64_t end = now_ns() + 5 * SEC;
    while (atomic_load(&l.reads) < 1 && now_ns() < end)
        sleep_ns(MS);
    CHECK_EQ(atomic_load(&l.reads), 1);
    sleep_ns(100 * MS);
    int w0 = atomic_load(&l.wakeups);
    int cpu0 = rusage_cpu_ms();
    sleep_ns(SEC);
    int cpu = rusage_cpu_ms() - cpu0;
    int w = atomic_load(&l.wakeups) - w0;
    if (cpu >= 50)
        FAILF("the process used %d ms of CPU in 1 s of an idle event loop", cpu);
    if (w > 2)
        FAILF("the idle loop woke %d times in 1 s", w);
    CHECK_EQ(rb_shutdown(f.rb), RB_OK); /* the fd polls readable, the read ends the loop */
    int64_t t0 = now_ns();
    int joined;
    while ((joined = pthread_tryjoin_np(th, NULL) == 0) == 0 && now_ns() - t0 < 5 * SEC)
        sleep_ns(MS);
    if (!joined) {
        FAILF("the loop did not end within 5 s of rb_shutdown");
        _exit(3); /* a thread stuck in poll on a fd that rb_close would close */
    }
    CHECK_EQ(l.end_rc, RB_ECLOSED);
}

/* A wake-up is a FUTEX_WAKE by a writer that finds a waiter counted; each
 * bumps the data queue's futex word (data_seq), which counts them. */
TEST(writers_pay_one_wake_up_per_change_from_empty)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    AUTO_RING(writer);
    REQUIRE_EQ(rb_open(f.path, &writer), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    for (int round = 0; round < 3; round++) {
        /* Watched: the notifier parked on the empty ring. */
        REQUIRE(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
        uint32_t s0 = data_seq(f.path);
        CHECK_EQ(put(writer, 0, 8), RB_OK);
        CHECK_READY(fd, "after the first write");
        /* The notifier has run (it signals after taking its count back):
         * kept non-empty, the ring costs writers nothing more. */
        for (uint64_t i = 1; i < 1000; i++)
            if (!CHECK_EQ(put(writer, i, 8), RB_OK))
                break;
        uint32_t bumps = data_seq(f.path) - s0;
        if (bumps > 3)
            FAILF("round %d: 1000 writes into a watched ring made %u wake-ups", round, bumps);
        CHECK_EQ(drain(f.rb), 1000); /* found empty: watching again */
    }
}

/* A burst: until the woken notifier runs and takes its count back (a
 * scheduling latency: milliseconds on a loaded machine), every write finds
 * a waiter counted and pays a FUTEX_WAKE, as for any parked waiter
 * (rb_read_wait alike). From then on, none. */
TEST(a_burst_of_writes_stops_paying_once_the_notifier_has_run)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    AUTO_RING(writer);
    REQUIRE_EQ(rb_open(f.path, &writer), RB_OK);
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &fd), RB_OK);
    for (int round = 0; round < 3; round++) {
        REQUIRE(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
        uint32_t s0 = data_seq(f.path), s_gone = 0;
        int gone_at = -1;
        for (uint64_t i = 0; i < 1000; i++) {
            if (!CHECK_EQ(put(writer, i, 8), RB_OK))
                break;
            if (gone_at < 0 && data_waiters(f.path) == 0) {
                gone_at = (int)i;
                s_gone = data_seq(f.path);
            }
        }
        uint32_t s1 = data_seq(f.path);
        CHECK_READY(fd, "after 1000 writes");
        if (gone_at >= 0 && s1 != s_gone)
            FAILF("round %d: %u wake-ups after the notifier took its count back (write %d)", round,
                  s1 - s_gone, gone_at);
        if (verbose())
            printf("  round %d: notifier ran by write %d; %u wake-ups in 1000 writes\n", round, gone_at, s1 - s0);
        /* Kept non-empty: more writes cost nothing. */
        for (uint64_t i = 0; i < 1000; i++)
            put(writer, i, 8);
        CHECK_EQ_U(data_seq(f.path) - s1, 0);
        CHECK_EQ(drain(f.rb), 2000);
    }
}

TEST(writes_without_watchers_or_waiters_make_no_wake_ups)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    uint32_t s0 = data_seq(f.path);
    CHECK_EQ_U(data_waiters(f.path), 0);
    for (uint64_t i = 0; i < 1000; i++)
        if (!CHECK_EQ(put(f.rb, i, 8), RB_OK))
            break;
    CHECK_EQ_U(data_seq(f.path) - s0, 0);
}

/* ---- shutdown, close ------------------------------------------------------------------- */

TEST(shutdown_makes_the_descriptors_readable)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    int r = -1, w = -1, both = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &r), RB_OK);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE | RB_EV_WRITABLE, &both), RB_OK);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &w), RB_OK);
    size_t lens[16];
    REQUIRE(fill_exact(f.rb, 0, lens, 16) > 0);
    CHECK_EQ(put(f.rb, 0, 1), RB_EFULL); /* re-armed: the writable fd goes quiet */
    unsigned char buf[4096];
    size_t len;
    while (rb_read(f.rb, buf, sizeof buf, &len) == RB_OK) /* the writable fd becomes ready... */
        ;
    CHECK_READY(w, "room made");
    int n = 0;
    while (put(f.rb, 0, 248) == RB_OK && n < 100) /* ...and quiet again */
        n++;
    CHECK_EQ(put(f.rb, 0, 248), RB_EFULL);
    CHECK(drain(f.rb) > 0);
    CHECK_QUIET(r, "empty");
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    CHECK_READY(r, "readable fd after rb_shutdown");
    CHECK_READY(both, "both-kinds fd after rb_shutdown");
    /* For good: still readable later, and the calls say why. */
    sleep_ns(50 * MS);
    CHECK_EQ(poll_in(r, 0), 1);
    CHECK_EQ(poll_in(w, 0), 1);
    CHECK_EQ(rb_read(f.rb, buf, sizeof buf, &len), RB_ECLOSED);
}

TEST(close_joins_the_threads_and_closes_the_descriptors)
{
    settle_runtime_threads();
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    int before = thread_count();
    REQUIRE(before > 0);
    int r = -1, w = -1, both = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &r), RB_OK);
    CHECK_EQ(thread_count(), before + 1);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE | RB_EV_WRITABLE, &both), RB_OK);
    CHECK_EQ(thread_count(), before + 2);
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_WRITABLE, &w), RB_OK);
    CHECK_EQ(thread_count(), before + 2);
    /* A notifier parked on the ring's futex (the readable one, ring
     * empty) and one waiting to be re-armed (the writable one: it
     * signalled at once). */
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    CHECK_EQ(rb_close(f.rb), RB_OK);
    f.rb = NULL;
    CHECK_EQ(thread_count_settles(before), before);
    errno = 0;
    CHECK(fcntl(r, F_GETFD) == -1 && errno == EBADF);
    errno = 0;
    CHECK(fcntl(w, F_GETFD) == -1 && errno == EBADF);
    errno = 0;
    CHECK(fcntl(both, F_GETFD) == -1 && errno == EBADF);
    /* The parked notifier's count went with it. */
    CHECK_EQ_U(data_waiters(f.path), 0);
}

TEST(close_after_shutdown_joins_the_threads)
{
    settle_runtime_threads();
    AUTO_FX(f);
    REQUIRE(fx_open(&f, 4096));
    int before = thread_count();
    int fd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE | RB_EV_WRITABLE, &fd), RB_OK);
    CHECK_EQ(rb_shutdown(f.rb), RB_OK);
    CHECK_READY(fd, "after rb_shutdown");
    CHECK_EQ(rb_close(f.rb), RB_OK);
    f.rb = NULL;
    CHECK_EQ(thread_count_settles(before), before);
    errno = 0;
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
}

/* ---- fork ------------------------------------------------------------------- */

TEST(a_forked_child_gets_its_own_working_descriptor)
{
#ifdef EV_TSAN
    if (verbose())
        printf("  skipped under ThreadSanitizer (see the top of the file)\n");
    return;
#endif
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int pfd = -1;
    REQUIRE_EQ(rb_event_fd(f.rb, RB_EV_READABLE, &pfd), RB_OK);
    REQUIRE(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        /* Keep the parent's eventfd open under another number, so that
         * the child's descriptor cannot be it, whatever its number. */
        int inherited = dup(pfd);
        int cfd = -1;
        if (inherited < 0 || rb_event_fd(f.rb, RB_EV_READABLE, &cfd) != RB_OK)
            _exit(10);
        int same = same_file(cfd, inherited);
        if (same == 1)
            _exit(11);
        if (same == -1 && cfd == pfd)
            _exit(12); /* no kcmp: at least the number must differ */
        int again = -1;
        if (rb_event_fd(f.rb, RB_EV_READABLE, &again) != RB_OK || again != cfd)
            _exit(13);
        if (poll_in(cfd, NOT_READY_MS) != 0)
            _exit(14);
        say_ready(ready[1]);
        if (poll_in(cfd, 10000) != 1)
            _exit(15);
        /* The parent's message, through the inherited handle. */
        unsigned char buf[256];
        size_t len;
        if (rb_read(f.rb, buf, sizeof buf, &len) != RB_OK || !is_msg(buf, len, 5, 77))
            _exit(16);
        if (rb_read(f.rb, buf, sizeof buf, &len) != RB_EEMPTY || poll_in(cfd, NOT_READY_MS) != 0)
            _exit(17);
        rb_close(f.rb);
        _exit(fcntl(cfd, F_GETFD) == -1 ? 0 : 18);
    }
    close(ready[1]);
    CHECK(await_byte(ready[0], 10.0));
    /* Both notifiers parked: the parent's and the child's. */
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 2));
    CHECK_EQ(put(f.rb, 5, 77), RB_OK);
    CHECK_CHILD_OK(wait_child(pid, 20.0), "child watching its own fd");
    close(ready[0]);
    /* The parent's descriptor still works (the child's closing of its copy
     * did not touch it). Whether it signalled for the child's message
     * depends on who came first (its notifier or the child's read); a read
     * that finds the ring empty settles it. */
    CHECK_EQ(drain(f.rb), 0);
    CHECK_QUIET(pfd, "parent's fd, ring read empty");
    CHECK_EQ(put(f.rb, 6, 10), RB_OK);
    CHECK_READY(pfd, "parent's fd after a second write");
}

/* ---- dead watchers ------------------------------------------------------------------- */

/* A child that opens the ring, makes its readable fd, says so, and sits
 * in poll; if woken it reads one message, which must be (seq, len).
 * Exits 0 when it got that message, with blocking = 1 in rb_read_wait
 * instead of an fd. */
static pid_t start_watcher(const char *path, int blocking, uint64_t seq, size_t len, int *ready_fd)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid != 0) {
        close(p[1]);
        *ready_fd = p[0];
        if (pid < 0)
            close(p[0]);
        return pid;
    }
    close(p[0]);
    rb_ring *rb;
    if (rb_open(path, &rb) != RB_OK)
        _exit(20);
    unsigned char buf[512];
    size_t got;
    if (blocking) {
        say_ready(p[1]);
        int rc = rb_read_wait(rb, buf, sizeof buf, &got, 20 * SEC);
        _exit(rc == RB_OK && is_msg(buf, got, seq, len) ? 0 : 21);
    }
    int fd;
    if (rb_event_fd(rb, RB_EV_READABLE, &fd) != RB_OK)
        _exit(22);
    say_ready(p[1]);
    if (poll_in(fd, 20000) != 1)
        _exit(23);
    int rc = rb_read(rb, buf, sizeof buf, &got);
    _exit(rc == RB_OK && is_msg(buf, got, seq, len) ? 0 : 24);
}

/* Writes 8-byte messages through rb until data_waiters falls to want;
 * returns how many it took (-1: not within limit, or a write failed). */
static int writes_until_waiters(rb_ring *rb, const char *path, uint32_t want, int limit)
{
    for (int i = 0; i < limit; i++) {
        if (data_waiters(path) == want)
            return i;
        int rc = put(rb, 1000 + (uint64_t)i, 8);
        if (rc != RB_OK) {
            FAILF("write %d while a dead waiter was counted -> %d (%s)", i, rc, rb_strerror(rc));
            return -1;
        }
    }
    return data_waiters(path) == want ? limit : -1;
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
}

TEST(a_killed_watchers_count_is_reaped_by_writes_and_others_still_wake)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int r1 = -1, r2 = -1;
    /* Two watchers in their own processes, both parked. */
    pid_t w1 = start_watcher(f.path, 0, 0, 0, &r1);
    REQUIRE(w1 > 0);
    CHECK(await_byte(r1, 10.0));
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    pid_t w2 = start_watcher(f.path, 0, 42, 24, &r2);
    if (!CHECK(w2 > 0)) {
        kill_and_reap(w1);
        return;
    }
    CHECK(await_byte(r2, 10.0));
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 2));
    /* The first dies while parked: its count stays behind. */
    kill_and_reap(w1);
    CHECK_EQ_U(data_waiters(f.path), 2);
    /* A write still wakes the second. */
    CHECK_EQ(put(f.rb, 42, 24), RB_OK);
    CHECK_CHILD_OK(wait_child(w2, 20.0), "live watcher");
    /* Writes find nobody parked: after 64 of them in a row, the writer
     * takes the dead watcher's count back. */
    int n = writes_until_waiters(f.rb, f.path, 0, 400);
    if (n < 0)
        FAILF("data_waiters still %u after 400 writes", data_waiters(f.path));
    else if (verbose())
        printf("  dead watcher's count reaped after %d writes\n", n);
    /* And the ring works as before: no wake-ups without waiters. */
    CHECK(drain(f.rb) >= 0);
    uint32_t s0 = data_seq(f.path);
    for (uint64_t i = 0; i < 100; i++)
        put(f.rb, i, 8);
    CHECK_EQ_U(data_seq(f.path) - s0, 0);
    close(r1);
    close(r2);
}

TEST(a_watcher_started_after_the_reaping_is_woken)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int r1 = -1, r2 = -1;
    pid_t w1 = start_watcher(f.path, 0, 0, 0, &r1);
    REQUIRE(w1 > 0);
    CHECK(await_byte(r1, 10.0));
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    kill_and_reap(w1);
    int n = writes_until_waiters(f.rb, f.path, 0, 400);
    if (n < 0)
        FAILF("data_waiters still %u after 400 writes", data_waiters(f.path));
    CHECK(drain(f.rb) >= 0);
    pid_t w2 = start_watcher(f.path, 0, 43, 30, &r2);
    REQUIRE(w2 > 0);
    CHECK(await_byte(r2, 10.0));
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    CHECK_EQ(put(f.rb, 43, 30), RB_OK);
    CHECK_CHILD_OK(wait_child(w2, 20.0), "watcher after the reaping");
    close(r1);
    close(r2);
}

TEST(a_reader_killed_in_read_wait_is_reaped_by_writes)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int r = -1;
    pid_t pid = start_watcher(f.path, 1, 0, 0, &r);
    REQUIRE(pid > 0);
    CHECK(await_byte(r, 10.0));
    CHECK(WAIT_PARKED(f.path, OFF_DATA_WAITERS, 1));
    kill_and_reap(pid);
    CHECK_EQ_U(data_waiters(f.path), 1);
    int n = writes_until_waiters(f.rb, f.path, 0, 400);
    if (n < 0)
        FAILF("data_waiters still %u after 400 writes", data_waiters(f.path));
    else if (verbose())
        printf("  dead reader's count reaped after %d writes\n", n);
    close(r);
}

/* ---- examples/epoll_consumer ---------------------------------------------------------- */

#ifdef RB_EPOLL_EXAMPLE
/* Runs the example on path with stdin and stdout on pipes; *in and *out
 * get the parent's ends. */
static pid_t start_example(const char *path, int *in, int *out)
{
    int i[2], o[2];
    if (pipe(i) != 0 || pipe(o) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(i[0], 0);
        dup2(o[1], 1);
        close(i[0]);
        close(i[1]);
        close(o[0]);
        close(o[1]);
        execl(RB_EPOLL_EXAMPLE, RB_EPOLL_EXAMPLE, path, "10000", (char *)NULL);
        _exit(127);
    }
    close(i[0]);
    close(o[1]);
    *in = i[1];
    *out = o[0];
    return pid;
}

/* Everything the child writes to fd until EOF (up to size - 1 bytes, 10 s). */
static size_t read_all(int fd, char *buf, size_t size)
{
    size_t n = 0;
    int64_t end = now_ns() + 10 * SEC;
    while (n + 1 < size && now_ns() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0) /* POLLHUP at the end: read reports it */
            continue;
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

TEST(epoll_consumer_example_prints_messages_until_quit)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    CHECK_EQ(rb_write(f.rb, "hello", 5), RB_OK); /* there before it starts */
    int in = -1, out = -1;
    pid_t pid = start_example(f.path, &in, &out);
    REQUIRE(pid > 0);
    sleep_ns(100 * MS);
    CHECK_EQ(rb_write(f.rb, "world", 5), RB_OK);
    sleep_ns(50 * MS);
    CHECK_EQ(rb_write(f.rb, "quit", 4), RB_OK);
    char buf[1024];
    read_all(out, buf, sizeof buf);
    CHECK_STR_EQ(buf, "hello\nworld\n");
    CHECK_CHILD_OK(wait_child(pid, 10.0), "epoll_consumer");
    close(in);
    close(out);
}

TEST(epoll_consumer_example_ends_at_end_of_input)
{
    AUTO_FX(f);
    REQUIRE(fx_open(&f, RING));
    int in = -1, out = -1;
    pid_t pid = start_example(f.path, &in, &out);
    REQUIRE(pid > 0);
    CHECK_EQ(rb_write(f.rb, "one", 3), RB_OK);
    sleep_ns(200 * MS);
    close(in); /* EOF on its stdin */
    char buf[1024];
    read_all(out, buf, sizeof buf);
    CHECK_STR_EQ(buf, "one\n");
    CHECK_CHILD_OK(wait_child(pid, 10.0), "epoll_consumer");
    close(out);
}
#endif
