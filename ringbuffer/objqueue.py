"""The :class:`Queue` class: a drop-in replacement for :class:`multiprocessing.Queue`
that passes pickled objects through a :class:`~ringbuffer.RingBuffer`.

>>> from ringbuffer import Queue
>>> q = Queue()  # a private 1 MiB ring under /dev/shm
>>> q.put({"id": 1})
>>> q.get()
{'id': 1}
>>> q.close()

Differences from :class:`multiprocessing.Queue`:

- The queue is bounded in **bytes** (``maxsize_bytes=``, 1 MiB by
  default), not in items: ``Queue()``, ``Queue(0)`` and ``Queue(maxsize=0)``
  work as in :mod:`multiprocessing`, and a positive ``maxsize`` (a bound in
  items) raises :class:`ValueError` saying what to write instead. The ring's
  capacity is ``maxsize_bytes`` rounded up to a power of two (at least
  4096); each object takes its pickled size plus 8 bytes, rounded up to 8;
  an object whose pickle is larger than half the capacity
  (:attr:`Queue.max_message_size`) cannot be put at all and raises
  :class:`ValueError` (:class:`~ringbuffer.InvalidSize`) at once.
- There is no feeder thread: the object is pickled in the caller and is in
  the ring when :meth:`Queue.put` returns, so nothing is lost if the
  producer exits right after (even with :func:`os._exit`); an unpicklable
  object raises in the caller and leaves the queue untouched.
  :meth:`Queue.join_thread` and :meth:`Queue.cancel_join_thread` are no-ops.
- :meth:`Queue.qsize` counts the messages by walking the ring (approximate
  under concurrency, as in :mod:`multiprocessing`); :meth:`Queue.bytes_used`
  is cheaper.
- A Queue can be pickled at any time, not only while starting a process (it
  pickles as its path and reopens the ring), so it can also be passed to
  pool tasks or sent through another queue. It uses :mod:`pickle` with the
  highest protocol, not :mod:`multiprocessing`'s ``ForkingPickler``: objects
  that only ``ForkingPickler`` can reduce (sockets, connections) need a
  custom ``dumps``.
"""

from __future__ import annotations

import atexit
import errno
import os
import pickle
import secrets
import tempfile
import time
import types
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable, Union, cast

from ringbuffer._wait import Timeout
from ringbuffer.exceptions import BufferClosed, InvalidSize, Status, error
from ringbuffer.ring import RingBuffer, StrPath

__all__ = ["DEFAULT_MAXSIZE_BYTES", "Queue"]

DEFAULT_MAXSIZE_BYTES = 1 << 20
"""The default ``maxsize_bytes``: 1 MiB (objects of up to 512 KiB pickled)."""

Dumps = Callable[[Any], Union[bytes, bytearray, memoryview, str]]
Loads = Callable[[bytes], Any]

_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads
_PROTOCOL = pickle.HIGHEST_PROTOCOL
# A message takes 8 bytes of header plus its length rounded up to 8: the
# smallest one (1 byte) takes 16.
_MIN_RECORD = 16


