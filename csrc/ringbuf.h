/*
 * ringbuf.h - a memory-mapped, file-backed ring buffer of variable-length
 * messages for inter-process and inter-thread communication on one host.
 *
 * One file holds one ring. Any number of producer and consumer threads and
 * processes open it by path and exchange messages of 1 to
 * rb_max_message_size() bytes, first in first out. Every message whose write
 * returned RB_OK is delivered exactly once, byte for byte, to each consumer
 * group that existed when it was written (see rb_open_group: the readers of
 * one group share its messages; a ring has the default group unless made
 * with RB_NO_DEFAULT_GROUP). With no group, nobody is owed a message; in an
 * RB_OVERWRITE ring a group that falls behind loses the oldest ones and is
 * told how many (RB_ELOST).
 *
 * All functions return RB_OK (0) or a negative status code (enum rb_status);
 * rb_strerror() turns any code into a message. Outputs through pointers are
 * left untouched on error unless a function says otherwise.
 *
 * Thread-safety vocabulary used below:
 *   MT-safe     any number of threads (and processes, through their own
 *               handles) may call it at the same time on the same ring.
 *   handle-exclusive  no other call may be running on the same handle.
 * No function is async-signal-safe. From a signal handler that interrupts a
 * call on the same handle, a non-blocking rb_write (say, a crash logger's
 * last message) never damages the ring, unless it interrupts rb_close or
 * the first call after fork() (then it may use a freed handle, or wait
 * forever); any other call from such a handler may deadlock.
 *
 * The file format is documented in docs/format.md, the concurrency protocol
 * in docs/design.md, what a release may change (versions, SONAME, ABI) in
 * docs/abi.md.
 */
#ifndef RINGBUF_H
#define RINGBUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h> /* struct iovec (rb_writev) */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define RB_API __attribute__((visibility("default")))
#else
#define RB_API
#endif

/* Library version, the single source of the release version (the Python
 * package takes it from here). rb_version() returns the number the running
 * library was built with; compare it with RB_VERSION_NUMBER to detect a
 * mismatched .so. */
#define RB_VERSION_MAJOR 0
#define RB_VERSION_MINOR 2
#define RB_VERSION_PATCH 0
#define RB_VERSION_NUMBER \
    (RB_VERSION_MAJOR * 10000 + RB_VERSION_MINOR * 100 + RB_VERSION_PATCH)

/* Version of the on-disk format this library reads and writes. */
#define RB_FORMAT_VERSION 4

/* Status codes. Stable: values never change meaning. */
enum rb_status {
    RB_OK = 0,
    RB_EFULL = -1,     /* not enough free space for the message (now)      */
    RB_EEMPTY = -2,    /* no message ready to read (now)                   */
    RB_ESIZE = -3,     /* message empty or larger than rb_max_message_size */
    RB_ECLOSED = -4,   /* the handle was closed                            */
    RB_ETIMEDOUT = -5, /* a wait ran out of time                           */
    RB_ECORRUPT = -6,  /* not a valid ring file (damaged or forged)        */
    RB_ETRUNC = -7,    /* the caller's buffer is too small for the message */
    RB_EINVAL = -8,    /* bad argument (NULL pointer, bad size or flags)   */
    RB_ESYS = -9,      /* an OS call failed; errno holds why               */
    RB_EINTR = -10,    /* a signal handler ran during a wait; nothing done */
    RB_EVERSION = -11, /* a ring file of another format version            */
    RB_ELOST = -12,    /* an overwrite ring overran this handle's group:
                        * messages were lost (rb_take_lost says how many) */
    RB_ENOGROUP = -13, /* this handle's consumer group does not exist
                        * (removed, or a ring created without the default
                        * group), or no group of that name (rb_group_remove) */
    RB_EGROUPS = -14   /* no room for another consumer group (RB_GROUPS_MAX) */
};

/* rb_create flags */
#define RB_REMOVE 0x1u /* replace an existing file at path (atomically) */
#define RB_OVERWRITE 0x2u /* writers never wait for readers: when the ring is
                           * full the oldest records are reclaimed, and a
                           * consumer group that had not read them loses them
                           * (its next read returns RB_ELOST) */
#define RB_NO_DEFAULT_GROUP 0x4u /* no default consumer group: only named
                                  * and ephemeral groups receive messages */

/* Consumer groups (rb_open_group). Each message is delivered once to every
 * group that existed when it was written; the handles of one group (its
 * members, in any processes) share its messages as the readers of a ring
 * without groups do. RB_GROUPS_MAX groups at most per ring (default,
 * named and ephemeral together); a name is 1 to RB_GROUP_NAME_MAX bytes,
 * no NUL (UTF-8 is the convention, bytes are compared as they are). */
#define RB_GROUPS_MAX 64
#define RB_GROUP_NAME_MAX 63
/* rb_open_group flags */
#define RB_GROUP_EPHEMERAL 0x1u /* a new group of this handle alone (group must
                                 * be NULL); it vanishes when the handle closes
                                 * or its process dies */
#define RB_START_EARLIEST 0x2u  /* a group made by this call starts at the
                                 * oldest message still in the ring; without
                                 * it, at the next message written */

/* Smallest and largest ring capacity in bytes. */
#define RB_MIN_CAPACITY ((size_t)4096)
#define RB_MAX_CAPACITY ((size_t)1 << 32)

