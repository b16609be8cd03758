"""Cross-process stress of consumer groups (issue 12): 2 producer processes
and 3 durable groups of 2 member processes each share one 4 KiB lossless
ring (created without the default group), so it wraps thousands of times.
Every message carries its producer, sequence number and a CRC-32 of its
body; the parent checks that each group got every message exactly once
(the union of its two members' logs, no duplicates), intact, and that each
member saw each producer's messages in increasing order.
"""

from __future__ import annotations

import multiprocessing
import pickle
import random
import struct
import time
import zlib
from collections import Counter

import pytest
from _helpers import reap, rec_size

from ringbuffer import BufferEmpty, RingBuffer

# A hang (a wait that never ends) fails the run after 120 s with every thread's traceback.
pytestmark = pytest.mark.usefixtures("watchdog")

PRODUCERS = 2
GROUPS = ("alpha", "beta", "gamma")
MEMBERS = 2
PER_PRODUCER = 60_000
RING_SIZE = 4096  # the minimum: a handful of messages fill it
TIMEOUT = 45  # seconds for the whole run: a hang fails instead of blocking the suite
CTX = multiprocessing.get_context("fork")
HDR = struct.Struct("<BII")  # producer, seq, crc32(body)


def message(producer: int, seq: int) -> bytes:
    """Mostly small messages, one in five up to the largest (2048 bytes)."""
    rng = random.Random((producer + 1) * 1_000_003 + seq)
    size = rng.randint(1, 200) if rng.random() < 0.8 else rng.randint(200, RING_SIZE // 2 - HDR.size)
    body = rng.randbytes(size)
    return HDR.pack(producer, seq, zlib.crc32(body)) + body


def producer(path: str, p: int, start, deadline: float) -> None:
    msgs = [message(p, s) for s in range(PER_PRODUCER)]
    rng = random.Random(p)
    rb = RingBuffer.open(path)
    start.wait(60)
    i = 0
    while i < len(msgs):
        if time.time() > deadline:
            raise SystemExit(4)
        n = rng.choice((1, 1, 3, 8))
        if n == 1:
            rb.put(msgs[i], timeout=1.0)
            i += 1
        else:
            i += rb.put_many(msgs[i : i + n], timeout=1.0)
    rb.close()


def member(path: str, group: str, m: int, start, counter, total: int, deadline: float, out: str) -> None:
    """Reads in `group` until the group's shared `counter` reaches `total`;
    pickles (list of (producer, seq), errors) to `out`."""
    rb = RingBuffer.open(path, group=group)
    rng = random.Random(hash((group, m)))
    start.wait(60)
    seen: list[tuple[int, int]] = []
    errors: list[str] = []
    while counter.value < total:
        if time.time() > deadline:
            errors.append(f"{group}/{m}: timed out at {counter.value}/{total}")
            break
        try:
            if rng.random() < 0.5:
                msgs = [rb.get(timeout=0.05)]
            else:
                msgs = rb.get_many(rng.randint(2, 16), timeout=0.05)
        except BufferEmpty:
            continue
        for msg in msgs:
            p, seq, crc = HDR.unpack_from(msg)
            if zlib.crc32(msg[HDR.size :]) != crc:
                errors.append(f"{group}/{m}: checksum mismatch producer={p} seq={seq} len={len(msg)}")
            seen.append((p, seq))
        with counter.get_lock():
            counter.value += len(msgs)
    rb.close()
    with open(out, "wb") as f:
        pickle.dump((seen, errors[:100]), f)


def test_three_groups_of_two_members_each_get_every_message_once(tmp_path):
    path = str(tmp_path / "groups.ring")
    # No default group: only the three durable groups hold writers back.
    with RingBuffer(path, RING_SIZE, default_group=False) as rb:
        for g in GROUPS:
            RingBuffer.open(path, group=g).close()  # made now, at position 0
        assert sorted(d["name"] for d in rb.groups()) == sorted(GROUPS)

    total = PRODUCERS * PER_PRODUCER
    expected_bytes = sum(rec_size(len(message(p, s))) for p in range(PRODUCERS) for s in range(PER_PRODUCER))
    start = CTX.Barrier(PRODUCERS + len(GROUPS) * MEMBERS)
    deadline = time.time() + TIMEOUT
    counters = {g: CTX.Value("q", 0) for g in GROUPS}
    outs = {(g, m): str(tmp_path / f"{g}{m}.pickle") for g in GROUPS for m in range(MEMBERS)}
    procs = [
        CTX.Process(target=producer, args=(path, p, start, deadline), name=f"producer{p}")
        for p in range(PRODUCERS)
    ] + [
        CTX.Process(
            target=member,
            args=(path, g, m, start, counters[g], total, deadline, outs[g, m]),
            name=f"{g}{m}",
        )
        for g in GROUPS
        for m in range(MEMBERS)
    ]
    t0 = time.monotonic()
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(max(1.0, deadline + 10 - time.time()))
    finally:
        reap(procs, f"{TIMEOUT} s")
    print(f"{total} messages to {len(GROUPS)} groups in {time.monotonic() - t0:.1f} s")

    for g in GROUPS:
        union: list[tuple[int, int]] = []
        for m in range(MEMBERS):
            with open(outs[g, m], "rb") as f:
                seen, errors = pickle.load(f)
            assert errors == [], errors
            last: dict[int, int] = {}
            for p, seq in seen:
                assert seq > last.get(p, -1), f"{g}/{m}: producer {p} seq {seq} after {last[p]}"
                last[p] = seq
            # both members took part (the group's messages are shared)
            assert len(seen) > 0, f"{g}/{m} got nothing"
            union.extend(seen)
        counts = Counter(union)
        duplicates = [k for k, v in counts.items() if v > 1]
        assert duplicates == [], f"{g}: delivered more than once: {duplicates[:10]}"
        missing = [(p, s) for p in range(PRODUCERS) for s in range(PER_PRODUCER) if (p, s) not in counts]
        assert missing == [], f"{g}: never delivered: {missing[:10]} ({len(missing)} in all)"
        assert len(union) == total
        assert counters[g].value == total

    with RingBuffer.open(path, group=GROUPS[0]) as rb:
        head, tail = rb.positions()
        assert head == tail == expected_bytes
        assert tail > 1000 * RING_SIZE, f"wrapped only {tail // RING_SIZE} times"
        listed = {d["name"]: d for d in rb.groups()}
        assert sorted(listed) == sorted(GROUPS)
        for g in GROUPS:
            assert listed[g]["position"] == tail
            assert listed[g]["backlog_messages"] == 0
            assert listed[g]["lost"] == 0
        assert rb.try_read() is None
