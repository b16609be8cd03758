"""Hostile input (issue 4): wrong types, wrong sizes, closed handles and odd
timeouts thrown at every public method of RingBuffer and Queue (hypothesis);
files that are not rings; misuse of existing files; creation on a nearly full
file system.

The property tests call one method per example on a fresh ring in a drawn
state (positions wrapped, some messages waiting, full, closed, closed from
another thread) and hold it to an oracle: with a bad argument (or a closed
handle) the call raises one of the exceptions documented for it and changes
nothing; with good arguments it does exactly what the documentation says.
Then the ring must still work: what comes out is exactly what went in, in
order, and a fresh message round-trips between two handles with consistent
positions. A call that would wait forever gets a helper thread that brings
what it waits for; one that still hangs is woken by close() and reported.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest
from _helpers import HEADER_SIZE, OFF_VERSION, poke_u32
from _hostile import (
    CAP,
    CLI,
    HYPOTHESIS,
    OMIT,
    QUEUE_CALLS,
    RING_CALLS,
    BadIndex,
    Harness,
    check_call,
    check_fixtures,
    create_path_errors,
    expect_error,
    expect_ok,
    expected_capacity,
    kwargs_of,
    make_fixtures,
    open_path_errors,
    openings,
    path_arg,
    pattern,
    pickled,
    states,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ringbuffer
from ringbuffer import (
    CorruptBuffer,
    InvalidArgument,
    Queue,
    RingBuffer,
    UnsupportedVersion,
)
from ringbuffer import objqueue as objqueue_module
from ringbuffer.ring import lib

pytestmark = pytest.mark.usefixtures("watchdog")


@pytest.fixture(scope="module")
def folder():
    d = tempfile.mkdtemp(prefix="rb-hostile-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("method", RING_CALLS)
@HYPOTHESIS
@given(state=states(), data=st.data())
def test_ringbuffer_hostile_calls(folder, method, state, data):
    call = data.draw(RING_CALLS[method], label="call")
    h = Harness(folder, state)
    event(f"state: {'empty' if not h.model else 'full' if not h.fits(1) else 'some'}")
    try:
        check_call(h, call)
        h.check_still_works()
    finally:
        h.close()


@pytest.mark.parametrize("method", QUEUE_CALLS)
@HYPOTHESIS
@given(state=states(), data=st.data())
def test_queue_hostile_calls(folder, method, state, data):
    call = data.draw(QUEUE_CALLS[method], label="call")
    h = Harness(folder, state, queue=True)
    try:
        check_call(h, call)
        h.check_still_works()
    finally:
        h.close()


# ===========================================================================
# what the property tests found, pinned down


def later_write(path: str, msg: bytes, delay: float = 0.05) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        with RingBuffer.open(path) as rb:
            rb.write(msg)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


UNBOUNDED = [math.inf, 1e308, 10**400, 2**64]


@pytest.mark.parametrize("timeout", UNBOUNDED, ids=["inf", "1e308", "10**400", "2**64"])
def test_unbounded_timeouts_wait_like_none(ring, ring_path, timeout):
    # They used to raise OverflowError (int(inf * 1e9), or float(10**400)),
    # some even when no wait was needed.
    calls = {
        "get": lambda: ring.get(timeout=timeout),
        "get_many": lambda: ring.get_many(3, timeout=timeout),
        "read_into": lambda: bytes(buf[: ring.read_into(buf, block=True, timeout=timeout)]),
        "peek": lambda: peek_bytes(ring, timeout),
    }
    buf = bytearray(64)
    for name, call in calls.items():
        ring.write(b"there")  # no wait needed
        assert call() in (b"there", [b"there"]), name
        t = later_write(str(ring_path), b"later")  # a wait, ended by another thread
        assert call() in (b"later", [b"later"]), name
        t.join()
    with ring.reserve(5, block=True, timeout=timeout) as view:
        view[:] = b"abcde"
    assert ring.read() == b"abcde"
    ring.put(b"put", timeout=timeout)
    assert ring.put_many([b"a", b"b"], timeout=timeout) == 2
    assert ring.drain() == [b"put", b"a", b"b"]
    # a full ring, emptied by another thread
    n = fill_ring(ring)
    drainer = threading.Timer(0.05, lambda: RingBuffer.open(ring_path).read_many(n))
    drainer.start()
    ring.put(b"x" * 1000, timeout=timeout)
    drainer.join()
    assert ring.drain() == [b"x" * 1000]


def peek_bytes(rb: RingBuffer, timeout) -> bytes:
    with rb.peek(block=True, timeout=timeout) as view:
        return bytes(view)


def fill_ring(rb: RingBuffer, size: int = 1000) -> int:
    n = 0
    while rb.try_write(bytes([n % 256]) * size):
        n += 1
    return n


def test_queue_unbounded_timeouts_wait_like_none(tmp_path):
    path = str(tmp_path / "q.ring")
    with Queue(maxsize_bytes=CAP, path=path) as q:
        for timeout in UNBOUNDED:
            q.put({"t": 1}, timeout=timeout)
            assert q.get(timeout=timeout) == {"t": 1}
            assert q.put_many([1, 2], timeout=timeout) == 2
            assert q.get_many(5, timeout=timeout) == [1, 2]
            t = threading.Timer(0.05, lambda: Queue.open(path).put("later"))
            t.start()
            assert q.get(timeout=timeout) == "later"
            t.join()


BLOCKING_CALLS = {
    "get": lambda rb, t: rb.get(timeout=t),
    "get(True, t)": lambda rb, t: rb.get(True, t),
    "get_many": lambda rb, t: rb.get_many(2, timeout=t),
    "get_many(0)": lambda rb, t: rb.get_many(0, timeout=t),
    "read_into": lambda rb, t: rb.read_into(bytearray(64), block=True, timeout=t),
    "peek": lambda rb, t: peek_bytes(rb, t),
    "reserve": lambda rb, t: rb.reserve(4, block=True, timeout=t).__enter__(),
    "put": lambda rb, t: rb.put(b"new", timeout=t),
    "put_many": lambda rb, t: rb.put_many([b"new"], timeout=t),
    "put_many([])": lambda rb, t: rb.put_many([], timeout=t),
}


@pytest.mark.parametrize(
    "timeout", [math.nan, -1, -math.inf, -(10**400)], ids=["nan", "-1", "-inf", "-10**400"]
)
@pytest.mark.parametrize("name", BLOCKING_CALLS)
def test_bad_timeouts_are_value_errors_even_when_no_wait_is_needed(ring, name, timeout):
    # NaN used to mean "do not wait" (and put_many([b"new"], timeout=nan) wrote);
    # get_many(0) and put_many([]) used to skip the check.
    ring.write(b"waiting")
    with pytest.raises(ValueError, match="timeout") as ei:
        BLOCKING_CALLS[name](ring, timeout)
    assert not isinstance(ei.value, ringbuffer.RingBufferError)
    assert ring.drain() == [b"waiting"]
    assert ring.positions()[0] == ring.positions()[1]


@pytest.mark.parametrize("timeout", [math.nan, -1])
def test_queue_bad_timeouts_are_value_errors_even_when_no_wait_is_needed(tmp_path, timeout):
    with Queue(maxsize_bytes=CAP, path=tmp_path / "q.ring") as q:
        q.put("waiting")
        for call in (
            lambda: q.put("x", timeout=timeout),
            lambda: q.put_many([], timeout=timeout),
            lambda: q.put_many(["x"], timeout=timeout),
            lambda: q.get(timeout=timeout),
            lambda: q.get_many(0, timeout=timeout),
            lambda: q.get_many(3, timeout=timeout),
        ):
            with pytest.raises(ValueError, match="timeout"):
                call()
        # not blocking: the timeout is ignored, as with queue.Queue
        q.put("y", block=False, timeout=timeout)
        assert q.get_many(5, block=False, timeout=timeout) == ["waiting", "y"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros(16, np.uint8)[::2],
        lambda: np.zeros((4, 4), np.uint8, order="F"),
        lambda: np.zeros(16, np.uint8)[::-1],
        lambda: np.broadcast_to(np.zeros(1, np.uint8), (16,)),
        lambda: np.frombuffer(b"read only bytes!", np.uint8),
    ],
    ids=["strided", "fortran", "reversed", "broadcast", "read-only"],
)
def test_read_into_numpy_arrays_it_cannot_fill_raise_type_error(ring, make):
    # numpy refuses these exports with ValueError, which used to escape.
    ring.write(b"kept")
    with pytest.raises(TypeError, match="writable, C-contiguous"):
        ring.read_into(make())
    with pytest.raises(TypeError):
        ring.read_into(make(), block=True, timeout=1)
    assert ring.read() == b"kept"


READ_INTO_OBJECTS = r"""
import sys
import numpy as np
from ringbuffer import RingBuffer
rb = RingBuffer(sys.argv[1], 4096)
rb.write(b"\x01" * 64)
for target in (np.array([None] * 8, dtype=object), memoryview(np.array([1, "a"] * 4, dtype=object)),
               np.zeros(4, dtype=[("a", "i4"), ("Obj", "O")])):
    try:
        rb.read_into(target)
    except TypeError as e:
        assert "Python objects" in str(e), e
    else:
        raise SystemExit("read_into wrote over PyObject pointers")
    print(repr(target)[:20])  # crashes if the pointers were overwritten
