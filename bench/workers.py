"""What runs inside the benchmark's child processes: every transport (ours
and the peers) behind one small interface, and the producer, consumer,
ping-pong, idle, memory and asyncio workers.

A worker is a *setup* function: it opens its end of the channel and builds
its messages, then returns the *timed part* as a closure. :func:`child`
runs the setup, reports ready, waits for the start signal, runs the timed
part, sends back what it returned and waits for the signal to exit (so a
producer's transport stays open until the consumer has everything).

The suite imports this module into its forkserver before the first case,
so each case runs in fresh processes that start in milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from typing import Any, Callable

from ringbuffer import Queue as RingQueue
from ringbuffer import RingBuffer

Work = Callable[[], Any]

# Capacity of the byte-bounded channels (our ring, faster-fifo).
CHANNEL_BYTES = 4 << 20
# Distinct messages a producer cycles through: at least this many bytes.
POOL_BYTES = 8 << 20
POOL_MAX = 65536
# The message that ends a ping-pong echo loop (shorter than any timed one).
STOP = b"!"


def raw(msg: bytes) -> bytes:
    """faster-fifo's ``dumps`` for raw bytes (its ``loads`` is ``bytes``)."""
    return msg


# -- transports ----------------------------------------------------------------


class End:
    """One process's end of a channel. ``send``/``recv`` move one message
    (blocking); ``send_many``/``recv_many`` are set where the transport has
    a batch API. ``recv`` returns a ``bytes`` object (or the object put)."""

    send: Callable[[Any], Any]
    recv: Callable[[], Any]
    send_many: Callable[[list[Any]], Any] | None = None
    recv_many: Callable[[int], list[Any]] | None = None
    ring: RingBuffer | None = None  # our zero-copy mode needs the ring itself


class _RingEnd(End):
    def __init__(self, path: str) -> None:
        self.ring = rb = RingBuffer.open(path)
        self.send, self.recv = rb.put, rb.get
        self.send_many, self.recv_many = rb.put_many, rb.get_many


class _QueueEnd(End):
    """multiprocessing.Queue, ringbuffer.Queue, faster-fifo: put/get, and
    put_many/get_many where the queue has them."""

    def __init__(self, q: Any, faster_fifo: bool = False) -> None:
        if faster_fifo:  # blocking calls default to a 10 s timeout there
            self.send = lambda m: q.put(m, timeout=3600)
            self.recv = lambda: q.get(timeout=3600)
            self.send_many = lambda ms: q.put_many(ms, timeout=3600)
            self.recv_many = lambda k: q.get_many(timeout=3600, max_messages_to_get=k)
        else:
            self.send, self.recv = q.put, q.get
            if hasattr(q, "get_many"):
                self.send_many, self.recv_many = q.put_many, q.get_many


class _PipeEnd(End):
    def __init__(self, conn: Any) -> None:
        self.send, self.recv = conn.send_bytes, conn.recv_bytes


class _ZmqEnd(End):
    """PUSH (connects) or PULL (binds) over ipc://. The PUSH end is ready
    only once connected (IMMEDIATE, then a poll for POLLOUT), so that no
    timed message waits for the connection. Every message is copied (a
    copy_threshold above our largest size): pyzmq's default sends messages
    of 64 KiB and more zero-copy, with a tracking thread, several times
    slower here."""

    def __init__(self, addr: str, pull: bool) -> None:
        import zmq

        self.sock = sock = zmq.Context.instance().socket(zmq.PULL if pull else zmq.PUSH)
        if pull:
            sock.bind(addr)
        else:
            sock.copy_threshold = 1 << 24
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.RECONNECT_IVL, 5)
            sock.connect(addr)
            if not sock.poll(30_000, zmq.POLLOUT):
                raise TimeoutError(f"could not connect to {addr}")
        self.send, self.recv = sock.send, sock.recv


