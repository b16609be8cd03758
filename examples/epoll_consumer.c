/* A consumer inside an epoll event loop: the ring is one event source among
 * others (here stdin and an idle timer), through rb_event_fd.
 *
 *   epoll_consumer RING_PATH [IDLE_MS]
 *
 * Prints each message on a line of its own. Ends with status 0 on a "quit"
 * message (not printed) or end of input on stdin (after printing what the
 * ring still holds), with status 3 when no message came for IDLE_MS
 * milliseconds (default 10000).
 *
 * Build it like examples/hello.c, e.g. against the installed package:
 *   cc examples/epoll_consumer.c $(pkg-config --cflags --libs ringbuf) -o epoll_consumer
 * (tests/c builds and runs it against csrc/build/libringbuf.so).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ringbuf.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

enum { SRC_RING, SRC_STDIN, SRC_TIMER };

/* Restarts the idle timer: it fires once, ms from now. */
static void arm_idle(int tfd, long ms)
{
    struct itimerspec it = {.it_value = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}};
    timerfd_settime(tfd, 0, &it, NULL);
}

/* The rule of the event descriptor: after it polls readable, read until
 * RB_EEMPTY. That last, empty read is what re-arms the descriptor (until
 * then it stays readable); readiness may also be spurious (another
 * consumer took the message), which the empty read simply reports.
 * Returns 1 if a "quit" message came, 0 when the ring is empty, -1 on an
 * error. */
static int drain_ring(rb_ring *rb, int *got_any)
{
    char buf[65536];
    for (;;) {
        size_t len;
        int rc = rb_read(rb, buf, sizeof buf, &len);
        if (rc == RB_EEMPTY)
            return 0;
        if (rc == RB_ETRUNC) { /* a message larger than buf: skip the example's limit */
            fprintf(stderr, "epoll_consumer: a message of %zu bytes is too large for this example\n", len);
            return -1;
        }
        if (rc != RB_OK) {
            fprintf(stderr, "epoll_consumer: rb_read: %s\n", rb_strerror(rc));
            return -1;
        }
        *got_any = 1;
        if (len == 4 && memcmp(buf, "quit", 4) == 0)
            return 1;
        printf("%.*s\n", (int)len, buf);
        fflush(stdout); /* a line per message, also into a pipe */
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: epoll_consumer RING_PATH [IDLE_MS]\n");
        return 2;
    }
    long idle_ms = argc > 2 ? strtol(argv[2], NULL, 10) : 10000;
    if (idle_ms <= 0)
        idle_ms = 10000;

    rb_ring *rb;
    int rc = rb_open(argv[1], &rb);
    if (rc != RB_OK) {
        fprintf(stderr, "epoll_consumer: rb_open %s: %s\n", argv[1], rb_strerror(rc));
        return 2;
    }
    /* The handle owns this descriptor: never read it, never close it
     * (rb_close does). It polls readable at once if the ring already holds
     * messages. */
    int ring_fd;
    rc = rb_event_fd(rb, RB_EV_READABLE, &ring_fd);
    if (rc != RB_OK) {
        fprintf(stderr, "epoll_consumer: rb_event_fd: %s\n", rb_strerror(rc));
        rb_close(rb);
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (ep < 0 || tfd < 0) {
        perror("epoll_consumer: epoll_create1/timerfd_create");
        rb_close(rb);
        return 2;
    }
    /* Level-triggered (the default): the ring's descriptor stays readable
     * until a read finds the ring empty, so a loop that stops early (say,
     * after a batch, to serve other sources) is called again. */
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = SRC_RING};
    epoll_ctl(ep, EPOLL_CTL_ADD, ring_fd, &ev);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = SRC_STDIN};
    int have_stdin = epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0; /* not a regular file */
    ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = SRC_TIMER};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    arm_idle(tfd, idle_ms);

    int status = -1;
    while (status < 0) {
        struct epoll_event evs[3];
        int n = epoll_wait(ep, evs, 3, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_consumer: epoll_wait");
            status = 2;
            break;
        }
        int eof = 0, idle = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == SRC_RING) {
                int got_any = 0;
                int r = drain_ring(rb, &got_any);
                if (got_any)
                    arm_idle(tfd, idle_ms);
                if (r != 0)
                    status = r > 0 ? 0 : 2;
            } else if (evs[i].data.u32 == SRC_STDIN) {
                char line[256];
                ssize_t r = read(STDIN_FILENO, line, sizeof line);
                if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                    eof = 1; /* this example only watches stdin for its end */
            } else {
                idle = 1;
            }
        }
        if (status < 0 && eof) {
            /* Input ended: print what the ring still holds, then stop. */
            int got_any = 0;
            status = drain_ring(rb, &got_any) < 0 ? 2 : 0;
            if (have_stdin)
                epoll_ctl(ep, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
        } else if (status < 0 && idle) {
            fprintf(stderr, "epoll_consumer: no message for %ld ms\n", idle_ms);
            status = 3;
        }
    }
    close(tfd);
    close(ep);
    rb_close(rb); /* also closes ring_fd and ends the handle's notifier thread */
    return status;
}
