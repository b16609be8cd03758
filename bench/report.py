"""The suite's outputs from its results: the terminal table, the targets of
issues 5, 12, 13, 14 and 16 checked against the same run's figures, and the
chart."""

from __future__ import annotations

from typing import Any, Callable

from bench import arrays as A
from bench import bridge as B
from bench import fanout as F

SINGLE = "ringbuffer put/get"
BATCH = "ringbuffer put_many/get_many"
ZEROCOPY = "ringbuffer reserve/peek"
MPQ = "multiprocessing.Queue put/get"
FF_SINGLE = "faster-fifo put/get"
FF_BATCH = "faster-fifo put_many/get_many"
PYZMQ = "pyzmq PUSH/PULL ipc://"
# The "async" group's rows (bench/suite.py).
A_RING = "ringbuffer aput/aget"
A_ZMQ = "zmq.asyncio PAIR ipc://"
A_EXECUTOR = "mp.Queue get in run_in_executor"
A_SYNC_GET = "ringbuffer get loop (no loop)"
A_AGET = "ringbuffer aget"


def size_label(size: int | str) -> str:
    size = int(size)
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _rate(row: dict[str, Any] | None) -> float | None:
    return None if row is None else row.get("msgs_per_s")


# -- the targets of issues 5 and 13 ---------------------------------------------------


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issues 5 and 13 with the figure measured in this run
    and whether it is met (None: not measured in this run); figures that
    issue 13 asks to report without a bar have met "info"."""
    out: list[dict[str, Any]] = []
    issue = 5

    def add(target: str, measured: str | None, met: bool | str | None) -> None:
        out.append({"issue": issue, "target": target, "measured": measured or "not measured", "met": met})

    tp = data.get("throughput", {})
    small, page = tp.get("64", {}), tp.get("4096", {})

    def ratio(rows: dict[str, Any], a: str, b: str) -> float | None:
        ra, rb = _rate(rows.get(a)), _rate(rows.get(b))
        return ra / rb if ra and rb else None

    def at_least(target: str, value: float | None, floor: float) -> None:
        add(target, None if value is None else f"{value:.2f}x", None if value is None else value >= floor)

    at_least(
        "64 B, single-message mode (put/get) >= 10x multiprocessing.Queue", ratio(small, SINGLE, MPQ), 10
    )
    ours = _rate(small.get(SINGLE))
    peers = {k: _rate(v) for k, v in small.items() if not k.startswith("ringbuffer") and _rate(v)}
    singles = {k: v for k, v in peers.items() if k != FF_BATCH}
    unmeasured = [
        k for k, v in small.items() if k != FF_BATCH and not k.startswith("ringbuffer") and not _rate(v)
    ]
    if ours and singles:
        best = max(singles, key=singles.__getitem__)
        add(
            "64 B, single-message mode ahead of every peer's single-message mode",
            f"{ours / singles[best]:.2f}x the best peer ({best})"
            + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""),
            None if unmeasured else ours > singles[best],
        )
    else:
        add("64 B, single-message mode ahead of every peer's single-message mode", None, None)
    at_least("64 B, batched >= 40x multiprocessing.Queue", ratio(small, BATCH, MPQ), 40)
    at_least("64 B, batched >= 5x faster-fifo get_many", ratio(small, BATCH, FF_BATCH), 5)
    at_least("4 KiB, single-message mode >= 5x multiprocessing.Queue", ratio(page, SINGLE, MPQ), 5)
    best4 = max((ratio(page, m, FF_BATCH) or 0.0 for m in (BATCH, ZEROCOPY)), default=0.0)
    at_least("4 KiB, batched or zero-copy >= 2x faster-fifo get_many", best4 or None, 2)

    lat = data.get("latency", {})
    ring = lat.get(SINGLE, {})
    if "p50_us" in ring:
        add("ping-pong put/get p50 < 5 us", f"p50 {ring['p50_us']:.2f} us", ring["p50_us"] < 5)
    else:
        add("ping-pong put/get p50 < 5 us", None, None)
    at_least("ping-pong p50 >= 8x better than multiprocessing.Pipe", ring.get("pipe_p50_ratio"), 8)

    c = data.get("c", {})
    rows = {(r["producers"], r["size"], r["mode"]): r for r in c.get("throughput", []) if r.get("ok")}
    for mode in ("single", "batch"):
        r = rows.get((1, 64, mode))
        add(
            f"C, 1 producer + 1 consumer process, 64 B ({mode}): >= 30M msgs/s",
            None if r is None else f"{r['msgs_per_s'] / 1e6:.1f}M msgs/s",
            None if r is None else r["msgs_per_s"] >= 30e6,
        )
    for mode in ("single", "batch"):
        r = rows.get((1, 4096, mode))
        add(
            f"C, 1 producer + 1 consumer process, 4 KiB ({mode}): >= 0.5x same-run memcpy (same sizes)",
            None
            if r is None
            else f"{r['gb_per_s']:.2f} GB/s = {r['vs_memcpy']:.2f}x memcpy "
            f"({r['vs_memcpy_large']:.2f}x the 64 MiB-block memcpy)",
            None if r is None else r["vs_memcpy"] >= 0.5,
        )

    idle = data.get("idle", {})
    worst = max((r["cpu_percent"] for r in idle.values() if "cpu_percent" in r), default=None)
    add(
        "a consumer blocked while idle uses < 2% of a core",
        None if worst is None else f"at most {worst:.2f}% of a core",
        None if worst is None else worst < 2,
    )
    mem = data.get("memory", {})
    grown = [r["growth_kib"] for r in mem.values() if "growth_kib" in r]
    n = max((r["messages"] for r in mem.values() if "messages" in r), default=0)
    add(
        "memory flat over 10M messages (RSS growth < 1 MiB per process)",
        None if not grown else f"largest RSS growth {max(grown)} KiB over {n:,} messages",
        None if not grown or n < 10_000_000 else max(grown) < 1024,
    )

    issue = 13
    aio = data.get("async", {})
    pp, atp = aio.get("pingpong", {}), aio.get("throughput", {})
    ring, zmq, executor = pp.get(A_RING, {}), pp.get(A_ZMQ, {}), pp.get(A_EXECUTOR, {})
    for peer, row, bar in ((A_ZMQ, zmq, 3.0), (A_EXECUTOR, executor, None)):
        key = "zmq_p50_ratio" if peer == A_ZMQ else "executor_p50_ratio"
        value = ring.get(key)
        measured = None
        if value is not None:
            measured = (
                f"p50 {ring['p50_us']:.1f} us against {row['p50_us']:.1f} us: 1/{value:.1f} "
                f"(p99 {ring['p99_us']:.1f} against {row['p99_us']:.1f} us)"
            )
        if bar is None:
            add(
                f"asyncio ping-pong aput/aget p50 next to {peer} (reported)",
                measured,
                None if value is None else "info",
            )
        else:
            add(
                f"asyncio ping-pong aput/aget p50 <= 1/3 of {peer}'s",
                measured,
                None if value is None else value >= bar,
            )
    aget = atp.get(A_AGET, {}).get("vs_sync_get")
    add(
        "asyncio throughput, 64 B, aget >= 0.7x the synchronous get loop",
        None
        if aget is None
        else f"{aget:.2f}x ({atp[A_AGET]['msgs_per_s']:,.0f} against "
        f"{atp[A_SYNC_GET]['msgs_per_s']:,.0f} msgs/s)",
        None if aget is None else aget >= 0.7,
    )
    lat = aio.get("c", {}).get("latency", {})
    ep, rw = lat.get("epoll", {}), lat.get("rb_read_wait", {})
    add(
        "C wake-up latency, epoll on rb_event_fd next to rb_read_wait (reported)",
        None
        if "p50_us" not in ep or "p50_us" not in rw
        else f"epoll p50 {ep['p50_us']:.1f} us, p99 {ep['p99_us']:.1f} us; rb_read_wait p50 "
        f"{rw['p50_us']:.1f} us, p99 {rw['p99_us']:.1f} us",
        None if "p50_us" not in ep else "info",
    )
    many = next((r for k, r in atp.items() if k.startswith("ringbuffer aget_many")), {})
    add(
        "asyncio throughput, 64 B, aget_many against the synchronous get loop (reported)",
        None
        if "vs_sync_get" not in many
        else f"{many['vs_sync_get']:.2f}x ({many['msgs_per_s']:,.0f} msgs/s)",
        None if "vs_sync_get" not in many else "info",
    )
    out += _array_targets(data.get("arrays", {}))
    out += B.targets(data)
    out += F.targets(data)
    return out


def _array_targets(arr: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets (the "arrays" group)."""
    out: list[dict[str, Any]] = []
    rows = arr.get("array", {}).get("rows", {})

    def rate(label: str) -> float | None:
        return _rate(rows.get(label))

    def bar(target: str, a: float | None, b: float | None, floor: float, what: str = "") -> None:
        value = a / b if a and b else None
        out.append(
            {
                "issue": 14,
                "target": target,
                "measured": "not measured" if value is None else f"{value:.2f}x{what}",
                "met": None if value is None else value >= floor,
            }
        )

    queue = rate(A.QUEUE)
    bar("8 MiB float32 arrays: ringbuffer.Queue >= 5x multiprocessing.Queue", queue, rate(A.MPQ), 5)
    bar("8 MiB float32 arrays: ringbuffer.Queue >= 3x faster-fifo", queue, rate(A.FF), 3)
    bar(
        "8 MiB float32 arrays: ringbuffer.Queue >= 1.5x pyzmq copy=False + frombuffer",
        queue,
        rate(A.ZMQ),
        1.5,
    )
    bar("8 MiB float32 arrays: ringbuffer.Queue >= 0.4x same-run numpy.copyto", queue, rate(A.COPYTO), 0.4)
    bar(
        "8 MiB float32 arrays: put_array/get_array >= 1x ringbuffer.Queue",
        rate(A.PUT_ARRAY),
        queue,
        0.95,
        " (bar 0.95: the two are the same path within noise)",
    )
    zc = arr.get("zerocopy", {})
    small = zc.get("64", {})
    bar(
        "64 B: put_with/get_with cost at most 1.5x put/get (rate >= 1/1.5)",
        _rate(small.get(A.CALLBACKS)),
        _rate(small.get(A.COPY)),
        1 / 1.5,
    )
    for size in ("65536", "1048576"):
        r = zc.get(size, {})
        bar(
            f"{size_label(size)}: put_with/get_with >= 1.5x put/get",
            _rate(r.get(A.CALLBACKS)),
            _rate(r.get(A.COPY)),
            1.5,
        )
        bar(
            f"{size_label(size)}: reserve/peek blocks >= 1.5x put/get (reported)",
            _rate(r.get(A.BLOCKS)),
            _rate(r.get(A.COPY)),
            0.0,
        )
        out[-1]["met"] = "info" if out[-1]["met"] is not None else None
        g = arr.get("gather", {}).get(size, {})
        bar(
            f"64 B header + {size_label(size)} payload: putv no slower than put of the joined one (bar 0.95)",
            _rate(g.get(A.PUTV)),
            _rate(g.get(A.JOINED)),
            0.95,
        )
    return out


