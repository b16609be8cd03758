"""The model behind test_hostile.py: hostile objects, the argument values
the property tests draw (each knowing whether it is valid and what it
means), the harness (a fresh ring in a drawn state and a model of its
contents), the oracle that checks one call's outcome against the model, and
the strategies for creating and opening rings with hostile arguments."""

from __future__ import annotations

import array
import copy
import math
import os
import pickle
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import pytest
from _helpers import rec_size
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from ringbuffer import (
    BufferClosed,
    BufferEmpty,
    BufferFull,
    CorruptBuffer,
    InvalidArgument,
    InvalidSize,
    Queue,
    RingBuffer,
)
from ringbuffer.ring import lib

CAP = 4096
MAX = CAP // 2
RESCUE = b"brought by the rescuing thread"
PROBE = b"probe after the hostile call"
SHORT = 0.02  # the longest bounded timeout drawn
HANG = 10.0  # a call still running after this long is woken by close() and reported
CLI = [sys.executable, "-m", "ringbuffer"]
BASE = bytes(range(256)) * 100  # message contents: slices of this

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def pattern(n: int, seed: int = 0) -> bytes:
    return BASE[seed % 256 : seed % 256 + n]


# ===========================================================================
# hostile objects


class Sentinel(Exception):
    """Raised by a hostile argument itself: it must propagate unchanged."""


class BadBuffer:
    """Claims the buffer protocol (3.12+) but fails; has a length."""

    def __buffer__(self, flags):
        raise Sentinel("__buffer__")

    def __len__(self):
        return 5


class BadLen:
    def __len__(self):
        raise Sentinel("__len__")


