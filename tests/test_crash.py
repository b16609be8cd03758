"""Crash safety from Python (docs/design.md, "Crash recovery"): processes
SIGKILLed mid-write or mid-read never wedge the ring, never deliver a torn
message, and never lose a message whose write returned; a ring outlives every
process that used it. The kill points of each protocol step are tested in C
(tests/c/test_crash.c); here the same rules hold for Python processes, also
ones that inherit a RingBuffer through fork.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import struct
import time
import zlib

import pytest
from _helpers import peek_and_die

from ringbuffer import BufferEmpty, RingBuffer

STALL = 0.02  # seconds: a dead owner's leftovers are skipped after about this
BOUND = 2.0  # generous: the longest a read may take to get past them here
CTX = multiprocessing.get_context("fork")


def message(producer: int, seq: int) -> bytes:
    body = random.Random(producer * 1_000_003 + seq).randbytes(8 + (seq * 37 + producer) % 300)
    head = struct.pack("<II", producer, seq)
    return head + struct.pack("<I", zlib.crc32(head + body)) + body


def parse(msg: bytes) -> tuple[int, int]:
    producer, seq, crc = struct.unpack_from("<III", msg)
    assert zlib.crc32(msg[:8] + msg[12:]) == crc, "torn or corrupt message"
    assert msg == message(producer, seq)
    return producer, seq


def _produce(rb: RingBuffer, producer: int, committed) -> None:
    """Writes (producer, 0..) for ever, in random batches, recording after
    each write returns how many are committed."""
    rng = random.Random(producer)
    seq = 0
    while True:
        n = rng.choice((1, 1, 1, 4, 16))
        if n == 1:
            rb.put(message(producer, seq))
        else:
            rb.put_many([message(producer, seq + i) for i in range(n)])
        seq += n
        committed[producer] = seq


def _producer_fresh(path: str, producer: int, committed) -> None:
    _produce(RingBuffer.open(path, stall_timeout=STALL), producer, committed)


def _producer_inherited(rb: RingBuffer, producer: int, committed) -> None:
    _produce(rb, producer, committed)  # the parent's object, through fork


def test_killed_producers_lose_nothing_committed(tmp_path):
    path = str(tmp_path / "ring")
    rb = RingBuffer(path, 16 * 1024, stall_timeout=STALL)
    cycles = 40
    committed = CTX.Array("q", cycles, lock=False)
    received: dict[int, list[int]] = {}
    rng = random.Random(7)
    longest = 0.0

    def take(timeout: float) -> bool:
        nonlocal longest
        t0 = time.monotonic()
        try:
            msg = rb.get(timeout=timeout)
        except BufferEmpty:
            return False
        longest = max(longest, time.monotonic() - t0)
        producer, seq = parse(msg)
        received.setdefault(producer, []).append(seq)
        return True

    for p in range(cycles):
        if p % 2:
            proc = CTX.Process(target=_producer_inherited, args=(rb, p, committed))
        else:
            proc = CTX.Process(target=_producer_fresh, args=(path, p, committed))
        proc.start()
        until = time.monotonic() + rng.uniform(0.005, 0.05)
        while time.monotonic() < until:
            take(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
    while take(BOUND):
        pass
    for p in range(cycles):
        got = received.get(p, [])
        # In order, exactly once, every committed one, and at most the
        # batch in flight when it was killed beyond that.
        assert got == list(range(len(got))), f"producer {p}: out of order or duplicated"
        assert committed[p] <= len(got) <= committed[p] + 16, (p, committed[p], len(got))
    assert longest < BOUND
    info = rb.info()
    assert info["busy"] == 0 and info["bytes_used"] == 0 and info["attached"] == 1
    assert info["full_fences"] is False  # every waiter here could use membarrier
    rb.close()


def _get_many_and_die(path: str) -> None:
    rb = RingBuffer.open(path)
    rb.get_many(3)
    os.kill(os.getpid(), signal.SIGKILL)


def test_reader_killed_holding_a_peek_loses_nothing(tmp_path):
    path = str(tmp_path / "ring")
    rb = RingBuffer(path, 4096, stall_timeout=STALL)
    msgs = [message(0, s) for s in range(5)]
    rb.put_many(msgs)
    proc = CTX.Process(target=peek_and_die, args=(path,))
    proc.start()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    # The message it was looking at goes to the next reader, then the rest.
    assert [rb.get(timeout=BOUND) for _ in range(5)] == msgs
    assert rb.info()["read_turn_pid"] == 0
    # A reader killed after taking messages: those went with it, nothing else.
    rb.put_many(msgs)
    proc = CTX.Process(target=_get_many_and_die, args=(path,))
    proc.start()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    assert rb.get_many(10, timeout=BOUND) == msgs[3:]


def _write_then_die_reserving(path: str, count: int) -> None:
    rb = RingBuffer.open(path)
    rb.put_many([message(1, s) for s in range(count)])
    with rb.reserve(200) as buf:
        buf[:100] = b"\xab" * 100
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("count", [1, 100])
def test_committed_messages_outlive_every_process(tmp_path, count):
    path = str(tmp_path / "ring")
    RingBuffer(path, 64 * 1024).close()  # no handle left open here
    proc = CTX.Process(target=_write_then_die_reserving, args=(path, count))
    proc.start()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    rb = RingBuffer.open(path, stall_timeout=STALL)
    assert rb.get_many(count + 1, timeout=BOUND) == [message(1, s) for s in range(count)]
    # The half-written reservation is never delivered, and is skipped.
    with pytest.raises(BufferEmpty):
        rb.get(timeout=0.3)
    info = rb.info()
    assert info["bytes_used"] == 0 and info["busy"] == 0


def test_stall_timeout_option(tmp_path):
    path = str(tmp_path / "ring")
    rb = RingBuffer(path, 4096)
    assert rb.stall_timeout == 0.1
    rb.stall_timeout = None
    assert rb.stall_timeout is None
    rb.stall_timeout = 0
    assert rb.stall_timeout == 0.0
    for bad in (-1, float("nan"), float("inf"), -0.001):
        with pytest.raises(ValueError, match="stall_timeout"):
            rb.stall_timeout = bad
        with pytest.raises(ValueError, match="stall_timeout"):
            RingBuffer.open(path, stall_timeout=bad)
    with pytest.raises(TypeError):
        rb.stall_timeout = "1"  # type: ignore[assignment]
    other = RingBuffer.open(path, stall_timeout=2.5)
    assert other.stall_timeout == 2.5
    import pickle

    assert pickle.loads(pickle.dumps(other)).stall_timeout == 2.5
    rb.close()
    with pytest.raises(ValueError):
        rb.stall_timeout = 1
