/* Binding helpers, compiled into the cffi extension (ringbuffer._ringbuf),
 * not into libringbuf.so. Declared for cffi at the end of _cdef.h.
 *
 * They exist for speed only: cffi converts every argument of a call, at
 * about 15 ns each, and a bytes object is built faster by slicing a
 * ready-made ffi.buffer than by ffi.unpack(buf, len). rbpy_read is
 * rb_read with two arguments instead of four, returning the length, so
 * RingBuffer.get() costs about 55 ns less; rbpy_writev2 is rb_writev of two
 * vectors, which cffi fills from two bytes objects as they are. No algorithm
 * lives here. */

#include <stdint.h>

/* A read buffer: its size, the length of the last message read (or, after
 * RB_ETRUNC, the size needed), and the bytes. */
struct rbpy_buf {
    size_t size;
    size_t len;
    char data[];
};

/* rb_read into buf. Returns the message's length (>= 0), or a negative
 * RB_* status (RB_ETRUNC: nothing consumed, buf->len is the size needed).
 * Thread-safety: as rb_read; one buf per call at a time. */
static int64_t rbpy_read(rb_ring *rb, struct rbpy_buf *buf)
{
    int rc = rb_read(rb, buf->data, buf->size, &buf->len);
    return rc == RB_OK ? (int64_t)buf->len : rc;
}

/* rb_read_wait into buf; returns as rbpy_read (RB_ETIMEDOUT, RB_EINTR as
 * rb_read_wait). Thread-safety: as rb_read_wait. */
static int64_t rbpy_read_wait(rb_ring *rb, struct rbpy_buf *buf, int64_t timeout_ns)
{
    int rc = rb_read_wait(rb, buf->data, buf->size, &buf->len, timeout_ns);
    return rc == RB_OK ? (int64_t)buf->len : rc;
}

/* A handle's data region (rb_data_region) for the zero-copy calls below,
 * which return offsets into it instead of pointers: the binding makes one
 * memoryview of the region per handle and slices it, which costs less than
 * a new ffi.buffer and memoryview per message. len: the length of the
 * message the last rbpy_peek* returned (only the read-turn holder writes
 * it, so a thread that peeked reads its own length). */
struct rbpy_region {
    rb_ring *rb;
    char *base;
    size_t len;
};

/* The peek and the reservation this thread holds through the rbpy_* calls
 * (offsets; -1: none), for one case: an exception (Ctrl-C) can reach Python
 * code after such a call returned and before its result was stored, and
 * the binding then asks here what to finish. Set by the calls that make
 * them, cleared by those that finish them; per thread, since other threads
 * may use the same handle meanwhile. A thread may hold several
 * reservations: the last one made is recorded. */
static _Thread_local int64_t rbpy_peeked = -1, rbpy_reserved = -1;
static _Thread_local rb_ring *rbpy_peeked_rb, *rbpy_reserved_rb;

/* The peek this thread holds on r's ring (its offset), else -1. */
static int64_t rbpy_last_peek(struct rbpy_region *r) { return rbpy_peeked_rb == r->rb ? rbpy_peeked : -1; }
/* The last reservation this thread made on r's ring through rbpy_reserve*
 * and has not finished (its offset), else -1. */
static int64_t rbpy_last_reserve(struct rbpy_region *r) { return rbpy_reserved_rb == r->rb ? rbpy_reserved : -1; }

/* rb_peek: the payload's offset from r->base (>= 0), its length in r->len;
 * or a negative RB_* status. Thread-safety: as rb_peek. */
static int64_t rbpy_peek(struct rbpy_region *r)
{
    const void *p;
    rbpy_peeked = -1;
    int rc = rb_peek(r->rb, &p, &r->len);
    rbpy_peeked_rb = r->rb;
    return rc == RB_OK ? (rbpy_peeked = (const char *)p - r->base) : rc;
}

/* rb_peek_wait; returns as rbpy_peek. Thread-safety: as rb_peek_wait. */
static int64_t rbpy_peek_wait(struct rbpy_region *r, int64_t timeout_ns)
{
    const void *p;
    rbpy_peeked = -1;
    int rc = rb_peek_wait(r->rb, &p, &r->len, timeout_ns);
    rbpy_peeked_rb = r->rb;
    return rc == RB_OK ? (rbpy_peeked = (const char *)p - r->base) : rc;
}

/* rb_reserve of len bytes: the payload's offset from r->base (>= 0), or a
 * negative RB_* status. Thread-safety: as rb_reserve. */
static int64_t rbpy_reserve(struct rbpy_region *r, size_t len)
{
    void *p;
    rbpy_reserved = -1;
    int rc = rb_reserve(r->rb, len, &p);
    rbpy_reserved_rb = r->rb;
    return rc == RB_OK ? (rbpy_reserved = (char *)p - r->base) : rc;
}

/* rb_reserve_wait; returns as rbpy_reserve. Thread-safety: as rb_reserve_wait. */
static int64_t rbpy_reserve_wait(struct rbpy_region *r, size_t len, int64_t timeout_ns)
{
    void *p;
    rbpy_reserved = -1;
    int rc = rb_reserve_wait(r->rb, len, &p, timeout_ns);
    rbpy_reserved_rb = r->rb;
    return rc == RB_OK ? (rbpy_reserved = (char *)p - r->base) : rc;
}

/* rb_commit / rb_abort of the reservation at offset off (rbpy_reserve's).
 * Thread-safety: as rb_commit. */
static int rbpy_commit(struct rbpy_region *r, int64_t off)
{
    if (rbpy_reserved == off)
        rbpy_reserved = -1;
    return rb_commit(r->rb, r->base + off);
}
static int rbpy_abort(struct rbpy_region *r, int64_t off)
{
    if (rbpy_reserved == off)
        rbpy_reserved = -1;
    return rb_abort(r->rb, r->base + off);
}

/* rb_release / rb_peek_cancel of this thread's peek. Thread-safety: as
 * rb_release. */
static int rbpy_release(struct rbpy_region *r)
{
    rbpy_peeked = -1;
    return rb_release(r->rb);
}
static int rbpy_peek_cancel(struct rbpy_region *r)
{
    rbpy_peeked = -1;
    return rb_peek_cancel(r->rb);
}

/* rb_writev of a then b, for RingBuffer.writev([a, b]) of two bytes
 * objects (a header and a payload): cffi passes bytes to a char * argument
 * as they are, without the ffi.from_buffer and iovec array of the general
 * path (about 0.8 us of its 1.3 for two buffers, at the call site).
 * Returns: as rb_writev. Thread-safety: as rb_writev. */
static int rbpy_writev2(rb_ring *rb, const char *a, size_t alen, const char *b, size_t blen)
{
    struct iovec v[2] = {{(void *)a, alen}, {(void *)b, blen}};
    return rb_writev(rb, v, 2);
}
