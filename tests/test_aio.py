"""asyncio and event loops (issue 13): the coroutines of RingBuffer and Queue
(aget, aput, aputv, aget_many, aput_many, async for), fileno() with select,
selectors and multiprocessing.connection.wait, on the default asyncio loop
and on uvloop, with writers in other handles, threads, processes and C."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing.connection
import os
import queue
import random
import resource
import select
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import uvloop  # the dev extra installs it (Linux)
from _helpers import OFF_DATA_WAITERS, fill, later, peek_u32

from ringbuffer import BufferClosed, BufferEmpty, BufferFull, InvalidSize, Queue, RingBuffer

# Generous bounds: a loaded 2-core machine may be slow, never this slow.
WAIT = 30.0


def _run_uvloop(coro):
    if hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # novermin (checked above)
            return runner.run(coro)
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Runs a coroutine to its end on a fresh event loop of the kind named
    by the parameter (the default asyncio loop, or uvloop)."""
    if request.param == "uvloop":
        return _run_uvloop
    return asyncio.run


@pytest.fixture
def q(tmp_path):
    """A fresh ringbuffer.Queue of 4096 bytes at a named path, closed afterwards."""
    qu = Queue(maxsize_bytes=4096, path=tmp_path / "q.ring")
    yield qu
    qu.close()


@pytest.fixture
def q_other(q):
    """A second handle on `q`'s ring."""
    qu = Queue.open(q.path)
    yield qu
    qu.close()


def ready(obj, timeout: float) -> bool:
    """True if obj's fileno() polls readable within `timeout` seconds."""
    r, _, _ = select.select([obj], [], [], timeout)
    return bool(r)


def wait_until(cond, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.005)


async def bounded(aw, timeout: float = WAIT):
    """Awaits aw, failing the test (not hanging) if it takes longer than timeout."""
    return await asyncio.wait_for(aw, timeout)


# --------------------------------------------------------------------------
# aget, aget_many


def test_aget_returns_a_waiting_message(run, ring):
    ring.write(b"one")
    ring.write(b"two")
    assert run(ring.aget()) == b"one"
    assert run(ring.aget(timeout=0)) == b"two"
    assert ring.try_read() is None


def test_aget_waits_until_another_handle_writes_from_a_task(run, ring, other):
    async def main():
        asyncio.get_running_loop().call_later(0.1, other.write, b"late")
        return await bounded(ring.aget())

    assert run(main()) == b"late"


def test_aget_with_a_timeout_is_woken_by_a_write_from_another_thread(run, ring, other):
    writer = later(0.2, other.write, b"from a thread")
    assert run(ring.aget(timeout=WAIT)) == b"from a thread"
    assert writer.join(WAIT) and writer.exc is None


def test_aget_timeout_raises_buffer_empty(run, ring):
    for timeout in (0, 0.2):
        with pytest.raises(BufferEmpty) as e:
            run(ring.aget(timeout=timeout))
        assert isinstance(e.value, queue.Empty)


@pytest.mark.parametrize("bad", [-1, math.nan])
def test_bad_timeouts_raise_value_error_even_when_no_wait_is_needed(run, ring, other, bad):
    ring.write(b"waiting")
    with pytest.raises(ValueError):
        run(ring.aget(timeout=bad))
    with pytest.raises(ValueError):
        run(ring.aget_many(5, timeout=bad))
    with pytest.raises(ValueError):
        run(ring.aget_many(0, timeout=bad))
    with pytest.raises(ValueError):
        run(ring.aput(b"room", timeout=bad))
    with pytest.raises(ValueError):
        run(ring.aput_many([b"room"], timeout=bad))
    with pytest.raises(ValueError):
        run(ring.aput_many([], timeout=bad))
    assert other.drain() == [b"waiting"]  # nothing read, nothing written


def test_aget_many_takes_up_to_max_of_what_is_waiting(run, ring):
    ring.write_many([b"a", b"b", b"c"])
    assert run(ring.aget_many(2)) == [b"a", b"b"]
    assert run(ring.aget_many(10, timeout=0)) == [b"c"]


def test_aget_many_of_zero_returns_nothing_at_once_and_consumes_nothing(run, ring):
    assert run(bounded(ring.aget_many(0), 10)) == []
    ring.write(b"kept")
    assert run(bounded(ring.aget_many(0, timeout=5), 10)) == []
    assert ring.drain() == [b"kept"]


def test_aget_many_waits_for_the_first_message_from_another_thread(run, ring, other):
    writer = later(0.2, other.write_many, [b"x", b"y", b"z"])
    got = run(ring.aget_many(10, timeout=WAIT))
    assert writer.join(WAIT)
    assert got and [b"x", b"y", b"z"][: len(got)] == got
    assert got + ring.drain() == [b"x", b"y", b"z"]