def failures(data: dict[str, Any]) -> list[str]:
    """The cases that failed (errors, not skips)."""
    out = []
    for size, rows in data.get("throughput", {}).items():
        out += [f"{label}, {size_label(size)}: {r['error']}" for label, r in rows.items() if "error" in r]
    for group in ("latency", "idle", "memory"):
        out += [f"{group}, {label}: {r['error']}" for label, r in data.get(group, {}).items() if "error" in r]
    out += [
        f"objects, {k}: {r['error']}"
        for k, r in data.get("objects", {}).get("rows", {}).items()
        if "error" in r
    ]
    for part in ("pingpong", "throughput"):
        rows = data.get("async", {}).get(part, {})
        out += [f"async {part}, {label}: {r['error']}" for label, r in rows.items() if "error" in r]
    arr = data.get("arrays", {})
    if "error" in arr:
        out.append(f"arrays: {arr['error']}")
    sections = [("8 MiB arrays", arr.get("array", {}).get("rows", {}))]
    sections += [(f"zero-copy {size_label(k)}", v) for k, v in arr.get("zerocopy", {}).items()]
    sections += [(f"gather {size_label(k)}", v) for k, v in arr.get("gather", {}).items()]
    for what, rows in sections:
        out += [f"arrays, {what}, {label}: {r['error']}" for label, r in rows.items() if "error" in r]
    out += B.failures(data)
    out += F.failures(data)
    if "error" in data.get("c", {}):
        out.append(f"C: {data['c']['error']}")
    if data.get("library_rebuilt_during_run"):
        out.append(
            f"the library was rebuilt during the run ({', '.join(data['library_rebuilt_during_run'])}): "
            "the figures mix two builds; run again"
        )
    return out