/* An open ring. Opaque; one handle per rb_create/rb_open. */
typedef struct rb_ring rb_ring;

/* Returns the library version as RB_VERSION_NUMBER of the build.
 * Thread-safety: MT-safe. */
RB_API int rb_version(void);

/* Returns a static, human-readable message for a status code; never NULL,
 * also for unknown codes.
 * Thread-safety: MT-safe. */
RB_API const char *rb_strerror(int status);

/* Creates a new ring file at path and opens it (mode 0600, see
 * rb_create_mode). The capacity is size rounded up to a power of two, at
 * least RB_MIN_CAPACITY; rb_capacity() reports it. The file is prepared under
 * a temporary name in the same directory and published only when complete,
 * so a concurrent rb_open sees a valid ring or no file at all. Space is
 * reserved up front (posix_fallocate): a full disk fails here, not later.
 * flags: 0, or RB_REMOVE to replace an existing file at path. Without
 * RB_REMOVE an existing path fails with RB_ESYS and errno EEXIST; with it the
 * file is replaced by rename(): processes that still map the old ring keep
 * working on it (it stays valid, shared among them), but no longer meet the
 * processes that open the new file. Every file gets a random identity
 * (rb_info's file_id) from getrandom(2), or /dev/urandom where that fails.
 * Returns: RB_OK and *out set; RB_EINVAL (NULL path/out, size 0 or above
 * RB_MAX_CAPACITY, unknown flags); RB_ESYS (errno set; also when neither
 * getrandom nor /dev/urandom gives random bytes: nothing is created).
 * Thread-safety: MT-safe. */
RB_API int rb_create(const char *path, size_t size, unsigned flags, rb_ring **out);

/* rb_create with explicit permission bits (e.g. 0600, 0660); the process
 * umask applies as for open(2).
 * Returns: as rb_create; RB_EINVAL also for mode bits outside 07777.
 * Thread-safety: MT-safe. */
RB_API int rb_create_mode(const char *path, size_t size, unsigned flags,
                          unsigned mode, rb_ring **out);

/* Opens an existing ring file read-write. Every header field is validated
 * before use. Symbolic links are not followed.
 * Returns: RB_OK and *out set; RB_EINVAL (NULL argument); RB_ECORRUPT (not a
 * regular file, too short, wrong magic, impossible capacity or positions);
 * RB_EVERSION (a ring file of another RB_FORMAT_VERSION); RB_ESYS (errno
 * set: ENOENT, EACCES, ELOOP, EUSERS (512 handles already open on the
 * ring), ENOSPC (a sparse file whose holes cannot be backed: it would crash
 * its users with SIGBUS later), ...).
 * Each handle takes one of the ring's 512 slots and holds a lock on it
 * until rb_close (docs/design.md, "Crash recovery").
 * Thread-safety: MT-safe. */
RB_API int rb_open(const char *path, rb_ring **out);

/* rb_open, joining a consumer group: group NULL is the default group (what
 * rb_open joins; a ring created with RB_NO_DEFAULT_GROUP has none, and reads
 * through such a handle return RB_ENOGROUP); a name joins the durable group
 * of that name, creating it if it does not exist (starting at the next
 * message written, or with RB_START_EARLIEST at the oldest message still in
 * the ring; a group that exists resumes where it is, whatever the flags).
 * A durable group keeps its position in the file, also while no handle is
 * attached and after every process died, until rb_group_remove. With
 * RB_GROUP_EPHEMERAL (group NULL) the handle gets a new group of its own,
 * removed when the handle closes or its process dies (found as crash
 * recovery finds dead handles: writers of a lossless ring are held back by
 * a dead subscriber's group for at most the stall timeout). Writes through
 * any handle are the same: they ignore groups.
 * In a lossless ring (the default) space is freed only when every group has
 * read it: the slowest group holds writers back; with no group at all,
 * writes always succeed. In an RB_OVERWRITE ring writers never wait for
 * readers.
 * Returns: as rb_open; RB_EINVAL also for a bad name (empty, longer than
 * RB_GROUP_NAME_MAX, unknown flags, a name with RB_GROUP_EPHEMERAL);
 * RB_EGROUPS (RB_GROUPS_MAX groups exist); RB_ECORRUPT also for a group
 * whose position is impossible (a forged table). Opening never fails for
 * want of a group: reads report RB_ENOGROUP.
 * Thread-safety: MT-safe. Joining or making a named or ephemeral group
 * takes the reclaim lock: it waits for a writer that is freeing space (a
 * stopped one is waited for; a dead one taken over after the stall
 * timeout). */
RB_API int rb_open_group(const char *path, const char *group, unsigned flags, rb_ring **out);

/* The messages this handle's group lost to an overwrite ring's writers
 * since the last call (each read that found the group overrun returned
 * RB_ELOST once and added to it): stores the count in *count and resets
 * it to 0.
 * Returns: RB_OK; RB_EINVAL (NULL argument).
 * Thread-safety: MT-safe (the count is the handle's). */
RB_API int rb_take_lost(rb_ring *rb, uint64_t *count);