assert rb.read() == b"\x01" * 64
named = np.zeros(2, dtype=[("Ox", "i4"), ("Oy", "f8")])  # an "O" only in the field names: plain numbers
rb.write(b"\x02" * named.nbytes)
assert rb.read_into(named) == named.nbytes
print("survived")
"""


def test_read_into_an_array_of_python_objects_is_refused(tmp_path):
    # Writing bytes over PyObject pointers (a numpy array of dtype object)
    # crashed the interpreter at the next use of the array (as io's
    # readinto() does); in a child process, in case it still does.
    proc = subprocess.run(
        [sys.executable, "-c", READ_INTO_OBJECTS, str(tmp_path / "r.ring")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().endswith("survived\n")


def test_open_through_a_symlink_says_so(ring, ring_path):
    # O_NOFOLLOW's ELOOP reads "Too many levels of symbolic links" (there is one).
    link = ring_path.parent / "link.ring"
    link.symlink_to(ring_path)
    for opener in (RingBuffer.open, Queue.open):
        with pytest.raises(OSError) as ei:
            opener(link)
        assert ei.value.errno == errno.ELOOP
        assert ei.value.filename == str(link)
        assert "symbolic link" in str(ei.value) and "Too many levels" not in str(ei.value)
    err = cli_error("info", link)
    assert str(link) in err and "is a symbolic link" in err
    # a symlink loop in a directory is still reported as such
    loop = ring_path.parent / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError) as ei:
        RingBuffer.open(loop / "x.ring")
    assert ei.value.errno == errno.ELOOP


def cli_error(*args) -> str:
    """Runs the command line; asserts it failed with one line on stderr; returns it."""
    proc = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1, (proc.returncode, err)
    assert err.startswith("ringbuffer: error: ") and err.count("\n") == 1, err
    return err


# ===========================================================================
# module functions


MODULE_FUNCTIONS = {
    "c_version": lambda v: isinstance(v, int) and v > 0,
    "format_version": lambda v: isinstance(v, int) and v > 0,
    "get_include": lambda v: os.path.isfile(os.path.join(v, "ringbuf.h")),
    "get_library_dir": lambda v: os.path.isfile(os.path.join(v, "libringbuf.so.0")),
    "get_pkgconfig_dir": lambda v: os.path.isfile(os.path.join(v, "ringbuf.pc")),
}


@pytest.mark.parametrize("name", MODULE_FUNCTIONS)
@pytest.mark.parametrize(
    "args", [(1,), (None,), ("x", b"y"), (BadIndex(),)], ids=["int", "None", "two", "BadIndex"]
)
def test_module_functions_refuse_arguments(name, args):
    fn = getattr(ringbuffer, name)
    before = fn()
    assert MODULE_FUNCTIONS[name](before)
    with pytest.raises(TypeError):
        fn(*args)
    with pytest.raises(TypeError):
        fn(path="x")
    assert fn() == before


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(o=openings())
def test_create_and_open_with_hostile_arguments(folder, o):
    d = tempfile.mkdtemp(dir=folder)
    try:
        make_fixtures(d)
        path = None if o.path == "private" else path_arg(o.path, d)
        kw = {}
        if o.op == "RingBuffer":
            remove = False if o.remove is OMIT or o.remove.errors else o.remove.truth
            errors = o.size.errors + o.remove.errors + o.mode.errors + create_path_errors(o.path, remove)
            kw = kwargs_of(remove=o.remove, mode=o.mode)
            fn = lambda: RingBuffer(path, o.size.obj, **kw)  # noqa: E731
        elif o.op == "RingBuffer.open":
            remove = False
            errors = open_path_errors(o.path)
            fn = lambda: RingBuffer.open(path)  # noqa: E731
        elif o.op == "Queue":
            remove = False
            private = o.path in ("private", "None")  # path=None: a private queue under /dev/shm
            path_errors = () if private else create_path_errors(o.path, False)
            errors = o.size.errors + o.dumps.errors + o.loads.errors + path_errors
            kw = kwargs_of(dumps=o.dumps, loads=o.loads)
            fn = lambda: Queue(maxsize_bytes=o.size.obj, path=path, **kw)  # noqa: E731
        else:
            remove = False
            errors = o.dumps.errors + o.loads.errors + open_path_errors(o.path)
            kw = kwargs_of(dumps=o.dumps, loads=o.loads)
            fn = lambda: Queue.open(path, **kw)  # noqa: E731
        try:
            obj, exc = fn(), None
        except Exception as e:
            obj, exc = None, e
        if errors:
            expect_error(exc, errors, repr(o))
            if o.path == "symlink-to-ring" and "open" in o.op and not (o.dumps.errors or o.loads.errors):
                assert exc.errno == errno.ELOOP and "symbolic link" in str(exc)
            if isinstance(exc, OSError) and path is not None:
                assert exc.filename is not None and exc.filename in (
                    path_arg("new", d),
                    os.fsdecode(os.fspath(path)),
                )
            check_fixtures(d, None)
            return
        expect_ok(exc, repr(o))
        with obj:
            created = o.op in ("RingBuffer", "Queue")
            assert obj.capacity == (expected_capacity(o.size.n) if created else CAP)
            assert obj.max_message_size == obj.capacity // 2
            if o.op in ("RingBuffer", "RingBuffer.open"):
                obj.write(b"round trip")
                if o.path == "exists-ring" and not created:
                    assert obj.read() == b"old"
                assert obj.read() == b"round trip"
                obj.write(b"old")  # (leave old.ring as it was)
            else:
                old = o.path == "exists-ring" and not created
                if old:
                    assert obj._ring.read() == b"old"  # not a pickle
                obj.put({"round": "trip"})
                assert obj.get(timeout=5) == {"round": "trip"}
                if old:
                    obj._ring.write(b"old")
            ring_file = obj.path
        if o.op == "Queue" and o.path in ("private", "None"):
            assert not os.path.exists(ring_file)  # removed by close()
        replaced = {
            "exists-ring": "old.ring",
            "exists-file": "file.txt",
            "fifo": "fifo",
            "symlink-to-ring": "link.ring",
        }
        if created and remove and o.path in replaced:
            assert stat.S_ISREG(os.lstat(ring_file).st_mode)
            os.unlink(ring_file)
            make_fixtures_again(d, replaced[o.path])
        check_fixtures(d, None)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_fixtures_again(d: str, name: str) -> None:
    """Puts back the fixture a remove=True replaced."""
    p = os.path.join(d, name)
    if name == "old.ring":
        with RingBuffer(p, CAP) as rb:
            rb.write(b"old")
    elif name == "file.txt":
        with open(p, "wb") as f:
            f.write(b"precious")
    elif name == "fifo":
        os.mkfifo(p)
    else:
        os.symlink(os.path.join(d, "old.ring"), p)


# ===========================================================================
# files that are not rings


def no_hang(fn: Callable[[], Any], limit: float = 10.0) -> tuple[Any, BaseException | None]:
    """Runs fn in a thread; fails the test (instead of hanging it) if it does not return."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((fn(), None))
        except BaseException as e:
            box.append((None, e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"{fn} hung for {limit} s"
    return box[0]


@pytest.fixture
def not_rings(tmp_path, ring_path):
    """name -> (path, expected exception type, errno or None)."""
    RingBuffer(ring_path, CAP).close()
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "short").write_bytes(b"RINGBUF\0" + bytes(92))
    with open(tmp_path / "sparse", "wb") as f:  # 1 TiB of nothing
        f.truncate(1 << 40)
    (tmp_path / "link.ring").symlink_to(ring_path)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link-dir").symlink_to(tmp_path / "dir")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "socket"))
    sock.listen(1)
    ring_copy = tmp_path / "other-version.ring"
    shutil.copy(ring_path, ring_copy)
    poke_u32(ring_copy, OFF_VERSION, ringbuffer.format_version() + 1)
    cases = {
        "symlink-to-ring": (tmp_path / "link.ring", OSError, errno.ELOOP),
        "dangling-symlink": (tmp_path / "dangling", OSError, errno.ELOOP),
        "symlink-to-dir": (tmp_path / "link-dir", OSError, errno.ELOOP),
        "directory": (tmp_path / "dir", IsADirectoryError, errno.EISDIR),
        "fifo": (tmp_path / "fifo", CorruptBuffer, None),
        "socket": (tmp_path / "socket", OSError, errno.ENXIO),
        "empty-file": (tmp_path / "empty", CorruptBuffer, None),
        "short-file": (tmp_path / "short", CorruptBuffer, None),
        "sparse-1TiB": (tmp_path / "sparse", CorruptBuffer, None),
        "other-version": (ring_copy, UnsupportedVersion, None),
        "/dev/null": ("/dev/null", CorruptBuffer, None),
        "/dev/zero": ("/dev/zero", CorruptBuffer, None),
        "/dev/full": ("/dev/full", CorruptBuffer, None),
        "/dev/urandom": ("/dev/urandom", CorruptBuffer, None),
        "/proc/self/mem": ("/proc/self/mem", CorruptBuffer, None),
        "/proc/self/status": ("/proc/self/status", CorruptBuffer, None),
        "/proc/self/fd/0": ("/proc/self/fd/0", OSError, errno.ELOOP),
        "/proc": ("/proc", IsADirectoryError, errno.EISDIR),
    }
    yield {k: v for k, v in cases.items() if not str(v[0]).startswith("/") or os.path.lexists(v[0])}
    sock.close()


NOT_RINGS = [
    "symlink-to-ring",
    "dangling-symlink",
    "symlink-to-dir",
    "directory",
    "fifo",
    "socket",
    "empty-file",
    "short-file",
    "sparse-1TiB",
    "other-version",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/urandom",
    "/proc/self/mem",
    "/proc/self/status",
    "/proc/self/fd/0",
    "/proc",
]


@pytest.mark.parametrize("kind", NOT_RINGS)
def test_open_a_file_that_is_not_a_ring(not_rings, kind):
    if kind not in not_rings:
        pytest.skip(f"{kind} does not exist here")
    path, exc_type, err = not_rings[kind]
    for opener in (RingBuffer.open, Queue.open, lambda p: Queue.open(p, dumps=bytes, loads=bytes)):
        result, exc = no_hang(lambda opener=opener: opener(path))
        assert result is None, f"{kind}: opened as a ring"
        assert type(exc) is exc_type or (exc_type is OSError and type(exc) is OSError), repr(exc)
        assert str(path) in str(exc), f"the message does not name the file: {exc}"
        if err is not None:
            assert exc.errno == err and exc.filename == str(path)
        else:
            assert exc.code == (lib.RB_EVERSION if exc_type is UnsupportedVersion else lib.RB_ECORRUPT)
        if err == errno.ELOOP and os.path.islink(path):
            assert "symbolic link" in str(exc)
    if str(path).startswith(("/dev", "/proc")):
        return  # (creating there would put a temporary file in /dev)
    before = os.lstat(path)
    for create in (lambda: RingBuffer(path, CAP), lambda: Queue(maxsize_bytes=CAP, path=path)):
        result, exc = no_hang(create)
        assert type(exc) is FileExistsError and exc.filename == str(path), repr(exc)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        before.st_size,
        before.st_mtime_ns,
    )
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".ringbuf-")]


