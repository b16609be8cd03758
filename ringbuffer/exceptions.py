"""Exceptions raised by :mod:`ringbuffer`, and the one place that turns a
C status code into one.

Each exception also inherits the builtin it resembles, so code written for
:class:`queue.Queue` or plain Python keeps working: ``BufferFull`` is a
:class:`queue.Full`, ``InvalidSize`` a :class:`ValueError`, and so on. OS
failures are plain :class:`OSError` subclasses (``FileNotFoundError``, ...).

Timeouts follow :class:`queue.Queue`: a blocking call that runs out of time
raises :class:`BufferFull` (writing) or :class:`BufferEmpty` (reading), never
a timeout error of its own. ``RingBufferTimeout`` is kept importable for code
written against 0.1, is deprecated, and is never raised.
"""

from __future__ import annotations

import enum
import os
import queue
import warnings
from typing import Any, cast

from ringbuffer._ringbuf import ffi, lib

__all__ = [
    "BufferClosed",
    "BufferEmpty",
    "BufferFull",
    "CorruptBuffer",
    "GroupNotFound",
    "InvalidArgument",
    "InvalidSize",
    "MessagesLost",
    "NotAnArray",
    "RingBufferError",
    "Status",
    "TooManyGroups",
    "UnsupportedVersion",
]
# error(), strerror() and messages_lost() are the package's own helpers, not exported.


class Status(enum.IntEnum):
    """The C library's status codes (``enum rb_status`` in ``ringbuf.h``),
    by name: ``Status.EFULL == -1``. :attr:`RingBufferError.code` is one."""

    OK = lib.RB_OK
    EFULL = lib.RB_EFULL
    EEMPTY = lib.RB_EEMPTY
    ESIZE = lib.RB_ESIZE
    ECLOSED = lib.RB_ECLOSED
    ETIMEDOUT = lib.RB_ETIMEDOUT
    ECORRUPT = lib.RB_ECORRUPT
    ETRUNC = lib.RB_ETRUNC
    EINVAL = lib.RB_EINVAL
    ESYS = lib.RB_ESYS
    EINTR = lib.RB_EINTR
    EVERSION = lib.RB_EVERSION
    ELOST = lib.RB_ELOST
    ENOGROUP = lib.RB_ENOGROUP
    EGROUPS = lib.RB_EGROUPS


class RingBufferError(Exception):
    """Base class of the library's own errors; ``code`` is the C status code
    (a :class:`Status`), and the text starts with the C library's message for
    it (``rb_strerror``)."""

    code: int

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class BufferFull(RingBufferError, queue.Full):
    """Not enough free space for the message (``RB_EFULL``), now or, for a
    blocking call, before its timeout."""


class BufferEmpty(RingBufferError, queue.Empty):
    """No message to read (``RB_EEMPTY``), now or, for a blocking call,
    before its timeout."""


class InvalidSize(RingBufferError, ValueError):
    """A message is empty, larger than ``max_message_size``, or a read buffer
    is too small (``RB_ESIZE``, ``RB_ETRUNC``; then ``needed`` is the size the
    message needs)."""

    needed: int | None = None


class BufferClosed(RingBufferError, ValueError):
    """The ring buffer was closed (``RB_ECLOSED``), like I/O on a closed file."""


class CorruptBuffer(RingBufferError):
    """The file is not a valid ring: damaged, forged or not a ring (``RB_ECORRUPT``)."""


class InvalidArgument(RingBufferError, ValueError):
    """A bad argument, such as a ring size of 0 (``RB_EINVAL``)."""


class UnsupportedVersion(CorruptBuffer):
    """The file is a ring of another format version (``RB_EVERSION``); the
    message names the version this library reads."""


class MessagesLost(RingBufferError):
    """An overwrite ring's writers reclaimed messages this handle's consumer
    group had not read yet (``RB_ELOST``): ``count`` is how many the group
    missed. The read that raises it delivered nothing; the next read goes on
    with the oldest message still in the ring (as tokio's broadcast
    ``Lagged(n)``). ``messages``: what a call that reads in several steps
    (``drain()``) had already consumed before it met the gap, in order;
    empty for the other calls."""

    count: int = 0

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.messages: list[bytes] = []


class GroupNotFound(RingBufferError, LookupError):
    """The handle's consumer group does not exist (``RB_ENOGROUP``): it was
    removed, or it is the default group of a ring created with
    ``default_group=False``; or ``remove_group()`` found no group of that
    name. A blocking read raises it at once."""