# -- the table ---------------------------------------------------------------------


def _rows_table(rows: dict[str, Any], first: str, cells: Callable[[dict[str, Any]], str]) -> list[str]:
    lines = []
    for label, r in rows.items():
        if "skipped" in r:
            lines.append(f"  {first:<8} {label:<34} {r['skipped']}")
        elif "error" in r:
            lines.append(f"  {first:<8} {label:<34} FAILED: {r['error']}")
        else:
            lines.append(f"  {first:<8} {label:<34} {cells(r)}")
        first = ""
    return lines


def _batch(rows: dict[str, Any]) -> int | None:
    return next((r["batch"] for r in rows.values() if r.get("mode") == "batch" and "batch" in r), None)


def table(data: dict[str, Any]) -> str:
    s, m = data["settings"], data["machine"]
    out = [
        f"ringbuffer benchmarks ({'quick' if s['quick'] else 'full'} run, {data['seconds']:.0f} s): "
        f"{m['cpus']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}, "
        f"commit {m['commit']}, {m['date']}",
        "load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f} "
        "(other work on the machine shares its CPUs)".format(
            *m["load_average_before"], *m["load_average_after"]
        ),
    ]
    out += [f"note: {n}" for n in data.get("notes", [])]

    def rate_cells(r: dict[str, Any]) -> str:
        mb = f"{r['mb_per_s']:>10,.1f}" if "mb_per_s" in r else f"{'':>10}"
        vs = f"{r['vs_mp_queue']:>10.2f}x" if "vs_mp_queue" in r else ""
        return f"{r['msgs_per_s']:>12,.0f} {mb} {vs}"

    if "throughput" in data:
        out += [
            "",
            "Python throughput: one producer and one consumer process (forkserver), "
            f"median of {s['reps']} runs of ~{s['budget']:g} s",
            "  the consumer gets one bytes object per message; messages per batch: "
            + ", ".join(
                f"{_batch(rows)} ({size_label(size)})"
                for size, rows in data["throughput"].items()
                if _batch(rows)
            ),
        ]
        if any("msgs_per_s" in rows.get(PYZMQ, {}) for rows in data["throughput"].values()):
            out.append(
                "  pyzmq copies every message (copy_threshold raised: by default it sends 64 KiB zero-copy, "
                "several times slower here)"
            )
        out.append(f"  {'size':<8} {'case':<34} {'msgs/s':>12} {'MB/s':>10} {'vs mp.Queue':>11}")
        for size, rows in data["throughput"].items():
            out += _rows_table(rows, size_label(size), rate_cells)
    if "latency" in data:
        out += [
            "",
            f"64-byte ping-pong round trips between two processes, microseconds, median of {s['reps']} runs",
            f"  {'':<8} {'case':<34} {'p50':>8} {'p99':>8} {'Pipe/this p50':>14} {'p99':>6}",
        ]

        def lat_cells(r: dict[str, Any]) -> str:
            ratios = (
                f"{r['pipe_p50_ratio']:>13.1f}x {r['pipe_p99_ratio']:>5.1f}x" if "pipe_p50_ratio" in r else ""
            )
            return f"{r['p50_us']:>8.2f} {r['p99_us']:>8.2f} {ratios}"

        out += _rows_table(data["latency"], "", lat_cells)
    if "idle" in data:
        out += ["", "A consumer blocked on an empty ring", f"  {'':<8} {'case':<34} {'% of a core':>12}"]
        out += _rows_table(
            data["idle"], "", lambda r: f"{r['cpu_percent']:>11.2f}% over {r['seconds']:.1f} s"
        )
    if "memory" in data:
        out += [
            "",
            "RSS (KiB) of the producer and the consumer process after the first tenth of the messages "
            "and at the end",
            f"  {'':<8} {'case':<34} {'messages':>11} {'producer':>17} {'consumer':>17} {'growth':>7}",
        ]

        def mem_cells(r: dict[str, Any]) -> str:
            (p0, p1), (c0, c1) = r["producer_rss_kib"], r["consumer_rss_kib"]
            return f"{r['messages']:>11,} {p0:>8}->{p1:<8} {c0:>8}->{c1:<8} {r['growth_kib']:>6}"

        out += _rows_table(data["memory"], "64 B", mem_cells)
    if "objects" in data:
        out += [
            "",
            f"Small objects ({data['objects']['item']}) between two processes, median of {s['reps']} runs",
            f"  {'':<8} {'case':<34} {'items/s':>12} {'':>10} {'vs mp.Queue':>11}",
        ]
        out += _rows_table(data["objects"]["rows"], "", rate_cells)
    if "async" in data:
        out += _async_table(data["async"], s)
    if "arrays" in data:
        out += _arrays_table(data["arrays"], s)
    if "bridge" in data:
        out += B.table(data, s["reps"])
    if "fanout" in data:
        out += F.table(data, s["reps"])
    if "c" in data:
        out += _c_table(data["c"])
    if "targets" in data:
        for issue in sorted({t.get("issue", 5) for t in data["targets"]}):
            mine = [t for t in data["targets"] if t.get("issue", 5) == issue]
            if all(t["met"] is None for t in mine):
                out += ["", f"Issue {issue} targets: none measured in this run"]
                continue
            out += ["", f"Issue {issue} targets, from this run"]
            for t in mine:
                mark = {True: "met", False: "MISSED", None: "n/a", "info": "info"}[t["met"]]
                out.append(f"  [{mark:>6}] {t['target']}: {t['measured']}")
    return "\n".join(out) + "\n"


