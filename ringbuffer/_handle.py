"""The :class:`Handle`: one open ``rb_ring *`` and what the Python objects
built on it share. A :class:`~ringbuffer.RingBuffer` and the zero-copy blocks
it hands out (``reserve()``, ``peek()``) each hold the Handle, and talk to
each other only through its attributes: the interface between them."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from ringbuffer._ringbuf import ffi, lib
from ringbuffer.exceptions import Status, error, messages_lost

__all__ = ["PEEK_REFUSED", "Handle"]

PEEK_REFUSED = (
    "peek is not available on an overwrite ring: a writer may reclaim the record while you hold it; "
    "use read()"
)


class Handle:
    """An open ring handle, closed (``rb_close``) when the last object holding
    it is garbage-collected, so that a call still running in another thread,
    or a block still open, never touches unmapped memory.

    Attributes, for the RingBuffer and its blocks:

    - ``rb``: the ``rb_ring *`` while the ring is open; None once
      :meth:`shutdown` ran (every call then raises BufferClosed).
    - ``path``: the ring file's path (bytes), for error messages.
    - ``max_message``: the largest message, for error messages.
    - ``group``: the handle's consumer group as error messages name it
      ("the default group", "group 'audit'", "an ephemeral group").
    - ``overwrite``: whether the ring is an overwrite ring (``RB_OVERWRITE``):
      zero-copy reads are refused there (see :meth:`check_peek`).
    - ``reserved``: the reservations (``void *``) made through this handle
      and not yet committed or aborted. Whoever removes a pointer from the
      set finishes that reservation, exactly once.
    - ``pointers``: a pool of ``(void **, size_t *)`` pairs for the C calls
      of the blocks (deque pop/append are atomic: threads never share one).
    - ``owned``: the ``rb_ring *`` this Handle closes (``rb_close``) when it
      is collected, kept after :meth:`shutdown`; None once closed (only in
      a reference cycle's finalization can a block still see that).
    - ``fd_waiters``: the coroutines waiting on an event descriptor of this
      handle, by (event loop, descriptor): ``ringbuffer._aio``'s.
    - ``region``: the ``struct rbpy_region *`` of the ``rbpy_*`` zero-copy
      calls, which return offsets into the data region
      (``rb_data_region``); ``wview`` and ``rview``: a writable and a
      read-only memoryview of the whole region, sliced at those offsets (a
      slice costs less than a new view per message). Slices must not
      outlive the handle: the region is unmapped when it closes.
    """

    __slots__ = (
        "fd_waiters",
        "group",
        "max_message",
        "overwrite",
        "owned",
        "path",
        "pointers",
        "rb",
        "region",
        "reserved",
        "rview",
        "wview",
    )

    def __init__(self, rb: Any, path: bytes) -> None:
        self.rb: Any = rb
        self.owned: Any = rb
        self.path = path
        self.max_message = int(lib.rb_max_message_size(rb))
        self.group = "the default group"
        self.overwrite = bool(lib.rb_ring_flags(rb) & lib.RB_OVERWRITE)
        self.reserved: set[Any] = set()
        self.pointers: deque[tuple[Any, Any]] = deque()
        self.fd_waiters: dict[tuple[Any, int], set[Any]] = {}
        base = ffi.new("void **")
        size = ffi.new("size_t *")
        lib.rb_data_region(rb, base, size)
        self.region: Any = ffi.new("struct rbpy_region *", {"rb": rb, "base": ffi.cast("char *", base[0])})
        self.wview = memoryview(ffi.buffer(self.region.base, size[0]))
        self.rview = self.wview.toreadonly()

    def shutdown(self) -> None:
        """Wakes the calls blocked on this handle and refuses new ones (idempotent)."""
        rb, self.rb = self.rb, None
        if rb is not None:
            lib.rb_shutdown(rb)

    def write_error(self, rc: int, size: Any) -> Exception:
        """The exception for a failed write of a ``size``-byte message."""
        if rc == Status.ESIZE:
            return error(rc, detail=f"message of {size} bytes (maximum {self.max_message})")
        return error(rc)

    def read_error(self, rc: int) -> Exception:
        """The exception for a read that failed with ``rc`` (not empty, not a
        timeout, not a short buffer: the callers handle those).

        ``RB_ELOST`` becomes :class:`MessagesLost` with the count the C
        library kept for this handle (``rb_take_lost``, which resets it);
        ``RB_ENOGROUP`` a :class:`GroupNotFound` naming the group."""
        if rc == Status.ELOST:
            rb = self.rb if self.rb is not None else self.owned
            count = ffi.new("uint64_t *")
            if rb is not None:
                lib.rb_take_lost(rb, count)
            return messages_lost(int(count[0]))
        if rc == Status.ENOGROUP:
            return error(rc, detail=f"{self.group} of {os.fsdecode(self.path)!r}")
        return error(rc, self.path)

    def check_peek(self) -> None:
        """Refuses a zero-copy read on an overwrite ring: a writer may
        reclaim the record while the view is held (the C library says
        ``RB_EINVAL``; this says why)."""
        if self.overwrite:
            raise error(Status.EINVAL, detail=PEEK_REFUSED)

    def event_fd(self, events: int) -> int:
        """The handle's event descriptor for ``events`` (``rb_event_fd``):
        made at the first call, the same one afterwards, closed with the
        handle. Raises BufferClosed once the ring is closed."""
        rb = self.rb
        if rb is None:
            raise error(Status.ECLOSED)
        out = ffi.new("int *")
        rc = lib.rb_event_fd(rb, events, out)
        if rc != Status.OK:
            raise error(rc, self.path)
        return int(out[0])

    def pointer_pair(self) -> tuple[Any, Any]:
        """A pooled ``(void **, size_t *)`` pair, its pointer set to NULL (so
        a failure can tell whether the C call got that far); give it back to
        ``pointers`` after use."""
        try:
            pair = self.pointers.pop()
        except IndexError:
            pair = (ffi.new("void **"), ffi.new("size_t *"))
        pair[0][0] = ffi.NULL
        return pair

    def __del__(self) -> None:
        rb = self.owned
        self.owned = None
        if rb is None:
            return
        # No thread can be inside a call (none holds self), but a reserve()
        # block suspended in a reference cycle with this object may be
        # finalized after it: abort its reservation now (it then finds
        # nothing to do), and rb_close gives back an open peek's read turn.
        try:
            for ptr in self.reserved:
                lib.rb_abort(rb, ptr)
            self.reserved.clear()
            lib.rb_close(rb)
        except Exception:  # interpreter shutdown: the binding may be gone
            pass
