"""RingBuffer.stats(): the ring's counters, exact after known traffic from
Python, across processes, handles that close and a process that is killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest
from _helpers import kill_a_reader_inside_peek

from ringbuffer import BufferClosed, BufferEmpty, BufferFull, RingBuffer

ZERO = {
    "written": 0,
    "written_bytes": 0,
    "read": 0,
    "read_bytes": 0,
    "aborted": 0,
    "full": 0,
    "empty": 0,
    "parks": 0,
    "wakes": 0,
    "recovered": 0,
    "turns_taken": 0,
}


def counts(rb: RingBuffer) -> dict:
    s = rb.stats()
    return {k: s[k] for k in ZERO}


def test_a_new_ring_counts_nothing_and_knows_when_it_was_created(ring):
    s = ring.stats()
    assert {k: s[k] for k in ZERO} == ZERO
    assert s["parked_seconds"] == 0.0
    assert abs(s["created"] - time.time()) < 60


def test_counts_are_exact_after_known_traffic(ring, other):
    ring.write(b"a" * 100)
    ring.write_many([b"b" * 10, b"c" * 20])
    ring.put(b"d", timeout=1)
    with ring.reserve(7) as view:
        view[:] = b"reserve"
    with pytest.raises(KeyError):
        with ring.reserve(9):
            raise KeyError
    ring.put_with(5, lambda view: view.__setitem__(slice(None), b"12345"))
    assert other.read() == b"a" * 100
    assert other.read_many(2) == [b"b" * 10, b"c" * 20]
    assert other.get() == b"d"
    with other.peek() as view:
        assert bytes(view) == b"reserve"
    assert other.get_with(bytes) == b"12345"
    with pytest.raises(BufferEmpty):
        other.read()
    assert other.try_read() is None
    ring.write(b"x" * 2040)
    with pytest.raises(BufferFull):
        ring.write(b"y" * 2045)
    assert counts(ring) == {
        **ZERO,
        "written": 7,
        "written_bytes": 100 + 30 + 1 + 7 + 5 + 2040,
        "read": 6,
        "read_bytes": 100 + 30 + 1 + 7 + 5,
        "aborted": 1,
        "full": 1,
        "empty": 2,
    }
    assert counts(other) == counts(ring)  # ring-wide, whichever handle asks


def test_a_get_that_waits_counts_its_sleep(ring, other):
    t0 = time.monotonic()
    with pytest.raises(BufferEmpty):
        other.get(timeout=0.05)
    waited = time.monotonic() - t0
    s = ring.stats()
    assert s["parks"] >= 1
    assert 0.02 <= s["parked_seconds"] <= waited
    assert s["empty"] >= 1  # the get's non-blocking try before it waits


def _writer(path: str, n: int) -> None:
    with RingBuffer.open(path) as rb:
        for i in range(n):
            rb.put(bytes(1 + i % 50))


def _killed_writer(path: str, n: int) -> None:
    rb = RingBuffer.open(path)
    for i in range(n):
        rb.put(bytes(1 + i % 50))
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("target", [_writer, _killed_writer], ids=["closed", "killed"])
def test_counts_of_other_processes_stay_after_they_end(big_ring, target):
    n = 3000
    procs = [mp.get_context("fork").Process(target=target, args=(big_ring.path, n)) for _ in range(3)]
    for p in procs:
        p.start()
    got = 0
    while got < 3 * n:
        got += len(big_ring.get_many(1000, timeout=30))
    for p in procs:
        p.join(30)
    s = big_ring.stats()
    per_process = sum(1 + i % 50 for i in range(n))
    assert (s["written"], s["written_bytes"]) == (3 * n, 3 * per_process)
    assert (s["read"], s["read_bytes"]) == (3 * n, 3 * per_process)
    assert s["written"] - s["read"] == 0


def test_a_reader_killed_inside_peek_counts_a_turn_taken_over(ring, ring_path):
    ring.write(b"taken over")
    ring.stall_timeout = 0.01
    kill_a_reader_inside_peek(ring_path)
    assert ring.get(timeout=5) == b"taken over"
    s = ring.stats()
    assert (s["turns_taken"], s["read"]) == (1, 1)


def test_stats_on_a_closed_ring_raises(ring):
    ring.close()
    with pytest.raises(BufferClosed):
        ring.stats()
