"""Throughput of small Python objects between two processes: one producer
process puts N small dicts, one consumer process gets them, through
ringbuffer.Queue and through multiprocessing.Queue measured in the same run.

    python bench/queue_objects.py [--items N] [--runs R] [--json FILE]

Both processes are started with the spawn method and report ready; the
clock starts when the parent sets the start event and stops when the
consumer has received (and checked) the last item. Each variant runs R
times (default 3); the table shows the median rate in items per second and
its ratio to multiprocessing.Queue. ringbuffer.Queue runs with its default
maxsize_bytes (1 MiB) and once more with put_many/get_many batches;
multiprocessing.Queue is unbounded. Timing lives here, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

from ringbuffer import Queue

BATCH = 256


def make_items(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": "item", "values": [1, 2, 3]} for i in range(n)]


def producer(q: Any, n: int, batch: int, ready: Any, start: Any) -> None:
    items = make_items(n)  # built before the clock starts
    ready.set()
    start.wait()
    if batch > 1:
        for k in range(0, n, batch):
            chunk = items[k : k + batch]
            done = q.put_many(chunk)
            assert done == len(chunk)
    else:
        put = q.put
        for item in items:
            put(item)


def consumer(q: Any, n: int, batch: int, ready: Any, done_at: Any) -> None:
    ready.set()
    expected = 0
    if batch > 1:
        while expected < n:
            for item in q.get_many(batch):
                if item["id"] != expected:
                    raise SystemExit(f"item {item['id']} received, {expected} expected")
                expected += 1
    else:
        get = q.get
        for expected in range(n):
            item = get()
            if item["id"] != expected:
                raise SystemExit(f"item {item['id']} received, {expected} expected")
    done_at.value = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes


def run_once(ctx: Any, make_queue: Callable[[], Any], n: int, batch: int) -> float:
    """Seconds from the start event to the consumer's last item."""
    q = make_queue()
    ready_p, ready_c, start = ctx.Event(), ctx.Event(), ctx.Event()
    done_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=producer, args=(q, n, batch, ready_p, start)),
        ctx.Process(target=consumer, args=(q, n, batch, ready_c, done_at)),
    ]
    try:
        for p in procs:
            p.start()
        if not (ready_p.wait(60) and ready_c.wait(60)):
            raise RuntimeError("the processes did not get ready")
        t0 = time.monotonic()
        start.set()
        for p in procs:
            p.join(300)
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"a process failed: exit codes {[p.exitcode for p in procs]}")
        return done_at.value - t0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        q.close()
        q.join_thread()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000, help="items per run (default 200000)")
    ap.add_argument("--runs", type=int, default=3, help="runs per variant; the median is shown (default 3)")
    ap.add_argument("--json", help="also write the results to this file")
    opts = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    variants: list[tuple[str, Callable[[], Any], int]] = [
        ("multiprocessing.Queue put/get", ctx.Queue, 1),
        ("ringbuffer.Queue put/get", Queue, 1),
        (f"ringbuffer.Queue put_many/get_many ({BATCH})", Queue, BATCH),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, make_queue, batch in variants:
        times = [run_once(ctx, make_queue, opts.items, batch) for _ in range(opts.runs)]
        median = statistics.median(times)
        results[name] = {"runs_s": times, "median_s": median, "items_per_s": opts.items / median}
    base = results["multiprocessing.Queue put/get"]["items_per_s"]
    for r in results.values():
        r["vs_multiprocessing"] = r["items_per_s"] / base
    item_repr = repr(make_items(1)[0])
    sys.stdout.write(
        f"{opts.items} items like {item_repr}, one producer and one consumer process (spawn), "
        f"median of {opts.runs} runs\n"
    )
    sys.stdout.write(f"  {'':<42} {'items/s':>12} {'vs mp.Queue':>12}\n")
    for name, r in results.items():
        sys.stdout.write(f"  {name:<42} {r['items_per_s']:>12,.0f} {r['vs_multiprocessing']:>11.2f}x\n")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(
                {
                    "items": opts.items,
                    "item": item_repr,
                    "runs": opts.runs,
                    "results": results,
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
