"""The benchmark suite of ``invoke bench``: Python throughput between two
processes next to multiprocessing.Queue/Pipe, faster-fifo and pyzmq; ping-pong
latency; CPU of an idle blocked consumer; memory over many messages;
ringbuffer.Queue with small objects; asyncio (aget/aput ping-pong next to
zmq.asyncio and run_in_executor, a consumer coroutine next to the get loop,
on asyncio's loop and uvloop); arrays and large messages (bench/arrays.py:
numpy arrays, zero-copy, gather writes); the NATS JetStream bridge
(bench/bridge.py: next to a plain nats-py publisher, and its end-to-end
latency); and the C benchmark (bench/cbench.c).

    python -m bench.suite [--quick] [--out DIR] [--only GROUP ...]

Every case runs in fresh processes (forkserver start method), bounded in
time (a budget per run), repeated (median of --reps runs), with ratios to
multiprocessing.Queue (Python), memcpy (C) and, for asyncio, zmq.asyncio,
run_in_executor and the synchronous get loop taken from the same run.
Producers build their messages before the clock starts; consumers end with
one ``bytes`` object per message and check the count, the total bytes and
the last message. A peer that is not installed is skipped with a note
(``pip install -e '.[bench]'``). Results: a table on the terminal and, in
--out (default bench/results), ``bench.txt``, ``bench.json`` and a chart
``bench.png`` (``bench-quick.*`` with --quick).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from bench import arrays, bridge, fanout, report, workers
from ringbuffer import RingBuffer, c_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (64, 1024, 4096, 65536)
MP_QUEUE = "multiprocessing.Queue"
# (transport, mode, label); "single" is put/get (or the peer's equivalent),
# "batch" put_many/get_many, "zerocopy" our reserve/peek.
THROUGHPUT_CASES = (
    ("ringbuffer", "single", "ringbuffer put/get"),
    ("ringbuffer", "batch", "ringbuffer put_many/get_many"),
    ("ringbuffer", "zerocopy", "ringbuffer reserve/peek"),
    (MP_QUEUE, "single", "multiprocessing.Queue put/get"),
    ("multiprocessing.Pipe", "single", "multiprocessing.Pipe send_bytes"),
    ("faster-fifo", "single", "faster-fifo put/get"),
    ("faster-fifo", "batch", "faster-fifo put_many/get_many"),
    ("pyzmq", "single", "pyzmq PUSH/PULL ipc://"),
)
LATENCY_TRANSPORTS = ("ringbuffer", "multiprocessing.Pipe", MP_QUEUE, "faster-fifo", "pyzmq")
OBJECT_CASES = (
    (MP_QUEUE, "single", "multiprocessing.Queue put/get"),
    ("ringbuffer.Queue", "single", "ringbuffer.Queue put/get"),
    ("ringbuffer.Queue", "batch", "ringbuffer.Queue put_many/get_many"),
)
OBJECT_BATCH = 256
# The "async" group (issue 13). Ping-pong: (transport, event loop, label),
# both processes in an event loop; "blocking" is put/get with no loop.
ASYNC_PINGPONG = (
    ("ringbuffer", "asyncio", "ringbuffer aput/aget"),
    ("ringbuffer", "uvloop", "ringbuffer aput/aget, uvloop"),
    ("pyzmq", "asyncio", "zmq.asyncio PAIR ipc://"),
    (MP_QUEUE, "asyncio", "mp.Queue get in run_in_executor"),
    ("ringbuffer", "blocking", "ringbuffer put/get (no loop)"),
)
ZMQ_ASYNC = "zmq.asyncio PAIR ipc://"
EXECUTOR = "mp.Queue get in run_in_executor"
# Throughput, 64 B: a plain put loop in the producer process; the consumer
# process runs the synchronous get loop or a coroutine (workers.ASYNC_MODES,
# ":uvloop" for that loop).
ASYNC_SIZE = 64
ASYNC_THROUGHPUT = (
    ("ringbuffer", "single", "ringbuffer get loop (no loop)"),
    ("ringbuffer", "aget", "ringbuffer aget"),
    ("ringbuffer", "aget:uvloop", "ringbuffer aget, uvloop"),
    ("ringbuffer", "async-for", "ringbuffer async for"),
    ("ringbuffer", "aget_many", f"ringbuffer aget_many({workers.ASYNC_MANY})"),
)
SYNC_GET = "ringbuffer get loop (no loop)"
# Optional peers: transport -> the module it needs.
PEERS = {"faster-fifo": "faster_fifo", "pyzmq": "zmq", "uvloop": "uvloop"}
GROUPS = ("throughput", "latency", "idle", "memory", "objects", "async", "arrays", "bridge", "fanout", "c")


@dataclass
class Settings:
    quick: bool
    budget: float  # seconds per timed run of a throughput case
    reps: int
    latency_budget: float  # seconds of timed round trips per run
    latency_rounds: int
    latency_warmup: int
    idle_seconds: float
    memory_messages: int
    c_budget: float
    c_reps: int

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 0.1, 3, 0.15, 5000, 300, 0.6, 1_000_000, 0.08, 3)
        return cls(False, 1.0, 3, 1.0, 20000, 2000, 3.0, 10_000_000, 0.5, 5)


class CaseError(RuntimeError):
    """A case failed (a process died or reported an error, a check failed,
    or it ran out of time): reported as failed, never given a figure."""


@dataclass
class Suite:
    settings: Settings
    ctx: Any
    folder: str
    missing: dict[str, str] = field(default_factory=dict)  # transport -> note
    results: dict[str, Any] = field(default_factory=dict)
    runs: int = 0

    def available(self, transport: str) -> bool:
        return transport not in self.missing

    def name(self) -> str:
        self.runs += 1
        return f"c{self.runs}"


# -- running processes ---------------------------------------------------------


def run_children(
    suite: Suite,
    jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]],
    timeout: float,
    during: Callable[[list[Any]], None] | None = None,
    after: Callable[[list[Any]], None] | None = None,
) -> list[Any]:
    """Runs each (setup, args) in a fresh process (workers.child): waits
    until all are ready, starts them together, runs ``during`` (if given),
    collects what each timed part returned, runs ``after`` (if given; the
    processes are still there), then lets them exit. Raises CaseError if
    one fails or they take longer than ``timeout`` seconds."""
    ctx = suite.ctx
    start, finished = ctx.Event(), ctx.Event()
    readies = [ctx.Event() for _ in jobs]
    pipes = [ctx.Pipe(duplex=False) for _ in jobs]
    procs = [
        ctx.Process(target=workers.child, args=(setup, args, ready, start, finished, send), daemon=True)
        for (setup, args), ready, (_, send) in zip(jobs, readies, pipes)
    ]
    try:
        for p in procs:
            p.start()
        for _, send in pipes:
            send.close()  # the children's copies stay open
        deadline = time.monotonic() + 60
        for ready, p in zip(readies, procs):
            while not ready.wait(0.05):
                if not p.is_alive() or time.monotonic() > deadline:
                    raise CaseError(f"a process did not get ready (exit code {p.exitcode})")
        start.set()
        if during is not None:
            during(procs)
        deadline = time.monotonic() + timeout
        results = []
        for (recv, _), p in zip(pipes, procs):
            while not recv.poll(0.05):
                if time.monotonic() > deadline:
                    raise CaseError(f"no result within {timeout:.0f} s")
                if not p.is_alive() and not recv.poll(0.05):
                    raise CaseError(f"a process died (exit code {p.exitcode})")
            status, value = recv.recv()
            if status != "ok":
                raise CaseError(value)
            results.append(value)
        if after is not None:
            after(procs)
        return results
    finally:
        finished.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for recv, _ in pipes:
            recv.close()


# -- throughput ----------------------------------------------------------------


def stream_once(suite: Suite, transport: str, mode: str, kind: str, size: int, n: int, batch: int) -> float:
    """One producer and one consumer process pass n messages; returns the
    seconds from the producer's first send to the consumer's last receive,
    after checking what the consumer got."""
    name = suite.name()
    send_spec, recv_spec = workers.make_channel(transport, suite.ctx, suite.folder, name)
    args = (mode, kind, size, n, batch)
    timeout = 30 + 20 * suite.settings.budget
    try:
        (t0, _), (count, total, last_ok, t1) = run_children(
            suite, [(workers.producer, (send_spec, *args)), (workers.consumer, (recv_spec, *args))], timeout
        )
    finally:
        for spec in (send_spec, recv_spec):
            if spec[0] == "queue":
                spec[1].close()
        for path in glob.glob(os.path.join(suite.folder, f"{name}.*")):
            os.remove(path)
    want_total = n if kind == "objects" else n * size
    if count != n or total != want_total or not last_ok:
        raise CaseError(
            f"check failed: {count} messages of {n}, {total} bytes of {want_total}, last message "
            f"{'right' if last_ok else 'wrong'}"
        )
    return t1 - t0


def calibrate(suite: Suite, transport: str, mode: str, kind: str, size: int, batch: int) -> int:
    """The message count for a run of about --budget seconds, from one
    untimed run (also the warm-up); a multiple of the batch."""
    n0 = 20000 if kind == "objects" else max(64, min(20000, (4 << 20) // size))
    n0 = -(-n0 // batch) * batch
    rate0 = n0 / stream_once(suite, transport, mode, kind, size, n0, batch)
    n = max(2 * batch, 200, int(rate0 * suite.settings.budget))
    return -(-n // batch) * batch


def batch_for(size: int) -> int:
    """Messages per batch in batched mode: 256 KiB of them, 8 to 1024."""
    return max(8, min(1024, (256 << 10) // size))


def interleaved(
    suite: Suite, rows: dict[str, Any], counts: dict[str, int], what: str, once: Callable[[str, int], Any]
) -> dict[str, list[Any]]:
    """Runs ``once(label, n)`` for every case of ``counts`` (``n``: its
    calibrated count) in ``suite.settings.reps`` rounds of every case, so
    that each case's runs share the machine's moments with the others'. A
    :class:`CaseError` is kept in the case's row (``rows[label]["error"]``)
    and ends its runs. Returns each case's results, in order."""
    results: dict[str, list[Any]] = {label: [] for label in counts}
    for rep in range(suite.settings.reps):
        progress(f"{what}: run {rep + 1} of {suite.settings.reps} of every case")
        for label, n in counts.items():
            row = rows[label]
            if "error" in row:
                continue
            try:
                results[label].append(once(label, n))
            except CaseError as exc:
                row["error"] = str(exc)
    return results


