/* The declarations the cffi binding uses: a plain subset of csrc/ringbuf.h
 * that cffi's parser accepts, then the binding's own helpers (_shim.h).
 * build_ffi.py compiles the binding against the real header and _shim.h, so
 * the C compiler checks these against them, and tests/test_symbols.py checks
 * the rb_* ones against what libringbuf.so exports. */
#define RB_VERSION_NUMBER ...
#define RB_FORMAT_VERSION ...
#define RB_REMOVE ...
#define RB_OVERWRITE ...
#define RB_NO_DEFAULT_GROUP ...
#define RB_GROUPS_MAX ...
#define RB_GROUP_NAME_MAX ...
#define RB_GROUP_EPHEMERAL ...
#define RB_START_EARLIEST ...
#define RB_GROUP_KIND_DEFAULT ...
#define RB_GROUP_KIND_DURABLE ...
#define RB_GROUP_KIND_EPHEMERAL ...
#define RB_MIN_CAPACITY ...
#define RB_MAX_CAPACITY ...
#define RB_INFO_NO_COUNT ...

enum rb_status {
    RB_OK = 0,
    RB_EFULL = -1,
    RB_EEMPTY = -2,
    RB_ESIZE = -3,
    RB_ECLOSED = -4,
    RB_ETIMEDOUT = -5,
    RB_ECORRUPT = -6,
    RB_ETRUNC = -7,
    RB_EINVAL = -8,
    RB_ESYS = -9,
    RB_EINTR = -10,
    RB_EVERSION = -11,
    RB_ELOST = -12,
    RB_ENOGROUP = -13,
    RB_EGROUPS = -14
};

typedef struct rb_ring rb_ring;

/* <sys/uio.h>'s; "...": the C compiler lays it out, as the libc does. */
struct iovec {
    void *iov_base;
    size_t iov_len;
    ...;
};

struct rb_info {
    uint64_t capacity;
    uint64_t max_message;
    uint64_t head, tail;
    uint64_t messages;
    uint64_t message_bytes;
    uint64_t busy;
    uint64_t discarded;
    uint32_t read_turn;
    uint32_t data_waiters;
    uint32_t space_waiters;
    uint32_t turn_waiters;
    uint32_t format_version;
    int counted;
    uint32_t attached;
    uint32_t full_fences;
    uint8_t file_id[16];
    uint64_t reclaimed;
    uint64_t writable;
    uint32_t ring_flags;
    uint32_t groups;
};

struct rb_group_info {
    char name[...];
    uint32_t kind;
    uint32_t members;
    uint64_t position;
    uint64_t backlog_messages;
    uint64_t backlog_bytes;
    uint64_t lost;
    int counted;
    uint32_t pid;
};

struct rb_stats {
    uint64_t written;
    uint64_t written_bytes;
    uint64_t read;
    uint64_t read_bytes;
    uint64_t aborted;
    uint64_t full;
    uint64_t empty;
    uint64_t parks;
    uint64_t parked_ns;
    uint64_t wakes;
    uint64_t recovered;
    uint64_t turns_taken;
    uint64_t created_ns;
};

int rb_version(void);
const char *rb_strerror(int status);
int rb_create(const char *path, size_t size, unsigned flags, rb_ring **out);
int rb_create_mode(const char *path, size_t size, unsigned flags, unsigned mode, rb_ring **out);
int rb_open(const char *path, rb_ring **out);
int rb_open_group(const char *path, const char *group, unsigned flags, rb_ring **out);
int rb_take_lost(rb_ring *rb, uint64_t *count);
int rb_group_remove(rb_ring *rb, const char *group);
int rb_groups_sized(rb_ring *rb, struct rb_group_info *out, size_t max, size_t *count, size_t size);
unsigned rb_ring_flags(const rb_ring *rb);
int rb_sync(rb_ring *rb);
int rb_close(rb_ring *rb);
int rb_shutdown(rb_ring *rb);
int rb_set_stall_timeout(rb_ring *rb, int64_t timeout_ns);
size_t rb_capacity(const rb_ring *rb);
size_t rb_max_message_size(const rb_ring *rb);
int rb_positions(const rb_ring *rb, uint64_t *head, uint64_t *tail);
int rb_info_sized(rb_ring *rb, struct rb_info *out, size_t size);
int rb_info_ex(rb_ring *rb, struct rb_info *out, size_t size, unsigned flags);
int rb_stats_sized(rb_ring *rb, struct rb_stats *out, size_t size);
int rb_write(rb_ring *rb, const void *msg, size_t len);
int rb_write_wait(rb_ring *rb, const void *msg, size_t len, int64_t timeout_ns);
int rb_write_many(rb_ring *rb, const void *data, const size_t *lens, size_t count, size_t *written);
int rb_write_many_wait(rb_ring *rb, const void *data, const size_t *lens, size_t count, size_t *written,
                       int64_t timeout_ns);
int rb_writev(rb_ring *rb, const struct iovec *iov, int iovcnt);
int rb_writev_wait(rb_ring *rb, const struct iovec *iov, int iovcnt, int64_t timeout_ns);
int rb_reserve(rb_ring *rb, size_t len, void **ptr);
int rb_reserve_wait(rb_ring *rb, size_t len, void **ptr, int64_t timeout_ns);
int rb_commit(rb_ring *rb, void *ptr);
int rb_abort(rb_ring *rb, void *ptr);
int rb_read(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len);
int rb_read_wait(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len, int64_t timeout_ns);
int rb_read_many(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count);
int rb_read_many_wait(rb_ring *rb, void *buf, size_t buf_size, size_t *lens, size_t max_count, size_t *count,
                      int64_t timeout_ns);
int rb_peek(rb_ring *rb, const void **ptr, size_t *len);
int rb_peek_wait(rb_ring *rb, const void **ptr, size_t *len, int64_t timeout_ns);
int rb_peek_many(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions, size_t max_count,
                 size_t *count);
int rb_peek_many_wait(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions, size_t max_count,
                      size_t *count, int64_t timeout_ns);
int rb_release(rb_ring *rb);
int rb_peek_cancel(rb_ring *rb);
int rb_data_region(rb_ring *rb, void **base, size_t *len);

#define RB_EV_READABLE ...
#define RB_EV_WRITABLE ...
int rb_event_fd(rb_ring *rb, unsigned events, int *fd);

/* Binding helpers (ringbuffer/_shim.h): compiled into the extension, not
 * part of libringbuf.so, so not rb_* names. */
struct rbpy_buf {
    size_t size;
    size_t len;
    char data[];
};
int64_t rbpy_read(rb_ring *rb, struct rbpy_buf *buf);
int64_t rbpy_read_wait(rb_ring *rb, struct rbpy_buf *buf, int64_t timeout_ns);
struct rbpy_region {
    rb_ring *rb;
    char *base;
    size_t len;
};
int64_t rbpy_peek(struct rbpy_region *r);
int64_t rbpy_peek_wait(struct rbpy_region *r, int64_t timeout_ns);
int64_t rbpy_reserve(struct rbpy_region *r, size_t len);
int64_t rbpy_reserve_wait(struct rbpy_region *r, size_t len, int64_t timeout_ns);
int64_t rbpy_last_peek(struct rbpy_region *r);
int64_t rbpy_last_reserve(struct rbpy_region *r);
int rbpy_commit(struct rbpy_region *r, int64_t off);
int rbpy_abort(struct rbpy_region *r, int64_t off);
int rbpy_release(struct rbpy_region *r);
int rbpy_peek_cancel(struct rbpy_region *r);
int rbpy_writev2(rb_ring *rb, const char *a, size_t alen, const char *b, size_t blen);