def test_aget_many_timeout_raises_buffer_empty(run, ring):
    with pytest.raises(BufferEmpty) as e:
        run(ring.aget_many(3, timeout=0.2))
    assert isinstance(e.value, queue.Empty)


# --------------------------------------------------------------------------
# aput, aput_many


def test_aput_writes_at_once_when_there_is_room(run, ring, other):
    run(ring.aput(b"m1"))
    run(ring.aput(bytearray(b"m2"), timeout=0))
    assert other.drain() == [b"m1", b"m2"]


def test_aput_waits_for_room_freed_by_another_thread(run, full_ring, other):
    reader = later(0.2, other.read)
    run(full_ring.aput(b"n" * 1000, timeout=WAIT))
    assert reader.join(WAIT) and reader.exc is None
    assert [len(m) for m in other.drain()] == [1000] * 4


def test_aput_waits_for_room_freed_by_another_task(run, full_ring, other):
    async def main():
        asyncio.get_running_loop().call_later(0.1, other.read)
        await bounded(full_ring.aput(b"n" * 1000))

    run(main())
    assert other.drain()[-1] == b"n" * 1000


def test_aput_timeout_raises_buffer_full(run, full_ring):
    for timeout in (0, 0.2):
        with pytest.raises(BufferFull) as e:
            run(full_ring.aput(b"n" * 1000, timeout=timeout))
        assert isinstance(e.value, queue.Full)


def test_aputv_writes_the_joined_buffers_at_once_when_there_is_room(run, ring, other):
    run(ring.aputv([b"head", b"er"]))
    run(ring.aputv([bytearray(b"a"), b"", memoryview(b"bc")], timeout=0))
    assert other.drain() == [b"header", b"abc"]


@pytest.mark.parametrize("as_iterator", [False, True], ids=["list", "iterator"])
def test_aputv_waits_for_room_freed_by_another_task(run, full_ring, other, as_iterator):
    # An iterator is taken whole before the first try: the retry after the
    # wait writes all of it.
    pieces = [b"h" * 8, bytearray(b"p" * 992)]

    async def main():
        asyncio.get_running_loop().call_later(0.1, other.read)
        await bounded(full_ring.aputv(iter(pieces) if as_iterator else pieces))

    run(main())
    assert other.drain()[-1] == b"h" * 8 + b"p" * 992


def test_aputv_waits_for_room_freed_by_another_thread(run, full_ring, other):
    reader = later(0.2, other.read)
    run(full_ring.aputv([b"h" * 8, b"p" * 992], timeout=WAIT))
    assert reader.join(WAIT) and reader.exc is None
    assert other.drain()[-1] == b"h" * 8 + b"p" * 992


def test_aputv_timeout_raises_buffer_full_and_errors_are_writev_s(run, full_ring, other):
    for timeout in (0, 0.2):
        with pytest.raises(BufferFull) as e:
            run(full_ring.aputv([b"h" * 8, b"p" * 992], timeout=timeout))
        assert isinstance(e.value, queue.Full)
    with pytest.raises(InvalidSize):
        run(full_ring.aputv([b"x" * 2000, b"x" * 49]))
    with pytest.raises(InvalidSize):
        run(full_ring.aputv([]))
    with pytest.raises(TypeError):
        run(full_ring.aputv([b"ok", "text"]))
    with pytest.raises(TypeError, match=r"use write\(\)"):
        run(full_ring.aputv(b"one buffer"))
    with pytest.raises(ValueError, match="non-negative"):
        run(full_ring.aputv([b"x"], timeout=-1))
    assert len(other.drain()) == 4


def test_aput_many_writes_everything_waiting_for_room_as_needed(run, ring, other):
    msgs = [bytes([i]) * 1000 for i in range(10)]  # a 4096-byte ring holds 4
    got = []

    def drain_slowly():
        deadline = time.monotonic() + WAIT
        while len(got) < len(msgs) and time.monotonic() < deadline:
            m = other.try_read()
            if m is None:
                time.sleep(0.01)
            else:
                got.append(m)

    reader = later(0.1, drain_slowly)
    assert run(ring.aput_many(iter(msgs), timeout=WAIT)) == len(msgs)
    assert reader.join(WAIT)
    assert got == msgs


def test_aput_many_returns_a_partial_count_on_timeout_having_written_exactly_that_prefix(run, ring, other):
    msgs = [bytes([i]) * 1000 for i in range(7)]
    assert run(ring.aput_many(msgs, timeout=0.2)) == 4
    assert other.drain() == msgs[:4]
    fill(ring)
    assert run(ring.aput_many(msgs, timeout=0.1)) == 0
    assert run(ring.aput_many(msgs, timeout=0)) == 0