def open_end(spec: tuple[Any, ...]) -> End:
    """Opens the end of a channel that :func:`make_channel` described."""
    kind, arg = spec
    if kind == "ring":
        return _RingEnd(arg)
    if kind in ("queue", "faster-fifo"):
        return _QueueEnd(arg, faster_fifo=kind == "faster-fifo")
    if kind == "pipe":
        return _PipeEnd(arg)
    if kind in ("zmq-pull", "zmq-push"):
        return _ZmqEnd(arg, pull=kind == "zmq-pull")
    raise ValueError(f"unknown channel {kind!r}")


def make_channel(transport: str, ctx: Any, folder: str, name: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Creates a channel in the parent; returns the (sending, receiving)
    specs to pass to the two processes' :func:`open_end`."""
    if transport == "ringbuffer":
        path = os.path.join(folder, f"{name}.ring")
        RingBuffer(path, CHANNEL_BYTES).close()
        return ("ring", path), ("ring", path)
    if transport == "ringbuffer.Queue":
        q = RingQueue(maxsize_bytes=CHANNEL_BYTES, path=os.path.join(folder, f"{name}.queue"))
        return ("queue", q), ("queue", q)
    if transport == "multiprocessing.Queue":
        q = ctx.Queue()
        return ("queue", q), ("queue", q)
    if transport == "multiprocessing.Pipe":
        recv_end, send_end = ctx.Pipe(duplex=False)
        return ("pipe", send_end), ("pipe", recv_end)
    if transport == "faster-fifo":
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=CHANNEL_BYTES, loads=bytes, dumps=raw)
        return ("faster-fifo", q), ("faster-fifo", q)
    if transport == "pyzmq":
        addr = f"ipc://{os.path.join(folder, name)}.sock"
        return ("zmq-push", addr), ("zmq-pull", addr)
    raise ValueError(f"unknown transport {transport!r}")


# -- messages ------------------------------------------------------------------


