"""ringbuffer.Queue, the drop-in replacement for multiprocessing.Queue: the
queue API and its exceptions, serialization (pickle, custom dumps/loads,
unpicklable and oversize objects), close and the private file's lifetime,
and use from child processes under the fork and spawn start methods
(including a producer that exits right after its last put, a worker pool,
and ProcessPoolExecutor initializers).

The child-process functions are module-level so that spawn children can
import them.
"""

from __future__ import annotations

import concurrent.futures
import gc
import json
import multiprocessing
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter

import pytest
from _helpers import InThread, later

import ringbuffer
from ringbuffer import (
    BufferClosed,
    BufferEmpty,
    BufferFull,
    InvalidArgument,
    InvalidSize,
    Queue,
    RingBuffer,
    objqueue,
)
from ringbuffer.objqueue import DEFAULT_MAXSIZE_BYTES

AT_ONCE = 1.0  # a call that must not wait returns within this (seconds)
TIMEOUT = 0.2  # the timeout used to check that calls wait that long
JOIN = 30.0  # bound on every process join and cross-process get
METHODS = ["fork", "spawn"]

pytestmark = pytest.mark.usefixtures("watchdog")


@pytest.fixture(autouse=True, scope="module")
def no_leftover_private_files():
    """Every private ring this test process creates is removed by the end,
    except those of pickled queues, which are removed when it exits."""
    yield
    gc.collect()
    prefix = f"rbqueue-{os.getpid()}-"
    folder = objqueue._private_dir()
    at_exit = {os.path.basename(path) for path, _ in objqueue._remove_at_exit}
    assert [name for name in os.listdir(folder) if name.startswith(prefix) and name not in at_exit] == []


def rec_size(n: int) -> int:
    return (8 + n + 7) & ~7


def pickled(obj) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class Point:
    """A user class, picklable by reference (spawn children import this module)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None  # type: ignore[assignment]


def join_all(procs, timeout: float = JOIN) -> None:
    """Joins every process within `timeout`; kills stragglers; asserts exit code 0."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.1))
    stuck = [p for p in procs if p.is_alive()]
    for p in stuck:
        p.kill()
        p.join(5)
    assert not stuck, f"processes did not finish in {timeout} s: {stuck}"
    assert [p.exitcode for p in procs] == [0] * len(procs)


def get_all(q: Queue, n: int) -> list:
    return [q.get(timeout=JOIN) for _ in range(n)]


# -- child process functions (module-level for spawn) ----------------------


def child_put(q: Queue, items: list) -> None:
    for item in items:
        q.put(item)


def child_get(q: Queue, n: int, out: Queue) -> None:
    out.put([q.get(timeout=JOIN) for _ in range(n)])


def child_put_then_exit(q: Queue, n: int) -> None:
    for i in range(n):
        q.put({"i": i, "payload": "x" * 32})
    os._exit(0)  # no cleanup at all, right after the last put


def child_close(q: Queue, path: str, out: Queue) -> None:
    q.put("from child")
    q.close()
    out.put(os.path.exists(path))


def pool_producer(tasks: Queue, n: int, consumers: int) -> None:
    for i in range(n):
        tasks.put(i)
    for _ in range(consumers):
        tasks.put(None)  # one sentinel per consumer


def pool_consumer(tasks: Queue, results: Queue) -> None:
    while True:
        item = tasks.get(timeout=JOIN)
        if item is None:
            return
        results.put((item, item * item, os.getpid()))


_POOL_QUEUE: Queue | None = None


def pool_init(q: Queue) -> None:
    global _POOL_QUEUE
    _POOL_QUEUE = q


def pool_task(i: int) -> int:
    assert _POOL_QUEUE is not None
    _POOL_QUEUE.put({"task": i, "square": i * i})
    return i


def task_with_queue_argument(q: Queue, i: int) -> int:
    q.put(("arg", i))
    return i


# ===========================================================================
# The API


def test_exported():
    assert ringbuffer.Queue is Queue
    assert "Queue" in ringbuffer.__all__
    assert Queue[int] is not None  # subscriptable in annotations, as multiprocessing.queues.Queue


