"""Gather writes (issue 14): RingBuffer.writev and putv write one message, the
concatenation of several buffers, each copied once into the ring. Round
trips, the buffer kinds, every error, blocking, and the buffers' release.
(aputv is in test_aio.py, a C reader of writev's messages in test_interop.py.)
"""

from __future__ import annotations

import array
import queue
import struct
import threading

import pytest
from _helpers import InThread, fill, later, rec_size, timed

from ringbuffer import BufferClosed, BufferFull, InvalidSize, RingBuffer
from ringbuffer.ring import lib

np = pytest.importorskip("numpy")

AT_ONCE = 1.0  # a call that must not wait returns within this (seconds)
PROMPT = 2.0  # a woken call returns within this after the event that wakes it
TIMEOUT = 0.2

HEADER = struct.Struct("<IQ")  # a message type and a payload length


def frame(kind: int, body: bytes) -> list[bytes]:
    return [HEADER.pack(kind, len(body)), body]


def unframe(msg: bytes) -> tuple[int, bytes]:
    kind, n = HEADER.unpack_from(msg)
    assert len(msg) == HEADER.size + n
    return kind, msg[HEADER.size :]


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["writev", "putv"])
def test_header_and_payload_arrive_as_one_message(big_ring, method):
    bodies = [b"x", b"hello" * 100, bytes(range(256)) * 40]
    for kind, body in enumerate(bodies):
        getattr(big_ring, method)(frame(kind, body))
    for kind, body in enumerate(bodies):
        assert unframe(big_ring.read()) == (kind, body)
    assert big_ring.try_read() is None


def test_a_writev_is_a_write_of_the_joined_buffers(ring):
    # Same bytes, same record: the positions move exactly as for write().
    pieces = [b"abc", b"", b"defgh", b"i" * 100]
    ring.writev(pieces)
    ring.write(b"".join(pieces))
    assert ring.positions() == (0, 2 * rec_size(108))
    assert ring.read_many(5) == [b"".join(pieces)] * 2


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([b"only one"], id="one"),
        pytest.param([b"a", b"b"], id="two-bytes"),
        pytest.param((b"a tuple", b" of two"), id="tuple"),
        pytest.param([b"three", b" bytes", b" objects"], id="three-bytes"),
        pytest.param([bytes([i]) * (i % 5) for i in range(200)], id="200-with-empty-ones"),
        pytest.param([b"", b"", b"x", b"", b""], id="empty-around"),
        pytest.param([bytearray(b"ba"), memoryview(b"mv"), array.array("B", b"ar")], id="kinds"),
        pytest.param([b"bytes", bytearray(b"then a bytearray")], id="two-mixed"),
        pytest.param([memoryview(b"0123456789")[::3], b"!"], id="non-contiguous-copied"),
    ],
)
def test_round_trips_byte_for_byte(ring, pieces):
    joined = b"".join(bytes(memoryview(p)) for p in pieces)
    ring.writev(pieces)
    ring.putv(pieces, timeout=1)
    ring.writev(iter(pieces))  # any iterable, used once
    ring.putv(p for p in pieces)
    assert ring.read_many(10) == [joined] * 4


def test_numpy_arrays_and_memoryviews_of_them(big_ring):
    header = np.array([7, 3], dtype=np.uint32)
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    pieces = [header, memoryview(matrix), matrix[:, 1], matrix.T, memoryview(matrix)[1:]]
    big_ring.writev(pieces)
    msg = big_ring.read()
    assert msg == b"".join(np.ascontiguousarray(p).tobytes() for p in pieces)
    assert np.frombuffer(msg, dtype=np.uint32, count=2).tolist() == [7, 3]
    assert np.frombuffer(msg, dtype=np.float64, count=12, offset=8).reshape(3, 4).tolist() == matrix.tolist()


def test_the_largest_message_in_pieces(ring):
    m = ring.max_message_size
    ring.writev([b"a" * (m - 10), b"", b"b" * 10])
    assert ring.read() == b"a" * (m - 10) + b"b" * 10


