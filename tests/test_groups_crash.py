"""Crash safety of consumer groups (issue 12, docs/design.md "Crash
recovery"): members of a group SIGKILLed mid-read follow today's
at-least-once rule within their group and hold up no other group; a killed
ephemeral subscriber holds writers of a lossless ring back for about the
stall timeout at most, and its group vanishes; a stopped (not dead) one
holds them back for as long as it is stopped; a durable group resumes
exactly where it was after every process that used the ring died.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import signal
import struct
import time
import zlib

import pytest
from _helpers import rec_size, wait_for

from ringbuffer import BufferEmpty, BufferFull, RingBuffer

# A hang (a wait that never ends) fails the run after 120 s with every thread's traceback.
pytestmark = pytest.mark.usefixtures("watchdog")

STALL = 0.1  # the default stall timeout: a dead owner is found after about this
CTX = multiprocessing.get_context("fork")
SEQ = struct.Struct("<II")  # seq, crc32(body)


def fill(rb: RingBuffer) -> int:
    """Writes 900-byte messages until the ring is full (at most 10); returns how many."""
    n = 0
    while n < 10 and rb.try_write(message(n, 900)):
        n += 1
    return n


def message(seq: int, size: int | None = None) -> bytes:
    rng = random.Random(seq)
    body = rng.randbytes(size if size is not None else rng.randint(0, 300))
    return SEQ.pack(seq, zlib.crc32(body)) + body


def parse(msg: bytes) -> int:
    seq, crc = SEQ.unpack_from(msg)
    assert zlib.crc32(msg[SEQ.size :]) == crc, "torn or corrupt message"
    return seq


# --------------------------------------------------------------------------
# members killed mid-read


def _peeking_member(path: str, group: str, counts, inside, seed: int) -> None:
    """Consumes through peeks (single or batches), counting each message in
    `counts` inside the peek: a message counted is one this member got, so a
    kill inside a peek counts messages that the group's next member gets
    again, and none is ever consumed without being counted. `inside` is 1
    while it is inside a peek that lasts (a millisecond) for the parent to
    kill it there."""
    rb = RingBuffer.open(path, group=group, stall_timeout=STALL)
    rng = random.Random(seed)
    while True:
        try:
            if rng.random() < 0.5:
                with rb.peek(block=True, timeout=0.05) as view:
                    counts[parse(view)] += 1
                    inside.value = 1
                    time.sleep(0.001)
                    inside.value = 0
            else:
                with rb.peek_many(rng.randint(2, 8), block=True, timeout=0.05) as batch:
                    for _, view in batch:
                        counts[parse(view)] += 1
        except BufferEmpty:
            pass


def test_members_killed_mid_read_at_least_once_within_their_group(tmp_path):
    path = str(tmp_path / "ring")
    total = 6000
    cycles = 30
    rb = RingBuffer(path, 16 * 1024, stall_timeout=STALL, default_group=False)
    other = RingBuffer.open(path, group="other", stall_timeout=STALL)  # read by this process only
    RingBuffer.open(path, group="g").close()
    counts = CTX.Array("i", total, lock=False)
    rng = random.Random(5)
    written = 0
    other_got: list[int] = []
    max_turn_wait = 0.0

    def write_some(n: int) -> None:
        nonlocal written
        n = min(n, total - written)
        for _ in range(n):
            rb.put(message(written), timeout=5)
            written += 1
            # group "other" keeps up (its reads never wait for group g's turn)
            for msg in other.read_many(64):
                other_got.append(parse(msg))

    kills = kills_inside = 0
    members: list = []
    try:
        for cycle in range(cycles):
            inside = [CTX.Value("b", 0, lock=False) for _ in range(2)]
            members = [
                CTX.Process(target=_peeking_member, args=(path, "g", counts, inside[i], cycle * 10 + i))
                for i in range(2)
            ]
            for m in members:
                m.start()
            until = time.monotonic() + rng.uniform(0.01, 0.06)
            while time.monotonic() < until:
                write_some(20)
            # One member dies inside a peek (its message goes to the next
            # member), the other wherever it is.
            until = time.monotonic() + 5
            while not inside[0].value and time.monotonic() < until and written < total:
                write_some(1)
            if inside[0].value:
                os.kill(members[0].pid, signal.SIGKILL)
                kills_inside += 1
            for m in members:
                os.kill(m.pid, signal.SIGKILL)
                kills += 1
            for m in members:
                m.join(10)
                assert m.exitcode == -signal.SIGKILL
            # A dead member's read turn never holds up another group.
            t0 = time.monotonic()
            for msg in other.read_many(1000):
                other_got.append(parse(msg))
            max_turn_wait = max(max_turn_wait, time.monotonic() - t0)
    finally:
        for m in members:  # (if the loop failed)
            if m.is_alive():
                m.kill()
                m.join(10)
    # The rest, read by this process as group g's only member now.
    with RingBuffer.open(path, group="g", stall_timeout=STALL) as g:
        while True:
            while written < total and rb.try_write(message(written)):
                written += 1
            other_got.extend(parse(m) for m in other.read_many(1000))
            try:
                for msg in g.get_many(256, timeout=1):
                    counts[parse(msg)] += 1
            except BufferEmpty:
                assert written == total
                break
        assert g.positions()[0] == rb.positions()[1]
    other_got.extend(parse(m) for m in other.read_many(10_000))

    got = list(counts)
    assert min(got) >= 1, f"never delivered to group g: {[s for s in range(total) if not got[s]][:10]}"
    duplicates = sum(c - 1 for c in got)
    stats = rb.stats()
    taken = stats["turns_taken"]
    print(f"{kills} kills, {kills_inside} inside a peek, {duplicates} duplicates, {taken} turns taken")
    # Only messages inside a peek at a kill come again: at most a batch per kill.
    assert duplicates <= kills * 8, (duplicates, kills)
    # The kills inside a peek did happen there: their messages came again,
    # after the next member took the dead one's turn over.
    assert kills_inside >= cycles // 2
    assert duplicates >= kills_inside // 2 and taken >= kills_inside // 2
    assert other_got == list(range(total)), "group other: exactly once, in order"
    assert max_turn_wait < 1.0
    other.close()
    rb.close()


def _peek_and_die(path: str, group: str | None, ephemeral: bool) -> None:
    rb = RingBuffer.open(path, group=group, ephemeral=ephemeral)
    with rb.peek(block=True, timeout=10):
        os.kill(os.getpid(), signal.SIGKILL)


def test_member_killed_holding_a_peek_leaves_the_message_to_its_group(tmp_path):
    path = str(tmp_path / "ring")
    stall = 1.0  # long: a read that waited for it would show
    rb = RingBuffer(path, 4096, stall_timeout=stall)  # default group
    a = RingBuffer.open(path, group="a", stall_timeout=stall)
    rb.put_many([message(s) for s in range(3)])
    child = CTX.Process(target=_peek_and_die, args=(path, "a", False))
    child.start()
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    # the default group never waits for group a's dead member
    t0 = time.monotonic()
    assert [parse(m) for m in rb.read_many(10)] == [0, 1, 2]
    assert time.monotonic() - t0 < stall / 2
    # group a's next member takes over the dead one's turn and gets its message
    assert [parse(m) for m in a.get_many(10, timeout=5)] == [0, 1, 2]
    a.close()
    rb.close()


# --------------------------------------------------------------------------
# ephemeral subscribers killed or stopped


def _subscriber(path: str, ready, go, mode: str) -> None:
    """An ephemeral subscriber that reads nothing (mode "idle"), or, once
    `go` is set, dies holding a peek of the first message ("peek")."""
    rb = RingBuffer.open(path, ephemeral=True)
    ready.set()
    go.wait(30)
    if mode == "peek":
        with rb.peek(block=True, timeout=10):
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


@pytest.mark.parametrize("mode", ["idle", "peek"])
def test_killed_ephemeral_subscriber_never_blocks_the_writer(tmp_path, mode):
    path = str(tmp_path / "ring")
    rb = RingBuffer(path, 4096, stall_timeout=STALL, default_group=False)
    ready, go = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_subscriber, args=(path, ready, go, mode))
    child.start()
    try:
        assert ready.wait(10)
        assert [d["ephemeral"] for d in rb.groups()] == [True]
        n = fill(rb)
        assert n == 4  # 4 records of 920 bytes: the subscriber holds the rest back
        with pytest.raises(BufferFull):
            rb.write(message(n, 900))
        go.set()
        if mode == "idle":
            os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
    assert child.exitcode == -signal.SIGKILL
    # The writer waits for the dead subscriber's group about the stall timeout.
    t0 = time.monotonic()
    rb.put(message(n, 900), timeout=2.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, elapsed
    assert rb.groups() == []
    # and with no group left, writes always succeed
    for s in range(20):
        rb.write(message(n + 1 + s, 900))
    rb.close()


def _stoppable_subscriber(path: str, ready, results) -> None:
    """Reads everything as it comes until a one-byte message b"!"; reports
    the sequence numbers it got."""
    rb = RingBuffer.open(path, ephemeral=True)
    ready.set()
    got = []
    while True:
        try:
            msgs = rb.get_many(64, timeout=0.05)
        except BufferEmpty:
            continue
        for m in msgs:
            if m == b"!":
                results.put(got)
                return
            got.append(parse(m))


def test_stopped_ephemeral_subscriber_holds_writers_back(tmp_path):
    """Slow is not dead: a SIGSTOPped subscriber keeps its group, and a
    lossless ring's writers wait for it, however long; after SIGCONT it
    gets every message."""
    path = str(tmp_path / "ring")
    rb = RingBuffer(path, 4096, stall_timeout=STALL, default_group=False)
    ready = CTX.Event()
    results = CTX.Queue()
    child = CTX.Process(target=_stoppable_subscriber, args=(path, ready, results))
    child.start()
    try:
        assert ready.wait(10)
        os.kill(child.pid, signal.SIGSTOP)
        n = fill(rb)
        assert n == 4
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            rb.put(message(n, 900), timeout=1.0)  # 10 stall timeouts
        assert time.monotonic() - t0 >= 0.9
        listed = rb.groups()
        assert len(listed) == 1 and listed[0]["ephemeral"] and listed[0]["pid"] == child.pid
        if listed[0]["counted"]:  # (not if it was stopped holding its group's read turn)
            assert listed[0]["backlog_messages"] == 4
        os.kill(child.pid, signal.SIGCONT)
        for s in range(n, 200):
            rb.put(message(s, 900), timeout=5.0)
        rb.put(b"!", timeout=5.0)
        assert results.get(timeout=10) == list(range(200))
        child.join(10)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.join(10)
    wait_for(lambda: rb.groups() == [])
    rb.close()


# --------------------------------------------------------------------------
# durable groups outlive every process


def _write_and_die(path: str, count: int) -> None:
    rb = RingBuffer.open(path)
    rb.put_many([message(s) for s in range(count)])
    os.kill(os.getpid(), signal.SIGKILL)


def _read_and_die(path: str, group: str, count: int) -> None:
    rb = RingBuffer.open(path, group=group)
    for s in range(count):
        assert parse(rb.get(timeout=5)) == s
    os.kill(os.getpid(), signal.SIGKILL)


def _run_to_death(target, *args) -> None:
    proc = CTX.Process(target=target, args=args)
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL


def test_durable_group_resumes_where_it_was_after_every_process_died(tmp_path):
    path = str(tmp_path / "ring")
    with RingBuffer(path, 64 * 1024, default_group=False):
        pass
    # created before any message, by processes that die
    for g in ("audit", "idle"):
        proc = CTX.Process(target=RingBuffer.open, args=(path,), kwargs={"group": g})
        proc.start()
        proc.join(30)
        assert proc.exitcode == 0
    _run_to_death(_write_and_die, path, 100)
    _run_to_death(_read_and_die, path, "audit", 37)
    _run_to_death(_read_and_die, path, "audit", 0)  # a member that read nothing moves nothing
    # No process has the ring open now. A durable group resumes exactly at
    # its own position, whatever start says.
    expected_pos = sum(rec_size(len(message(s))) for s in range(37))
    with RingBuffer.open(path, group="audit", start="latest") as rb:
        listed = {d["name"]: d for d in rb.groups()}
        assert listed["audit"]["position"] == expected_pos
        assert listed["audit"]["backlog_messages"] == 63
        assert listed["idle"]["position"] == 0 and listed["idle"]["backlog_messages"] == 100
        assert listed["audit"]["members"] == 1 and listed["idle"]["members"] == 0
        assert [parse(m) for m in rb.read_many(1000)] == list(range(37, 100))
    with RingBuffer.open(path, group="idle", start="latest") as rb:
        assert [parse(m) for m in rb.read_many(1000)] == list(range(100))