def test_oversize_messages_raise_invalid_size_and_write_nothing(run, ring, other):
    big = b"x" * (ring.max_message_size + 1)
    with pytest.raises(InvalidSize):
        run(ring.aput(big))
    with pytest.raises(InvalidSize):
        run(ring.aput(big, timeout=1))
    with pytest.raises(InvalidSize):
        run(ring.aput_many([b"fits", big], timeout=1))
    with pytest.raises(InvalidSize):
        run(ring.aput_many([b"fits", b""]))
    assert ring.positions() == (0, 0)
    assert other.try_read() is None


# --------------------------------------------------------------------------
# async for, closing


def test_async_for_ends_when_the_ring_is_closed_from_another_task(run, ring, other):
    other.write_many([b"1", b"2", b"3"])

    async def main():
        got = []

        async def consume():
            async for m in ring:
                got.append(m)

        task = asyncio.create_task(consume())
        while len(got) < 3:
            await bounded(asyncio.sleep(0.01))
        await asyncio.sleep(0.1)  # the consumer now waits for a fourth
        assert not task.done()
        ring.close()
        await bounded(task)
        return got

    assert run(main()) == [b"1", b"2", b"3"]


def test_async_for_ends_when_the_ring_is_closed_from_another_thread(run, ring, other):
    other.write(b"only")

    async def main():
        return [m async for m in ring]

    closer = later(0.3, ring.close)
    assert run(bounded(main())) == [b"only"]
    assert closer.join(WAIT)


def test_async_for_over_a_closed_ring_raises_buffer_closed(ring):
    ring.close()
    with pytest.raises(BufferClosed):
        ring.__aiter__()


@pytest.mark.parametrize("closer", ["task", "thread"])
def test_closing_the_ring_ends_waiting_coroutines_with_buffer_closed(run, ring_path, tmp_path, closer):
    empty = RingBuffer(ring_path, 4096)
    full = RingBuffer(tmp_path / "full.ring", 4096)
    fill(full)

    async def main():
        waiting = [
            asyncio.create_task(empty.aget()),
            asyncio.create_task(empty.aget(timeout=WAIT)),
            asyncio.create_task(empty.aget_many(5, timeout=WAIT)),
            asyncio.create_task(full.aput(b"n" * 1000)),
            asyncio.create_task(full.aput(b"n" * 1000, timeout=WAIT)),
            asyncio.create_task(full.aput_many([b"n" * 1000], timeout=WAIT)),
            asyncio.create_task(full.aputv([b"n", b"n" * 999], timeout=WAIT)),
        ]
        await asyncio.sleep(0.2)
        assert not any(t.done() for t in waiting)
        if closer == "task":
            empty.close()
            full.close()
        else:
            t = later(0, lambda: (empty.close(), full.close()))
        results = await bounded(asyncio.gather(*waiting, return_exceptions=True))
        if closer == "thread":
            assert t.join(WAIT)
        return results

    try:
        results = run(main())
    finally:
        empty.close()
        full.close()
    assert [type(r) for r in results] == [BufferClosed] * 7, results


# --------------------------------------------------------------------------
# ringbuffer.Queue


def test_queue_coroutines_return_at_once_when_they_can(run, q, q_other):
    run(q.aput({"a": 1}))
    assert run(q.aput_many([[2], (3,), "4"], timeout=1)) == 3
    assert run(q_other.aget(timeout=0)) == {"a": 1}
    assert run(q_other.aget_many(5)) == [[2], (3,), "4"]


def test_queue_aget_and_aget_many_are_woken_by_a_put_from_another_thread(run, q, q_other):
    putter = later(0.2, q_other.put, ("obj", 1))
    assert run(q.aget(timeout=WAIT)) == ("obj", 1)
    assert putter.join(WAIT)
    putter = later(0.2, q_other.put_many, [1, 2])
    got = run(q.aget_many(5))
    assert putter.join(WAIT)
    rest = q.get_many(5, block=False) if len(got) < 2 else []
    assert got + rest == [1, 2]


def test_queue_aput_and_aput_many_are_woken_by_a_get_from_another_thread(run, q, q_other):
    blob = b"z" * 900
    while True:
        try:
            q.put_nowait(blob)
        except queue.Full:
            break
    getter = later(0.2, q_other.get)
    run(q.aput(blob, timeout=WAIT))
    assert getter.join(WAIT)
    getter = later(0.2, q_other.get)
    assert run(q.aput_many([blob], timeout=WAIT)) == 1
    assert getter.join(WAIT)


def test_queue_timeouts_raise_queue_empty_and_queue_full(run, q):
    with pytest.raises(queue.Empty):
        run(q.aget(timeout=0.1))
    with pytest.raises(queue.Empty):
        run(q.aget_many(3, timeout=0.1))
    n = 0
    while True:
        try:
            q.put_nowait(b"z" * 900)
            n += 1
        except queue.Full:
            break
    with pytest.raises(queue.Full):
        run(q.aput(b"z" * 900, timeout=0.1))
    assert run(q.aput_many([b"z" * 900] * 2, timeout=0.1)) == 0
    with pytest.raises(InvalidSize):
        run(q.aput(b"z" * 5000))
    assert len(q.get_many(100, block=False)) == n


