"""The "fanout" group of ``invoke bench`` (issue 12, consumer groups): what
fan-out costs, in C and in Python.

1. C (``bench/build/fanout``, bench/fanout.c): one producer process and 1, 2
   and 4 subscriber processes, each subscriber on an ephemeral group of its
   own, 64-byte messages, a lossless 1 MiB ring without the default group;
   the producer writes N messages with ``rb_write_wait``, every subscriber
   checks that it got each of them once, in order, whole. The producer's
   rate with 4 groups against its rate with 1, with each process's CPU time
   (getrusage): on a 2-CPU machine, 4 subscribers and the producer share
   two CPUs. Subscribers reading one message a call (``rb_read_wait``, the
   headline) and in batches (``rb_read_many_wait``, reported); and the
   control for CPU sharing ("hogs"): one subscriber and K - 1 processes that
   only spin, so that as many processes share the CPUs without fan-out.
2. Python pub/sub: one publisher process and 2 subscriber processes, 64 B;
   messages delivered per second (the sum over the subscribers), our ring
   (``RingBuffer.open(path, ephemeral=True)`` per subscriber, ``put`` /
   ``get``, one message a call) next to pyzmq PUB/SUB over ``ipc://`` in the
   same run. pyzmq drops nothing: SNDHWM and RCVHWM are 0 (no limit), and
   the subscribers are connected, and have confirmed it, before the first
   timed message (the publisher sends hellos until each subscriber has
   acknowledged one over a PUSH/PULL back channel: PUB/SUB's slow joiner).
   Every subscriber keeps what it received and, after the clock, checks
   count and content (a digest of all the messages joined, against the
   publisher's): a subscriber that misses a message fails the case (pyzmq's
   ends after 5 s without a message and says how many it got). A third row,
   our ring with ``put_many``/``get_many``, is reported only: pyzmq has no
   batch call for PUB/SUB.

Medians of --reps interleaved runs, ratios from the same run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import resource
import statistics
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable

from ringbuffer import RingBuffer

if TYPE_CHECKING:
    from bench.suite import Suite

SIZE = 64
SUBSCRIBERS = 2
RING_BYTES = 4 << 20
BATCH = 1024
HELLO = b"H"  # the handshake's message, shorter than any timed one
ZMQ_TIMEOUT_MS = 5000  # a pyzmq subscriber that gets nothing for this long gives up
MAX_MESSAGES = 3_000_000  # per run: every subscriber keeps them all
RING = "ringbuffer put/get, ephemeral groups"
RING_BATCH = f"ringbuffer put_many/get_many({BATCH}), ephemeral groups"
ZMQ = "pyzmq PUB/SUB ipc://, HWM 0"
CASES = ((RING, "ring", "single"), (ZMQ, "zmq", "single"), (RING_BATCH, "ring", "batch"))
C_BUDGET = {True: 0.1, False: 1.0}  # seconds of the producer per C run (quick, full)

Work = Callable[[], Any]


def messages(n: int) -> list[bytes]:
    """n distinct 64-byte messages: the sequence number, then filler."""
    pad = bytes(range(SIZE - 8))
    return [i.to_bytes(8, "little") + pad for i in range(n)]


def digest(msgs: list[bytes]) -> str:
    return hashlib.blake2b(b"".join(msgs), digest_size=16).hexdigest()


def cpu_s() -> float:
    """This process's CPU time so far, every thread's (pyzmq's I/O thread
    too), user and system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the processes (run by bench.suite.run_children in its forkserver) -------------------


def ring_publisher(path: str, n: int, mode: str) -> Work:
    rb = RingBuffer.open(path)  # writes ignore groups
    msgs = messages(n)
    want = digest(msgs)
    if mode == "batch":
        put_many = rb.put_many
        batches = [msgs[i : i + BATCH] for i in range(0, n, BATCH)]

        def work() -> tuple[float, float, str]:
            t0 = time.monotonic()
            for chunk in batches:
                put_many(chunk)
            return t0, time.monotonic(), want

    else:
        put = rb.put

        def work() -> tuple[float, float, str]:
            t0 = time.monotonic()
            for m in msgs:
                put(m)
            return t0, time.monotonic(), want

    return work


