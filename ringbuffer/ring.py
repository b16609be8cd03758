"""The :class:`RingBuffer` class: the Python face of ``libringbuf.so``.

This is the only module that touches the cffi binding (``ffi``/``lib``);
everything else in the package goes through it.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable
from typing import Any, Callable, Union

from ringbuffer._ringbuf import ffi, lib
from ringbuffer.exceptions import (
    BufferClosed,
    BufferEmpty,
    BufferFull,
    CorruptBuffer,
    InvalidArgument,
    InvalidSize,
    RingBufferError,
    RingBufferTimeout,
)

__all__ = ["RingBuffer", "c_version", "format_version"]

StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_EXCEPTIONS: dict[int, type[RingBufferError]] = {
    lib.RB_EFULL: BufferFull,
    lib.RB_EEMPTY: BufferEmpty,
    lib.RB_ESIZE: InvalidSize,
    lib.RB_ETRUNC: InvalidSize,
    lib.RB_ECLOSED: BufferClosed,
    lib.RB_ETIMEDOUT: RingBufferTimeout,
    lib.RB_ECORRUPT: CorruptBuffer,
    lib.RB_EINVAL: InvalidArgument,
}

# Buffers for read(): not zero-filled (they are always overwritten first).
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_READ_BUF_INITIAL = 64 * 1024
_READ_BUF_KEEP = 1024 * 1024  # larger one-off buffers are not kept
# read_many() returns at most this many bytes per call (or one larger message).
_BATCH_BUF_SIZE = 16 * 1024 * 1024
_SIZE_MAX = 2**64 - 1


def _strerror(code: int) -> str:
    return ffi.string(lib.rb_strerror(code)).decode()


def _error(code: int, path: bytes | None = None, detail: str | None = None) -> Exception:
    """Turns a C status code into the matching exception."""
    if code == lib.RB_ESYS:
        err = ffi.errno
        filename = os.fsdecode(path) if path is not None else None
        return OSError(err, os.strerror(err), filename)
    message = _strerror(code)
    if detail:
        message = f"{message}: {detail}"
    elif path is not None and code == lib.RB_ECORRUPT:
        message = f"{message}: {os.fsdecode(path)!r}"
    return _EXCEPTIONS.get(code, RingBufferError)(code, message)


def _closed() -> BufferClosed:
    return BufferClosed(lib.RB_ECLOSED, _strerror(lib.RB_ECLOSED))


def _contiguous(msg: Any) -> Any:
    """msg itself if it is a C-contiguous buffer, else a bytes copy of it
    (TypeError if it is not a bytes-like object at all)."""
    if type(msg) is bytes:
        return msg
    view = memoryview(msg)
    return msg if view.c_contiguous else view.tobytes()


def _bytes_of(msg: Any) -> Any:
    """A cffi view of any bytes-like object (a non-contiguous one is copied)."""
    return ffi.from_buffer(_contiguous(msg))


def _path_arg(path: Any) -> bytes:
    bpath = os.fsencode(path)
    if b"\0" in bpath:
        raise ValueError("embedded null byte in path")
    return bpath


def _size_arg(size: Any) -> int:
    if isinstance(size, bool):
        raise TypeError("size must be an integer, not bool")
    n = operator.index(size)  # TypeError for non-integers
    return n if 0 <= n <= _SIZE_MAX else 0  # 0 makes the C side say EINVAL


def c_version() -> int:
    """Version number of the loaded ``libringbuf.so`` (``RB_VERSION_NUMBER``)."""
    return int(lib.rb_version())


def format_version() -> int:
    """Version of the ring file format this library reads and writes."""
    return int(lib.RB_FORMAT_VERSION)


def _reopen(path: str) -> RingBuffer:
    return RingBuffer.open(path)


class RingBuffer:
    """A ring of variable-length messages in a memory-mapped file.

    ``RingBuffer(path, size)`` creates a new ring file (its capacity is
    ``size`` rounded up to a power of two of at least 4096 bytes) and fails
    with :class:`FileExistsError` if ``path`` exists, unless ``remove=True``,
    which atomically replaces it. ``RingBuffer.open(path)`` opens an existing
    ring. Any number of threads and processes may write and read the same ring
    at once; each message (1 to :attr:`max_message_size` bytes) is delivered
    exactly once, in order.

    Thread-safety: every method may be called from several threads at once,
    except :meth:`close`, which must not race other calls on the same object.
    A RingBuffer pickles as its path: a ``multiprocessing`` child reopens it.
    """

    __slots__ = ("__weakref__", "_batch_bufs", "_bufs", "_capacity", "_max", "_path", "_rb")

    def __init__(self, path: StrPath, size: int, remove: bool = False, *, mode: int = 0o600) -> None:
        self._rb: Any = None
        bpath = _path_arg(path)
        out = ffi.new("rb_ring **")
        flags = lib.RB_REMOVE if remove else 0
        mode = operator.index(mode)
        if not 0 <= mode <= 0o7777:
            raise InvalidArgument(lib.RB_EINVAL, f"{_strerror(lib.RB_EINVAL)}: mode {mode:#o}")
        rc = lib.rb_create_mode(bpath, _size_arg(size), flags, mode, out)
        if rc != lib.RB_OK:
            detail = (f"size {size!r}" if bpath else "empty path") if rc == lib.RB_EINVAL else None
            raise _error(rc, bpath, detail)
        self._attach(out[0], bpath)

    @classmethod
    def open(cls, path: StrPath) -> RingBuffer:
        """Opens an existing ring file; raises :class:`CorruptBuffer` if it is not one."""
        self = cls.__new__(cls)
        self._rb = None
        bpath = _path_arg(path)
        out = ffi.new("rb_ring **")
        rc = lib.rb_open(bpath, out)
        if rc != lib.RB_OK:
            raise _error(rc, bpath)
        self._attach(out[0], bpath)
        return self

    def _attach(self, rb: Any, bpath: bytes) -> None:
        self._rb = rb
        self._path = bpath
        self._capacity = int(lib.rb_capacity(rb))
        self._max = int(lib.rb_max_message_size(rb))
        # A pool of (buffer, length-out) pairs for read(); list.pop/append are
        # atomic under the GIL, so threads never share one.
        self._bufs: list[tuple[Any, Any]] = []
        self._batch_bufs: list[Any] = []

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
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._rb is None

    def positions(self) -> tuple[int, int]:
        """A snapshot ``(head, tail)`` of the byte positions; ``tail - head`` bytes are in use."""
        rb = self._rb
        if rb is None:
            raise _closed()
        out = ffi.new("uint64_t[2]")
        lib.rb_positions(rb, out, out + 1)
        return int(out[0]), int(out[1])

    # -- writing -----------------------------------------------------------

    def write(self, msg: Any) -> None:
        """Writes one message (any bytes-like object) without blocking.

        Raises :class:`BufferFull` if it does not fit now, :class:`InvalidSize`
        if it is empty or larger than :attr:`max_message_size`.
        """
        if not self.try_write(msg):
            raise BufferFull(lib.RB_EFULL, _strerror(lib.RB_EFULL))

    def try_write(self, msg: Any) -> bool:
        """Like :meth:`write`, but returns False instead of raising :class:`BufferFull`."""
        rb = self._rb
        if rb is None:
            raise _closed()
        if type(msg) is bytes:
            rc = lib.rb_write(rb, msg, len(msg))
            n = len(msg)
        else:
            data = _bytes_of(msg)
            n = len(data)
            rc = lib.rb_write(rb, data, n)
        if rc == lib.RB_OK:
            return True
        if rc == lib.RB_EFULL:
            return False
        raise self._write_error(rc, n)

    def write_many(self, msgs: Iterable[Any]) -> int:
        """Writes messages in order with one C call, stopping at the first that
        does not fit; returns how many were written (0 if the ring is full).
        An iterator is consumed entirely, also past what fit: pass a list to
        retry the rest.

        Raises :class:`InvalidSize` (and writes nothing) if any message is empty
        or too large.
        """
        rb = self._rb
        if rb is None:
            raise _closed()
        if not isinstance(msgs, (list, tuple)):
            msgs = list(msgs)
        if not msgs:
            return 0
        msgs = [_contiguous(m) for m in msgs]
        lens = [len(m) if type(m) is bytes else memoryview(m).nbytes for m in msgs]
        data = ffi.from_buffer(b"".join(msgs))
        written = ffi.new("size_t *")
        rc = lib.rb_write_many(rb, data, lens, len(lens), written)
        if rc == lib.RB_OK:
            return int(written[0])
        if rc == lib.RB_EFULL:
            return 0
        bad = next((n for n in lens if n == 0 or n > self._max), None)
        raise _error(rc, detail=f"message of {bad} bytes (maximum {self._max})" if bad is not None else None)

    def _write_error(self, rc: int, n: int) -> Exception:
        if rc == lib.RB_ESIZE:
            return _error(rc, detail=f"message of {n} bytes (maximum {self._max})")
        return _error(rc)

    # -- reading -----------------------------------------------------------

    def _take_buf(self) -> tuple[Any, Any]:
        try:
            return self._bufs.pop()
        except IndexError:
            return _alloc("char[]", min(self._max, _READ_BUF_INITIAL)), ffi.new("size_t *")

    def _read_bytes(self) -> bytes | None:
        rb = self._rb
        if rb is None:
            raise _closed()
        buf, lenp = self._take_buf()
        rc = lib.rb_read(rb, buf, len(buf), lenp)
        while rc == lib.RB_ETRUNC:  # a larger message than the buffer: grow it
            buf = _alloc("char[]", int(lenp[0]))
            rc = lib.rb_read(rb, buf, len(buf), lenp)
        try:
            if rc == lib.RB_OK:
                return ffi.unpack(buf, lenp[0])
            if rc == lib.RB_EEMPTY:
                return None
            raise _error(rc, self._path)
        finally:
            if len(buf) <= _READ_BUF_KEEP:
                self._bufs.append((buf, lenp))

    def read(self) -> bytes:
        """Reads and consumes the next message without blocking.

        Raises :class:`BufferEmpty` if there is none.
        """
        msg = self._read_bytes()
        if msg is None:
            raise BufferEmpty(lib.RB_EEMPTY, _strerror(lib.RB_EEMPTY))
        return msg

    def try_read(self) -> bytes | None:
        """Like :meth:`read`, but returns None when the ring is empty."""
        return self._read_bytes()

    def read_many(self, max_messages: int) -> list[bytes]:
        """Reads up to ``max_messages`` messages with one C call, without blocking.

        Returns what was there (an empty list if nothing was).
        """
        rb = self._rb
        if rb is None:
            raise _closed()
        want = operator.index(max_messages)
        if want < 0:
            raise InvalidArgument(lib.RB_EINVAL, f"{_strerror(lib.RB_EINVAL)}: max_messages {want}")
        if want == 0:
            return []
        want = min(want, self._capacity // 16)  # a ring holds no more records than that
        lens = ffi.new("size_t[]", want)
        count = ffi.new("size_t *")
        try:
            pooled = self._batch_bufs.pop()
        except IndexError:
            pooled = _alloc("char[]", min(self._capacity, _BATCH_BUF_SIZE))
        try:
            buf = pooled
            rc = lib.rb_read_many(rb, buf, len(buf), lens, want, count)
            while rc == lib.RB_ETRUNC:  # one message larger than the pooled buffer
                buf = _alloc("char[]", int(lens[0]))
                rc = lib.rb_read_many(rb, buf, len(buf), lens, want, count)
            if rc == lib.RB_EEMPTY:
                return []
            if rc != lib.RB_OK:
                raise _error(rc, self._path)
            sizes = ffi.unpack(lens, int(count[0]))
            raw = ffi.buffer(buf, sum(sizes))[:]
        finally:
            self._batch_bufs.append(pooled)
        out = []
        off = 0
        for size in sizes:
            out.append(raw[off : off + size])
            off += size
        return out

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Unmaps the ring (the file stays). Idempotent."""
        rb, self._rb = self._rb, None
        if rb is not None:
            lib.rb_close(rb)

    def __enter__(self) -> RingBuffer:
        if self._rb is None:
            raise _closed()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the binding may be gone
            pass

    def __reduce__(self) -> tuple[Callable[[str], RingBuffer], tuple[str]]:
        if self._rb is None:
            raise _closed()
        return _reopen, (self.path,)

    def __repr__(self) -> str:
        state = "closed" if self._rb is None else f"capacity={self._capacity}"
        return f"<RingBuffer {self.path!r} {state}>"
