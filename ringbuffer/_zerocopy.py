"""The zero-copy blocks: what ``RingBuffer.reserve()``,
``RingBuffer.peek()`` and ``RingBuffer.peek_many()`` return. They hold the ring's :class:`Handle` (never the
RingBuffer itself) and use only its documented attributes."""

from __future__ import annotations

from typing import Any

from ringbuffer._args import SIZE_MAX, size_arg
from ringbuffer._handle import Handle
from ringbuffer._ringbuf import ffi, lib
from ringbuffer._wait import Timeout, check_timeout, wait
from ringbuffer.exceptions import Status, error

__all__ = ["Peek", "PeekMany", "Reservation", "release_view"]

# Looked up once: an attribute of ``lib`` or ``ffi`` costs a lookup on every use.
_buffer = ffi.buffer
_NULL = ffi.NULL
_rb_reserve = lib.rb_reserve
_rb_reserve_wait = lib.rb_reserve_wait
_rb_commit = lib.rb_commit
_rb_abort = lib.rb_abort
_rb_peek = lib.rb_peek
_rb_peek_wait = lib.rb_peek_wait
_rb_release = lib.rb_release
_rb_peek_cancel = lib.rb_peek_cancel
_rb_peek_many = lib.rb_peek_many
_rb_peek_many_wait = lib.rb_peek_many_wait
_new = ffi.new
_unpack = ffi.unpack

_OK = int(Status.OK)
_EFULL = int(Status.EFULL)
_EEMPTY = int(Status.EEMPTY)
_ETIMEDOUT = int(Status.ETIMEDOUT)
_SIZE_MAX = SIZE_MAX


def release_view(view: memoryview) -> bool:
    """Releases a memoryview; False if it is still exported elsewhere."""
    try:
        view.release()
    except BufferError:
        return False
    return True


class _Block:
    """What the blocks of ``reserve()`` and ``peek()`` share. They are classes
    rather than ``@contextlib.contextmanager`` generators, which cost several
    times as much per block, and keep the generators' behaviour: everything
    happens when the block is entered (once only), and what the block holds
    is finished exactly once, also if the object is garbage-collected with
    its block still open (as closing the generator did)."""

    __slots__ = ("_block", "_handle", "_rb", "_timeout", "_view")
    _what = ""

    def __init__(self, handle: Handle, block: bool, timeout: Timeout) -> None:
        self._view: memoryview | None = None  # set while the block is open
        self._rb: Any = None  # set when the block is entered (once only)
        self._handle = handle
        self._block = block
        self._timeout = timeout

    def _enter(self) -> Any:
        """The ``rb_ring *``, after the checks every block makes first."""
        if self._rb is not None:
            raise RuntimeError(f"{self._what} block can be entered only once")
        self._rb = rb = self._handle.rb
        if rb is None:
            raise error(Status.ECLOSED)
        return rb

    def _check_timeout(self) -> None:
        if self._block and self._timeout is not None:
            check_timeout(self._timeout)  # also when no wait is needed

    def __exit__(self, typ: Any, value: Any, tb: Any) -> None:
        raise NotImplementedError

    _exported = ""  # the BufferError's text: a view still exported after the block

    def _ended(self, typ: Any, rc: int, released: bool) -> None:
        """What a peek block raises at its end, when the block itself did not."""
        if typ is not None:
            return
        if rc != _OK:  # RB_EINVAL: a block inherited through fork (the parent's peek)
            raise error(rc, self._handle.path)
        if not released:
            raise BufferError(self._exported)

    def __del__(self) -> None:
        # Abandoned with its block open (in a reference cycle, or never
        # left): finished as closing the generator did. If the Handle was
        # finalized first, it finished what the block held already.
        if self._view is not None:
            try:
                self.__exit__(GeneratorExit, None, None)
            except Exception:  # interpreter shutdown: the binding may be gone
                pass