class Index:
    """An integer by __index__ only (like numpy integers)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Index({self.n})"


class BadIndex:
    def __index__(self):
        raise Sentinel("__index__")


class StrIndex:
    def __index__(self):
        return "3"


class BadBool:
    def __bool__(self):
        raise Sentinel("__bool__")


class BadCompare:
    """A timeout whose every comparison fails."""

    def _fail(self, other):
        raise Sentinel("comparison")

    __lt__ = __le__ = __gt__ = __ge__ = _fail


class BadFspath:
    def __fspath__(self):
        raise Sentinel("__fspath__")


class IntFspath:
    def __fspath__(self):
        return 42


class BadIter:
    """Yields one good message, then fails."""

    def __iter__(self):
        yield b"first"
        raise Sentinel("__iter__")


class BadReduce:
    def __reduce__(self):
        raise Sentinel("__reduce__")


def released_view() -> memoryview:
    view = memoryview(bytearray(b"released"))
    view.release()
    return view


# ===========================================================================
# argument values: each knows whether it is valid and what it means


class Shown:
    """Hypothesis prints failing examples with _repr_pretty_: show our repr."""

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


@dataclass(eq=False, repr=False)
class Val(Shown):
    """A drawn argument. ``errors``: the exceptions a call may raise because
    of it (empty: valid). ``data``: a message's bytes; ``n``: an integer's value."""

    obj: Any
    label: str
    errors: tuple = ()
    data: bytes | None = None
    n: int | None = None
    truth: bool | None = None  # block flags
    unbounded: bool = False  # timeouts: waits (practically) forever
    size: int | None = None  # read_into targets: bytes they hold

    def __repr__(self) -> str:
        return self.label


OMIT = Val(None, "<default>")  # a parameter left out


def message_val(kind: str, size: int, seed: int) -> Val:
    """A bytes-like message of (about) ``size`` bytes; ``data`` is what the ring must carry."""
    b = pattern(size, seed)
    if kind == "bytes":
        obj, data = b, b
    elif kind == "bytes-subclass":
        obj, data = type("B", (bytes,), {})(b), b
    elif kind == "bytearray":
        obj, data = bytearray(b), b
    elif kind == "memoryview":
        obj, data = memoryview(b), b
    elif kind == "memoryview-readonly":
        obj, data = memoryview(bytearray(b)).toreadonly(), b
    elif kind == "memoryview-strided":
        src = pattern(2 * size, seed)
        obj, data = memoryview(src)[::2], src[::2]
    elif kind == "memoryview-reversed":
        obj, data = memoryview(b)[::-1], b[::-1]
    elif kind == "memoryview-2d":
        obj, data = memoryview(b).cast("B", (1, size)) if size else memoryview(b), b
    elif kind == "memoryview-2d-strided":
        src = pattern(2 * size, seed)
        obj, data = memoryview(src).cast("B", (2 * size, 1))[::2] if size else memoryview(b""), src[::2]
    elif kind == "memoryview-slice":
        src = pattern(size + 20, seed)
        obj, data = memoryview(src)[10 : 10 + size], src[10 : 10 + size]
    elif kind == "array-B":
        obj, data = array.array("B", b), b
    elif kind == "array-i":
        obj = array.array("i", range(size // 4))
        data = b"".join(int(v).to_bytes(4, sys.byteorder, signed=True) for v in range(size // 4))
    elif kind == "numpy-u8":
        obj, data = np.frombuffer(b, dtype=np.uint8).copy(), b
    elif kind == "numpy-strided":
        src = np.frombuffer(pattern(2 * size, seed), dtype=np.uint8)
        obj, data = src[::2], pattern(2 * size, seed)[::2]
    elif kind == "numpy-fortran":
        cols = 4
        rows = size // cols
        a = np.frombuffer(pattern(rows * cols, seed), dtype=np.uint8).reshape(rows, cols)
        obj, data = np.asfortranarray(a), a.tobytes()
    elif kind == "numpy-2d-i4":
        k = size // 8
        a = np.arange(2 * k, dtype=np.int32).reshape(2, k)
        obj, data = a, b"".join(int(v).to_bytes(4, sys.byteorder, signed=True) for v in range(2 * k))
    else:
        raise AssertionError(kind)
    n = len(data)
    errors = (InvalidSize,) if n == 0 or n > MAX else ()
    return Val(obj, f"{kind}[{n}]", errors=errors, data=data)


MSG_KINDS = [
    "bytes",
    "bytes-subclass",
    "bytearray",
    "memoryview",
    "memoryview-readonly",
    "memoryview-strided",
    "memoryview-reversed",
    "memoryview-2d",
    "memoryview-2d-strided",
    "memoryview-slice",
    "array-B",
    "array-i",
] + (["numpy-u8", "numpy-strided", "numpy-fortran", "numpy-2d-i4"] if np is not None else [])

MSG_SIZES = st.one_of(
    st.integers(1, 40),
    st.integers(1, MAX),
    st.sampled_from([0, 1, 8, 9, MAX - 1, MAX, MAX + 1, MAX + 8, CAP, 3 * CAP]),
)


def wrong_messages() -> list[Callable[[], Val]]:
    """Factories (fresh objects each time) of messages of a wrong type."""
    te = (TypeError,)
    out = [
        lambda: Val("text", "'text'", te),
        lambda: Val("", "''", te),
        lambda: Val(5, "5", te),
        lambda: Val(0, "0", te),
        lambda: Val(-1, "-1", te),
        lambda: Val(1.5, "1.5", te),
        lambda: Val(math.nan, "nan", te),
        lambda: Val(None, "None", te),
        lambda: Val(True, "True", te),
        lambda: Val(1j, "1j", te),
        lambda: Val([1, 2], "[1, 2]", te),
        lambda: Val({"a": 1}, "{'a': 1}", te),
        lambda: Val(object(), "object()", te),
        lambda: Val(BadBuffer(), "BadBuffer()", (TypeError, Sentinel)),
        lambda: Val(BadLen(), "BadLen()", te),
        lambda: Val(released_view(), "released-memoryview", (ValueError, TypeError)),
    ]
    if np is not None:
        # numpy refuses a format for datetimes: ValueError from memoryview()
        out.append(lambda: Val(np.zeros(2, "M8[s]"), "numpy-datetime64", (TypeError, ValueError)))
    return out


WRONG_MESSAGES = wrong_messages()


def messages() -> st.SearchStrategy[Val]:
    good = st.builds(message_val, st.sampled_from(MSG_KINDS), MSG_SIZES, st.integers(0, 255))
    wrong = st.sampled_from(WRONG_MESSAGES).map(lambda f: f())
    return st.one_of(good, good, wrong)


@dataclass(eq=False, repr=False)
class MsgList(Shown):
    """The argument of write_many/put_many: its items (if iterable) and how it is passed."""

    items: list[Val]
    container: str

    @property
    def errors(self) -> tuple:
        if self.container == "non-iterable":
            return (TypeError,)
        if self.container == "bad-iterator":
            return (Sentinel, *[e for v in self.items for e in v.errors])
        return tuple(e for v in self.items for e in v.errors)

    def make(self) -> Any:
        objs = [v.obj for v in self.items]
        if self.container == "list":
            return objs
        if self.container == "tuple":
            return tuple(objs)
        if self.container == "generator":
            return (o for o in objs)
        if self.container == "bad-iterator":
            return BadIter()
        return 5  # non-iterable

    def __repr__(self) -> str:
        return f"{self.container}{self.items!r}"


def msg_lists() -> st.SearchStrategy[MsgList]:
    good = st.builds(message_val, st.sampled_from(MSG_KINDS), st.integers(1, 900), st.integers(0, 255))
    items = st.lists(st.one_of(good, good, good, messages()), max_size=8)
    container = st.sampled_from(["list", "list", "tuple", "generator", "bad-iterator", "non-iterable"])
    return st.builds(
        lambda i, c: MsgList(i if c not in ("bad-iterator", "non-iterable") else [], c), items, container
    )


def blocks() -> st.SearchStrategy[Val]:
    values = [
        (True, "True"),
        (False, "False"),
        (None, "None"),
        (0, "0"),
        (1, "1"),
        ("", "''"),
        ("yes", "'yes'"),
        ([0], "[0]"),
    ]
    plain = [Val(v, label, truth=bool(v)) for v, label in values]
    bad = st.just(None).map(lambda _: Val(BadBool(), "BadBool()", (Sentinel,)))
    return st.one_of(st.sampled_from(plain), st.sampled_from(plain), st.sampled_from(plain), bad)


def timeouts() -> st.SearchStrategy[Val]:
    """Timeouts: the errors apply only when the call blocks; a bounded one is at most SHORT."""
    ve, te = (ValueError,), (TypeError,)
    bounded = [Val(0, "0"), Val(0.0, "0.0"), Val(Fraction(1, 100), "Fraction(1, 100)")]
    if np is not None:
        bounded.append(Val(np.float64(0.01), "np.float64(0.01)"))
    unbounded = [
        Val(None, "None", unbounded=True),
        Val(True, "True", unbounded=True),  # one second
        Val(5, "5", unbounded=True),
        Val(1e6, "1e6", unbounded=True),
        Val(2**64, "2**64", unbounded=True),
        Val(10**400, "10**400", unbounded=True),
        Val(1e308, "1e308", unbounded=True),
        Val(math.inf, "inf", unbounded=True),
    ]
    invalid = [
        Val(-1, "-1", ve),
        Val(-0.001, "-0.001", ve),
        Val(-math.inf, "-inf", ve),
        Val(-(10**400), "-10**400", ve),
        Val(math.nan, "nan", ve),
        Val("1", "'1'", te),
        Val(b"1", "b'1'", te),
        Val([1], "[1]", te),
        Val(1j, "1j", te),
    ]
    small = st.floats(0.0005, SHORT).map(lambda t: Val(t, repr(t)))
    bad = st.just(None).map(lambda _: Val(BadCompare(), "BadCompare()", (Sentinel,)))
    return st.one_of(
        st.sampled_from(bounded), small, st.sampled_from(unbounded), st.sampled_from(invalid), bad
    )


def counts() -> st.SearchStrategy[Val]:
    """max_messages / max_items."""
    te = (TypeError,)
    fixed = [
        Val(2**31, "2**31", n=2**31),
        Val(2**40, "2**40", n=2**40),
        Val(sys.maxsize, "sys.maxsize", n=sys.maxsize),
        Val(2**64, "2**64", n=2**64),
        Val(10**30, "10**30", n=10**30),
        Val(True, "True", n=1),
        Val(Index(3), "Index(3)", n=3),
        Val(-1, "-1", (InvalidArgument,)),
        Val(-(2**70), "-2**70", (InvalidArgument,)),
        Val(3.0, "3.0", te),
        Val("3", "'3'", te),
        Val(b"3", "b'3'", te),
        Val(None, "None", te),
        Val([3], "[3]", te),
        Val(math.inf, "inf", te),
        Val(StrIndex(), "StrIndex()", te),
    ]
    if np is not None:
        fixed.append(Val(np.int64(2), "np.int64(2)", n=2))
    small = st.integers(0, 12).map(lambda n: Val(n, str(n), n=n))
    bad = st.just(None).map(lambda _: Val(BadIndex(), "BadIndex()", (Sentinel,)))
    return st.one_of(small, small, st.sampled_from(fixed), bad)


def reserve_sizes() -> st.SearchStrategy[Val]:
    te, se = (TypeError,), (InvalidSize,)
    fixed = [
        Val(0, "0", se),
        Val(MAX + 1, "MAX+1", se),
        Val(CAP, "CAP", se),
        Val(2**32, "2**32", se),
        Val(2**63, "2**63", se),
        Val(2**64 - 1, "2**64-1", se),
        Val(2**64, "2**64", se),
        Val(2**70, "2**70", se),
        Val(-1, "-1", se),
        Val(-(2**70), "-2**70", se),
        Val(True, "True", te),
        Val(False, "False", te),
        Val(5.0, "5.0", te),
        Val("5", "'5'", te),
        Val(None, "None", te),
        Val(math.nan, "nan", te),
        Val(Index(7), "Index(7)", n=7),
        Val(StrIndex(), "StrIndex()", te),
    ]
    if np is not None:
        fixed.append(Val(np.int64(9), "np.int64(9)", n=9))
    good = st.one_of(st.integers(1, 40), st.integers(1, MAX)).map(lambda n: Val(n, str(n), n=n))
    bad = st.just(None).map(lambda _: Val(BadIndex(), "BadIndex()", (Sentinel,)))
    return st.one_of(good, good, st.sampled_from(fixed), bad)


def target_val(kind: str, size: int) -> Val:
    """A read_into target."""
    te = (TypeError,)
    if kind == "bytearray":
        return Val(bytearray(b"\xaa" * size), f"bytearray({size})", size=size)
    if kind == "memoryview":
        return Val(memoryview(bytearray(size)), f"memoryview({size})", size=size)
    if kind == "memoryview-slice":
        return Val(memoryview(bytearray(size + 10))[5 : 5 + size], f"memoryview-slice({size})", size=size)
    if kind == "memoryview-2d":
        k = max(size, 1)  # (a memoryview cannot be cast to a shape with a zero)
        return Val(memoryview(bytearray(2 * k)).cast("B", (2, k)), f"memoryview-2d({2 * k})", size=2 * k)
    if kind == "array-B":
        return Val(array.array("B", bytes(size)), f"array-B({size})", size=size)
    if kind == "array-i":
        return Val(
            array.array("i", bytes(4 * (size // 4))), f"array-i({4 * (size // 4)})", size=4 * (size // 4)
        )
    if kind == "numpy-u8":
        return Val(np.zeros(size, np.uint8), f"numpy-u8({size})", size=size)
    if kind == "numpy-2d-i4":
        k = max(size // 8, 0)
        return Val(np.zeros((2, k), np.int32), f"numpy-2d-i4({8 * k})", size=8 * k)
    # wrong ones
    if kind == "bytes":
        return Val(bytes(size), f"bytes({size})", te)
    if kind == "memoryview-readonly":
        return Val(memoryview(bytearray(size)).toreadonly(), f"memoryview-readonly({size})", te)
    if kind == "memoryview-strided":
        return Val(memoryview(bytearray(2 * size + 4))[::2], f"memoryview-strided({size + 2})", te)
    if kind == "numpy-strided":
        return Val(np.zeros(2 * size + 4, np.uint8)[::2], f"numpy-strided({size + 2})", te)
    if kind == "numpy-fortran":
        return Val(np.zeros((4, size + 2), np.uint8, order="F"), f"numpy-fortran({4 * size + 8})", te)
    if kind == "numpy-readonly":
        a = np.zeros(size, np.uint8)
        a.setflags(write=False)
        return Val(a, f"numpy-readonly({size})", te)
    if kind == "numpy-objects":
        # writing bytes over PyObject pointers would crash the interpreter later
        return Val(np.array([None] * (size // 8 + 1), dtype=object), f"numpy-objects({size // 8 + 1})", te)
    if kind == "released":
        return Val(released_view(), "released-memoryview", (TypeError, ValueError))
    if kind == "str":
        return Val("x" * size, f"str({size})", te)
    if kind == "None":
        return Val(None, "None", te)
    if kind == "int":
        return Val(size, f"int({size})", te)
    if kind == "BadBuffer":
        return Val(BadBuffer(), "BadBuffer()", (TypeError, Sentinel))
    raise AssertionError(kind)


TARGET_KINDS = [
    "bytearray",
    "memoryview",
    "memoryview-slice",
    "memoryview-2d",
    "array-B",
    "array-i",
    "bytes",
    "memoryview-readonly",
    "memoryview-strided",
    "released",
    "str",
    "None",
    "int",
    "BadBuffer",
] + (
    ["numpy-u8", "numpy-2d-i4", "numpy-strided", "numpy-fortran", "numpy-readonly", "numpy-objects"]
    if np is not None
    else []
)


def targets() -> st.SearchStrategy[Val]:
    sizes = st.one_of(st.integers(0, 40), st.integers(0, MAX + 8), st.sampled_from([0, 1, MAX, len(RESCUE)]))
    return st.builds(target_val, st.sampled_from(TARGET_KINDS), sizes)


# ===========================================================================
# the harness: a fresh ring in a drawn state, a model of its contents


@dataclass(repr=False)
class State(Shown):
    wrap: int  # bytes of one message passed through first (moves the positions)
    sizes: list[int]  # messages waiting
    full: bool  # then filled to the last byte
    closed: str  # "open", "closed" or "closed-by-thread"

    def __repr__(self) -> str:
        return f"State(wrap={self.wrap}, sizes={self.sizes}, full={self.full}, {self.closed})"


def states() -> st.SearchStrategy[State]:
    return st.builds(
        State,
        st.one_of(st.just(0), st.integers(1, MAX)),
        st.one_of(st.just([]), st.lists(st.one_of(st.integers(1, 64), st.integers(1, MAX)), max_size=6)),
        st.booleans(),
        st.sampled_from(["open"] * 8 + ["closed", "closed-by-thread"]),
    )


def pickled(obj: Any) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


class Harness:
    """A ring (``rb``, the one attacked, or ``q``, a Queue on it), a second
    handle (``other``, for the rescuing thread and the final check) and a
    model: the messages waiting (``model``), every byte position, what went
    in and came out. For a Queue, every message is a pickle."""

    def __init__(self, folder: str, state: State, queue: bool = False) -> None:
        self.path = os.path.join(folder, f"h{time.monotonic_ns()}.ring")
        if queue:
            self.q: Queue | None = Queue(maxsize_bytes=CAP, path=self.path)
            self.rb = self.q._ring
            self.encode: Callable[[bytes], bytes] = pickled
            self.close_victim = self.q.close
        else:
            self.q = None
            self.rb = RingBuffer(self.path, CAP)
            self.encode = bytes
            self.close_victim = self.rb.close
        self.rescue_msg = self.encode(RESCUE)
        self.probe = self.encode(PROBE)
        self.other = RingBuffer.open(self.path)
        self.model: deque[bytes] = deque()
        self.head = self.tail = 0
        if state.wrap:
            self.rb.write(pattern(state.wrap, 1))
            assert self.rb.read() == pattern(state.wrap, 1)
            self.head = self.tail = rec_size(state.wrap)
        for i, size in enumerate(state.sizes):
            msg = self.encode(pattern(size, 10 + i))
            if len(msg) > MAX:  # a pickle of MAX bytes is larger
                continue
            assert self.rb.try_write(msg) == self.fits(len(msg))
            if self.fits(len(msg)):
                self.push(msg)
        if state.full:
            i = 0
            n = MAX
            while n > 0:  # the largest message that fits, until none does
                msg = self.encode(pattern(n, 50 + i))
                if len(msg) <= MAX and self.fits(len(msg)):
                    self.rb.write(msg)
                    self.push(msg)
                    i += 1
                else:
                    n = min(n - 1, CAP - self.used - 8)
            assert not self.rb.try_write(self.encode(b"x"))
        assert self.rb.positions() == (self.head, self.tail)
        self.closed = state.closed != "open"
        if state.closed == "closed":
            self.close_victim()
        elif state.closed == "closed-by-thread":
            t = threading.Thread(target=self.close_victim)
            t.start()
            t.join()
        # filled in by run()
        self.stream_in: list[bytes] = list(self.model)  # everything that entered, in order
        self.stream_out: list[bytes] = []  # everything that left, in order
        self.extra_tail = 0  # bytes of records written but never delivered (aborted)
        self.rescued: list[bytes] = []  # what the rescuing thread read

    @property
    def used(self) -> int:
        return self.tail - self.head

    def fits(self, n: int) -> bool:
        return self.used + rec_size(n) <= CAP

    def push(self, msg: bytes) -> None:
        self.model.append(msg)
        self.tail += rec_size(len(msg))

    # -- running one call --------------------------------------------------

    def run(self, call: Callable[[], Any], rescue: str | None) -> tuple[Any, BaseException | None, float]:
        """Runs call(); ``rescue``: "data" (a thread writes RESCUE after a
        moment) or "space" (a thread drains the ring until the call ends)."""
        done = threading.Event()
        hung: list[bool] = []
        rescued: list[bytes] = []

        def rescuer() -> None:
            if rescue == "data":
                time.sleep(0.005)
                self.other.write(self.rescue_msg)
                return
            while not done.is_set():
                rescued.extend(self.other.drain())
                time.sleep(0.002)

        def safety() -> None:
            if not done.wait(HANG):
                hung.append(True)
                self.close_victim()

        helpers = [threading.Thread(target=safety, daemon=True)]
        if rescue:
            helpers.append(threading.Thread(target=rescuer, daemon=True))
        for t in helpers:
            t.start()
        t0 = time.monotonic()
        try:
            result, exc = call(), None
        except BaseException as e:
            result, exc = None, e
            e.__traceback__ = None  # see _helpers.timed
        elapsed = time.monotonic() - t0
        done.set()
        for t in helpers:
            t.join()
        assert not hung, f"the call hung (woken by close() after {HANG} s): {exc!r}"
        event("outcome: " + (f"rescued ({rescue})" if rescue else type(exc).__name__ if exc else "returned"))
        if rescue == "data":
            self.stream_in.append(self.rescue_msg)
            self.push(self.rescue_msg)
        self.rescued = rescued  # taken out of the model once the oracle has added what the call wrote
        return result, exc, elapsed

    def same(self, result: Any, msg: bytes) -> bool:
        """Whether a call returned the message ``msg`` (a Queue returns it unpickled)."""
        if self.q is not None:
            return pickled(result) == msg
        return type(result) is bytes and result == msg

    def pop(self) -> bytes:
        m = self.model.popleft()
        self.stream_out.append(m)
        self.head += rec_size(len(m))
        return m

    def produce(self, msg: bytes) -> None:
        self.stream_in.append(msg)
        self.push(msg)

    # -- the final check ---------------------------------------------------

    def check_still_works(self) -> None:
        for m in self.rescued:
            assert self.model and self.model[0] == m, "the rescuing thread read something unexpected"
            self.pop()
        rb = RingBuffer.open(self.path) if self.rb.closed else self.rb
        try:
            head, tail = rb.positions()
            assert tail == self.tail + self.extra_tail, "tail moved by something that was not written"
            assert head <= tail <= head + CAP
            assert head >= self.head  # (aborted records may have been skipped already)
            remaining = rb.drain()
            assert self.stream_out + remaining == self.stream_in, "messages lost, duplicated or damaged"
            assert self.other.try_read() is None
            rb.write(self.probe)
            assert self.other.read() == self.probe
            end = self.tail + self.extra_tail + rec_size(len(self.probe))
            assert rb.positions() == (end, end)
            assert self.other.positions() == (end, end)
            info = rb.info()
            assert (info["messages"], info["busy"], info["bytes_used"]) == (0, 0, 0)
        finally:
            if rb is not self.rb:
                rb.close()

    def close(self) -> None:
        self.close_victim()
        self.other.close()
        os.unlink(self.path)


# ===========================================================================
# the calls: each runs one method and checks its outcome against the model


def expect_error(exc: BaseException | None, errors: tuple, what: str) -> None:
    assert exc is not None, f"{what}: no exception, expected one of {[e.__name__ for e in errors]}"
    if not isinstance(exc, errors):
        raise AssertionError(
            f"{what}: raised {exc!r}, expected one of {[e.__name__ for e in errors]}"
        ) from exc


def expect_ok(exc: BaseException | None, what: str) -> None:
    if exc is not None:
        raise AssertionError(f"{what}: unexpected {exc!r}") from exc


def blocking_errors(block: Val, timeout: Val, default_block: bool) -> tuple:
    """The errors block/timeout can cause: a broken block flag always; a timeout only when blocking."""
    if block.errors:
        return block.errors
    blocking = default_block if block is OMIT else block.truth
    if blocking and timeout is not OMIT and timeout.obj is not None:
        return timeout.errors
    return ()


def is_blocking(block: Val, default_block: bool) -> bool:
    return default_block if block is OMIT else bool(block.truth)


def is_unbounded(timeout: Val) -> bool:
    return timeout is OMIT or timeout.unbounded


def kwargs_of(**vals: Val) -> dict[str, Any]:
    return {k: v.obj for k, v in vals.items() if v is not OMIT}


@dataclass(eq=False, repr=False)
class Call(Shown):
    """One method call: ``name``, its drawn arguments, and how it is checked."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if v is not OMIT)
        return f"{self.name}({shown})"