def ring_subscriber(path: str, n: int, mode: str) -> Work:
    # The group is made now, before the publisher starts: it gets every
    # message. A lost message would leave get() waiting: the suite's
    # timeout then fails the case.
    rb = RingBuffer.open(path, ephemeral=True)
    if mode == "batch":
        get_many = rb.get_many

        def work() -> tuple[int, str, float, float]:
            c0 = cpu_s()
            got: list[bytes] = []
            extend = got.extend
            while len(got) < n:
                extend(get_many(min(BATCH, n - len(got))))
            t1 = time.monotonic()
            cpu = cpu_s() - c0
            return len(got), digest(got), t1, cpu

    else:
        get = rb.get

        def work() -> tuple[int, str, float, float]:
            c0 = cpu_s()
            got: list[bytes] = []
            append = got.append
            for _ in range(n):
                append(get())
            t1 = time.monotonic()
            cpu = cpu_s() - c0
            return len(got), digest(got), t1, cpu

    return work


def zmq_publisher(addr: str, sync: str, n: int, subscribers: int) -> Work:
    import zmq

    zctx = zmq.Context()
    pub = zctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)  # no limit: PUB drops nothing
    pub.bind(addr)
    acks = zctx.socket(zmq.PULL)
    acks.bind(sync)
    msgs = messages(n)
    want = digest(msgs)
    # Slow joiner: hellos until every subscriber has got one (and so is
    # subscribed) and said so.
    deadline = time.monotonic() + 30
    confirmed = 0
    while confirmed < subscribers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{confirmed} of {subscribers} pyzmq subscribers confirmed")
        pub.send(HELLO)
        while acks.poll(10):
            acks.recv()
            confirmed += 1
    send = pub.send

    def work() -> tuple[float, float, str]:
        t0 = time.monotonic()
        for m in msgs:
            send(m)
        return t0, time.monotonic(), want

    work.sockets = (zctx, pub, acks)  # type: ignore[attr-defined]  # open until the process exits
    return work


def zmq_subscriber(addr: str, sync: str, n: int) -> Work:
    import zmq

    zctx = zmq.Context()
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)  # no limit: SUB drops nothing
    sub.setsockopt(zmq.RCVTIMEO, ZMQ_TIMEOUT_MS)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr)
    if not sub.poll(30_000):
        raise TimeoutError("no hello from the pyzmq publisher")
    sub.recv()
    ack = zctx.socket(zmq.PUSH)
    ack.connect(sync)
    ack.send(b"ok")
    recv = sub.recv

    def work() -> tuple[int, str, float, float]:
        c0 = cpu_s()
        got: list[bytes] = []
        append = got.append
        try:
            m = recv()
            while m == HELLO:  # the hellos sent before the publisher had every ack
                m = recv()
            append(m)
            for _ in range(n - 1):
                append(recv())
        except zmq.Again:  # nothing for ZMQ_TIMEOUT_MS: a message was dropped
            pass
        t1 = time.monotonic()
        cpu = cpu_s() - c0
        return len(got), digest(got), t1, cpu

    work.sockets = (zctx, sub, ack)  # type: ignore[attr-defined]
    return work


# -- the runs ------------------------------------------------------------------------------