def make_pool(size: int, multiple: int = 1) -> list[bytes]:
    """Distinct random messages of ``size`` bytes, POOL_BYTES in all (at most
    POOL_MAX of them), their count a multiple of ``multiple``."""
    count = max(1, min(POOL_MAX, POOL_BYTES // size))
    count = -(-count // multiple) * multiple
    rnd = random.Random(size)
    return [rnd.randbytes(size) for _ in range(count)]


def make_objects(count: int) -> list[dict[str, Any]]:
    """Small dicts, as in the ringbuffer.Queue benchmark."""
    return [{"id": i, "name": "item", "values": [1, 2, 3]} for i in range(count)]


def pool_for(kind: str, size: int, batch: int) -> list[Any]:
    return make_objects(POOL_MAX // 16) if kind == "objects" else make_pool(size, batch)


def expected_last(kind: str, size: int, batch: int, n: int) -> Any:
    pool = pool_for(kind, size, batch)
    return pool[(n - 1) % len(pool)]


# -- the child process ---------------------------------------------------------


def child(
    setup: Callable[..., Work], args: tuple[Any, ...], ready: Any, start: Any, finished: Any, out: Any
) -> None:
    """Runs one worker in a fresh process (see the module's docstring)."""
    try:
        work = setup(*args)
        ready.set()
        start.wait()
        out.send(("ok", work()))
    except BaseException as exc:  # reported to the parent, which fails the case
        out.send(("error", f"{type(exc).__name__}: {exc}"))
        ready.set()
        return
    finished.wait()


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


# -- throughput ----------------------------------------------------------------


def producer(spec: Any, mode: str, kind: str, size: int, n: int, batch: int) -> Work:
    """Sends n messages (cycling through a pre-built pool) in ``mode``:
    "single" (send), "batch" (send_many of ``batch`` messages) or "zerocopy"
    (our reserve, filled by a slice assignment). Returns (start, end) times."""
    end = open_end(spec)
    pool = pool_for(kind, size, batch)
    if mode == "batch":
        assert end.send_many is not None and n % batch == 0
        send_many = end.send_many
        batches = [pool[k : k + batch] for k in range(0, len(pool), batch)]

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for chunk in itertools.islice(itertools.cycle(batches), n // batch):
                send_many(chunk)
            return t0, time.monotonic()

    elif mode == "zerocopy":
        assert end.ring is not None
        reserve = end.ring.reserve

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for msg in itertools.islice(itertools.cycle(pool), n):
                with reserve(size, block=True) as buf:
                    buf[:] = msg
            return t0, time.monotonic()

    else:  # "single", and the plain put loop that feeds an async consumer
        send = end.send

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for msg in itertools.islice(itertools.cycle(pool), n):
                send(msg)
            return t0, time.monotonic()

    return work


def consumer(spec: Any, mode: str, kind: str, size: int, n: int, batch: int) -> Work:
    """Receives n messages, ending with one ``bytes`` object (or object) per
    message; counts them and their bytes and checks the last one. Returns
    (count, total bytes, last message matched, end time)."""
    end = open_end(spec)
    last_expected = expected_last(kind, size, batch, n)
    measure = (lambda m: 1) if kind == "objects" else len

    amode = async_mode(mode)
    if amode is not None:
        assert end.ring is not None and kind == "bytes"
        return async_consumer(end.ring, amode[0], amode[1], n, last_expected)
    if mode == "batch":
        assert end.recv_many is not None
        recv_many = end.recv_many

        def work() -> tuple[int, int, bool, float]:
            count = total = 0
            msgs: list[Any] = []
            while count < n:
                msgs = recv_many(min(batch, n - count))
                count += len(msgs)
                total += sum(map(measure, msgs))
            t1 = time.monotonic()
            last = msgs[-1]
            return count, total, _check_last(kind, last, last_expected), t1

    elif mode == "zerocopy":
        assert end.ring is not None
        peek = end.ring.peek

        def work() -> tuple[int, int, bool, float]:
            total = 0
            msg = b""
            for _ in range(n):
                with peek(block=True) as view:
                    msg = bytes(view)
                total += len(msg)
            t1 = time.monotonic()
            return n, total, _check_last(kind, msg, last_expected), t1

    else:
        recv = end.recv

        def work() -> tuple[int, int, bool, float]:
            total = 0
            msg = None
            for _ in range(n):
                msg = recv()
                total += measure(msg)
            t1 = time.monotonic()
            return n, total, _check_last(kind, msg, last_expected), t1

    return work


def _check_last(kind: str, msg: Any, expected: Any) -> bool:
    if kind == "objects":
        return bool(msg == expected)
    return type(msg) is bytes and msg == expected


# -- latency -------------------------------------------------------------------


def pinger(send_spec: Any, recv_spec: Any, rounds: int, warmup: int, seconds: float) -> Work:
    """Times 64-byte round trips (after ``warmup`` untimed ones) until
    ``rounds`` are done or ``seconds`` pass; then stops the echo. Returns
    the round-trip times in ns."""
    from ringbuffer.benchmark import MSG, round_trips

    tx, rx = open_end(send_spec), open_end(recv_spec)

    def work() -> list[int]:
        try:
            return round_trips(tx.send, rx.recv, rounds, warmup=warmup, seconds=seconds)
        finally:
            tx.send(STOP)

    assert len(MSG) == 64
    return work


def echo(recv_spec: Any, send_spec: Any) -> Work:
    """Sends back every message until STOP comes; returns how many."""
    rx, tx = open_end(recv_spec), open_end(send_spec)

    def work() -> int:
        recv, send = rx.recv, tx.send
        count = 0
        while True:
            msg = recv()
            if msg == STOP:
                return count
            send(msg)
            count += 1

    return work


# -- idle consumer and memory --------------------------------------------------


def idle_consumer(path: str, many: bool) -> Work:
    """Blocks in get() (or get_many) until the parent writes one message."""
    rb = RingBuffer.open(path)

    def work() -> int:
        return len(rb.get_many(16)) if many else len(rb.get())

    return work


def rss_producer(path: str, size: int, n: int, batch: int, checkpoint: int) -> Work:
    """Sends n messages with put (batch 1) or put_many; returns its RSS in
    KiB after the first ``checkpoint`` messages and after the last."""
    rb = RingBuffer.open(path)
    pool = make_pool(size, batch)

    def work() -> tuple[int, int]:
        msgs = itertools.cycle(pool)
        before = _send_count(rb, msgs, checkpoint, batch)
        _send_count(rb, msgs, n - checkpoint, batch)
        return before, rss_kib()

    return work


def _send_count(rb: RingBuffer, msgs: Any, count: int, batch: int) -> int:
    """Sends count messages from msgs; returns the RSS in KiB at the end."""
    if batch > 1:
        for k in range(0, count, batch):
            rb.put_many(list(itertools.islice(msgs, min(batch, count - k))))
    else:
        put = rb.put
        for msg in itertools.islice(msgs, count):
            put(msg)
    return rss_kib()


def rss_consumer(path: str, size: int, n: int, batch: int, checkpoint: int) -> Work:
    """Receives n messages with get (batch 1) or get_many, checking count and
    bytes; returns (RSS KiB after ``checkpoint`` messages, after the last,
    count, total bytes)."""
    rb = RingBuffer.open(path)

    def receive(count: int) -> int:
        total = 0
        if batch > 1:
            got = 0
            while got < count:
                msgs = rb.get_many(min(batch, count - got))
                got += len(msgs)
                total += sum(map(len, msgs))
        else:
            get = rb.get
            for _ in range(count):
                total += len(get())
        return total

    def work() -> tuple[int, int, int, int]:
        total = receive(checkpoint)
        before = rss_kib()
        total += receive(n - checkpoint)
        return before, rss_kib(), n, total

    return work


# -- asyncio ---------------------------------------------------------------------
#
# The "async" group: a consumer coroutine (aget, aget_many, async for) against
# a plain put loop, and ping-pong between two processes that both run an
# event loop, on our rings (aput/aget), on pyzmq's zmq.asyncio PAIR sockets
# and on multiprocessing.Queue with get in a thread pool (run_in_executor).
# The loop, the sockets and our event descriptors (with their notifier
# threads) are made in the setup, before the clock starts.

ASYNC_MODES = ("aget", "aget_many", "async-for")
# Messages asked for per aget_many call.
ASYNC_MANY = 1024
# Timed ping-pong rounds at least, whatever the budget (for a p99).
MIN_ROUNDS = 200


def new_loop(kind: str) -> Any:
    """A new event loop: "asyncio" (the default loop) or "uvloop"."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def async_mode(mode: str) -> tuple[str, str] | None:
    """("aget", "uvloop") for the consumer mode "aget:uvloop"; None for a
    synchronous mode."""
    name, _, loop = mode.partition(":")
    return (name, loop or "asyncio") if name in ASYNC_MODES else None


def async_consumer(ring: RingBuffer, mode: str, loop_kind: str, n: int, last_expected: bytes) -> Work:
    """The consumer of a throughput case in a coroutine: n messages with
    ``aget``, ``aget_many`` (ASYNC_MANY at most per call) or ``async for``;
    returns what :func:`consumer` returns."""
    loop = new_loop(loop_kind)
    ring.fileno()  # the event descriptor and its notifier thread, made now

    async def receive() -> tuple[int, bytes]:
        total = count = 0
        msg = b""
        if mode == "aget":
            aget = ring.aget
            for _ in range(n):
                msg = await aget()
                total += len(msg)
        elif mode == "aget_many":
            aget_many = ring.aget_many
            msgs: list[bytes] = []
            while count < n:
                msgs = await aget_many(min(ASYNC_MANY, n - count))
                count += len(msgs)
                total += sum(map(len, msgs))
            msg = msgs[-1]
        else:
            async for msg in ring:
                total += len(msg)
                count += 1
                if count == n:
                    break
        return total, msg

    def work() -> tuple[int, int, bool, float]:
        total, msg = loop.run_until_complete(receive())
        t1 = time.monotonic()
        return n, total, _check_last("bytes", msg, last_expected), t1

    return work


def make_duplex(transport: str, ctx: Any, folder: str, name: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A two-way channel for async ping-pong: returns the pinger's and the
    echo's specs for :func:`_open_duplex`."""
    if transport == "ringbuffer":
        ping, pong = (os.path.join(folder, f"{name}.{k}.ring") for k in ("ping", "pong"))
        for path in (ping, pong):
            RingBuffer(path, CHANNEL_BYTES).close()
        return ("ring", ping, pong), ("ring", pong, ping)
    if transport == "pyzmq":
        addr = f"ipc://{os.path.join(folder, name)}.sock"
        return ("zmq-pair", addr, False), ("zmq-pair", addr, True)
    if transport == "multiprocessing.Queue":
        ping, pong = ctx.Queue(), ctx.Queue()
        return ("mpq-executor", ping, pong), ("mpq-executor", pong, ping)
    raise ValueError(f"no async ping-pong for {transport!r}")


async def _open_duplex(spec: tuple[Any, ...]) -> tuple[Callable[[bytes], Any], Callable[[], Any]]:
    """(send, recv) of one end, both returning awaitables; called inside the
    running loop (zmq.asyncio sockets belong to it)."""
    kind = spec[0]
    if kind == "ring":
        tx, rx = RingBuffer.open(spec[1]), RingBuffer.open(spec[2])
        rx.fileno()  # made now, not in the first timed aget
        return tx.aput, rx.aget
    if kind == "zmq-pair":
        import zmq
        import zmq.asyncio

        sock = zmq.asyncio.Context.instance().socket(zmq.PAIR)
        sock.copy_threshold = 1 << 24
        if spec[2]:
            sock.bind(spec[1])
        else:
            sock.connect(spec[1])
        return sock.send, sock.recv
    if kind == "mpq-executor":
        from concurrent.futures import ThreadPoolExecutor

        tx_q, rx_q = spec[1], spec[2]
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(1)
        pool.submit(int).result()  # the thread is started now

        async def send(msg: bytes) -> None:
            tx_q.put(msg)  # never blocks: the queue's feeder thread writes

        return send, lambda: loop.run_in_executor(pool, rx_q.get)
    raise ValueError(f"unknown duplex {kind!r}")


def async_pinger(spec: Any, loop_kind: str, rounds: int, warmup: int, seconds: float) -> Work:
    """:func:`pinger` in a coroutine: times 64-byte round trips (await send,
    await the reply) after ``warmup`` untimed ones, until ``rounds`` are
    done or, after MIN_ROUNDS at least, ``seconds`` pass; returns them in ns."""
    from ringbuffer.benchmark import MSG

    loop = new_loop(loop_kind)
    send, recv = loop.run_until_complete(_open_duplex(spec))

    async def run() -> list[int]:
        out: list[int] = []
        clock = time.perf_counter_ns
        deadline = 0
        try:
            for i in range(rounds + warmup):
                if i == warmup:  # the budget is for timed rounds (warm-up can be slow here)
                    deadline = clock() + int(seconds * 1e9)
                t0 = clock()
                await send(MSG)
                await recv()
                if i >= warmup:
                    t1 = clock()
                    out.append(t1 - t0)
                    if t1 > deadline and len(out) >= MIN_ROUNDS:
                        break
        finally:
            await send(STOP)
        return out

    return lambda: loop.run_until_complete(run())


def async_echo(spec: Any, loop_kind: str) -> Work:
    """:func:`echo` in a coroutine; returns how many messages it echoed."""
    loop = new_loop(loop_kind)
    send, recv = loop.run_until_complete(_open_duplex(spec))

    async def run() -> int:
        count = 0
        while True:
            msg = await recv()
            if msg == STOP:
                return count
            await send(msg)
            count += 1

    return lambda: loop.run_until_complete(run())