/* Removes the durable group of that name (group NULL: the default group).
 * Handles attached to it get RB_ENOGROUP from their next read; a read in
 * progress (or an open peek) is waited for. Its unread messages no longer
 * hold writers back.
 * Returns: RB_OK; RB_ENOGROUP (no such group); RB_EINVAL (bad name, or a
 * peek open on this handle in that group); RB_ECLOSED; RB_ETIMEDOUT (a
 * member kept the group's read turn, or a writer the reclaim lock, for more
 * than a second).
 * Thread-safety: MT-safe. */
RB_API int rb_group_remove(rb_ring *rb, const char *group);

/* One consumer group, as rb_groups reports it. May grow at its end
 * (docs/abi.md), as struct rb_info. */
struct rb_group_info {
    char name[RB_GROUP_NAME_MAX + 1]; /* NUL-terminated; "" for the default
                                       * group and for an ephemeral one     */
    uint32_t kind;             /* RB_GROUP_KIND_* below                     */
    uint32_t members;          /* handles attached to it now, any process   */
    uint64_t position;         /* its next read position (a byte position,
                                * as rb_positions')                        */
    uint64_t backlog_messages; /* committed messages it has not read yet
                                * (if counted)                             */
    uint64_t backlog_bytes;    /* their payload bytes (if counted)          */
    uint64_t lost;             /* messages it lost to an overwrite ring's
                                * writers, since it was created            */
    int counted;               /* 1 if the backlog was counted (the walk
                                * takes the group's read turn; 0 when a
                                * member keeps it)                         */
    uint32_t pid;              /* ephemeral: the owner's pid, else 0         */
};
#define RB_GROUP_KIND_DEFAULT 1
#define RB_GROUP_KIND_DURABLE 2
#define RB_GROUP_KIND_EPHEMERAL 3

/* Lists the ring's groups (dead ephemeral groups are removed first): up to
 * max entries into out, *count receives how many groups exist (it may be
 * more than max). size is the caller's sizeof(struct rb_group_info): call
 * it as rb_groups(rb, out, max, &count), the macro below; each entry is
 * written as rb_info_sized writes its struct.
 * Returns: RB_OK; RB_EINVAL (NULL rb or count, NULL out with max > 0, size
 * 0); RB_ECLOSED.
 * Thread-safety: MT-safe; a snapshot. */
RB_API int rb_groups_sized(rb_ring *rb, struct rb_group_info *out, size_t max, size_t *count, size_t size);
#define rb_groups(rb, out, max, count) rb_groups_sized((rb), (out), (max), (count), sizeof(struct rb_group_info))

/* The flags the ring was created with that describe it.
 * Returns: RB_OVERWRITE and RB_NO_DEFAULT_GROUP as set at creation; 0 for
 * NULL rb.
 * Thread-safety: MT-safe. */
RB_API unsigned rb_ring_flags(const rb_ring *rb);

/* Makes the ring durable: when it returns, every message committed before
 * the call and every group's position are on stable storage (msync of the
 * mapping, then fdatasync). On tmpfs (/dev/shm) there is no storage and it
 * returns at once with nothing to do. Protects against power loss only as
 * far as the filesystem and disk honour fdatasync; a message committed
 * while it runs may or may not be included.
 * Returns: RB_OK; RB_ECLOSED; RB_ESYS (errno set: EIO, ...); RB_EINVAL.
 * Thread-safety: MT-safe; blocks for the disk. */
RB_API int rb_sync(rb_ring *rb);

/* Unmaps the ring and frees the handle. The file stays. NULL is a no-op.
 * A peek still open on the handle ends without consuming its message: the
 * read turn is given back and the next reader gets the message. Closing
 * releases the handle's slot: a reservation not yet committed is then
 * discarded by readers after their stall timeout (commit or abort
 * reservations first). A process that exits or dies without rb_close is
 * recovered from the same way: readers take over its read turn and skip
 * its unfinished records (docs/design.md, "Crash recovery").
 * Event descriptors (rb_event_fd) are closed and their threads joined.
 * Returns: RB_OK.
 * Thread-safety: handle-exclusive (no other call on rb may be running or
 * start afterwards). To stop threads that may be blocked in rb, call
 * rb_shutdown first and rb_close once they have returned. */
RB_API int rb_close(rb_ring *rb);

/* Closes the handle for use without freeing it: every call that starts
 * afterwards returns RB_ECLOSED, and every call of this handle blocked in a
 * wait (in any thread) returns RB_ECLOSED promptly. Calls already past
 * their start may complete; the mapping and the file descriptor (which
 * holds the handle's slot lock) stay until rb_close. Calling it again is a no-op.
 * rb_commit, rb_abort and rb_release still work, so a reservation or peek in
 * progress can be finished. Other handles on the same file are not affected.
 * The handle's ephemeral group (RB_GROUP_EPHEMERAL) is removed here, after
 * waiting up to 100 ms for a read of this handle still in progress (an
 * open peek keeps it until rb_close).
 * Returns: RB_OK; RB_EINVAL (NULL rb).
 * Thread-safety: MT-safe, also against calls blocked in rb. */
RB_API int rb_shutdown(rb_ring *rb);

/* Capacity of the ring in bytes (a power of two). Each message occupies
 * 8 header bytes plus its length, rounded up to a multiple of 8.
 * Thread-safety: MT-safe. */
RB_API size_t rb_capacity(const rb_ring *rb);

