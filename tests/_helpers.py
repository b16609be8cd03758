"""Helpers shared by the tests, importable by ``multiprocessing`` spawn
children (which unpickle worker functions by module name): this module
imports nothing heavy, in particular not pytest.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import time
import zlib

from ringbuffer import RingBuffer

# Offsets of the on-disk header (docs/format.md, csrc/internal.h).
OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_CAPACITY = 16
OFF_MAX_MESSAGE = 24
OFF_STATE = 32
OFF_FLAGS = 36
OFF_TAIL = 128
OFF_HEAD = 256
HEADER_SIZE = 4096
MIN_CAPACITY = 4096
MAGIC = b"RINGBUF\0"
STATE_READY = 0x59444552  # "REDY"


def rec_size(n: int) -> int:
    """Bytes a message of n bytes occupies in the ring: 8 + n, rounded up to 8."""
    return (8 + n + 7) & ~7


def record_word(length: int, flags: int = 0, writer: int = 1) -> int:
    """A record header word: bits 0-31 length, 32-39 flags, 40-63 writer pid."""
    return length | (flags << 32) | (writer << 40)


def poke(path, offset: int, data: bytes) -> None:
    """Overwrites bytes of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def poke_u32(path, offset: int, value: int) -> None:
    poke(path, offset, struct.pack("<I", value))


def poke_u64(path, offset: int, value: int) -> None:
    poke(path, offset, struct.pack("<Q", value))


def peek_u64(path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<Q", f.read(8))[0]


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def payload(tag: int, seq: int, size: int) -> bytes:
    """Deterministic message contents for (tag, seq) of the given size."""
    return random.Random(tag * 1_000_003 + seq).randbytes(size)


# --------------------------------------------------------------------------
# multiprocessing children (test_api.py)


def child_write(rb: RingBuffer, count: int) -> None:
    """Receives a pickled RingBuffer (reopened by path) and writes count messages."""
    with rb:
        for i in range(count):
            msg = payload(7, i, 1 + (i * 37) % 500)
            while not rb.try_write(msg):
                time.sleep(0.001)


def child_read_verify(rb: RingBuffer, count: int) -> None:
    """Reads count messages written by the parent; exits 0 iff all are as expected."""
    ok = True
    with rb:
        deadline = time.monotonic() + 60
        for i in range(count):
            msg = rb.try_read()
            while msg is None and time.monotonic() < deadline:
                time.sleep(0.001)
                msg = rb.try_read()
            if msg != payload(8, i, 1 + (i * 53) % 700):
                ok = False
                break
        if rb.try_read() is not None:
            ok = False
    sys.exit(0 if ok else 3)


# --------------------------------------------------------------------------
# cross-process stress (test_stress.py)
#
# A data message: u8 producer, u32 seq, u32 crc32(body), then body, whose
# length and bytes derive from a RNG seeded by (producer, seq): 9..2000 bytes.
# A filler message: 1..8 bytes, all equal to 0xF0 | producer (the first byte
# of a data message is the producer id, 0 or 1, so the two never collide);
# fillers cover the tiny sizes a data message cannot have and are counted.

STRESS_HDR = struct.Struct("<BII")


def stress_message(producer: int, seq: int) -> bytes:
    rng = random.Random((producer + 1) * 7_919_000_003 + seq)
    body = rng.randbytes(rng.randint(0, 2000 - STRESS_HDR.size))
    return STRESS_HDR.pack(producer, seq, zlib.crc32(body)) + body


def stress_filler(producer: int, seq: int) -> bytes:
    return bytes([0xF0 | producer]) * (1 + seq % 8)


def stress_plan(producer: int, count: int, fillers_every: int) -> list[bytes]:
    msgs = []
    for seq in range(count):
        msgs.append(stress_message(producer, seq))
        if fillers_every and seq % fillers_every == 0:
            msgs.append(stress_filler(producer, seq))
    return msgs


def stress_producer(
    path: str, producer: int, count: int, fillers_every: int, batch: int, deadline: float, start
) -> None:
    msgs = stress_plan(producer, count, fillers_every)
    rb = RingBuffer.open(path)
    start.wait(60)
    i = 0
    spins = 0
    while i < len(msgs):
        if time.time() > deadline:
            sys.exit(4)
        if batch > 1:
            n = rb.write_many(msgs[i : i + batch])
        else:
            n = 1 if rb.try_write(msgs[i]) else 0
        if n:
            i += n
            spins = 0
        else:
            spins += 1
            time.sleep(0 if spins < 50 else 0.0005)
    rb.close()


def stress_consumer(
    path: str, consumer: int, total, expected: int, batch: int, deadline: float, start, out: str
) -> None:
    """Reads until `total` (a shared counter) reaches `expected`; writes what it
    saw to `out`: (list of (producer, seq), filler counts, error strings)."""
    import pickle

    rb = RingBuffer.open(path)
    start.wait(60)
    seen: list[tuple[int, int]] = []
    fillers = {0: 0, 1: 0}
    errors: list[str] = []
    spins = 0
    while True:
        if batch > 1:
            msgs = rb.read_many(batch)
        else:
            m = rb.try_read()
            msgs = [] if m is None else [m]
        if msgs:
            spins = 0
            for m in msgs:
                if len(m) <= 8:
                    p = m[0] & 0x0F
                    if m[0] & 0xF0 != 0xF0 or p not in fillers or m != bytes([m[0]]) * len(m):
                        errors.append(f"bad filler {m!r}")
                    else:
                        fillers[p] += 1
                    continue
                producer, seq, crc = STRESS_HDR.unpack_from(m)
                body = m[STRESS_HDR.size :]
                if zlib.crc32(body) != crc:
                    errors.append(f"checksum mismatch producer={producer} seq={seq} len={len(m)}")
                elif m != stress_message(producer, seq):
                    errors.append(f"content mismatch producer={producer} seq={seq} len={len(m)}")
                seen.append((producer, seq))
            with total.get_lock():
                total.value += len(msgs)
        else:
            if total.value >= expected:
                break
            if time.time() > deadline:
                errors.append(f"consumer {consumer} timed out at total={total.value}/{expected}")
                break
            spins += 1
            time.sleep(0 if spins < 50 else 0.0005)
    rb.close()
    with open(out, "wb") as f:
        pickle.dump(
            (seen, fillers, errors[:100] + ([f"... {len(errors)} errors"] if len(errors) > 100 else [])), f
        )
