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
- Buffers that pickle can pass out of band (PEP 574: numpy arrays,
  :class:`pickle.PickleBuffer`; memoryview objects too, which pickle
  refuses) are not pickled: :meth:`Queue.put` copies each straight into the
  ring, :meth:`Queue.get` copies each into memory the object owns, one copy
  each way (docs/format.md, "Queue messages"). :meth:`Queue.peek` lends an
  object whose arrays are views of the ring, for the length of a block.
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
from pickle import PickleBuffer
from typing import TYPE_CHECKING, Any, Callable, Union, cast

from ringbuffer._oobpickle import KIND, Framed, copy_out, dumps_with_memoryviews, load_copied, views
from ringbuffer._wait import Timeout, check_timeout
from ringbuffer.exceptions import BufferClosed, BufferEmpty, BufferFull, InvalidSize, Status, error
from ringbuffer.ring import RingBuffer, StrPath

if TYPE_CHECKING:
    from ringbuffer._zerocopy import Peek

__all__ = ["DEFAULT_MAXSIZE_BYTES", "ObjectPeek", "Queue"]

DEFAULT_MAXSIZE_BYTES = 1 << 20
"""The default ``maxsize_bytes``: 1 MiB (objects of up to 512 KiB pickled)."""

Dumps = Callable[[Any], Union[bytes, bytearray, memoryview, str]]
Loads = Callable[[bytes], Any]

_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads
_PROTOCOL = pickle.HIGHEST_PROTOCOL  # 5 or later: out-of-band buffers (PEP 574)
_monotonic = time.monotonic
# get() copies a message of up to this many bytes out of the ring as get()
# always did (RingBuffer.get_within: one C call, two copies); a larger one it
# copies out of a peek() in one pass, which saves a copy of every byte (two
# of a framed message's buffers, copied straight into the memory the object
# will own) for about a microsecond more per call. Measured (put+get): the
# two ways are even at 64 KiB; at 256 KiB the peek is 10% faster for a
# plain pickle, 30% for an array.
_COPY_LIMIT = 64 * 1024
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


class _OutOfBand(Exception):
    """Raised by :func:`_plain_only` to stop pickle.dumps at the first buffer."""


def _plain_only(buffer: PickleBuffer) -> None:
    """The first pickling's buffer callback: an object with out-of-band
    buffers is pickled again by :func:`_pickle_out_of_band`. A callback that
    collected the buffers would need a list per call, which costs a plain
    put about 90 ns (a fifth of pickling a small dict); this one costs 20."""
    raise _OutOfBand


def _pickle_out_of_band(obj: Any, exc: Exception) -> tuple[bytes, list[PickleBuffer]]:
    """``pickle.dumps(obj)`` failed with ``exc``: it met an out-of-band
    buffer (:class:`_OutOfBand`), or maybe a memoryview, which pickle
    refuses (a TypeError) and the Queue carries out of band. Pickles the
    object again with every buffer out of band (what the first pickling did
    up to the buffer is done twice, its ``__reduce__`` calls included);
    returns the pickle and the buffers. Raises what stops that, or ``exc``
    if it was something else, noting the object."""
    if isinstance(exc, (_OutOfBand, TypeError)):
        try:
            return dumps_with_memoryviews(obj, _PROTOCOL)
        except Exception as again:
            _add_note(again, obj)
            if again.__context__ is exc:
                # After a TypeError, usually the same failure: the first
                # one adds nothing. After _OutOfBand, its traceback holds
                # the buffer (an export of the caller's array).
                again.__context__ = None
            raise
    _add_note(exc, obj)
    raise exc


def _load(msg: bytes) -> Any:
    """The object of a message read as bytes: a plain pickle, or a framed
    one, whose buffers are then copied out of ``msg`` into memory the
    object owns."""
    try:
        return _pickle_loads(msg)
    except pickle.UnpicklingError:
        if msg[0] != KIND:
            raise
    return load_copied(memoryview(msg))