def pubsub_once(suite: Suite, transport: str, mode: str, n: int) -> dict[str, Any]:
    """One run: n messages, SUBSCRIBERS subscribers; returns the publisher's
    rate and the deliveries per second after checking every subscriber."""
    from bench.suite import CaseError, cpu_ns, run_children

    name = suite.name()
    if transport == "ring":
        path = os.path.join(suite.folder, f"{name}.ring")
        RingBuffer(path, RING_BYTES, default_group=False).close()
        jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [(ring_publisher, (path, n, mode))]
        jobs += [(ring_subscriber, (path, n, mode))] * SUBSCRIBERS
    else:
        addr = f"ipc://{os.path.join(suite.folder, name)}.sock"
        sync = f"ipc://{os.path.join(suite.folder, name)}.sync"
        jobs = [(zmq_publisher, (addr, sync, n, SUBSCRIBERS))]
        jobs += [(zmq_subscriber, (addr, sync, n))] * SUBSCRIBERS
    # The publisher's CPU from the parent (pyzmq's I/O thread goes on after
    # the last send returns): from the start until every subscriber is done.
    pub_cpu: list[int] = []

    def mark(procs: list[Any]) -> None:
        pub_cpu.append(cpu_ns(procs[0].pid))

    try:
        (t0, t_sent, want), *subs = run_children(
            suite, jobs, timeout=60 + 30 * suite.settings.budget, during=mark, after=mark
        )
    finally:
        for path in glob.glob(os.path.join(suite.folder, f"{name}.*")):
            os.remove(path)
    counts = [count for count, _, _, _ in subs]
    if counts != [n] * SUBSCRIBERS or any(d != want for _, d, _, _ in subs):
        raise CaseError(
            f"check failed: the subscribers got {counts} messages of {n} each"
            + ("" if counts != [n] * SUBSCRIBERS else " (wrong content or order)")
        )
    t_end = max(t for _, _, t, _ in subs)
    wall = t_end - t0
    sub_cpu = [c for _, _, _, c in subs]
    publisher_cpu = (pub_cpu[1] - pub_cpu[0]) / 1e9
    return {
        "publisher_msgs_per_s": n / (t_sent - t0),
        "deliveries_per_s": SUBSCRIBERS * n / wall,
        "seconds": wall,
        "publisher_cpu_share": publisher_cpu / wall,
        "subscriber_cpu_shares": [c / wall for c in sub_cpu],
        "cpu_ns_per_delivery": (publisher_cpu + sum(sub_cpu)) * 1e9 / (SUBSCRIBERS * n),
    }


def group_pubsub(suite: Suite) -> dict[str, Any]:
    from bench.suite import CaseError, interleaved, progress

    rows: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for label, transport, mode in CASES:
        rows[label] = {"transport": transport, "mode": mode}
        if transport == "zmq" and not suite.available("pyzmq"):
            rows[label] = {"skipped": suite.missing["pyzmq"]}
            continue
        progress(f"fanout: Python pub/sub, {label}: calibrating")
        try:
            n0 = 20_000
            r = pubsub_once(suite, transport, mode, n0)
            n = int(r["deliveries_per_s"] / SUBSCRIBERS * suite.settings.budget)
            counts[label] = max(BATCH, min(MAX_MESSAGES, n))
        except CaseError as exc:
            rows[label]["error"] = str(exc)
    runs = interleaved(
        suite,
        rows,
        counts,
        "fanout: Python pub/sub",
        lambda label, n: pubsub_once(suite, rows[label]["transport"], rows[label]["mode"], n),
    )
    for label, n in counts.items():
        r = rows[label]
        if "error" in r:
            continue
        r.update(
            {
                "messages": n,
                "subscribers": SUBSCRIBERS,
                "deliveries_per_s": statistics.median(x["deliveries_per_s"] for x in runs[label]),
                "publisher_msgs_per_s": statistics.median(x["publisher_msgs_per_s"] for x in runs[label]),
                "cpu_ns_per_delivery": statistics.median(x["cpu_ns_per_delivery"] for x in runs[label]),
                "busy_cpus": statistics.median(
                    x["publisher_cpu_share"] + sum(x["subscriber_cpu_shares"]) for x in runs[label]
                ),
                "runs": runs[label],
            }
        )
    base = rows.get(ZMQ, {})
    for r in rows.values():
        if "deliveries_per_s" in base and "deliveries_per_s" in r:
            r["vs_zmq"] = r["deliveries_per_s"] / base["deliveries_per_s"]
            # The same run's rounds: a change in the machine's load weighs
            # on both alike within a round.
            r["vs_zmq_rounds"] = statistics.median(
                x["deliveries_per_s"] / z["deliveries_per_s"] for x, z in zip(r["runs"], base["runs"])
            )
            # CPU per delivery, pyzmq's over ours: what each costs the
            # machine, which other work on it moves much less than rates
            # (a process with more threads, as pyzmq's, gets more of a
            # busy machine's CPUs).
            r["cpu_vs_zmq"] = base["cpu_ns_per_delivery"] / r["cpu_ns_per_delivery"]
    return rows