@pytest.mark.parametrize(
    "kind",
    [
        "symlink-to-ring",
        "directory",
        "fifo",
        "socket",
        "empty-file",
        "sparse-1TiB",
        "other-version",
        "/dev/zero",
        "/proc/self/mem",
    ],
)
def test_command_line_on_a_file_that_is_not_a_ring(not_rings, kind):
    path = not_rings[kind][0]
    for command in ("info", "read"):
        err_line = cli_error(command, path)
        assert str(path) in err_line
        if kind == "symlink-to-ring":
            assert "symbolic link" in err_line
        elif kind == "other-version":
            assert f"({ringbuffer.format_version()})" in err_line


NOBODY = 65534


def run_as_nobody(check: Callable[[], int]) -> int:
    """Runs check() in a forked child switched to user 'nobody' (this
    interpreter may not be executable by it); returns its exit code."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 99
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = check()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_open_without_permission_as_another_user():
    # Root reads everything: the check runs as 'nobody' (RingBuffer.open is
    # in test_api.py; here Queue.open and the command line).
    import io

    from ringbuffer import cli

    folder = tempfile.mkdtemp(prefix="rb-perm-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "private.ring")
        RingBuffer(path, CAP).close()  # mode 0600, owned by root

        def check() -> int:
            for opener in (Queue.open, lambda p: Queue.open(p, dumps=bytes, loads=bytes)):
                try:
                    opener(path)
                except PermissionError as e:
                    if e.errno != errno.EACCES or e.filename != path:
                        return 2
                else:
                    return 3
            sys.stderr = io.StringIO()
            if cli.main(["info", path]) != 1:
                return 4
            err = sys.stderr.getvalue()
            return 0 if "Permission denied" in err and path in err and err.count("\n") == 1 else 5

        assert run_as_nobody(check) == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ===========================================================================
# misuse of existing files


def test_create_over_an_existing_ring_in_use_keeps_it_intact(ring_path):
    msgs = [pattern(n, n) for n in (1, 100, 999, 5, 1500)]
    with RingBuffer(ring_path, CAP) as rb, RingBuffer.open(ring_path) as reader:
        assert rb.write_many(msgs) == len(msgs)
        assert reader.read() == msgs[0]
        before = ring_path.read_bytes()
        attempts = [
            (lambda: RingBuffer(ring_path, CAP), FileExistsError),
            (lambda: RingBuffer(ring_path, 1 << 20), FileExistsError),
            (lambda: RingBuffer(ring_path, 1, remove=False, mode=0o644), FileExistsError),
            (lambda: RingBuffer(ring_path, 0), InvalidArgument),
            (lambda: RingBuffer(ring_path, 2**40), InvalidArgument),
            (lambda: Queue(maxsize_bytes=CAP, path=ring_path), FileExistsError),
            (lambda: Queue(maxsize_bytes=1 << 20, path=str(ring_path)), FileExistsError),
        ]
        for attempt, exc_type in attempts:
            with pytest.raises(exc_type):
                attempt()
        err = cli_error("create", ring_path, "--size", "64k")
        assert str(ring_path) in err and "exists" in err
        assert ring_path.read_bytes() == before
        assert os.listdir(ring_path.parent) == [ring_path.name]
        # both handles still work, and a new one sees the same ring
        with RingBuffer.open(ring_path) as third:
            assert third.capacity == CAP and third.read() == msgs[1]
        assert reader.read_many(10) == msgs[2:]
        rb.write(b"still works")
        assert reader.read() == b"still works"


def test_create_over_an_existing_non_ring_file_keeps_it_intact(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    for attempt in (lambda: RingBuffer(path, CAP), lambda: Queue(maxsize_bytes=CAP, path=path)):
        with pytest.raises(FileExistsError):
            attempt()
    cli_error("create", path, "--size", "4k")
    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("version", [0, ringbuffer.format_version() + 1, 0xFFFFFFFF])
def test_queue_and_command_line_on_a_ring_of_another_version(ring_path, version):
    with RingBuffer(ring_path, CAP) as rb:
        rb.write(pickled("kept"))
    poke_u32(ring_path, OFF_VERSION, version)
    before = ring_path.read_bytes()
    ours = f"({ringbuffer.format_version()})"
    for opener in (Queue.open, lambda p: Queue.open(p, dumps=bytes, loads=bytes)):
        with pytest.raises(UnsupportedVersion) as ei:
            opener(ring_path)
        assert isinstance(ei.value, CorruptBuffer) and ei.value.code == lib.RB_EVERSION
        assert ours in str(ei.value) and str(ring_path) in str(ei.value)
    for args in (
        ["info", ring_path],
        ["info", "--json", ring_path],
        ["read", ring_path],
        ["write", ring_path],
    ):
        err = cli_error(*args)
        assert "format version" in err and ours in err and str(ring_path) in err
    with pytest.raises(FileExistsError):
        Queue(maxsize_bytes=CAP, path=ring_path)
    assert ring_path.read_bytes() == before  # nothing wrote to it


# ===========================================================================
# a (nearly) full file system: ENOSPC at creation, never SIGBUS later


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs mounted for the test (needs root, or skips)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        import gc

        gc.collect()  # a closed RingBuffer keeps its mapping until collected
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30, check=False).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30, check=False)


def free_bytes(path) -> int:
    st_ = os.statvfs(path)
    return st_.f_bavail * st_.f_frsize


def leave_free(mnt, nbytes: int) -> None:
    """Fills the file system with a regular file until exactly nbytes are free."""
    free = free_bytes(mnt)
    assert free >= nbytes and (free - nbytes) % 4096 == 0
    with open(mnt / "filler", "wb") as f:
        f.write(b"\xff" * (free - nbytes))
    assert free_bytes(mnt) == nbytes


def assert_enospc(create: Callable[[], Any], path) -> None:
    with pytest.raises(OSError) as ei:
        create()
    assert ei.value.errno == errno.ENOSPC, ei.value
    assert ei.value.filename == str(path)
    assert "No space left" in str(ei.value)


WORK_THROUGH_CAPACITY = r"""
import sys
from ringbuffer import RingBuffer
rb = RingBuffer.open(sys.argv[1])
i = 0
for lap in range(4):  # fill to the last byte, read back; four times round the ring
    sent = []
    while True:
        m = bytes([i % 251]) * (1 + (i * 397) % rb.max_message_size)
        if not rb.try_write(m):
            break
        sent.append(m)
        i += 1
    head, tail = rb.positions()
    free = rb.capacity - (tail - head)
    if free >= 16:
        m = bytes([7]) * (free - 8)
        rb.write(m)  # exactly to the end
        sent.append(m)
    head, tail = rb.positions()
    assert tail - head == rb.capacity, (head, tail)
    assert rb.drain() == sent
