"""ringbuffer.Queue with out-of-band buffers (PEP 574): numpy arrays and other
buffers cross the queue with one copy each way, in framed messages
(docs/format.md, "Queue messages"); plain pickles keep their bytes. Round
trips of every kind of array and buffer, the wire format, the copies made
(and not made), sizes and failures that must write nothing, every getter and
putter, ``Queue.peek``, other processes, and processes killed mid-copy.

The child-process functions are module-level so that spawn children can
import them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import queue
import random
import signal
import struct
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from _helpers import InThread

from ringbuffer import BufferEmpty, BufferFull, InvalidSize, Queue, RingBuffer, objqueue
from ringbuffer._oobpickle import Framed

JOIN = 30.0  # bound on every process join and cross-process get
TIMEOUT = 0.2  # the timeout used to check that calls wait that long
AT_ONCE = 1.0  # a call that must not wait returns within this (seconds)
BOUND = 5.0  # generous: the longest a get may take to get past a dead writer's record
FRAMED = 0xB5
PLAIN = 0x80  # PROTO, the first byte of every pickle of protocol 2 and later
BIG = 4 << 20  # bytes of the arrays that must take the large-message paths

pytestmark = pytest.mark.usefixtures("watchdog")


@pytest.fixture
def q():
    """A private queue of 32 MiB (messages of up to 16 MiB)."""
    with Queue(maxsize_bytes=32 << 20) as q:
        yield q


def take_raw(q: Queue) -> bytes:
    """The next message's bytes, taken with a RingBuffer of its own."""
    with RingBuffer.open(q.path) as rb:
        return rb.get_nowait()


def via_raw(q: Queue, obj):
    """Puts obj, checks the message's bytes, puts them back and gets the object."""
    q.put(obj)
    raw = take_raw(q)
    with RingBuffer.open(q.path) as rb:
        rb.put(raw)
    return raw, q.get_nowait()


