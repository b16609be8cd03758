"""Overwrite rings (issue 12): writers never wait; a group that was overrun
learns it from MessagesLost, whose count is exactly what it missed, and no
read ever returns a torn message.

The tearing run: one process writes 64 KiB messages (a sequence number, a
blake2b digest of the rest, a payload different at every place in the
ring) as fast as it can into a 1 MiB overwrite ring, while two reader
processes (a durable group and an ephemeral one) copy them out with
``get`` and ``read_into``. Every message a reader gets must match its
digest, and every MessagesLost count must equal the gap between the
sequence numbers before and after it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
import struct
import time

import pytest
from _helpers import InThread, rec_size

from ringbuffer import BufferEmpty, InvalidArgument, MessagesLost, RingBuffer

# A hang (a wait that never ends) fails the run after 120 s with every thread's traceback.
pytestmark = pytest.mark.usefixtures("watchdog")

CTX = multiprocessing.get_context("fork")
HDR = struct.Struct("<Q16s")  # seq, blake2b-128 of everything after the header
MSG_SIZE = 64 * 1024
RING_SIZE = 1 << 20
STOP = b"stop"
RUN_SECONDS = 3.0


def make(seq: int, pool: list[bytes]) -> bytes:
    body = struct.pack("<Q", seq * 0x9E3779B97F4A7C15 % 2**64) + pool[seq % len(pool)]
    return HDR.pack(seq, hashlib.blake2b(body, digest_size=16).digest()) + body


def check(msg, errors: list[str]) -> int:
    seq, digest = HDR.unpack_from(msg)
    if len(msg) != MSG_SIZE or hashlib.blake2b(msg[HDR.size :], digest_size=16).digest() != digest:
        errors.append(f"torn or corrupt message: seq {seq}, {len(msg)} bytes")
    return seq


def writer(path: str, start, out) -> None:
    import os

    pool = [os.urandom(MSG_SIZE - HDR.size - 8) for _ in range(37)]  # 37: not a divisor of the ring's slots
    rb = RingBuffer.open(path)
    start.wait(30)
    seq = 0
    until = time.monotonic() + RUN_SECONDS
    while time.monotonic() < until:
        rb.write(make(seq, pool))  # never BufferFull in an overwrite ring
        seq += 1
    rb.write(STOP)
    out.put(seq)
    rb.close()


def reader(path: str, group: str | None, start, out: str) -> None:
    rb = RingBuffer.open(path, group=group, ephemeral=group is None)
    buf = bytearray(MSG_SIZE)
    start.wait(30)
    errors: list[str] = []
    events: list[tuple[int, int, int]] = []  # (seq before, count, seq after)
    last = -1
    pending = None  # the count of a MessagesLost not followed by a message yet
    received = lost = calls = 0
    deadline = time.monotonic() + RUN_SECONDS + 30
    while True:
        calls += 1
        if len(errors) > 20 or time.monotonic() > deadline:
            errors.append(f"gave up after {received} messages")
            break
        try:
            if calls % 2:
                msg = rb.get(timeout=5)
            else:
                msg = memoryview(buf)[: rb.read_into(buf, block=True, timeout=5)]
        except MessagesLost as e:
            # (two in a row: overrun again before the next read)
            if e.count <= 0:
                errors.append(f"MessagesLost({e.count})")
            pending = (pending or 0) + e.count
            lost += e.count
            continue
        except BufferEmpty:
            errors.append(f"nothing for 5 s after seq {last}")
            break
        if bytes(msg) == STOP:
            break
        seq = check(msg, errors)
        gap = seq - last - 1
        if gap != (pending or 0):
            errors.append(f"seq {seq} after {last}: gap {gap}, MessagesLost said {pending}")
        if pending is not None:
            events.append((last, pending, seq))
        pending = None
        last = seq
        received += 1
        if calls % 97 == 0:
            time.sleep(0.002)  # fall behind now and then, whatever the scheduler does
    rb.close()
    with open(out, "wb") as f:
        pickle.dump((received, lost, last, pending or 0, events, errors[:50]), f)


def test_overwriting_writer_never_tears_what_readers_copy(tmp_path):
    path = str(tmp_path / "ow.ring")
    rb = RingBuffer(path, RING_SIZE, overwrite=True)  # its default group is never read
    RingBuffer.open(path, group="durable").close()
    start = CTX.Barrier(3)
    result = CTX.Queue()
    outs = {g: str(tmp_path / f"{g}.pickle") for g in ("durable", "ephemeral")}
    procs = [
        CTX.Process(target=writer, args=(path, start, result), name="writer"),
        CTX.Process(target=reader, args=(path, "durable", start, outs["durable"]), name="durable"),
        CTX.Process(target=reader, args=(path, None, start, outs["ephemeral"]), name="ephemeral"),
    ]
    for p in procs:
        p.start()
    written = result.get(timeout=60)
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0], [(p.name, p.exitcode) for p in procs]
    for g, out in outs.items():
        with open(out, "rb") as f:
            received, lost, last, lost_at_end, events, errors = pickle.load(f)
        print(f"{g}: {written} written, {received} received, {lost} lost in {len(events)} events")
        assert errors == [], f"{g}: {errors}"
        # the last messages before the stop message were received, or reported lost
        assert last + lost_at_end == written - 1, g
        # made before the first message: every one was received or reported lost
        assert received + lost == written, g
        assert received > 0
    # Not asserted (it depends on the scheduler): that the readers were overrun.
    # The default group read nothing: it lost all but what is still in the ring.
    listed = {(d["kind"], d["name"]): d for d in rb.groups()}
    default = listed["default", None]
    assert default["lost"] + default["backlog_messages"] == written + 1  # and the stop message
    assert default["backlog_messages"] <= RING_SIZE // rec_size(MSG_SIZE) + 1
    assert listed["durable", "durable"]["backlog_messages"] == 0
    rb.close()


def test_lost_count_is_exact(tmp_path):
    """The single-process version: which messages are reclaimed is exactly
    known, so is every count."""
    path = str(tmp_path / "ow.ring")
    rb = RingBuffer(path, 4096, overwrite=True, default_group=False)
    assert rb.overwrite is True
    g = RingBuffer.open(path, group="g")
    e = RingBuffer.open(path, ephemeral=True)
    msgs = [bytes([i]) * 1000 for i in range(4)]  # records of 1008 bytes: 4 fill the ring
    for m in msgs:
        rb.write(m)
    assert g.read() == msgs[0]  # g has read 1, e none
    rb.write(b"\x04" * 1000)  # reclaims message 0 (read by g): e loses 1
    rb.write(b"\x05" * 1000)  # reclaims message 1: both lose it
    with pytest.raises(MessagesLost) as info:
        e.read()
    assert info.value.count == 2
    with pytest.raises(MessagesLost) as info:
        g.try_read()
    assert info.value.count == 1
    # then the oldest message still in the ring
    assert g.read() == msgs[2]
    assert e.read_many(2) == [msgs[2], msgs[3]]
    lost = {(d["kind"], d["name"]): d["lost"] for d in rb.groups()}
    assert lost == {("durable", "g"): 1, ("ephemeral", None): 2}
    # Small messages, many at once: one large record reclaims all of them.
    for i in range(30):
        rb.write(bytes([i]) * 24)  # records of 32 bytes
    assert e.read_many(100) == [b"\x04" * 1000, b"\x05" * 1000] + [bytes([i]) * 24 for i in range(30)]
    # Now: freed up to message 3 (the first small write freed message 2,
    # read by both), g at message 3, e read everything.
    rb.write(b"L" * 2040)  # 2048 bytes: reclaims 3 and 4, unread by g
    rb.write(b"M" * 2032)  # 2040 bytes: reclaims 5 and the 30 small ones (not L): g was overrun twice
    with pytest.raises(MessagesLost) as info:
        g.get_many(100, timeout=1)
    assert info.value.count == 2 + 1 + 30  # all it missed since its last read, at once
    assert g.read_many(100) == [b"L" * 2040, b"M" * 2032]
    assert e.read_many(100) == [b"L" * 2040, b"M" * 2032]  # e had read all that was reclaimed
    lost = {(d["kind"], d["name"]): d["lost"] for d in rb.groups()}
    assert lost == {("durable", "g"): 34, ("ephemeral", None): 2}
    # peek is refused: a writer could reclaim the record under the view
    rb.write(b"x")
    with pytest.raises(InvalidArgument):
        with g.peek():
            pass
    assert g.read() == b"x"
    g.close()
    e.close()
    rb.close()


def test_waiting_reader_of_an_overwrite_ring_times_out_and_sleeps(tmp_path):
    """A blocking read of an overwrite ring waits as any other: it raises at
    its timeout, sleeps meanwhile, and wakes for a message."""
    path = str(tmp_path / "ow.ring")
    with RingBuffer(path, 4096, overwrite=True) as rb:

        def get_empty():
            t0 = time.thread_time()
            try:
                rb.get(timeout=0.2)
            except BufferEmpty:
                return time.thread_time() - t0
            return None

        call = InThread(get_empty)
        if not call.join(3.0):
            rb.close()  # it returns now
            call.join(10.0)
            raise AssertionError("get(timeout=0.2) of an empty overwrite ring has not returned after 3 s")
        assert call.exc is None and call.result is not None
        assert call.done_at - call.started_at >= 0.19
        assert call.result < 0.06, f"{call.result:.3f} s of CPU in a 0.2 s wait"
        call = InThread(rb.get, timeout=5)
        time.sleep(0.05)
        rb.write(b"late")
        assert call.join(6.0) and call.result == b"late"
