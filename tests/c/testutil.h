/*
 * testutil.h - helpers shared by the C tests: temporary directories, file
 * patching, hashing. Include after runner.h.
 */
#ifndef RB_TESTUTIL_H
#define RB_TESTUTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define TU_UNUSED __attribute__((unused))

/* File layout (csrc/internal.h, docs/format.md). */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_HEADER_SIZE = 12,
    OFF_CAPACITY = 16,
    OFF_MAX_MESSAGE = 24,
    OFF_STATE = 32,
    OFF_FLAGS = 36,
    OFF_CREATED_NS = 40,
    OFF_SLOT_COUNT = 48,
    OFF_SLOT_SIZE = 52,
    OFF_TAIL = 128,
    OFF_HEAD = 256,
    OFF_READ_TURN = 264,
    OFF_SLOTS_USED = 640,
    /* The slot table follows the header page: one slot per open handle. */
    OFF_SLOTS = 4096,
    SLOT_COUNT = 512,
    SLOT_SIZE = 128,
    SLOT_OFF_GEN = 0,
    SLOT_OFF_PID = 4,
    /* Bytes before the data region: the header page and the slot table. */
    HEADER_SIZE = OFF_SLOTS + SLOT_COUNT * SLOT_SIZE
};
#define STATE_READY 0x59444552u
#define REC_BUSY 0x01u
#define REC_DISCARD 0x02u

/* Bytes a message of len bytes occupies in the ring. */
static inline uint64_t rec_size(uint64_t len) { return (8u + len + 7u) & ~(uint64_t)7u; }

static inline uint64_t rec_word(uint64_t len, uint32_t flags, uint32_t writer)
{
    return len | ((uint64_t)(flags & 0xFFu) << 32) | ((uint64_t)(writer & 0xFFFFFFu) << 40);
}

/* Offset in the file of slot's field at off (SLOT_OFF_*). */
static inline off_t slot_off(uint32_t slot, off_t off) { return OFF_SLOTS + (off_t)slot * SLOT_SIZE + off; }

/* The id (slot | generation << 9) that the handle owning slot writes into
 * record words and the read turn (the first handle opened on a fresh ring
 * has slot 0, generation 1: id 512). */
static inline uint32_t slot_id(uint32_t slot, uint32_t gen) { return slot | gen << 9; }

/* A fresh directory under $TMPDIR or /tmp; the caller frees the string. */
static TU_UNUSED char *tu_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    size_t n = strlen(base) + 32;
    char *p = malloc(n);
    if (p == NULL)
        return NULL;
    snprintf(p, n, "%s/rbtest.XXXXXX", base);
    if (mkdtemp(p) == NULL) {
        fprintf(stdout, "mkdtemp(%s) failed: %s\n", p, strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

/* Removes a directory tree (no symlinks followed). */
static TU_UNUSED int tu_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *c = malloc(n);
        if (c == NULL) {
            rc = -1;
            break;
        }
        snprintf(c, n, "%s/%s", path, e->d_name);
        if (tu_rmtree(c) != 0)
            rc = -1;
        free(c);
    }
    closedir(d);
    if (rmdir(path) != 0)
        rc = -1;
    return rc;
}

/* dir + "/" + name in a static ring of buffers (good for a few at a time). */
static TU_UNUSED const char *tu_path(const char *dir, const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

/* Number of entries in dir other than . and ..; names joined by ' ' into
 * list (if not NULL). -1 on error. */
static TU_UNUSED int tu_count_entries(const char *dir, char *list, size_t list_size)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    if (list != NULL && list_size > 0)
        list[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        if (list != NULL) {
            size_t used = strlen(list);
            snprintf(list + used, list_size - used, "%s%s", used ? " " : "", e->d_name);
        }
    }
    closedir(d);
    return n;
}

/* Writes len bytes at off of the file at path. 0 or -1. */
static TU_UNUSED int tu_patch(const char *path, off_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = pwrite(fd, data, len, off);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static TU_UNUSED int tu_patch_u32(const char *path, off_t off, uint32_t v) { return tu_patch(path, off, &v, sizeof v); }
static TU_UNUSED int tu_patch_u64(const char *path, off_t off, uint64_t v) { return tu_patch(path, off, &v, sizeof v); }

static TU_UNUSED int tu_pread(const char *path, off_t off, void *data, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = pread(fd, data, len, off);
    close(fd);
    return r == (ssize_t)len ? 0 : -1;
}

static TU_UNUSED uint64_t tu_read_u64(const char *path, off_t off)
{
    uint64_t v = 0xDEADDEADDEADDEADull;
    if (tu_pread(path, off, &v, sizeof v) != 0)
        fprintf(stdout, "tu_read_u64(%s, %ld) failed\n", path, (long)off);
    return v;
}

static TU_UNUSED uint32_t tu_read_u32(const char *path, off_t off)
{
    uint32_t v = 0xDEADDEADu;
    if (tu_pread(path, off, &v, sizeof v) != 0)
        fprintf(stdout, "tu_read_u32(%s, %ld) failed\n", path, (long)off);
    return v;
}

/* The id of the handle owning (or that last owned) slot of the ring file at
 * path, read from the slot's generation. */
static TU_UNUSED uint32_t tu_slot_id(const char *path, uint32_t slot)
{
    return slot_id(slot, tu_read_u32(path, slot_off(slot, SLOT_OFF_GEN)));
}

/* Reads a whole file into a malloc'd buffer. */
static TU_UNUSED unsigned char *tu_slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *b = malloc(n ? n : 1);
    if (b == NULL || (n > 0 && pread(fd, b, n, 0) != (ssize_t)n)) {
        free(b);
        close(fd);
        return NULL;
    }
    close(fd);
    *len = n;
    return b;
}

static TU_UNUSED int tu_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t w = len ? write(fd, data, len) : 0;
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static TU_UNUSED off_t tu_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : (off_t)-1;
}

/* FNV-1a, 64 bit. */
static inline uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ull

/* splitmix64: a good 64-bit mix / PRNG step. */
static inline uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Fills buf with bytes derived from seed (a different stream per seed). */
static inline void fill_pattern(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t s = mix64(seed);
    size_t i = 0;
    while (i + 8 <= len) {
        s = mix64(s);
        memcpy(buf + i, &s, 8);
        i += 8;
    }
    if (i < len) {
        s = mix64(s);
        memcpy(buf + i, &s, len - i);
    }
}

#endif /* RB_TESTUTIL_H */