/* Largest message that can be written: half the capacity.
 * Thread-safety: MT-safe. */
RB_API size_t rb_max_message_size(const rb_ring *rb);

/* Reads the consumer (head) and producer (tail) byte positions. Both only
 * grow. head is this handle's group's next read position (for a handle
 * whose group does not exist, where writers may write up to: rb_info's
 * reclaimed); tail - head bytes are waiting for its group (committed, in
 * progress or discarded).
 * A snapshot: it may be stale as soon as it returns.
 * Returns: RB_OK; RB_EINVAL (NULL rb).
 * Thread-safety: MT-safe. */
RB_API int rb_positions(const rb_ring *rb, uint64_t *head, uint64_t *tail);

/* Sets how long a record may stay unfinished where this handle reads (or
 * where its writes free space), a read turn or the reclaim lock (held by a
 * writer freeing space) stay taken, before this handle checks whether the
 * process that owns it is still alive (one fcntl per timeout; default 100
 * ms), and how often its writes look for dead subscribers' ephemeral
 * groups when those hold them back. Only a dead owner's work is taken
 * over: a record whose writer died between reserving and committing is
 * discarded (never delivered, not even in part), a read turn or the
 * reclaim lock whose holder died is taken over (finishing a dead writer's
 * zeroing), a dead subscriber's group is removed (docs/design.md, "Crash
 * recovery"). A slow or stopped owner is always waited for. timeout_ns == 0
 * checks at once; < 0 never
 * recovers (a dead owner then blocks this handle's reads for good).
 * Returns: RB_OK; RB_EINVAL (NULL rb).
 * Thread-safety: MT-safe; calls already waiting may use the old value. */
RB_API int rb_set_stall_timeout(rb_ring *rb, int64_t timeout_ns);

/* A snapshot of a ring's state, for monitoring and debugging (rb_info).
 * Fields are only ever added at the end, never moved, resized or removed
 * (docs/abi.md): a program compiled against an older, shorter struct keeps
 * working with a newer library. */
struct rb_info {
    uint64_t capacity;      /* bytes                                        */
    uint64_t max_message;   /* bytes                                        */
    uint64_t head, tail;    /* positions (rb_positions): head is this handle's
                             * group's, tail - head bytes wait for it        */
    uint64_t messages;      /* committed messages waiting for this handle's
                             * group (if counted)                          */
    uint64_t message_bytes; /* their payload bytes (if counted)             */
    uint64_t busy;          /* records reserved, not yet committed (if counted) */
    uint64_t discarded;     /* aborted records not yet skipped (if counted) */
    uint32_t read_turn;     /* pid of the consumer holding this handle's
                             * group's read turn, 0 if free               */
    uint32_t data_waiters;  /* consumers parked waiting for data            */
    uint32_t space_waiters; /* producers parked waiting for space           */
    uint32_t turn_waiters;  /* consumers parked waiting for the read turn   */
    uint32_t format_version;
    int counted;            /* 1 if the four counts above were taken: the
                             * walk needs the read turn, and is skipped when
                             * another consumer keeps it (0)                */
    uint32_t attached;      /* handles open on the ring, in any process     */
    uint32_t full_fences;   /* 1 once a process waited without membarrier():
                             * writers and readers then pay a full fence per
                             * call, until the file is recreated            */
    uint8_t file_id[16];    /* the ring file's identity: 16 random bytes
                             * written when it was created, never changed
                             * (a file recreated at the same path gets a
                             * new one); all zero: a file made without one.
                             * With a record's position (rb_peek_many) it
                             * names a message for good                   */
    uint64_t reclaimed;     /* bytes below this position are free for
                             * writers: tail - reclaimed bytes are in use  */
    uint64_t writable;      /* bytes a writer could take now (freeing what
                             * every group has read); an overwrite ring's
                             * writers may take more, overrunning groups  */
    uint32_t ring_flags;    /* rb_ring_flags                               */
    uint32_t groups;        /* consumer groups that exist                  */
};

/* Fills *out with a snapshot of the ring: positions, waiters, and (taking
 * the read turn briefly, as a consumer would) the records waiting between
 * head and tail. Counting stops at a record whose header is not written
 * yet (it counts as busy). Nothing is consumed.
 * size is the caller's sizeof(struct rb_info); call it as rb_info(rb, &info),
 * the macro below, which passes the size this program was compiled with.
 * Exactly size bytes at out are written: the library's first
 * min(size, its sizeof(struct rb_info)) bytes, then zeros (fields of a newer
 * header that this library does not know read as 0). An older caller's
 * shorter struct gets its own fields and nothing past them.
 * Returns: RB_OK; RB_EINVAL (NULL argument, size 0); RB_ECLOSED;
 * RB_ECORRUPT (an impossible record on the way: the counts stop there).
 * Thread-safety: MT-safe; counts are a snapshot, stale at once. */
RB_API int rb_info_sized(rb_ring *rb, struct rb_info *out, size_t size);
#define rb_info(rb, out) rb_info_sized((rb), (out), sizeof(struct rb_info))

/* rb_info_ex flags */
#define RB_INFO_NO_COUNT 0x1u /* skip the walk: the read turn is not taken */