@pytest.mark.parametrize(
    "obj",
    [
        None,
        0,
        -1.5,
        "text é",
        b"bytes",
        {"id": 1, "name": "item", "values": [1, 2, 3]},
        {"nested": {"a": [None, (1, 2)], "b": {3, 4}}},
        list(range(50_000)),
        ["x" * 100] * 1000,
        Point(1, 2),
        (Point(3, 4), [Point(5, 6)]),
    ],
    ids=lambda o: type(o).__name__,
)
def test_put_get_objects(obj):
    with Queue() as q:
        q.put(obj)
        assert q.get(timeout=JOIN) == obj
        assert q.empty()


def test_fifo():
    with Queue(maxsize_bytes=4096) as q:
        got = []
        for i in range(1000):  # interleaved, wrapping the 4 KiB ring many times
            q.put_nowait(("item", i))
            if i >= 5:
                got.append(q.get_nowait())
        while not q.empty():
            got.append(q.get_nowait())
        assert got == [("item", i) for i in range(1000)]


def test_sizes():
    with Queue() as q:
        assert DEFAULT_MAXSIZE_BYTES == 1 << 20
        assert q.capacity == 1 << 20
        assert q.max_message_size == 1 << 19
    with Queue(maxsize_bytes=5000) as q:
        assert q.capacity == 8192
        assert q.max_message_size == 4096
    with Queue(maxsize_bytes=1) as q:
        assert q.capacity == 4096


@pytest.mark.parametrize("size, exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("1", TypeError)])
def test_bad_maxsize_bytes(size, exc):
    with pytest.raises(exc):
        Queue(maxsize_bytes=size)
    with pytest.raises(TypeError):
        Queue(maxsize_bytes=True)


# multiprocessing.Queue's constructor calls: Queue(maxsize=0) is its whole signature.
@pytest.mark.parametrize(
    "args, kwargs", [((), {}), ((0,), {}), ((-1,), {}), ((), {"maxsize": 0}), ((), {"maxsize": -5})]
)
def test_the_constructor_calls_of_multiprocessing_queue_without_a_bound_work(args, kwargs):
    mp_q = multiprocessing.Queue(*args, **kwargs)
    mp_q.close()
    with Queue(*args, **kwargs) as q:
        assert q.capacity == DEFAULT_MAXSIZE_BYTES
        q.put({"x": 1})
        assert q.get(timeout=JOIN) == {"x": 1}


@pytest.mark.parametrize("args, kwargs", [((10,), {}), ((), {"maxsize": 10}), ((1,), {}), ((1 << 20,), {})])
def test_a_bound_in_items_is_refused_saying_what_to_write_instead(args, kwargs, tmp_path):
    multiprocessing.Queue(*args, **kwargs).close()  # what multiprocessing accepts
    n = args[0] if args else kwargs["maxsize"]
    with pytest.raises(ValueError) as ei:
        Queue(*args, **kwargs, path=tmp_path / "q.ring")
    assert isinstance(ei.value, InvalidArgument)
    assert f"maxsize={n}" in str(ei.value)
    assert "Queue(maxsize_bytes=N)" in str(ei.value)
    if n >= 4096:  # probably a 0.1 caller's size in bytes
        assert f"write Queue(maxsize_bytes={n})" in str(ei.value)
    assert not (tmp_path / "q.ring").exists()


@pytest.mark.parametrize(
    "bad, exc", [(1.5, TypeError), ("3", TypeError), (True, TypeError), (None, TypeError)]
)
def test_a_maxsize_that_is_not_an_integer_is_refused(bad, exc):
    with pytest.raises(exc):
        Queue(bad)


def test_get_empty():
    with Queue() as q:
        for call in (q.get_nowait, lambda: q.get(block=False), lambda: q.get(False, 10)):
            t0 = time.monotonic()
            with pytest.raises(queue.Empty) as ei:
                call()
            assert time.monotonic() - t0 < AT_ONCE
            assert type(ei.value) is BufferEmpty
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=TIMEOUT)
        assert time.monotonic() - t0 >= TIMEOUT
        with pytest.raises(ValueError):
            q.get(timeout=-1)


def test_get_waits_for_a_put_from_another_thread():
    with Queue() as q:
        later(0.1, q.put, "late")
        assert q.get(timeout=JOIN) == "late"


def fill(q: Queue) -> int:
    """Fills q with None (16 bytes each in the ring); returns how many fit."""
    n = 0
    while True:
        try:
            q.put_nowait(None)
        except queue.Full:
            return n
        n += 1


