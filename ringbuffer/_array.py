"""Array messages: what ``RingBuffer.put_array()`` writes and
``RingBuffer.get_array()`` reads.

An array message is exactly a ``.npy`` file (NumPy's NPY format: the bytes
``numpy.save`` writes, but for a structured dtype's padding bytes, zero
here), so ``numpy.load(io.BytesIO(message))`` and C readers of ``.npy``
decode it; docs/format.md ("Array messages") gives the bytes.
The header is built and checked here, through :mod:`numpy.lib.format`'s
public helpers for the dtype (``header_data_from_array_1_0``,
``descr_to_dtype``); the data is copied once each way, straight between the
array and the ring (``put_with()``/``get_with()``, the RingBuffer's public
API only).

numpy is optional for the package: it is imported by these functions, never
when ``ringbuffer`` is.
"""

from __future__ import annotations

import ast
import math
import struct
from typing import Any

from ringbuffer._wait import Timeout
from ringbuffer.exceptions import NotAnArray, Status, error

__all__ = ["get_array", "put_array"]

MAGIC = b"\x93NUMPY"
ALIGN = 64  # the data starts at a multiple of this from the message's start
# Spaces numpy.save leaves after the header's dict, so that a file's first
# (C order) or last (Fortran order) dimension can grow in place
# (numpy.lib.format.GROWTH_AXIS_MAX_DIGITS): kept for byte-identical files.
_GROWTH_DIGITS = 21
# (major, minor): (struct format of the header length, the header's encoding)
_VERSIONS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
# The same for a reader, by the version's two bytes: (where the header
# starts, its encoding); the length field is little-endian.
_LAYOUTS = {bytes(v): (8 + struct.calcsize(f), e) for v, (f, e) in _VERSIONS.items()}
_KEYS = {"descr", "fortran_order", "shape"}
_SSIZE_MAX = 2**63 - 1
_MAX_DIMS = 64  # numpy 2's limit (numpy 1: 32, whose numpy.empty then refuses more)

# Header bytes by (dtype, shape, fortran order), for dtypes without fields
# (whose equality is their descr's): building a header costs about as much
# as the rest of a small put_array, parsing one several times a small
# get_array (bench/arrays.py measures both).
_headers: dict[tuple[Any, tuple[int, ...], bool], bytes] = {}
_CACHE_MAX = 1024  # entries of each cache (emptied when full)
# Parsed headers (dtype, shape, order, element count) by their bytes
# (prefix included), for headers of up to this many bytes.
_parsed: dict[bytes, tuple[Any, tuple[int, ...], str, int]] = {}
_CACHE_HEADER_MAX = 4096


def _numpy(what: str) -> Any:
    """numpy, with numpy.lib.format loaded; a clear ImportError without it."""
    try:
        import numpy.lib.format
    except ImportError as e:
        raise ImportError(f"{what} needs numpy: pip install numpy") from e
    return numpy


def _wrap(text: str) -> bytes:
    """Magic, version, header length, ``text``, padding: the version is the
    oldest whose length field and encoding hold the text, as numpy.save
    chooses it; spaces and a newline end the header at a multiple of ALIGN."""
    for (major, minor), (fmt, encoding) in _VERSIONS.items():
        try:
            raw = text.encode(encoding)
        except UnicodeEncodeError:
            continue
        size = struct.calcsize(fmt)
        hlen = len(raw) + 1  # the final newline
        pad = ALIGN - (len(MAGIC) + 2 + size + hlen) % ALIGN  # 1 to ALIGN, as numpy
        if hlen + pad >= 1 << (8 * size):
            continue
        prefix = MAGIC + bytes((major, minor)) + struct.pack(fmt, hlen + pad)
        return prefix + raw + b" " * pad + b"\n"
    raise AssertionError("unreachable: version 3.0 holds any header")