/* rb_info_sized with flags; flags 0 is rb_info_sized. With RB_INFO_NO_COUNT
 * the records are not counted (counted = 0, the four counts 0) and the
 * read turn is never taken, so consumers are not held up and no dead
 * consumer's turn is taken over: what a periodic monitor should call. The
 * rest (positions, waiters, read-turn holder, attached handles: one fcntl
 * per slot ever used) is filled as by rb_info_sized. size as there.
 * Returns: RB_OK; RB_EINVAL (NULL argument, size 0, unknown flags);
 * RB_ECLOSED; RB_ECORRUPT (only when counting, as rb_info_sized).
 * Thread-safety: MT-safe; with RB_INFO_NO_COUNT it never takes the read
 * turn nor waits for another handle's (in a fork child, the first call on
 * an inherited handle re-attaches it first, as every call does: a few
 * syscalls). */
RB_API int rb_info_ex(rb_ring *rb, struct rb_info *out, size_t size, unsigned flags);

/* The ring's counters since it was created: every handle counts what its
 * calls did in its slot of the file, and the counts stay there after it
 * closes or dies (docs/format.md, "Counters"), so these are totals over
 * every handle that ever used the ring, in any process. Each counter only
 * grows (a later call never returns less). read counts deliveries: with
 * one group (the default), "written - read" is the number of messages
 * committed and not consumed, once no call is running; with several, each
 * message counts once per group that read it. The struct may grow at its end (docs/abi.md). */
struct rb_stats {
    uint64_t written;        /* messages committed (rb_write*, rb_commit)   */
    uint64_t written_bytes;  /* their payload bytes                        */
    uint64_t read;           /* messages consumed (rb_read*, rb_release)     */
    uint64_t read_bytes;     /* their payload bytes                        */
    uint64_t aborted;        /* reservations aborted (rb_abort)             */
    uint64_t full;           /* non-blocking writes that found no room
                              * (RB_EFULL; waits count in parks)           */
    uint64_t empty;          /* non-blocking reads and peeks that found no
                              * message (RB_EEMPTY; waits count in parks)  */
    uint64_t parks;          /* times a waiting call went to sleep (futex)  */
    uint64_t parked_ns;      /* nanoseconds spent asleep in them            */
    uint64_t wakes;          /* wake-up calls made for sleeping peers       */
    uint64_t recovered;      /* dead writers' records, or unwritten gaps,
                              * discarded by crash recovery (a batch cut
                              * short by a kill can count several)         */
    uint64_t turns_taken;    /* read turns taken over from dead consumers   */
    uint64_t created_ns;     /* when the ring was created, ns since the Unix
                              * epoch (CLOCK_REALTIME), for rates           */
};

/* Fills *out with the ring's counters (struct rb_stats): the sums over
 * every slot of the file. size is the caller's sizeof(struct rb_stats):
 * call it as rb_stats(rb, &stats), the macro below; written as
 * rb_info_sized writes (docs/abi.md).
 * Returns: RB_OK; RB_EINVAL (NULL argument, size 0); RB_ECLOSED.
 * Thread-safety: MT-safe, lock-free, no syscall; others may count
 * meanwhile: each sum is at least what it was at the call's start. */
RB_API int rb_stats_sized(rb_ring *rb, struct rb_stats *out, size_t size);
#define rb_stats(rb, out) rb_stats_sized((rb), (out), sizeof(struct rb_stats))

/* Writes one message of len bytes (1 to rb_max_message_size). Never blocks
 * (but see the reclaim below).
 * Returns: RB_OK (the message will be delivered to every group there is);
 * RB_EFULL (not enough free space now, nothing written: the slowest group
 * has not read far enough, or another writer has kept the reclaim lock for
 * 20 microseconds); RB_ESIZE (len 0 or too large); RB_EINVAL (NULL rb or
 * msg); RB_ECLOSED (after rb_shutdown).
 * Thread-safety: MT-safe, multi-producer; lock-free while the ring has
 * room (one CAS reserves space, the copy runs in parallel with other
 * producers). A write that finds the ring full frees what every group has
 * read (docs/design.md, "Freeing space"): under the reclaim lock, zeroing
 * at most 4 MiB (a few hundred microseconds), an fcntl per ephemeral group
 * at most once per stall timeout, a futex wake if a writer is parked. No
 * other syscall unless a
 * consumer is counted as parked waiting for data (then one futex wake; a
 * consumer killed while parked stays counted until its slot is reused:
 * docs/design.md, "Crash recovery"). */
RB_API int rb_write(rb_ring *rb, const void *msg, size_t len);

/* rb_write that waits for space: timeout_ns < 0 waits forever, 0 does not
 * wait. Spins briefly, then sleeps on a futex in the file (woken by any
 * process's consumer), using no CPU while it sleeps.
 * Returns: as rb_write, but RB_ETIMEDOUT instead of RB_EFULL when the time
 * is up; RB_ECLOSED when rb_shutdown is called meanwhile; RB_EINTR when a
 * signal handler ran while it slept (nothing was written: call again, after
 * acting on the signal).
 * Thread-safety: MT-safe, multi-producer; blocks. */
RB_API int rb_write_wait(rb_ring *rb, const void *msg, size_t len, int64_t timeout_ns);

