"""Model-based tests: random operation sequences on tiny rings, checked against
a deque of queued messages and an exact model of the byte positions.

The model: each message occupies rec_size(len) = (8 + len + 7) & ~7 bytes; a
write (or a writev of its pieces) succeeds iff used + rec_size <= capacity
(else BufferFull), write_many
writes exactly the longest prefix that fits, reads return the queue's front,
and positions() is exactly (bytes ever consumed, bytes ever written).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import deque

import pytest
from _helpers import rec_size
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ringbuffer import BufferEmpty, BufferFull, InvalidSize, RingBuffer

CAPACITY = 4096  # the minimum: wraps after a handful of messages
MAX = CAPACITY // 2

# Message sizes: mostly small-to-medium odd sizes, often right at the maximum,
# plus the padding boundaries.
SIZES = st.one_of(
    st.integers(1, 700),
    st.integers(MAX - 40, MAX),
    st.integers(1, MAX),
    st.sampled_from([1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 1016, 1017, 2039, 2040, 2041, 2047, 2048]),
)
KINDS = st.sampled_from(["bytes", "bytearray", "memoryview"])
HANDLES = st.integers(0, 1)


def as_kind(data: bytes, kind: str):
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    return data


class RingMachine(RuleBasedStateMachine):
    """Two handles on one ring file (the second opened by path), one model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ringbuffer-model-")
        self.path = f"{self.dir}/model.ring"
        self.handles = [RingBuffer(self.path, CAPACITY)]
        self.handles.append(RingBuffer.open(self.path))
        self.queue: deque[bytes] = deque()
        self.head = 0
        self.tail = 0
        self.counter = 0
        self.rng = random.Random(0)

    @initialize(seed=st.integers(0, 2**32 - 1))
    def seed(self, seed):
        self.rng = random.Random(seed)

    def teardown(self) -> None:
        for rb in self.handles:
            rb.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- model helpers -------------------------------------------------------

    @property
    def used(self) -> int:
        return self.tail - self.head

    def new_message(self, size: int) -> bytes:
        self.counter += 1
        return self.rng.randbytes(size)

    def push(self, msg: bytes) -> None:
        self.queue.append(msg)
        self.tail += rec_size(len(msg))

    def pop(self) -> bytes:
        msg = self.queue.popleft()
        self.head += rec_size(len(msg))
        return msg

    # -- writing -------------------------------------------------------------

    @rule(h=HANDLES, size=SIZES, kind=KINDS)
    def write(self, h, size, kind):
        msg = self.new_message(size)
        rb = self.handles[h]
        if self.used + rec_size(size) <= CAPACITY:
            rb.write(as_kind(msg, kind))
            self.push(msg)
        else:
            with pytest.raises(BufferFull):
                rb.write(as_kind(msg, kind))

    @rule(h=HANDLES, size=SIZES, kind=KINDS)
    def try_write(self, h, size, kind):
        msg = self.new_message(size)
        fits = self.used + rec_size(size) <= CAPACITY
        assert self.handles[h].try_write(as_kind(msg, kind)) is fits
        if fits:
            self.push(msg)

    @rule(h=HANDLES, sizes=st.lists(SIZES, max_size=8), kind=KINDS)
    def write_many(self, h, sizes, kind):
        msgs = [self.new_message(s) for s in sizes]
        expected = 0
        room = CAPACITY - self.used
        for m in msgs:
            if rec_size(len(m)) > room:
                break
            room -= rec_size(len(m))
            expected += 1
        assert self.handles[h].write_many([as_kind(m, kind) for m in msgs]) == expected
        for m in msgs[:expected]:
            self.push(m)

    @rule(h=HANDLES, size=SIZES, cuts=st.lists(st.integers(0, MAX), max_size=5), kind=KINDS)
    def writev(self, h, size, cuts, kind):
        # One message in pieces cut anywhere (empty ones too): as write().
        msg = self.new_message(size)
        bounds = [0, *sorted(c % (size + 1) for c in cuts), size]
        pieces = [as_kind(msg[a:b], kind) for a, b in zip(bounds, bounds[1:])]
        if self.used + rec_size(size) <= CAPACITY:
            self.handles[h].writev(pieces)
            self.push(msg)
        else:
            with pytest.raises(BufferFull):
                self.handles[h].writev(pieces)

    @rule(
        h=HANDLES,
        sizes=st.lists(SIZES, max_size=6),
        bad=st.sampled_from([0, MAX + 1, MAX + 8]),
        data=st.data(),
    )
    def write_many_invalid(self, h, sizes, bad, data):
        msgs = [self.new_message(s) for s in sizes]
        msgs.insert(data.draw(st.integers(0, len(msgs)), label="bad_at"), b"b" * bad)
        with pytest.raises(InvalidSize):
            self.handles[h].write_many(msgs)

    @rule(h=HANDLES, bad=st.sampled_from([0, MAX + 1, 3 * MAX]))
    def write_invalid(self, h, bad):
        with pytest.raises(InvalidSize):
            self.handles[h].write(b"i" * bad)
        with pytest.raises(InvalidSize):
            self.handles[h].try_write(b"i" * bad)

    # -- reading -------------------------------------------------------------

    @rule(h=HANDLES)
    def read(self, h):
        if self.queue:
            assert self.handles[h].read() == self.pop()
        else:
            with pytest.raises(BufferEmpty):
                self.handles[h].read()

    @rule(h=HANDLES)
    def try_read(self, h):
        got = self.handles[h].try_read()
        if self.queue:
            assert got == self.pop()
        else:
            assert got is None

    @rule(h=HANDLES, n=st.integers(0, 10))
    def read_many(self, h, n):
        got = self.handles[h].read_many(n)
        expected = [self.pop() for _ in range(min(n, len(self.queue)))]
        assert got == expected

    @rule(h=HANDLES)
    def drain(self, h):
        got = self.handles[h].read_many(10_000)
        expected = [self.pop() for _ in range(len(self.queue))]
        assert got == expected

    # -- lifetime ------------------------------------------------------------

    @rule(h=HANDLES)
    def close_and_reopen(self, h):
        self.handles[h].close()
        assert self.handles[h].closed
        self.handles[h] = RingBuffer.open(self.path)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def positions_match_model(self):
        for rb in self.handles:
            head, tail = rb.positions()
            assert (head, tail) == (self.head, self.tail)
            assert tail - head == sum(rec_size(len(m)) for m in self.queue)
            assert 0 <= tail - head <= CAPACITY
            assert head % 8 == 0 and tail % 8 == 0


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------
# A long seeded random walk (cheap, many wraps per run), same model.