def header(numpy: Any, a: Any, fortran: bool) -> bytes:
    """The ``.npy`` header of array ``a`` written in Fortran order or not
    (remembered for dtypes without fields)."""
    dtype = a.dtype
    if dtype.names is not None or dtype.metadata is not None:
        return build_header(numpy, a, fortran)
    key = (dtype, a.shape, fortran)
    found = _headers.get(key)
    if found is None:
        found = build_header(numpy, a, fortran)
        if len(_headers) >= _CACHE_MAX:
            _headers.clear()
        _headers[key] = found
    return found


def build_header(numpy: Any, a: Any, fortran: bool) -> bytes:
    """:func:`header`, built: shape, fortran_order and descr as numpy.save
    writes them (numpy warns that a dtype's metadata is not saved)."""
    d = numpy.lib.format.header_data_from_array_1_0(a)
    d["fortran_order"] = fortran
    text = "{" + "".join(f"{k!r}: {v!r}, " for k, v in sorted(d.items())) + "}"
    shape = d["shape"]
    if shape:
        text += " " * (_GROWTH_DIGITS - len(repr(shape[-1 if fortran else 0])))
    return _wrap(text)


def put_array(rb: Any, a: Any, block: bool, timeout: Timeout) -> None:
    """``RingBuffer.put_array``: one message, the ``.npy`` file of ``a``."""
    numpy = _numpy("put_array")
    a = numpy.asarray(a)
    if a.dtype.hasobject:
        raise TypeError(
            f"put_array cannot send an array of dtype {a.dtype} (Python objects are not raw data); "
            "send such objects with ringbuffer.Queue"
        )
    # The order the data goes in: C if the array is C-contiguous (a 1-d
    # one is both), Fortran if only Fortran-contiguous, C for any other
    # layout (copied in C order), as numpy.save.
    fortran = not a.flags.c_contiguous and a.flags.f_contiguous
    head = header(numpy, a, fortran)
    start = len(head)
    nbytes = a.nbytes
    total = start + nbytes
    limit = rb.max_message_size
    if total > limit:
        raise error(
            Status.ESIZE,
            detail=f"message of {total} bytes (maximum {limit}): an array of {nbytes} bytes "
            f"and its {start}-byte header",
        )

    def fill(view: memoryview) -> None:
        view[:start] = head
        if nbytes:
            _copy_in(numpy, view, start, a, fortran)

    # One copy, straight into the ring; an exception in it aborts the message.
    rb.put_with(total, fill, block, timeout)


def _copy_in(numpy: Any, view: memoryview, start: int, a: Any, fortran: bool) -> None:
    """Copies ``a`` into ``view`` from ``start`` on, in the message's order:
    one copy, from any layout. An exception leaves the reservation to be
    aborted by the caller's block."""
    dst = numpy.frombuffer(view, a.dtype, a.size, start)
    try:
        dst = dst.reshape(a.shape, order="F" if fortran else "C")
        numpy.copyto(dst, a, casting="no")
    finally:
        # No array may still export the view when the block ends (also
        # from a traceback's frame): the block then commits or aborts.
        del dst


def parse(numpy: Any, msg: Any) -> tuple[Any, tuple[int, ...], str, int, int]:
    """Checks that ``msg`` (a bytes-like message) is an array message;
    returns its (dtype, shape, order "C" or "F", element count, data
    offset). Raises :class:`NotAnArray` saying why not."""
    n = len(msg)
    prefix = bytes(msg[:12])
    if n < 10 or prefix[:6] != MAGIC:
        raise NotAnArray(f"not an array message: it does not start with the .npy magic {MAGIC!r}")
    layout = _LAYOUTS.get(prefix[6:8])
    if layout is None:
        raise NotAnArray(f"not an array message: .npy version {prefix[6]}.{prefix[7]} (not 1.0 to 3.0)")
    start, encoding = layout
    if n < start:
        raise NotAnArray(f"not an array message: {n} bytes, shorter than a .npy {prefix[6]}.0 prefix")
    end = start + int.from_bytes(prefix[8:start], "little")
    if end > n:
        raise NotAnArray(f"not an array message: its header of {end - start} bytes runs past its {n} bytes")
    head = bytes(msg[:end])
    found = _parsed.get(head)
    if found is None:
        found = _parse_dict(numpy, head[start:], encoding)
        if end <= _CACHE_HEADER_MAX:
            if len(_parsed) >= _CACHE_MAX:
                _parsed.clear()
            _parsed[head] = found
    dtype, shape, order, count = found
    if count * dtype.itemsize != n - end:
        raise NotAnArray(
            f"not an array message: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes "
            f"of data, the message has {n - end}"
        )
    return dtype, shape, order, count, end


