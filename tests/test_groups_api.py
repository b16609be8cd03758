"""Consumer groups from Python (issue 12): fan-out to named, ephemeral and
default groups, overwrite rings and MessagesLost, GroupNotFound, the group
table (groups(), remove_group()), sync(), and the Queue in a group.

Space arithmetic used below: a message of 248 bytes takes a record of
8 + 248 = 256 bytes, so a 4096-byte ring holds 16 of them; in an overwrite
ring each write after the 16th reclaims the oldest record, exactly one."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import pickle
import threading
import time

import pytest
from _helpers import rec_size, timed

import ringbuffer
from ringbuffer import (
    BufferEmpty,
    BufferFull,
    GroupNotFound,
    InvalidArgument,
    MessagesLost,
    Queue,
    RingBuffer,
    RingBufferError,
    Status,
    TooManyGroups,
)
from ringbuffer.ring import ffi, lib

pytestmark = pytest.mark.usefixtures("watchdog")

REC = 256  # the record of a MSG-byte message
MSG = REC - 8
ROOM = 4096  # what writers may fill of a 4096-byte ring
PER_RING = ROOM // REC  # records a 4096-byte ring holds


def strerror(code: int) -> str:
    return ffi.string(lib.rb_strerror(code)).decode()


def m(i: int, size: int = MSG) -> bytes:
    """Message i: its number, padded to ``size`` bytes."""
    return f"{i:08d}".encode().ljust(size, b".")


def num(msg: bytes) -> int:
    return int(msg[:8])


def group_named(rb: RingBuffer, name: str | None, kind: str | None = None) -> dict:
    found = [g for g in rb.groups() if g["name"] == name and (kind is None or g["kind"] == kind)]
    assert len(found) == 1, rb.groups()
    return found[0]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "g.ring"


# -- fan-out ----------------------------------------------------------------------


def test_every_group_gets_every_message_and_writes_ignore_groups(path):
    with (
        RingBuffer(path, 1 << 16) as rb,
        RingBuffer.open(path, group="a") as a,
        RingBuffer.open(path, group="b") as b,
    ):
        for i in range(10):
            (rb, a, b)[i % 3].write(m(i, 20))  # a member of any group writes for all
        for reader in (rb, a, b):
            assert [num(x) for x in reader.drain()] == list(range(10))
            assert reader.try_read() is None


def test_the_members_of_a_group_share_its_messages(path):
    with (
        RingBuffer(path, 1 << 16) as rb,
        RingBuffer.open(path, group="g") as g1,
        RingBuffer.open(path, group="g") as g2,
    ):
        for i in range(20):
            rb.write(m(i, 20))
        got = []
        for i in range(20):
            got.append(num((g1, g2)[i % 2].read()))
        assert got == list(range(20))  # each once, in order, across the two members
        assert g1.try_read() is None and g2.try_read() is None


def test_the_default_group_behaves_as_before(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path) as other:
        assert (rb.group, rb.ephemeral, other.group, other.ephemeral) == (None, False, None, False)
        rb.write(b"one")
        rb.write(b"two")
        assert other.read() == b"one"  # plain readers share the default group
        assert rb.read() == b"two"
        with pytest.raises(BufferEmpty):
            other.read()
        assert [g["kind"] for g in rb.groups()] == ["default"]


def test_the_slowest_group_holds_writers_back_in_a_lossless_ring(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="slow") as slow:
        for i in range(PER_RING):
            rb.write(m(i))
        assert len(rb.drain()) == PER_RING  # the default group has read everything
        with pytest.raises(BufferFull):
            rb.write(m(99))  # "slow" has not
        assert rb.info(count=False)["writable"] < REC
        assert num(slow.read()) == 0  # frees one record
        rb.write(m(PER_RING))
        assert [num(x) for x in slow.drain()] == list(range(1, PER_RING + 1))


def test_with_no_group_at_all_writes_always_succeed(path):
    with RingBuffer(path, 4096, default_group=False) as rb:
        assert rb.groups() == []
        for i in range(10 * PER_RING):
            rb.write(m(i))  # nobody is owed the messages


# -- groups that do not exist ---------------------------------------------------------


def test_a_ring_without_the_default_group_raises_group_not_found_at_once(path):
    RingBuffer(path, 4096, default_group=False).close()
    with RingBuffer.open(path) as rb:  # opening never fails for want of a group
        rb.write(b"x")
        with pytest.raises(GroupNotFound) as ei:
            rb.read()
        exc = ei.value
        assert isinstance(exc, LookupError) and isinstance(exc, RingBufferError)
        assert exc.code == Status.ENOGROUP and str(exc).startswith(strerror(lib.RB_ENOGROUP))
        assert "default group" in str(exc)
        elapsed, exc, _ = timed(lambda: rb.get(timeout=5))
        assert isinstance(exc, GroupNotFound) and elapsed < 1.0
        elapsed, exc, _ = timed(lambda: rb.get())  # forever: still at once
        assert isinstance(exc, GroupNotFound) and elapsed < 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda rb: rb.read(),
        lambda rb: rb.try_read(),
        lambda rb: rb.get(block=False),
        lambda rb: rb.get(timeout=5),
        lambda rb: rb.get_within(1000, timeout=5),
        lambda rb: rb.read_many(10),
        lambda rb: rb.get_many(10, timeout=5),
        lambda rb: rb.read_into(bytearray(1000), block=True, timeout=5),
        lambda rb: rb.drain(),
        lambda rb: next(iter(rb)),
        lambda rb: rb.peek(block=True, timeout=5).__enter__(),
        lambda rb: rb.peek_many(4, block=True, timeout=5).__enter__(),
        lambda rb: rb.get_with(bytes, timeout=5),
        lambda rb: asyncio.run(rb.aget(timeout=5)),
        lambda rb: asyncio.run(rb.aget_many(4, timeout=5)),
    ],
    ids=[
        "read",
        "try_read",
        "get_nowait",
        "get_timeout",
        "get_within",
        "read_many",
        "get_many",
        "read_into",
        "drain",
        "iter",
        "peek",
        "peek_many",
        "get_with",
        "aget",
        "aget_many",
    ],
)
def test_every_read_call_raises_group_not_found_at_once_after_remove_group(path, call):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="g") as g:
        rb.write(b"x")
        rb.remove_group("g")
        elapsed, exc, _ = timed(lambda: call(g))
        assert isinstance(exc, GroupNotFound), exc
        assert elapsed < 1.0
        assert "'g'" in str(exc)
        assert rb.read() == b"x"  # the other groups are untouched


def test_remove_group_frees_what_the_group_held_back(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="slow"):
        for i in range(PER_RING):
            rb.write(m(i))
        rb.drain()
        with pytest.raises(BufferFull):
            rb.write(m(99))
        rb.remove_group("slow")
        rb.write(m(99))
        assert [g["kind"] for g in rb.groups()] == ["default"]


def test_remove_group_of_an_unknown_name_raises_group_not_found(path):
    with RingBuffer(path, 4096) as rb:
        with pytest.raises(GroupNotFound, match="nosuch"):
            rb.remove_group("nosuch")


def test_remove_group_none_removes_the_default_group(path):
    with RingBuffer(path, 4096) as rb:
        rb.write(b"x")
        rb.remove_group(None)
        assert rb.groups() == []
        with pytest.raises(GroupNotFound):
            rb.read()
        with pytest.raises(GroupNotFound):
            rb.remove_group(None)


# -- where a group starts ---------------------------------------------------------------


def test_a_new_durable_group_starts_at_latest_or_earliest(path):
    with RingBuffer(path, 4096) as rb:
        for i in range(3):
            rb.write(m(i, 10))
        with (
            RingBuffer.open(path, group="late") as late,
            RingBuffer.open(path, group="early", start="earliest") as early,
        ):
            assert late.try_read() is None
            assert [num(x) for x in early.drain()] == [0, 1, 2]
            rb.write(m(3, 10))
            assert num(late.read()) == 3 and num(early.read()) == 3


def test_an_existing_durable_group_resumes_whatever_start_says(path):
    with RingBuffer(path, 4096) as rb:
        with RingBuffer.open(path, group="g") as g:
            for i in range(5):
                rb.write(m(i, 10))
            assert [num(g.read()) for _ in range(2)] == [0, 1]
        rb.write(m(5, 10))
        del g
        gc.collect()  # the handle leaves its group when it is collected (rb_close)
        kept = group_named(rb, "g")
        assert kept["members"] == 0 and kept["kind"] == "durable" and kept["backlog_messages"] == 4
        with RingBuffer.open(path, group="g", start="earliest") as g:
            assert num(g.read()) == 2
        with RingBuffer.open(path, group="g", start="latest") as g:
            assert [num(x) for x in g.drain()] == [3, 4, 5]


def test_a_durable_group_outlives_every_handle(path):
    with RingBuffer(path, 4096) as rb:
        RingBuffer.open(path, group="audit").close()
        rb.write(b"kept")
    with RingBuffer.open(path, group="audit") as g:
        assert g.read() == b"kept"


def test_an_ephemeral_group_is_private_and_vanishes_with_its_handle(path):
    with RingBuffer(path, 4096) as rb:
        rb.write(b"before")
        sub = RingBuffer.open(path, ephemeral=True)
        early = RingBuffer.open(path, ephemeral=True, start="earliest")
        assert (sub.group, sub.ephemeral) == (None, True)
        kinds = sorted(g["kind"] for g in rb.groups())
        assert kinds == ["default", "ephemeral", "ephemeral"]
        eph = [g for g in rb.groups() if g["ephemeral"]]
        assert all(g["name"] is None and g["pid"] == os.getpid() and g["members"] == 1 for g in eph)
        rb.write(b"after")
        assert sub.drain() == [b"after"]
        assert early.drain() == [b"before", b"after"]
        assert rb.drain() == [b"before", b"after"]  # they took nothing from the default group
        sub.close()
        early.close()
        del sub, early
        gc.collect()  # rb_close
        assert [g["kind"] for g in rb.groups()] == ["default"]
        for i in range(PER_RING + 2):  # and hold no writer back
            rb.write(m(i))
            rb.read()


def test_an_ephemeral_group_vanishes_when_closed_though_the_object_lives_on(path):
    with RingBuffer(path, 4096) as rb:
        sub = RingBuffer.open(path, ephemeral=True)
        sub.close()
        assert [g["kind"] for g in rb.groups()] == ["default"]
        for i in range(PER_RING + 2):  # a closed subscriber never holds a writer back
            rb.write(m(i))
            rb.read()
        assert sub.closed


def test_an_ephemeral_group_of_a_killed_process_vanishes(path):
    RingBuffer(path, 4096).close()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_subscribe_and_wait, args=(str(path), ready))
    child.start()
    try:
        assert ready.wait(30)
        with RingBuffer.open(path) as rb:
            assert [g["kind"] for g in rb.groups()].count("ephemeral") == 1
            child.kill()
            child.join(30)
            assert [g["kind"] for g in rb.groups()] == ["default"]
    finally:
        child.kill()
        child.join(30)


def _subscribe_and_wait(path: str, ready) -> None:
    sub = RingBuffer.open(path, ephemeral=True)  # kept: collected, it would leave its group
    ready.set()
    assert sub.ephemeral
    time.sleep(60)


# -- limits and arguments -------------------------------------------------------------------


def test_64_named_groups_fit_without_the_default_group_and_the_65th_raises_too_many_groups(path):
    RingBuffer(path, 4096, default_group=False).close()
    for i in range(64):
        RingBuffer.open(path, group=f"g{i}").close()
    with pytest.raises(TooManyGroups) as ei:
        RingBuffer.open(path, group="one-too-many")
    assert ei.value.code == Status.EGROUPS and str(ei.value).startswith(strerror(lib.RB_EGROUPS))
    with pytest.raises(TooManyGroups):
        RingBuffer.open(path, ephemeral=True)
    with RingBuffer.open(path, group="g7") as rb:  # an existing one is joined
        assert len(rb.groups()) == 64
        rb.remove_group("g0")
    RingBuffer.open(path, group="one-more").close()


def test_the_default_group_counts_among_the_64(path):
    RingBuffer(path, 4096).close()
    for i in range(63):
        RingBuffer.open(path, group=f"g{i}").close()
    with pytest.raises(TooManyGroups):
        RingBuffer.open(path, group="g63")


@pytest.mark.parametrize(
    "name",
    ["", "x" * 64, "a\0b", "é" * 32, "\udc80x"],
    ids=["empty", "64-bytes", "nul", "64-utf8-bytes", "not-utf8"],
)
def test_a_bad_group_name_is_invalid_argument(path, name):
    with RingBuffer(path, 4096) as rb:
        with pytest.raises(InvalidArgument) as ei:
            RingBuffer.open(path, group=name)
        assert isinstance(ei.value, ValueError) and "group name" in str(ei.value)
        assert [g["kind"] for g in rb.groups()] == ["default"]
        if name.isascii() or len(name.encode("utf-8", "surrogateescape")) > 63:
            with pytest.raises(InvalidArgument):
                rb.remove_group(name)
        else:  # a name made by a C program need not be UTF-8: remove_group takes its bytes
            with pytest.raises(GroupNotFound):
                rb.remove_group(name)


def test_a_name_of_63_bytes_of_utf8_is_accepted(path):
    name = "é" * 31 + "a"
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group=name) as g:
        assert g.group == name and group_named(rb, name)["kind"] == "durable"


def test_a_group_name_that_is_not_a_str_is_a_type_error(path):
    RingBuffer(path, 4096).close()
    for bad in (b"bytes", 5):
        with pytest.raises(TypeError, match="group name must be a str"):
            RingBuffer.open(path, group=bad)  # type: ignore[arg-type]


def test_bad_start_and_ephemeral_with_a_name_are_invalid_argument(path):
    RingBuffer(path, 4096).close()
    with pytest.raises(InvalidArgument, match="start 'middle'"):
        RingBuffer.open(path, group="g", start="middle")
    with pytest.raises(InvalidArgument, match="start"):
        RingBuffer.open(path, start="EARLIEST")
    with pytest.raises(InvalidArgument, match="ephemeral"):
        RingBuffer.open(path, group="g", ephemeral=True)
    with RingBuffer.open(path) as rb:
        assert [g["kind"] for g in rb.groups()] == ["default"]  # nothing was made


def test_properties(path):
    with RingBuffer(path, 4096) as rb:
        assert (rb.group, rb.ephemeral, rb.overwrite) == (None, False, False)
        with RingBuffer.open(path, group="g") as g:
            assert (g.group, g.ephemeral, g.overwrite) == ("g", False, False)
        with RingBuffer.open(path, ephemeral=True) as e:
            assert (e.group, e.ephemeral, e.overwrite) == (None, True, False)
    with RingBuffer(path, 4096, remove=True, overwrite=True) as rb:
        assert rb.overwrite
        with RingBuffer.open(path, group="g") as g:
            assert g.overwrite


def test_a_pickled_handle_reopens_in_its_group(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="g") as g:
        rb.write(b"x")
        again = pickle.loads(pickle.dumps(g))
        assert again.group == "g" and again.read() == b"x"
        plain = pickle.loads(pickle.dumps(rb))
        assert plain.group is None and plain.read() == b"x"
        again.close()
        plain.close()


# -- the group table ----------------------------------------------------------------------


def test_groups_reports_every_key_and_the_backlogs(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="g") as g:
        for n in (10, 20, 30):
            rb.write(b"x" * n)
        g.read()
        table = {g["kind"] + str(g["name"]): g for g in rb.groups()}
        assert set(table) == {"defaultNone", "durableg"}
        keys = {
            "name",
            "kind",
            "ephemeral",
            "members",
            "position",
            "backlog_messages",
            "backlog_bytes",
            "lost",
            "counted",
            "pid",
        }
        for entry in table.values():
            assert set(entry) == keys
            assert entry["counted"] is True and entry["lost"] == 0 and entry["pid"] == 0
            assert entry["ephemeral"] is False
        d, n = table["defaultNone"], table["durableg"]
        assert (d["backlog_messages"], d["backlog_bytes"]) == (3, 60)
        assert (n["backlog_messages"], n["backlog_bytes"]) == (2, 50)
        assert n["position"] - d["position"] == rec_size(10)
        assert d["position"] == rb.positions()[0] and n["position"] == g.positions()[0]


def test_members_counts_the_handles_of_every_process(path):
    RingBuffer(path, 4096).close()
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_join_and_wait, args=(str(path), ready, done))
    child.start()
    try:
        assert ready.wait(30)
        g1, g2 = RingBuffer.open(path, group="g"), RingBuffer.open(path, group="g")
        assert group_named(g1, "g")["members"] == 4  # two here, two in the child
        assert group_named(g1, None)["members"] == 0  # the creator closed
        g1.close()
        g2.close()
        del g1, g2
        gc.collect()
        with RingBuffer.open(path) as rb:
            assert group_named(rb, "g")["members"] == 2
    finally:
        done.set()
        child.join(30)
    with RingBuffer.open(path, group="g") as g:
        assert group_named(g, "g")["members"] == 1


def _join_and_wait(path: str, ready, done) -> None:
    a = RingBuffer.open(path, group="g")
    b = RingBuffer.open(path, group="g")
    ready.set()
    done.wait(60)
    a.close()
    b.close()


def test_info_reports_the_groups_and_the_space_for_writers(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="g") as g:
        rb.write(b"x" * 100)
        rb.write(b"y" * 100)
        rb.drain()
        info = rb.info()
        assert sorted(str(e["name"]) for e in info["groups"]) == ["None", "g"]
        assert info["group_count"] == 2
        assert info["overwrite"] is False
        # The default group has read both messages, "g" none: the space is still in use for writers.
        assert info["bytes_used"] == 2 * rec_size(100)
        assert info["writable"] == ROOM - 2 * rec_size(100)
        assert info["tail"] - info["reclaimed"] >= info["bytes_used"]
        assert info["head"] == info["tail"]  # this handle's group's position
        assert info["messages"] == 0
        ginfo = g.info()
        assert ginfo["head"] == ginfo["tail"] - 2 * rec_size(100) and ginfo["messages"] == 2
        quick = rb.info(count=False)
        assert quick["groups"] is None and quick["group_count"] == 2
        g.drain()
        # Read by every group: free for writers, though none has reclaimed it yet.
        assert rb.info(count=False)["bytes_used"] == 0
        assert rb.info(count=False)["writable"] == ROOM


# -- overwrite rings --------------------------------------------------------------------------


def test_an_overwrite_ring_never_refuses_a_writer(path):
    with RingBuffer(path, 4096, overwrite=True) as rb, RingBuffer.open(path, group="slow"):
        for i in range(20 * PER_RING):
            rb.write(m(i))  # never BufferFull
        rb.put(m(-1), timeout=0)


def test_an_overrun_group_gets_messages_lost_with_the_exact_count_then_the_oldest(path):
    with RingBuffer(path, 4096, overwrite=True) as rb, RingBuffer.open(path, group="r") as r:
        for i in range(PER_RING):
            rb.write(m(i))
        assert [num(r.read()) for _ in range(2)] == [0, 1]
        for i in range(PER_RING, PER_RING + 4):
            rb.write(m(i))  # reclaims records 0..3: "r" had read 0 and 1
        with pytest.raises(MessagesLost) as ei:
            r.read()
        assert ei.value.count == 2 and ei.value.code == Status.ELOST
        assert str(ei.value).startswith(strerror(lib.RB_ELOST)) and str(ei.value).endswith("2 messages lost")
        assert num(r.read()) == 4  # the oldest message still in the ring
        with pytest.raises(MessagesLost) as ei:
            rb.read()  # the default group had read none of the four
        assert ei.value.count == 4
        assert num(rb.read()) == 4
        lost = {g["name"]: g["lost"] for g in rb.groups()}
        assert lost == {None: 4, "r": 2}
        assert [num(x) for x in r.drain()] == list(range(5, PER_RING + 4))


@pytest.mark.parametrize(
    "call",
    [
        lambda rb: rb.read(),
        lambda rb: rb.try_read(),
        lambda rb: rb.get(),
        lambda rb: rb.get(timeout=5),
        lambda rb: rb.get_within(1000),
        lambda rb: rb.read_many(100),
        lambda rb: rb.get_many(100, timeout=5),
        lambda rb: rb.read_into(bytearray(1000)),
        lambda rb: rb.drain(),
        lambda rb: next(iter(rb)),
        lambda rb: asyncio.run(rb.aget(timeout=5)),
        lambda rb: asyncio.run(rb.aget_many(100, timeout=5)),
        lambda rb: _queue_get(rb.path),
    ],
    ids=[
        "read",
        "try_read",
        "get",
        "get_timeout",
        "get_within",
        "read_many",
        "get_many",
        "read_into",
        "drain",
        "iter",
        "aget",
        "aget_many",
        "queue_get",
    ],
)
def test_every_read_call_raises_messages_lost_once_then_goes_on(path, call):
    with RingBuffer(path, 4096, overwrite=True) as rb:
        with RingBuffer.open(path, group="r") as r:
            for i in range(PER_RING + 3):
                rb.write(m(i))
            elapsed, exc, _ = timed(lambda: call(r))
            assert isinstance(exc, MessagesLost) and exc.count == 3, exc
            assert elapsed < 1.0
            assert num(r.read()) == 3


def _queue_get(path: str) -> bytes:
    with Queue.open(path, group="r", dumps=bytes, loads=bytes) as q:
        return q.get(timeout=5)


def test_messages_lost_of_drain_holds_what_it_had_taken(path, monkeypatch):
    with RingBuffer(path, 1 << 16) as rb:
        rb.write(b"a")
        rb.write(b"b")
        real = RingBuffer._get_many
        calls = []

        def gap_after_first_batch(self, *args, **kw):
            calls.append(1)
            if len(calls) == 2:
                raise ringbuffer.exceptions.messages_lost(7)
            return real(self, *args, **kw)

        monkeypatch.setattr(RingBuffer, "_get_many", gap_after_first_batch)
        with pytest.raises(MessagesLost) as ei:
            rb.drain()
        assert ei.value.count == 7 and ei.value.messages == [b"a", b"b"]
        assert str(ei.value).endswith(": 7 messages lost")


def test_one_message_lost_is_singular():
    assert str(ringbuffer.exceptions.messages_lost(1)).endswith(": 1 message lost")


@pytest.mark.parametrize(
    "call",
    [
        lambda rb: rb.peek(),
        lambda rb: rb.peek(block=True, timeout=5),
        lambda rb: rb.peek_many(4),
        lambda rb: rb.get_with(bytes),
    ],
    ids=["peek", "peek_blocking", "peek_many", "get_with"],
)
def test_zero_copy_reads_are_refused_on_an_overwrite_ring(path, call):
    with RingBuffer(path, 4096, overwrite=True) as rb:
        rb.write(b"stays")
        with pytest.raises(InvalidArgument, match="peek is not available on an overwrite ring") as ei:
            call(rb)
        assert "use read()" in str(ei.value) and str(ei.value).startswith(strerror(lib.RB_EINVAL))
        assert rb.read() == b"stays"


def test_the_queue_copies_on_an_overwrite_ring(path):
    RingBuffer(path, 1 << 18, overwrite=True).close()
    q = Queue.open(path)
    try:
        big = bytes(range(256)) * 280  # larger than the Queue's zero-copy threshold (64 KiB)
        q.put({"big": big})
        q.put("small")
        assert q.get(timeout=5) == {"big": big}
        assert q.get(timeout=5) == "small"
        with pytest.raises(InvalidArgument, match="overwrite ring"):
            q.peek()
        assert not q.full()
    finally:
        q.close()


def test_get_array_copies_on_an_overwrite_ring(path):
    numpy = pytest.importorskip("numpy")
    with RingBuffer(path, 1 << 16, overwrite=True) as rb:
        a = numpy.arange(100, dtype="<i4").reshape(10, 10)
        rb.put_array(a)
        b = rb.get_array(timeout=5)
        assert (a == b).all() and b.flags.writeable


# -- sync ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_sync_makes_the_message_visible_through_another_descriptor(tmp_path, where):
    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        folder = f"/dev/shm/rb-sync-{os.getpid()}"
        os.makedirs(folder, exist_ok=True)
    else:
        folder = str(tmp_path)  # pytest's tmp_path: on disk here, not tmpfs
    file = os.path.join(folder, "sync.ring")
    payload = b"synced-payload-" + os.urandom(8).hex().encode()
    try:
        with RingBuffer(file, 4096, remove=True) as rb, RingBuffer.open(file, group="audit") as g:
            rb.write(payload)
            g.read()
            rb.sync()
            with open(file, "rb") as f:
                assert payload in f.read()
            pos = g.positions()[0]
        with RingBuffer.open(file, group="audit") as g:
            assert g.positions()[0] == pos
    finally:
        if where == "tmpfs":
            os.unlink(file)
            os.rmdir(folder)


def test_sync_of_a_closed_ring_raises_buffer_closed(path):
    rb = RingBuffer(path, 4096)
    rb.close()
    with pytest.raises(ringbuffer.BufferClosed):
        rb.sync()
    with pytest.raises(ringbuffer.BufferClosed):
        rb.groups()
    with pytest.raises(ringbuffer.BufferClosed):
        rb.remove_group("g")


# -- the Queue in groups ---------------------------------------------------------------------------


def test_queue_open_in_groups_gives_each_group_every_object(path):
    q = Queue(path=path, maxsize_bytes=1 << 16)
    a = Queue.open(path, group="a")
    b = Queue.open(path, group="b")
    sub = Queue.open(path, ephemeral=True)
    try:
        objs = [{"i": i} for i in range(5)]
        for obj in objs:
            q.put(obj)
        for reader in (q, a, b, sub):
            assert [reader.get(timeout=5) for _ in objs] == objs
            assert reader.empty()
        assert pickle.loads(pickle.dumps(a))._ring.group == "a"
    finally:
        for x in (q, a, b, sub):
            x.close()


def test_queue_full_and_bytes_used_see_the_slowest_group(path):
    q = Queue(path=path, maxsize_bytes=4096, dumps=bytes, loads=bytes)
    slow = Queue.open(path, group="slow", dumps=bytes, loads=bytes)
    try:
        for i in range(PER_RING - 1):
            q.put_nowait(m(i))
        assert not q.full()  # 256 bytes left: a 240-byte message fits
        q.put_nowait(m(PER_RING - 1, 240))
        assert q.full() and q.bytes_used() == ROOM - 8
        assert [num(q.get_nowait()) for _ in range(PER_RING)] == list(range(PER_RING))
        assert q.empty()  # nothing left for the default group...
        assert q.full()  # ...but "slow" holds the space
        assert q.bytes_used() == ROOM - 8
        assert num(slow.get(timeout=5)) == 0
        assert not q.full()
    finally:
        q.close()
        slow.close()


def test_a_thread_blocked_in_get_of_a_group_sees_the_next_message(path):
    with RingBuffer(path, 4096) as rb, RingBuffer.open(path, group="g") as g:
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.append(g.get(timeout=10)))
        t.start()
        time.sleep(0.1)
        rb.write(b"wake")
        t.join(10)
        assert got == [b"wake"]
        assert rb.read() == b"wake"
