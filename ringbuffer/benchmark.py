"""Ping-pong latency between two processes: 64-byte round trips with blocking
put/get on two rings, next to multiprocessing.Pipe measured in the same run.

    python -m ringbuffer.benchmark [--rounds N] [--json FILE]
    ringbuffer bench [--rounds N] [--json FILE]

Prints p50/p99/p99.9 round-trip times in microseconds and the ratio of
medians. Timing lives here, never in the tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from ringbuffer import RingBuffer

MSG = b"x" * 64
WARMUP = 2000


def _ring_echo(ping: str, pong: str, rounds: int) -> None:
    with RingBuffer.open(ping) as rx, RingBuffer.open(pong) as tx:
        for _ in range(rounds + WARMUP):
            tx.put(rx.get())


def _pipe_echo(conn, rounds: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds + WARMUP):
        conn.send_bytes(conn.recv_bytes())


def round_trips(
    send: Callable[[bytes], Any],
    recv: Callable[[], Any],
    rounds: int,
    warmup: int = WARMUP,
    seconds: float | None = None,
) -> list[int]:
    """Times rounds round trips of MSG (after warmup untimed ones), in ns
    each; stops early, after at least one timed round, once ``seconds`` have
    passed (None: no limit)."""
    out = []
    deadline = None if seconds is None else time.perf_counter_ns() + int(seconds * 1e9)
    for i in range(rounds + warmup):
        t0 = time.perf_counter_ns()
        send(MSG)
        recv()
        if i >= warmup:
            t1 = time.perf_counter_ns()
            out.append(t1 - t0)
            if deadline is not None and t1 > deadline:
                break
    return out


def ring_rtts(rounds: int, folder: str) -> list[int]:
    ping, pong = os.path.join(folder, "ping.ring"), os.path.join(folder, "pong.ring")
    tx, rx = RingBuffer(ping, 1 << 16), RingBuffer(pong, 1 << 16)
    child = mp.get_context("spawn").Process(target=_ring_echo, args=(ping, pong, rounds))
    child.start()
    out = round_trips(tx.put, rx.get, rounds)
    child.join(30)
    tx.close()
    rx.close()
    return out


def pipe_rtts(rounds: int) -> list[int]:
    parent, child_end = mp.get_context("spawn").Pipe(duplex=True)
    child = mp.get_context("spawn").Process(target=_pipe_echo, args=(child_end, rounds))
    child.start()
    out = round_trips(parent.send_bytes, parent.recv_bytes, rounds)
    child.join(30)
    return out


def summary(rtts: list[int]) -> dict[str, float]:
    q = statistics.quantiles(rtts, n=1000)
    return {"p50_us": q[499] / 1e3, "p99_us": q[989] / 1e3, "p999_us": q[998] / 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20000, help="round trips per peer (default 20000)")
    ap.add_argument("--json", help="also write the results to this file")
    opts = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="rb-pingpong-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        results = {
            "ringbuffer put/get": summary(ring_rtts(opts.rounds, folder)),
            "multiprocessing.Pipe": summary(pipe_rtts(opts.rounds)),
        }
    finally:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)
    ours, pipe = results["ringbuffer put/get"], results["multiprocessing.Pipe"]
    sys.stdout.write(f"64-byte ping-pong between two processes, {opts.rounds} round trips, microseconds\n")
    sys.stdout.write(f"  {'':<22} {'p50':>8} {'p99':>8} {'p99.9':>8}\n")
    for name, r in results.items():
        sys.stdout.write(f"  {name:<22} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['p999_us']:>8.1f}\n")
    sys.stdout.write(
        f"  ringbuffer p50 is {pipe['p50_us'] / ours['p50_us']:.1f}x better than multiprocessing.Pipe, "
        f"p99 {pipe['p99_us'] / ours['p99_us']:.1f}x\n"
    )
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"rounds": opts.rounds, "results": results, "cpus": os.cpu_count()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
