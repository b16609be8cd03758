"""The "arrays" group of ``invoke bench`` (issue 14): large data between two
processes.

1. 8 MiB float32 numpy arrays: ``ringbuffer.Queue`` (pickle protocol 5,
   out-of-band buffers) and ``RingBuffer.put_array``/``get_array`` next to
   multiprocessing.Queue, faster-fifo (pickled) and pyzmq (``send(copy=False)``,
   rebuilt with ``numpy.frombuffer``), and a single-process ``numpy.copyto``
   of the same blocks (the memory's speed) measured in the same run.
2. Bytes messages of 64 B, 64 KiB and 1 MiB, copied (``put``/``get``)
   against zero-copy (``put_with``/``get_with`` and the ``reserve``/``peek``
   blocks). Both sides do the same useful work: the producer writes every
   byte of each message once (into a reusable buffer that ``put`` then
   copies, or straight into the ring) and the consumer reads every byte
   once (``touch``: ``zlib.crc32`` below 4 KiB, where numpy's call costs
   more than the pass, ``numpy.max`` above), from the ``bytes`` ``get``
   returns or from the view in the ring.
3. A 64-byte header plus a 64 KiB or 1 MiB payload: ``putv([header,
   payload])`` against ``put`` of the same message joined beforehand.

Every case runs in fresh processes through the suite's ``run_children``;
the medians of --reps interleaved runs; ratios from this run only.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable

from ringbuffer import Queue as RingQueue
from ringbuffer import RingBuffer

if TYPE_CHECKING:
    from bench.suite import Suite

Work = Callable[[], Any]

ARRAY_SHAPE = (2048, 1024)  # float32: 8 MiB
ARRAY_BYTES = 8 << 20
# Room for several arrays in flight (a message is at most half the ring).
ARRAY_CHANNEL = 64 << 20
BYTES_CHANNEL = 16 << 20
HEADER = 64

MPQ = "multiprocessing.Queue put/get"
QUEUE = "ringbuffer.Queue put/get"
PUT_ARRAY = "ringbuffer put_array/get_array"
FF = "faster-fifo put/get"
ZMQ = "pyzmq send(copy=False)/frombuffer"
COPYTO = "numpy.copyto, one process"
ARRAY_CASES = ((QUEUE, "queue"), (PUT_ARRAY, "ring"), (MPQ, "mpq"), (FF, "faster-fifo"), (ZMQ, "pyzmq"))

COPY = "put/get"
CALLBACKS = "put_with/get_with"
BLOCKS = "reserve/peek blocks"
ZC_SIZES = (64, 64 << 10, 1 << 20)
ZC_CASES = (COPY, CALLBACKS, BLOCKS)

JOINED = "put of the joined message"
PUTV = "putv([header, payload])"
GATHER_SIZES = (64 << 10, 1 << 20)
GATHER_CASES = (JOINED, PUTV)

PEER_OF = {"faster-fifo": "faster-fifo", "pyzmq": "pyzmq"}


# -- channels --------------------------------------------------------------------


def make_array_channel(kind: str, ctx: Any, folder: str, name: str) -> tuple[Any, Any]:
    """(producer spec, consumer spec) of an array channel."""
    if kind == "queue":
        q = RingQueue(maxsize_bytes=ARRAY_CHANNEL, path=os.path.join(folder, f"{name}.queue"))
        return ("queue", q), ("queue", q)
    if kind == "ring":
        path = os.path.join(folder, f"{name}.ring")
        RingBuffer(path, ARRAY_CHANNEL).close()
        return ("ring", path), ("ring", path)
    if kind == "mpq":
        q = ctx.Queue()
        return ("queue", q), ("queue", q)
    if kind == "faster-fifo":
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=ARRAY_CHANNEL)
        return ("faster-fifo", q), ("faster-fifo", q)
    if kind == "pyzmq":
        addr = f"ipc://{os.path.join(folder, name)}.sock"
        return ("zmq-push", addr), ("zmq-pull", addr)
    raise ValueError(kind)


def _zmq_socket(addr: str, pull: bool) -> Any:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PULL if pull else zmq.PUSH)
    if pull:
        sock.bind(addr)
    else:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 5)
        sock.connect(addr)
        if not sock.poll(30_000, zmq.POLLOUT):
            raise TimeoutError(f"could not connect to {addr}")
    return sock


# -- array workers (run in the child processes) -------------------------------------


POOL = 3  # distinct arrays a producer cycles through, never modified once built


def array_producer(spec: Any, n: int) -> Work:
    """Sends n 8 MiB float32 arrays, cycling through POOL of them whose
    elements all equal their place in the pool (built before the clock
    starts, and never modified after: multiprocessing.Queue pickles in a
    feeder thread later, and pyzmq's copy=False sends the array's own
    memory). Returns (start, end)."""
    import numpy as np

    kind, arg = spec
    pool = [np.full(ARRAY_SHAPE, k, dtype=np.float32) for k in range(POOL)]
    if kind == "ring":
        send: Callable[[Any], Any] = RingBuffer.open(arg).put_array
    elif kind == "queue":
        send = arg.put
    elif kind == "faster-fifo":
        send = lambda a: arg.put(a, timeout=3600)  # noqa: E731
    else:
        sock = _zmq_socket(arg, pull=False)
        send = lambda a: sock.send(a, copy=False)  # noqa: E731

    def work() -> tuple[float, float]:
        t0 = time.monotonic()
        for a in itertools.islice(itertools.cycle(pool), n):
            send(a)
        return t0, time.monotonic()

    return work


def array_consumer(spec: Any, n: int) -> Work:
    """Receives n arrays, ending with one ndarray per message; checks the
    shape, the dtype and the first and last elements (the array's place in
    the producer's pool). Returns (count, all right, end)."""
    import numpy as np

    kind, arg = spec
    if kind == "ring":
        recv: Callable[[], Any] = RingBuffer.open(arg).get_array
    elif kind == "queue":
        recv = arg.get
    elif kind == "faster-fifo":
        recv = lambda: arg.get(timeout=3600)  # noqa: E731
    else:
        sock = _zmq_socket(arg, pull=True)

        def recv() -> Any:
            frame = sock.recv(copy=False)
            return np.frombuffer(frame.buffer, dtype=np.float32).reshape(ARRAY_SHAPE)

    def work() -> tuple[int, bool, float]:
        ok = True
        for i in range(n):
            a = recv()
            k = i % POOL
            ok = ok and a.shape == ARRAY_SHAPE and a.dtype == np.float32 and a.flat[0] == k == a.flat[-1]
        return n, ok, time.monotonic()

    return work


# -- bytes workers ------------------------------------------------------------------


def touch(view: Any) -> Any:
    """Reads every byte of a message once (see the module's docstring)."""
    if len(view) < 4096:
        return zlib.crc32(view)
    import numpy as np

    return np.frombuffer(view, np.uint8).max()


def _source(size: int) -> bytes:
    return os.urandom(size)


def zc_producer(path: str, case: str, size: int, n: int) -> Work:
    """Writes n messages of ``size`` bytes, each byte written once by the
    producer (see the module's docstring). Returns (start, end)."""
    rb = RingBuffer.open(path)
    src = _source(size)

    if case == COPY:
        buf = bytearray(size)
        put = rb.put

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for _ in range(n):
                buf[:] = src
                put(buf)
            return t0, time.monotonic()

    elif case == CALLBACKS:
        put_with = rb.put_with

        def fill(view: memoryview) -> None:
            view[:] = src

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for _ in range(n):
                put_with(size, fill)
            return t0, time.monotonic()

    else:
        reserve = rb.reserve

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for _ in range(n):
                with reserve(size, block=True) as view:
                    view[:] = src
            return t0, time.monotonic()

    return work


def zc_consumer(path: str, case: str, size: int, n: int) -> Work:
    """Reads n messages, touching every byte of each. Returns (count, bytes, end)."""
    rb = RingBuffer.open(path)

    if case == COPY:
        get = rb.get

        def work() -> tuple[int, int, float]:
            total = 0
            for _ in range(n):
                msg = get()
                touch(msg)
                total += len(msg)
            return n, total, time.monotonic()

    elif case == CALLBACKS:
        get_with = rb.get_with

        def work() -> tuple[int, int, float]:
            total = 0
            for _ in range(n):
                get_with(touch)
                total += size
            return n, total, time.monotonic()

    else:
        peek = rb.peek

        def work() -> tuple[int, int, float]:
            total = 0
            for _ in range(n):
                with peek(block=True) as view:
                    touch(view)
                    total += len(view)
            return n, total, time.monotonic()

    return work


def gather_producer(path: str, case: str, size: int, n: int) -> Work:
    """Writes n messages of a 64-byte header and a ``size``-byte payload:
    joined beforehand (put), or gathered by putv. Returns (start, end)."""
    rb = RingBuffer.open(path)
    header, payload = _source(HEADER), _source(size)
    joined = header + payload

    if case == JOINED:
        put = rb.put

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for _ in range(n):
                put(joined)
            return t0, time.monotonic()

    else:
        putv = rb.putv
        parts = [header, payload]

        def work() -> tuple[float, float]:
            t0 = time.monotonic()
            for _ in range(n):
                putv(parts)
            return t0, time.monotonic()

    return work


def gather_consumer(path: str, case: str, size: int, n: int) -> Work:
    """Reads n messages (get, touching every byte). Returns (count, bytes, end)."""
    return zc_consumer(path, COPY, size + HEADER, n)


# -- the group (runs in the suite's process) --------------------------------------


def _copyto_rate(seconds: float) -> float:
    """8 MiB blocks per second that numpy.copyto moves in this process."""
    import numpy as np

    src = np.ones(ARRAY_SHAPE, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or n < 5:
        np.copyto(dst, src)
        n += 1
    return n / elapsed


def _array_once(suite: Suite, kind: str, n: int) -> float:
    from bench.suite import CaseError, run_children

    name = suite.name()
    tx, rx = make_array_channel(kind, suite.ctx, suite.folder, name)
    try:
        (t0, _), (count, ok, t1) = run_children(
            suite, [(array_producer, (tx, n)), (array_consumer, (rx, n))], 120 + 40 * suite.settings.budget
        )
    finally:
        for spec in (tx, rx):
            if spec[0] in ("queue", "faster-fifo") and hasattr(spec[1], "close"):
                spec[1].close()
        _remove(suite, name)
    if count != n or not ok:
        raise CaseError(f"check failed: {count} arrays of {n}, contents {'right' if ok else 'wrong'}")
    return t1 - t0


def _bytes_once(suite: Suite, workers: tuple[Any, Any], case: str, size: int, n: int) -> float:
    from bench.suite import CaseError, run_children

    name = suite.name()
    path = os.path.join(suite.folder, f"{name}.ring")
    RingBuffer(path, BYTES_CHANNEL).close()
    producer, consumer = workers
    try:
        (t0, _), (count, total, t1) = run_children(
            suite,
            [(producer, (path, case, size, n)), (consumer, (path, case, size, n))],
            60 + 40 * suite.settings.budget,
        )
    finally:
        _remove(suite, name)
    want = n * (size + HEADER if producer is gather_producer else size)
    if count != n or total != want:
        raise CaseError(f"check failed: {count} messages of {n}, {total} bytes of {want}")
    return t1 - t0


def _remove(suite: Suite, name: str) -> None:
    for suffix in (".ring", ".queue", ".sock"):
        path = os.path.join(suite.folder, name + suffix)
        if os.path.exists(path):
            os.remove(path)


def _measure(suite: Suite, cases: dict[str, Any], once: Callable[[str, int], float], first_n: int) -> None:
    """Calibrates each case's count to --budget seconds from one untimed run
    (also the warm-up), then runs every case --reps times, interleaved;
    fills each case's row with its median rate."""
    from bench.suite import CaseError, interleaved, progress

    counts: dict[str, int] = {}
    for label, row in cases.items():
        if "skipped" in row:
            continue
        progress(f"arrays: {label}: calibrating")
        try:
            rate = first_n / once(label, first_n)
            counts[label] = max(first_n, int(rate * suite.settings.budget))
        except CaseError as exc:
            row["error"] = str(exc)
    times = interleaved(suite, cases, counts, "arrays", once)
    for label, n in counts.items():
        row = cases[label]
        if "error" not in row:
            median = statistics.median(times[label])
            row.update({"messages": n, "runs_s": times[label], "msgs_per_s": n / median})


def group(suite: Suite) -> None:
    import importlib.util

    if importlib.util.find_spec("numpy") is None:
        suite.results["arrays"] = {"error": "numpy is not installed (pip install -e '.[bench]')"}
        return
    s = suite.settings
    kinds = dict(ARRAY_CASES)
    arrays: dict[str, Any] = {}
    for label, kind in ARRAY_CASES:
        peer = PEER_OF.get(kind)
        arrays[label] = {"skipped": suite.missing[peer]} if peer and not suite.available(peer) else {}
    _measure(suite, arrays, lambda label, n: _array_once(suite, kinds[label], n), 4 if s.quick else 10)
    copyto = {"msgs_per_s": statistics.median(_copyto_rate(s.budget / 2) for _ in range(s.reps))}
    arrays[COPYTO] = copyto
    for row in arrays.values():
        if "msgs_per_s" in row:
            row["mb_per_s"] = row["msgs_per_s"] * ARRAY_BYTES / 1e6
            row["vs_copyto"] = row["msgs_per_s"] / copyto["msgs_per_s"]

    zerocopy: dict[str, Any] = {}
    for size in ZC_SIZES:
        rows: dict[str, Any] = {case: {} for case in ZC_CASES}
        first = max(20, min(20000, (8 << 20) // size))
        _measure(
            suite,
            rows,
            lambda case, n, size=size: _bytes_once(suite, (zc_producer, zc_consumer), case, size, n),
            first,
        )
        _ratios(rows, COPY, size)
        zerocopy[str(size)] = rows

    gather: dict[str, Any] = {}
    for size in GATHER_SIZES:
        rows = {case: {} for case in GATHER_CASES}
        first = max(20, (8 << 20) // size)
        _measure(
            suite,
            rows,
            lambda case, n, size=size: _bytes_once(suite, (gather_producer, gather_consumer), case, size, n),
            first,
        )
        _ratios(rows, JOINED, size + HEADER)
        gather[str(size)] = rows
    suite.results["arrays"] = {
        "array": {"shape": list(ARRAY_SHAPE), "dtype": "float32", "bytes": ARRAY_BYTES, "rows": arrays},
        "zerocopy": zerocopy,
        "gather": gather,
    }


def _ratios(rows: dict[str, Any], base_label: str, size: int) -> None:
    base = rows.get(base_label, {})
    for row in rows.values():
        if "msgs_per_s" in row:
            row["mb_per_s"] = row["msgs_per_s"] * size / 1e6
            if "msgs_per_s" in base:
                row["vs_base"] = row["msgs_per_s"] / base["msgs_per_s"]