def check_call(h: Harness, call: Call) -> None:
    a = call.args
    rb = h.rb
    target = h.q if h.q is not None else h.rb  # what is attacked: the ring or a Queue on it
    what = repr(call)

    def closed_or(errors: tuple) -> tuple | None:
        """The errors to expect, or None when the call must succeed."""
        if h.closed:
            return (BufferClosed, *errors)
        return errors or None

    # -- properties and lifetime: never affected by arguments ------------
    if call.name == "properties":
        assert target.path == h.path and isinstance(target.path, str)
        assert target.capacity == CAP and target.max_message_size == MAX
        assert target.closed is h.closed
        assert h.path in repr(target) and repr(target).endswith(" closed>") == h.closed
        for name in ("path", "capacity", "max_message_size", "closed"):
            with pytest.raises(AttributeError):  # read-only
                setattr(target, name, 1)
        with pytest.raises(AttributeError):  # __slots__: no stray attributes
            target.stray = 1
        assert target.capacity == CAP and target.closed is h.closed
        return
    if call.name == "close":
        result, exc, _ = h.run(lambda: target.close(*a["extra"]), None)
        if a["extra"]:
            expect_error(exc, (TypeError,), what)
            return
        expect_ok(exc, what)
        assert target.closed
        h.closed = True
        target.close()  # idempotent
        return
    if call.name in ("join_thread", "cancel_join_thread"):  # Queue: no-ops, also when closed
        result, exc, _ = h.run(lambda: getattr(target, call.name)(*a["extra"]), None)
        if a["extra"]:
            expect_error(exc, (TypeError,), what)
        else:
            expect_ok(exc, what)
            assert result is None
        return
    if call.name in ("qsize", "bytes_used", "empty", "full"):  # Queue
        result, exc, _ = h.run(lambda: getattr(target, call.name)(*a["extra"]), None)
        errors = closed_or((TypeError,) if a["extra"] else ())
        if errors:
            expect_error(exc, errors, what)
            return
        expect_ok(exc, what)
        expected = {
            "qsize": len(h.model),
            "bytes_used": h.used,
            "empty": not h.model,
            "full": CAP - h.used < 16,
        }[call.name]
        assert result == expected and type(result) is type(expected), f"{what}: {result!r}"
        return
    if call.name in ("info", "positions", "enter", "pickle", "copy"):
        if call.name == "info":
            fn = lambda: rb.info(*a["extra"], **kwargs_of(count=a["count"]))  # noqa: E731
        elif call.name == "positions":
            fn = lambda: rb.positions(*a["extra"])  # noqa: E731
        elif call.name == "enter":
            fn = target.__enter__
        elif call.name == "pickle":
            fn = lambda: pickle.loads(pickle.dumps(target, a["protocol"]))  # noqa: E731
        else:
            fn = lambda: copy.copy(rb)  # noqa: E731
        result, exc, _ = h.run(fn, None)
        extra = a.get("extra", ())
        if call.name == "info":  # info(count=True): one optional argument
            given = [*extra, *kwargs_of(count=a["count"]).values()]
            too_many, counting = len(given) > 1, bool(given[0]) if given else True
        else:
            too_many, counting = bool(extra), True
        errors = closed_or((TypeError,) if too_many else ())
        if errors:
            expect_error(exc, errors, what)
            return
        expect_ok(exc, what)
        if call.name == "info":
            assert result["capacity"] == CAP and result["max_message_size"] == MAX
            assert (result["head"], result["tail"]) == (h.head, h.tail)
            assert result["bytes_used"] == h.used and result["busy"] == 0
            if counting:
                assert result["counted"] and result["messages"] == len(h.model)
                assert result["message_bytes"] == sum(map(len, h.model))
            else:
                assert not result["counted"] and (result["messages"], result["message_bytes"]) == (0, 0)
        elif call.name == "positions":
            assert result == (h.head, h.tail)
        elif call.name == "enter":
            assert result is target
        else:
            assert type(result) is type(target) and result is not target and result.path == h.path
            assert (result._ring if h.q else result).positions() == (h.head, h.tail)
            result.close()
        return

    # -- writing -----------------------------------------------------------
    if call.name in ("write", "try_write", "put", "put_nowait"):
        msg: Val = a["msg"]
        block, timeout = a.get("block", OMIT), a.get("timeout", OMIT)
        default_block = call.name == "put"
        errors = closed_or(msg.errors + (blocking_errors(block, timeout, True) if call.name == "put" else ()))
        blocking = call.name == "put" and is_blocking(block, default_block)
        rescue = None
        if errors is None and not h.fits(len(msg.data)) and blocking and is_unbounded(timeout):
            rescue = "space"
        if call.name == "put":
            fn = lambda: target.put(msg.obj, **kwargs_of(block=block, timeout=timeout))  # noqa: E731
        else:
            fn = lambda: getattr(target, call.name)(msg.obj)  # noqa: E731
        fits_now = errors is None and h.fits(len(msg.data))
        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        if fits_now or rescue:
            expect_ok(exc, what)
            assert result is (True if call.name == "try_write" else None)
            h.produce(msg.data)
        elif call.name == "try_write":
            expect_ok(exc, what)
            assert result is False
        else:
            expect_error(exc, (BufferFull,), what)
            assert type(exc) is BufferFull and exc.code == lib.RB_EFULL
        return

    if call.name in ("write_many", "put_many"):
        msgs: MsgList = a["msgs"]
        block, timeout = a.get("block", OMIT), a.get("timeout", OMIT)
        blocking = call.name == "put_many" and is_blocking(block, True)
        errors = closed_or(
            msgs.errors + (blocking_errors(block, timeout, True) if call.name == "put_many" else ())
        )
        datas = [] if errors else [v.data for v in msgs.items]
        # the longest prefix that fits now
        fit, used = 0, h.used
        for d in datas:
            if used + rec_size(len(d)) > CAP:
                break
            used += rec_size(len(d))
            fit += 1
        rescue = (
            "space" if errors is None and fit < len(datas) and blocking and is_unbounded(timeout) else None
        )
        if call.name == "put_many":
            fn = lambda: target.put_many(msgs.make(), **kwargs_of(block=block, timeout=timeout))  # noqa: E731
        else:
            fn = lambda: rb.write_many(msgs.make())  # noqa: E731
        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        expect_ok(exc, what)
        expected = len(datas) if rescue else fit
        assert result == expected, f"{what}: wrote {result}, expected {expected}"
        for d in datas[:expected]:
            h.produce(d)
        return

    if call.name == "reserve":
        size: Val = a["size"]
        block, timeout, body = a["block"], a["timeout"], a["body"]
        errors = closed_or(size.errors + blocking_errors(block, timeout, False))
        blocking = is_blocking(block, False)
        rescue = None
        if errors is None and not h.fits(size.n) and blocking and is_unbounded(timeout):
            rescue = "space"
        fits_now = errors is None and h.fits(size.n)
        payload = pattern(size.n, 99) if size.n else b""

        def fn():
            with rb.reserve(size.obj, **kwargs_of(block=block, timeout=timeout)) as view:
                assert len(view) == size.n and not view.readonly
                if body == "raise":
                    raise Sentinel("inside reserve")
                if body == "fill":
                    view[:] = payload
            return "committed"

        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        if fits_now or rescue:
            if body == "raise":
                expect_error(exc, (Sentinel,), what)
                h.extra_tail += rec_size(size.n)  # an aborted record: never delivered
            else:
                expect_ok(exc, what)
                h.produce(payload)
        else:
            expect_error(exc, (BufferFull,), what)
        return

    # -- reading -----------------------------------------------------------
    empty = not h.model
    if call.name in ("read", "try_read", "get", "get_nowait", "next"):
        block, timeout = a.get("block", OMIT), a.get("timeout", OMIT)
        errors = closed_or(blocking_errors(block, timeout, True) if call.name == "get" else ())
        blocking = call.name == "next" or (call.name == "get" and is_blocking(block, True))
        rescue = "data" if errors is None and empty and blocking and is_unbounded(timeout) else None
        if call.name == "get":
            fn = lambda: target.get(**kwargs_of(block=block, timeout=timeout))  # noqa: E731
        elif call.name == "next":
            fn = lambda: next(iter(rb))  # noqa: E731
        else:
            fn = getattr(target, call.name)
        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        if h.model:
            expect_ok(exc, what)
            assert h.same(result, h.pop()), f"{what}: not the next message"
        elif call.name == "try_read":
            expect_ok(exc, what)
            assert result is None
        else:
            expect_error(exc, (BufferEmpty,), what)
            assert type(exc) is BufferEmpty and exc.code == lib.RB_EEMPTY
        return

    if call.name in ("read_many", "get_many", "drain"):
        n: Val = a.get("n", OMIT)
        block, timeout = a.get("block", OMIT), a.get("timeout", OMIT)
        errors = closed_or(
            n.errors + (blocking_errors(block, timeout, True) if call.name == "get_many" else ())
        )
        blocking = call.name == "get_many" and is_blocking(block, True)
        want = None if call.name == "drain" else n.n
        rescue = None
        if errors is None and empty and blocking and is_unbounded(timeout) and want:
            rescue = "data"
        if call.name == "get_many":
            fn = lambda: target.get_many(n.obj, **kwargs_of(block=block, timeout=timeout))  # noqa: E731
        elif call.name == "read_many":
            fn = lambda: rb.read_many(n.obj)  # noqa: E731
        else:
            fn = rb.drain
        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        if call.name == "get_many" and not h.model and want:
            expect_error(exc, (BufferEmpty,), what)
            return
        if call.name == "get_many" and want == 0 and isinstance(exc, BufferEmpty):
            return  # tolerated (see test_blocking.test_get_many_zero_neither_waits_nor_consumes)
        expect_ok(exc, what)
        k = len(h.model) if want is None else min(want, len(h.model))
        assert type(result) is list and len(result) == k, f"{what}: {len(result)} messages, expected {k}"
        assert all(h.same(m, h.pop()) for m in result), f"{what}: not the next {k} messages"
        return

    if call.name == "read_into":
        buf: Val = a["buffer"]
        block, timeout = a["block"], a["timeout"]
        errors = closed_or(buf.errors + blocking_errors(block, timeout, False))
        blocking = is_blocking(block, False)
        rescue = "data" if errors is None and empty and blocking and is_unbounded(timeout) else None
        before = None if errors else memoryview(buf.obj).tobytes()
        fn = lambda: rb.read_into(buf.obj, **kwargs_of(block=block, timeout=timeout))  # noqa: E731
        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        if not h.model:
            expect_error(exc, (BufferEmpty,), what)
            return
        head = h.model[0]
        after = memoryview(buf.obj).tobytes()
        if len(head) > buf.size:
            expect_error(exc, (InvalidSize,), what)
            assert exc.needed == len(head)
            assert after == before, "a failed read_into wrote into the buffer"
            return
        expect_ok(exc, what)
        assert result == len(head)
        assert after[: len(head)] == head and after[len(head) :] == before[len(head) :]
        h.pop()
        return

    if call.name == "peek":
        block, timeout, consume, body = a["block"], a["timeout"], a["consume_on_error"], a["body"]
        errors = closed_or(blocking_errors(block, timeout, False))
        blocking = is_blocking(block, False)
        rescue = "data" if errors is None and empty and blocking and is_unbounded(timeout) else None
        seen: list[bytes] = []

        def fn():
            kw = kwargs_of(block=block, timeout=timeout, consume_on_error=consume)
            with rb.peek(**kw) as view:
                assert view.readonly
                seen.append(bytes(view))
                if body == "raise":
                    raise Sentinel("inside peek")
            return "consumed"

        result, exc, _ = h.run(fn, rescue)
        if errors:
            expect_error(exc, errors, what)
            return
        if not h.model:
            expect_error(exc, (BufferEmpty,), what)
            return
        assert seen == [h.model[0]], f"{what}: the view is not the next message"
        if body == "raise":
            expect_error(exc, (Sentinel,), what)
            if consume is OMIT or consume.truth:
                h.pop()
        else:
            expect_ok(exc, what)
            h.pop()
        return

    raise AssertionError(f"no oracle for {call.name}")


