/*
 * file.c - the ring file: creating, publishing, validating, mapping, closing.
 * The concurrent algorithm lives in ring.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

static uint64_t round_capacity(size_t size)
{
    uint64_t cap = RB_MIN_CAPACITY;
    while (cap < size)
        cap <<= 1;
    return cap;
}

static uint64_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (uint64_t)p : 4096u;
}

/* Checks the immutable part of a header read from a file of file_size bytes. */
static int validate_header(const struct rb_header *h, uint64_t file_size)
{
    if (memcmp(h->magic, RB_MAGIC, RB_MAGIC_LEN) != 0)
        return RB_ECORRUPT;
    if (h->version != RB_FORMAT_VERSION)
        return RB_EVERSION;
    if (h->state != RB_STATE_READY || (h->flags & ~RB_HDR_FLAGS) != 0)
        return RB_ECORRUPT;
    if (h->header_size != RB_HEADER_SIZE || h->slot_count != RB_SLOTS || h->slot_size != RB_SLOT_SIZE)
        return RB_ECORRUPT;
    if (!is_pow2(h->capacity) || h->capacity < RB_MIN_CAPACITY || h->capacity > RB_MAX_CAPACITY)
        return RB_ECORRUPT;
    if (h->max_message != h->capacity / 2 || file_size != h->header_size + h->capacity)
        return RB_ECORRUPT;
    /* A valid file, but the double mapping needs pages that divide 4096. */
    if (RB_HEADER_SIZE % page_size() != 0) {
        errno = EOPNOTSUPP;
        return RB_ESYS;
    }
    return RB_OK;
}

/* Positions are 8-aligned, below 2^63 (so that no position arithmetic can
 * wrap: centuries of traffic), head <= tail, and at most a capacity apart.
 * head1 was read before tail and head2 after it: each comparison uses the
 * head read on the right side of the tail load, so a ring that is busy
 * while we look is not mistaken for a corrupt one. */
static int validate_positions(uint64_t head1, uint64_t tail, uint64_t head2, uint64_t cap)
{
    if ((head1 | tail | head2) & 7u || (head2 | tail) >> 63)
        return RB_ECORRUPT;
    if (tail < head1 || head2 < head1 || (tail >= head2 && tail - head2 > cap))
        return RB_ECORRUPT;
    return RB_OK;
}

/* Maps header + data, then the data a second time right after it, so that a
 * record crossing the end of the ring is contiguous in memory. */
static int map_twice(int fd, uint64_t hsize, uint64_t cap, unsigned char **base, size_t *len)
{
    size_t total = (size_t)(hsize + 2 * cap);
    unsigned char *area = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED)
        return RB_ESYS;
    if (mmap(area, (size_t)(hsize + cap), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        mmap(area + hsize + cap, (size_t)cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
             (off_t)hsize) == MAP_FAILED) {
        int e = errno;
        munmap(area, total);
        errno = e;
        return RB_ESYS;
    }
    *base = area;
    *len = total;
    return RB_OK;
}

int rb_map_fd(int fd, struct rb_ring *rb)
{
    struct stat st;
    struct rb_header h;
    if (fstat(fd, &st) != 0)
        return RB_ESYS;
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < sizeof h)
        return RB_ECORRUPT;
    /* Read the header with pread, not through the mapping: a short or
     * hostile file must not be able to fault us before it is validated. */
    ssize_t got = pread(fd, &h, sizeof h, 0);
    if (got < 0)
        return RB_ESYS;
    if ((size_t)got != sizeof h)
        return RB_ECORRUPT;
    int rc = validate_header(&h, (uint64_t)st.st_size);
    if (rc != RB_OK)
        return rc;

    /* A file with holes (a sparse copy, a forgery) would give SIGBUS on the
     * first write to a hole on a full disk: back every byte now, or fail
     * with ENOSPC. Already-allocated files are unchanged (fast). A
     * filesystem without fallocate keeps the old risk. */
    if ((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size &&
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)st.st_size) != 0 && errno != EOPNOTSUPP && errno != ENOSYS &&
        errno != EINVAL)
        return RB_ESYS;

    unsigned char *base;
    size_t len;
    rc = map_twice(fd, h.header_size, h.capacity, &base, &len);
    if (rc != RB_OK)
        return rc;
    struct rb_header *mh = (struct rb_header *)base;
    /* Acquire on head: it seeds the producers' head_cache, whose value must
     * carry the happens-before of the consumers' zeroing (docs/design.md,
     * "Why t >= head_cache"). Head is read again after tail: the pair
     * (head1, tail) shows head <= tail, the pair (tail, head2) shows that
     * tail was at most a capacity ahead, even while others use the ring.
     * Relaxed tail: after the acquire of head1 it is at least as new. */
    uint64_t head1 = atomic_load_explicit(&mh->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&mh->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&mh->head, memory_order_acquire);
    if (validate_positions(head1, tail, head, h.capacity) != RB_OK) {
        munmap(base, len);
        return RB_ECORRUPT;
    }
    rb->hdr = mh;
    rb->slots = (struct rb_slot *)(void *)(base + RB_PAGE0);
    rb->data = base + h.header_size;
    rb->map_len = len;
    rb->capacity = h.capacity;
    rb->mask = h.capacity - 1;
    rb->max_message = h.max_message;
    rb->overwrite = (h.flags & RB_OVERWRITE) != 0;
    rb->fd = fd;
    /* Not shared yet: plain initialisation. */
    atomic_init(&rb->head_cache, head);
    rb->tail_cache = tail;
    atomic_init(&rb->stall_ns, RB_STALL_DEFAULT_NS);
    rb_membarrier_register();
    rc = rb_slot_attach(rb);
    if (rc != RB_OK) {
        int e = errno;
        munmap(base, len);
        errno = e;
    }
    return rc;
}

