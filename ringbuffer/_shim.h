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