def run_cases(
    suite: Suite, cases: tuple[tuple[str, str, str], ...], kind: str, size: int, batch: int
) -> dict[str, Any]:
    """Runs each (transport, mode, label) case --reps times; returns label ->
    result (median rate), with each result's ratio to multiprocessing.Queue
    put/get. The runs interleave (every case once, then every case again)
    so that a change in the machine's load during the run weighs on all
    cases alike."""
    what = report.size_label(size) if kind == "bytes" else "objects"
    rows: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for transport, mode, label in cases:
        b = batch if mode == "batch" else 1
        rows[label] = {"transport": transport, "mode": mode, "batch": b}
        if not suite.available(transport):
            rows[label] = {"skipped": suite.missing[transport]}
            continue
        progress(f"{label}, {what}: calibrating")
        try:
            counts[label] = calibrate(suite, transport, mode, kind, size, b)
        except CaseError as exc:
            rows[label]["error"] = str(exc)
    times = interleaved(
        suite,
        rows,
        counts,
        what,
        lambda label, n: stream_once(
            suite, rows[label]["transport"], rows[label]["mode"], kind, size, n, rows[label]["batch"]
        ),
    )
    for label, n in counts.items():
        r = rows[label]
        if "error" in r:
            continue
        median = statistics.median(times[label])
        r.update({"messages": n, "runs_s": times[label], "median_s": median, "msgs_per_s": n / median})
        if kind != "objects":
            r["mb_per_s"] = n * size / median / 1e6
    base = next((r for r in rows.values() if r.get("transport") == MP_QUEUE and "msgs_per_s" in r), None)
    for r in rows.values():
        if base is not None and "msgs_per_s" in r:
            r["vs_mp_queue"] = r["msgs_per_s"] / base["msgs_per_s"]
    return rows