def _parse_dict(numpy: Any, raw: bytes, encoding: str) -> tuple[Any, tuple[int, ...], str, int]:
    """(dtype, shape, order "C" or "F", element count) from a header's bytes after
    the length field. Never evaluates code: the text is a Python literal,
    read with :func:`ast.literal_eval` as numpy.load does."""
    try:
        d = ast.literal_eval(raw.decode(encoding))
    except Exception as e:  # UnicodeDecodeError, SyntaxError, ValueError, MemoryError, RecursionError...
        raise NotAnArray(f"not an array message: the header is not a Python literal ({e!r:.200})") from None
    if type(d) is not dict or d.keys() != _KEYS:
        raise NotAnArray(f"not an array message: the header is not a dict of {sorted(_KEYS)}")
    shape = d["shape"]
    if (
        type(shape) is not tuple
        or len(shape) > _MAX_DIMS
        or not all(type(x) is int and 0 <= x <= _SSIZE_MAX for x in shape)
    ):
        raise NotAnArray(f"not an array message: shape {shape!r:.200}")
    fortran = d["fortran_order"]
    if type(fortran) is not bool:
        raise NotAnArray(f"not an array message: fortran_order {fortran!r:.200}")
    try:
        dtype = numpy.lib.format.descr_to_dtype(d["descr"])
    except Exception:  # whatever numpy.dtype() says about a forged descr
        raise NotAnArray(f"not an array message: descr {d['descr']!r:.200}") from None
    if dtype.hasobject:
        raise NotAnArray(f"not an array message: dtype {dtype} holds Python objects")
    if dtype.subdtype is not None:
        raise NotAnArray(f"not an array message: descr {d['descr']!r:.200} is a subarray dtype")
    return dtype, shape, "F" if fortran else "C", math.prod(shape)


def get_array(rb: Any, block: bool, timeout: Timeout) -> Any:
    """``RingBuffer.get_array``: the next message as a new array."""
    numpy = _numpy("get_array")
    # consume_on_error=False: an interrupt or a MemoryError while copying
    # leaves the message for the next read; a message that is not an array
    # is consumed (it never becomes one: left, it would stop every
    # get_array loop there), and its NotAnArray raised after.

    def take(view: memoryview) -> Any:
        try:
            return _copy_out(numpy, view)
        except NotAnArray as e:
            return e

    if rb.overwrite:
        # Zero-copy reads are refused on an overwrite ring (a writer may
        # reclaim the record meanwhile): the message is copied out first,
        # so an interrupt while it becomes an array loses it.
        out = take(memoryview(rb.get(block, timeout)))
    else:
        out = rb.get_with(take, block, timeout, consume_on_error=False)
    if isinstance(out, NotAnArray):
        raise out
    return out


def _copy_out(numpy: Any, view: memoryview) -> Any:
    """The array message in ``view`` as a new array, owning its memory
    (NotAnArray if it is not one): one copy."""
    dtype, shape, order, count, start = parse(numpy, view)
    try:
        if dtype.itemsize == 0:  # no data, and frombuffer refuses such a dtype
            out = numpy.empty(shape, dtype, order=order)
            if out.dtype == dtype:  # not for 'S0' or 'U0', which numpy.empty makes 'S1', 'U1'
                return out
            raise ValueError(f"numpy makes {out.dtype} of it")
        # The intermediate views of the ring are gone when this returns:
        # nothing exports the view when the block ends.
        return numpy.frombuffer(view, dtype, count, start).reshape(shape, order=order).copy(order="K")
    except (ValueError, TypeError, OverflowError) as e:  # e.g. more dimensions than numpy takes
        raise NotAnArray(
            f"not an array message: numpy cannot make an array of {dtype} and shape {shape} ({e})"
        ) from None