static int open_fd(int fd, const char *group, unsigned flags, rb_ring **out)
{
    rb_ring *rb = calloc(1, sizeof *rb);
    if (rb == NULL) {
        close(fd);
        errno = ENOMEM;
        return RB_ESYS;
    }
    rb->notify_epfd = -1;
    int rc = rb_map_fd(fd, rb);
    if (rc != RB_OK) {
        int e = errno;
        free(rb);
        close(fd);
        errno = e;
        return rc;
    }
    rc = rb_group_join(rb, group, flags);
    if (rc != RB_OK) {
        int e = errno;
        munmap(rb->hdr, rb->map_len);
        close(fd);
        free(rb);
        errno = e;
        return rc;
    }
    *out = rb;
    return RB_OK;
}

RB_API int rb_open_group(const char *path, const char *group, unsigned flags, rb_ring **out)
{
    if (path == NULL || out == NULL || !rb_group_args_ok(group, flags))
        return RB_EINVAL;
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return RB_ESYS;
    return open_fd(fd, group, flags, out);
}

RB_API int rb_open(const char *path, rb_ring **out) { return rb_open_group(path, NULL, 0, out); }

/* Creates ".ringbuf-<pid>-<ns>-<n>" exclusively in path's directory (a
 * short name, so that a target name of NAME_MAX bytes still works);
 * returns its fd or -1. */
static int create_temp(const char *path, unsigned mode, char **tmp_out)
{
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    size_t n = (size_t)dir_len + 64;
    char *tmp = malloc(n);
    if (tmp == NULL) {
        errno = ENOMEM;
        return -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, n, "%.*s.ringbuf-%ld-%lx-%u", dir_len, path, (long)getpid(), (unsigned long)ts.tv_nsec,
                 attempt);
        int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
        if (fd >= 0) {
            *tmp_out = tmp;
            return fd;
        }
        if (errno != EEXIST)
            break;
    }
    int e = errno;
    free(tmp);
    errno = e;
    return -1;
}

/* Fills buf with len random bytes: getrandom(2) (without blocking, so that
 * a ring created early at boot does not wait for the entropy pool), else
 * /dev/urandom (old kernels, seccomp filters, early boot). Returns 0, or
 * -1 with errno set when neither gives them. */
static int random_bytes(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, GRND_NONBLOCK);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    if (got == len)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    for (got = 0; got < len;) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else {
            int e = n == 0 ? EIO : errno;
            close(fd);
            errno = e;
            return -1;
        }
    }
    close(fd);
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)(p - (const unsigned char *)buf));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

