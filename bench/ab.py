"""A/B of the library at two revisions: does a change cost speed? (Issue 12:
"the default group costs nothing": main, before consumer groups, against
the working tree.)

    python bench/ab.py [--a REV] [--b REV] [--rounds N] [--budget S] [--out DIR]
    invoke bench-ab [--a REV] [--b REV] [--rounds N]

Each side (a git revision, or WORKTREE for the working tree as it is, with
uncommitted changes) is copied into a folder of its own (``git archive``)
and built there: the C library (``make -C csrc``), the Python extension
(a wheel, ``pip install --target``) and *this* tree's ``bench/cbench.c``
linked against that side's library, so that only the library differs.
Each side makes its own ring files (the file format may differ).

Four figures: the two that issue 5 set and issue 12 must keep,
- Python, 64 B ``put``/``get`` between a producer and a consumer process
  (fork), as the suite's "ringbuffer put/get" row: a pool of distinct
  messages built before the clock, the consumer counts the messages and
  bytes and checks the last; from the producer's first put to the
  consumer's last get. Every run of both sides moves the same number of
  messages (from a calibration run of side A, about --budget seconds).
- C, 1 producer and 1 consumer process, 64 B, rb_write_wait/rb_read_wait
  (``cbench --case 1,64,single --reps 1``);
and the same paths' cost per call in one process, which the scheduling of
two processes (and other work on the machine) moves much less: a loop of
``put`` + ``get`` of one 64-byte message in one Python process, and of
``rb_write`` + ``rb_read`` in C (``cbench --pair``), pairs per second.
The runs interleave, A B B A A B ...: each round runs both sides, in
alternating order, so that drift in the machine's load weighs on both
alike. Reported: each side's median, the ratio of the medians (B/A) and
the median of the rounds' ratios; B is "within 5%" when that ratio is at
least 0.95. Results on stdout and in --out (default bench/results) as
``ab.txt`` and ``ab.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKTREE = "WORKTREE"
SIZE = 64
RING_BYTES = 4 << 20
POOL = 65536  # distinct messages the producer cycles through (as bench/workers.py: 8 MiB or 65536)
FIGURES = {
    "py": "Python 64 B put/get, 1 producer + 1 consumer process, msgs/s",
    "c": "C 64 B rb_write_wait/rb_read_wait, 1 producer + 1 consumer process, msgs/s",
    "py_pair": "Python 64 B put + get in one process, pairs/s",
    "c_pair": "C 64 B rb_write + rb_read in one thread, pairs/s",
}


# -- the Python figure, in a child process that imports one side's package ---------


def _py_producer(path: str, n: int, ready: Any, start: Any, out: Any) -> None:
    import itertools

    from ringbuffer import RingBuffer

    rb = RingBuffer.open(path)
    pool = _pool()
    put = rb.put
    ready.set()
    start.wait()
    t0 = time.monotonic()
    for msg in itertools.islice(itertools.cycle(pool), n):
        put(msg)
    out.send(t0)
    rb.close()


def _py_consumer(path: str, n: int, ready: Any, start: Any, out: Any) -> None:
    from ringbuffer import RingBuffer

    rb = RingBuffer.open(path)
    last_expected = _pool()[(n - 1) % POOL]
    get = rb.get
    ready.set()
    start.wait()
    total = 0
    msg = b""
    for _ in range(n):
        msg = get()
        total += len(msg)
    t1 = time.monotonic()
    out.send((t1, total, msg == last_expected))
    rb.close()


def _pool() -> list[bytes]:
    import random

    rnd = random.Random(SIZE)
    return [rnd.randbytes(SIZE) for _ in range(POOL)]


def child_pair(folder: str, seconds: float) -> dict[str, Any]:
    """put + get of one 64-byte message in a loop, in this process, for
    about ``seconds``; returns the pairs per second."""
    import ringbuffer
    from ringbuffer import RingBuffer

    _check_module(ringbuffer.__file__, folder)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="rb-ab-", dir=shm)
    try:
        rb = RingBuffer(os.path.join(tmp, "pair.ring"), RING_BYTES)
        put, get = rb.put, rb.get
        msg = _pool()[0]
        pairs = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(4096):
                put(msg)
                get()
            pairs += 4096
            t1 = time.perf_counter()
            if t1 >= end:
                break
        rb.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"pairs_per_s": pairs / (t1 - t0), "module": ringbuffer.__file__}


def _check_module(path: str, folder: str) -> None:
    if not os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep):
        raise SystemExit(f"imported {path}, not the build in {folder}")


def child_py(folder: str, n: int) -> dict[str, Any]:
    """One run in this process (whose sys.path starts with the side's
    folder): n messages; returns the rate."""
    import multiprocessing as mp

    import ringbuffer
    from ringbuffer import RingBuffer

    _check_module(ringbuffer.__file__, folder)
    ctx = mp.get_context("fork")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="rb-ab-", dir=shm)
    path = os.path.join(tmp, "ab.ring")
    try:
        RingBuffer(path, RING_BYTES).close()
        start = ctx.Event()
        readies = [ctx.Event(), ctx.Event()]
        pipes = [ctx.Pipe(duplex=False), ctx.Pipe(duplex=False)]
        procs = [
            ctx.Process(target=f, args=(path, n, r, start, s), daemon=True)
            for f, r, (_, s) in zip((_py_producer, _py_consumer), readies, pipes)
        ]
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(60):
                raise SystemExit("a process did not get ready")
        start.set()
        results = []
        for recv, _ in pipes:
            if not recv.poll(120):
                raise SystemExit("no result within 120 s")
            results.append(recv.recv())
        for p in procs:
            p.join(10)
        t0, (t1, total, last_ok) = results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if total != n * SIZE or not last_ok:
        raise SystemExit(
            f"check failed: {total} bytes of {n * SIZE}, last message {'right' if last_ok else 'wrong'}"
        )
    return {"msgs_per_s": n / (t1 - t0), "messages": n, "seconds": t1 - t0, "module": ringbuffer.__file__}


# -- building a side --------------------------------------------------------------


def run(cmd: list[str], **kw: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


def describe(rev: str) -> str:
    if rev == WORKTREE:
        head = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--", "csrc", "ringbuffer"]).strip()
        return f"working tree (HEAD {head}{', with uncommitted changes to the library' if dirty else ''})"
    sha = run(["git", "-C", ROOT, "rev-parse", "--short", rev]).strip()
    return f"{rev} ({sha})"


def export(rev: str, folder: str) -> None:
    os.makedirs(folder)
    if rev == WORKTREE:
        # Tracked files as they are now, and new files not ignored.
        files = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        for rel in filter(None, files.split("\0")):
            src = os.path.join(ROOT, rel)
            if not os.path.isfile(src):  # deleted but still in the index
                continue
            os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(folder, rel))
    else:
        archive = subprocess.Popen(
            ["git", "-C", ROOT, "archive", "--format=tar", rev], stdout=subprocess.PIPE
        )
        run(["tar", "-x", "-C", folder], stdin=archive.stdout)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {rev} failed")


def build(rev: str, folder: str) -> dict[str, str]:
    """Builds the side into folder; returns its paths."""
    print(f"ab: building {describe(rev)} in {folder}", file=sys.stderr, flush=True)
    export(rev, folder)
    run(["make", "-s", "-C", os.path.join(folder, "csrc")])
    # A wheel, as users get it (pip's isolated build has the setuptools
    # pyproject.toml needs), unpacked into site/.
    site = os.path.join(folder, "site")
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, folder])
    bench_build = os.path.join(folder, "bench-build")
    run(
        [
            "make",
            "-s",
            "-C",
            os.path.join(ROOT, "bench"),
            f"SRC={folder}/csrc",
            f"BUILD={bench_build}",
            "cbench",
        ]
    )
    return {"folder": folder, "site": site, "cbench": os.path.join(bench_build, "cbench")}


# -- one run of each figure --------------------------------------------------------


def py_once(side: dict[str, str], n: int) -> float:
    env = {**os.environ, "PYTHONPATH": side["folder"]}
    out = run(
        [sys.executable, os.path.abspath(__file__), "--child-py", side["folder"], str(n)],
        env=env,
        timeout=300,
    )
    return float(json.loads(out)["msgs_per_s"])


def py_pair_once(side: dict[str, str], seconds: float) -> float:
    env = {**os.environ, "PYTHONPATH": side["site"]}
    cmd = [sys.executable, os.path.abspath(__file__), "--child-pair", side["site"], str(seconds)]
    return float(json.loads(run(cmd, env=env, timeout=300))["pairs_per_s"])


def c_pair_once(side: dict[str, str], seconds: float) -> float:
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    cmd = [side["cbench"], "--pair", "--reps", "1", "--budget", str(seconds), "--dir", shm]
    out = json.loads(run(cmd, timeout=300))
    if not out.get("ok"):
        raise SystemExit(f"cbench --pair failed its checks: {out}")
    return float(out["pair"]["pairs_per_s"])


def c_once(side: dict[str, str], budget: float) -> float:
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    cmd = [side["cbench"], "--case", "1,64,single", "--reps", "1", "--budget", str(budget), "--dir", shm]
    out = json.loads(run(cmd, timeout=300))
    row = out["throughput"][0]
    if not row.get("ok"):
        raise SystemExit(f"cbench failed its checks: {row}")
    return float(row["msgs_per_s"])


def summary(name: str, a: list[float], b: list[float]) -> dict[str, Any]:
    ratios = [y / x for x, y in zip(a, b)]
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "figure": name,
        "a_median": ma,
        "b_median": mb,
        "ratio_of_medians": mb / ma,
        "median_ratio": statistics.median(ratios),
        "within_5_percent": statistics.median(ratios) >= 0.95,
        # The best run of each: what other work on the machine took the
        # least from (timeit's rule), a check on the medians when it is busy.
        "a_best": max(a),
        "b_best": max(b),
        "ratio_of_best": max(b) / max(a),
        "a_runs": a,
        "b_runs": b,
        "ratios": ratios,
    }


def busy_note(data: dict[str, Any]) -> str:
    """A warning when other work kept the machine's CPUs busy."""
    load = max(data["load_average_before"][0], data["load_average_after"][0])
    if load < 0.5 * (data["cpus"] or 1):
        return ""
    return (
        f"\n  WARNING: other work kept the machine busy (load average {load:.1f} on {data['cpus']} CPUs): "
        "the runs move with it; run again on a quiet machine before trusting a 5% verdict"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python bench/ab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--a", default="main", help="the revision before (default main)")
    ap.add_argument(
        "--b", default=WORKTREE, help=f"the revision after (default {WORKTREE}: the working tree)"
    )
    ap.add_argument(
        "--rounds", type=int, default=7, help="rounds of A and B, each figure (default 7, at least 5)"
    )
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per Python run (C: half of it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="results folder")
    ap.add_argument("--keep", action="store_true", help="keep the build folders (their path is printed)")
    ap.add_argument("--child-py", nargs=2, metavar=("FOLDER", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--child-pair", nargs=2, metavar=("FOLDER", "SECONDS"), help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child_py:
        print(json.dumps(child_py(opts.child_py[0], int(opts.child_py[1]))))
        return 0
    if opts.child_pair:
        print(json.dumps(child_pair(opts.child_pair[0], float(opts.child_pair[1]))))
        return 0
    if opts.rounds < 5:
        ap.error("--rounds must be at least 5")

    t_start = time.monotonic()
    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix="rb-ab-build-")
    try:
        sides = {"a": build(opts.a, os.path.join(work, "a")), "b": build(opts.b, os.path.join(work, "b"))}
        # The same number of messages for every Python run of both sides.
        warm = py_once(sides["a"], 100_000)
        n = max(100_000, int(warm * opts.budget))
        py_once(sides["b"], 100_000)  # B's warm-up
        print(f"ab: Python runs of {n:,} messages", file=sys.stderr, flush=True)
        figs: dict[str, dict[str, list[float]]] = {k: {"a": [], "b": []} for k in FIGURES}
        for r in range(opts.rounds):
            order = ("a", "b") if r % 2 == 0 else ("b", "a")
            for key in FIGURES:
                for s in order:
                    if key == "py":
                        value = py_once(sides[s], n)
                    elif key == "c":
                        value = c_once(sides[s], opts.budget / 2)
                    elif key == "py_pair":
                        value = py_pair_once(sides[s], opts.budget / 2)
                    else:
                        value = c_pair_once(sides[s], opts.budget / 2)
                    figs[key][s].append(value)
            print(
                f"ab: round {r + 1} of {opts.rounds} (A / B): "
                + ", ".join(f"{key} {v['a'][-1]:,.0f} / {v['b'][-1]:,.0f}" for key, v in figs.items()),
                file=sys.stderr,
                flush=True,
            )
    finally:
        if opts.keep:
            print(f"ab: builds kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    data = {
        "a": describe(opts.a),
        "b": describe(opts.b),
        "rounds": opts.rounds,
        "python_messages": n,
        "seconds": time.monotonic() - t_start,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "figures": [summary(name, figs[key]["a"], figs[key]["b"]) for key, name in FIGURES.items()],
    }
    lines = [
        f"A/B, {opts.rounds} interleaved rounds ({data['seconds']:.0f} s, {data['cpus']} CPUs, "
        f"{data['date']})",
        f"  A: {data['a']}",
        f"  B: {data['b']}",
        "  load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}{}".format(
            *data["load_average_before"],
            *data["load_average_after"],
            busy_note(data),
        ),
        "  medians of the rounds (B/A: of the medians; rounds B/A: the median of each round's ratio); best: "
        "the best run of each side",
        f"  {'figure':<76} {'A':>13} {'B':>13} {'B/A':>6} {'rounds B/A':>11} {'best B/A':>9}",
    ]
    for f in data["figures"]:
        lines.append(
            f"  {f['figure']:<76} {f['a_median']:>13,.0f} {f['b_median']:>13,.0f} "
            f"{f['ratio_of_medians']:>6.3f} {f['median_ratio']:>11.3f} {f['ratio_of_best']:>9.3f}"
        )
        spread = ", ".join(f"{x:.2f}" for x in f["ratios"])
        lines.append(f"    each round's B/A: {spread}")
    lines.append("")
    for f in data["figures"]:
        mark = "met" if f["within_5_percent"] else "MISSED"
        lines.append(
            f"  [{mark:>6}] issue 12: {f['figure']}: B within 5% of A (median of the rounds' B/A >= 0.95): "
            f"{f['median_ratio']:.3f}"
        )
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "ab.txt"), "w") as fh:
        fh.write(text)
    with open(os.path.join(opts.out, "ab.json"), "w") as fh:
        json.dump(data, fh, indent=2)
    sys.stdout.write(f"\nresults: {os.path.join(opts.out, 'ab.txt')}, ab.json\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