def call(name: str, **strategies: st.SearchStrategy) -> st.SearchStrategy[Call]:
    return st.fixed_dictionaries(strategies).map(lambda args: Call(name, args))


OPT_BLOCK = st.one_of(st.just(OMIT), blocks())
OPT_TIMEOUT = st.one_of(st.just(OMIT), timeouts())
EXTRA = st.sampled_from([(), (), (1,), ("x", None)])  # extra positional arguments


CONSUME = st.sampled_from([Val(v, repr(v), truth=bool(v)) for v in (True, False, None, 0, "x")])

# Every public method (and the properties, pickling, the context manager).
RING_CALLS = {
    "write": call("write", msg=messages()),
    "try_write": call("try_write", msg=messages()),
    "put": call("put", msg=messages(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "put_nowait": call("put_nowait", msg=messages()),
    "write_many": call("write_many", msgs=msg_lists()),
    "put_many": call("put_many", msgs=msg_lists(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "reserve": call(
        "reserve",
        size=reserve_sizes(),
        block=OPT_BLOCK,
        timeout=OPT_TIMEOUT,
        body=st.sampled_from(["fill", "fill", "raise"]),
    ),
    "read": call("read"),
    "try_read": call("try_read"),
    "get": call("get", block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "get_nowait": call("get_nowait"),
    "next": call("next"),
    "read_many": call("read_many", n=counts()),
    "get_many": call("get_many", n=counts(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "drain": call("drain"),
    "read_into": call("read_into", buffer=targets(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "peek": call(
        "peek",
        block=OPT_BLOCK,
        timeout=OPT_TIMEOUT,
        consume_on_error=st.one_of(st.just(OMIT), CONSUME),
        body=st.sampled_from(["read", "raise"]),
    ),
    "info": call("info", extra=EXTRA, count=st.one_of(st.just(OMIT), CONSUME)),
    "positions": call("positions", extra=EXTRA),
    "close": call("close", extra=EXTRA),
    "enter": call("enter"),
    "pickle": call("pickle", protocol=st.integers(0, pickle.HIGHEST_PROTOCOL)),
    "copy": call("copy"),
    "properties": call("properties"),
}


def object_val(obj: Any) -> Val:
    data = pickled(obj)
    return Val(
        obj, f"{type(obj).__name__}[{len(data)}]", (InvalidSize,) if len(data) > MAX else (), data=data
    )


def unpicklable() -> list[Callable[[], Val]]:
    pe = (pickle.PicklingError, AttributeError, TypeError)

    def local_function():
        return None

    return [
        lambda: Val(lambda: None, "lambda", pe),
        lambda: Val(local_function, "local function", pe),
        lambda: Val(threading.Lock(), "threading.Lock()", (TypeError,)),
        lambda: Val((x for x in ()), "generator", (TypeError,)),
        lambda: Val(BadReduce(), "BadReduce()", (Sentinel,)),
        lambda: Val([1, BadReduce()], "[1, BadReduce()]", (Sentinel,)),
    ]


UNPICKLABLE = unpicklable()


def queue_objects() -> st.SearchStrategy[Val]:
    good = st.one_of(
        st.integers(),
        st.text(max_size=40),
        st.binary(max_size=300),
        st.none(),
        st.floats(),
        st.lists(st.integers(), max_size=8),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=4),
        st.integers(MAX - 30, MAX + 10).map(lambda n: b"x" * n),  # pickles around the maximum size
        st.integers(1, 3 * CAP).map(lambda n: "y" * n),
    ).map(object_val)
    return st.one_of(good, good, st.sampled_from(UNPICKLABLE).map(lambda f: f()))


def object_lists() -> st.SearchStrategy[MsgList]:
    items = st.lists(queue_objects(), max_size=8)
    container = st.sampled_from(["list", "list", "tuple", "generator", "bad-iterator", "non-iterable"])
    return st.builds(
        lambda i, c: MsgList(i if c not in ("bad-iterator", "non-iterable") else [], c), items, container
    )


QUEUE_CALLS = {
    "put": call("put", msg=queue_objects(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "put_nowait": call("put_nowait", msg=queue_objects()),
    "put_many": call("put_many", msgs=object_lists(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "get": call("get", block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "get_nowait": call("get_nowait"),
    "get_many": call("get_many", n=counts(), block=OPT_BLOCK, timeout=OPT_TIMEOUT),
    "qsize": call("qsize", extra=EXTRA),
    "bytes_used": call("bytes_used", extra=EXTRA),
    "empty": call("empty", extra=EXTRA),
    "full": call("full", extra=EXTRA),
    "join_thread": call("join_thread", extra=EXTRA),
    "cancel_join_thread": call("cancel_join_thread", extra=EXTRA),
    "close": call("close", extra=EXTRA),
    "enter": call("enter"),
    "pickle": call("pickle", protocol=st.integers(0, pickle.HIGHEST_PROTOCOL)),
    "properties": call("properties"),
}


# ===========================================================================
# creating and opening: hostile paths, sizes, modes (hypothesis)

PATH_KINDS = [
    "new",
    "new-bytes",
    "new-pathlib",
    "exists-ring",
    "exists-file",
    "dir",
    "fifo",
    "symlink-to-ring",
    "missing-dir",
    "empty",
    "nul",
    "None",
    "int",
    "float",
    "list",
    "BadFspath",
    "IntFspath",
]


def path_arg(kind: str, d: str) -> Any:
    import pathlib

    return {
        "new": os.path.join(d, "new.ring"),
        "new-bytes": os.fsencode(os.path.join(d, "new.ring")),
        "new-pathlib": pathlib.Path(d, "new.ring"),
        "exists-ring": os.path.join(d, "old.ring"),
        "exists-file": os.path.join(d, "file.txt"),
        "dir": os.path.join(d, "dir"),
        "fifo": os.path.join(d, "fifo"),
        "symlink-to-ring": os.path.join(d, "link.ring"),
        "missing-dir": os.path.join(d, "missing", "x.ring"),
        "empty": "",
        "nul": os.path.join(d, "nul\0.ring"),
        "None": None,
        "int": 3,
        "float": 1.5,
        "list": [os.path.join(d, "new.ring")],
        "BadFspath": BadFspath(),
        "IntFspath": IntFspath(),
    }[kind]


PATH_TYPE_ERRORS = {
    "nul": (ValueError,),
    "None": (TypeError,),
    "int": (TypeError,),
    "float": (TypeError,),
    "list": (TypeError,),
    "BadFspath": (Sentinel,),
    "IntFspath": (TypeError,),
}


def create_path_errors(kind: str, remove: bool) -> tuple:
    if kind in PATH_TYPE_ERRORS:
        return PATH_TYPE_ERRORS[kind]
    if kind == "empty":
        return (InvalidArgument, FileNotFoundError)
    if kind == "missing-dir":
        return (FileNotFoundError,)
    if kind == "dir":
        return (IsADirectoryError,) if remove else (FileExistsError,)
    if kind in ("exists-ring", "exists-file", "fifo", "symlink-to-ring") and not remove:
        return (FileExistsError,)
    return ()


def open_path_errors(kind: str) -> tuple:
    if kind in PATH_TYPE_ERRORS:
        return PATH_TYPE_ERRORS[kind]
    return {
        "new": (FileNotFoundError,),
        "new-bytes": (FileNotFoundError,),
        "new-pathlib": (FileNotFoundError,),
        "exists-ring": (),
        "exists-file": (CorruptBuffer,),
        "dir": (IsADirectoryError,),
        "fifo": (CorruptBuffer,),
        "symlink-to-ring": (OSError,),  # ELOOP, checked below
        "missing-dir": (FileNotFoundError,),
        "empty": (FileNotFoundError,),
    }[kind]


def ring_sizes() -> st.SearchStrategy[Val]:
    ia, te = (InvalidArgument,), (TypeError,)
    fixed = [
        Val(0, "0", ia),
        Val(-1, "-1", ia),
        Val(2**33, "2**33", ia),
        Val(2**63, "2**63", ia),
        Val(2**64, "2**64", ia),
        Val(2**70, "2**70", ia),
        Val(4096.0, "4096.0", te),
        Val("4096", "'4096'", te),
        Val(None, "None", te),
        Val(True, "True", te),
        Val([4096], "[4096]", te),
        Val(Index(5000), "Index(5000)", n=5000),
        Val(BadIndex(), "BadIndex()", (Sentinel,)),
    ]
    if np is not None:
        fixed.append(Val(np.int64(9000), "np.int64(9000)", n=9000))
    good = st.integers(1, 1 << 16).map(lambda n: Val(n, str(n), n=n))
    return st.one_of(good, st.sampled_from(fixed))


def queue_sizes() -> st.SearchStrategy[Val]:
    te, ve = (TypeError,), (ValueError,)
    fixed = [
        Val(0, "0", ve),
        Val(-1, "-1", ve),
        Val(2**33, "2**33", ve),
        Val(2**64, "2**64", ve),
        Val(2**70, "2**70", ve),
        Val(4096.0, "4096.0", te),
        Val("4096", "'4096'", te),
        Val(None, "None", te),
        Val(True, "True", te),
        # Queue wants an int: index objects (numpy integers) are refused, unlike RingBuffer
        Val(Index(5000), "Index(5000)", te),
        Val(BadIndex(), "BadIndex()", te),
    ]
    good = st.integers(1, 1 << 16).map(lambda n: Val(n, str(n), n=n))
    return st.one_of(good, st.sampled_from(fixed))


def modes() -> st.SearchStrategy[Val]:
    ia, te = (InvalidArgument,), (TypeError,)
    return st.sampled_from(
        [
            OMIT,
            Val(0o600, "0o600"),
            Val(0o640, "0o640"),
            Val(0, "0"),
            Val(0o7777, "0o7777"),
            Val(-1, "-1", ia),
            Val(0o10000, "0o10000", ia),
            Val(2**40, "2**40", ia),
            Val("0600", "'0600'", te),
            Val(384.0, "384.0", te),
            Val(None, "None", te),
            Val(BadIndex(), "BadIndex()", (Sentinel,)),
        ]
    )


REMOVES = st.sampled_from(
    [
        OMIT,
        Val(True, "True", truth=True),
        Val(False, "False", truth=False),
        Val("", "''", truth=False),
        Val("yes", "'yes'", truth=True),
        Val(BadBool(), "BadBool()", (Sentinel,)),
    ]
)
DUMPS = st.sampled_from(
    [OMIT, Val(None, "None"), Val(pickle.dumps, "pickle.dumps"), Val(42, "42", (TypeError,))]
)
LOADS = st.sampled_from(
    [OMIT, Val(None, "None"), Val(pickle.loads, "pickle.loads"), Val("x", "'x'", (TypeError,))]
)


def make_fixtures(d: str) -> None:
    with RingBuffer(os.path.join(d, "old.ring"), CAP) as rb:
        rb.write(b"old")
    with open(os.path.join(d, "file.txt"), "wb") as f:
        f.write(b"precious")
    os.mkdir(os.path.join(d, "dir"))
    os.mkfifo(os.path.join(d, "fifo"))
    os.symlink(os.path.join(d, "old.ring"), os.path.join(d, "link.ring"))


FIXTURES = ["dir", "fifo", "file.txt", "link.ring", "old.ring"]


def check_fixtures(d: str, replaced: str | None) -> None:
    """The files that were there are untouched, except ``replaced`` (by remove=True)."""
    names = sorted(os.listdir(d))
    assert not [n for n in names if n.startswith(".ringbuf-")], f"temporary file left: {names}"
    for name in FIXTURES:
        if name == replaced:
            continue
        p = os.path.join(d, name)
        if name == "old.ring":
            with RingBuffer.open(p) as rb:
                assert rb.capacity == CAP and rb.drain() == [b"old"]
            with RingBuffer(p, CAP, remove=True) as rb:  # (as it was: one message waiting)
                rb.write(b"old")
        elif name == "file.txt":
            with open(p, "rb") as f:
                assert f.read() == b"precious"
        elif name == "dir":
            assert os.path.isdir(p) and not os.listdir(p)
        elif name == "fifo":
            assert stat.S_ISFIFO(os.lstat(p).st_mode)
        else:
            assert os.path.islink(p) and os.readlink(p) == os.path.join(d, "old.ring")


def expected_capacity(n: int) -> int:
    cap = 4096
    while cap < n:
        cap *= 2
    return cap


@dataclass(repr=False)
class Opening(Shown):
    op: str
    path: str
    size: Val = OMIT
    remove: Val = OMIT
    mode: Val = OMIT
    dumps: Val = OMIT
    loads: Val = OMIT

    def __repr__(self) -> str:
        shown = [
            f"{k}={getattr(self, k)!r}"
            for k in ("size", "remove", "mode", "dumps", "loads")
            if getattr(self, k) is not OMIT
        ]
        return f"{self.op}(path={self.path}, {', '.join(shown)})"


def openings() -> st.SearchStrategy[Opening]:
    paths = st.sampled_from(PATH_KINDS)
    return st.one_of(
        st.builds(Opening, st.just("RingBuffer"), paths, ring_sizes(), REMOVES, modes()),
        st.builds(Opening, st.just("RingBuffer.open"), paths),
        st.builds(
            Opening,
            st.just("Queue"),
            st.one_of(paths, st.just("private")),
            queue_sizes(),
            dumps=DUMPS,
            loads=LOADS,
        ),
        st.builds(Opening, st.just("Queue.open"), paths, dumps=DUMPS, loads=LOADS),
    )