def group_throughput(suite: Suite) -> None:
    suite.results["throughput"] = {
        str(size): run_cases(suite, THROUGHPUT_CASES, "bytes", size, batch_for(size)) for size in SIZES
    }


def group_objects(suite: Suite) -> None:
    """ringbuffer.Queue against multiprocessing.Queue with small dicts."""
    suite.results["objects"] = {
        "item": repr(workers.make_objects(1)[0]),
        "rows": run_cases(suite, OBJECT_CASES, "objects", 0, OBJECT_BATCH),
    }


# -- latency ---------------------------------------------------------------------


def pingpong_once(suite: Suite, transport: str) -> list[int]:
    s = suite.settings
    ping_tx, ping_rx = workers.make_channel(transport, suite.ctx, suite.folder, suite.name())
    pong_tx, pong_rx = workers.make_channel(transport, suite.ctx, suite.folder, suite.name())
    try:
        rtts, echoed = run_children(
            suite,
            [
                (workers.pinger, (ping_tx, pong_rx, s.latency_rounds, s.latency_warmup, s.latency_budget)),
                (workers.echo, (ping_rx, pong_tx)),
            ],
            timeout=60 + 20 * s.latency_budget,
        )
    finally:
        for spec in (ping_tx, pong_tx):
            if spec[0] == "queue":
                spec[1].close()
    if echoed != len(rtts) + s.latency_warmup:
        raise CaseError(f"{echoed} messages echoed for {len(rtts) + s.latency_warmup} sent")
    return rtts


