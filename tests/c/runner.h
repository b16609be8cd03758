/*
 * runner.h - a tiny, dependency-free test runner. Include it in exactly one
 * source file per test binary; that file gets a main() unless it defines
 * RT_NO_MAIN.
 *
 *   TEST(name) { ... }            defines and registers a test
 *   CHECK(cond)                   records a failure and goes on
 *   CHECK_EQ(a, b)                integers (compared as long long)
 *   CHECK_EQ_U(a, b)              unsigned integers (compared as uint64_t)
 *   CHECK_STR_EQ(a, b)            C strings (NULL-safe)
 *   CHECK_MEM_EQ(a, b, n)         n bytes
 *   REQUIRE(cond), REQUIRE_EQ(a, b)  as CHECK, but return from the test
 *                                 function on failure (only inside a TEST)
 *   FAILF(fmt, ...)               records a failure with a message
 *
 * Checks may run in any thread of the test process (the counters are
 * atomic). A child process must report through its exit status instead.
 *
 * Output: one line per failing check ("file:line: [test] what"), and at the
 * end exactly one line "N passed, N failed" counting tests. The exit status
 * is 1 if any test failed, else 0.
 *
 * Command line: test names to run only those (default: all).
 * Environment: RT_VERBOSE=1 prints each test's name and run time;
 * RT_TIMEOUT=seconds (default 300) aborts a test that hangs.
 */
#ifndef RT_RUNNER_H
#define RT_RUNNER_H

#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RT_MAX_TESTS 256

typedef void (*rt_fn)(void);

struct rt_test {
    const char *name;
    rt_fn fn;
};

static struct rt_test rt_tests[RT_MAX_TESTS];
static int rt_ntests;
static const char *volatile rt_current = "(none)";
static atomic_int rt_failures; /* failed checks in the running test */

__attribute__((unused)) static void rt_register(const char *name, rt_fn fn)
{
    if (rt_ntests >= RT_MAX_TESTS) {
        fprintf(stderr, "runner.h: too many tests (raise RT_MAX_TESTS)\n");
        abort();
    }
    rt_tests[rt_ntests].name = name;
    rt_tests[rt_ntests].fn = fn;
    rt_ntests++;
}

#define TEST(name)                                                                                  \
    static void rt_test_##name(void);                                                               \
    __attribute__((constructor)) static void rt_reg_##name(void) { rt_register(#name, rt_test_##name); } \
    static void rt_test_##name(void)

__attribute__((format(printf, 3, 4))) static void rt_fail(const char *file, int line, const char *fmt, ...);

#include <stdarg.h>
__attribute__((unused)) static void rt_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&rt_failures, 1);
    /* One write per line so that lines from threads do not interleave. */
    fprintf(stdout, "%s:%d: [%s] %s\n", file, line, rt_current, msg);
    fflush(stdout);
}

#define FAILF(...) rt_fail(__FILE__, __LINE__, __VA_ARGS__)

#define CHECK(cond)                                                                                 \
    ((cond) ? 1 : (rt_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond), 0))

