"""The :class:`RingBuffer` class: the Python face of ``libringbuf.so``.

The binding (``ffi``/``lib`` of ``ringbuffer._ringbuf``) is imported by these
modules only, each with one job: this one (the facade and its copying
paths), ``_zerocopy`` (the ``reserve()``/``peek()``/``peek_many()``
blocks), ``_handle`` (the open handle, and the interface between the
facade and the blocks) and ``exceptions`` (status codes to exceptions). The
rest of the package goes through them; tests/test_layout.py checks the rule.

Naming rule: the file-like names (``write``, ``writev``, ``read``,
``read_into``, ``reserve``, ``peek``, ``peek_many``) do not block by
default; the queue-like names (``put``, ``putv``, ``get``, ``put_many``,
``get_many``) block by default, with :class:`queue.Queue`'s ``block`` and
``timeout`` meanings.
"""

from __future__ import annotations

import array
import errno
import operator
import os
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Callable, TypeVar, Union, cast

from ringbuffer._args import contiguous, path_arg, size_arg
from ringbuffer._handle import PEEK_REFUSED, Handle
from ringbuffer._ringbuf import ffi, lib
from ringbuffer._wait import STALL_DEFAULT, Timeout, check_timeout, stall_ns, wait
from ringbuffer._zerocopy import Peek, PeekMany, Reservation
from ringbuffer.exceptions import BufferClosed, InvalidSize, MessagesLost, Status, error

__all__ = ["RingBuffer", "StrPath", "Timeout", "c_version", "format_version"]

_T = TypeVar("_T")

StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# Buffers for reads: not zero-filled (they are always overwritten first).
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_READ_BUF_INITIAL = 64 * 1024
_READ_BUF_KEEP = 1024 * 1024  # larger one-off buffers are not kept
# read_many() returns at most this many bytes per call (or one larger message).
_BATCH_BUF_SIZE = 16 * 1024 * 1024
# get_many() splits a batch of messages of one size with a struct format of
# up to this many fields (larger ones would take much memory to compile).
_STRUCT_SPLIT_MAX = 4096
# The array typecode of C's size_t (an array of message lengths is passed as size_t[]).
_SIZE_T_CODE = "L" if array.array("L").itemsize == ffi.sizeof("size_t") else "Q"
_ONLY_BYTES = {bytes}
_SINGLE_BUFFERS = (bytes, bytearray, memoryview)
_PAIR_TYPES = (list, tuple)
# writev()'s iovec arrays of this many entries are pooled (ffi.new costs
# about as much as the rest of a writev of two buffers); longer ones are made
# per call. A deque: pop/append are atomic, so threads never share one.
_IOVECS_POOLED = 16
_iovecs: deque[Any] = deque()

# The C functions and cffi helpers of the hot paths, looked up once: an
# attribute of ``lib`` or ``ffi`` costs a lookup on every use.
_rbpy_read = lib.rbpy_read
_rbpy_read_wait = lib.rbpy_read_wait
_rbpy_writev2 = lib.rbpy_writev2
_rb_write = lib.rb_write
_rb_write_wait = lib.rb_write_wait
_rb_read_many = lib.rb_read_many
_rb_write_many = lib.rb_write_many
_rbpy_peek = lib.rbpy_peek
_rbpy_peek_wait = lib.rbpy_peek_wait
_rbpy_reserve = lib.rbpy_reserve
_rbpy_reserve_wait = lib.rbpy_reserve_wait
_rbpy_commit = lib.rbpy_commit
_rbpy_abort = lib.rbpy_abort
_rbpy_last_peek = lib.rbpy_last_peek
_rbpy_last_reserve = lib.rbpy_last_reserve
_rbpy_release = lib.rbpy_release
_rbpy_peek_cancel = lib.rbpy_peek_cancel
_rb_writev = lib.rb_writev
_unpack = ffi.unpack
_buffer = ffi.buffer
_from_buffer = ffi.from_buffer
_release = ffi.release
_new = ffi.new

# Plain ints (an IntEnum member compares more slowly on the hot paths).
_OK = int(Status.OK)
_EFULL = int(Status.EFULL)
_EEMPTY = int(Status.EEMPTY)
_ETIMEDOUT = int(Status.ETIMEDOUT)
_ETRUNC = int(Status.ETRUNC)
_ECLOSED = int(Status.ECLOSED)
_EINVAL = int(Status.EINVAL)
_ESIZE = int(Status.ESIZE)
_ELOST = int(Status.ELOST)
_ENOGROUP = int(Status.ENOGROUP)
_EV_READABLE = int(lib.RB_EV_READABLE)

# The package's version: the one csrc/ringbuf.h (which the extension was
# compiled against) states, RB_VERSION_NUMBER = major * 10000 + minor * 100
# + patch; the build gives the distribution the same (setup.py).
_v = int(lib.RB_VERSION_NUMBER)
VERSION = f"{_v // 10000}.{_v // 100 % 100}.{_v % 100}"
del _v


def _read_buf(size: int) -> tuple[Any, Any]:
    """A read buffer for rbpy_read (``struct rbpy_buf *`` of ``size`` bytes)
    and an ffi.buffer over its bytes, whose slices are the messages."""
    buf = _alloc("struct rbpy_buf *", {"size": size, "data": size})
    return buf, _buffer(buf.data, size)


def _send_buffer(rb: Any, msg: Any, block: bool, timeout: Timeout) -> tuple[int, int]:
    """Writes one message given as a bytes-like object other than bytes
    (bytes take the inline paths of put and try_write); returns (status, size).
    The caller has checked the timeout.

    The buffer goes through ``ffi.from_buffer`` (a non-contiguous one is
    copied), released before returning: an exception that kept a live export
    of the caller's memoryview in a reference cycle can crash the garbage
    collector of CPython < 3.12.7 (gh-77894).
    """
    with ffi.from_buffer(contiguous(msg)) as data:
        n = len(data)
        # One C call when there is space; the waiting loop only when there is not.
        rc = _rb_write(rb, data, n)
        if rc == _EFULL and block:
            rc = wait(_rb_write_wait, rb, data, n, timeout=timeout)
        return rc, n


def _send_vectors(rb: Any, buffers: Iterable[Any], block: bool, timeout: Timeout) -> tuple[int, int]:
    """Writes one message gathered from ``buffers`` with ``rb_writev``;
    returns (status, size). The caller has checked the timeout.

    Each buffer goes through ``ffi.from_buffer`` (one that is not
    C-contiguous is copied first, as in _send_buffer, but only after
    from_buffer refused it: asking first costs a memoryview per buffer) and
    the iovecs point into them: C copies each once, into the ring. All are
    released before returning, for the reason given in _send_buffer.
    """
    if type(buffers) in _PAIR_TYPES and len(buffers) == 2:
        a, b = buffers
        if type(a) is bytes and type(b) is bytes:
            # The hot path (a header and a payload): the bytes go to C as they are.
            rc = _rbpy_writev2(rb, a, len(a), b, len(b))
            if rc != _EFULL or not block:
                return rc, len(a) + len(b)
    elif type(buffers) in _SINGLE_BUFFERS:
        # Iterating it would give ints (or one-byte views): say what to call.
        raise TypeError(f"writev() takes an iterable of buffers, not a {type(buffers).__name__}: use write()")
    try:
        pooled = _iovecs.pop()
    except IndexError:  # none made yet, or all in use by other threads
        pooled = _new("struct iovec[]", _IOVECS_POOLED)
    views: list[Any] = []
    try:
        for b in buffers:
            try:
                v = _from_buffer(b)
            except (BufferError, ValueError):  # not C-contiguous (numpy says ValueError)
                v = _from_buffer(contiguous(b))
            views.append(v)
        n = len(views)
        iov = pooled if n <= _IOVECS_POOLED else _new("struct iovec[]", n)
        size = i = 0
        for v in views:
            k = len(v)
            iov[i] = (v, k)
            size += k
            i += 1
        # One C call when there is space; the waiting loop only when there is not.
        rc = _rb_writev(rb, iov, n)
        if rc == _EFULL and block:
            rc = wait(lib.rb_writev_wait, rb, iov, n, timeout=timeout)
        return rc, size
    finally:
        for v in views:
            _release(v)
        # Its pointers are stale now, but nothing reads past the count a call is given.
        _iovecs.append(pooled)