print("worked through", i, "messages")
"""


def work_through_capacity(path) -> None:
    """Writes the ring full and reads it back, in a child: a SIGBUS must not kill pytest."""
    proc = subprocess.run(
        [sys.executable, "-c", WORK_THROUGH_CAPACITY, str(path)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode()[-2000:])


def test_ring_larger_than_the_file_system_fails_at_creation(small_fs):
    path = small_fs / "big.ring"
    free = free_bytes(small_fs)
    for create in (
        lambda: RingBuffer(path, 1 << 20),
        lambda: RingBuffer(path, 1 << 20, remove=True),
        lambda: RingBuffer(path, free),  # the data fits, not the header
        lambda: RingBuffer(path, 2**32),  # the largest capacity there is
        lambda: Queue(maxsize_bytes=1 << 20, path=path),
    ):
        assert_enospc(create, path)
        assert os.listdir(small_fs) == []  # no temporary file, no target
        assert free_bytes(small_fs) == free
    err = cli_error("create", path, "--size", "1M")
    assert "No space left on device" in err and str(path) in err
    assert os.listdir(small_fs) == []


def test_ring_that_just_does_not_fit_then_one_that_just_fits(small_fs):
    leave_free(small_fs, HEADER_SIZE + 4096)  # a 4096-byte ring: header, slot and group tables, data
    path = small_fs / "r.ring"
    assert_enospc(lambda: RingBuffer(path, 8192), path)
    assert_enospc(lambda: RingBuffer(path, 4097), path)
    assert sorted(os.listdir(small_fs)) == ["filler"] and free_bytes(small_fs) == HEADER_SIZE + 4096
    RingBuffer(path, 4096).close()
    assert free_bytes(small_fs) == 0  # every block reserved up front
    work_through_capacity(path)
    # with nothing left, the next creation fails cleanly too
    assert_enospc(lambda: RingBuffer(small_fs / "s.ring", 4096), small_fs / "s.ring")
    assert sorted(os.listdir(small_fs)) == ["filler", "r.ring"]


def test_replacing_a_ring_on_a_full_file_system_keeps_the_old_one(small_fs):
    path = small_fs / "r.ring"
    with RingBuffer(path, 4096) as rb:
        rb.write_many([b"one", b"two"])
    leave_free(small_fs, 4096)
    assert_enospc(lambda: RingBuffer(path, 4096, remove=True), path)
    assert sorted(os.listdir(small_fs)) == ["filler", "r.ring"]
    with RingBuffer.open(path) as rb:
        assert rb.drain() == [b"one", b"two"]
    work_through_capacity(path)


def test_private_queue_on_a_full_dev_shm(small_fs, monkeypatch):
    monkeypatch.setattr(objqueue_module, "_private_dir", lambda: str(small_fs))
    with pytest.raises(OSError) as ei:
        Queue(maxsize_bytes=1 << 20)
    assert ei.value.errno == errno.ENOSPC
    assert os.listdir(small_fs) == []
    with Queue(maxsize_bytes=4096) as q:  # one that fits
        q.put_many(range(100))
        assert q.get_many(200) == list(range(100))
        path = q.path
    assert not os.path.exists(path)


def test_sparse_ring_file_on_a_full_file_system_does_not_crash_its_writer(small_fs, tmp_path):
    # A valid header on a sparse file (a copy made with cp --sparse=always, or
    # a forgery): the file has the right size but no blocks behind it.
    src = tmp_path / "src.ring"
    RingBuffer(src, 1 << 20).close()
    path = small_fs / "sparse.ring"
    with open(src, "rb") as f, open(path, "wb") as g:
        g.write(f.read(4096))
        g.truncate(os.path.getsize(src))
    assert os.stat(path).st_blocks * 512 < os.path.getsize(path)
    try:
        rb = RingBuffer.open(path)
    except OSError as e:  # refusing it is fine too
        assert e.errno == errno.ENOSPC
        return
    rb.close()
    work_through_capacity(path)


def test_ring_on_a_read_only_file_system(small_fs):
    # root bypasses permissions, not a read-only mount: opening for writing fails
    import gc

    path = small_fs / "r.ring"
    with RingBuffer(path, 4096) as rb:
        rb.write(b"kept")
    del rb
    gc.collect()  # unmapped, so that the remount is allowed
    proc = subprocess.run(
        ["mount", "-o", "remount,ro", str(small_fs)], capture_output=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only: {proc.stderr.decode().strip()}")
    for call in (
        lambda: RingBuffer.open(path),
        lambda: Queue.open(path),
        lambda: RingBuffer(small_fs / "new.ring", 4096),
        lambda: RingBuffer(path, 4096, remove=True),
    ):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EROFS and ei.value.filename is not None
    err = cli_error("info", path)
    assert "Read-only file system" in err and str(path) in err
    assert os.listdir(small_fs) == ["r.ring"]