def group_latency(suite: Suite) -> None:
    """Ping-pong p50/p99 per transport, the median over --reps runs; the
    runs interleave across transports, as in run_cases."""
    from ringbuffer.benchmark import summary

    rows: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    for transport in LATENCY_TRANSPORTS:
        label = "ringbuffer put/get" if transport == "ringbuffer" else transport
        if suite.available(transport):
            rows[label] = {"transport": transport}
            runs[label] = []
        else:
            rows[label] = {"skipped": suite.missing[transport]}
    for rep in range(suite.settings.reps):
        progress(f"ping-pong: run {rep + 1} of {suite.settings.reps} of every transport")
        for label, r in rows.items():
            if "transport" not in r or "error" in r:
                continue
            try:
                rtts = pingpong_once(suite, r["transport"])
                runs[label].append({**summary(rtts), "rounds": len(rtts)})
            except CaseError as exc:
                r["error"] = str(exc)
    for label, r in rows.items():
        if "transport" in r and "error" not in r:
            r["p50_us"] = statistics.median(x["p50_us"] for x in runs[label])
            r["p99_us"] = statistics.median(x["p99_us"] for x in runs[label])
            r["runs"] = runs[label]
    pipe = rows.get("multiprocessing.Pipe", {})
    for r in rows.values():
        if "p50_us" in r and "p50_us" in pipe:
            r["pipe_p50_ratio"] = pipe["p50_us"] / r["p50_us"]
            r["pipe_p99_ratio"] = pipe["p99_us"] / r["p99_us"]
    suite.results["latency"] = rows


# -- asyncio ---------------------------------------------------------------------


def async_pingpong_once(suite: Suite, transport: str, loop_kind: str) -> list[int]:
    s = suite.settings
    if loop_kind == "blocking":
        return pingpong_once(suite, transport)
    name = suite.name()
    ping_spec, echo_spec = workers.make_duplex(transport, suite.ctx, suite.folder, name)
    try:
        rtts, echoed = run_children(
            suite,
            [
                (
                    workers.async_pinger,
                    (ping_spec, loop_kind, s.latency_rounds, s.latency_warmup, s.latency_budget),
                ),
                (workers.async_echo, (echo_spec, loop_kind)),
            ],
            timeout=60 + 20 * s.latency_budget,
        )
    finally:
        if ping_spec[0] == "mpq-executor":
            for q in ping_spec[1:]:
                q.close()
        for path in glob.glob(os.path.join(suite.folder, f"{name}.*")):
            os.remove(path)
    if echoed != len(rtts) + s.latency_warmup:
        raise CaseError(f"{echoed} messages echoed for {len(rtts) + s.latency_warmup} sent")
    return rtts