def c_version() -> int:
    """Version number of the loaded ``libringbuf.so`` (``RB_VERSION_NUMBER``)."""
    return int(lib.rb_version())


def format_version() -> int:
    """Version of the ring file format this library reads and writes."""
    return int(lib.RB_FORMAT_VERSION)


# The kinds of consumer group rb_groups reports (RB_GROUP_KIND_*), by name.
_GROUP_KINDS = {
    int(lib.RB_GROUP_KIND_DEFAULT): "default",
    int(lib.RB_GROUP_KIND_DURABLE): "durable",
    int(lib.RB_GROUP_KIND_EPHEMERAL): "ephemeral",
}
_STARTS = ("latest", "earliest")


def _group_arg(group: object, strict: bool = True) -> bytes:
    """A consumer group's name as the C library takes it: 1 to
    RB_GROUP_NAME_MAX bytes of UTF-8, no NUL. TypeError for a non-str,
    InvalidArgument (a ValueError) for a bad name. Not ``strict``: a name
    as groups() decodes one a C program made of bytes that are not UTF-8
    (surrogate escapes) is taken back as those bytes."""
    if not isinstance(group, str):
        raise TypeError(f"a group name must be a str (or None), not {type(group).__name__}")
    try:
        raw = group.encode("utf-8", "strict" if strict else "surrogateescape")
    except UnicodeEncodeError:
        raise error(_EINVAL, detail=f"group name {group!r} is not valid UTF-8") from None
    limit = int(lib.RB_GROUP_NAME_MAX)
    if not 1 <= len(raw) <= limit or b"\0" in raw:
        raise error(
            _EINVAL,
            detail=f"group name {group!r}: 1 to {limit} bytes of UTF-8 without NUL (it has {len(raw)})",
        )
    return raw


def _group_label(group: str | None, ephemeral: bool) -> str:
    """How error messages name a handle's group."""
    if ephemeral:
        return "this handle's ephemeral group"
    return "the default group" if group is None else f"group {group!r}"


def _reopen(
    path: str,
    stall_timeout: float | None = STALL_DEFAULT,
    group: str | None = None,
    ephemeral: bool = False,
    start: str = "latest",
) -> RingBuffer:
    return RingBuffer.open(path, group=group, ephemeral=ephemeral, start=start, stall_timeout=stall_timeout)