RB_API int rb_create_mode(const char *path, size_t size, unsigned flags, unsigned mode, rb_ring **out)
{
    if (path == NULL || out == NULL || *path == '\0')
        return RB_EINVAL;
    if (size == 0 || size > RB_MAX_CAPACITY || (flags & ~(RB_REMOVE | RB_HDR_FLAGS)) != 0 || (mode & ~07777u) != 0)
        return RB_EINVAL;
    /* A power of two >= 4096 is a multiple of any page size that divides
     * the 4096-byte header, which the double mapping needs. */
    uint64_t cap = round_capacity(size);
    if (RB_HEADER_SIZE % page_size() != 0) {
        errno = EOPNOTSUPP;
        return RB_ESYS;
    }

    char *tmp = NULL;
    int fd = create_temp(path, mode, &tmp);
    if (fd < 0)
        return RB_ESYS;

    struct rb_header *h = calloc(1, sizeof *h);
    int rc = RB_ESYS;
    int e = ENOMEM;
    if (h == NULL)
        goto fail;
    /* Reserve every byte now: ENOSPC here instead of SIGBUS on first touch.
     * The slot table and the data region read as zeros: no slot taken, an
     * empty ring. */
    e = posix_fallocate(fd, 0, (off_t)(RB_HEADER_SIZE + cap));
    if (e != 0)
        goto fail;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    memcpy(h->magic, RB_MAGIC, RB_MAGIC_LEN);
    h->version = RB_FORMAT_VERSION;
    h->header_size = RB_HEADER_SIZE;
    h->slot_count = RB_SLOTS;
    h->slot_size = RB_SLOT_SIZE;
    h->capacity = cap;
    h->max_message = cap / 2;
    h->state = RB_STATE_READY;
    h->flags = flags & RB_HDR_FLAGS;
    h->created_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    /* The file's identity, before it is published: never changed after. */
    if (random_bytes(h->file_id, sizeof h->file_id) != 0) {
        e = errno;
        goto fail;
    }
    /* head, tail, the locks and the data region are zero: an empty ring. */
    if (write_all(fd, h, sizeof *h) != 0) {
        e = errno;
        goto fail;
    }
    if (!(flags & RB_NO_DEFAULT_GROUP)) {
        /* The default group, entry 0: exists (gen 1), at position 0. */
        struct rb_group g;
        memset(&g, 0, sizeof g);
        atomic_init(&g.gen, 1);
        atomic_init(&g.kind, RB_GROUP_KIND_DEFAULT);
        atomic_init(&g.created_ns, h->created_ns);
        atomic_init(&h->groups_used, 1);
        if (pwrite(fd, &g, sizeof g, RB_GROUPS_OFF) != (ssize_t)sizeof g ||
            pwrite(fd, (const char *)h + offsetof(struct rb_header, groups_used), 4,
                   offsetof(struct rb_header, groups_used)) != 4) {
            e = errno;
            goto fail;
        }
    }
    /* Publish: link() fails with EEXIST rather than replacing anything;
     * rename() replaces atomically (old mappings keep the old inode). */
    if ((flags & RB_REMOVE) ? rename(tmp, path) != 0 : link(tmp, path) != 0) {
        e = errno;
        goto fail;
    }
    if (!(flags & RB_REMOVE))
        unlink(tmp);
    free(tmp);
    free(h);
    return open_fd(fd, NULL, 0, out);

fail:
    unlink(tmp);
    free(tmp);
    free(h);
    close(fd);
    errno = e;
    return rc;
}

RB_API int rb_create(const char *path, size_t size, unsigned flags, rb_ring **out)
{
    return rb_create_mode(path, size, flags, 0600, out);
}

RB_API int rb_close(rb_ring *rb)
{
    if (rb == NULL)
        return RB_OK;
    /* A peek still open would keep the read turn until the next reader
     * found us gone: give it back now (unless the handle was inherited
     * through fork and never used here: then the peek is the parent's).
     * Relaxed: no other thread may call the handle while it closes, and
     * both epochs were last written by this process (rb_slot_attach, the
     * fork handler) before any call that could race this one. */
    int own = atomic_load_explicit(&rb->fork_epoch, memory_order_relaxed) ==
              atomic_load_explicit(&rb_fork_epoch, memory_order_relaxed);
    if (own)
        rb_peek_cancel(rb);
    /* Notifier threads use the mapping (and read under our id, which would
     * keep our group's turn from us): stop them first. They end on
     * closing (rb_event_close wakes them); relaxed: no other thread calls
     * the handle any more, and the wake-up orders the rest. */
    atomic_store_explicit(&rb->closing, 1, memory_order_relaxed);
    rb_event_close(rb);
    if (own)
        rb_group_leave(rb, 1000000000); /* an ephemeral group of ours (not the parent's, in a fork child) */
    munmap(rb->hdr, rb->map_len);
    /* Closing the descriptor drops our slot's lock: from now on our slot
     * counts as dead, and a reservation we left BUSY is recovered. */
    close(rb->fd);
    free(rb);
    return RB_OK;
}

RB_API size_t rb_capacity(const rb_ring *rb) { return rb ? (size_t)rb->capacity : 0; }

RB_API size_t rb_max_message_size(const rb_ring *rb) { return rb ? (size_t)rb->max_message : 0; }