def group_async(suite: Suite) -> None:
    """Issue 13's figures: asyncio ping-pong (aput/aget on two rings) next
    to zmq.asyncio PAIR over ipc:// and to multiprocessing.Queue with get in
    run_in_executor, plus blocking put/get for reference; then a consumer
    coroutine (aget, async for, aget_many) against a plain put loop, next to
    the synchronous get loop. Medians over --reps interleaved runs; ratios
    from this run."""
    from ringbuffer.benchmark import summary

    pp: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    for transport, loop_kind, label in ASYNC_PINGPONG:
        if not suite.available(transport):
            pp[label] = {"skipped": suite.missing[transport]}
        elif loop_kind == "uvloop" and not suite.available("uvloop"):
            pp[label] = {"skipped": suite.missing["uvloop"]}
        else:
            pp[label] = {"transport": transport, "loop": loop_kind}
            runs[label] = []
    for rep in range(suite.settings.reps):
        progress(f"async ping-pong: run {rep + 1} of {suite.settings.reps} of every case")
        for label in runs:
            r = pp[label]
            if "error" in r:
                continue
            try:
                rtts = async_pingpong_once(suite, r["transport"], r["loop"])
                runs[label].append({**summary(rtts), "rounds": len(rtts)})
            except CaseError as exc:
                r["error"] = str(exc)
    for label, r in pp.items():
        if label in runs and "error" not in r:
            r["p50_us"] = statistics.median(x["p50_us"] for x in runs[label])
            r["p99_us"] = statistics.median(x["p99_us"] for x in runs[label])
            r["runs"] = runs[label]
    for peer, key in ((ZMQ_ASYNC, "zmq"), (EXECUTOR, "executor")):
        base = pp.get(peer, {})
        for r in pp.values():
            if "p50_us" in r and "p50_us" in base:
                r[f"{key}_p50_ratio"] = base["p50_us"] / r["p50_us"]
                r[f"{key}_p99_ratio"] = base["p99_us"] / r["p99_us"]

    cases = tuple(c for c in ASYNC_THROUGHPUT if not c[1].endswith(":uvloop") or suite.available("uvloop"))
    tp = run_cases(suite, cases, "bytes", ASYNC_SIZE, 1)
    for _, _, label in ASYNC_THROUGHPUT:
        if label not in tp:
            tp[label] = {"skipped": suite.missing["uvloop"]}
    tp = {label: tp[label] for _, _, label in ASYNC_THROUGHPUT}  # the table's order
    sync = tp.get(SYNC_GET, {})
    for r in tp.values():
        r.pop("vs_mp_queue", None)
        if "msgs_per_s" in r and "msgs_per_s" in sync:
            r["vs_sync_get"] = r["msgs_per_s"] / sync["msgs_per_s"]
    c = c_event_latency(suite)
    suite.results["async"] = {"size": ASYNC_SIZE, "pingpong": pp, "throughput": tp, "c": c}


def c_event_latency(suite: Suite) -> dict[str, Any]:
    """C: wake-up latency of a consumer in epoll_wait on the readable event
    fd, next to one blocked in rb_read_wait, in the same cbench run."""
    exe = os.path.join(ROOT, "bench", "build", "cbench")
    if not os.path.exists(exe):
        return {"error": f"{exe} is not built (make -C bench)"}
    progress("async: C wake-up latency, epoll on rb_event_fd next to rb_read_wait")
    budget = 0.5 if suite.settings.quick else 2.0
    cmd = [exe, "--latency", "--budget", str(budget), "--dir", suite.folder]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        return {"error": f"cbench --latency failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"}
    if proc.returncode != 0:
        out["error"] = proc.stderr.strip()[-500:]
    return out