def _time_left(timeout: Timeout, since: float) -> Timeout:
    """What is left of a blocking call's ``timeout`` (already checked) that began at ``since``."""
    total = check_timeout(timeout) if timeout is not None else None
    return None if total is None else max(0.0, since + total - _monotonic())


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


def _rebuild(
    path: str,
    dumps: Dumps | None,
    loads: Loads | None,
    group: str | None = None,
    ephemeral: bool = False,
    start: str = "latest",
) -> Queue:
    """Unpickles a Queue: reopens its ring by path (in a child process, say),
    in the same durable group (an ephemeral one gets a new group of its own)."""
    try:
        return Queue.open(path, dumps=dumps, loads=loads, group=group, ephemeral=ephemeral, start=start)
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

    Objects are pickled with :func:`pickle.dumps` at the highest protocol
    (5 or later); buffers it can pass out of band (numpy arrays) travel next
    to the pickle, copied straight into the ring and out of it: such an
    object's message is its pickle, its buffers, a header of 16 bytes plus 8
    per buffer, and up to 7 bytes of padding before each buffer. A
    ``dumps``/``loads`` pair may be given instead (no out-of-band buffers
    then): ``dumps`` returns a bytes-like object or a str (encoded as UTF-8; so ``json.dumps`` and
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

    __slots__ = ("__weakref__", "_dumps", "_finalizer", "_loads", "_max", "_overwrite", "_owner_pid", "_ring")

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
    def open(
        cls,
        path: StrPath,
        *,
        dumps: Dumps | None = None,
        loads: Loads | None = None,
        group: str | None = None,
        ephemeral: bool = False,
        start: str = "latest",
    ) -> Queue:
        """Opens the queue whose ring is at ``path`` (created by ``Queue(..., path=path)``
        in any process, or by :class:`~ringbuffer.RingBuffer`). Closing it never removes the file.

        ``group``, ``ephemeral`` and ``start`` choose the consumer group its
        gets read in, as for :meth:`RingBuffer.open`: every group gets
        every object (fan-out), the handles of one group share them.
        ``group=None`` is the default group, shared by every plain reader.
        """
        _check_callables(dumps, loads)
        ring = RingBuffer.open(path, group=group, ephemeral=ephemeral, start=start)
        self = cls.__new__(cls)
        self._finalizer = None
        self._owner_pid = None
        self._setup(ring, dumps, loads)
        return self

    def _setup(self, ring: RingBuffer, dumps: Dumps | None, loads: Loads | None) -> None:
        self._ring = ring
        self._overwrite = ring.overwrite
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

    def _serialize(self, obj: Any, framed: list[Framed]) -> bytes | bytearray | memoryview | Framed:
        """Pickles (or ``dumps``) one object and checks its size; the queue
        is not touched. A pickle with out-of-band buffers comes back as a
        :class:`Framed` message, still to be written (nothing copied yet),
        and is also appended to ``framed`` (a batch then needs no pass over
        its types to find them)."""
        dumps = self._dumps
        if dumps is None:
            try:
                payload: Any = _pickle_dumps(obj, _PROTOCOL, buffer_callback=_plain_only)
            except Exception as e:
                payload, buffers = _pickle_out_of_band(obj, e)
            else:
                buffers = None
            if buffers:
                message = Framed(payload, buffers)
                if message.size > self._max:
                    message.release()
                    raise self._size_error(obj, message.size)
                framed.append(message)
                return message
            n = len(payload)
        else:
            try:
                payload = dumps(obj)
            except Exception as e:
                _add_note(e, obj)
                raise
            if type(payload) is bytes:
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

    def _checked(self, obj: Any, payload: bytes) -> bytes:
        """A plain pickle, if it fits in a message."""
        if len(payload) > self._max:
            raise self._size_error(obj, len(payload))
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

        Buffers the pickle hands out of band (numpy arrays, PickleBuffer,
        memoryview) are not pickled: each is copied once, straight into the
        ring space reserved for the message. If that copy is interrupted
        (Ctrl-C), the reservation is aborted and nothing is delivered.
        """
        if self._dumps is not None:
            self._put_serialized(self._serialize(obj, []), block, timeout)
            return
        # The common case, inline. The ring says when it is closed: a check
        # first (a property) would cost a small put 30 ns.
        try:
            payload = _pickle_dumps(obj, _PROTOCOL, buffer_callback=_plain_only)
        except Exception as e:
            payload, buffers = _pickle_out_of_band(obj, e)
        else:
            # A plain pickle: the bytes of pickle.dumps(obj, _PROTOCOL).
            if len(payload) > self._max:
                raise self._size_error(obj, len(payload))
            try:
                self._ring.put(payload, block, timeout)
            except BufferClosed:
                raise self._closed_error() from None
            return
        if buffers:
            framed = Framed(payload, buffers)
            if framed.size > self._max:
                framed.release()
                raise self._size_error(obj, framed.size)
            self._put_serialized(framed, block, timeout)
        else:  # pickled again after a TypeError, with no buffer after all
            self._put_serialized(self._checked(obj, payload), block, timeout)

    def _put_serialized(self, item: Any, block: bool, timeout: Timeout) -> None:
        """Writes one serialized object (:meth:`_serialize`) as put() does.
        A framed message goes into reserved ring space: each buffer is
        copied once, with no message-sized bytes in between; an exception
        in the copy aborts the reservation (the reserve() block does), so
        nothing is delivered. Waits and raises as ``RingBuffer.put``."""
        ring = self._ring
        try:
            if type(item) is not Framed:
                ring.put(item, block, timeout)
                return
            try:
                with ring.reserve(item.size, block, timeout) as view:
                    item.write_into(view)
            finally:
                item.release()
        except BufferClosed:
            raise self._closed_error() from None

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
        Objects with out-of-band buffers are written as :meth:`put` writes
        them, one reservation each, between batches of the others.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        items, framed = self._serialize_all(objs)
        if not framed:
            return ring.put_many(items, block, timeout)  # validates timeout also for no objects
        try:
            return self._put_mixed(items, block, timeout)
        finally:
            for message in framed:
                message.release()

    def _serialize_all(self, objs: Iterable[Any]) -> tuple[list[Any], list[Framed]]:
        """:meth:`_serialize` of every object, and the framed messages among them."""
        objs = list(objs)
        framed: list[Framed] = []
        if self._dumps is None:
            # The usual batch, with pickle.dumps called straight from the
            # comprehension: 40 ns an object less than through _serialize.
            # An object with out-of-band buffers (or one that fails, or is
            # too large) sends the batch the general way, pickled again.
            try:
                payloads = [_pickle_dumps(obj, _PROTOCOL, buffer_callback=_plain_only) for obj in objs]
            except Exception:
                pass
            else:
                if not payloads or max(map(len, payloads)) <= self._max:
                    return payloads, framed
        return [self._serialize(obj, framed) for obj in objs], framed

    def _put_mixed(self, items: list[Any], block: bool, timeout: Timeout) -> int:
        """put_many of serialized objects some of which are framed: runs of
        plain ones go in one C call each, framed ones into a reservation
        each, all within one ``timeout``."""
        ring = self._ring
        if block and timeout is not None:
            check_timeout(timeout)
        since = _monotonic()
        done = 0
        while done < len(items):
            left = _time_left(timeout, since) if block else None
            item = items[done]
            if type(item) is Framed:
                try:
                    with ring.reserve(item.size, block, left) as view:
                        item.write_into(view)
                except BufferFull:
                    return done
                done += 1
                continue
            end = done + 1
            while end < len(items) and type(items[end]) is not Framed:
                end += 1
            run = items[done:end]
            n = ring.put_many(run, block, left)
            done += n
            if n < len(run):
                return done
        return done

    # -- getting -----------------------------------------------------------

    def get(self, block: bool = True, timeout: Timeout = None) -> Any:
        """Removes and returns the next object, waiting for one if needed.

        Raises :class:`queue.Empty` (:class:`~ringbuffer.BufferEmpty`) when
        ``block`` is false and there is none, or when ``timeout`` seconds
        pass; :class:`ValueError` (:class:`~ringbuffer.BufferClosed`) if the
        queue is closed. If unpickling (``loads``) fails, the exception
        propagates and that message is consumed, as with
        :class:`multiprocessing.Queue`.

        The out-of-band buffers of an object put with them (numpy arrays)
        are copied once out of the ring, each into a bytearray the rebuilt
        object owns: arrays come back writeable (unless they were read-only
        when put) and share no memory with the ring. If that copy fails
        (MemoryError, Ctrl-C), the message stays in the queue.
        """
        ring = self._ring
        since = _monotonic() if timeout is not None and block else 0.0
        # The ring says when it is closed: a check first (a property) would
        # cost a small get 30 ns.
        try:
            msg = ring.get_within(_COPY_LIMIT, block, timeout)
            if msg is None:  # a large message is at the head
                return self._get_large(block, timeout, since)
        except BufferClosed:
            raise self._closed_error() from None
        loads = self._loads
        if loads is not None:
            return loads(msg)
        # _load(msg), inline (a call costs about 50 ns on every get). A
        # framed message fails at once, at its first byte (no pickle
        # opcode): trying costs nothing, checking the byte first 20 ns.
        try:
            return _pickle_loads(msg)
        except pickle.UnpicklingError:
            if msg[0] != KIND:
                raise
        return load_copied(memoryview(msg))

    def _get_large(self, block: bool, timeout: Timeout, since: float) -> Any:
        """get() of a message larger than _COPY_LIMIT: copied out of a peek
        in one pass (a framed one's buffers straight into the bytearrays the
        object will own), then unpickled outside the read turn."""
        ring = self._ring
        loads = self._loads
        if self._overwrite:
            # Zero-copy reads are refused on an overwrite ring (a writer may
            # reclaim the record meanwhile): a copying read instead.
            msg = ring.get(block, _time_left(timeout, since) if block else None)
            return _load(msg) if loads is None else loads(msg)
        malformed: pickle.UnpicklingError | None = None
        while True:
            try:
                # consume_on_error=False: a copy that fails leaves the message.
                with ring.peek(False, None, False) as view:
                    if loads is not None or view[0] != KIND:
                        data, buffers = bytes(view), None
                    else:
                        try:
                            data, buffers = copy_out(view)
                        except pickle.UnpicklingError as e:
                            # Malformed (nothing was copied): consumed, as
                            # any message that fails to unpickle.
                            malformed = e
                break
            except BufferEmpty:
                if not block:
                    raise
            # Another consumer took the message first (or kept the read
            # turn): wait for the next one in the time left.
            msg = ring.get_within(_COPY_LIMIT, True, _time_left(timeout, since))
            if msg is not None:
                return _load(msg) if loads is None else loads(msg)
        if malformed is not None:
            raise malformed
        if loads is not None:
            return loads(data)
        if buffers is None:
            return _pickle_loads(data)
        return _pickle_loads(data, buffers=buffers)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: Timeout = None) -> list[Any]:
        """Waits for the first object (as :meth:`get`), then takes up to
        ``max_items`` of what is there, with one C call; returns them in order.

        Raises :class:`queue.Empty` when nothing came (in time, or at once
        with ``block`` false). If unpickling one fails, the exception
        propagates and all the messages this call took are consumed. The
        batch is read as bytes: out-of-band buffers cost a copy more here
        than in :meth:`get`.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        return self._load_all(ring.get_many(max_items, block, timeout))

    def _load_all(self, msgs: list[bytes]) -> list[Any]:
        loads = self._loads
        if loads is not None:
            return [loads(m) for m in msgs]
        # As get(): trying each as a plain pickle first costs nothing.
        objs: list[Any] = []
        append = objs.append
        for msg in msgs:
            try:
                append(_pickle_loads(msg))
                continue
            except pickle.UnpicklingError:
                if msg[0] != KIND:
                    raise
            append(load_copied(memoryview(msg)))
        return objs

    def peek(self, block: bool = True, timeout: Timeout = None, consume_on_error: bool = True) -> ObjectPeek:
        """Zero-copy get, for the brave: ``with q.peek() as obj:`` gives the
        next object with its out-of-band buffers as read-only views of the
        message inside the ring (numpy arrays come back read-only and copy
        nothing); the message is consumed when the block ends, also if it
        raises, unless ``consume_on_error`` is false: then an exception
        leaves it at the head for the next get. An exception while
        unpickling counts as one in the block. Waits as :meth:`get` (it
        blocks by default, as the Queue's other getters; ``RingBuffer.peek``
        does not).

        The views are valid inside the block only. While it is open, other
        consumers' blocking gets wait and their non-blocking ones find the
        queue empty: keep it short, and do not get from this queue inside
        it. When the block ends, the views are released: one handed out as
        it is (the object a PickleBuffer or a bytes memoryview comes back
        as) raises ValueError if used afterwards. Objects made from a view
        (numpy arrays, cast memoryviews, slices) are not tracked and cannot
        be revoked: one kept past the block shows whatever the ring holds
        later, and crashes the process once the queue is closed and
        collected. Copy what you keep (``arr.copy()``). Unlike
        ``RingBuffer.peek``, which raises BufferError when its view is still
        exported after the block, nothing is raised: the ``as`` variable
        itself still holds the object's arrays when any block ends. Plain
        messages (no out-of-band buffers) are unpickled straight from the
        ring and own their memory; a custom ``loads`` receives a bytes copy.
        Raises :class:`queue.Empty` as :meth:`get`.
        """
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        return ObjectPeek(ring.peek(block, timeout, consume_on_error), self._loads)

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
        on timeout. Cancelling it never loses an object. An object that is
        there at once is taken as :meth:`get` takes it; one it had to wait
        for is read as bytes (out-of-band buffers then cost a copy more)."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        loads = self._loads
        if loads is not None:
            return loads(await ring.aget(timeout))
        if timeout is not None:
            check_timeout(timeout)
        try:
            return self.get(False)
        except BufferEmpty:
            pass
        return _load(await ring.aget(timeout))

    async def aget_many(self, max_items: int, timeout: Timeout = None) -> list[Any]:
        """Coroutine: waits for the first object, then takes up to
        ``max_items`` of what is there (:meth:`get_many`)."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        return self._load_all(await ring.aget_many(max_items, timeout))

    async def aput(self, obj: Any, timeout: Timeout = None) -> None:
        """Coroutine: puts an object, waiting for room without blocking the
        event loop; :class:`queue.Full` on timeout. The object is serialized
        first, in the caller (as :meth:`put`). Out-of-band buffers are
        copied straight into the ring when there is room at once; when it
        must wait, the message is assembled first (a copy more)."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        item = self._serialize(obj, [])
        if type(item) is not Framed:
            await ring.aput(item, timeout)
            return
        try:
            if timeout is not None:
                check_timeout(timeout)
            try:
                with ring.reserve(item.size) as view:
                    item.write_into(view)
                return
            except BufferFull:
                pass
            await ring.aput(item.to_bytes(), timeout)
        finally:
            item.release()

    async def aput_many(self, objs: Iterable[Any], timeout: Timeout = None) -> int:
        """Coroutine: puts objects in order, waiting for room as needed;
        returns how many were put, fewer only when ``timeout`` passed.
        Objects with out-of-band buffers are assembled into whole messages
        first (a copy more than :meth:`put_many`)."""
        ring = self._ring
        if ring.closed:
            raise self._closed_error()
        items, framed = self._serialize_all(objs)
        if framed:
            for i, item in enumerate(items):
                if type(item) is Framed:
                    items[i] = item.to_bytes()
                    item.release()
        return await ring.aput_many(items, timeout)

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
        size, rounded up to 8), out of :attr:`capacity`: what some consumer
        group has not read yet, which writers cannot use. A snapshot: other
        processes may change it at once."""
        info = self._info()
        return int(info["bytes_used"])

    def empty(self) -> bool:
        """True if nothing waits for this queue's consumer group now.
        Approximate, as with :class:`multiprocessing.Queue`: other processes
        may change it at once, and a message still being written counts as
        present (a :meth:`get_nowait` may then still raise :class:`queue.Empty`)."""
        head, tail = self._positions()
        return head == tail

    def full(self) -> bool:
        """True if not even the smallest message (16 bytes in the ring) would
        fit now; a larger object may not fit even when this is False
        (never True on an overwrite ring, whose writers reclaim old
        messages). Approximate, as :meth:`empty`."""
        if self._overwrite:
            return False
        return int(self._info()["writable"]) < _MIN_RECORD

    def _info(self) -> dict[str, Any]:
        if self._ring.closed:
            raise self._closed_error()
        return self._ring.info(count=False)

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

    def __reduce__(self) -> tuple[Callable[..., Queue], tuple[Any, ...]]:
        if self._ring.closed:
            raise self._closed_error()
        fin = self._finalizer
        if fin is not None and os.getpid() == self._owner_pid:
            # Another process will open the file by path, maybe after this
            # object is closed or collected: remove it at exit instead.
            fin.detach()
            self._finalizer = None
            _remove_at_exit.add((self._ring.path, self._owner_pid))
        ring = self._ring
        if ring.group is None and not ring.ephemeral:
            return _rebuild, (ring.path, self._dumps, self._loads)
        return _rebuild, (ring.path, self._dumps, self._loads, ring.group, ring.ephemeral, "latest")

    def __repr__(self) -> str:
        state = "closed" if self._ring.closed else f"capacity={self._ring.capacity}"
        return f"<ringbuffer.Queue {self._ring.path!r} {state}>"


class ObjectPeek:
    """The block of :meth:`Queue.peek`: enters the ring's ``peek()`` block
    and unpickles the message there, its out-of-band buffers as read-only
    slices of the ring view; at the end, releases the slices it can and
    finishes the ring's block (which consumes the message, or gives it
    back, by the ``consume_on_error`` rule)."""

    __slots__ = ("_loads", "_peek", "_views")

    def __init__(self, peek: Peek, loads: Loads | None) -> None:
        self._peek = peek
        self._loads = loads
        self._views: list[memoryview] = []

    def __enter__(self) -> Any:
        view = self._peek.__enter__()
        try:
            if self._loads is not None:
                return self._loads(bytes(view))
            if view[0] != KIND:
                return _pickle_loads(view)
            data, self._views = views(view)
            return _pickle_loads(data, buffers=self._views)
        except BaseException as e:
            # Unpickling failed (or Ctrl-C): as an exception in the block.
            self._release_views()
            self._peek.__exit__(type(e), e, e.__traceback__)
            raise

    def __exit__(self, typ: Any, value: Any, tb: Any) -> None:
        self._release_views()
        self._peek.__exit__(typ, value, tb)

    def _release_views(self) -> None:
        """Releases the buffer views; one still exported (a numpy array
        made from it is alive) cannot be, and is left as it is (see
        :meth:`Queue.peek`)."""
        held, self._views = self._views, []
        for view in held:
            try:
                view.release()
            except BufferError:
                pass
