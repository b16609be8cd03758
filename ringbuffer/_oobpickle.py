"""Pickles with out-of-band buffers (PEP 574) for :class:`~ringbuffer.Queue`:
the framed message format (docs/format.md, "Queue messages"), how such an
object is written straight into a ring reservation, and how it is rebuilt
from a message, with its buffers either copied once into memory it owns
(``get``) or viewed in the ring (``peek``). No ring call lives here:
``objqueue`` makes them.

A framed message is::

    kind 0xB5 | version 1 | align_log2 3 | 0 | count (u32) | pickle length (u64)
    count buffer lengths (u64 each)
    the pickle (protocol 5, with one NEXT_BUFFER per out-of-band buffer)
    each buffer, starting at the next multiple of 8 from the payload's start

all little-endian. A plain pickle (protocol 2 and later) starts with its
PROTO opcode, 0x80, and 0xB5 is no pickle opcode: the first byte tells the
two kinds apart.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import struct
from collections import ChainMap
from pickle import PickleBuffer
from typing import Any, ClassVar

__all__ = [
    "KIND",
    "Framed",
    "copy_out",
    "dumps_with_memoryviews",
    "load_copied",
    "views",
]

KIND = 0xB5
"""The first byte of a framed message."""
VERSION = 1
ALIGN_LOG2 = 3
"""Buffers start at multiples of 2**ALIGN_LOG2 (8) from the payload's start;
a ring's payloads start 8-aligned in memory, so the buffers do too."""

_ALIGN = 1 << ALIGN_LOG2
# kind, version, align_log2, reserved (0), buffer count, pickle length
_FIXED = struct.Struct("<BBBBIQ")
_LENGTH = 8  # bytes per buffer length after the fixed part


class Framed:
    """One object pickled with out-of-band buffers: its pickle and the raw
    bytes of its buffers, laid out as a framed message of :attr:`size`
    bytes. Nothing is copied until :meth:`write_into`.

    The pickler hands only contiguous buffers (C or Fortran order) to the
    buffer callback: it refuses to pickle a PickleBuffer over non-contiguous
    memory, and numpy pickles a non-contiguous array in-band (as a C-order
    copy) instead of through a PickleBuffer. So ``raw()``, which fails only
    for non-contiguous buffers, always gives the bytes here.
    """

    __slots__ = ("_data", "_offsets", "_raws", "size")

    def __init__(self, data: bytes, buffers: list[PickleBuffer]) -> None:
        self._data = data
        self._raws = raws = [b.raw() for b in buffers]
        end = _FIXED.size + _LENGTH * len(raws) + len(data)
        self._offsets = offsets = []
        for raw in raws:
            start = (end + _ALIGN - 1) & -_ALIGN
            offsets.append(start)
            end = start + raw.nbytes
        self.size: int = end
        """The message's length in bytes."""

    def write_into(self, view: memoryview) -> None:
        """Writes the message into ``view``, :attr:`size` writable bytes
        (a ring reservation): one copy of each buffer. The padding before a
        buffer is left as it is (a ring's free space is zero)."""
        data, raws = self._data, self._raws
        count = len(raws)
        _FIXED.pack_into(view, 0, KIND, VERSION, ALIGN_LOG2, 0, count, len(data))
        struct.pack_into(f"<{count}Q", view, _FIXED.size, *[raw.nbytes for raw in raws])
        start = _FIXED.size + _LENGTH * count
        view[start : start + len(data)] = data
        for raw, offset in zip(raws, self._offsets):
            view[offset : offset + raw.nbytes] = raw

    def to_bytes(self) -> bytearray:
        """The whole message in a new bytearray (one more copy of every
        buffer), for the writes that cannot reserve ring space."""
        out = bytearray(self.size)
        with memoryview(out) as view:
            self.write_into(view)
        return out

    def release(self) -> None:
        """Lets go of the raw views of the pickled object's buffers (their
        exports end now, not when the garbage collector gets to an
        exception's frames). The PickleBuffers themselves may be the
        caller's objects: they are left alone."""
        for raw in self._raws:
            raw.release()


def _malformed(detail: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"ringbuffer.Queue: malformed framed message: {detail}")