def ring_span(q: Queue) -> tuple[int, int]:
    """The addresses this process maps the queue's file at (both mappings;
    found by inode: the file was created under another name)."""
    st = os.stat(q.path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[3] == dev and int(fields[4]) == st.st_ino:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                spans.append((start, end))
    assert spans, "the ring file is not mapped"
    return min(s for s, _ in spans), max(e for _, e in spans)


def in_ring(q: Queue, arr: np.ndarray) -> bool:
    lo, hi = ring_span(q)
    return lo <= arr.__array_interface__["data"][0] < hi


def owner(arr: np.ndarray):
    """The object at the end of an array's base chain: the memory it lives in."""
    base = arr
    while True:
        if isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        elif isinstance(base, memoryview):
            base = base.obj
        else:
            return base


def assert_same_array(got, want) -> None:
    assert type(got) is type(want)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.flags.writeable == want.flags.writeable
    assert got.flags.f_contiguous == want.flags.f_contiguous
    assert got.flags.c_contiguous == want.flags.c_contiguous or not want.flags.contiguous
    if want.dtype.hasobject:
        assert got.tolist() == want.tolist()
    else:  # bit for bit: NaN, -0.0 and NaT included
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def read_only(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


# ===========================================================================
# Round trips


DTYPES = {
    "bool": np.array([True, False, True]),
    "int8": np.arange(-5, 5, dtype=np.int8),
    "uint16": np.arange(10, dtype=np.uint16) * 6000,
    "int32": np.arange(-7, 7, dtype=np.int32) * 100_000,
    "int64": np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "float16": np.linspace(-1, 1, 9, dtype=np.float16),
    "float32": np.array([np.nan, np.inf, -0.0, 1.5], dtype=np.float32),
    "float64": np.array([np.nan, -np.inf, 5e-324, 1.7e308]),
    "longdouble": np.linspace(0, 1, 7, dtype=np.longdouble),
    "complex64": np.array([1 + 2j, np.nan * 1j], dtype=np.complex64),
    "complex128": np.array([3 - 4j, -0.0j]),
    "clongdouble": np.array([1 + 1j], dtype=np.clongdouble),
    "datetime64": np.array(["2026-01-02T03:04:05.123456789", "NaT"], dtype="datetime64[ns]"),
    "timedelta64": np.array([1, -2, 3], dtype="timedelta64[ms]"),
    "structured": np.array(
        [(1, 2.5, b"ab"), (3, -1.0, b"c")], dtype=[("i", "<i4"), ("f", ">f8"), ("s", "S2")]
    ),
    "unicode": np.array(["héllo", "", "wörld✓"]),
    "bytes": np.array([b"ab", b"\x00c"]),
    "big-endian int": np.arange(6, dtype=">i4"),
    "big-endian float": np.linspace(0, 1, 5, dtype=">f8"),
    "big-endian complex": np.array([1 + 2j], dtype=">c16"),
}


# numpy pickles these in-band itself (no PickleBuffer): plain messages.
IN_BAND_BY_NUMPY = {"datetime64", "timedelta64"}


def out_of_band_buffers(obj) -> int:
    buffers: list = []
    pickle.dumps(obj, 5, buffer_callback=buffers.append)
    return len(buffers)


@pytest.mark.parametrize("name", DTYPES)
def test_every_dtype_round_trips(q, name):
    arr = DTYPES[name]
    raw, got = via_raw(q, arr)
    assert_same_array(got, arr)
    assert got.flags.writeable
    if name in IN_BAND_BY_NUMPY:
        assert out_of_band_buffers(arr) == 0
        assert raw[0] == PLAIN
    else:
        assert raw[0] == FRAMED
        assert got.flags.owndata is False and type(owner(got)) is bytearray


SHAPES = [
    (),
    (5,),
    (2, 3),
    (2, 3, 4),
    (2, 1, 3, 2),
    (1, 2, 3, 2, 2),
    (0,),
    (3, 0),
    (2, 0, 4),
    (0, 0, 0, 0, 0),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_shapes_from_0_to_5_dimensions_and_zero_size_arrays(q, shape, order):
    arr = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape, order=order)
    assert arr.ndim == len(shape)
    raw, got = via_raw(q, arr)
    assert raw[0] == FRAMED
    assert_same_array(got, arr)
    q.put(arr)  # also through get() without the detour
    assert_same_array(q.get_nowait(), arr)


def test_fortran_order_is_kept(q):
    arr = np.asfortranarray(np.arange(24, dtype=np.int16).reshape(4, 6))
    raw, got = via_raw(q, arr)
    assert raw[0] == FRAMED
    assert got.flags.f_contiguous and not got.flags.c_contiguous
    assert_same_array(got, arr)


NON_CONTIGUOUS = {
    "step": lambda a: a[::3],
    "reversed": lambda a: a[::-1],
    "column": lambda a: a.reshape(40, 25)[:, 3],
    "transpose-slice": lambda a: a.reshape(40, 25).T[::2],
    "big": lambda a: np.arange(BIG // 4, dtype=np.float64)[::2],
}


@pytest.mark.parametrize("make", NON_CONTIGUOUS.values(), ids=NON_CONTIGUOUS.keys())
def test_non_contiguous_arrays_are_pickled_in_band_and_round_trip(q, make):
    # numpy pickles them in-band (a C-order copy, no PickleBuffer): a plain pickle.
    arr = make(np.arange(1000, dtype=np.float64))
    assert not arr.flags.c_contiguous and not arr.flags.f_contiguous
    raw, got = via_raw(q, arr)
    assert raw[0] == PLAIN
    assert np.array_equal(got, arr) and got.dtype == arr.dtype and got.flags.writeable


def test_read_only_arrays_stay_read_only(q):
    arr = read_only(np.arange(10.0))
    raw, got = via_raw(q, arr)
    assert raw[0] == FRAMED
    assert_same_array(got, arr)  # not writeable, as pickle keeps it
    big = read_only(np.ones(BIG // 8))
    q.put(big)
    got = q.get_nowait()
    assert not got.flags.writeable and np.array_equal(got, big)


def test_bytearray_is_pickled_in_band(q):
    # CPython's pickler writes a bytearray in-band itself (it never reaches
    # the buffer callback): a plain message, as before.
    data = bytearray(b"\x00\xff" * 5000)
    raw, got = via_raw(q, data)
    assert raw[0] == PLAIN
    assert type(got) is bytearray and got == data


MEMORYVIEWS = {
    "bytes": lambda: memoryview(b"abcdef"),
    "bytearray": lambda: memoryview(bytearray(b"writable")),
    "2-d doubles": lambda: memoryview(np.arange(6.0).reshape(2, 3)),
    "0-d": lambda: memoryview(np.array(7, dtype=np.int32)),
    "empty": lambda: memoryview(b""),
    "non-contiguous": lambda: memoryview(bytearray(range(20)))[::3],
    "fortran": lambda: memoryview(np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))),
    "read-only 2-d": lambda: memoryview(read_only(np.arange(12, dtype=np.uint32).reshape(3, 4))),
}


@pytest.mark.parametrize("make", MEMORYVIEWS.values(), ids=MEMORYVIEWS.keys())
def test_memoryviews_which_pickle_refuses_round_trip_out_of_band(q, make):
    view = make()
    with pytest.raises(TypeError):
        pickle.dumps(view, pickle.HIGHEST_PROTOCOL)
    raw, got = via_raw(q, view)
    assert raw[0] == FRAMED
    assert type(got) is memoryview
    assert (got.format, got.shape, got.readonly) == (view.format, view.shape, view.readonly)
    assert got.tolist() == view.tolist() and got.c_contiguous
    q.put({"nested": [view]})
    assert q.get_nowait()["nested"][0].tolist() == view.tolist()


def test_a_memoryview_of_a_format_that_cannot_be_rebuilt_raises_in_the_caller(q):
    view = memoryview(np.arange(3, dtype=">i4"))  # format ">i": no memoryview.cast to it
    with pytest.raises(TypeError, match="format '>i'"):
        q.put(view)
    assert q.empty()
    q.put(np.asarray(view))  # the array itself is fine
    assert q.get_nowait().tolist() == [0, 1, 2]


def test_pickle_buffers_round_trip(q):
    raw, got = via_raw(q, pickle.PickleBuffer(bytearray(b"writable")))
    assert raw[0] == FRAMED
    assert type(got) is bytearray and got == b"writable"  # pickle hands back the buffer object
    raw, got = via_raw(q, pickle.PickleBuffer(b"read-only"))
    assert raw[0] == FRAMED
    assert bytes(got) == b"read-only" and memoryview(got).readonly


def test_objects_holding_several_arrays(q):
    a, b = np.arange(100.0), np.ones((3, 4), dtype=np.int8)
    obj = {"a": a, "list": [b, "text", a[::2], {"deep": (np.zeros(0), b)}], "n": 1}
    raw, got = via_raw(q, obj)
    assert raw[0] == FRAMED
    assert struct.unpack_from("<I", raw, 4)[0] == 3  # a, b, zeros; b's second use is memoized
    assert_same_array(got["a"], a)
    assert_same_array(got["list"][0], b)
    assert np.array_equal(got["list"][2], a[::2])
    assert got["list"][3]["deep"][1] is got["list"][0]  # one object stays one object
    assert got["list"][1] == "text" and got["n"] == 1
    big = [np.full(BIG // 8, i, dtype=np.float64) for i in range(3)]
    q.put(big)
    assert [x[0] for x in q.get_nowait()] == [0.0, 1.0, 2.0]


def test_object_dtype_arrays_fall_back_to_in_band_pickling(q):
    arr = np.array([1, "two", None, [3]], dtype=object)
    raw, got = via_raw(q, arr)
    assert raw[0] == PLAIN
    assert_same_array(got, arr)
    mixed = {"objects": arr, "numbers": np.arange(5)}  # the numbers still go out of band
    raw, got = via_raw(q, mixed)
    assert raw[0] == FRAMED
    assert got["objects"].tolist() == arr.tolist() and got["numbers"].tolist() == [0, 1, 2, 3, 4]


# ===========================================================================
# The wire format


def test_a_plain_object_is_the_same_bytes_as_before(q):
    for obj in (None, 1, "text", b"x" * 64, {"id": 1, "values": [1, 2, 3]}, list(range(50_000))):
        q.put(obj)
        assert take_raw(q) == pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def test_framed_message_layout(q):
    a = np.arange(5, dtype=np.uint8)  # 5 bytes: the next buffer needs padding
    b = np.arange(3, dtype=np.float64)
    q.put([a, b])
    raw = take_raw(q)
    kind, version, align_log2, reserved, count, pickle_len = struct.unpack_from("<BBBBIQ", raw)
    assert (kind, version, align_log2, reserved, count) == (FRAMED, 1, 3, 0, 2)
    lens = struct.unpack_from("<2Q", raw, 16)
    assert lens == (5, 24)
    start = 16 + 8 * count
    data = raw[start : start + pickle_len]
    first = (start + pickle_len + 7) & ~7
    second = (first + 5 + 7) & ~7
    assert raw[first : first + 5] == a.tobytes()
    assert raw[second : second + 24] == b.tobytes()
    assert len(raw) == second + 24  # nothing after the last buffer
    assert raw[first + 5 : second] == bytes(second - first - 5)  # padding: zero in this library's rings
    # The pickle is protocol 5 with the buffers out of band: loads takes them back.
    got = pickle.loads(data, buffers=[raw[first : first + 5], raw[second : second + 24]])
    assert [x.tolist() for x in got] == [a.tolist(), b.tolist()]
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)  # out-of-band buffers needed


def framed(count: int, pickle_len: int, lens: list[int], tail: bytes = b"", version: int = 1) -> bytes:
    return struct.pack(f"<BBBBIQ{len(lens)}Q", FRAMED, version, 3, 0, count, pickle_len, *lens) + tail


# Each made for a message of at least `pad` bytes (0: small, BIG: the large-message path).
MALFORMED = {
    "short": lambda pad: bytes([FRAMED, 1, 3]),
    "version 2": lambda pad: framed(0, 0, [], bytes(pad), version=2),
    "count past the end": lambda pad: framed(10**8, 0, [], bytes(pad)),
    "pickle past the end": lambda pad: framed(0, 2 * pad + 100, [], b"\x80\x05N." + bytes(pad)),
    "buffer past the end": lambda pad: framed(1, 4, [2 * pad + 64], b"\x80\x05N." + bytes(pad + 8)),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("pad", [0, BIG], ids=["small", "large"])
def test_a_malformed_framed_message_raises_unpickling_error_and_is_consumed(q, make, pad):
    with RingBuffer.open(q.path) as rb:
        rb.put(make(pad))
        rb.put(pickle.dumps("next"))
    with pytest.raises(pickle.UnpicklingError, match="malformed framed message"):
        q.get_nowait()
    assert q.get_nowait() == "next"


# ===========================================================================
# One copy each way


def test_get_returns_writeable_arrays_that_own_their_memory_outside_the_ring(q):
    for size in (80, BIG):  # through get_within's bytes, and through a peek
        arr = np.arange(size // 8, dtype=np.float64)
        q.put(arr)
        got = q.get_nowait()
        assert got.flags.writeable
        assert not in_ring(q, got)
        assert type(owner(got)) is bytearray
        got[:] = -1  # writing it touches nothing else
        assert arr[1] == 1.0
        q.put(arr)
        assert q.get_nowait()[1] == 1.0


def test_put_copies_the_array_straight_into_the_reservation(q, monkeypatch):
    arr = np.random.default_rng(1).random(BIG // 8)
    calls = []
    real_dumps = objqueue._pickle_dumps

    def spy(obj, protocol, **kw):
        calls.append(kw)
        return real_dumps(obj, protocol, **kw)

    monkeypatch.setattr(objqueue, "_pickle_dumps", spy)
    q.put(np.zeros(1))  # warm up (pooled buffers, imports)
    q.get_nowait()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        q.put(arr)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all("buffer_callback" in kw for kw in calls)
    assert peak < arr.nbytes // 20, f"put allocated {peak} bytes for a {arr.nbytes}-byte array"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        got = q.get_nowait()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # get: the array's own memory and little else (no second copy)
    assert arr.nbytes <= peak < arr.nbytes * 1.05, peak
    assert np.array_equal(got, arr)


def test_get_copies_a_large_message_once_out_of_a_peek(q, monkeypatch):
    q.put(np.ones(BIG // 8))
    copies = []
    real = objqueue.copy_out
    monkeypatch.setattr(objqueue, "copy_out", lambda view: copies.append(len(view)) or real(view))
    assert q.get_nowait().sum() == BIG // 8
    assert len(copies) == 1 and copies[0] > BIG


# ===========================================================================
# Sizes and failures: nothing written


def test_an_object_larger_than_max_message_size_raises_and_writes_nothing(monkeypatch):
    with Queue(maxsize_bytes=1 << 20) as q:
        q.put("before")
        before = q._ring.positions()
        reserves = []
        monkeypatch.setattr(RingBuffer, "reserve", lambda *a: reserves.append(a))
        arr = np.zeros((1 << 19) // 8)  # exactly max_message_size of data, plus the framing
        t0 = time.monotonic()
        with pytest.raises(ValueError) as ei:
            q.put(arr)  # blocking, no timeout: refused at once
        assert time.monotonic() - t0 < AT_ONCE
        assert isinstance(ei.value, InvalidSize)
        assert "524288 bytes" in str(ei.value) and "ndarray" in str(ei.value)
        with pytest.raises(ValueError):
            q.put_many([np.zeros(1), arr])
        with pytest.raises(ValueError):
            asyncio.run(q.aput(arr))
        assert reserves == []
        assert q._ring.positions() == before
        assert q.get_nowait() == "before"


class RaisesAfterAnArray:
    """Pickled after an array's buffer was handed out: its __reduce__ raises."""

    def __reduce__(self):
        raise RuntimeError("cannot reduce this one")


def test_an_exception_in_the_pickler_after_a_buffer_writes_nothing(q, monkeypatch):
    q.put("before")
    before = q._ring.positions()
    reserves = []
    real = RingBuffer.reserve
    monkeypatch.setattr(RingBuffer, "reserve", lambda self, *a: reserves.append(a) or real(self, *a))
    obj = [np.ones(1000), RaisesAfterAnArray()]
    with pytest.raises(RuntimeError, match="cannot reduce") as ei:
        q.put(obj)
    assert any(entry.name == "put" for entry in ei.traceback)
    if sys.version_info >= (3, 11):
        assert any("ringbuffer.Queue.put" in note for note in ei.value.__notes__)
    with pytest.raises(RuntimeError):
        q.put_many([np.ones(3), obj])
    assert reserves == [] and q._ring.positions() == before
    assert q.get_nowait() == "before"
    q.put(np.arange(3))  # the next put and get work
    assert q.get_nowait().tolist() == [0, 1, 2]
    assert q._ring.info()["discarded"] == 0


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("size", [80, BIG])
def test_an_exception_in_the_copy_aborts_the_reservation(q, monkeypatch, exc, size):
    real = Framed.write_into

    def half_then_raise(self, view):
        view[: len(view) // 2] = b"\xee" * (len(view) // 2)  # torn
        raise exc("in the copy")

    monkeypatch.setattr(Framed, "write_into", half_then_raise)
    with pytest.raises(exc, match="in the copy"):
        q.put(np.ones(size // 8))
    monkeypatch.setattr(Framed, "write_into", real)
    with pytest.raises(queue.Empty):
        q.get_nowait()  # never delivered
    info = q._ring.info()
    assert info["busy"] == 0 and info["bytes_used"] == 0  # aborted, and already skipped
    q.put(np.arange(size // 8))
    assert q.get_nowait()[-1] == size // 8 - 1


def test_a_failed_copy_out_leaves_the_message_in_the_queue(q, monkeypatch):
    q.put(np.arange(BIG // 8))

    def no_memory(view):
        raise MemoryError

    monkeypatch.setattr(objqueue, "copy_out", no_memory)
    with pytest.raises(MemoryError):
        q.get_nowait()
    monkeypatch.undo()
    assert q.get_nowait()[-1] == BIG // 8 - 1


# ===========================================================================
# Custom dumps/loads: unchanged, never framed


def test_custom_dumps_and_loads_are_never_framed(q):
    with Queue(maxsize_bytes=32 << 20, dumps=bytes, loads=bytes) as raw_q:
        for msg in (bytes([FRAMED, 1, 3, 0]) + b"x" * 100, bytes([FRAMED]) * BIG):  # looks framed
            raw_q.put(msg)
            assert raw_q.get_nowait() == msg
            raw_q.put(msg)
            with raw_q.peek() as got:
                assert got == msg
    with Queue(maxsize_bytes=32 << 20, dumps=pickle.dumps, loads=pickle.loads) as pq:
        arr = np.arange(BIG // 8)
        pq.put(arr)
        assert take_raw(pq)[0] == PLAIN  # pickle.dumps's own in-band pickle
        pq.put(arr)
        assert np.array_equal(pq.get_nowait(), arr)


# ===========================================================================
# Every getter and putter, with both kinds of messages

MIXED = [
    1,
    np.arange(4),
    "text",
    {"big": np.ones(BIG // 8, dtype=np.float32)},
    np.zeros((2, 2)),
    None,
    [np.arange(BIG // 8)],
]


def assert_mixed(got) -> None:
    assert len(got) == len(MIXED)
    for g, w in zip(got, MIXED):
        if isinstance(w, np.ndarray):
            assert_same_array(g, w)
        elif isinstance(w, dict):
            assert_same_array(g["big"], w["big"])
        elif isinstance(w, list):
            assert_same_array(g[0], w[0])
        else:
            assert g == w


def test_put_get_of_mixed_messages(q):
    for obj in MIXED:
        q.put(obj)
    assert_mixed([q.get(timeout=JOIN) for _ in MIXED])
    for obj in MIXED:
        q.put_nowait(obj)
    assert_mixed([q.get_nowait() for _ in MIXED])


def test_put_many_get_many_of_mixed_messages(q):
    assert q.put_many(MIXED) == len(MIXED)
    assert_mixed(q.get_many(100))
    assert q.put_many(iter(MIXED), timeout=1) == len(MIXED)
    got = []
    while len(got) < len(MIXED):
        got += q.get_many(3, timeout=JOIN)
    assert_mixed(got)


def test_put_many_of_mixed_messages_stops_when_full():
    with Queue(maxsize_bytes=1 << 20) as q:
        arr = np.zeros(200_000 // 8)  # 200 KB: five fit in the 1 MiB ring, not six
        items = [1, arr, 2, arr, arr, 3, arr, arr, arr, 4]
        n = q.put_many(items, block=False)
        assert n == 8
        t0 = time.monotonic()
        assert q.put_many(items[n:], timeout=TIMEOUT) == 0
        assert time.monotonic() - t0 >= TIMEOUT
        got = q.get_many(100)
        assert len(got) == n
        assert [x for x in got if isinstance(x, int)] == [1, 2, 3]
        with pytest.raises(ValueError):
            q.put_many([1, arr], timeout=-1)


def test_put_of_an_array_waits_for_space_and_times_out():
    with Queue(maxsize_bytes=1 << 20) as q:
        arr = np.ones(400_000 // 8)  # two fit in the 1 MiB ring, not three
        q.put(arr)
        q.put(arr)
        before = q._ring.positions()
        for call in (
            lambda: q.put_nowait(arr),
            lambda: q.put(arr, block=False),
            lambda: q.put(arr, False, 10),
        ):
            t0 = time.monotonic()
            with pytest.raises(queue.Full) as ei:
                call()
            assert time.monotonic() - t0 < AT_ONCE and type(ei.value) is BufferFull
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put(arr, timeout=TIMEOUT)
        assert time.monotonic() - t0 >= TIMEOUT
        assert q._ring.positions() == before
        with pytest.raises(ValueError):
            q.put(arr, timeout=-1)
        getter = InThread(lambda: (time.sleep(0.1), q.get()))
        q.put(arr, timeout=JOIN)  # waits for the getter
        getter.join(JOIN)
        assert getter.exc is None
        assert len(q.get_many(10)) == 2


def test_get_of_a_large_message_waits_and_times_out(q):
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=TIMEOUT)
    assert time.monotonic() - t0 >= TIMEOUT
    threading.Timer(0.1, q.put, args=(np.ones(BIG // 8),)).start()
    assert q.get(timeout=JOIN).shape == (BIG // 8,)
    with pytest.raises(queue.Empty):
        q.get_nowait()


@pytest.fixture
def stolen_first(q, monkeypatch):
    """Another consumer takes the large message at the head between get()'s
    two looks at it (seeing it is large, peeking it): once."""
    other = RingBuffer.open(q.path)
    real_peek = RingBuffer.peek

    def peek_after_a_theft(self, *args):
        monkeypatch.setattr(RingBuffer, "peek", real_peek)
        other.get_nowait()
        return real_peek(self, *args)

    monkeypatch.setattr(RingBuffer, "peek", peek_after_a_theft)
    yield other
    other.close()


def test_a_large_message_taken_by_another_consumer_first(q, stolen_first):
    q.put(np.ones(BIG // 8))
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert q.empty()


def test_a_large_message_taken_by_another_consumer_first_then_waits_in_the_time_left(q, stolen_first):
    # get() waits 1.2 s for the message, sees it large, loses it, then waits
    # only what is left of its 2 s (not 2 s more).
    threading.Timer(1.2, q.put, args=(np.ones(BIG // 8),)).start()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=2.0)
    assert 2.0 <= time.monotonic() - t0 < 2.8


def test_a_large_message_taken_by_another_consumer_first_then_the_next_comes(q, stolen_first):
    q.put(np.ones(BIG // 8))
    threading.Timer(0.1, q.put, args=(np.arange(BIG // 8),)).start()
    assert q.get(timeout=JOIN)[-1] == BIG // 8 - 1


def test_a_closed_queue_raises_buffer_closed_with_arrays():
    q = Queue()
    q.close()
    for call in (lambda: q.put(np.ones(3)), lambda: q.put_many([np.ones(3)]), q.get, q.peek):
        with pytest.raises(ValueError, match="is closed"):
            call()


def test_coroutines_with_mixed_messages(q):
    async def main():
        for obj in MIXED:
            await q.aput(obj, timeout=1)
        got = [await q.aget(timeout=1) for _ in MIXED]
        assert await q.aput_many(MIXED) == len(MIXED)
        got2 = []
        while len(got2) < len(MIXED):
            got2 += await q.aget_many(3, timeout=1)
        return got, got2

    got, got2 = asyncio.run(main())
    assert_mixed(got)
    assert_mixed(got2)


def test_coroutines_wait_for_arrays():
    with Queue(maxsize_bytes=1 << 20) as q:
        arr = np.arange(300_000 // 8)

        async def main():
            # a consumer waiting for arrays, a producer waiting for room
            async def consume():
                out = []
                async for obj in q:
                    out.append(obj)
                    if len(out) == 6:
                        return out
                return out

            task = asyncio.ensure_future(consume())
            for _ in range(6):
                await q.aput(arr, timeout=JOIN)
            return await asyncio.wait_for(task, JOIN)

        got = asyncio.run(main())
        assert len(got) == 6 and all(np.array_equal(g, arr) and g.flags.writeable for g in got)


def test_threads_share_a_queue_of_arrays():
    with Queue(maxsize_bytes=4 << 20) as q:
        sizes = [8, 1000, 100_000, 600_000]

        def produce(t):
            for i in range(40):
                q.put((t, i, np.full(sizes[i % 4] // 8, t * 1000 + i, dtype=np.int64)))

        producers = [InThread(produce, t) for t in range(3)]
        results = []

        def consume():
            while True:
                item = q.get(timeout=JOIN)
                if item is None:
                    return
                results.append(item)

        consumers = [InThread(consume) for _ in range(2)]
        for th in producers:
            th.join(JOIN)
            assert th.exc is None
        for _ in consumers:
            q.put(None)
        for th in consumers:
            th.join(JOIN)
            assert th.exc is None
        assert sorted((t, i) for t, i, _ in results) == [(t, i) for t in range(3) for i in range(40)]
        for t, i, arr in results:
            assert arr.shape == (sizes[i % 4] // 8,) and (arr == t * 1000 + i).all()


# ===========================================================================
# Queue.peek


def test_peek_gives_read_only_views_into_the_ring(q):
    arr = np.arange(BIG // 8, dtype=np.float64)
    q.put({"a": arr, "small": np.arange(3)})
    with q.peek() as obj:
        a = obj["a"]
        assert not a.flags.writeable and not obj["small"].flags.writeable
        assert in_ring(q, a) and in_ring(q, obj["small"])  # no copy
        assert np.array_equal(a, arr)
        with pytest.raises(ValueError):
            a[0] = 1
    assert q.empty()  # consumed when the block ended


@pytest.mark.parametrize(
    "obj", [pickle.PickleBuffer(b"ring bytes"), memoryview(b"ring bytes")], ids=["PickleBuffer", "memoryview"]
)
def test_peek_views_are_released_after_the_block(q, obj):
    q.put(obj)
    with q.peek() as view:
        assert view.readonly and bytes(view) == b"ring bytes"
    with pytest.raises(ValueError, match="released"):
        bytes(view)


@pytest.mark.xfail(
    strict=True,
    reason="KNOWN LIMITATION (documented in Queue.peek()): objects made from the views (numpy arrays, "
    "cast memoryviews) are not tracked and still read ring memory after the block",
)
@pytest.mark.parametrize(
    "obj", [np.arange(8.0), memoryview(np.arange(6.0).reshape(2, 3))], ids=["numpy", "2-d memoryview"]
)
def test_an_object_kept_from_a_peek_does_not_outlive_the_block(q, obj):
    q.put(obj)
    with q.peek() as kept:
        pass
    assert not in_ring(q, np.asarray(kept)), "an object made inside the block still reaches the ring"


def test_peek_of_plain_messages(q):
    q.put({"plain": [1, 2]})
    q.put(bytearray(b"in band"))
    with q.peek() as obj:
        assert obj == {"plain": [1, 2]}
    with q.peek() as obj:
        assert obj == b"in band"
    big = list(range(100_000))
    q.put(big)
    with q.peek() as obj:
        assert obj == big
    assert q.empty()


def test_peek_consume_on_error(q):
    q.put(np.arange(5))
    with pytest.raises(RuntimeError):
        with q.peek():
            raise RuntimeError("reader failed")
    assert q.empty()  # consumed, by default
    q.put(np.arange(5))
    with pytest.raises(RuntimeError):
        with q.peek(consume_on_error=False):
            raise RuntimeError("reader failed")
    assert q.get_nowait().tolist() == [0, 1, 2, 3, 4]  # left for the next get


def test_peek_unpickling_error_counts_as_an_error_in_the_block(q):
    with RingBuffer.open(q.path) as rb:
        rb.put(bytes([FRAMED, 9]) + bytes(30))
        rb.put(bytes([FRAMED, 9]) + bytes(30))
    with pytest.raises(pickle.UnpicklingError):
        with q.peek(consume_on_error=False):
            pytest.fail("the block must not run")
    assert q._ring.info()["messages"] == 2  # given back
    with pytest.raises(pickle.UnpicklingError):
        with q.peek():
            pass
    assert q._ring.info()["messages"] == 1  # consumed


def test_peek_waits_like_get(q):
    for call in (lambda: q.peek(block=False), lambda: q.peek(False, 10), lambda: q.peek(timeout=0)):
        t0 = time.monotonic()
        with pytest.raises(queue.Empty) as ei:
            with call():
                pass
        assert time.monotonic() - t0 < AT_ONCE and type(ei.value) is BufferEmpty
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        with q.peek(timeout=TIMEOUT):
            pass
    assert time.monotonic() - t0 >= TIMEOUT
    threading.Timer(0.1, q.put, args=(np.arange(3),)).start()
    with q.peek() as arr:  # blocks by default
        assert arr.tolist() == [0, 1, 2]


# ===========================================================================
# Other processes

METHODS = ["fork", "spawn"]


def child_put_arrays(q: Queue, n: int) -> None:
    for i in range(n):
        q.put({"i": i, "arr": np.full((BIG // 8) if i % 2 else 10, i, dtype=np.float64)})


@pytest.mark.parametrize("method", METHODS)
def test_a_child_puts_arrays_the_parent_gets_them(method):
    ctx = multiprocessing.get_context(method)
    with Queue(maxsize_bytes=32 << 20) as q:
        p = ctx.Process(target=child_put_arrays, args=(q, 8))
        p.start()
        got = [q.get(timeout=JOIN) for _ in range(8)]
        p.join(JOIN)
        assert p.exitcode == 0
    for i, obj in enumerate(got):
        assert obj["i"] == i and (obj["arr"] == i).all() and obj["arr"].flags.writeable


# -- killed processes (docs/design.md, "Crash recovery") -------------------

KILL_CTX = multiprocessing.get_context("fork")
KILLED_ITEMS = 2 << 20  # float32 items: 8 MiB arrays


_REAL_WRITE_INTO = Framed.write_into
KILL_CHUNK = 256 * 1024


def slow_write_into(self, view) -> None:
    """Framed.write_into, copying in steps with pauses (about 16 ms for an
    8 MiB array), so that kills land inside the copy."""
    whole = bytearray(len(view))
    _REAL_WRITE_INTO(self, memoryview(whole))
    with memoryview(whole) as src:
        for at in range(0, len(src), KILL_CHUNK):
            view[at : at + KILL_CHUNK] = src[at : at + KILL_CHUNK]
            time.sleep(0.0005)


def child_put_forever(path: str, started) -> None:
    Framed.write_into = slow_write_into  # type: ignore[method-assign]
    q = Queue.open(path)
    seq = 0
    while True:
        q.put((seq, np.full(KILLED_ITEMS, seq, dtype=np.float32)))
        started.value = seq = seq + 1


def test_a_writer_killed_inside_the_copy_never_delivers_a_torn_array(tmp_path):
    path = str(tmp_path / "q.ring")
    rng = random.Random(5)
    inside = 0
    with Queue(maxsize_bytes=64 << 20, path=path) as q:
        received = []
        for cycle in range(8):
            started = KILL_CTX.Value("q", 0, lock=False)
            proc = KILL_CTX.Process(target=child_put_forever, args=(path, started))
            proc.start()
            deadline = time.monotonic() + JOIN
            while started.value == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.05))  # a put takes about 20 ms here: mostly copying
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(JOIN)
            assert proc.exitcode == -signal.SIGKILL
            inside += q._ring.info()["busy"]  # its reservation, half written
            t0 = time.monotonic()
            while True:
                try:
                    seq, arr = q.get(timeout=0.5)
                except queue.Empty:
                    if q._ring.info()["bytes_used"] == 0:  # the dead writer's record was discarded
                        break
                    assert time.monotonic() - t0 < BOUND, "the dead writer's record is never skipped"
                    continue
                assert arr.shape == (KILLED_ITEMS,) and (arr == seq).all(), "a torn array"
                received.append((cycle, seq))
        assert inside >= 4, f"only {inside} of 8 kills landed inside a copy"
        for cycle in range(8):  # each writer's arrays in order, once each
            seqs = [s for c, s in received if c == cycle]
            assert seqs == list(range(len(seqs)))


def child_peek_and_die(path: str) -> None:
    q = Queue.open(path)
    with q.peek() as obj:
        assert obj[1].flags.writeable is False
        os.kill(os.getpid(), signal.SIGKILL)


def child_copy_out_and_die(path: str) -> None:
    objqueue.copy_out = lambda view: os.kill(os.getpid(), signal.SIGKILL)
    Queue.open(path).get()


@pytest.mark.parametrize("child", [child_peek_and_die, child_copy_out_and_die], ids=["peek", "get"])
def test_a_reader_killed_while_reading_an_array_leaves_it_to_the_next(tmp_path, child):
    path = str(tmp_path / "q.ring")
    with Queue(maxsize_bytes=32 << 20, path=path) as q:
        arr = np.arange(BIG // 8)
        q.put(("first", arr))
        q.put(("second", arr))
        proc = KILL_CTX.Process(target=child, args=(path,))
        proc.start()
        proc.join(JOIN)
        assert proc.exitcode == -signal.SIGKILL
        # at least once: the message it was reading goes to the next reader
        name, got = q.get(timeout=BOUND)
        assert name == "first" and np.array_equal(got, arr)
        assert q.get(timeout=BOUND)[0] == "second"
        assert q._ring.info()["read_turn_pid"] == 0