def test_full():
    with Queue(maxsize_bytes=4096) as q:
        assert not q.full()
        assert q.empty()
        assert q.bytes_used() == 0
        assert rec_size(len(pickled(None))) == 16
        assert fill(q) == 256
        assert q.full()
        assert not q.empty()
        assert q.bytes_used() == 4096
        for call in (lambda: q.put_nowait(1), lambda: q.put(1, block=False), lambda: q.put(1, False, 10)):
            t0 = time.monotonic()
            with pytest.raises(queue.Full) as ei:
                call()
            assert time.monotonic() - t0 < AT_ONCE
            assert type(ei.value) is BufferFull
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put(1, timeout=TIMEOUT)
        assert time.monotonic() - t0 >= TIMEOUT
        assert q.get_nowait() is None
        assert not q.full()
        q.put_nowait(None)
        assert q.full()


def test_put_waits_for_a_get_from_another_thread():
    with Queue(maxsize_bytes=4096) as q:
        fill(q)
        assert rec_size(len(pickled("after"))) == 32  # two Nones must go
        later(0.1, lambda: [q.get(), q.get()])
        q.put("after", timeout=JOIN)
        got = [q.get_nowait() for _ in range(255)]
        assert got == [None] * 254 + ["after"]


def test_bytes_used_and_empty():
    with Queue() as q:
        objs = [None, {"id": 1}, "x" * 1000]
        for i, obj in enumerate(objs):
            q.put(obj)
            assert q.bytes_used() == sum(rec_size(len(pickled(o))) for o in objs[: i + 1])
            assert not q.empty()
        for obj in objs:
            assert q.get_nowait() == obj
        assert q.empty()
        assert q.bytes_used() == 0


def test_qsize_counts_messages():
    with Queue() as q:
        assert q.qsize() == 0
        q.put(1)
        q.put_many(["a", {"b": 2}, None])
        assert q.qsize() == 4
        q.get()
        assert q.qsize() == 3
        with RingBuffer.open(q.path) as rb, rb.peek():  # another consumer keeps the read turn
            with pytest.raises(NotImplementedError, match="busy"):
                q.qsize()
        assert q.qsize() == 2  # the peek consumed one
    with pytest.raises(ValueError):
        q.qsize()  # closed


# -- serialization ---------------------------------------------------------


def local_lambda():
    return lambda: 1


@pytest.mark.parametrize(
    "obj",
    [local_lambda(), threading.Lock(), (i for i in range(3)), {"ok": 1, "bad": threading.Lock()}],
    ids=["lambda", "lock", "generator", "dict-with-lock"],
)
def test_unpicklable_raises_in_caller_and_leaves_queue_untouched(obj):
    with Queue() as q:
        q.put("before")
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)) as ei:
            q.put(obj)
        # The traceback runs through put() in this process (no feeder thread).
        assert any(entry.name == "put" for entry in ei.traceback)
        if sys.version_info >= (3, 11):
            assert any("ringbuffer.Queue.put" in note for note in ei.value.__notes__)
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            q.put_many([1, obj, 2])  # all or nothing
        assert q.get_nowait() == "before"
        assert q.empty()
        assert q.bytes_used() == 0


def test_oversize_object_raises_valueerror_at_once():
    with Queue(maxsize_bytes=4096) as q:
        big = b"x" * 3000
        n = len(pickled(big))
        fill(q)  # also when full: no wait for space that could never be enough
        t0 = time.monotonic()
        with pytest.raises(ValueError) as ei:
            q.put(big)  # blocking, no timeout
        assert time.monotonic() - t0 < AT_ONCE
        assert isinstance(ei.value, InvalidSize)
        assert f"{n} bytes" in str(ei.value)
        assert "2048 bytes" in str(ei.value)
        with pytest.raises(ValueError):
            q.put_many([None, big])
        assert q.bytes_used() == 4096  # nothing changed
    with Queue(maxsize_bytes=4096, dumps=bytes, loads=bytes) as q:
        q.put(b"y" * 2048)  # exactly the maximum fits
        assert q.get_nowait() == b"y" * 2048
        with pytest.raises(ValueError, match="2049 bytes"):
            q.put(b"y" * 2049)


