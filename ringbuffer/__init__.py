"""ringbuffer: a memory-mapped, file-backed ring buffer of variable-length
messages for inter-process and inter-thread communication on one host.

>>> from ringbuffer import RingBuffer
>>> with RingBuffer("/dev/shm/demo.ring", 1 << 20, remove=True) as rb:  # doctest: +SKIP
...     rb.write(b"hello")
...     rb.read()
b'hello'

The algorithm lives in the C library ``libringbuf.so`` shipped inside this
package; C programs can build against it with :func:`get_include` and
:func:`get_library_dir` (or ``pkg-config`` on :func:`get_pkgconfig_dir`).
"""

from __future__ import annotations

import os
from typing import Any

from ringbuffer.exceptions import (
    BufferClosed,
    BufferEmpty,
    BufferFull,
    CorruptBuffer,
    GroupNotFound,
    InvalidArgument,
    InvalidSize,
    MessagesLost,
    NotAnArray,
    RingBufferError,
    Status,
    TooManyGroups,
    UnsupportedVersion,
)
from ringbuffer.objqueue import Queue
from ringbuffer.ring import VERSION as _HEADER_VERSION
from ringbuffer.ring import RingBuffer, c_version, format_version

# The version csrc/ringbuf.h states (the distribution's too: setup.py
# reads the same header), from the compiled extension: no metadata lookup.
__version__ = _HEADER_VERSION

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
    "Queue",
    "RingBuffer",
    "RingBufferError",
    "Status",
    "TooManyGroups",
    "UnsupportedVersion",
    "__version__",
    "c_version",
    "format_version",
    "get_include",
    "get_library_dir",
    "get_pkgconfig_dir",
]

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_include() -> str:
    """Folder holding ``ringbuf.h``, for ``cc -I``."""
    return os.path.join(_HERE, "include")


def get_library_dir() -> str:
    """Folder holding ``libringbuf.so``, for ``cc -L`` and ``-Wl,-rpath``."""
    return _HERE


def get_pkgconfig_dir() -> str:
    """Folder holding ``ringbuf.pc``, for ``PKG_CONFIG_PATH``."""
    return os.path.join(_HERE, "pkgconfig")


def __getattr__(name: str) -> Any:
    # RingBufferTimeout: deprecated, never raised (see ringbuffer.exceptions).
    if name == "RingBufferTimeout":
        from ringbuffer.exceptions import deprecated_timeout_class

        return deprecated_timeout_class(2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