/* Writes up to count messages packed back to back in data, message i being
 * lens[i] bytes, in order, stopping at the first that does not fit. All of
 * them are reserved with one CAS. Never blocks.
 * *written receives how many were written (also 0 on error).
 * Returns: RB_OK (*written >= 1, or count == 0); RB_EFULL (not even the first
 * fits); RB_ESIZE (some lens[i] is 0 or too large: nothing written);
 * RB_EINVAL (NULL argument).
 * Thread-safety: MT-safe, multi-producer; lock-free. */
RB_API int rb_write_many(rb_ring *rb, const void *data, const size_t *lens,
                         size_t count, size_t *written);

/* rb_write_many that waits (timeout_ns as rb_write_wait) until at least the
 * first message fits, then writes the longest prefix that fits.
 * Returns: as rb_write_many, but RB_ETIMEDOUT instead of RB_EFULL;
 * RB_ECLOSED; RB_EINTR (as rb_write_wait).
 * Thread-safety: MT-safe, multi-producer; blocks. */
RB_API int rb_write_many_wait(rb_ring *rb, const void *data, const size_t *lens,
                              size_t count, size_t *written, int64_t timeout_ns);

/* Writes one message gathered from iovcnt vectors: its payload is
 * iov[0]'s iov_len bytes, then iov[1]'s, and so on, copied once straight
 * into the ring (no joined copy). The total length must be 1 to
 * rb_max_message_size; vectors of length 0 are allowed and skipped (their
 * iov_base is not read, and may be NULL). Any number of vectors (no IOV_MAX
 * limit). The vectors are read twice (to add up the length, then to copy):
 * they and their bytes must not change during the call (if they do, the
 * copy still stays inside the vectors the call was given, and the
 * message's bytes are unspecified). The message is
 * delivered whole or not at all, as rb_write's, also if the writer dies
 * mid-copy. Never blocks.
 * Returns: RB_OK (the message will be delivered); RB_EFULL (not enough free
 * space now, nothing written); RB_ESIZE (total length 0, including
 * iovcnt == 0, or too large, including a sum past SIZE_MAX); RB_EINVAL (NULL
 * rb, iovcnt < 0, NULL iov with iovcnt > 0, or a NULL iov_base with a
 * non-zero iov_len); RB_ECLOSED (after rb_shutdown).
 * Thread-safety: MT-safe, multi-producer; lock-free, with rb_write's
 * syscall rule. */
RB_API int rb_writev(rb_ring *rb, const struct iovec *iov, int iovcnt);

/* rb_writev that waits for space (timeout_ns as rb_write_wait).
 * Returns: as rb_writev, but RB_ETIMEDOUT instead of RB_EFULL; RB_ECLOSED
 * when rb_shutdown is called meanwhile; RB_EINTR (as rb_write_wait).
 * Thread-safety: MT-safe, multi-producer; blocks. */
RB_API int rb_writev_wait(rb_ring *rb, const struct iovec *iov, int iovcnt, int64_t timeout_ns);

/* Zero-copy write, step 1: reserves a record of len bytes and points *ptr
 * at its payload (contiguous, even across the end of the ring). Fill it,
 * then call rb_commit (deliver) or rb_abort (never delivered). Until then
 * consumers wait at this record (FIFO), so keep the window short. Do not
 * wait for space (rb_write_wait, rb_write_many_wait, rb_writev_wait,
 * rb_reserve_wait) while holding a reservation: once the ring fills, no
 * space is freed until it is committed, and the thread waits for itself.
 * Returns: RB_OK; RB_EFULL; RB_ESIZE; RB_EINVAL (NULL argument); RB_ECLOSED.
 * Thread-safety: MT-safe, multi-producer; a thread may hold several
 * reservations; never blocks. */
RB_API int rb_reserve(rb_ring *rb, size_t len, void **ptr);

/* rb_reserve that waits for space (timeout_ns as rb_write_wait).
 * Returns: as rb_reserve, but RB_ETIMEDOUT instead of RB_EFULL; RB_EINTR
 * (as rb_write_wait).
 * Thread-safety: MT-safe, multi-producer; blocks. */
RB_API int rb_reserve_wait(rb_ring *rb, size_t len, void **ptr, int64_t timeout_ns);

/* Zero-copy write, step 2: delivers the reserved record at ptr (the pointer
 * rb_reserve returned). Works after rb_shutdown too.
 * Returns: RB_OK; RB_EINVAL (ptr is not an outstanding reservation of this
 * process on this ring, e.g. already committed or aborted). A stale pointer
 * is not always caught: once its record is consumed, it may name a later
 * reservation of the same process.
 * Thread-safety: MT-safe; any thread of the reserving process may commit a
 * reservation while it is outstanding; of racing rb_commit/rb_abort calls
 * on one pointer, only one acts (the others return RB_EINVAL). */
RB_API int rb_commit(rb_ring *rb, void *ptr);

/* Abandons the reserved record at ptr: it is never delivered, and its space
 * is freed like any record's, once every group has passed it. Works after rb_shutdown too.
 * Returns: RB_OK; RB_EINVAL (as rb_commit).
 * Thread-safety: MT-safe; as rb_commit. */
RB_API int rb_abort(rb_ring *rb, void *ptr);