def _arrays_table(arr: dict[str, Any], s: dict[str, Any]) -> list[str]:
    if "error" in arr:
        return ["", f"arrays: FAILED: {arr['error']}"]
    out = [
        "",
        f"8 MiB float32 numpy arrays between two processes, median of {s['reps']} runs "
        "(numpy.copyto: one process, the memory's speed)",
        f"  {'':<8} {'case':<34} {'arrays/s':>12} {'MB/s':>10} {'vs copyto':>10} {'vs mp.Queue':>11}",
    ]
    rows = arr["array"]["rows"]
    mpq = _rate(rows.get(A.MPQ))

    def array_cells(r: dict[str, Any]) -> str:
        vs_mpq = f"{r['msgs_per_s'] / mpq:>10.2f}x" if mpq else ""
        return f"{r['msgs_per_s']:>12,.1f} {r['mb_per_s']:>10,.0f} {r['vs_copyto']:>9.2f}x {vs_mpq}"

    out += _rows_table(rows, "8 MiB", array_cells)
    out += [
        "",
        "Bytes messages, copied or zero-copy: the producer writes every byte once, the consumer reads every "
        f"byte once; median of {s['reps']} runs",
        f"  {'size':<8} {'case':<34} {'msgs/s':>12} {'MB/s':>10} {'vs put/get':>11}",
    ]

    def cells(r: dict[str, Any]) -> str:
        vs = f"{r['vs_base']:>10.2f}x" if "vs_base" in r else ""
        return f"{r['msgs_per_s']:>12,.0f} {r['mb_per_s']:>10,.1f} {vs}"

    for size, zrows in arr["zerocopy"].items():
        out += _rows_table(zrows, size_label(size), cells)
    out += [
        "",
        "A 64-byte header and a payload: gathered by putv, or joined beforehand and put",
        f"  {'payload':<8} {'case':<34} {'msgs/s':>12} {'MB/s':>10} {'vs joined':>11}",
    ]
    for size, grows in arr["gather"].items():
        out += _rows_table(grows, size_label(size), cells)
    return out


