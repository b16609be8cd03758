"""Helpers shared by the tests, importable by ``multiprocessing`` spawn
children (which unpickle worker functions by module name): this module
imports nothing heavy, in particular not pytest.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from queue import Empty as queue_Empty
from queue import Full as queue_Full

from ringbuffer import RingBuffer

# Offsets of the on-disk header (docs/format.md, csrc/internal.h).
OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_CAPACITY = 16
OFF_MAX_MESSAGE = 24
OFF_STATE = 32
OFF_FLAGS = 36
OFF_CREATED = 40  # creation time, ns since the epoch
OFF_SLOT_COUNT = 48
OFF_SLOT_SIZE = 52
OFF_FILE_ID = 56  # 16 random bytes, written at creation
FILE_ID_LEN = 16
OFF_TAIL = 128
OFF_HEAD = 256  # the reclaimed position: bytes below it are free for writers
OFF_RECLAIM_TURN = 264  # the reclaim lock
OFF_TURN_SEQ = 268  # futex word of consumers waiting for a group's read turn
OFF_TURN_WAITERS = 272
OFF_DATA_SEQ = 384  # futex word of consumers waiting for data
OFF_DATA_WAITERS = 388  # how many are counted there
OFF_SPACE_SEQ = 512  # futex word of producers waiting for space
OFF_SPACE_WAITERS = 516
OFF_SLOTS_USED = 640
OFF_GROUPS_USED = 644
# The slot table follows the header page: one slot per open handle.
OFF_SLOTS = 4096
SLOT_COUNT = 512
SLOT_SIZE = 512
SLOT_OFF_GEN = 0
SLOT_OFF_PID = 4
SLOT_OFF_COUNT_OWN = 128  # a handle's counters (docs/format.md, "Counters")
SLOT_OFF_COUNT_SHARED = 256
SLOT_OFF_GROUP = 20  # the owner's group: entry index + 1, 0 none
SLOT_OFF_GROUP_GEN = 24
COUNTERS = (
    "written",
    "written_bytes",
    "read",
    "read_bytes",
    "aborted",
    "full",
    "empty",
    "parks",
    "parked_ns",
    "wakes",
    "recovered",
    "turns_taken",
)
# The group table follows the slot table: one entry per consumer group;
# entry 0 is the default group's (docs/format.md, "Consumer groups").
OFF_GROUPS = OFF_SLOTS + SLOT_COUNT * SLOT_SIZE
GROUP_COUNT = 64
GROUP_SIZE = 256
GROUP_OFF_HEAD = 0  # the group's position: the first byte it has not read
GROUP_OFF_TURN = 8  # the group's read turn
GROUP_OFF_GEN = 12  # odd while the group exists
GROUP_OFF_LOST_PENDING = 16
GROUP_OFF_LOST = 24
GROUP_OFF_OWNER = 32
GROUP_OFF_KIND = 36  # GROUP_KIND_*
GROUP_OFF_CREATED = 40
GROUP_OFF_NAME = 128
GROUP_KIND_DEFAULT = 1
GROUP_KIND_DURABLE = 2
GROUP_KIND_EPHEMERAL = 3
# The default group's head and read turn (entry 0).
OFF_GROUP_HEAD = OFF_GROUPS + GROUP_OFF_HEAD
OFF_READ_TURN = OFF_GROUPS + GROUP_OFF_TURN
# Bytes before the data region: the header page, the slot table and the group table.
HEADER_SIZE = OFF_GROUPS + GROUP_COUNT * GROUP_SIZE
# rb_create flags stored in the header (offset 36).
FLAG_OVERWRITE = 0x2
FLAG_NO_DEFAULT_GROUP = 0x4
FORMAT_VERSION = 4
MIN_CAPACITY = 4096
MAGIC = b"RINGBUF\0"
STATE_READY = 0x59444552  # "REDY"


def rec_size(n: int) -> int:
    """Bytes a message of n bytes occupies in the ring: 8 + n, rounded up to 8."""
    return (8 + n + 7) & ~7


def record_word(length: int, flags: int = 0, writer: int = 1) -> int:
    """A record header word: bits 0-31 length, 32-39 flags, 40-63 writer id."""
    return length | (flags << 32) | (writer << 40)


def slot_offset(slot: int, field: int = 0) -> int:
    """Offset in the file of a slot's field (SLOT_OFF_*)."""
    return OFF_SLOTS + slot * SLOT_SIZE + field


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