@pytest.mark.parametrize("bad", [-1, math.nan])
def test_queue_bad_timeouts_raise_value_error(run, q, bad):
    q.put("there")
    for coro in (q.aget(timeout=bad), q.aget_many(1, timeout=bad), q.aput(1, timeout=bad)):
        with pytest.raises(ValueError):
            run(coro)
    with pytest.raises(ValueError):
        run(q.aput_many([1], timeout=bad))
    assert q.get_many(10, block=False) == ["there"]


def test_queue_async_for_ends_when_the_queue_is_closed_from_another_thread(run, q, q_other):
    q_other.put_many(["a", "b"])

    async def main():
        return [obj async for obj in q]

    closer = later(0.3, q.close)
    assert run(bounded(main())) == ["a", "b"]
    assert closer.join(WAIT)


def test_closing_a_queue_ends_a_waiting_aget_with_buffer_closed(run, q):
    async def main():
        task = asyncio.create_task(q.aget())
        await asyncio.sleep(0.1)
        q.close()
        return await bounded(asyncio.gather(task, return_exceptions=True))

    assert [type(r) for r in run(main())] == [BufferClosed]


# --------------------------------------------------------------------------
# no round through the loop when a message (or room) is there


def finish_at_first_send(coro):
    """Drives a coroutine by hand, outside any event loop: its value if it
    completed at the first send (it never suspended), else the test fails."""
    try:
        with pytest.raises(StopIteration) as e:
            coro.send(None)
    finally:
        coro.close()
    return e.value.value


def test_aget_returns_a_waiting_message_without_suspending(ring):
    ring.write_many([b"a", b"b", b"c", b"d"])
    assert finish_at_first_send(ring.aget()) == b"a"
    assert finish_at_first_send(ring.aget(timeout=5)) == b"b"
    assert finish_at_first_send(ring.aget_many(10)) == [b"c", b"d"]
    assert finish_at_first_send(ring.aget_many(0)) == []


def test_aput_with_room_returns_without_suspending(ring, other):
    assert finish_at_first_send(ring.aput(b"a")) is None
    assert finish_at_first_send(ring.aput(b"b", timeout=5)) is None
    assert finish_at_first_send(ring.aput_many([b"c", b"d"])) == 2
    assert finish_at_first_send(ring.aputv([b"e", bytearray(b"f")])) is None
    assert other.drain() == [b"a", b"b", b"c", b"d", b"ef"]


def test_queue_coroutines_do_not_suspend_when_they_can_finish(q):
    assert finish_at_first_send(q.aput("x")) is None
    assert finish_at_first_send(q.aput_many(["y", "z"])) == 2
    assert finish_at_first_send(q.aget()) == "x"
    assert finish_at_first_send(q.aget_many(5)) == ["y", "z"]


# --------------------------------------------------------------------------
# other processes: children are `python -c` scripts (nothing to pickle)

PY = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else [])]

# argv: path tag count seed pause. Writes count messages b"tag:i:" plus 0..39
# padding bytes, sleeping up to `pause` seconds before about half of them.
PRODUCER = textwrap.dedent(
    """
    import random, sys, time
    from ringbuffer import RingBuffer
    path, tag, count, seed, pause = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
    rng = random.Random(seed)
    with RingBuffer.open(path) as rb:
        for i in range(count):
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, pause))
            rb.put(b"%d:%d:" % (tag, i) + bytes(rng.randrange(40)), timeout=60)
    """
)

# Put before PRODUCER: the producer opens the ring, prints "ready", and
# writes only once a line comes on its stdin.
GATED = textwrap.dedent(
    """
    import sys
    from ringbuffer import RingBuffer
    _open = RingBuffer.open
    def _gated_open(path):
        rb = _open(path)
        print("ready", flush=True)
        sys.stdin.readline()
        return rb
    RingBuffer.open = _gated_open
    """
)

# argv: path. Reads with get() until b"STOP", pausing now and then; prints
# the ids (the number before the first b":") of what it read, as JSON.
READER = textwrap.dedent(
    """
    import json, random, sys, time
    from ringbuffer import RingBuffer
    rng = random.Random(2)
    ids = []
    with RingBuffer.open(sys.argv[1]) as rb:
        while True:
            m = rb.get(timeout=60)
            if m == b"STOP":
                break
            ids.append(int(m.split(b":")[0]))
            if rng.random() < 0.1:
                time.sleep(rng.uniform(0, 0.002))
    print(json.dumps(ids))
    """
)


