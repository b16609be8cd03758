"""Array messages in one process: ``put_array`` + ``get_array`` next to
``numpy.copyto`` of the same bytes (memcpy) and to ``ringbuffer.Queue``
(pickle) put + get of the same array; for a small array also without the
header caches, and next to ``put`` + ``get`` of its bytes.

    python -m bench.arrays [--quick]

One process writes and reads its own ring (no second process, no waiting):
what an array costs on top of the ring itself. A round trip through the
ring passes over the data three times: the copy in, the copy out, and the
zeroing of the record the reader took (``write`` + ``read_into`` of the
same bytes shows it). Each figure is the best of
several repeats (the least disturbed by other work on the machine); ratios
are taken within the run. Not part of ``invoke bench`` (whose cases are two
processes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import timeit
from typing import Callable

import numpy

from ringbuffer import Queue, RingBuffer
from ringbuffer import _array as array_module


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Seconds per call: the best of ``repeat`` runs of ``number`` calls."""
    fn()  # warm up (caches, pages)
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def row(label: str, seconds: float | None, unit: str, note: str = "") -> None:
    figure = "" if seconds is None else f"{seconds * (1e3 if unit == 'ms' else 1e6):8.2f} {unit}"
    print(f"  {label:<30} {figure:>11}  {note}".rstrip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    opts = ap.parse_args(argv)
    repeat = 3 if opts.quick else 7
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    rb = RingBuffer(os.path.join(folder, "arrays.ring"), 64 << 20)
    q = Queue(maxsize_bytes=64 << 20, path=os.path.join(folder, "queue.ring"))
    print(
        f"array messages, one process: {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, {os.cpu_count()} CPUs"
    )
    try:
        big = numpy.random.default_rng(0).random(2 << 20, dtype=numpy.float32)  # 8 MiB
        dst = numpy.empty_like(big)
        n = 20
        t_copy = best(lambda: numpy.copyto(dst, big), n, repeat)
        t_alloc_copy = best(lambda: big.copy(), n, repeat)  # a copy into fresh memory, as get_array's
        t_rt = best(lambda: (rb.put_array(big), rb.get_array()), n, repeat)
        t_ring = best(lambda: (rb.write(big), rb.read_into(dst)), n, repeat)  # the ring, no array
        t_queue = best(lambda: (q.put(big), q.get()), n, repeat)
        print("\n8 MiB float32, per round trip:")
        row("numpy.copyto (memcpy)", t_copy, "ms")
        row("ndarray.copy (fresh memory)", t_alloc_copy, "ms")
        row("write + read_into, same bytes", t_ring, "ms", f"{t_ring / t_copy:.2f}x copyto (in, out, zeroed)")
        row("put_array + get_array", t_rt, "ms", f"{t_rt / t_copy:.2f}x copyto")
        row("", None, "", f"{t_rt / t_ring:.2f}x write + read_into")
        row("", None, "", f"{t_rt / (t_copy + t_alloc_copy):.2f}x copyto + ndarray.copy")
        row("Queue put + get (pickle)", t_queue, "ms", f"{t_queue / t_rt:.2f}x put_array + get_array")

        small = numpy.arange(10, dtype=numpy.float64)
        raw = small.tobytes()
        n = 20000
        t_small = best(lambda: (rb.put_array(small), rb.get_array()), n, repeat)
        t_bytes = best(lambda: (rb.put(raw), rb.get()), n, repeat)
        t_small_queue = best(lambda: (q.put(small), q.get()), n, repeat)
        rb.put_array(small)
        msg = rb.read()
        t_small_put = best(lambda: (rb.put_array(small), rb.read()), n, repeat)
        t_small_get = best(lambda: (rb.write(msg), rb.get_array()), n, repeat)
        header, parse_max = array_module.header, array_module._CACHE_HEADER_MAX
        array_module.header = array_module.build_header
        array_module._CACHE_HEADER_MAX = 0
        array_module._parsed.clear()
        try:
            t_uncached = best(lambda: (rb.put_array(small), rb.get_array()), n, repeat)
        finally:
            array_module.header, array_module._CACHE_HEADER_MAX = header, parse_max
        print("\n10 float64 (80 bytes), per round trip:")
        row("put + get of its 80 bytes", t_bytes, "us")
        row("put_array + get_array", t_small, "us", f"{t_small / t_bytes:.1f}x put + get")
        row("  without the header caches", t_uncached, "us", f"{t_uncached / t_small:.2f}x cached")
        row("  put_array + read", t_small_put, "us")
        row("  write + get_array", t_small_get, "us")
        row(
            "Queue put + get (pickle)",
            t_small_queue,
            "us",
            f"{t_small_queue / t_small:.2f}x put_array + get_array",
        )
    finally:
        q.close()
        rb.close()
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