def peek_u32(path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<I", f.read(4))[0]


def group_offset(index: int, field: int = 0) -> int:
    """Offset in the file of a group table entry's field (GROUP_OFF_*)."""
    return OFF_GROUPS + index * GROUP_SIZE + field


def slot_id(path, slot: int) -> int:
    """The id (slot | generation << 9) that the handle owning (or that last
    owned) `slot` of the ring file writes into record words and the read
    turn; the first handle opened on a fresh ring has slot 0, generation 1."""
    return slot | peek_u32(path, slot_offset(slot, SLOT_OFF_GEN)) << 9


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


# --------------------------------------------------------------------------
# blocking calls across processes (test_blocking.py)


def child_get_blocking(path: str, ready, results, timeout: float) -> None:
    """Opens the ring, signals `ready`, then blocks in get(); reports
    ("ok", message, time.monotonic() at return) or ("error", repr) on `results`."""
    rb = RingBuffer.open(path)
    ready.set()
    try:
        msg = rb.get(timeout=timeout)
        results.put(("ok", msg, time.monotonic()))
    except Exception as e:  # reported to the parent
        results.put(("error", repr(e), time.monotonic()))
    rb.close()


def child_put_blocking(path: str, msg: bytes, ready, results, timeout: float) -> None:
    """Opens a (full) ring, signals `ready`, then blocks in put(msg); reports
    ("ok", None, time.monotonic() at return) or ("error", repr) on `results`."""
    rb = RingBuffer.open(path)
    ready.set()
    try:
        rb.put(msg, timeout=timeout)
        results.put(("ok", None, time.monotonic()))
    except Exception as e:  # reported to the parent
        results.put(("error", repr(e), time.monotonic()))
    rb.close()


# --------------------------------------------------------------------------
# cross-process blocking stress (test_blocking.py)
#
# Messages are 1..1500 bytes. One of 9 bytes or more is a data message:
# STRESS_HDR (u8 producer, u32 seq, u32 crc32(body)) then a body derived from
# (producer, seq). A shorter one is a filler: bytes([0xF0 | producer]) * size,
# counted per producer. BLOCK_STOP (one byte 0xEE, which neither kind can be)
# is written by the parent after all producers finished: a consumer stops at it.

BLOCK_STOP = b"\xee"


def block_stress_message(producer: int, seq: int, size: int) -> bytes:
    body = random.Random((producer + 1) * 1_000_003 + seq).randbytes(size - STRESS_HDR.size)
    return STRESS_HDR.pack(producer, seq, zlib.crc32(body)) + body


def block_stress_plan(producer: int, count: int) -> list[bytes]:
    rng = random.Random(0xB10C + producer)
    msgs = []
    for seq in range(count):
        size = 1 if seq == 0 else 1500 if seq == 1 else rng.randint(1, 1500)
        if size < STRESS_HDR.size:
            msgs.append(bytes([0xF0 | producer]) * size)
        else:
            msgs.append(block_stress_message(producer, seq, size))
    return msgs


def block_stress_producer(
    path: str, producer: int, count: int, batched: bool, start, timeout: float, out: str
) -> None:
    """Writes block_stress_plan(producer, count) with put() or, if `batched`,
    put_many() in chunks of 1..24 messages; exit code 5 if a call timed out.
    Pickles to `out` how many calls found the ring full just before (they had to wait)."""
    import pickle

    msgs = block_stress_plan(producer, count)
    rng = random.Random(producer)
    rb = RingBuffer.open(path)
    start.wait(60)
    i = waits = 0
    while i < len(msgs):
        head, tail = rb.positions()
        waits += tail - head + rec_size(len(msgs[i])) > rb.capacity
        if batched:
            chunk = msgs[i : i + rng.randint(1, 24)]
            if rb.put_many(chunk, timeout=timeout) != len(chunk):
                sys.exit(5)
            i += len(chunk)
        else:
            try:
                rb.put(msgs[i], timeout=timeout)
            except queue_Full:
                sys.exit(5)
            i += 1
    rb.close()
    with open(out, "wb") as f:
        pickle.dump(waits, f)


def block_stress_consumer(path: str, consumer: int, batched: bool, start, out: str, timeout: float) -> None:
    """Reads with get() or, if `batched`, get_many(1..16) until BLOCK_STOP;
    pickles (seen (producer, seq) list, filler counts, stops seen, errors, how
    many calls found the ring empty just before) to `out`."""
    import pickle

    rng = random.Random(100 + consumer)
    rb = RingBuffer.open(path)
    start.wait(60)
    seen: list[tuple[int, int]] = []
    fillers = {0: 0, 1: 0}
    stops = 0
    errors: list[str] = []
    waits = 0
    while not stops:
        head, tail = rb.positions()
        waits += head == tail
        try:
            msgs = rb.get_many(rng.randint(1, 16), timeout=timeout) if batched else [rb.get(timeout=timeout)]
        except queue_Empty:
            errors.append(f"consumer {consumer}: nothing for {timeout} s after {len(seen)} messages")
            break
        for m in msgs:
            if m == BLOCK_STOP:
                stops += 1
            elif stops:
                errors.append(f"a message after the stop message: {m[:16]!r}")
            elif len(m) < STRESS_HDR.size:
                p = m[0] & 0x0F
                if m[0] & 0xF0 != 0xF0 or p not in fillers or m != bytes([m[0]]) * len(m):
                    errors.append(f"bad filler {m!r}")
                else:
                    fillers[p] += 1
            else:
                producer, seq, crc = STRESS_HDR.unpack_from(m)
                body = m[STRESS_HDR.size :]
                if zlib.crc32(body) != crc:
                    errors.append(f"checksum mismatch producer={producer} seq={seq} len={len(m)}")
                elif m != block_stress_message(producer, seq, len(m)):
                    errors.append(f"content mismatch producer={producer} seq={seq} len={len(m)}")
                seen.append((producer, seq))
    rb.close()
    with open(out, "wb") as f:
        pickle.dump((seen, fillers, stops, errors[:100], waits), f)


# --------------------------------------------------------------------------
# threads (test_blocking.py, test_zerocopy.py)


class InThread:
    """Runs fn(*args, **kwargs) in a daemon thread at once; afterwards
    ``result``/``exc`` hold what it returned or raised and ``done_at`` the
    time.monotonic() at which it ended."""

    def __init__(self, fn, *args, **kwargs) -> None:
        self.result = None
        self.exc: BaseException | None = None
        self.done_at: float | None = None
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as e:
            self.exc = e
        finally:
            self.done_at = time.monotonic()

    def join(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds; True if the thread has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def later(delay: float, fn, *args) -> InThread:
    """Calls fn(*args) in a thread after `delay` seconds."""

    def run():
        time.sleep(delay)
        return fn(*args)

    return InThread(run)


def timed(call):
    """(elapsed seconds, exception or None, result) of call().

    The exception's traceback is dropped: a frame of the binding in it can
    hold a cffi export of the caller's memoryview, and once such a frame is
    part of a reference cycle the garbage collector crashes CPython < 3.12.7
    (see test_read_into_memoryview_error_does_not_crash_the_gc).
    """
    t0 = time.monotonic()
    try:
        result = call()
    except Exception as e:  # handed to the test
        e.__traceback__ = None
        return time.monotonic() - t0, e, None
    return time.monotonic() - t0, None, result


def fill(rb, size: int = 1000) -> int:
    """Writes messages of `size` bytes until the ring is full; returns how many."""
    n = 0
    while rb.try_write(bytes([n % 256]) * size):
        n += 1
    return n


def sigint_default() -> None:
    """preexec_fn for children that must see Ctrl-C: a shell runs background
    jobs (and so maybe this test run) with SIGINT ignored, a disposition
    children inherit, and then Python installs no KeyboardInterrupt handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def reap(procs, hung_after: str) -> None:
    """Asserts every process has ended (hung_after names the time limit),
    kills any still running, and asserts each exited with status 0."""
    try:
        hung = [p.name for p in procs if p.is_alive()]
        assert not hung, f"still running after {hung_after}: {hung}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs), [(p.name, p.exitcode) for p in procs]


# --------------------------------------------------------------------------
# the command line, run as a subprocess (test_cli.py, test_top.py)

CLI = [sys.executable, "-m", "ringbuffer"]


def run(*args, input: bytes | None = None, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """Runs the command line to completion, capturing its output."""
    return subprocess.run(
        [*CLI, *map(str, args)], input=input, capture_output=True, timeout=timeout, check=False, **kw
    )


def start(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], preexec_fn=sigint_default, **kw)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


def assert_error(proc: subprocess.CompletedProcess, status: int = 1, match: str = "") -> str:
    """A user error: the exit status, no traceback, and (status 1) exactly one
    line starting with ``ringbuffer: error:``; returns standard error."""
    err = proc.stderr.decode()
    assert proc.returncode == status, (proc.returncode, err)
    assert "Traceback" not in err
    if status == 1:
        assert err.startswith("ringbuffer: error: "), err
        assert err.count("\n") == 1 and err.endswith("\n"), err
    else:
        assert "error:" in err
    assert re.search(match, err), err
    return err


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def peek_and_die(path: str) -> None:
    """A child's body: opens the ring, peeks, and is killed (SIGKILL)
    holding the read turn."""
    rb = RingBuffer.open(path)
    with rb.peek():
        os.kill(os.getpid(), signal.SIGKILL)


def kill_a_reader_inside_peek(path):  # -> multiprocessing.Process
    """Runs peek_and_die in a forked child and waits for it; returns the
    (dead) child."""
    child = mp.get_context("fork").Process(target=peek_and_die, args=(str(path),))
    child.start()
    child.join(30)
    return child