def spawn(script: str, *args, stdin=None) -> subprocess.Popen:
    return subprocess.Popen(
        [*PY, "-c", script, *map(str, args)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs, timeout: float = WAIT) -> list[str]:
    """Waits for the processes (killing any still running after `timeout`
    seconds in all); asserts each exited with status 0; returns their stdout."""
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                raise AssertionError(f"{p.args[-6:]} still running after {timeout} s: {err}") from None
            assert p.returncode == 0, f"{p.args[-6:]}: exit {p.returncode}\n{err}"
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return outs


def seq_of(msg: bytes) -> int:
    return int(msg.split(b":")[1])


HAS_TIMEOUT_CM = hasattr(asyncio, "timeout")  # Python 3.11+


def test_cancelled_agets_lose_nothing_while_a_producer_process_writes(run, tmp_path):
    n = 3000
    rb = RingBuffer(tmp_path / "storm.ring", 1 << 16)
    producer = spawn(PRODUCER, rb.path, 0, n, 1, 0.001)
    got: list[bytes] = []
    stats = {"tasks": 0, "cancelled": 0, "timed out": 0}

    async def aget_in_timeout_block(timeout: float) -> None:
        async with asyncio.timeout(timeout):  # novermin (used only where HAS_TIMEOUT_CM)
            got.append(await rb.aget())  # recorded here: the block may still cancel the task

    def harvest(t: asyncio.Task) -> None:
        if t.cancelled():
            stats["cancelled"] += 1
            return
        e = t.exception()
        if e is None:
            r = t.result()
            if isinstance(r, list):
                got.extend(r)
            elif r is not None:
                got.append(r)
        elif isinstance(e, (BufferEmpty, asyncio.TimeoutError)):
            stats["timed out"] += 1
        else:
            raise e

    async def storm() -> None:
        rng = random.Random(1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        pending: dict[asyncio.Task, bool] = {}  # task: may be cancelled from outside
        while producer.poll() is None:
            assert loop.time() < deadline, "the producer did not finish"
            for _ in range(rng.randint(1, 8)):
                kind = rng.randrange(5 if HAS_TIMEOUT_CM else 4)
                tiny = rng.uniform(0, 0.002)
                if kind == 0:
                    coro = rb.aget()
                elif kind == 1:
                    coro = rb.aget(timeout=tiny)
                elif kind == 2:
                    coro = rb.aget_many(rng.randint(1, 4))
                elif kind == 3:
                    # Never cancelled from outside: before Python 3.12 a
                    # wait_for cancelled as its inner task finishes drops the result.
                    coro = asyncio.wait_for(rb.aget(), tiny)
                else:
                    coro = aget_in_timeout_block(tiny)
                pending[asyncio.create_task(coro)] = kind < 3
                stats["tasks"] += 1
            await asyncio.sleep(rng.uniform(0, 0.002))
            for t, cancellable in list(pending.items()):
                if t.done():
                    del pending[t]
                    harvest(t)
                elif cancellable and rng.random() < 0.5:
                    t.cancel()
        for t, cancellable in pending.items():
            if cancellable:
                t.cancel()
        await bounded(asyncio.gather(*pending, return_exceptions=True))
        for t in pending:
            harvest(t)

    try:
        run(storm())
        finish([producer])
        rest = rb.drain()
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.communicate()
        rb.close()
    seqs = sorted(map(seq_of, got + rest))
    assert seqs == list(range(n)), f"{len(seqs)} messages, {len(set(seqs))} distinct"
    # The storm exercised cancellation (how many tasks finish before their
    # cancel depends on the machine's speed: a floor, not a figure).
    assert stats["tasks"] > 1000 and stats["cancelled"] > 25, stats
    assert len(got) > n // 2, (len(got), stats)  # most came through the coroutines


def test_a_cancelled_aput_either_wrote_its_message_or_did_not(run, ring):
    reader = spawn(READER, ring.path)
    total = 3000
    outcomes: list[tuple[list[int], str, int]] = []  # (ids, outcome, count returned)

    def msg(i: int, rng: random.Random) -> bytes:
        return b"%d:" % i + bytes(rng.randrange(300))

    def harvest(t: asyncio.Task, ids: list[int]) -> None:
        if t.cancelled():
            outcomes.append((ids, "cancelled", 0))
            return
        e = t.exception()
        if e is None:
            r = t.result()
            outcomes.append((ids, "returned", len(ids) if r is None else r))
        elif isinstance(e, BufferFull):
            outcomes.append((ids, "full", 0))
        elif isinstance(e, asyncio.TimeoutError):
            outcomes.append((ids, "cancelled", 0))  # wait_for cancelled it
        else:
            raise e

    async def storm() -> None:
        rng = random.Random(3)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        pending: dict[asyncio.Task, tuple[list[int], bool]] = {}
        i = 0
        while i < total:
            assert loop.time() < deadline and reader.poll() is None
            for _ in range(rng.randint(1, 6)):
                kind = rng.randrange(5)
                tiny = rng.uniform(0, 0.002)
                ids = [i] if kind < 3 else list(range(i, i + rng.randint(1, 4)))
                i += len(ids)
                batch = [msg(k, rng) for k in ids]
                if kind == 0:
                    coro = ring.aput(batch[0])
                elif kind == 1:
                    coro = ring.aput(batch[0], timeout=tiny)
                elif kind == 2:
                    coro = asyncio.wait_for(ring.aput(batch[0]), tiny)
                elif kind == 3:
                    coro = ring.aput_many(batch)
                else:
                    coro = ring.aput_many(batch, timeout=tiny)
                pending[asyncio.create_task(coro)] = (ids, kind != 2)
            await asyncio.sleep(rng.uniform(0, 0.002))
            for t, (ids, cancellable) in list(pending.items()):
                if t.done():
                    del pending[t]
                    harvest(t, ids)
                elif cancellable and rng.random() < 0.5:
                    t.cancel()
        for t, (_, cancellable) in pending.items():
            if cancellable:
                t.cancel()
        await bounded(asyncio.gather(*pending, return_exceptions=True))
        for t, (ids, _) in pending.items():
            harvest(t, ids)

    try:
        run(storm())
        ring.put(b"STOP", timeout=WAIT)
        (out,) = finish([reader])
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    received = json.loads(out)
    assert len(received) == len(set(received)), "a message delivered twice"
    position = {k: j for j, k in enumerate(received)}
    assert set(received) <= {k for ids, _, _ in outcomes for k in ids}
    kinds = {"returned": 0, "cancelled": 0, "full": 0}
    for ids, outcome, count in outcomes:
        kinds[outcome] += 1
        written = [k for k in ids if k in position]
        assert written == ids[: len(written)], f"not a prefix: {ids} {outcome}, delivered {written}"
        assert [position[k] for k in written] == sorted(position[k] for k in written), "out of order"
        if outcome == "returned":
            assert len(written) == count, f"{ids} returned {count}, delivered {written}"
        elif outcome == "full":
            assert written == [], f"{ids} raised BufferFull, delivered {written}"
    # The storm exercised both outcomes (a floor: the split depends on the
    # machine's speed; one CI run had 89 cancelled of 1870).
    assert kinds["returned"] > 25 and kinds["cancelled"] > 25, kinds


# --------------------------------------------------------------------------
# many rings, readiness


def ten_rings_from_ten_processes(tmp_path, consume) -> None:
    """Ten rings, each written by its own process (200 numbered messages at
    random moments); consume(rings, got) must fill got[i] with ring i's
    messages. Asserts each ring gave exactly its 200, in order."""
    n, count = 10, 200
    rings = [RingBuffer(tmp_path / f"r{i}.ring", 1 << 14) for i in range(n)]
    got: list[list[bytes]] = [[] for _ in range(n)]
    procs = [spawn(PRODUCER, rb.path, i, count, 10 + i, 0.005) for i, rb in enumerate(rings)]
    try:
        consume(rings, got, count)
        finish(procs, 60)
        assert [rb.try_read() for rb in rings] == [None] * n, "a message beyond the count"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        for rb in rings:
            rb.close()
    for i in range(n):
        assert [m.split(b":")[:2] for m in got[i]] == [[b"%d" % i, b"%d" % k] for k in range(count)]


def test_one_event_loop_waits_on_ten_rings_written_by_ten_processes(run, tmp_path):
    def consume(rings, got, count):
        async def one(i: int) -> None:
            while len(got[i]) < count:
                got[i].append(await rings[i].aget(timeout=WAIT))

        async def main() -> None:
            await bounded(asyncio.gather(*map(one, range(len(rings)))), 60)

        run(main())

    ten_rings_from_ten_processes(tmp_path, consume)


def test_one_connection_wait_loop_waits_on_ten_rings_written_by_ten_processes(tmp_path):
    def consume(rings, got, count):
        deadline = time.monotonic() + 60
        while sum(map(len, got)) < len(rings) * count:
            assert time.monotonic() < deadline, [len(g) for g in got]
            for rb in multiprocessing.connection.wait(rings, timeout=WAIT):
                i = rings.index(rb)
                while msgs := rb.read_many(7):
                    got[i].extend(msgs)

    ten_rings_from_ten_processes(tmp_path, consume)


def test_select_selectors_and_connection_wait_report_a_ring_ready_after_a_write_and_not_after_an_empty_read(
    ring, other, tmp_path
):
    rb2 = RingBuffer(tmp_path / "second.ring", 4096)
    q2 = Queue(maxsize_bytes=4096, path=tmp_path / "q.ring")
    r_conn, w_conn = multiprocessing.Pipe(duplex=False)
    sel = selectors.DefaultSelector()
    try:
        for obj in (ring, rb2, q2, r_conn):
            sel.register(obj, selectors.EVENT_READ)
        everything = [ring, rb2, q2, r_conn]

        def ready_by_all(timeout: float) -> list[list]:
            by_select = select.select(everything, [], [], timeout)[0]
            by_selectors = [key.fileobj for key, _ in sel.select(timeout)]
            by_wait = multiprocessing.connection.wait(everything, timeout)
            return [sorted(map(id, r)) for r in (by_select, by_selectors, by_wait)]

        assert ready_by_all(0.1) == [[]] * 3
        other.write(b"m")
        wait_until(lambda: ready(ring, 0.1), what="ring readable after a write")
        assert ready_by_all(0.1) == [[id(ring)]] * 3
        assert ring.try_read() == b"m"
        assert ring.try_read() is None  # found the ring empty: the descriptor stops polling readable
        assert ready_by_all(0.1) == [[]] * 3
        q2.put("obj")
        w_conn.send("ping")
        wait_until(lambda: ready(q2, 0.1), what="queue readable after a put")
        assert ready_by_all(0.1) == [sorted([id(q2), id(r_conn)])] * 3
        assert q2.get_nowait() == "obj" and r_conn.recv() == "ping"
        with pytest.raises(queue.Empty):
            q2.get_nowait()
        assert ready_by_all(0.1) == [[]] * 3
        fd2 = rb2.fileno()
        rb2.close()  # a closed ring polls readable for good (loops notice)
        assert select.select([fd2], [], [], WAIT)[0] == [fd2]
    finally:
        sel.close()
        rb2.close()
        q2.close()
        r_conn.close()
        w_conn.close()


def test_fileno_is_one_descriptor_per_object_and_fails_once_closed(ring, other, q):
    assert ring.fileno() == ring.fileno() != other.fileno()
    assert q.fileno() == q.fileno()
    ring.close()
    q.close()
    with pytest.raises(BufferClosed):
        ring.fileno()
    with pytest.raises(BufferClosed):
        q.fileno()


def test_an_event_loop_waiting_on_ten_empty_rings_uses_under_one_percent_of_a_core(run, tmp_path):
    rings = [RingBuffer(tmp_path / f"idle{i}.ring", 4096) for i in range(10)]

    async def main() -> float:
        tasks = [asyncio.create_task(rb.aget(timeout=10)) for rb in rings]
        await asyncio.sleep(0.5)  # warm-up: the notifier threads start and park
        t0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(3)
        t1 = resource.getrusage(resource.RUSAGE_SELF)
        assert not any(t.done() for t in tasks)
        for rb in rings:
            rb.close()
        results = await bounded(asyncio.gather(*tasks, return_exceptions=True))
        assert [type(r) for r in results] == [BufferClosed] * 10
        return (t1.ru_utime - t0.ru_utime) + (t1.ru_stime - t0.ru_stime)

    try:
        cpu = run(main())
    finally:
        for rb in rings:
            rb.close()
    assert cpu < 0.03, f"{cpu * 1000:.1f} ms of CPU in 3 s"


# --------------------------------------------------------------------------
# a watcher killed while watching

# argv: path want. Opens the ring, polls its fileno() with select; prints
# "ready" first, then reads what comes until it has `want` messages (0:
# never), printing "got N" at the end.
WATCHER = textwrap.dedent(
    """
    import select, sys, time
    from ringbuffer import RingBuffer
    want = int(sys.argv[2])
    with RingBuffer.open(sys.argv[1]) as rb:
        fd = rb.fileno()
        assert rb.try_read() is None
        print("ready", flush=True)
        got, deadline = 0, time.monotonic() + 60
        while (want == 0 or got < want) and time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                while rb.try_read() is not None:
                    got += 1
    print("got", got, flush=True)
    """
)


def test_a_watcher_killed_while_watching_leaves_writers_and_other_watchers_unaffected(ring, ring_path):
    # Every handle opens before the kill: a handle opened later may take
    # the dead watcher's slot, and with it the count it left behind; here
    # only wakers can take that back.
    waiters = lambda: peek_u32(ring_path, OFF_DATA_WAITERS)  # noqa: E731
    first = spawn(WATCHER, ring.path, 0)
    procs = [first]
    try:
        assert first.stdout.readline() == "ready\n"
        wait_until(lambda: waiters() >= 1, what="the first watcher's notifier parked")
        second = spawn(WATCHER, ring.path, 20)
        procs.append(second)
        assert second.stdout.readline() == "ready\n"
        wait_until(lambda: waiters() >= 2, what="the second watcher's notifier parked")
        writer = spawn(GATED + PRODUCER, ring.path, 0, 20, 5, 0.05, stdin=subprocess.PIPE)
        procs.append(writer)
        assert writer.stdout.readline() == "ready\n"
        first.send_signal(signal.SIGKILL)
        first.wait(WAIT)
        assert waiters() >= 2  # the dead watcher's count stays behind
        writer.stdin.write("go\n")
        writer.stdin.flush()
        out = finish([writer, second])
        assert out[1] == "got 20\n"
        # Wakers take back what the dead watcher left after 64 empty wake-ups.
        for i in range(1000):
            ring.write(b"after %d" % i)
            assert ring.try_read() == b"after %d" % i
            if waiters() == 0:
                break
        assert waiters() == 0, f"still {waiters()} after 1000 writes"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


# --------------------------------------------------------------------------
# a C producer

C_PRODUCER = r"""
#define _POSIX_C_SOURCE 200809L
#include <ringbuf.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* argv: path count delay_ms. Sleeps delay_ms before each message "c:i". */
int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    rb_ring *rb;
    int rc = rb_open(argv[1], &rb);
    if (rc != RB_OK) {
        fprintf(stderr, "rb_open: %s\n", rb_strerror(rc));
        return 3;
    }
    int count = atoi(argv[2]);
    long ms = atol(argv[3]);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    for (int i = 0; i < count; i++) {
        nanosleep(&ts, NULL);
        char msg[32];
        int n = snprintf(msg, sizeof msg, "c:%d", i);
        rc = rb_write_wait(rb, msg, (size_t)n, 30000000000LL);
        if (rc != RB_OK) {
            fprintf(stderr, "rb_write_wait: %s\n", rb_strerror(rc));
            return 4;
        }
    }
    return rb_close(rb) == RB_OK ? 0 : 5;
}
"""


@pytest.fixture(scope="module")
def c_producer(tmp_path_factory):
    """The compiled C_PRODUCER (with test_interop's way of building)."""
    from test_interop import CC, build_direct

    assert CC is not None, "no C compiler (cc) on PATH: .ci/run installs gcc"
    d = tmp_path_factory.mktemp("c-producer")
    src = d / "producer.c"
    src.write_text(C_PRODUCER)
    exe = str(d / "producer")
    try:
        build_direct(str(src), exe)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"compiling the C producer failed:\n{e.stderr}")
    return exe


def c_messages(count: int) -> list[bytes]:
    return [b"c:%d" % i for i in range(count)]


def test_a_c_producer_wakes_a_coroutine(run, ring, c_producer):
    proc = subprocess.Popen([c_producer, ring.path, "5", "100"], stderr=subprocess.PIPE, text=True)

    async def main() -> list[bytes]:
        return [await ring.aget(timeout=WAIT) for _ in range(5)]

    try:
        assert run(main()) == c_messages(5)
    finally:
        finish([proc])


def test_a_c_producer_wakes_a_selectors_loop_that_does_not_spin(ring, c_producer):
    proc = subprocess.Popen([c_producer, ring.path, "5", "100"], stderr=subprocess.PIPE, text=True)
    got: list[bytes] = []
    wakeups = 0
    with selectors.DefaultSelector() as sel:
        sel.register(ring, selectors.EVENT_READ)
        try:
            deadline = time.monotonic() + WAIT
            while len(got) < 5 and time.monotonic() < deadline:
                if sel.select(WAIT):
                    wakeups += 1
                    while (m := ring.try_read()) is not None:
                        got.append(m)
        finally:
            finish([proc])
    assert got == c_messages(5)
    # One wake-up per message, give or take spurious ones; a descriptor that
    # stayed readable after the empty read would wake the loop thousands of times.
    assert wakeups <= 50, wakeups


# --------------------------------------------------------------------------
# fork


def test_a_forked_child_gets_its_own_working_fileno(ring, other):
    parent_fd = ring.fileno()
    assert ring.try_read() is None
    other.write(b"before fork")
    assert ready(ring, WAIT)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report by exit status, never return into pytest
        status = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            child_fd = ring.fileno()
            status = 2
            if not select.select([child_fd], [], [], WAIT)[0]:  # its own notifier saw the message
                os._exit(status)
            status = 3
            if ring.try_read() != b"before fork" or ring.try_read() is not None:
                os._exit(status)
            status = 4
            if select.select([child_fd], [], [], 0.1)[0]:  # re-armed: not readable now
                os._exit(status)
            os.write(to_parent_w, b"1")
            status = 5
            if asyncio.run(ring.aget(timeout=WAIT)) != b"after fork":
                os._exit(status)
            status = 0
        finally:
            os._exit(status)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        assert select.select([to_parent_r], [], [], WAIT)[0] and os.read(to_parent_r, 1) == b"1"
        # The child emptied the ring and its descriptor is idle; the parent's
        # is its own: still readable, as the parent never found the ring empty.
        assert ready(ring, 0.1)
        assert ring.try_read() is None
        assert not ready(ring, 0.1)
        assert ring.fileno() == parent_fd
        os.write(to_child_w, b"go")
        other.write(b"after fork")
        deadline = time.monotonic() + WAIT
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
