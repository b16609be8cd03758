"""Exceptions raised by :mod:`ringbuffer`.

Each one also inherits the builtin it resembles, so code written for
:class:`queue.Queue` or plain Python keeps working: ``BufferFull`` is a
:class:`queue.Full`, ``InvalidSize`` a :class:`ValueError`, and so on. OS
failures are plain :class:`OSError` subclasses (``FileNotFoundError``, ...).
"""

from __future__ import annotations

import queue

__all__ = [
    "BufferClosed",
    "BufferEmpty",
    "BufferFull",
    "CorruptBuffer",
    "InvalidArgument",
    "InvalidSize",
    "RingBufferError",
    "RingBufferTimeout",
    "UnsupportedVersion",
]


class RingBufferError(Exception):
    """Base class of the library's own errors; ``code`` is the C status code."""

    code: int

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class BufferFull(RingBufferError, queue.Full):
    """Not enough free space for the message (``RB_EFULL``)."""


class BufferEmpty(RingBufferError, queue.Empty):
    """No message to read (``RB_EEMPTY``)."""


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


class RingBufferTimeout(RingBufferError, TimeoutError):
    """A wait ran out of time (``RB_ETIMEDOUT``)."""


class UnsupportedVersion(CorruptBuffer):
    """The file is a ring of another format version (``RB_EVERSION``); the
    message names the version this library reads."""
