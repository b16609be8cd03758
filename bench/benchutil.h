/*
 * benchutil.h - what the C benchmarks (cbench.c, fanout.c) share: a clock,
 * dying with a message, shared memory, medians, and the gate that starts
 * child processes together and reaps them. Each program defines
 * BENCH_NAME (its name in messages) and MAXREPS before including it.
 */
#ifndef BENCHUTIL_H
#define BENCHUTIL_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(BENCH_NAME ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *shared_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[MAXREPS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Children report ready on one pipe and wait for the start on another: the
 * parent closes the start pipe's write end, and every blocked read returns. */
struct gate {
    int ready[2], start[2];
};

static void gate_init(struct gate *g)
{
    if (pipe(g->ready) != 0 || pipe(g->start) != 0)
        die("pipe: %s", strerror(errno));
}

static void child_ready_and_wait(struct gate *g)
{
    char c = 1;
    close(g->ready[0]);
    close(g->start[1]);
    if (write(g->ready[1], &c, 1) != 1)
        _exit(3);
    while (read(g->start[0], &c, 1) < 0 && errno == EINTR)
        ;
}

/* Waits for n children to be ready, starts them, waits for them to exit
 * (killing them after limit_ns). Returns 0 if all exited with status 0. */
static int gate_run(struct gate *g, const pid_t *pids, int n, int64_t limit_ns)
{
    char c;
    close(g->ready[1]);
    close(g->start[0]);
    for (int i = 0; i < n; i++)
        if (read(g->ready[0], &c, 1) != 1)
            break;
    close(g->start[1]);
    close(g->ready[0]);
    int64_t deadline = now_ns() + limit_ns;
    int bad = 0, left = n;
    int done[n];
    memset(done, 0, sizeof done);
    while (left > 0) {
        for (int i = 0; i < n; i++) {
            int st;
            if (done[i] || waitpid(pids[i], &st, WNOHANG) != pids[i])
                continue;
            done[i] = 1;
            left--;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                bad = 1;
        }
        if (left > 0 && now_ns() > deadline) {
            for (int i = 0; i < n; i++)
                if (!done[i]) {
                    kill(pids[i], SIGKILL);
                    waitpid(pids[i], NULL, 0);
                }
            fprintf(stderr, BENCH_NAME ": a run took longer than %.1f s: killed\n", limit_ns / 1e9);
            return 1;
        }
        if (left > 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return bad;
}

static pid_t spawn(void)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    return pid;
}

#endif /* BENCHUTIL_H */