def _layout(view: memoryview) -> tuple[int, int, list[tuple[int, int]]]:
    """Where the pickle (start, end) and each buffer (start, end) lie in a
    framed message, checked against the message's length."""
    n = len(view)
    if n < _FIXED.size:
        raise _malformed(f"{n} bytes, shorter than its {_FIXED.size}-byte header")
    _, version, align_log2, _, count, pickle_len = _FIXED.unpack_from(view)
    if version != VERSION:
        raise _malformed(f"version {version} (this ringbuffer reads version {VERSION})")
    if align_log2 > 12:
        raise _malformed(f"alignment 2**{align_log2}")
    start = _FIXED.size + _LENGTH * count
    if start > n:
        raise _malformed(f"{count} buffers announced in {n} bytes")
    align = 1 << align_log2
    end = start + pickle_len
    spans = []
    for length in struct.unpack_from(f"<{count}Q", view, _FIXED.size):
        first = (end + align - 1) & -align
        end = first + length
        spans.append((first, end))
    if end > n:
        raise _malformed(f"its parts need {end} bytes, the message has {n}")
    return start, start + pickle_len, spans


def copy_out(view: memoryview) -> tuple[bytes, list[bytearray]]:
    """The pickle and the buffers of a framed message, each buffer copied
    once into a bytearray: the memory the rebuilt object will own (writable,
    unless the pickle marks the buffer read-only)."""
    start, end, spans = _layout(view)
    return bytes(view[start:end]), [bytearray(view[a:b]) for a, b in spans]


def load_copied(view: memoryview) -> Any:
    """The object of a framed message, its buffers copied (:func:`copy_out`)."""
    data, buffers = copy_out(view)
    return pickle.loads(data, buffers=buffers)


def views(view: memoryview) -> tuple[memoryview, list[memoryview]]:
    """The pickle and the buffers of a framed message as slices of ``view``:
    no copy; read-only if ``view`` is."""
    start, end, spans = _layout(view)
    return view[start:end], [view[a:b] for a, b in spans]


# -- memoryview objects -----------------------------------------------------
# pickle cannot pickle a memoryview. The Queue can: as a buffer out of band,
# rebuilt over the copy (or the ring view) with the same format, shape and
# read-only flag. Used only when pickle.dumps failed (a TypeError), so the
# common path keeps pickle.dumps's speed and bytes.


def _rebuild_memoryview(buf: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    # The buffer itself when it will do: a peek() view is then released at
    # the end of the block (one made from it would not be).
    view = buf if type(buf) is memoryview else memoryview(buf)
    if view.format != fmt or view.shape != shape:
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        # memoryview.cast takes no shape with a zero in it: a 1-d one is implied.
        view = view.cast(fmt) if len(shape) == 1 else view.cast(fmt, shape)
    return view.toreadonly() if readonly and not view.readonly else view


def _reduce_memoryview(view: memoryview) -> tuple[Any, tuple[Any, ...]]:
    fmt, shape = view.format, view.shape
    try:
        memoryview(bytes(view.itemsize)).cast(fmt)
    except (TypeError, ValueError):
        raise TypeError(
            f"cannot pickle a memoryview of format {fmt!r} (only native single-item formats "
            "can be rebuilt: pass a numpy array or a bytes-like object instead)"
        ) from None
    if 0 in shape and len(shape) > 1:
        raise TypeError(
            f"cannot pickle an empty memoryview of shape {shape} (memoryview.cast cannot rebuild it)"
        )
    # C-order bytes: a non-contiguous (or Fortran-order) view is copied.
    data = view if view.c_contiguous else bytearray(view)
    return _rebuild_memoryview, (PickleBuffer(data), fmt, shape, view.readonly)


class _MemoryviewPickler(pickle.Pickler):
    # Live: reducers registered with copyreg later still count.
    dispatch_table: ClassVar[ChainMap[type, Any]] = ChainMap(
        {memoryview: _reduce_memoryview}, copyreg.dispatch_table
    )


def dumps_with_memoryviews(obj: Any, protocol: int) -> tuple[bytes, list[PickleBuffer]]:
    """``pickle.dumps`` with every buffer out of band, which also pickles
    memoryview objects; returns the pickle and the buffers."""
    buffers: list[PickleBuffer] = []
    out = io.BytesIO()
    _MemoryviewPickler(out, protocol, buffer_callback=buffers.append).dump(obj)
    return out.getvalue(), buffers