/* Copies the next message of this handle's consumer group into buf and
 * consumes it (for the group: other groups still get it). Never blocks:
 * waiting for another member's read turn takes at most about 20
 * microseconds plus one sched_yield.
 * Returns: RB_OK and *msg_len = its length; RB_EEMPTY (no committed message
 * at the group's head, or another member, or an open rb_peek, kept the
 * group's read turn for about 20 microseconds); RB_ETRUNC (buf_size too
 * small: nothing consumed, *msg_len = the size needed); RB_ECORRUPT (the
 * record at the head is impossible); RB_ELOST (an overwrite ring's writers
 * reclaimed messages the group had not read: nothing delivered, the next
 * read goes on with the oldest left; rb_take_lost says how many);
 * RB_ENOGROUP (the handle's group does not exist: removed, or no default
 * group); RB_EINVAL (NULL rb or msg_len, or NULL buf with buf_size > 0);
 * RB_ECLOSED.
 * Thread-safety: MT-safe, multi-consumer; the members of a group take turns
 * (one CAS per call on a word only they touch), producers are never
 * blocked. No
 * syscall unless a producer is counted as parked waiting for space or a
 * consumer as parked waiting for the read turn (then one futex wake each; a
 * waiter killed while parked stays counted until its slot is reused:
 * docs/design.md, "Crash recovery"), or the turn is taken (then
 * sched_yield while waiting for it). */
RB_API int rb_read(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len);

/* rb_read that waits for a message (timeout_ns as rb_write_wait), spinning
 * briefly, then sleeping on a futex in the file.
 * Returns: as rb_read, but RB_ETIMEDOUT instead of RB_EEMPTY; RB_ECLOSED
 * when rb_shutdown is called meanwhile; RB_EINTR when a signal handler ran
 * while it slept (nothing was consumed: call again, after acting on the
 * signal).
 * Thread-safety: MT-safe, multi-consumer; blocks. */
RB_API int rb_read_wait(rb_ring *rb, void *buf, size_t buf_size, size_t *msg_len,
                        int64_t timeout_ns);

/* Reads up to max_count messages in one turn, packed back to back into buf
 * (message i is lens[i] bytes), stopping early when the ring is empty or the
 * next message does not fit in what is left of buf.
 * *count receives how many were read (0 on error).
 * Returns: RB_OK (*count >= 1, or max_count == 0); RB_EEMPTY; RB_ETRUNC (the
 * first message does not fit: nothing consumed, lens[0] = the size needed);
 * RB_ECORRUPT; RB_ELOST, RB_ENOGROUP (as rb_read); RB_EINVAL (NULL
 * argument).
 * Thread-safety: MT-safe, multi-consumer; as rb_read. */
RB_API int rb_read_many(rb_ring *rb, void *buf, size_t buf_size, size_t *lens,
                        size_t max_count, size_t *count);

/* rb_read_many that waits (timeout_ns as rb_write_wait) for the first
 * message, then takes what is there.
 * Returns: as rb_read_many, but RB_ETIMEDOUT instead of RB_EEMPTY;
 * RB_ECLOSED; RB_EINTR (as rb_read_wait).
 * Thread-safety: MT-safe, multi-consumer; blocks. */
RB_API int rb_read_many_wait(rb_ring *rb, void *buf, size_t buf_size, size_t *lens,
                             size_t max_count, size_t *count, int64_t timeout_ns);

/* Zero-copy read, step 1: points *ptr at the next message's payload (read
 * only, contiguous) and *len at its length, without consuming it. Discarded
 * (aborted) records before it are consumed at once. The caller now holds
 * its group's read turn until rb_release, so keep the window short: every
 * other read or peek in the group (any thread, handle or process) waits
 * for it, a blocking one on the turn's futex, a non-blocking one returning
 * RB_EEMPTY after about 20 microseconds. That includes this thread: a
 * blocking read or peek without a timeout before its rb_release never
 * returns. Other groups read on; the record stays in place until this
 * group has released it.
 * Returns: RB_OK; RB_EEMPTY; RB_ECORRUPT; RB_ENOGROUP (as rb_read);
 * RB_EINVAL (also on an RB_OVERWRITE ring: a writer could reclaim the
 * record while it is held; use rb_read there); RB_ECLOSED.
 * Thread-safety: MT-safe, multi-consumer; never blocks (see rb_read); the
 * same thread must call rb_release before it reads from the ring again. */
RB_API int rb_peek(rb_ring *rb, const void **ptr, size_t *len);

/* rb_peek that waits for a message (timeout_ns as rb_write_wait).
 * Returns: as rb_peek, but RB_ETIMEDOUT instead of RB_EEMPTY; RB_EINTR (as
 * rb_read_wait).
 * Thread-safety: as rb_peek; blocks. */
RB_API int rb_peek_wait(rb_ring *rb, const void **ptr, size_t *len, int64_t timeout_ns);