class Reservation(_Block):
    """The block of ``reserve()``: the reservation is committed when the
    block ends normally, aborted if it raises, if an exception (Ctrl-C) lands
    in ``__enter__`` after the reservation was made, or if the object is
    garbage-collected with its block still open."""

    __slots__ = ("_ptr", "_size")
    _what = "a reserve()"

    def __init__(self, handle: Handle, size: Any, block: bool, timeout: Timeout) -> None:
        super().__init__(handle, block, timeout)
        self._size = size

    def __enter__(self) -> memoryview:
        rb = self._enter()
        handle = self._handle
        size = self._size
        n = size if type(size) is int and 0 <= size <= _SIZE_MAX else size_arg(size)
        self._check_timeout()
        pair: Any = handle.pointer_pair()
        ptr = pair[0]  # NULL until reserved
        p = _NULL  # the reservation, once read out of the pair
        try:
            # One C call when there is space; the waiting loop only when there is not.
            rc = _rb_reserve(rb, n, ptr)
            if rc == _EFULL and self._block:
                rc = wait(_rb_reserve_wait, rb, n, ptr, timeout=self._timeout)
            if rc != _OK:
                raise error(_EFULL) if rc in (_EFULL, _ETIMEDOUT) else handle.write_error(rc, size)
            p = ptr[0]
            # Back in the pool only once p is read, and at most once: an
            # interrupt right after the append must not append it again
            # (a pair lost to an interrupt is only garbage).
            back, pair = pair, None
            handle.pointers.append(back)
            handle.reserved.add(p)
            self._ptr = p
            view = memoryview(_buffer(p, n))
            self._view = view  # the last step: from here on, __exit__ finishes it
            return view
        except BaseException:
            # Ctrl-C (or anything) after the reservation was made: abort it.
            self._view = None
            if pair is not None:
                if p == _NULL:
                    p = ptr[0]
                handle.pointers.append(pair)
            if p != _NULL:
                handle.reserved.discard(p)
                _rb_abort(rb, p)
            raise

    def __exit__(self, typ: Any, value: Any, tb: Any) -> None:
        view = self._view
        if view is None:  # not entered, or already finished
            return
        finish = _rb_abort  # unless the block completes and the view is released
        try:
            if typ is None:
                if not release_view(view):
                    raise BufferError(
                        "reserve(): the view is still exported (e.g. by ffi.from_buffer); aborted"
                    )
                finish = _rb_commit
            else:
                release_view(view)
        finally:
            # Whatever happens (Ctrl-C included), the reservation is finished,
            # once: by whoever takes it out of the handle's reserved set, this
            # block or the Handle's __del__ (see there).
            self._view = None
            try:
                self._handle.reserved.remove(self._ptr)
            except KeyError:
                pass  # finished already, by the Handle's __del__
            else:
                finish(self._rb, self._ptr)


class Peek(_Block):
    """The block of ``peek()``. The read turn is never kept: given back
    (message not consumed) if anything goes wrong before the block is
    entered, given back or consumed (``consume_on_error``) if the block
    raises or the object is garbage-collected with its block open."""

    __slots__ = ("_consume", "_finish", "_raw")
    _what = "a peek()"
    _exported = "peek(): the view is still exported (e.g. by ffi.from_buffer) after the block"

    def __init__(self, handle: Handle, block: bool, timeout: Timeout, consume_on_error: bool) -> None:
        super().__init__(handle, block, timeout)
        self._consume = consume_on_error

    def __enter__(self) -> memoryview:
        rb = self._enter()
        handle = self._handle
        self._check_timeout()
        pair: Any = handle.pointer_pair()
        ptr, lenp = pair  # ptr: NULL until peeked
        peeked = False  # set once the message is read out of the pair
        try:
            # One C call when a message is there; the waiting loop only when there is none.
            rc = _rb_peek(rb, ptr, lenp)
            if rc == _EEMPTY and self._block:
                rc = wait(_rb_peek_wait, rb, ptr, lenp, timeout=self._timeout)
            if rc != _OK:
                raise error(_EEMPTY) if rc in (_EEMPTY, _ETIMEDOUT) else handle.read_error(rc)
            p, n = ptr[0], lenp[0]
            peeked = True
            # Back in the pool only once p is read, and at most once: an
            # interrupt right after the append must not append it again
            # (a pair lost to an interrupt is only garbage).
            back, pair = pair, None
            handle.pointers.append(back)
            self._raw = raw = memoryview(_buffer(p, n))
            view = raw.toreadonly()
            self._finish = _rb_release if self._consume else _rb_peek_cancel
            self._view = view  # the last step: from here on, __exit__ finishes it
            return view
        except BaseException:
            # Also when an exception (Ctrl-C) lands between the peek and the
            # block: never keep the read turn.
            self._view = None
            if pair is not None:
                peeked = peeked or ptr[0] != _NULL
                handle.pointers.append(pair)
            if peeked:
                _rb_peek_cancel(rb)
            raise

    def __exit__(self, typ: Any, value: Any, tb: Any) -> None:
        view = self._view
        if view is None:  # not entered, or already finished
            return
        finish = _rb_release if typ is None else self._finish
        try:
            # release_view() of both views, inline
            try:
                view.release()
                self._raw.release()
                released = True
            except BufferError:  # still exported
                released = False
        finally:
            self._view = self._raw = None
            # (If the garbage collector already finalized the Handle,
            # rb_close gave the turn back.)
            rc = finish(self._rb) if self._handle.owned is not None else _OK
        self._ended(typ, rc, released)