@pytest.mark.parametrize("capacity", [4096, 8192])
@pytest.mark.parametrize("seed", range(4))
def test_random_walk(tmp_path, capacity, seed):
    rng = random.Random(seed * 7919 + capacity)
    mx = capacity // 2
    rb = RingBuffer(tmp_path / "walk.ring", capacity)
    q: deque[bytes] = deque()
    head = tail = 0

    def size() -> int:
        r = rng.random()
        if r < 0.6:
            return rng.randint(1, 700)
        if r < 0.8:
            return rng.randint(mx - 16, mx)
        return rng.randint(1, mx)

    try:
        for step in range(4000):
            op = rng.random()
            if op < 0.35:
                msg = rng.randbytes(size())
                fits = tail - head + rec_size(len(msg)) <= capacity
                assert rb.try_write(msg) is fits, step
                if fits:
                    q.append(msg)
                    tail += rec_size(len(msg))
            elif op < 0.5:
                msgs = [rng.randbytes(size()) for _ in range(rng.randint(0, 6))]
                room, k = capacity - (tail - head), 0
                while k < len(msgs) and rec_size(len(msgs[k])) <= room:
                    room -= rec_size(len(msgs[k]))
                    k += 1
                assert rb.write_many(msgs) == k, step
                for m in msgs[:k]:
                    q.append(m)
                    tail += rec_size(len(m))
            elif op < 0.8:
                got = rb.try_read()
                if q:
                    m = q.popleft()
                    head += rec_size(len(m))
                    assert got == m, step
                else:
                    assert got is None, step
            elif op < 0.98:
                n = rng.randint(0, 5)
                got = rb.read_many(n)
                exp = [q.popleft() for _ in range(min(n, len(q)))]
                head += sum(rec_size(len(m)) for m in exp)
                assert got == exp, step
            else:
                rb.close()
                rb = RingBuffer.open(tmp_path / "walk.ring")
            assert rb.positions() == (head, tail), step
        assert head > 50 * capacity  # wrapped many times
    finally:
        rb.close()