def _private_dir() -> str:
    """Where private rings go: /dev/shm (tmpfs) when usable, else tempfile's folder."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _remove_private(path: str, owner_pid: int) -> None:
    """Removes a private ring file, but only in the process that created it
    (a fork child runs its copy of the finalizer too, and must not)."""
    if os.getpid() != owner_pid:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# Private files of queues that were pickled: removed when this process
# exits (by the process that created them), not when the Queue is closed.
_remove_at_exit: set[tuple[str, int]] = set()


@atexit.register
def _remove_shared_private_files() -> None:
    for path, owner_pid in list(_remove_at_exit):
        _remove_private(path, owner_pid)


def _add_note(exc: BaseException, obj: Any) -> None:
    """Says, in the traceback, what was being serialized (Python 3.11+)."""
    if hasattr(exc, "add_note"):
        exc.add_note(f"while serializing a {type(obj).__qualname__} object for ringbuffer.Queue.put")


def _check_callables(dumps: Any, loads: Any) -> None:
    if dumps is not None and not callable(dumps):
        raise TypeError(f"dumps must be callable or None, not {type(dumps).__name__}")
    if loads is not None and not callable(loads):
        raise TypeError(f"loads must be callable or None, not {type(loads).__name__}")


def _check_maxsize(maxsize: Any) -> None:
    """multiprocessing.Queue's ``maxsize`` (items): 0 or less means no bound
    and is accepted; a positive one cannot be honoured and is refused."""
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an integer, not {type(maxsize).__name__}")
    if maxsize <= 0:
        return
    hint = (
        f"ringbuffer.Queue is bounded in bytes, not items, and cannot honour maxsize={maxsize}: "
        f"write Queue(maxsize_bytes=N) for a ring of N bytes (default {DEFAULT_MAXSIZE_BYTES}, which "
        f"holds objects pickled to up to {DEFAULT_MAXSIZE_BYTES // 2} bytes; each object takes "
        "its pickled size + 8 bytes, rounded up to 8)"
    )
    if maxsize >= 4096:
        hint += f"; before 0.2 the first argument was maxsize_bytes: write Queue(maxsize_bytes={maxsize})"
    raise error(Status.EINVAL, detail=hint)


def _rebuild(path: str, dumps: Dumps | None, loads: Loads | None) -> Queue:
    """Unpickles a Queue: reopens its ring by path (in a child process, say)."""
    try:
        return Queue.open(path, dumps=dumps, loads=loads)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            errno.ENOENT,
            "cannot reopen a ringbuffer.Queue: its file no longer exists (the process that created "
            "the queue closed it or exited before this process opened it)",
            path,
        ) from e


class Queue:
    """A process-shared FIFO queue of Python objects, with the API of
    :class:`multiprocessing.Queue`, backed by a ring buffer file.

    ``Queue(maxsize_bytes=1 MiB)`` creates a private ring in a temporary file
    (``rbqueue-<pid>-<random>.ring`` under ``/dev/shm`` when it exists, else
    in :func:`tempfile.gettempdir`), removed when the creating process calls
    :meth:`close`, when the Queue is garbage-collected there, or when that
    process exits (not when a signal kills it: SIGKILL, or SIGTERM without a
    handler). Child processes reach it by inheritance (``fork``: the child
    uses the parent's mapping) or by pickling (``spawn``, ``forkserver``,
    :class:`concurrent.futures.ProcessPoolExecutor` initializer or task
    arguments: the child reopens the file by path); they never remove it.
    Processes that opened it keep working after it is removed, but none can
    open it any more: see :meth:`close`.

    ``Queue(maxsize_bytes=..., path=...)`` creates a ring at a named path
    instead (:class:`FileExistsError` if it exists), which unrelated
    processes open with :meth:`Queue.open`; it is never removed
    automatically.

    ``maxsize_bytes`` is the ring's size in bytes, rounded up to a power of
    two of at least 4096 (:attr:`capacity`). Each object takes its pickled
    size plus 8 bytes, rounded up to 8; the largest object's pickle is half
    the capacity (:attr:`max_message_size`). ``maxsize``, the only
    positional argument, is :class:`multiprocessing.Queue`'s bound in items:
    0 or less (no bound) is accepted, a positive one is refused with a
    :class:`ValueError` (:class:`~ringbuffer.InvalidArgument`) that says to
    bound the queue by ``maxsize_bytes`` instead.

    Objects are pickled with :func:`pickle.dumps` at the highest protocol,
    unless a ``dumps``/``loads`` pair is given: ``dumps`` returns a
    bytes-like object or a str (encoded as UTF-8; so ``json.dumps`` and
    ``json.loads`` work), ``loads`` receives bytes. Every process must use
    the same pair; it travels with the Queue when pickled, so it must be
    picklable itself (a module-level function, not a lambda) to reach
    ``spawn`` children. Raw bytes pass unchanged with ``dumps=bytes,
    loads=bytes`` (then other programs, C ones included, can use the ring
    directly); the ring cannot carry empty messages, so ``b""`` then raises
    :class:`ValueError`.

    Every method may be called from several threads and processes at once;
    :meth:`close` from another thread wakes calls blocked in this object,
    which raise :class:`~ringbuffer.BufferClosed`.
    """

    __slots__ = ("__weakref__", "_dumps", "_finalizer", "_loads", "_max", "_owner_pid", "_ring")

    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(
        self,
        maxsize: int = 0,
        *,
        maxsize_bytes: int = DEFAULT_MAXSIZE_BYTES,
        path: StrPath | None = None,
        dumps: Dumps | None = None,
        loads: Loads | None = None,
    ) -> None:
        _check_maxsize(maxsize)
        if isinstance(maxsize_bytes, bool):
            raise TypeError("maxsize_bytes must be an integer, not bool")
        if not isinstance(maxsize_bytes, int):
            raise TypeError(f"maxsize_bytes must be an integer, not {type(maxsize_bytes).__name__}")
        if maxsize_bytes <= 0:
            raise ValueError(f"maxsize_bytes must be positive, not {maxsize_bytes}")
        _check_callables(dumps, loads)
        self._finalizer: weakref.finalize | None = None
        self._owner_pid: int | None = None
        if path is None:
            name = os.path.join(_private_dir(), f"rbqueue-{os.getpid()}-{secrets.token_hex(8)}.ring")
            ring = RingBuffer(name, maxsize_bytes)
            self._owner_pid = os.getpid()
            self._finalizer = weakref.finalize(self, _remove_private, ring.path, self._owner_pid)
        else:
            ring = RingBuffer(path, maxsize_bytes)
        self._setup(ring, dumps, loads)

    @classmethod
    def open(cls, path: StrPath, *, dumps: Dumps | None = None, loads: Loads | None = None) -> Queue:
        """Opens the queue whose ring is at ``path`` (created by ``Queue(..., path=path)``
        in any process, or by :class:`~ringbuffer.RingBuffer`). Closing it never removes the file."""
        _check_callables(dumps, loads)
        self = cls.__new__(cls)
        self._finalizer = None
        self._owner_pid = None
        self._setup(RingBuffer.open(path), dumps, loads)
        return self

    def _setup(self, ring: RingBuffer, dumps: Dumps | None, loads: Loads | None) -> None:
        self._ring = ring
        self._max = ring.max_message_size
        self._dumps = dumps  # None: pickle
        self._loads = loads

    # -- properties --------------------------------------------------------

    @property
    def path(self) -> str:
        """The ring file's path."""
        return self._ring.path

    @property
    def capacity(self) -> int:
        """The ring's size in bytes: ``maxsize_bytes`` rounded up to a power of two (at least 4096)."""
        return self._ring.capacity

    @property
    def max_message_size(self) -> int:
        """The largest serialized object that fits, in bytes: half the capacity."""
        return self._max

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called on this object."""
        return self._ring.closed

    # -- putting -----------------------------------------------------------

    def _serialize(self, obj: Any) -> bytes | bytearray | memoryview:
        """Pickles (or ``dumps``) one object and checks its size; the queue is not touched."""
        dumps = self._dumps
        try:
            payload: Any = _pickle_dumps(obj, _PROTOCOL) if dumps is None else dumps(obj)
        except Exception as e:
            _add_note(e, obj)
            raise
        if type(payload) is bytes:  # pickle's case: no conversion
            n = len(payload)
        elif isinstance(payload, str):
            payload = payload.encode()
            n = len(payload)
        else:
            try:
                n = memoryview(payload).nbytes
            except TypeError:
                raise TypeError(
                    f"dumps must return a bytes-like object or a str, not {type(payload).__name__}"
                ) from None
        if n > self._max or n == 0:
            raise self._size_error(obj, n)
        return payload

    def _size_error(self, obj: Any, n: int) -> InvalidSize:
        if n == 0:
            detail = "the serialized object is empty (0 bytes); the queue cannot carry empty messages"
        else:
            detail = (
                f"the serialized {type(obj).__qualname__} object is {n} bytes, larger than the queue's "
                f"maximum message size of {self._max} bytes (half its capacity of {self.capacity}; "
                f"create the queue with a larger maxsize_bytes=)"
            )
        return cast(InvalidSize, error(Status.ESIZE, detail=detail))

    def _closed_error(self) -> BufferClosed:
        return cast(
            BufferClosed, error(Status.ECLOSED, detail=f"ringbuffer.Queue {self._ring.path!r} is closed")
        )

    def put(self, obj: Any, block: bool = True, timeout: Timeout = None) -> None:
        """Puts an object into the queue, waiting for space if needed.

        The object is serialized first, in the caller: if that fails, the
        exception propagates and the queue is untouched; if the result is
        larger than :attr:`max_message_size`, :class:`ValueError`
        (:class:`~ringbuffer.InvalidSize`) is raised at once. Raises
        :class:`queue.Full` (:class:`~ringbuffer.BufferFull`) when ``block``
        is false and there is no space, or when ``timeout`` seconds pass;
        :class:`ValueError` (:class:`~ringbuffer.BufferClosed`) if the queue
        is closed. When it returns, the object is in the ring.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        if self._dumps is None:  # the common case, inline
            try:
                payload = _pickle_dumps(obj, _PROTOCOL)
            except Exception as e:
                _add_note(e, obj)
                raise
            if len(payload) > self._max:
                raise self._size_error(obj, len(payload))
            ring.put(payload, block, timeout)
        else:
            ring.put(self._serialize(obj), block, timeout)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def put_many(self, objs: Iterable[Any], block: bool = True, timeout: Timeout = None) -> int:
        """Puts objects in order, waiting for space as needed, with few C calls;
        returns how many were put, which is fewer only when ``timeout``
        passed (or, with ``block`` false, when the ring filled up): retry the
        rest (``objs[n:]``).

        Every object is serialized before any is put: if one fails to
        serialize or is too large, the exception propagates and none is put.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        payloads = [self._serialize(obj) for obj in objs]
        return ring.put_many(payloads, block, timeout)  # validates timeout also for no objects

    # -- getting -----------------------------------------------------------

    def get(self, block: bool = True, timeout: Timeout = None) -> Any:
        """Removes and returns the next object, waiting for one if needed.

        Raises :class:`queue.Empty` (:class:`~ringbuffer.BufferEmpty`) when
        ``block`` is false and there is none, or when ``timeout`` seconds
        pass; :class:`ValueError` (:class:`~ringbuffer.BufferClosed`) if the
        queue is closed. If unpickling (``loads``) fails, the exception
        propagates and that message is consumed, as with
        :class:`multiprocessing.Queue`.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        loads = self._loads
        if loads is None:
            return _pickle_loads(ring.get(block, timeout))
        return loads(ring.get(block, timeout))

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: Timeout = None) -> list[Any]:
        """Waits for the first object (as :meth:`get`), then takes up to
        ``max_items`` of what is there, with one C call; returns them in order.

        Raises :class:`queue.Empty` when nothing came (in time, or at once
        with ``block`` false). If unpickling one fails, the exception
        propagates and all the messages this call took are consumed.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        loads = self._loads or _pickle_loads
        return [loads(m) for m in ring.get_many(max_items, block, timeout)]

    # -- event loops -------------------------------------------------------

    def fileno(self) -> int:
        """The ring's readable event descriptor (:meth:`RingBuffer.fileno`),
        so a Queue works with ``select``, ``selectors`` and
        ``multiprocessing.connection.wait`` next to pipes and sockets."""
        if self._ring.closed:
            raise self._closed_error()
        return self._ring.fileno()

    async def aget(self, timeout: Timeout = None) -> Any:
        """Coroutine: removes and returns the next object, waiting without
        blocking the event loop (:meth:`RingBuffer.aget`); :class:`queue.Empty`
        on timeout. Cancelling it never loses an object."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        loads = self._loads or _pickle_loads
        return loads(await ring.aget(timeout))

    async def aget_many(self, max_items: int, timeout: Timeout = None) -> list[Any]:
        """Coroutine: waits for the first object, then takes up to
        ``max_items`` of what is there (:meth:`get_many`)."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        loads = self._loads or _pickle_loads
        return [loads(m) for m in await ring.aget_many(max_items, timeout)]

    async def aput(self, obj: Any, timeout: Timeout = None) -> None:
        """Coroutine: puts an object, waiting for room without blocking the
        event loop; :class:`queue.Full` on timeout. The object is serialized
        first, in the caller (as :meth:`put`)."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        await ring.aput(self._serialize(obj), timeout)

    async def aput_many(self, objs: Iterable[Any], timeout: Timeout = None) -> int:
        """Coroutine: puts objects in order, waiting for room as needed;
        returns how many were put, fewer only when ``timeout`` passed."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        return await ring.aput_many([self._serialize(obj) for obj in objs], timeout)

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for obj in q:`` awaits each next object; ends when the
        queue is closed (from another task or thread)."""
        if self._ring.closed:
            raise self._closed_error()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.aget()
            except BufferClosed:
                return

    # -- state -------------------------------------------------------------

    def qsize(self) -> int:
        """The approximate number of objects in the queue (not reliable while
        others put and get, as for :class:`multiprocessing.Queue`).

        The ring does not keep a count: this walks its records, taking the
        read turn briefly as a get would (:meth:`RingBuffer.info`). If other
        consumers keep the turn busy for long, it raises
        :class:`NotImplementedError`, which portable code already handles
        (:class:`multiprocessing.Queue` raises it on macOS).
        """
        if self._ring.closed:
            raise self._closed_error()
        for _ in range(100):
            info = self._ring.info()
            if info["counted"]:
                return int(info["messages"])
            time.sleep(0.0005)
        raise NotImplementedError(
            "ringbuffer.Queue.qsize(): the ring stayed busy; use empty() or bytes_used()"
        )

    def bytes_used(self) -> int:
        """Bytes of the ring in use now (each object takes 8 + its serialized
        size, rounded up to 8), out of :attr:`capacity`. A snapshot: other
        processes may change it at once."""
        head, tail = self._positions()
        return tail - head

    def empty(self) -> bool:
        """True if the ring holds nothing now. Approximate, as with
        :class:`multiprocessing.Queue`: other processes may change it at
        once, and a message still being written counts as present (a
        :meth:`get_nowait` may then still raise :class:`queue.Empty`)."""
        head, tail = self._positions()
        return head == tail

    def full(self) -> bool:
        """True if not even the smallest message (16 bytes in the ring) would
        fit now; a larger object may not fit even when this is False.
        Approximate, as :meth:`empty`."""
        head, tail = self._positions()
        return self._ring.capacity - (tail - head) < _MIN_RECORD

    def _positions(self) -> tuple[int, int]:
        if self._ring.closed:
            raise self._closed_error()
        return self._ring.positions()

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Closes this process's handle on the queue: later calls on this
        object raise :class:`ValueError` (:class:`~ringbuffer.BufferClosed`),
        and calls blocked in other threads are woken and raise it. Objects
        already put stay in the ring for other processes. Idempotent.

        In the process that created a private queue (no ``path``), it also
        removes the file, unless the queue was ever pickled (handed to a
        ``spawn``/``forkserver`` child or a pool): then a child may not have
        opened it yet (the usual ``put(); close(); join_thread()`` pattern
        of :class:`multiprocessing.Queue`), so the file is removed when the
        creating process exits instead.
        """
        self._ring.close()
        fin = self._finalizer
        if fin is not None and os.getpid() == self._owner_pid:
            fin()

    def join_thread(self) -> None:
        """A no-op: there is no feeder thread (a put object is already in the ring)."""

    def cancel_join_thread(self) -> None:
        """A no-op: there is no feeder thread, so nothing can be lost at exit."""

    def __enter__(self) -> Queue:
        if self._ring.closed:
            raise self._closed_error()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Callable[..., Queue], tuple[str, Dumps | None, Loads | None]]:
        if self._ring.closed:
            raise self._closed_error()
        fin = self._finalizer
        if fin is not None and os.getpid() == self._owner_pid:
            # Another process will open the file by path, maybe after this
            # object is closed or collected: remove it at exit instead.
            fin.detach()
            self._finalizer = None
            _remove_at_exit.add((self._ring.path, self._owner_pid))
        return _rebuild, (self._ring.path, self._dumps, self._loads)

    def __repr__(self) -> str:
        state = "closed" if self._ring.closed else f"capacity={self._ring.capacity}"
        return f"<ringbuffer.Queue {self._ring.path!r} {state}>"