class TooManyGroups(RingBufferError):
    """The ring has no room for another consumer group (``RB_EGROUPS``:
    64 groups at most, durable and ephemeral together)."""


class NotAnArray(ValueError):
    """``RingBuffer.get_array()`` met a message that is not an array message
    (a ``.npy`` file of a dtype without Python objects, its data exactly as
    long as the header says: docs/format.md, "Array messages"). Not a
    :class:`RingBufferError`: the ring is sound, the message is not what the
    reader expected (as :class:`pickle.UnpicklingError` for
    ``Queue.get()``). The message was consumed."""


class _RingBufferTimeout(RingBufferError, TimeoutError):
    """Deprecated and never raised: a timeout raises :class:`BufferFull` or
    :class:`BufferEmpty`, as :class:`queue.Queue` does."""


_RingBufferTimeout.__name__ = _RingBufferTimeout.__qualname__ = "RingBufferTimeout"

# Status -> exception class. RB_ETIMEDOUT and RB_EINTR never reach this
# table from the package's calls (a timeout is BufferFull or BufferEmpty, as
# the caller knows which; an interrupted wait is retried after the signal
# handler ran): they get the base class. RB_ESYS becomes an OSError.
_CLASSES: dict[int, type[RingBufferError]] = {
    Status.EFULL: BufferFull,
    Status.EEMPTY: BufferEmpty,
    Status.ESIZE: InvalidSize,
    Status.ETRUNC: InvalidSize,
    Status.ECLOSED: BufferClosed,
    Status.ECORRUPT: CorruptBuffer,
    Status.EINVAL: InvalidArgument,
    Status.EVERSION: UnsupportedVersion,
    Status.ELOST: MessagesLost,
    Status.ENOGROUP: GroupNotFound,
    Status.EGROUPS: TooManyGroups,
}

# The C messages of the known codes, read once.
_MESSAGES: dict[int, str] = {s: ffi.string(lib.rb_strerror(s)).decode() for s in Status}


def strerror(code: int) -> str:
    """The C library's message for a status code (``rb_strerror``); never fails."""
    message = _MESSAGES.get(code)
    if message is None:
        message = ffi.string(lib.rb_strerror(code)).decode()
    return message


def error(code: int, path: bytes | str | None = None, detail: str | None = None) -> Exception:
    """The exception for a C status code (to be raised by the caller).

    ``RB_ESYS`` gives the :class:`OSError` subclass of the C call's ``errno``
    (read here: call this right after the failing C call), with ``path`` as
    its filename. Any other code gives the :class:`RingBufferError` subclass
    of the table above, whose text is the C message followed by ``detail``,
    or by ``path`` for the codes that judge a file (corrupt, other version).
    """
    if code == Status.ESYS:
        err = ffi.errno
        filename = os.fsdecode(path) if path is not None else None
        return OSError(err, os.strerror(err), filename)
    message = strerror(code)
    if detail:
        message = f"{message}: {detail}"
    elif path is not None and code in (Status.ECORRUPT, Status.EVERSION):
        message = f"{message}: {os.fsdecode(path)!r}"
        if code == Status.EVERSION:
            message += _file_version(path)
    try:
        status: int = Status(code)
    except ValueError:  # a code this binding does not know (a newer library)
        status = code
    return _CLASSES.get(code, RingBufferError)(status, message)


def _file_version(path: bytes | str) -> str:
    """The words naming the format version of the ring file at ``path``
    (its word at offset 8, docs/format.md), or "" if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(8)
            raw = f.read(4)
    except OSError:
        return ""
    if len(raw) != 4:
        return ""
    return f", a file of format version {int.from_bytes(raw, 'little')} (recreate it)"


def messages_lost(count: int) -> MessagesLost:
    """The :class:`MessagesLost` of a read that found its group overrun,
    ``count`` being what ``rb_take_lost`` returned."""
    noun = "message" if count == 1 else "messages"
    exc = cast(MessagesLost, error(Status.ELOST, detail=f"{count} {noun} lost"))
    exc.count = count
    return exc


def deprecated_timeout_class(stacklevel: int) -> type[RingBufferError]:
    """``RingBufferTimeout``, with its DeprecationWarning (for the module
    ``__getattr__`` here and in the package)."""
    warnings.warn(
        "ringbuffer.RingBufferTimeout is deprecated and never raised: a timeout raises "
        "BufferFull (queue.Full) or BufferEmpty (queue.Empty), as queue.Queue does",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return _RingBufferTimeout


def __getattr__(name: str) -> Any:
    if name == "RingBufferTimeout":
        return deprecated_timeout_class(2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