class PeekMany(_Block):
    """The block of ``peek_many()``: a batch of messages read in place, all
    consumed when the block ends (``rb_release``), or, if it raises, all
    consumed or all left (``consume_on_error``). As :class:`Peek`, the read
    turn is never kept: given back (nothing consumed) if anything goes wrong
    before the block is entered, and finished as an exception would if the
    object is garbage-collected with its block open.

    The C arrays are made per block (three arrays of ``max_messages``): a
    batch is worth much more than they cost, and no pool has to be shared
    between threads. The views are slices of the Handle's read-only view
    of the data region, at the offsets the records' positions give."""

    __slots__ = ("_consume", "_finish", "_max", "_views")
    _what = "a peek_many()"
    _exported = "peek_many(): a view is still exported (e.g. by ffi.from_buffer) after the block"

    def __init__(
        self, handle: Handle, max_messages: int, block: bool, timeout: Timeout, consume_on_error: bool
    ) -> None:
        super().__init__(handle, block, timeout)
        self._max = max_messages  # checked by RingBuffer.peek_many: 1 or more
        self._consume = consume_on_error
        self._views: list[memoryview] | None = None

    def __enter__(self) -> list[tuple[int, memoryview]]:
        rb = self._enter()
        handle = self._handle
        self._check_timeout()
        want = self._max
        ptrs = _new("const void *[]", want)
        lens = _new("size_t[]", want)
        positions = _new("uint64_t[]", want)
        count = _new("size_t *")  # 0 until peeked (C sets it only on success)
        views: list[memoryview] = []
        try:
            # One C call when messages are there; the waiting loop only when there are none.
            rc = _rb_peek_many(rb, ptrs, lens, positions, want, count)
            if rc == _EEMPTY and self._block:
                rc = wait(_rb_peek_many_wait, rb, ptrs, lens, positions, want, count, timeout=self._timeout)
            if rc != _OK:
                raise error(_EEMPTY) if rc in (_EEMPTY, _ETIMEDOUT) else handle.read_error(rc)
            n = count[0]
            # A payload lies at its record's position in the ring, past the
            # 8-byte header word: (position mod capacity) + 8 in the region,
            # which is twice the capacity long (mapped twice: never wraps).
            rview = handle.rview
            mask = len(rview) // 2 - 1
            pos = _unpack(positions, n)
            sizes = _unpack(lens, n)
            batch = []
            for p, size in zip(pos, sizes):
                off = (p & mask) + 8
                view = rview[off : off + size]
                views.append(view)
                batch.append((p, view))
            self._views = views
            self._finish = _rb_release if self._consume else _rb_peek_cancel
            self._view = views[0]  # the last step: from here on, __exit__ finishes the batch
            return batch
        except BaseException:
            # Also when an exception (Ctrl-C) lands between the peek and the
            # block: never keep the read turn.
            self._view = self._views = None
            try:
                if count[0] != 0:
                    _rb_peek_cancel(rb)  # first: another Ctrl-C in the loop below must not skip it
            finally:
                for view in views:
                    view.release()
            raise

    def __exit__(self, typ: Any, value: Any, tb: Any) -> None:
        if self._view is None:  # not entered, or already finished
            return
        views = self._views or ()
        finish = _rb_release if typ is None else self._finish
        released = True
        try:
            for view in views:
                if not release_view(view):  # still exported
                    released = False
        finally:
            self._view = self._views = None
            # (If the garbage collector already finalized the Handle,
            # rb_close gave the turn back.)
            rc = finish(self._rb) if self._handle.owned is not None else _OK
        self._ended(typ, rc, released)