# -- idle consumer -------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of pid so far, in ns (from schedstat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with open(path) as f:
            total += int(f.read().split()[0])
    return total


def group_idle(suite: Suite) -> None:
    """A consumer blocked in get() (and get_many()) on an empty ring: the
    share of a core it uses, measured from the kernel's accounting after it
    had 0.3 s to settle into its wait."""
    rows: dict[str, Any] = {}
    seconds = suite.settings.idle_seconds
    for many, label in ((False, "ringbuffer get()"), (True, "ringbuffer get_many()")):
        progress(f"idle, {label}")
        path = os.path.join(suite.folder, f"{suite.name()}.ring")
        rb = RingBuffer(path, workers.CHANNEL_BYTES)
        measured: dict[str, float] = {}

        def during(procs: list[Any], rb: RingBuffer = rb, measured: dict[str, float] = measured) -> None:
            time.sleep(0.3)
            pid = procs[0].pid
            c0, t0 = cpu_ns(pid), time.monotonic_ns()
            time.sleep(seconds)
            c1, t1 = cpu_ns(pid), time.monotonic_ns()
            measured["cpu_percent"] = 100 * (c1 - c0) / (t1 - t0)
            measured["seconds"] = (t1 - t0) / 1e9
            rb.put(b"wake up")

        try:
            (got,) = run_children(suite, [(workers.idle_consumer, (path, many))], 30 + seconds, during)
            rows[label] = {**measured, "woke_with": got}
        except CaseError as exc:
            rows[label] = {"error": str(exc)}
        finally:
            rb.close()
            os.remove(path)
    suite.results["idle"] = rows


# -- memory ----------------------------------------------------------------------


def group_memory(suite: Suite) -> None:
    """RSS of a producer and a consumer process after the first tenth of N
    64-byte messages and after all N, with put/get and put_many/get_many."""
    n = suite.settings.memory_messages
    rows: dict[str, Any] = {}
    for batch, label in ((1, "ringbuffer put/get"), (1024, "ringbuffer put_many/get_many")):
        progress(f"memory, {label}, {n:,} messages")
        path = os.path.join(suite.folder, f"{suite.name()}.ring")
        RingBuffer(path, workers.CHANNEL_BYTES).close()
        checkpoint = n // 10
        args = (path, 64, n, batch, checkpoint)
        t0 = time.monotonic()
        try:
            (p0, p1), (c0, c1, count, total) = run_children(
                suite, [(workers.rss_producer, args), (workers.rss_consumer, args)], timeout=60 + n / 50_000
            )
            if count != n or total != 64 * n:
                raise CaseError(f"check failed: {count} messages, {total} bytes")
            rows[label] = {
                "messages": n,
                "seconds": time.monotonic() - t0,
                "producer_rss_kib": [p0, p1],
                "consumer_rss_kib": [c0, c1],
                "growth_kib": max(p1 - p0, c1 - c0),
            }
        except CaseError as exc:
            rows[label] = {"error": str(exc)}
        finally:
            os.remove(path)
    suite.results["memory"] = rows


# -- arrays and large messages (bench/arrays.py) ------------------------------------

group_arrays = arrays.group


# -- the NATS bridge (bench/bridge.py) ----------------------------------------------

group_bridge = bridge.group


# -- fan-out: consumer groups (bench/fanout.py, bench/fanout.c) ---------------------

group_fanout = fanout.group


# -- C ---------------------------------------------------------------------------