class RingBuffer:
    """A ring of variable-length messages in a memory-mapped file.

    ``RingBuffer(path, size)`` creates a new ring file (its capacity is
    ``size`` rounded up to a power of two of at least 4096 bytes) and fails
    with :class:`FileExistsError` if ``path`` exists, unless ``remove=True``,
    which atomically replaces it. ``RingBuffer.open(path)`` opens an existing
    ring. Any number of threads and processes may write and read the same ring
    at once; each message (1 to :attr:`max_message_size` bytes) is delivered
    exactly once to each consumer group, in order.

    Consumer groups (fan-out): every group gets every message written after
    it started; the handles of a group (its members) share its messages.
    Plain readers, this handle included, are the ring's *default group*,
    unless it is created with ``default_group=False`` (then only named and
    ephemeral groups, :meth:`open`, receive messages). In a lossless ring
    (the default), space is freed once every group has read it: the slowest
    group holds writers back (with no group at all, writes always succeed).
    With ``overwrite=True`` writers never wait: the oldest records are
    reclaimed, and a group that had not read them gets
    :class:`MessagesLost` at its next read, then goes on with the oldest
    message still there; zero-copy reads are refused on such a ring.

    Crash safety: a message is in the file once ``write``/``put`` returns, and
    is delivered even if every process dies and another one opens the file
    later. If a writer is killed before its write returns, the half-written
    message is never delivered; if a reader is killed before it has taken a
    whole message, the message goes to the next reader. ``stall_timeout``
    (seconds, default 0.1) is how long a record or the read turn may stay
    stuck before this handle checks whether its owner process is still
    alive; only a dead owner's leftovers are skipped, a slow or stopped one
    is waited for. ``None`` never skips anything.

    Thread-safety: every method may be called from several threads at once,
    :meth:`close` included: it wakes the calls blocked in other threads, which
    raise :class:`BufferClosed`. A RingBuffer pickles as its path: a
    ``multiprocessing`` child reopens it.
    """

    __slots__ = (
        "__weakref__",
        "_batch_bufs",
        "_bufs",
        "_capacity",
        "_capped_bufs",
        "_ephemeral",
        "_file_id",
        "_group",
        "_h",
        "_max",
        "_overwrite",
        "_path",
        "_rb",
        "_region",
        "_rview",
        "_stall",
        "_start",
        "_wview",
    )

    def __init__(
        self,
        path: StrPath,
        size: int,
        remove: bool = False,
        *,
        mode: int = 0o600,
        stall_timeout: float | None = STALL_DEFAULT,
        overwrite: bool = False,
        default_group: bool = True,
    ) -> None:
        self._rb: Any = None
        bpath = path_arg(path)
        ns = stall_ns(stall_timeout)
        out = ffi.new("rb_ring **")
        flags = lib.RB_REMOVE if remove else 0
        if overwrite:
            flags |= lib.RB_OVERWRITE
        if not default_group:
            flags |= lib.RB_NO_DEFAULT_GROUP
        mode = operator.index(mode)
        if not 0 <= mode <= 0o7777:
            raise error(_EINVAL, detail=f"mode {mode:#o}")
        rc = lib.rb_create_mode(bpath, size_arg(size), flags, mode, out)
        if rc != _OK:
            detail = (f"size {size!r}" if bpath else "empty path") if rc == _EINVAL else None
            raise error(rc, bpath, detail)
        self._attach(out[0], bpath, stall_timeout, ns, None, False, "latest")

    @classmethod
    def open(
        cls,
        path: StrPath,
        *,
        group: str | None = None,
        ephemeral: bool = False,
        start: str = "latest",
        stall_timeout: float | None = STALL_DEFAULT,
    ) -> RingBuffer:
        """Opens an existing ring file; raises :class:`CorruptBuffer` if it is
        not one, :class:`UnsupportedVersion` if it is a ring of another format
        version. ``stall_timeout`` is as for the constructor.

        The handle reads in a consumer group (writes ignore groups): every
        group gets every message, and the handles of one group share its
        messages. ``group=None`` (the default) is the ring's default group,
        which every plain reader shares; ``group="audit"`` joins the durable
        group "audit" (1 to 63 bytes of UTF-8, no NUL), creating it if it
        does not exist; ``ephemeral=True`` (with ``group=None``) makes a
        group of this handle alone, removed when it is closed (or its
        process dies). A group made by this call starts at ``start``:
        ``"latest"`` (the next message written) or ``"earliest"`` (the
        oldest message still in the ring); a durable group that exists
        resumes at its own position whatever ``start`` says.

        Opening never fails for want of a group: reads through a handle
        whose group does not exist (the default group of a ring created
        with ``default_group=False``, a group removed meanwhile) raise
        :class:`GroupNotFound`. Raises :class:`InvalidArgument` (a
        ValueError) for a bad name, ``start`` or ``ephemeral`` with a name,
        TypeError for a name that is not a str, :class:`TooManyGroups` when
        the ring holds 64 groups already. A pickled handle reopens in its
        durable group; one of an ephemeral group gets a new one.
        """
        self = cls.__new__(cls)
        self._rb = None
        bpath = path_arg(path)
        ns = stall_ns(stall_timeout)
        if start not in _STARTS:
            raise error(_EINVAL, detail=f'start {start!r} ("latest" or "earliest")')
        name = _group_arg(group) if group is not None else ffi.NULL
        ephemeral = bool(ephemeral)
        if ephemeral and group is not None:
            detail = f"ephemeral=True with group {group!r}: an ephemeral group has no name"
            raise error(_EINVAL, detail=detail)
        flags = (lib.RB_GROUP_EPHEMERAL if ephemeral else 0) | (
            lib.RB_START_EARLIEST if start == "earliest" else 0
        )
        out = ffi.new("rb_ring **")
        rc = lib.rb_open_group(bpath, name, flags, out)
        if rc != _OK:
            exc = error(rc, bpath)
            if isinstance(exc, OSError) and exc.errno == errno.ELOOP and os.path.islink(bpath):
                # O_NOFOLLOW's ELOOP reads "Too many levels of symbolic links"
                message = "is a symbolic link (not followed when opening a ring; open its target)"
                exc = OSError(errno.ELOOP, message, os.fsdecode(bpath))
            raise exc
        self._attach(out[0], bpath, stall_timeout, ns, group, ephemeral, start)
        return self

    def _attach(
        self,
        rb: Any,
        bpath: bytes,
        stall_timeout: float | None,
        ns: int,
        group: str | None,
        ephemeral: bool,
        start: str,
    ) -> None:
        lib.rb_set_stall_timeout(rb, ns)
        self._stall = None if stall_timeout is None else float(stall_timeout)
        # The Handle owns rb (rb_close when the last holder is collected);
        # self._rb is its copy for the hot paths, None once closed.
        self._h = Handle(rb, bpath)
        self._h.group = _group_label(group, ephemeral)
        self._group = group
        self._ephemeral = ephemeral
        self._start = start  # for pickling: a reopened ephemeral group starts there
        self._overwrite = self._h.overwrite
        self._rb = rb
        self._path = bpath
        self._capacity = int(lib.rb_capacity(rb))
        self._max = self._h.max_message
        self._file_id: str | None = None  # read at the first use (file_id)
        # The zero-copy callbacks' region and views (the Handle's, see there).
        self._region = self._h.region
        self._wview = self._h.wview
        self._rview = self._h.rview
        # Pools of read buffers; deque.pop/append are atomic (thread-safe),
        # so threads never share one. A deque, not a list: a list going from
        # one item to none and back reallocates its array every time.
        self._bufs: deque[tuple[Any, Any]] = deque()
        self._batch_bufs: deque[tuple[Any, int]] = deque()
        self._capped_bufs: deque[tuple[int, Any, Any]] = deque()  # get_within's: (limit, buf, view)

    # -- properties --------------------------------------------------------

    @property
    def path(self) -> str:
        """The ring file's path (a str, decoded with the filesystem encoding)."""
        return os.fsdecode(self._path)

    @property
    def capacity(self) -> int:
        """Capacity in bytes (each message takes 8 + its length, rounded up to 8)."""
        return self._capacity

    @property
    def max_message_size(self) -> int:
        """The largest message that can be written: half the capacity."""
        return self._max

    @property
    def file_id(self) -> str:
        """The ring file's identity: 32 lowercase hex digits of the 16
        random bytes written when the file was created, never changed. A
        ring created again at the same path has another; every handle on
        one file has the same. With a record's position (a byte count, as
        :meth:`positions` reports and :meth:`peek_many` gives) it names a
        message for good. Raises :class:`BufferClosed` if the ring was
        closed before it was first asked."""
        file_id = self._file_id
        if file_id is None:
            file_id = self._file_id = self.info(count=False)["file_id"]
        return file_id

    @property
    def group(self) -> str | None:
        """The name of this handle's consumer group; None for the default
        group and for an ephemeral one."""
        return self._group

    @property
    def ephemeral(self) -> bool:
        """True if this handle reads in a group of its own (``open(ephemeral=True)``)."""
        return self._ephemeral

    @property
    def overwrite(self) -> bool:
        """True for an overwrite ring (``overwrite=True`` at creation): writers
        never wait for readers, a group that falls behind loses messages
        (:class:`MessagesLost`), and zero-copy reads (:meth:`peek`) are refused."""
        return self._overwrite

    @property
    def stall_timeout(self) -> float | None:
        """Seconds a record or the read turn may stay stuck before this handle
        checks whether its owner is alive (None: never). Settable."""
        return self._stall

    @stall_timeout.setter
    def stall_timeout(self, value: float | None) -> None:
        ns = stall_ns(value)
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        lib.rb_set_stall_timeout(rb, ns)
        self._stall = None if value is None else float(value)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._rb is None

    def positions(self) -> tuple[int, int]:
        """A snapshot ``(head, tail)`` of the byte positions: ``head`` is this
        handle's group's next read position, so ``tail - head`` bytes wait
        for the group (for a handle whose group does not exist, head is
        where writers may write up to). Bytes in use for writers:
        ``info()["bytes_used"]``."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        out = ffi.new("uint64_t[2]")
        lib.rb_positions(rb, out, out + 1)
        return int(out[0]), int(out[1])

    def info(self, count: bool = True) -> dict[str, Any]:
        """A snapshot of the ring for monitoring and debugging: capacity,
        positions, bytes in use, messages waiting (and their bytes), records
        being written (``busy``) or aborted (``discarded``), the pid holding
        the read turn, the parked waiters, the handles open on the ring
        in all processes (``attached``), and whether writers and readers pay
        full memory fences because a waiter could not use ``membarrier``
        (``full_fences``), and the file's identity (``file_id``, as
        :attr:`file_id`).

        With consumer groups: ``head`` is this handle's group's read
        position and ``messages``/``message_bytes`` count what waits for
        it; ``bytes_used`` the bytes writers cannot use yet because a group
        has not read them (or they are being written), ``writable`` the
        bytes a writer could take now (the two add up to the capacity),
        ``reclaimed``
        the position below which writers have freed the ring (they free
        what every group has read only when they need the room, so ``tail -
        reclaimed`` may exceed ``bytes_used``); ``overwrite`` whether the ring
        overwrites; ``group_count`` how many groups exist and ``groups`` the
        list :meth:`groups` returns (None with ``count=False``, since
        listing them counts each group's backlog).

        Counting the records takes the read turn briefly, like a read; when
        another consumer keeps it, ``counted`` is False and the counts are 0.
        Nothing is consumed. Raises :class:`CorruptBuffer` if an impossible
        record is met. ``count=False`` skips the count (``counted`` is False)
        and never takes the read turn: for a monitor that asks often.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        out = ffi.new("struct rb_info *")
        flags = 0 if count else lib.RB_INFO_NO_COUNT
        rc = lib.rb_info_ex(rb, out, ffi.sizeof("struct rb_info"), flags)
        if rc != _OK:
            raise error(rc, self._path)
        i = out[0]
        info = {
            "path": self.path,
            "format_version": int(i.format_version),
            "capacity": int(i.capacity),
            "max_message_size": int(i.max_message),
            "head": int(i.head),
            "tail": int(i.tail),
            "bytes_used": int(i.capacity - i.writable),
            "reclaimed": int(i.reclaimed),
            "writable": int(i.writable),
            "overwrite": bool(i.ring_flags & lib.RB_OVERWRITE),
            "counted": bool(i.counted),
            "messages": int(i.messages),
            "message_bytes": int(i.message_bytes),
            "busy": int(i.busy),
            "discarded": int(i.discarded),
            "read_turn_pid": int(i.read_turn),
            "waiting_consumers": int(i.data_waiters),
            "waiting_producers": int(i.space_waiters),
            "waiting_for_turn": int(i.turn_waiters),
            "attached": int(i.attached),
            "full_fences": bool(i.full_fences),
            "file_id": bytes(i.file_id).hex(),
            "group_count": int(i.groups),
            "groups": self.groups() if count else None,
        }
        return info

    # -- consumer groups ---------------------------------------------------

    def groups(self) -> list[dict[str, Any]]:
        """The ring's consumer groups now (a snapshot; dead ephemeral groups
        are removed first), one dict each: ``name`` (None for the default
        group and for ephemeral ones), ``kind`` ("default", "durable" or
        "ephemeral"), ``ephemeral``, ``members`` (handles attached now, in
        any process), ``position`` (its next read position),
        ``backlog_messages`` and ``backlog_bytes`` (committed messages it
        has not read, and their payload bytes), ``lost`` (messages it lost
        to an overwrite ring's writers since it was created), ``counted``
        (False when a member kept the group's read turn, so the backlog
        could not be counted and is 0) and ``pid`` (an ephemeral group's
        owner, else 0). Counting takes each group's read turn briefly, as
        :meth:`info` does; nothing is consumed."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        size = ffi.sizeof("struct rb_group_info")
        count = ffi.new("size_t *")
        room = int(lib.RB_GROUPS_MAX)
        while True:
            out = ffi.new("struct rb_group_info[]", room)
            rc = lib.rb_groups_sized(rb, out, room, count, size)
            if rc != _OK:
                raise error(rc, self._path)
            n = int(count[0])
            if n <= room:
                break
            room = n  # more groups than this binding expects: ask again
        groups = []
        for g in out[0:n]:
            kind = _GROUP_KINDS.get(int(g.kind), str(int(g.kind)))
            raw = ffi.string(g.name)
            groups.append(
                {
                    "name": raw.decode("utf-8", "surrogateescape") if raw else None,
                    "kind": kind,
                    "ephemeral": kind == "ephemeral",
                    "members": int(g.members),
                    "position": int(g.position),
                    "backlog_messages": int(g.backlog_messages),
                    "backlog_bytes": int(g.backlog_bytes),
                    "lost": int(g.lost),
                    "counted": bool(g.counted),
                    "pid": int(g.pid),
                }
            )
        return groups

    def remove_group(self, name: str | None) -> None:
        """Removes the durable group ``name`` (None: the default group): its
        unread messages no longer hold writers back, and its members get
        :class:`GroupNotFound` at their next read (a read in progress is
        waited for). Raises :class:`GroupNotFound` if there is no such
        group, :class:`InvalidArgument` for a bad name, TypeError for a
        name that is not a str."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        raw = ffi.NULL if name is None else _group_arg(name, strict=False)
        rc = lib.rb_group_remove(rb, raw)
        if rc != _OK:
            if rc == _ENOGROUP:
                raise error(rc, detail=f"{_group_label(name, False)} of {self.path!r}")
            raise error(rc, self._path)

    def sync(self) -> None:
        """Makes the ring durable (``rb_sync``): when it returns, every
        message committed before the call and every group's position are on
        stable storage (msync, then fdatasync), as far as the filesystem
        and the disk honour fdatasync. A message committed while it runs may
        or may not be included. On tmpfs (``/dev/shm``) there is no storage:
        it returns at once. Blocks for the disk; raises :class:`OSError` if
        the OS reports a failure (EIO)."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        rc = lib.rb_sync(rb)
        if rc != _OK:
            raise error(rc, self._path)

    def stats(self) -> dict[str, Any]:
        """The ring's counters since it was created (``rb_stats``), summed
        over every handle that ever used it, in any process, including those
        closed or killed since: ``written``/``read`` (messages) and
        ``written_bytes``/``read_bytes`` (their payload bytes), ``aborted``
        (reservations), ``full`` and ``empty`` (non-blocking C calls that
        found no room or no message: a blocking ``put``/``get`` makes one
        or two before it waits), ``parks`` and ``parked_seconds``
        (sleeps of waiting calls, and their time), ``wakes`` (wake-ups sent
        to sleepers), ``recovered`` (reservations of dead writers
        discarded), ``turns_taken`` (read turns taken over from dead
        consumers), and ``created`` (the ring's creation time, seconds since
        the epoch, for rates). Counters only grow; reading them costs no
        syscall and takes nothing from other processes.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        out = ffi.new("struct rb_stats *")
        rc = lib.rb_stats_sized(rb, out, ffi.sizeof("struct rb_stats"))
        if rc != _OK:
            raise error(rc, self._path)
        s = out[0]
        return {
            "written": int(s.written),
            "written_bytes": int(s.written_bytes),
            "read": int(s.read),
            "read_bytes": int(s.read_bytes),
            "aborted": int(s.aborted),
            "full": int(s.full),
            "empty": int(s.empty),
            "parks": int(s.parks),
            "parked_seconds": int(s.parked_ns) / 1e9,
            "wakes": int(s.wakes),
            "recovered": int(s.recovered),
            "turns_taken": int(s.turns_taken),
            "created": int(s.created_ns) / 1e9,
        }

    # -- writing -----------------------------------------------------------

    def write(self, msg: Any) -> None:
        """Writes one message (any bytes-like object) without blocking.

        Raises :class:`BufferFull` if it does not fit now, :class:`InvalidSize`
        if it is empty or larger than :attr:`max_message_size`.
        """
        if not self.try_write(msg):
            raise error(_EFULL)

    def try_write(self, msg: Any) -> bool:
        """Like :meth:`write`, but returns False instead of raising :class:`BufferFull`."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if type(msg) is bytes:  # the hot path, inline
            n = len(msg)
            rc = _rb_write(rb, msg, n)
        else:
            rc, n = _send_buffer(rb, msg, False, None)
        if rc == _OK:
            return True
        if rc == _EFULL:
            return False
        raise self._h.write_error(rc, n)

    def put(self, msg: Any, block: bool = True, timeout: Timeout = None) -> None:
        """Writes one message, waiting for space if needed (as :meth:`queue.Queue.put`).

        Raises :class:`BufferFull` when ``block`` is false and there is no
        space, or when ``timeout`` seconds pass; :class:`BufferClosed` if the
        ring is closed meanwhile.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            check_timeout(timeout)  # also when no wait is needed, as queue.Queue
        if type(msg) is bytes:
            # The hot path, inline as in try_write (a helper call costs about
            # as much as the C write): bytes go to C as they are, one call
            # when there is space, the waiting loop only when there is not.
            n = len(msg)
            rc = _rb_write(rb, msg, n)
            if rc == _OK:
                return
            if rc == _EFULL and block:
                rc = wait(_rb_write_wait, rb, msg, n, timeout=timeout)
        else:
            rc, n = _send_buffer(rb, msg, block, timeout)
        if rc != _OK:
            raise error(_EFULL) if rc in (_EFULL, _ETIMEDOUT) else self._h.write_error(rc, n)

    def put_nowait(self, msg: Any) -> None:
        """``put(msg, block=False)``."""
        self.put(msg, block=False)

    def writev(self, buffers: Iterable[Any]) -> None:
        """Writes one message, the concatenation of ``buffers`` (bytes-like
        objects, in order), without blocking: each is copied once, straight
        into the ring, with no joined copy (a header and a payload, say).

        Empty buffers are allowed and add nothing; a non-contiguous one
        (a strided numpy view) is copied first, as :meth:`write` does.
        Raises :class:`BufferFull` if the message does not fit now,
        :class:`InvalidSize` (nothing written) if it is empty (no buffers,
        or only empty ones) or larger than :attr:`max_message_size`,
        TypeError if an item is not a bytes-like object.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        rc, n = _send_vectors(rb, buffers, False, None)
        if rc != _OK:
            raise error(_EFULL) if rc == _EFULL else self._h.write_error(rc, n)

    def _try_writev(self, buffers: Iterable[Any]) -> bool:
        """:meth:`writev`, False instead of raising :class:`BufferFull`."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        rc, n = _send_vectors(rb, buffers, False, None)
        if rc == _OK:
            return True
        if rc == _EFULL:
            return False
        raise self._h.write_error(rc, n)

    def putv(self, buffers: Iterable[Any], block: bool = True, timeout: Timeout = None) -> None:
        """Writes one message gathered from ``buffers`` as :meth:`writev`
        does, waiting for space if needed (as :meth:`put`).

        Raises :class:`BufferFull` when ``block`` is false and there is no
        space, or when ``timeout`` seconds pass; :class:`BufferClosed` if the
        ring is closed meanwhile; :class:`InvalidSize` and TypeError as
        :meth:`writev`.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            check_timeout(timeout)  # also when no wait is needed, as queue.Queue
        rc, n = _send_vectors(rb, buffers, block, timeout)
        if rc != _OK:
            raise error(_EFULL) if rc in (_EFULL, _ETIMEDOUT) else self._h.write_error(rc, n)

    def write_many(self, msgs: Iterable[Any]) -> int:
        """Writes messages in order with one C call, stopping at the first that
        does not fit; returns how many were written (0 if the ring is full).
        An iterator is consumed entirely, also past what fit: pass a list to
        retry the rest.

        Raises :class:`InvalidSize` (and writes nothing) if any message is empty
        or too large.
        """
        return self._put_many(msgs, block=False, timeout=None)

    def put_many(self, msgs: Iterable[Any], block: bool = True, timeout: Timeout = None) -> int:
        """Writes all messages in order, waiting for space as needed; returns
        how many were written, which is fewer only when ``timeout`` passed
        (or, with ``block`` false, when the ring filled up).

        Raises :class:`InvalidSize` (and writes nothing) if any message is
        empty or too large, :class:`BufferClosed` if the ring is closed.
        """
        return self._put_many(msgs, block=block, timeout=timeout, complete=True)

    def _put_many(self, msgs: Iterable[Any], block: bool, timeout: Timeout, complete: bool = False) -> int:
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            timeout = check_timeout(timeout)  # up front, also for an empty batch
        # A private list (an iterator is consumed here): the passes below
        # (types, lengths, join) must all see the same messages, whatever
        # another thread does to the caller's list meanwhile.
        msgs = list(msgs)
        if not msgs:
            return 0
        if {*map(type, msgs)} == _ONLY_BYTES:
            # The usual batch: lengths and join at C speed (the general way
            # below costs a Python call per message).
            lens = list(map(len, msgs))
        else:
            msgs = [contiguous(m) for m in msgs]
            lens = [len(m) if type(m) is bytes else memoryview(m).nbytes for m in msgs]
        data = ffi.from_buffer(b"".join(msgs))
        c_lens = ffi.from_buffer("size_t[]", array.array(_SIZE_T_CODE, lens))  # cheaper than ffi.new
        written = ffi.new("size_t *")
        count = len(lens)
        deadline = None if timeout is None or not block else time.monotonic() + timeout
        done = offset = 0
        while done < count:
            # One C call when there is space; the waiting loop only when there is not.
            rc = _rb_write_many(rb, data + offset, c_lens + done, count - done, written)
            if rc == _EFULL and block:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                rc = wait(
                    lib.rb_write_many_wait,
                    rb,
                    data + offset,
                    c_lens + done,
                    count - done,
                    written,
                    timeout=left,
                )
            if rc in (_EFULL, _ETIMEDOUT):
                break
            if rc != _OK:
                bad = next((n for n in lens if n == 0 or n > self._max), None)
                detail = f"message of {bad} bytes (maximum {self._max})" if bad is not None else None
                raise error(rc, detail=detail)
            n = int(written[0])
            offset += sum(lens[done : done + n])
            done += n
            if not complete:
                break
        return done

    def reserve(self, size: int, block: bool = False, timeout: Timeout = None) -> Reservation:
        """Zero-copy write: ``with rb.reserve(n) as buf:`` gives a writable
        memoryview of ``n`` bytes inside the ring, committed (delivered) when
        the block ends and aborted (never delivered) if it raises.

        Consumers wait at this message until the block ends: keep it short.
        The view is released at the end of the block: using it afterwards
        raises ValueError. Objects made from it (slices, ``memoryview(buf)``,
        numpy arrays) are not tracked and point into the ring: do not keep
        them past the block. Raises :class:`BufferFull` (no space, and not
        blocking or timed out) or :class:`InvalidSize`.
        """
        return Reservation(self._h, size, block, timeout)

    def put_with(
        self, size: int, fill: Callable[[memoryview], _T], block: bool = True, timeout: Timeout = None
    ) -> _T:
        """Zero-copy write through a callback: reserves ``size`` bytes in the
        ring, calls ``fill(view)`` with a writable memoryview of them, and
        commits (delivers) the message when ``fill`` returns; returns what
        ``fill`` returned. If ``fill`` raises, the message is aborted (never
        delivered) and the exception propagates.

        The lighter form of :meth:`reserve` (about a third of its cost for
        small messages). Blocks like :meth:`put`: raises
        :class:`BufferFull` when there is no space and ``block`` is false or
        ``timeout`` seconds pass, :class:`InvalidSize` for a size of 0 or
        above :attr:`max_message_size`. Consumers wait at this message
        until ``fill`` returns: keep it short. The view is released when
        ``fill`` returns (using it afterwards raises ValueError); if an
        export of it is still held (``ffi.from_buffer(view)``), the message
        is aborted and :class:`BufferError` raised. Objects made from it
        (slices, numpy arrays) are not tracked and point into the ring: do
        not keep them.
        """
        if self._rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            check_timeout(timeout)
        if type(size) is not int:
            size = size_arg(size)  # TypeError, or 0 for a size out of range
        if not 0 < size <= self._max:
            raise self._h.write_error(_ESIZE, size)
        region = self._region
        off = -1
        # From here to the C call, no Python code runs that could raise
        # (the size is a valid int): an exception that reaches the handler
        # with off < 0 came after the call returned, if it was made at all.
        try:
            # One C call when there is space; the waiting loop only when there is not.
            off = _rbpy_reserve(region, size)
            if off < 0:
                if off == _EFULL and block:
                    off = wait(_rbpy_reserve_wait, region, size, timeout=timeout)
                if off < 0:
                    full = off in (_EFULL, _ETIMEDOUT)
                    raise error(_EFULL) if full else self._h.write_error(int(off), size)
            view = self._wview[off : off + size]
            result = fill(view)
        except BaseException:
            if off < 0:  # interrupted before the offset was stored? (this ring's, this thread's)
                off = _rbpy_last_reserve(region)
            if off >= 0:
                _rbpy_abort(region, off)
            raise
        try:
            view.release()
        except BufferError:
            _rbpy_abort(region, off)
            raise BufferError("put_with(): the view is still exported after fill returned; aborted") from None
        rc = _rbpy_commit(region, off)
        if rc != _OK:  # finished by someone else meanwhile: never by this API's own paths
            raise error(rc, detail="put_with(): the reservation was committed or aborted meanwhile")
        return result

    # -- reading -----------------------------------------------------------

    def _receive(self, rb: Any, block: bool, timeout: Timeout) -> bytes | None:
        """The next message, or None if there is none (in time); the caller
        has checked that the ring is open, and the timeout."""
        bufs = self._bufs
        try:
            pooled = bufs.pop()
        except IndexError:  # none pooled yet, or all in use by other threads
            pooled = _read_buf(min(self._max, _READ_BUF_INITIAL))
        try:
            buf, view = pooled
            while True:
                # One C call when a message is there; the waiting loop only
                # when there is none.
                n = _rbpy_read(rb, buf)
                if n == _EEMPTY and block:
                    n = wait(_rbpy_read_wait, rb, buf, timeout=timeout)
                if n >= 0:
                    return view[:n]
                if n == _ETRUNC:  # a message larger than the buffer: grow it
                    buf, view = grown = _read_buf(buf.len)
                    if buf.size <= _READ_BUF_KEEP:
                        pooled = grown
                    continue
                if n in (_EEMPTY, _ETIMEDOUT):
                    return None
                raise self._h.read_error(n)
        finally:
            bufs.append(pooled)

    def read(self) -> bytes:
        """Reads and consumes the next message without blocking.

        Raises :class:`BufferEmpty` if there is none.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        msg = self._receive(rb, False, None)
        if msg is None:
            raise error(_EEMPTY)
        return msg

    def try_read(self) -> bytes | None:
        """Like :meth:`read`, but returns None when the ring is empty."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        return self._receive(rb, False, None)

    def get(self, block: bool = True, timeout: Timeout = None) -> bytes:
        """Reads the next message, waiting for one if needed (as :meth:`queue.Queue.get`).

        Raises :class:`BufferEmpty` when ``block`` is false and there is none,
        or when ``timeout`` seconds pass; :class:`BufferClosed` if the ring is
        closed meanwhile. While it waits, the GIL is released and Ctrl-C
        interrupts it.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            check_timeout(timeout)  # also when no wait is needed, as queue.Queue
        # The hot path, inline: a message is there and fits a pooled buffer
        # (a call to _receive, with its try/finally, costs a good part of
        # the C read itself). Anything else goes the general way, which
        # reads again. A buffer is back in the pool only once its message
        # is copied out, so threads never share one.
        bufs = self._bufs
        try:
            buf, view = pooled = bufs.pop()
        except IndexError:  # none pooled yet, or all in use by other threads
            pass
        else:
            n = _rbpy_read(rb, buf)
            if n >= 0:
                msg = view[:n]  # a bytes copy: slicing an ffi.buffer
                # Back in the pool only now: another thread may take the
                # buffer (and read into it) as soon as it is there.
                bufs.append(pooled)
                return msg
            bufs.append(pooled)
            if n == _ELOST or n == _ENOGROUP:
                # Not to be read again below: the next read would go on
                # past the loss report (or wait for a group that is gone).
                raise self._h.read_error(n)
        msg = self._receive(rb, block, timeout)
        if msg is None:
            raise error(_EEMPTY)
        return msg

    def get_nowait(self) -> bytes:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_within(self, limit: int, block: bool = True, timeout: Timeout = None) -> bytes | None:
        """Like :meth:`get`, but takes the next message only if it has at
        most ``limit`` bytes: a larger one stays at the head, not consumed,
        and None is returned (at once: a message is there), so that the
        caller can take it another way, e.g. copy it out of a :meth:`peek`
        in one pass. As fast as :meth:`get` (one C call, the same copy).

        Raises :class:`BufferEmpty` when ``block`` is false and there is no
        message, or when ``timeout`` seconds pass; :class:`BufferClosed` if
        the ring is closed meanwhile.
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            check_timeout(timeout)  # also when no wait is needed, as get()
        # Read buffers of exactly `limit` bytes (rbpy_read's bound is the
        # buffer's size; no message is larger than max_message_size),
        # pooled as get()'s are.
        bufs = self._capped_bufs
        try:
            size, buf, view = pooled = bufs.pop()
        except IndexError:  # none pooled yet, or all in use by other threads
            size = -1
        if size != limit:
            size = operator.index(limit)
            if size < 0:
                raise error(_EINVAL, detail=f"limit {size}")
            pooled = (size, *_read_buf(min(size, self._max)))
            _, buf, view = pooled
        n = _rbpy_read(rb, buf)
        if n == _EEMPTY and block:
            try:
                n = wait(_rbpy_read_wait, rb, buf, timeout=timeout)
            except BaseException:
                bufs.append(pooled)
                raise
        if n >= 0:
            msg = view[:n]  # a bytes copy, made before the buffer goes back (as in get())
            bufs.append(pooled)
            return msg
        bufs.append(pooled)
        if n == _ETRUNC:
            return None
        if n in (_EEMPTY, _ETIMEDOUT):
            raise error(_EEMPTY)
        raise self._h.read_error(n)

    def read_into(self, buffer: Any, block: bool = False, timeout: Timeout = None) -> int:
        """Reads the next message into a writable buffer (bytearray, memoryview,
        numpy array, ...) and returns its length.

        If the buffer is too small, nothing is consumed and
        :class:`InvalidSize` names the size needed (also as its ``needed``
        attribute). Raises :class:`BufferEmpty` if there is no message (after
        waiting, with ``block``), TypeError if ``buffer`` is not a writable,
        C-contiguous buffer or holds Python objects (numpy dtype object).
        """
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if type(buffer) is not bytearray and _holds_objects(buffer):
            raise TypeError("read_into() cannot write bytes over Python objects (an array of dtype object)")
        try:
            target = ffi.from_buffer(buffer, require_writable=True)
        except (BufferError, ValueError) as e:  # numpy says ValueError
            raise TypeError(f"read_into() needs a writable, C-contiguous buffer ({e})") from None
        lenp = ffi.new("size_t *")
        # Released before anything is raised: see _send_buffer().
        with target:
            size = len(target)
            if block:
                rc = wait(lib.rb_read_wait, rb, target, size, lenp, timeout=timeout)
            else:
                rc = lib.rb_read(rb, target, size, lenp)
        if rc == _OK:
            return int(lenp[0])
        if rc in (_EEMPTY, _ETIMEDOUT):
            raise error(_EEMPTY)
        if rc == _ETRUNC:
            raise _too_small(int(lenp[0]), size)
        raise self._h.read_error(rc)

    def read_many(self, max_messages: int) -> list[bytes]:
        """Reads up to ``max_messages`` messages with one C call, without blocking.

        Returns what was there (an empty list if nothing was).
        """
        return self._get_many(max_messages, block=False, timeout=None)

    def get_many(self, max_messages: int, block: bool = True, timeout: Timeout = None) -> list[bytes]:
        """Waits for the first message, then takes up to ``max_messages`` of
        what is there, with one C call.

        Raises :class:`BufferEmpty` when nothing came (in time, or at once
        with ``block`` false).
        """
        msgs = self._get_many(max_messages, block=block, timeout=timeout)
        if not msgs and operator.index(max_messages) > 0:
            raise error(_EEMPTY)
        return msgs

    def _get_many(self, max_messages: int, block: bool, timeout: Timeout) -> list[bytes]:
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if block and timeout is not None:
            check_timeout(timeout)  # up front, also for max_messages=0
        want = operator.index(max_messages)
        if want < 0:
            raise error(_EINVAL, detail=f"max_messages {want}")
        if want == 0:
            return []
        want = min(want, self._capacity // 16)  # a ring holds no more records than that
        lens = ffi.new("size_t[]", want)
        count = ffi.new("size_t *")
        try:
            pooled = self._batch_bufs.pop()
        except IndexError:
            size = min(self._capacity, _BATCH_BUF_SIZE)
            pooled = (_alloc("char[]", size), size)
        try:
            buf, size = pooled
            while True:
                # One C call when messages are there; the waiting loop only
                # when there are none.
                rc = _rb_read_many(rb, buf, size, lens, want, count)
                if rc == _EEMPTY and block:
                    rc = wait(lib.rb_read_many_wait, rb, buf, size, lens, want, count, timeout=timeout)
                if rc != _ETRUNC:
                    break
                size = int(lens[0])  # one message larger than the pooled buffer
                buf = _alloc("char[]", size)
            if rc in (_EEMPTY, _ETIMEDOUT):
                return []
            if rc != _OK:
                raise self._h.read_error(rc)
            # One bytes object per message, sliced straight out of the read
            # buffer (before it goes back to the pool): no copy of the batch.
            raw = _buffer(buf)
            sizes = _unpack(lens, count[0])
            k = len(sizes)
            if k <= _STRUCT_SPLIT_MAX and sizes.count(sizes[0]) == k:
                # Messages of one size (the usual batch): split in C, by a
                # struct format of k byte strings, in a third of the time of
                # the loop below.
                return list(struct.Struct(f"{sizes[0]}s" * k).unpack_from(raw))
            end = 0
            return [raw[end : (end := end + n)] for n in sizes]
        finally:
            self._batch_bufs.append(pooled)

    def peek(self, block: bool = False, timeout: Timeout = None, consume_on_error: bool = True) -> Peek:
        """Zero-copy read: ``with rb.peek() as view:`` gives a read-only
        memoryview of the next message inside the ring; the message is
        consumed when the block ends, also if it raises, unless
        ``consume_on_error`` is false: then an exception leaves the message
        at the head for the next read (e.g. a reader whose output broke).

        While the block is open, other consumers' blocking reads wait and
        their non-blocking reads find the ring empty: keep it short, and do
        not read from this ring inside it. The view is released at the end of
        the block: using it afterwards raises ValueError. Objects made from
        it (slices, numpy arrays) are not tracked: copy what you keep.
        Raises :class:`BufferEmpty` if there is no message (after waiting,
        with ``block``); :class:`InvalidArgument` on an overwrite ring, where
        a writer could reclaim the record while the view is held (use
        :meth:`read` there).
        """
        self._h.check_peek()
        return Peek(self._h, block, timeout, consume_on_error)

    def peek_many(
        self, max_messages: int, block: bool = False, timeout: Timeout = None, consume_on_error: bool = True
    ) -> PeekMany:
        """Zero-copy read of a batch: ``with rb.peek_many(64) as batch:``
        gives a list of ``(position, view)`` pairs, one per message, for up to
        ``max_messages`` consecutive messages (what is there now, at least
        one): ``view`` is a read-only memoryview of the message inside the
        ring, ``position`` its record's byte position (as :meth:`positions`
        counts: unique for the life of the file and increasing, so
        ``(rb.file_id, position)`` names the message for good, e.g. for a
        bridge that acknowledges messages one by one). A record takes 8
        header bytes plus its payload rounded up to 8, so the next message's
        position is ``position + 8 + len(view)`` rounded up to 8, unless
        aborted records lie between.

        All the messages are consumed when the block ends; if it raises,
        all are consumed too, unless ``consume_on_error`` is false: then all
        stay for the next read. An exception (Ctrl-C) before the block is
        entered leaves them all, and a process killed inside the block
        leaves them all to the next reader (at-least-once).

        As with :meth:`peek`, other consumers wait while the block is open
        (their non-blocking reads find the ring empty): keep it short, and
        do not read from this ring inside it. The views are released at the
        end of the block (using one afterwards raises ValueError; if one is
        still exported, e.g. by ``ffi.from_buffer``, the messages are
        consumed all the same and :class:`BufferError` raised); objects made
        from them are not tracked: copy what you keep. Raises
        :class:`BufferEmpty` if there is no message (after waiting, with
        ``block``), TypeError if ``max_messages`` is not an integer and
        :class:`InvalidArgument` (a ValueError) if it is below 1 or the ring
        is an overwrite ring (as :meth:`peek`).
        """
        if isinstance(max_messages, bool):
            raise TypeError("max_messages must be an integer, not bool")
        want = operator.index(max_messages)  # TypeError for non-integers
        if want < 1:
            raise error(_EINVAL, detail=f"max_messages {want} (at least 1)")
        want = min(want, self._capacity // 16)  # a ring holds no more records than that
        self._h.check_peek()
        return PeekMany(self._h, want, block, timeout, consume_on_error)

    def get_with(
        self,
        func: Callable[[memoryview], _T],
        block: bool = True,
        timeout: Timeout = None,
        consume_on_error: bool = True,
    ) -> _T:
        """Zero-copy read through a callback: calls ``func(view)`` with a
        read-only memoryview of the next message inside the ring, consumes
        the message when ``func`` returns, and returns what ``func``
        returned. If ``func`` raises, the exception propagates and the
        message is consumed, unless ``consume_on_error`` is false: then it
        stays at the head for the next read (as it does when an exception,
        such as Ctrl-C, comes before ``func`` is called).

        The lighter form of :meth:`peek` (about a third of its cost for
        small messages). Blocks like :meth:`get`: raises
        :class:`BufferEmpty` when there is no message and ``block`` is
        false or ``timeout`` seconds pass. While ``func`` runs, other
        consumers wait: keep it short, and do not read from this ring inside
        it. The view is released when ``func`` returns (using it afterwards
        raises ValueError); if an export of it is still held
        (``ffi.from_buffer(view)``), the message is consumed all the same
        and :class:`BufferError` raised. Objects made from it (slices, numpy
        arrays) are not tracked: copy what you keep. Refused on an overwrite
        ring, as :meth:`peek`.
        """
        if self._rb is None:
            raise error(_ECLOSED)
        if self._overwrite:
            raise error(_EINVAL, detail=PEEK_REFUSED)
        if block and timeout is not None:
            check_timeout(timeout)
        region = self._region
        off = -1
        called = False
        try:
            # One C call when a message is there; the waiting loop only when there is none.
            off = _rbpy_peek(region)
            if off < 0:
                if off == _EEMPTY and block:
                    off = wait(_rbpy_peek_wait, region, timeout=timeout)
                if off < 0:
                    raise error(_EEMPTY) if off in (_EEMPTY, _ETIMEDOUT) else self._h.read_error(int(off))
            view = self._rview[off : off + region.len]
            called = True
            result = func(view)
        except BaseException:
            if off < 0:  # interrupted before the offset was stored?
                off = _rbpy_last_peek(region)
            if off >= 0:
                # An exception before func got the message (Ctrl-C) leaves it.
                if consume_on_error and called:
                    _rbpy_release(region)
                else:
                    _rbpy_peek_cancel(region)
            raise
        try:
            view.release()
        except BufferError:
            _rbpy_release(region)
            raise BufferError("get_with(): the view is still exported after func returned") from None
        _rbpy_release(region)
        return result

    def put_array(self, a: Any, block: bool = True, timeout: Timeout = None) -> None:
        """Writes a numpy array (or anything :func:`numpy.asarray` takes) as
        one message: the ``.npy`` file ``numpy.save`` would write (but for
        the padding bytes of a structured dtype, zero here; docs/format.md,
        "Array messages"), its data copied once, straight into the ring.
        Waits for space as :meth:`put`.

        The data goes as the array lies if it is C-contiguous (a 1-d array
        always is) or, with ``fortran_order: True``, if it is only
        Fortran-contiguous; any other layout (a slice with steps, a
        broadcast view) goes in C order. A subclass arrives as a plain
        ndarray (a masked array without its mask).

        Raises :class:`InvalidSize` (nothing written) if header and data are
        larger than :attr:`max_message_size`, TypeError for an array of
        Python objects (dtype object: send those with :class:`ringbuffer.Queue`),
        :class:`BufferFull` as :meth:`put`. If copying the data raises
        (Ctrl-C), nothing is written. ImportError without numpy.
        """
        from ringbuffer import _array  # imported when used: it loads ast, which start-up does not need

        _array.put_array(self, a, block, timeout)

    def get_array(self, block: bool = True, timeout: Timeout = None) -> Any:
        """Reads the next message as a numpy array, waiting for one as
        :meth:`get`: a new array (writeable, owning its memory), its data
        copied once out of the ring, with the message's dtype, shape and
        order (a Fortran-order message gives a Fortran-contiguous array).

        Reads what :meth:`put_array` writes and any other ``.npy`` file of
        version 1.0 to 3.0 whose dtype holds no Python objects. Raises
        :class:`NotAnArray` (a ValueError) for any other message, which is
        then consumed (left, it would stop every ``get_array`` loop there);
        read messages of unknown kind with :meth:`read` or :meth:`peek`
        instead. An exception while copying (Ctrl-C, MemoryError) leaves
        the message for the next read (except on an overwrite ring, where
        zero-copy reads are refused: the message is copied out first, and
        consumed). :class:`BufferEmpty` as :meth:`get`; ImportError without
        numpy.
        """
        from ringbuffer import _array

        return _array.get_array(self, block, timeout)

    def drain(self) -> list[bytes]:
        """Reads every message there is now, without blocking.

        If this handle's group is found overrun (an overwrite ring) after
        some messages were taken, the :class:`MessagesLost` raised holds
        them, in order, as its ``messages``: they were consumed, and came
        before the gap."""
        out: list[bytes] = []
        while True:
            try:
                batch = self._get_many(4096, block=False, timeout=None)
            except MessagesLost as exc:
                exc.messages = out
                raise
            if not batch:
                return out
            out.extend(batch)

    def __iter__(self) -> Iterator[bytes]:
        """Yields messages as they arrive, blocking for each; ends when the
        ring is closed (from another thread). Iterating a ring that is
        already closed raises :class:`BufferClosed`."""
        if self._rb is None:
            raise error(_ECLOSED)
        while True:
            try:
                yield self.get()
            except BufferClosed:
                return

    # -- event loops -------------------------------------------------------

    def fileno(self) -> int:
        """A file descriptor that polls readable while a non-blocking read
        would find a message (``rb_event_fd``), for ``select``,
        ``selectors``, ``loop.add_reader`` and
        ``multiprocessing.connection.wait``. Once a non-blocking read through
        this object found the ring empty, it stops polling readable until a
        message comes; readiness may be spurious (another consumer was
        faster): follow it with non-blocking reads (``try_read``,
        ``read_many``). Made at the first call (a thread then waits on the
        ring for this object), closed with the object; never read from it or
        close it yourself."""
        return self._h.event_fd(_EV_READABLE)

    async def aget(self, timeout: Timeout = None) -> bytes:
        """Coroutine: the next message, waiting for one without blocking the
        event loop; :class:`BufferEmpty` if ``timeout`` seconds pass. Returns
        at once, without suspending, when a message is there. Cancelling it
        never loses a message."""
        rb = self._rb
        if rb is None:
            raise error(_ECLOSED)
        if timeout is not None:
            check_timeout(timeout)
        # The hot path, inline as in get(): a message is there and fits a
        # pooled buffer; an empty ring goes straight to waiting; anything
        # else the general way.
        bufs = self._bufs
        try:
            buf, view = pooled = bufs.pop()
        except IndexError:
            n = _ETRUNC
        else:
            n = _rbpy_read(rb, buf)
            if n >= 0:
                msg = view[:n]
                bufs.append(pooled)  # after the copy, as in get()
                return msg
            bufs.append(pooled)
            if n == _ELOST or n == _ENOGROUP:
                raise self._h.read_error(n)  # as in get()
        if n != _EEMPTY:
            msg = self._receive(rb, False, None)
            if msg is not None:
                return msg
        # Imported here, not at the top: _aio brings asyncio (about 30 ms)
        # to every program that imports ringbuffer, coroutines or not.
        from ringbuffer import _aio

        return await _aio.aget(self, self._h, timeout)

    async def wait_readable(self, timeout: Timeout = None) -> bool:
        """Coroutine: waits until a message may be there (True) or
        ``timeout`` seconds pass (False), without reading anything: for
        zero-copy reads in an event loop (await it, then ``peek()`` or
        ``peek_many()`` without blocking). Readiness may be spurious
        (another consumer was faster); a non-blocking read that then finds
        the ring empty makes the next wait sleep again."""
        if self._rb is None:
            raise error(_ECLOSED)
        from ringbuffer import _aio

        return await _aio.wait_ready(
            self._h, _aio.READABLE, check_timeout(timeout) if timeout is not None else None
        )

    async def aget_many(self, max_messages: int, timeout: Timeout = None) -> list[bytes]:
        """Coroutine: waits for the first message (as :meth:`aget`), then takes
        up to ``max_messages`` of what is there (as :meth:`get_many`)."""
        if timeout is not None:
            check_timeout(timeout)
        msgs = self.read_many(max_messages)
        if msgs or operator.index(max_messages) == 0:
            return msgs
        from ringbuffer import _aio

        return await _aio.aget_many(self, self._h, max_messages, timeout)

    async def aput(self, msg: Any, timeout: Timeout = None) -> None:
        """Coroutine: writes one message, waiting for room without blocking
        the event loop; :class:`BufferFull` if ``timeout`` seconds pass.
        Returns at once when there is room. If cancelled, the message was
        either written (and will be delivered) or not written at all."""
        if timeout is not None:
            check_timeout(timeout)
        if not self.try_write(msg):
            from ringbuffer import _aio

            await _aio.aput(self, self._h, msg, timeout)

    async def aputv(self, buffers: Iterable[Any], timeout: Timeout = None) -> None:
        """Coroutine: writes one message gathered from ``buffers`` (as
        :meth:`writev`), waiting for room as :meth:`aput` does; cancelled,
        the message was either written whole or not at all."""
        if timeout is not None:
            check_timeout(timeout)
        # Taken whole: tried again after each wait, an iterator would be used
        # up (a single buffer is left to writev's TypeError).
        pieces = buffers if type(buffers) in _SINGLE_BUFFERS else list(buffers)
        if not self._try_writev(pieces):
            from ringbuffer import _aio

            await _aio.aputv(self._h, lambda: self._try_writev(pieces), timeout)

    async def aput_many(self, msgs: Iterable[Any], timeout: Timeout = None) -> int:
        """Coroutine: writes all messages in order, waiting for room as
        needed; returns how many were written, fewer only when ``timeout``
        passed. Raises :class:`InvalidSize` (and writes nothing) if any
        message is empty or too large. If cancelled, the messages written
        before stay written (a prefix of ``msgs``)."""
        if timeout is not None:
            check_timeout(timeout)
        batch = list(msgs)
        done = self.write_many(batch)
        if done == len(batch):
            return done
        from ringbuffer import _aio

        return await _aio.aput_many(self, self._h, batch, done, timeout)

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for msg in rb:`` awaits each next message; ends when the
        ring is closed (from another task or thread)."""
        if self._rb is None:
            raise error(_ECLOSED)
        from ringbuffer import _aio

        return _aio.iterate(self)

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Closes the ring: calls blocked in other threads raise
        :class:`BufferClosed`, and so does every later call. The file stays.
        The file descriptor (which holds this handle's slot in the ring) and
        the memory mapping are released when the object, and every
        ``reserve()``/``peek()`` block made from it, are garbage-collected,
        so that a call still running in another thread never touches
        unmapped memory; until then the handle counts as attached, and a
        reservation it left open is not skipped by readers. Idempotent."""
        self._rb = None
        h = getattr(self, "_h", None)  # unset if __init__ failed
        if h is not None:
            h.shutdown()

    def __enter__(self) -> RingBuffer:
        if self._rb is None:
            raise error(_ECLOSED)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., RingBuffer], tuple[Any, ...]]:
        # A handle of the default group pickles as before (path, stall
        # timeout); one of a durable group reopens in that group, and one
        # of an ephemeral group gets a new ephemeral group of its own.
        if self._rb is None:
            raise error(_ECLOSED)
        if self._group is None and not self._ephemeral:
            return _reopen, (self.path, self._stall)
        return _reopen, (self.path, self._stall, self._group, self._ephemeral, self._start)

    def __repr__(self) -> str:
        state = "closed" if self._rb is None else f"capacity={self._capacity}"
        return f"<RingBuffer {self.path!r} {state}>"


def _too_small(needed: int, size: int) -> InvalidSize:
    exc = cast(InvalidSize, error(_ETRUNC, detail=f"the message has {needed} bytes, the buffer {size}"))
    exc.needed = needed
    return exc


def _holds_objects(buffer: Any) -> bool:
    """True for a buffer of PyObject pointers (a numpy array of dtype
    object, or a memoryview of one): bytes written over them crash the
    interpreter later. Cheap: no new view of the buffer."""
    if type(buffer) is memoryview:
        try:
            fmt = buffer.format
        except ValueError:  # released: ffi.from_buffer says so
            return False
        return "O" in fmt and "O" in "".join(fmt.split(":")[::2])  # struct codes, not field names
    return bool(getattr(getattr(buffer, "dtype", None), "hasobject", False))