def _async_table(aio: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"asyncio: 64-byte ping-pong round trips between two processes, each in an event loop (asyncio's "
        f"unless named), microseconds, median of {s['reps']} runs",
        f"  {'':<8} {'case':<34} {'p50':>8} {'p99':>8} {'zmq.asyncio/this p50':>21} {'p99':>6} "
        f"{'executor/this p50':>18} {'p99':>6}",
    ]

    def lat_cells(r: dict[str, Any]) -> str:
        cells = f"{r['p50_us']:>8.2f} {r['p99_us']:>8.2f}"
        for key, width in (("zmq", 20), ("executor", 17)):
            if f"{key}_p50_ratio" in r:
                cells += f" {r[f'{key}_p50_ratio']:>{width}.1f}x {r[f'{key}_p99_ratio']:>5.1f}x"
            else:
                cells += f" {'':>{width + 1}} {'':>6}"
        return cells.rstrip()

    out += _rows_table(aio["pingpong"], "", lat_cells)
    out += [
        "",
        f"asyncio: throughput, {size_label(aio['size'])}, a producer process (put loop) and a consumer "
        f"process (get loop or coroutine), median of {s['reps']} runs of ~{s['budget']:g} s",
        f"  {'size':<8} {'case':<34} {'msgs/s':>12} {'MB/s':>10} {'vs get loop':>11}",
    ]

    def rate_cells(r: dict[str, Any]) -> str:
        vs = f"{r['vs_sync_get']:>10.2f}x" if "vs_sync_get" in r else ""
        return f"{r['msgs_per_s']:>12,.0f} {r['mb_per_s']:>10,.1f} {vs}"

    out += _rows_table(aio["throughput"], size_label(aio["size"]), rate_cells)
    c = aio.get("c", {})
    if "latency" in c:
        out += [
            "",
            "C: wake-up latency of a sleeping consumer process, one 8-byte message every "
            f"{c.get('gap_us', '?')} us, microseconds",
        ]
        for name, r in c["latency"].items():
            cells = f"p50 {r['p50_us']:>8.2f}  p99 {r['p99_us']:>9.2f}"
            out.append(f"  {name:<14} {cells}  ({r['rounds']} rounds)")
    elif "error" in c:
        out += ["", f"C wake-up latency: FAILED: {c['error']}"]
    return out


