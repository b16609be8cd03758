"""A producer process and a consumer process exchange a stream of messages
through a ring with blocking put/get, every message is verified, and the
rate is shown next to ``multiprocessing.Queue`` (put/get) measured in the
same run.

Run it with ``python -m ringbuffer.demo`` (or ``invoke demo``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import sys
import tempfile
import time
import zlib
from typing import Any, TextIO

from ringbuffer.ring import RingBuffer

_PROGRESS_EVERY = 4096


def _message(i: int, size: int) -> bytes:
    """Message i: its number, then a pattern derived from it."""
    head = i.to_bytes(8, "little")
    body = bytes((i + k) & 0xFF for k in range(min(size - 8, 64)))
    return (head + body * (1 + (size - 8) // max(len(body), 1)))[:size]


def _messages(count: int, size: int) -> list[bytes]:
    # 256 distinct patterns, numbered per message: building is not timed.
    patterns = [_message(i, size)[8:] for i in range(256)]
    return [i.to_bytes(8, "little") + patterns[i & 0xFF] for i in range(count)]


def _ring_producer(path: str, count: int, size: int, start: Any) -> None:
    with RingBuffer.open(path) as rb:
        _produce(rb.put, count, size, start)


def _ring_consumer(path: str, count: int, size: int, progress: Any, result: Any) -> None:
    with RingBuffer.open(path) as rb:
        _consume(rb.get, count, size, progress, result)


def _produce(put: Any, count: int, size: int, start: Any) -> None:
    msgs = _messages(count, size)
    start.wait()
    for m in msgs:
        put(m)


def _consume(get: Any, count: int, size: int, progress: Any, result: Any) -> None:
    """Receives count messages with get(), checking order, size and CRC-32."""
    crc = 0
    bad = 0
    for i in range(count):
        m = get()
        if int.from_bytes(m[:8], "little") != i or len(m) != size:
            bad += 1
        crc = zlib.crc32(m, crc)
        if i % _PROGRESS_EVERY == 0:
            progress.value = i
    progress.value = count
    result.send((crc, bad))


def _queue_producer(q: Any, count: int, size: int, start: Any) -> None:
    _produce(q.put, count, size, start)


def _queue_consumer(q: Any, count: int, size: int, progress: Any, result: Any) -> None:
    _consume(q.get, count, size, progress, result)


def _bar(out: TextIO, label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    out.write(f"\r  {label:<22} [{'#' * filled}{'.' * (width - filled)}] {done:>10,}/{total:,}")
    out.flush()


def _run(label: str, producer: Any, consumer: Any, args: tuple[Any, ...], count: int, out: TextIO) -> float:
    """Runs one producer and one consumer process; returns seconds taken."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    progress = ctx.Value("q", 0, lock=False)
    recv, send = ctx.Pipe(duplex=False)
    size = args[-1]
    procs = [
        ctx.Process(target=producer, args=(*args, start)),
        ctx.Process(target=consumer, args=(*args, progress, send)),
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let both processes start and build their messages
    t0 = time.perf_counter()
    start.set()
    while not recv.poll(0.1):
        _bar(out, label, progress.value, count)
        if not all(p.is_alive() for p in procs) and not recv.poll(0.1):
            raise RuntimeError(f"{label}: a worker process died")
    crc, bad = recv.recv()
    elapsed = time.perf_counter() - t0
    _bar(out, label, count, count)
    out.write("\n")
    for p in procs:
        p.join()
    expected = 0
    for m in _messages(count, size):
        expected = zlib.crc32(m, expected)
    if bad or crc != expected:
        raise RuntimeError(
            f"{label}: {bad} messages out of order or wrong size, checksum {crc:#x} != {expected:#x}"
        )
    return elapsed


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point of ``python -m ringbuffer.demo``."""
    ap = argparse.ArgumentParser(prog="python -m ringbuffer.demo", description=__doc__)
    ap.add_argument("--count", type=int, default=300_000, help="messages per run (default 300000)")
    ap.add_argument("--size", type=int, default=64, help="bytes per message, at least 8 (default 64)")
    ap.add_argument("--ring-size", type=int, default=1 << 20, help="ring capacity in bytes (default 1 MiB)")
    opts = ap.parse_args(argv)
    if opts.size < 8 or opts.count < 1:
        ap.error("--size must be at least 8 and --count at least 1")

    folder = tempfile.mkdtemp(
        prefix="ringbuffer-demo-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    path = os.path.join(folder, "demo.ring")
    try:
        rb = RingBuffer(path, opts.ring_size)
        out.write(
            f"ring {path}: capacity {rb.capacity:,} bytes, {opts.count:,} messages of {opts.size} bytes\n"
        )
        rb.close()
        t_ring = _run(
            "ringbuffer", _ring_producer, _ring_consumer, (path, opts.count, opts.size), opts.count, out
        )
        q: queue.Queue[bytes] = mp.get_context("spawn").Queue()  # type: ignore[assignment]
        t_queue = _run(
            "multiprocessing.Queue",
            _queue_producer,
            _queue_consumer,
            (q, opts.count, opts.size),
            opts.count,
            out,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    mb = opts.count * opts.size / 1e6
    out.write("\nall messages verified (order, size, CRC-32 of the stream)\n\n")
    out.write(f"  {'':<22} {'msgs/s':>12} {'MB/s':>9}\n")
    for label, t in (("ringbuffer", t_ring), ("multiprocessing.Queue", t_queue)):
        out.write(f"  {label:<22} {opts.count / t:>12,.0f} {mb / t:>9,.1f}\n")
    out.write(f"\n  ringbuffer is {t_queue / t_ring:.1f}x multiprocessing.Queue in this run\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