#define CHECK_EQ(a, b)                                                                              \
    __extension__({                                                                                 \
        long long rt_a_ = (long long)(a), rt_b_ = (long long)(b);                                   \
        int rt_ok_ = rt_a_ == rt_b_;                                                                \
        if (!rt_ok_)                                                                                \
            rt_fail(__FILE__, __LINE__, "CHECK_EQ(%s, %s) failed: %lld != %lld", #a, #b, rt_a_, rt_b_); \
        rt_ok_;                                                                                     \
    })

#define CHECK_EQ_U(a, b)                                                                            \
    __extension__({                                                                                 \
        uint64_t rt_a_ = (uint64_t)(a), rt_b_ = (uint64_t)(b);                                      \
        int rt_ok_ = rt_a_ == rt_b_;                                                                \
        if (!rt_ok_)                                                                                \
            rt_fail(__FILE__, __LINE__, "CHECK_EQ_U(%s, %s) failed: %" PRIu64 " != %" PRIu64, #a, #b, \
                    rt_a_, rt_b_);                                                                  \
        rt_ok_;                                                                                     \
    })

#define CHECK_STR_EQ(a, b)                                                                          \
    __extension__({                                                                                 \
        const char *rt_a_ = (a), *rt_b_ = (b);                                                      \
        int rt_ok_ = (rt_a_ == NULL || rt_b_ == NULL) ? rt_a_ == rt_b_ : strcmp(rt_a_, rt_b_) == 0;  \
        if (!rt_ok_)                                                                                \
            rt_fail(__FILE__, __LINE__, "CHECK_STR_EQ(%s, %s) failed: \"%s\" != \"%s\"", #a, #b,     \
                    rt_a_ ? rt_a_ : "(null)", rt_b_ ? rt_b_ : "(null)");                            \
        rt_ok_;                                                                                     \
    })

#define CHECK_MEM_EQ(a, b, n)                                                                       \
    __extension__({                                                                                 \
        const unsigned char *rt_a_ = (const unsigned char *)(a), *rt_b_ = (const unsigned char *)(b); \
        size_t rt_n_ = (size_t)(n), rt_i_ = 0;                                                      \
        while (rt_i_ < rt_n_ && rt_a_[rt_i_] == rt_b_[rt_i_])                                       \
            rt_i_++;                                                                                \
        int rt_ok_ = rt_i_ == rt_n_;                                                                \
        if (!rt_ok_)                                                                                \
            rt_fail(__FILE__, __LINE__, "CHECK_MEM_EQ(%s, %s, %s) failed at byte %zu: 0x%02x != 0x%02x", \
                    #a, #b, #n, rt_i_, rt_a_[rt_i_], rt_b_[rt_i_]);                                 \
        rt_ok_;                                                                                     \
    })

#define REQUIRE(cond)                                                                               \
    do {                                                                                            \
        if (!CHECK(cond))                                                                           \
            return;                                                                                 \
    } while (0)

#define REQUIRE_EQ(a, b)                                                                            \
    do {                                                                                            \
        if (!CHECK_EQ(a, b))                                                                        \
            return;                                                                                 \
    } while (0)

__attribute__((unused)) static double rt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

__attribute__((unused)) static void rt_on_alarm(int sig)
{
    (void)sig;
    static const char m1[] = "runner: timeout in test ";
    static const char m2[] = " (RT_TIMEOUT); aborting\n";
    const char *name = rt_current;
    ssize_t r = write(1, m1, sizeof m1 - 1);
    r = write(1, name, strlen(name));
    r = write(1, m2, sizeof m2 - 1);
    (void)r;
    _exit(2);
}

__attribute__((unused)) static int rt_selected(int argc, char **argv, const char *name)
{
    if (argc <= 1)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

__attribute__((unused)) static int rt_main(int argc, char **argv)
{
    const char *v = getenv("RT_VERBOSE");
    int verbose = v != NULL && *v != '\0' && strcmp(v, "0") != 0;
    const char *to = getenv("RT_TIMEOUT");
    unsigned timeout = to != NULL ? (unsigned)strtoul(to, NULL, 10) : 300u;
    signal(SIGALRM, rt_on_alarm);
    for (int i = 1; i < argc; i++) {
        int known = 0;
        for (int k = 0; k < rt_ntests; k++)
            known |= strcmp(argv[i], rt_tests[k].name) == 0;
        if (!known) {
            fprintf(stdout, "runner: no test named %s\n", argv[i]);
            return 2;
        }
    }
    int passed = 0, failed = 0;
    for (int k = 0; k < rt_ntests; k++) {
        if (!rt_selected(argc, argv, rt_tests[k].name))
            continue;
        rt_current = rt_tests[k].name;
        atomic_store(&rt_failures, 0);
        double t0 = rt_now();
        alarm(timeout);
        rt_tests[k].fn();
        alarm(0);
        double dt = rt_now() - t0;
        int nf = atomic_load(&rt_failures);
        if (nf == 0)
            passed++;
        else
            failed++;
        if (verbose)
            fprintf(stdout, "%s %s (%.3f s)\n", nf == 0 ? "ok  " : "FAIL", rt_tests[k].name, dt);
        fflush(stdout);
    }
    rt_current = "(none)";
    fprintf(stdout, "%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed != 0 ? 1 : 0;
}

#ifndef RT_NO_MAIN
int main(int argc, char **argv) { return rt_main(argc, argv); }
#endif

#endif /* RT_RUNNER_H */