def test_messages_crossing_the_end_of_the_ring(ring):
    # Records at every 8-byte offset of the ring's last 256 bytes, the vector
    # boundaries on both sides of the end.
    pieces = [b"h" * 24, b"", b"p" * 150, b"t" * 26]
    for k in range(32):
        tail = ring.positions()[1]
        target = (tail // 4096 + 1) * 4096 - 256 + 8 * k
        while target < tail + 16:  # no record is 8 bytes long
            target += 4096
        while tail < target:  # fillers: 2056-byte records, 1032, then the rest
            gap = target - tail
            ring.write(b"f" * (2048 if gap > 2056 + 16 else 1024 if gap > 2056 else gap - 8))
            ring.read()
            tail = ring.positions()[1]
        assert tail % 4096 == 4096 - 256 + 8 * k
        ring.writev(pieces)
        assert ring.read() == b"".join(pieces)


def test_the_message_is_a_copy_of_the_buffers_at_the_call(ring):
    buf = bytearray(b"before")
    ring.writev([b"<", buf, b">"])
    buf[:] = b"after!"
    assert ring.read() == b"<before>"


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("empty", [[], (), [b""], [b"", bytearray(), memoryview(b"")], iter([])])
@pytest.mark.parametrize("method", ["writev", "putv"])
def test_an_empty_message_raises_invalid_size(ring, method, empty):
    with pytest.raises(InvalidSize) as ei:
        getattr(ring, method)(empty)
    assert isinstance(ei.value, ValueError)
    assert ei.value.code == lib.RB_ESIZE
    assert "message of 0 bytes" in str(ei.value)
    assert ring.positions() == (0, 0)


@pytest.mark.parametrize("method", ["writev", "putv"])
def test_too_large_raises_invalid_size_before_anything_is_written(ring, method):
    m = ring.max_message_size
    for pieces in ([b"a" * m, b"b"], [b"a" * 1000] * 3, [bytearray(m), memoryview(b"x")]):
        with pytest.raises(InvalidSize) as ei:
            getattr(ring, method)(pieces)
        assert f"message of {m + 1 if len(pieces[0]) == m else 3000} bytes (maximum {m})" in str(ei.value)
    assert ring.positions() == (0, 0)
    assert ring.try_read() is None


@pytest.mark.parametrize(
    "bad", ["text", 5, None, 1.5, [1, 2], object()], ids=lambda x: type(x).__name__ + repr(x)[:6]
)
@pytest.mark.parametrize("method", ["writev", "putv"])
def test_an_item_that_is_not_a_buffer_raises_type_error_and_writes_nothing(ring, method, bad):
    for pieces in ([bad], [b"good", bad], [bad, b"good"], [b"a", bytearray(b"b"), bad]):
        with pytest.raises(TypeError):
            getattr(ring, method)(pieces)
    assert ring.positions() == (0, 0)


@pytest.mark.parametrize("single", [b"abc", bytearray(b"abc"), memoryview(b"abc")], ids=type)
def test_a_single_buffer_raises_type_error_naming_write(ring, single):
    with pytest.raises(TypeError, match=r"iterable of buffers.*use write\(\)"):
        ring.writev(single)
    with pytest.raises(TypeError):
        ring.putv(single)
    assert ring.positions() == (0, 0)


@pytest.mark.parametrize("bad", [5, None, object()], ids=lambda x: type(x).__name__)
def test_a_non_iterable_raises_type_error(ring, bad):
    with pytest.raises(TypeError):
        ring.writev(bad)
    assert ring.positions() == (0, 0)


def test_writev_on_a_full_ring_raises_buffer_full_and_writes_nothing(full_ring):
    before = full_ring.positions()
    for pieces in ([b"h" * 8, b"p" * 100], [b"h" * 8, bytearray(100)], [b"a", b"b", b"c" * 100]):
        with pytest.raises(BufferFull) as ei:
            full_ring.writev(pieces)
        assert isinstance(ei.value, queue.Full)
        with pytest.raises(BufferFull):
            full_ring.putv(pieces, block=False)
    assert full_ring.positions() == before
    # What fits in the 64 bytes left goes in.
    full_ring.writev([b"h" * 8, b"p" * 48])
    assert full_ring.positions()[1] == 4096


@pytest.mark.parametrize("method", ["writev", "putv"])
def test_closed_ring_raises_buffer_closed(ring, method):
    ring.close()
    for pieces in ([b"a", b"b"], [bytearray(b"a")], [], ["not even a buffer"]):
        with pytest.raises(BufferClosed):
            getattr(ring, method)(pieces)


def test_buffers_are_released_also_when_writev_fails(full_ring):
    # An exception's traceback keeps the frames of the call alive: the
    # buffers' exports must be gone anyway, or the bytearray cannot grow.
    buf = bytearray(b"x" * 100)
    for pieces, exc in (
        ([b"h", buf], BufferFull),
        ([buf, b"h", b"i"], BufferFull),
        ([buf, b"x" * 5000], InvalidSize),
        ([buf, "not a buffer"], TypeError),
    ):
        with pytest.raises(exc) as ei:
            full_ring.writev(pieces)
        assert ei.value.__traceback__ is not None
        buf.extend(b"y")  # BufferError while an export is held
        del buf[-1]


# --- putv: blocking ---------------------------------------------------------------

# A 1000-byte message as two bytes objects (the short way into C) or not.
FULL_RING_PIECES = [[b"h" * 8, b"p" * 992], [b"h" * 8, bytearray(992)]]


@pytest.mark.usefixtures("watchdog")
@pytest.mark.parametrize("pieces", FULL_RING_PIECES, ids=["bytes", "mixed"])
def test_putv_times_out_on_a_full_ring_with_queue_full(full_ring, pieces):
    before = full_ring.positions()
    for timeout in (0, 0.05, TIMEOUT):
        elapsed, exc, _ = timed(lambda t=timeout: full_ring.putv(pieces, timeout=t))
        assert type(exc) is BufferFull and isinstance(exc, queue.Full)
        assert timeout <= elapsed < timeout + AT_ONCE
    assert full_ring.positions() == before


@pytest.mark.usefixtures("watchdog")
@pytest.mark.parametrize("pieces", FULL_RING_PIECES, ids=["bytes", "mixed"])
def test_putv_waits_for_room_freed_by_another_thread(full_ring, other, pieces):
    reader = later(TIMEOUT, other.get)
    elapsed, exc, _ = timed(lambda: full_ring.putv(pieces))
    assert exc is None
    assert reader.join(PROMPT) and reader.exc is None
    assert TIMEOUT <= elapsed < TIMEOUT + PROMPT
    assert other.drain()[-1] == b"".join(bytes(p) for p in pieces)


@pytest.mark.usefixtures("watchdog")
def test_putv_with_an_iterator_waits_with_all_of_it(full_ring, other):
    reader = later(TIMEOUT, other.get)
    full_ring.putv(iter([b"h" * 8, b"", b"p" * 992]), timeout=5)
    assert reader.join(PROMPT)
    assert other.drain()[-1] == b"h" * 8 + b"p" * 992


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
def test_putv_bad_timeout_raises_value_error_even_when_no_wait_is_needed(ring, bad):
    with pytest.raises(ValueError, match="non-negative"):
        ring.putv([b"a", b"b"], timeout=bad)
    ring.putv([b"a", b"b"], block=False, timeout=bad)  # ignored without block, as queue.Queue
    assert ring.read() == b"ab"


@pytest.mark.usefixtures("watchdog")
def test_close_wakes_a_blocked_putv(full_ring):
    blocked = InThread(full_ring.putv, [b"h" * 8, bytearray(992)])
    assert not blocked.join(TIMEOUT)
    full_ring.close()
    assert blocked.join(PROMPT)
    assert type(blocked.exc) is BufferClosed


@pytest.mark.usefixtures("watchdog")
def test_threads_writing_vectors_keep_each_message_whole(big_ring):
    # Four threads put framed messages (header + body pieces) into one ring
    # while a reader takes them: every message arrives whole, each thread's
    # in order.
    per_thread = 2000

    def producer(t: int) -> None:
        for i in range(per_thread):
            body = bytes([t]) * (1 + (i * 37) % 3000)
            big_ring.putv([HEADER.pack(t, i), body[:10], b"", body[10:]], timeout=30)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    seen = [0] * 4
    with RingBuffer.open(big_ring.path) as reader:
        for _ in range(4 * per_thread):
            msg = reader.get(timeout=30)
            t, i = HEADER.unpack_from(msg)
            assert i == seen[t]
            assert msg[HEADER.size :] == bytes([t]) * (1 + (i * 37) % 3000)
            seen[t] += 1
    for th in threads:
        th.join(30)
    assert seen == [per_thread] * 4
    assert big_ring.try_read() is None


def test_writev_of_two_bytes_and_of_other_buffers_write_the_same(tmp_path):
    # Two bytes objects take a shorter way into C than other buffers do.
    with RingBuffer(tmp_path / "a", 4096) as a, RingBuffer(tmp_path / "b", 4096) as b:
        for n in (0, 1, 7, 8, 1000):
            a.writev([b"h" * 5, b"p" * n])
            b.writev([memoryview(b"h" * 5), bytearray(b"p" * n)])
            assert a.positions() == b.positions()
            assert a.read() == b.read() == b"h" * 5 + b"p" * n
        fill(a)
        fill(b)
        with pytest.raises(BufferFull):
            a.writev([b"h", b"p" * 100])
        with pytest.raises(BufferFull):
            b.writev([b"h", bytearray(100)])