def group_c(suite: Suite) -> dict[str, Any]:
    from bench.suite import ROOT, progress

    exe = os.path.join(ROOT, "bench", "build", "fanout")
    if not os.path.exists(exe):
        return {"error": f"{exe} is not built (make -C bench)"}
    progress("fanout: C, 1 producer and 1, 2, 4 subscriber processes (bench/build/fanout)")
    cmd = [exe, "--budget", str(C_BUDGET[suite.settings.quick]), "--reps", str(suite.settings.reps)]
    cmd += ["--dir", suite.folder]
    if suite.settings.quick:
        cmd += ["--messages", "100000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        return {"error": f"fanout failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"}
    if proc.returncode != 0:
        out["error"] = proc.stderr.strip()[-500:]
    ok = [r for r in out["cases"] if r.get("ok")]
    for mode in ("single", "batch", "hogs"):
        # hogs: against one subscriber with the CPUs to itself
        one = next(
            (r for r in ok if r["mode"] == ("single" if mode == "hogs" else mode) and _k(r) == 1), None
        )
        if one is None:
            continue
        for r in ok:
            if r["mode"] == mode:
                r["vs_one_group"] = r["producer_msgs_per_s"] / one["producer_msgs_per_s"]
                if mode == "single":
                    r["ceiling"] = cpu_ceiling(one, r["subscribers"], out["cpus"])
    return out


def _k(r: dict[str, Any]) -> int:
    """The processes besides the producer (subscribers, and hogs)."""
    return int(r["subscribers"] + r.get("hogs", 0))


def cpu_ceiling(one: dict[str, Any], k: int, cpus: int) -> dict[str, float] | None:
    """The producer's rate with k groups if CPU were all that limits it and
    each process needed, per message, the CPU it used with 1 group: the
    producer p ns and each subscriber s ns a message, so k groups need
    p + k * s ns of the machine's cpus CPUs per message, and no process can
    go faster than it did alone. An upper bound of what CPU sharing allows
    (the 1-group figures include time spent spinning for the other
    process): a rate near it is the CPUs' limit, not the library's."""
    m = one.get("median_run")
    if not m:
        return None
    p = m["producer"]["cpu_ns_per_msg"]
    s = statistics.fmean(x["cpu"]["cpu_ns_per_msg"] for x in m["subscribers"])
    if p <= 0 or s <= 0:
        return None
    rate = min(1e9 / p, 1e9 / s, cpus * 1e9 / (p + k * s))
    return {"msgs_per_s": rate, "vs_one_group": rate / one["producer_msgs_per_s"]}


def group(suite: Suite) -> None:
    suite.results["fanout"] = {"c": group_c(suite), "pubsub": group_pubsub(suite)}


# -- reporting (bench/report.py calls these) -------------------------------------------


def _c_rows(data: dict[str, Any], mode: str) -> dict[int, dict[str, Any]]:
    """The C cases of a mode that passed, by K."""
    c = data.get("fanout", {}).get("c", {})
    return {_k(r): r for r in c.get("cases", []) if r["mode"] == mode and r.get("ok")}


def _cpu_note(r: dict[str, Any]) -> str:
    m = r["median_run"]
    subs = m["subscribers"]
    share = statistics.fmean(x["cpu"]["share_of_a_cpu"] for x in subs)
    return (
        f"producer {m['producer']['share_of_a_cpu']:.2f} of a CPU, "
        f"{m['producer']['cpu_ns_per_msg']:.0f} ns/msg; "
        f"subscriber{'s' if len(subs) > 1 else ''} {share:.2f} of a CPU{' each' if len(subs) > 1 else ''}, "
        f"{statistics.fmean(x['cpu']['cpu_ns_per_msg'] for x in subs):.0f} ns/msg; "
        f"{m['busy_cpus']:.2f} CPUs busy{_others(m)}"
    )


def _others(m: dict[str, Any]) -> str:
    """The CPUs that other work on the machine used during the run."""
    other = m.get("machine_busy_cpus", 0) - m["busy_cpus"]
    return f", other work {other:.2f} CPUs" if other >= 0.05 else ""


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's speed targets measurable in a suite run (the default
    group's cost is bench/ab.py's: it builds two revisions)."""
    out: list[dict[str, Any]] = []
    fo = data.get("fanout")
    if fo is None:
        return out

    def add(target: str, measured: str | None, met: bool | str | None) -> None:
        out.append({"issue": 12, "target": target, "measured": measured or "not measured", "met": met})

    rows = _c_rows(data, "single")
    one, four = rows.get(1), rows.get(4)
    cpus = fo.get("c", {}).get("cpus", "?")
    target = f"C fan-out, 64 B: producer rate with 4 ephemeral groups >= 0.5x with 1 (on {cpus} CPUs)"
    if one and four:
        hogs = _c_rows(data, "hogs").get(4)
        add(
            target,
            f"{four['vs_one_group']:.2f}x ({four['producer_msgs_per_s'] / 1e6:.2f}M against "
            f"{one['producer_msgs_per_s'] / 1e6:.2f}M msgs/s"
            + (
                ""
                if hogs is None
                else f"; 5 processes without fan-out (1 subscriber, 3 spinning): {hogs['vs_one_group']:.2f}x"
            )
            + ")",
            four["vs_one_group"] >= 0.5,
        )
        control = (
            ""
            if hogs is None
            else ". Control, 1 subscriber and 3 processes that only spin (5 processes, no fan-out): producer "
            f"{hogs['vs_one_group']:.2f}x the 1-group rate ({_cpu_note(hogs)}, "
            f"hogs {statistics.fmean(x['cpu']['share_of_a_cpu'] for x in hogs['median_run']['hogs']):.2f} "
            "of a CPU each)"
        )
        add(
            "C fan-out, 4 groups: how CPU sharing weighs on it (reported)",
            f"1 group: {_cpu_note(one)}. 4 groups: {_cpu_note(four)}{control}",
            "info",
        )
    else:
        add(target, None, None)
    c = fo.get("c", {})
    if "cases" in c:
        bad = [f"{r['subscribers']} {r['mode']}" for r in c["cases"] if not r.get("ok")]
        add(
            "C fan-out: every subscriber gets every message exactly once, in order",
            "all checked" if not bad else f"FAILED: {', '.join(bad)}",
            not bad,
        )
    ps = fo.get("pubsub", {})
    ring, zmq = ps.get(RING, {}), ps.get(ZMQ, {})
    value = ring.get("vs_zmq")
    add(
        "Python pub/sub, 1 publisher + 2 subscriber processes, 64 B: deliveries/s >= 3x pyzmq PUB/SUB ipc://",
        None
        if value is None
        else f"{value:.2f}x ({ring['deliveries_per_s']:,.0f} against {zmq['deliveries_per_s']:,.0f} "
        "messages delivered/s, every message to both subscribers on both sides; median of the rounds' "
        f"ratios {ring['vs_zmq_rounds']:.2f}x; CPU per delivery, all processes: "
        f"{ring['cpu_ns_per_delivery']:,.0f} against {zmq['cpu_ns_per_delivery']:,.0f} ns, "
        f"{ring['cpu_vs_zmq']:.2f}x less)",
        None if value is None else value >= 3,
    )
    batch = ps.get(RING_BATCH, {}).get("vs_zmq")
    add(
        "Python pub/sub with put_many/get_many against pyzmq PUB/SUB (reported)",
        None if batch is None else f"{batch:.2f}x ({ps[RING_BATCH]['deliveries_per_s']:,.0f} delivered/s)",
        None if batch is None else "info",
    )
    return out


def failures(data: dict[str, Any]) -> list[str]:
    fo = data.get("fanout", {})
    c = fo.get("c", {})
    out = [f"fanout C: {c['error']}"] if "error" in c else []
    out += [
        f"fanout C, {r['subscribers']} subscribers, {r['mode']}: checks failed"
        for r in c.get("cases", [])
        if not r.get("ok")
    ]
    pubsub = fo.get("pubsub", {})
    out += [f"fanout pub/sub, {label}: {r['error']}" for label, r in pubsub.items() if "error" in r]
    return out


def table(data: dict[str, Any], reps: int) -> list[str]:
    fo = data["fanout"]
    c = fo.get("c", {})
    out = [""]
    if "cases" not in c:
        out.append(f"C fan-out: FAILED: {c.get('error')}")
    else:
        out += [
            f"C fan-out (bench/fanout.c): 1 producer process (rb_write_wait) and K subscriber processes, "
            f"each on its own ephemeral group, {c['size']} B, lossless ring of {c['ring_bytes'] >> 10} KiB, "
            f"{c['cpus']} CPUs; median of {c['reps']} runs of ~{c['budget_s']:g} s",
            "  subscribers read one message a call (single) or in batches (batch); hogs: 1 subscriber "
            "(single) and K - 1 processes that only spin (CPU sharing without fan-out)",
            "  CPU: each process's share of a CPU and CPU time per message (getrusage; subscribers' mean), "
            "CPUs busy in all, CPUs other work on the machine used meanwhile (/proc/stat); the ring's parks "
            "and futex wake-ups (rb_stats)",
            f"  {'K':<3} {'mode':<7} {'producer msgs/s':>16} {'vs K=1':>7} {'deliveries/s':>14} "
            f"{'producer CPU':>13} {'ns/msg':>7} {'subscriber CPU':>15} {'ns/msg':>7} {'busy':>5} "
            f"{'others':>6} {'parks':>7} {'wakes':>9}",
        ]
        for r in c["cases"]:
            head = f"  {_k(r):<3} {r['mode']:<7}"
            if not r.get("ok"):
                out.append(f"{head} FAILED")
                continue
            m = r["median_run"]
            subs = m["subscribers"]
            vs = f"{r['vs_one_group']:>6.2f}x" if "vs_one_group" in r else f"{'':>7}"
            st = m["rb_stats"]
            out.append(
                f"{head} {r['producer_msgs_per_s']:>16,.0f} {vs} {r['deliveries_per_s']:>14,.0f} "
                f"{m['producer']['share_of_a_cpu']:>13.2f} {m['producer']['cpu_ns_per_msg']:>7.0f} "
                f"{statistics.fmean(x['cpu']['share_of_a_cpu'] for x in subs):>15.2f} "
                f"{statistics.fmean(x['cpu']['cpu_ns_per_msg'] for x in subs):>7.0f} "
                f"{m['busy_cpus']:>5.2f} {max(0.0, m.get('machine_busy_cpus', 0) - m['busy_cpus']):>6.2f} "
                f"{st['parks']:>7,} {st['wakes']:>9,}"
            )
        four = _c_rows(data, "single").get(4, {})
        ceil = four.get("ceiling")
        if ceil:
            out.append(
                "  CPU-bound ceiling for K=4 (single), if each process needed the CPU per message it needed "
                f"at K=1: {ceil['msgs_per_s']:,.0f} msgs/s = {ceil['vs_one_group']:.2f}x K=1"
            )
        if "error" in c:
            out.append(f"  FAILED: {c['error']}")
    ps = fo.get("pubsub", {})
    out += [
        "",
        f"Python pub/sub: 1 publisher and {SUBSCRIBERS} subscriber processes, {SIZE} B, every message to "
        f"every subscriber (checked), median of {reps} runs",
        "  CPU: every process's (all threads) per message delivered, pyzmq's over this, and CPUs busy "
        "(ours), medians",
        f"  {'case':<48} {'delivered/s':>12} {'publisher msgs/s':>17} {'vs pyzmq':>9} "
        f"{'CPU ns/delivery':>16} {'pyzmq/this':>10} {'busy':>5}",
    ]
    for label, r in ps.items():
        if "skipped" in r:
            out.append(f"  {label:<48} {r['skipped']}")
        elif "error" in r:
            out.append(f"  {label:<48} FAILED: {r['error']}")
        else:
            vs = f"{r['vs_zmq']:>8.2f}x" if "vs_zmq" in r else f"{'':>9}"
            cpu_vs = f"{r['cpu_vs_zmq']:>9.2f}x" if "cpu_vs_zmq" in r else f"{'':>10}"
            out.append(
                f"  {label:<48} {r['deliveries_per_s']:>12,.0f} {r['publisher_msgs_per_s']:>17,.0f} {vs} "
                f"{r['cpu_ns_per_delivery']:>16,.0f} {cpu_vs} {r['busy_cpus']:>5.2f}"
            )
    return out