def test_raw_bytes_dumps_loads():
    with Queue(dumps=bytes, loads=bytes) as q:
        q.put(b"abc")
        q.put(bytearray(b"de"))
        q.put(memoryview(b"fgh"))
        assert [q.get_nowait() for _ in range(3)] == [b"abc", b"de", b"fgh"]
        # The ring holds exactly those bytes: other programs can use it directly.
        with RingBuffer.open(q.path) as rb:
            q.put(b"to raw")
            assert rb.get_nowait() == b"to raw"
            rb.put(b"from raw")
            assert q.get_nowait() == b"from raw"
        with pytest.raises(ValueError, match="empty"):
            q.put(b"")


def test_json_dumps_loads():
    with Queue(dumps=json.dumps, loads=json.loads) as q:
        q.put({"a": [1, 2], "b": None})  # json.dumps returns str: encoded as UTF-8
        q.put("é")
        assert q.get_nowait() == {"a": [1, 2], "b": None}
        assert q.get_nowait() == "é"
        with RingBuffer.open(q.path) as rb:
            q.put([1])
            assert rb.get_nowait() == b"[1]"
        with pytest.raises(TypeError):
            q.put({1, 2})  # not JSON: the caller sees json's error
        assert q.empty()


def test_dumps_returning_a_wrong_type():
    with Queue(dumps=lambda obj: 42) as q:
        with pytest.raises(TypeError, match="bytes-like"):
            q.put("x")
        assert q.empty()
    with pytest.raises(TypeError):
        Queue(dumps="not callable")


def test_bad_arguments_create_no_file(tmp_path):
    path = tmp_path / "q.ring"
    with pytest.raises(TypeError):
        Queue(path=path, loads=42)
    with pytest.raises(ValueError):
        Queue(maxsize_bytes=0, path=path)
    with pytest.raises(ValueError):
        Queue(10, path=path)
    assert not path.exists()


def test_loads_error_propagates_in_get():
    def bad_loads(data: bytes):
        raise RuntimeError("cannot load")

    with Queue(loads=bad_loads) as q:
        q.put(1)
        with pytest.raises(RuntimeError, match="cannot load"):
            q.get_nowait()
        assert q.empty()  # consumed, as with multiprocessing.Queue


def test_threads_share_a_queue():
    with Queue(maxsize_bytes=4096) as q:
        producers = [InThread(q.put_many, [(t, i) for i in range(500)]) for t in range(4)]
        got = [q.get(timeout=JOIN) for _ in range(2000)]
        for th in producers:
            th.join(JOIN)
            assert th.exc is None
        for t in range(4):  # each producer's items in its order
            assert [i for tt, i in got if tt == t] == list(range(500))


# -- batches ---------------------------------------------------------------


def test_put_many_get_many():
    with Queue() as q:
        assert q.put_many([]) == 0
        assert q.put_many(range(100)) == 100  # any iterable
        assert q.put_many(iter(["a", "b"])) == 2
        assert q.get_many(10) == list(range(10))
        assert q.get_many(1000) == [*range(10, 100), "a", "b"]
        with pytest.raises(queue.Empty):
            q.get_many(10, block=False)
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get_many(10, timeout=TIMEOUT)
        assert time.monotonic() - t0 >= TIMEOUT


def test_put_many_stops_when_full():
    with Queue(maxsize_bytes=4096) as q:
        assert q.put_many([None] * 300, block=False) == 256
        assert q.put_many([None] * 10, block=False) == 0
        t0 = time.monotonic()
        assert q.put_many([None] * 10, timeout=TIMEOUT) == 0
        assert time.monotonic() - t0 >= TIMEOUT
        assert len(q.get_many(1000)) == 256
        assert q.put_many(list(range(300)), block=False) == 256


# -- close, files, pickling -------------------------------------------------


def test_close():
    q = Queue()
    q.put(1)
    q.join_thread()  # no-ops, before and after close
    q.cancel_join_thread()
    assert not q.closed
    q.close()
    assert q.closed
    calls = [
        lambda: q.put(1),
        lambda: q.put_nowait(1),
        lambda: q.put_many([1]),
        q.get,
        q.get_nowait,
        lambda: q.get_many(1),
        q.empty,
        q.full,
        q.bytes_used,
        lambda: pickle.dumps(q),
        lambda: q.__enter__(),
    ]
    for call in calls:
        with pytest.raises(ValueError) as ei:
            call()
        assert isinstance(ei.value, BufferClosed)
    q.close()  # idempotent
    q.join_thread()
    q.cancel_join_thread()