def _c_table(c: dict[str, Any]) -> list[str]:
    if "throughput" not in c:
        return ["", f"C benchmark: FAILED: {c.get('error')}"]
    out = [
        "",
        f"C (bench/cbench.c): producer and consumer processes, ring {c['ring_bytes'] >> 10} KiB in /dev/shm, "
        f"median of {c['reps']} runs of ~{c['budget_s']:g} s",
        f"  {'producers':<10} {'size':<7} {'mode':<7} {'msgs/s':>14} {'GB/s':>8} {'vs memcpy':>10} "
        f"{'vs 64 MiB memcpy':>17}",
    ]
    for r in c["throughput"]:
        head = f"  {r['producers']:<10} {size_label(r['size']):<7} {r['mode']:<7}"
        if not r.get("ok"):
            out.append(f"{head} FAILED")
            continue
        out.append(
            f"{head} {r['msgs_per_s']:>14,.0f} {r['gb_per_s']:>8.2f} {r['vs_memcpy']:>9.2f}x "
            f"{r['vs_memcpy_large']:>16.2f}x"
        )
    for mc in c["memcpy"]:
        out.append(
            f"  {'memcpy':<10} {size_label(mc['size']):<7} {'':<7} {mc['msgs_per_s']:>14,.0f} "
            f"{mc['gb_per_s']:>8.2f}   (same bytes, same sizes, one process)"
        )
    out.append(
        f"  {'memcpy':<10} {'64 MiB':<7} {'':<7} {'':>14} {c['memcpy_large']['gb_per_s']:>8.2f}"
        "   (large blocks)"
    )
    pp = c["pingpong"]
    out.append(
        f"  ping-pong, 64 B, rb_write_wait/rb_read_wait: p50 {pp['p50_us']:.2f} us, p99 {pp['p99_us']:.2f} us"
        f"{'' if pp.get('ok') else ' FAILED'}"
    )
    if "error" in c:
        out.append(f"  FAILED: {c['error']}")
    return out


# -- the chart ---------------------------------------------------------------------


def chart(data: dict[str, Any], path: str) -> str | None:
    """Throughput by message size (messages/s and MB/s, log scales), one bar
    per case; returns the path, or None without matplotlib or data."""
    tp = data.get("throughput")
    if not tp:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = list(tp)
    labels = [k for k in next(iter(tp.values())) if any("msgs_per_s" in tp[s].get(k, {}) for s in sizes)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=90)
    width = 0.8 / max(len(labels), 1)
    colors = plt.get_cmap("tab10").colors
    for ax, key, title in ((axes[0], "msgs_per_s", "messages/s"), (axes[1], "mb_per_s", "MB/s")):
        for i, label in enumerate(labels):
            xs, ys = [], []
            for j, size in enumerate(sizes):
                row = tp[size].get(label, {})
                if key in row:
                    xs.append(j + (i - (len(labels) - 1) / 2) * width)
                    ys.append(row[key])
            ax.bar(xs, ys, width, label=label, color=colors[i % len(colors)])
        ax.set_yscale("log")
        ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
        ax.set_xlabel("message size")
        ax.set_title(title)
        ax.grid(axis="y", which="major", alpha=0.3)
    m = data["machine"]
    fig.suptitle(
        f"One producer and one consumer process, Python ({m['cpus']} CPUs, {m['cpu_model']}; "
        f"median of {data['settings']['reps']} runs)",
        fontsize=10,
    )
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path