/* rb_peek of a batch: points ptrs[i] and lens[i] at up to max_count
 * consecutive committed messages, in ring order, without consuming them;
 * *count receives how many (0 on error). Discarded records before the first
 * message are freed at once, as by rb_peek; those between the messages lie
 * inside the peeked range and are freed with it. The batch stops at the
 * first record not committed yet, at max_count, or before an impossible
 * record (RB_ECORRUPT is then returned by the next read or peek). If
 * positions is not NULL, positions[i] receives the position of message i's
 * record (the byte count rb_positions reports for head and tail): unique for
 * the life of the ring file and increasing, so (rb_info's file_id,
 * position) names a message for good, e.g. for acknowledgements. The next
 * record starts at positions[i] + 8 + lens[i] rounded up to 8, unless
 * discarded records lie between. As with rb_peek, the caller holds the read
 * turn until rb_release (which consumes every message of the batch) or
 * rb_peek_cancel (which leaves them all). A process that dies holding the
 * batch leaves every message of it to the next reader (the dead holder's
 * turn is taken over; head never moved).
 * Returns: RB_OK (*count >= 1, or max_count == 0: then nothing was peeked
 * and the turn is not kept); RB_EEMPTY; RB_ECORRUPT (at the first record);
 * RB_ENOGROUP; RB_EINVAL (NULL rb or count, or NULL ptrs or lens with
 * max_count > 0, or an RB_OVERWRITE ring, as rb_peek); RB_ECLOSED.
 * Thread-safety: as rb_peek. */
RB_API int rb_peek_many(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions,
                        size_t max_count, size_t *count);

/* rb_peek_many that waits (timeout_ns as rb_write_wait) for the first
 * message, then takes what is there.
 * Returns: as rb_peek_many, but RB_ETIMEDOUT instead of RB_EEMPTY;
 * RB_EINTR (as rb_read_wait).
 * Thread-safety: as rb_peek; blocks. */
RB_API int rb_peek_many_wait(rb_ring *rb, const void **ptrs, size_t *lens, uint64_t *positions,
                             size_t max_count, size_t *count, int64_t timeout_ns);

/* Zero-copy read, step 2: consumes the message rb_peek returned (every
 * message of an rb_peek_many batch) and gives the read turn back. The
 * pointers from rb_peek or rb_peek_many are invalid afterwards. Works after
 * rb_shutdown too.
 * Returns: RB_OK; RB_EINVAL (no peek outstanding on this handle).
 * Thread-safety: call from the thread that peeked. */
RB_API int rb_release(rb_ring *rb);

/* Ends a peek WITHOUT consuming the message (or any message of an
 * rb_peek_many batch): it stays at the head for the next read (for a
 * reader that could not use it, e.g. its output broke).
 * Works after rb_shutdown too.
 * Returns: RB_OK; RB_EINVAL (no peek outstanding on this handle).
 * Thread-safety: call from the thread that peeked. */
RB_API int rb_peek_cancel(rb_ring *rb);

/* The data region as this handle maps it: every pointer rb_reserve and
 * rb_peek return lies in [*base, *base + *len), and a payload of n bytes
 * at p lies in it whole (p + n <= *base + *len). *len is twice the
 * capacity: the region is mapped twice back to back, so that no payload
 * wraps. For bindings that make one view of the region and slice it rather
 * than a new view per message (the Python binding does), and for
 * registering the memory with other APIs. Valid until rb_close; never
 * write through it except into a reservation.
 * Returns: RB_OK; RB_EINVAL (NULL argument).
 * Thread-safety: MT-safe; the region does not change while the handle is
 * open (a fork child inherits it at the same address). */
RB_API int rb_data_region(rb_ring *rb, void **base, size_t *len);

/* ---- event loops ---------------------------------------------------------- */

#define RB_EV_READABLE 0x1u /* a non-blocking read through the handle would succeed */
#define RB_EV_WRITABLE 0x2u /* a non-blocking write through the handle would succeed */

/* A file descriptor for epoll, poll or select that polls readable while
 * the handle's non-blocking calls of the asked kind would succeed:
 * RB_EV_READABLE (rb_read, rb_read_many, rb_peek would find a message),
 * RB_EV_WRITABLE (rb_write, rb_write_many, rb_reserve would find room), or
 * both (the descriptor then polls readable when either does). The rules:
 * - While such a call would succeed, the descriptor polls readable within
 *   a wake-up's latency of the change that made it so, whichever process
 *   made it.
 * - Once a non-blocking call of that kind through this handle has found
 *   the ring empty (or full, for the size it wanted), it stops polling
 *   readable until that changes: an idle loop does not spin.
 * - Readiness may be spurious (another consumer took the message): follow
 *   every wake-up with non-blocking calls until they report empty (full).
 * - Writable readiness is for the size that was refused: the first refused
 *   write since the last readiness sets it, later ones only lower it. A
 *   thread whose smaller write is pending while another thread of the
 *   handle is refused a larger one may wait for the larger room: give such
 *   writers a handle each, or retry every pending write on each wake-up.
 * - Never read from or write to the descriptor; never close it.
 * It is made at the first call for its kind (one thread per kind then
 * waits on the ring's futex for the handle, and writers pay one futex
 * wake-up per change from empty to not empty, none while nobody watches)
 * and the same descriptor is returned afterwards. rb_close closes it.
 * After rb_shutdown it polls readable for good. A process that inherited
 * the handle through fork() gets its own descriptor here, not the
 * parent's. Linux only (eventfd, futex).
 * Returns: RB_OK and *fd set; RB_EINVAL (NULL argument, no or unknown
 * events); RB_ECLOSED; RB_ESYS (eventfd, epoll or thread creation failed;
 * errno set).
 * Thread-safety: MT-safe. */
RB_API int rb_event_fd(rb_ring *rb, unsigned events, int *fd);

#ifdef __cplusplus
}
#endif

#endif /* RINGBUF_H */