def test_close_wakes_a_get_blocked_in_another_thread():
    q = Queue()
    waiter = InThread(q.get)
    time.sleep(0.1)
    q.close()
    waiter.join(JOIN)
    assert isinstance(waiter.exc, BufferClosed)


def test_private_file_removed_on_close():
    q = Queue()
    path = q.path
    if os.path.isdir("/dev/shm"):
        assert os.path.dirname(path) == "/dev/shm"
    assert os.path.exists(path)
    other = Queue.open(path)  # a handle opened before close keeps working
    q.put("kept")
    q.close()
    assert not os.path.exists(path)
    assert other.get_nowait() == "kept"
    other.put("still works")
    assert other.get_nowait() == "still works"
    other.close()


def test_private_file_removed_when_garbage_collected():
    q = Queue()
    path = q.path
    del q
    gc.collect()
    assert not os.path.exists(path)


def test_private_file_elsewhere_without_dev_shm(monkeypatch, tmp_path):
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: False if p == "/dev/shm" else real_isdir(p))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Queue() as q:
        assert os.path.dirname(q.path) == str(tmp_path)
        q.put(1)
        assert q.get_nowait() == 1
    assert os.listdir(tmp_path) == []


def test_only_the_creating_process_removes_the_file():
    with Queue() as q:
        objqueue._remove_private(q.path, os.getpid() + 1)  # as a fork child's finalizer would
        assert os.path.exists(q.path)


def test_context_manager():
    with Queue() as q:
        q.put("x")
        assert q.get() == "x"
        path = q.path
    assert q.closed
    assert not os.path.exists(path)


def test_named_path(tmp_path):
    path = str(tmp_path / "named.ring")
    q = Queue(maxsize_bytes=8192, path=path)
    assert q.path == path
    assert q.capacity == 8192
    q.put({"left": "behind"})
    q.close()
    assert os.path.exists(path)  # never removed automatically
    with pytest.raises(FileExistsError):
        Queue(path=path)  # an existing file is never wiped
    with Queue.open(path) as again:
        assert again.get_nowait() == {"left": "behind"}
    assert os.path.exists(path)


def test_pickle_in_process():
    with Queue(dumps=json.dumps, loads=json.loads) as q:
        copy = pickle.loads(pickle.dumps(q))
        assert copy.path == q.path
        copy.put({"via": "copy"})  # the same ring, the same dumps/loads
        assert q.get_nowait() == {"via": "copy"}
        with RingBuffer.open(q.path) as rb:
            copy.put([2])
            assert rb.get_nowait() == b"[2]"
        copy.close()  # not the creator: the file stays
        assert os.path.exists(q.path)
        q.put(1)
        assert q.get_nowait() == 1


def test_a_pickled_private_queue_outlives_close_until_the_creator_exits():
    q = Queue()
    data = pickle.dumps(q)
    q.put("still there")
    q.close()  # pickled: a child may not have opened it yet, so the file stays
    other = pickle.loads(data)
    assert other.get_nowait() == "still there"
    other.close()
    assert os.path.exists(q.path)
    done = run_script("""
        import pickle
        from ringbuffer import Queue
        q = Queue()
        pickle.dumps(q)
        q.close()
        print(q.path)
        """)
    assert not os.path.exists(done.stdout.strip())  # removed when its creator exited


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_close_right_after_starting_children(method):
    """multiprocessing.Queue's usual pattern: start children, put, close and
    join_thread at once, then join: the children still open the queue."""
    ctx = multiprocessing.get_context(method)
    q, out = Queue(), Queue()
    p = ctx.Process(target=child_get, args=(q, 10, out))
    p.start()
    for i in range(10):
        q.put(i)
    q.close()
    q.join_thread()
    p.join(JOIN)
    assert p.exitcode == 0
    assert out.get(timeout=JOIN) == list(range(10))


def run_script(code: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=JOIN, check=True)


def test_named_queue_opened_by_an_unrelated_process(tmp_path):
    path = str(tmp_path / "shared.ring")
    with Queue(path=path) as q:
        run_script(f"""
            from ringbuffer import Queue
            with Queue.open({path!r}) as q:
                q.put({{"from": "other process"}})
                q.put_many(range(3))
            """)
        assert q.get_nowait() == {"from": "other process"}
        assert q.get_many(10) == [0, 1, 2]