def group_c(suite: Suite) -> None:
    s = suite.settings
    exe = os.path.join(ROOT, "bench", "build", "cbench")
    if not os.path.exists(exe):
        suite.results["c"] = {"error": f"{exe} is not built (make -C bench)"}
        return
    progress("C benchmark (bench/build/cbench)")
    cmd = [exe, "--budget", str(s.c_budget), "--reps", str(s.c_reps), "--dir", suite.folder]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        suite.results["c"] = {"error": f"cbench failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"}
        return
    if proc.returncode != 0:
        out["error"] = proc.stderr.strip()[-500:]
    memcpy = {m["size"]: m for m in out["memcpy"]}
    for row in out["throughput"]:
        row["vs_memcpy"] = row["gb_per_s"] / memcpy[row["size"]]["gb_per_s"]
        row["vs_memcpy_large"] = row["gb_per_s"] / out["memcpy_large"]["gb_per_s"]
    suite.results["c"] = out


# -- the run ---------------------------------------------------------------------


def progress(what: str) -> None:
    sys.stderr.write(f"  .. {what}\n")
    sys.stderr.flush()


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", ROOT, *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    # What was measured beyond that commit: uncommitted changes to the library.
    changed = [
        line.split(maxsplit=1)[-1]
        for line in git("status", "--porcelain", "--", "csrc", "ringbuffer").splitlines()
    ]
    if changed:
        commit += f" + uncommitted changes to {', '.join(changed)}"
    return {
        "load_average_after": os.getloadavg(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ringbuffer_c_version": c_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def library_files() -> dict[str, float]:
    """Modification times of the library files a run loads: a rebuild in
    the middle of a run changes what is measured (and crashes the processes
    that have the old copy mapped, since builds overwrite it in place)."""
    paths = glob.glob(os.path.join(ROOT, "ringbuffer", "*.so*"))
    paths.append(os.path.join(ROOT, "csrc", "build", "libringbuf.so.0"))
    return {os.path.relpath(p, ROOT): os.stat(p).st_mtime for p in paths if os.path.exists(p)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="small budgets: the whole suite in under a minute")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="results folder")
    ap.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups")
    ap.add_argument("--reps", type=int, help="runs per case (at least 3; default 3, C 5 or 3 with --quick)")
    opts = ap.parse_args(argv)
    settings = Settings.make(opts.quick)
    if opts.reps is not None:
        if opts.reps < 3:
            ap.error("--reps must be at least 3")
        settings.reps = settings.c_reps = opts.reps

    ctx = mp.get_context("forkserver")
    missing = {}
    for transport, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            missing[transport] = f"skipped: {module} is not installed (pip install -e '.[bench]')"
    preload = [m for t, m in PEERS.items() if t not in missing]
    if "pyzmq" not in missing:
        preload.append("zmq.asyncio")
    if importlib.util.find_spec("numpy") is not None:
        preload.append("numpy")
    ctx.set_forkserver_preload(
        ["bench.workers", "bench.arrays", "bench.fanout", "ringbuffer.benchmark", "asyncio", *preload]
    )
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = tempfile.mkdtemp(prefix="rb-bench-", dir=shm)
    suite = Suite(settings, ctx, folder, missing)
    load_before = os.getloadavg()
    libs_before = library_files()
    t0 = time.monotonic()
    try:
        for group in opts.only or GROUPS:
            globals()[f"group_{group}"](suite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data = {
        "settings": asdict(settings),
        "machine": {**machine(), "load_average_before": load_before},
        "notes": sorted(set(missing.values())),
        "seconds": time.monotonic() - t0,
        **suite.results,
    }
    rebuilt = sorted(k for k, v in library_files().items() if libs_before.get(k) != v)
    if rebuilt:
        data["library_rebuilt_during_run"] = rebuilt
    data["targets"] = report.targets(data)
    text = report.table(data)
    sys.stdout.write(text)
    os.makedirs(opts.out, exist_ok=True)
    stem = os.path.join(opts.out, "bench-quick" if opts.quick else "bench")
    with open(stem + ".txt", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump(data, f, indent=2)
    chart = report.chart(data, stem + ".png")
    if chart is None and "throughput" in data:
        chart = "no chart: matplotlib is not installed (pip install -e '.[bench]')"
    sys.stdout.write(f"\nresults: {stem}.txt, {stem}.json{', ' + chart if chart else ''}\n")
    failed = report.failures(data)
    for line in failed:
        sys.stdout.write(f"FAILED: {line}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