def test_private_file_removed_when_the_creator_exits_without_close():
    out = run_script("""
        import os, sys
        from ringbuffer import Queue
        q = Queue()
        q.put("never read")
        pid = os.fork()
        if pid == 0:  # a forked child using the inherited queue, exiting normally (atexit runs)
            q.put("from child")
            q.close()
            sys.exit(0)
        os.waitpid(pid, 0)
        print(q.path)
        print(os.path.exists(q.path))
        assert q.get(timeout=5) == "never read"
        assert q.get(timeout=5) == "from child"
        """)
    path, exists_after_child = out.stdout.split()
    assert exists_after_child == "True"  # the child's exit did not remove the parent's file
    assert not os.path.exists(path)


# ===========================================================================
# Child processes


@pytest.mark.parametrize("method", METHODS)
def test_child_puts_parent_gets(method):
    ctx = multiprocessing.get_context(method)
    items = [{"id": i, "data": "x" * (i % 200)} for i in range(2000)]
    with Queue(maxsize_bytes=4096) as q:  # small: the child waits for space
        p = ctx.Process(target=child_put, args=(q, items))
        p.start()
        assert get_all(q, len(items)) == items
        join_all([p])
        assert q.empty()


@pytest.mark.parametrize("method", METHODS)
def test_parent_puts_child_gets(method):
    ctx = multiprocessing.get_context(method)
    items = [(i, Point(i, -i)) for i in range(2000)]
    with Queue(maxsize_bytes=4096) as q, Queue() as out:
        p = ctx.Process(target=child_get, args=(q, len(items), out))
        p.start()
        for item in items:
            q.put(item, timeout=JOIN)
        assert out.get(timeout=JOIN) == items
        join_all([p])


@pytest.mark.parametrize("method", METHODS)
def test_child_exits_right_after_put(method):
    """No feeder thread: what put() returned from is in the ring, even if the
    child then leaves with os._exit (multiprocessing.Queue can lose it)."""
    ctx = multiprocessing.get_context(method)
    with Queue() as q:
        p = ctx.Process(target=child_put_then_exit, args=(q, 1000))
        p.start()
        join_all([p])  # the child is gone before anything is read
        got = [q.get_nowait() for _ in range(1000)]
        assert [d["i"] for d in got] == list(range(1000))
        assert q.empty()


@pytest.mark.parametrize("method", METHODS)
def test_child_close_keeps_the_private_file(method):
    ctx = multiprocessing.get_context(method)
    with Queue() as q, Queue() as out:
        p = ctx.Process(target=child_close, args=(q, q.path, out))
        p.start()
        assert out.get(timeout=JOIN) is True
        join_all([p])
        assert os.path.exists(q.path)
        assert q.get_nowait() == "from child"
        q.put("parent still works")
        assert q.get_nowait() == "parent still works"


def test_worker_pool():
    """One producer, three consumers (spawn), a sentinel per consumer: every
    item is processed exactly once; results come back through a second queue."""
    ctx = multiprocessing.get_context("spawn")
    n, consumers = 3000, 3
    with Queue(maxsize_bytes=16384) as tasks, Queue() as results:
        procs = [ctx.Process(target=pool_producer, args=(tasks, n, consumers))]
        procs += [ctx.Process(target=pool_consumer, args=(tasks, results)) for _ in range(consumers)]
        for p in procs:
            p.start()
        got = [results.get(timeout=JOIN) for _ in range(n)]
        join_all(procs)
        counts = Counter(item for item, _, _ in got)
        assert sorted(counts) == list(range(n))
        assert set(counts.values()) == {1}
        assert all(square == item * item for item, square, _ in got)
        assert {pid for _, _, pid in got} <= {p.pid for p in procs[1:]}
        assert tasks.empty()
        assert results.empty()


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_executor_initializer(method):
    ctx = multiprocessing.get_context(method)
    with Queue() as q:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=2, mp_context=ctx, initializer=pool_init, initargs=(q,)
        ) as pool:
            assert list(pool.map(pool_task, range(20), timeout=JOIN)) == list(range(20))
            # Unlike multiprocessing.Queue, it can also be a task's argument.
            assert pool.submit(task_with_queue_argument, q, 7).result(timeout=JOIN) == 7
        got = [q.get(timeout=JOIN) for _ in range(21)]
        assert sorted(d["task"] for d in got if isinstance(d, dict)) == list(range(20))
        assert all(d["square"] == d["task"] ** 2 for d in got if isinstance(d, dict))
        assert ("arg", 7) in got
        assert q.empty()
