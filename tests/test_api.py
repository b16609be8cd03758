"""The whole Python API of ringbuffer.RingBuffer, including every bad input."""

from __future__ import annotations

import array
import collections
import copy
import errno
import gc
import multiprocessing
import os
import pathlib
import pickle
import re
import shutil
import stat
import struct
import sys
import tempfile
import threading
import time
import weakref

import pytest
from _helpers import (
    FILE_ID_LEN,
    FORMAT_VERSION,
    GROUP_COUNT,
    GROUP_KIND_DEFAULT,
    GROUP_OFF_CREATED,
    GROUP_OFF_GEN,
    GROUP_OFF_HEAD,
    GROUP_OFF_KIND,
    GROUP_OFF_LOST_PENDING,
    GROUP_OFF_TURN,
    GROUP_SIZE,
    HEADER_SIZE,
    MAGIC,
    OFF_CAPACITY,
    OFF_CREATED,
    OFF_FILE_ID,
    OFF_FLAGS,
    OFF_GROUP_HEAD,
    OFF_GROUPS,
    OFF_GROUPS_USED,
    OFF_HEAD,
    OFF_HEADER_SIZE,
    OFF_MAGIC,
    OFF_MAX_MESSAGE,
    OFF_SLOT_COUNT,
    OFF_SLOT_SIZE,
    OFF_SLOTS_USED,
    OFF_STATE,
    OFF_TAIL,
    OFF_VERSION,
    SLOT_COUNT,
    SLOT_OFF_GEN,
    SLOT_OFF_GROUP,
    SLOT_OFF_PID,
    SLOT_SIZE,
    STATE_READY,
    child_read_verify,
    child_write,
    group_offset,
    open_fd_count,
    payload,
    peek_u64,
    poke,
    poke_u32,
    poke_u64,
    rec_size,
    record_word,
    slot_id,
    slot_offset,
)

import ringbuffer
import ringbuffer.ring as ring_module
from ringbuffer import (
    BufferClosed,
    BufferEmpty,
    BufferFull,
    CorruptBuffer,
    InvalidArgument,
    InvalidSize,
    RingBuffer,
    RingBufferError,
    UnsupportedVersion,
)
from ringbuffer.ring import ffi, lib

IS_ROOT = os.geteuid() == 0


def strerror(code: int) -> str:
    return ffi.string(lib.rb_strerror(code)).decode()


def fill(rb: RingBuffer, size: int) -> int:
    """Writes messages of `size` bytes until the ring is full; returns how many."""
    n = 0
    while rb.try_write(bytes([n % 256]) * size):
        n += 1
    return n


# ===========================================================================
# creating


@pytest.mark.parametrize(
    ("size", "capacity"),
    [
        (1, 4096),
        (100, 4096),
        (4095, 4096),
        (4096, 4096),
        (4097, 8192),
        (5000, 8192),
        (65536, 65536),
        (65537, 131072),
        (1 << 20, 1 << 20),
    ],
)
def test_create_rounds_capacity_up_to_power_of_two(ring_path, size, capacity):
    with RingBuffer(ring_path, size) as rb:
        assert rb.capacity == capacity
        assert rb.max_message_size == capacity // 2
        assert rb.positions() == (0, 0)
        assert rb.closed is False
        assert rb.path == str(ring_path)
        assert os.path.getsize(ring_path) == HEADER_SIZE + capacity


def test_create_writes_documented_header(ring_path):
    RingBuffer(ring_path, 8192).close()
    raw = ring_path.read_bytes()
    assert len(raw) == HEADER_SIZE + 8192
    assert raw[OFF_MAGIC : OFF_MAGIC + 8] == MAGIC
    assert struct.unpack_from("<I", raw, OFF_VERSION)[0] == ringbuffer.format_version() == 4
    assert struct.unpack_from("<I", raw, OFF_HEADER_SIZE)[0] == HEADER_SIZE
    assert struct.unpack_from("<Q", raw, OFF_CAPACITY)[0] == 8192
    assert struct.unpack_from("<Q", raw, OFF_MAX_MESSAGE)[0] == 4096
    assert struct.unpack_from("<I", raw, OFF_STATE)[0] == STATE_READY
    assert struct.unpack_from("<Q", raw, OFF_TAIL)[0] == 0
    assert struct.unpack_from("<Q", raw, OFF_HEAD)[0] == 0
    assert struct.unpack_from("<I", raw, OFF_FLAGS)[0] == 0
    assert struct.unpack_from("<II", raw, OFF_SLOT_COUNT) == (SLOT_COUNT, SLOT_SIZE)
    assert OFF_SLOT_SIZE == OFF_SLOT_COUNT + 4
    assert HEADER_SIZE == OFF_GROUPS + GROUP_COUNT * GROUP_SIZE == 282624
    # the creating handle took slot 0 (generation 1), joined the default
    # group (entry 0: its index + 1, and the group's gen), and left it on
    # close (group 0: no longer a member; the gen stays)
    assert struct.unpack_from("<I", raw, OFF_SLOTS_USED)[0] == 1
    assert struct.unpack_from("<I", raw, slot_offset(0, SLOT_OFF_GEN))[0] == 1
    assert struct.unpack_from("<I", raw, slot_offset(0, SLOT_OFF_PID))[0] == os.getpid()
    assert struct.unpack_from("<II", raw, slot_offset(0, SLOT_OFF_GROUP)) == (0, 1)
    assert raw[slot_offset(1) : OFF_GROUPS] == bytes(OFF_GROUPS - slot_offset(1))  # no other slot taken
    # the default group: entry 0, gen 1 (odd: it exists), kind 1, head 0, turn free
    assert struct.unpack_from("<I", raw, OFF_GROUPS_USED)[0] == 1
    assert struct.unpack_from("<Q", raw, group_offset(0, GROUP_OFF_HEAD))[0] == 0
    assert struct.unpack_from("<I", raw, group_offset(0, GROUP_OFF_TURN))[0] == 0
    assert struct.unpack_from("<I", raw, group_offset(0, GROUP_OFF_GEN))[0] == 1
    assert struct.unpack_from("<QQI", raw, group_offset(0, GROUP_OFF_LOST_PENDING)) == (0, 0, 0)
    assert struct.unpack_from("<I", raw, group_offset(0, GROUP_OFF_KIND))[0] == GROUP_KIND_DEFAULT
    created = struct.unpack_from("<Q", raw, OFF_CREATED)[0]
    assert abs(struct.unpack_from("<Q", raw, group_offset(0, GROUP_OFF_CREATED))[0] - created) < 60 * 10**9
    assert raw[group_offset(0, 48) : group_offset(0, GROUP_SIZE)] == bytes(GROUP_SIZE - 48)  # no name
    assert raw[group_offset(1) : HEADER_SIZE] == bytes(HEADER_SIZE - group_offset(1))  # no other group
    assert raw[HEADER_SIZE:] == bytes(8192)  # an empty ring is all zero


def test_positions_are_stored_at_documented_offsets(ring, ring_path):
    ring.write(b"abc")
    ring.write(b"defghijkl")
    ring.read()
    head, tail = ring.positions()
    assert (head, tail) == (rec_size(3), rec_size(3) + rec_size(9))
    # a read moves the group's head (the default group: entry 0), not the
    # reclaimed position, which writers move when they need the space
    assert peek_u64(ring_path, OFF_GROUP_HEAD) == head
    assert peek_u64(ring_path, OFF_TAIL) == tail
    assert peek_u64(ring_path, OFF_HEAD) == 0
    assert (ring.info()["head"], ring.info()["reclaimed"]) == (head, 0)
    # the record still queued: header word (length 9, no flags, the writer's id:
    # its slot and generation) then payload
    word = peek_u64(ring_path, HEADER_SIZE + head)
    assert word & 0xFFFFFFFF == 9
    assert (word >> 32) & 0xFF == 0
    assert word >> 40 == slot_id(ring_path, 0) == 1 << 9  # the first handle: slot 0, generation 1
    with open(ring_path, "rb") as f:
        f.seek(HEADER_SIZE + head + 8)
        assert f.read(9) == b"defghijkl"
        f.seek(HEADER_SIZE)
        # a read record stays as it was written until a writer reclaims it
        assert f.read(head) == struct.pack("<Q", record_word(3, writer=1 << 9)) + b"abc" + bytes(5)
    # fill the ring up to head + capacity, read one more: the next write
    # must reclaim, and frees (zeroes) all the group has read
    ring.write(b"m" * 2000)
    ring.write(b"n" * 2040)
    assert ring.positions() == (head, ring.capacity)
    assert ring.read() == b"defghijkl"
    head = peek_u64(ring_path, OFF_GROUP_HEAD)
    assert head == rec_size(3) + rec_size(9)
    assert peek_u64(ring_path, OFF_HEAD) == 0
    ring.write(b"x")  # at position capacity: data offset 0
    assert peek_u64(ring_path, OFF_HEAD) == head
    assert peek_u64(ring_path, OFF_TAIL) == ring.capacity + rec_size(1)
    assert ring.positions() == (head, ring.capacity + rec_size(1))
    assert ring.info()["reclaimed"] == head
    with open(ring_path, "rb") as f:
        f.seek(HEADER_SIZE)
        assert f.read(head) == struct.pack("<Q", record_word(1, writer=1 << 9)) + b"x" + bytes(head - 9)


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib"])
def test_create_and_open_accept_path_types(tmp_path, kind):
    p = tmp_path / "typed.ring"
    arg = {"str": str(p), "bytes": os.fsencode(p), "pathlib": p}[kind]
    with RingBuffer(arg, 4096) as rb:
        rb.write(b"hello")
        assert rb.path == str(p)
        assert isinstance(rb.path, str)
    with RingBuffer.open(arg) as rb:
        assert rb.read() == b"hello"
        assert rb.path == str(p)


def test_create_existing_path_raises_file_exists_and_keeps_old_file(ring_path):
    with RingBuffer(ring_path, 4096) as rb:
        rb.write(b"keep me")
    before = ring_path.read_bytes()
    with pytest.raises(FileExistsError) as ei:
        RingBuffer(ring_path, 8192)
    assert ei.value.errno == errno.EEXIST
    assert ei.value.filename == str(ring_path)
    assert ring_path.read_bytes() == before
    assert os.listdir(ring_path.parent) == [ring_path.name]  # no temporary file left behind
    with RingBuffer.open(ring_path) as rb:
        assert rb.capacity == 4096
        assert rb.read() == b"keep me"


def test_create_over_non_ring_file_without_remove_keeps_it(tmp_path):
    p = tmp_path / "precious.txt"
    p.write_bytes(b"precious data")
    with pytest.raises(FileExistsError):
        RingBuffer(p, 4096)
    assert p.read_bytes() == b"precious data"
    assert os.listdir(tmp_path) == [p.name]


def test_remove_true_replaces_atomically(ring_path):
    old = RingBuffer(ring_path, 4096)
    old.write(b"old message")
    new = RingBuffer(ring_path, 8192, remove=True)
    try:
        assert new.capacity == 8192
        assert new.positions() == (0, 0)
        assert new.try_read() is None
        # the old handle keeps its own (now unlinked) ring
        assert old.read() == b"old message"
        old.write(b"to the old ring")
        assert new.try_read() is None
        new.write(b"to the new ring")
        with RingBuffer.open(ring_path) as third:
            assert third.capacity == 8192
            assert third.read() == b"to the new ring"
        assert old.read() == b"to the old ring"
        assert os.listdir(ring_path.parent) == [ring_path.name]
    finally:
        old.close()
        new.close()


def test_remove_true_on_missing_path_creates(ring_path):
    with RingBuffer(ring_path, 4096, remove=True) as rb:
        rb.write(b"x")
        assert rb.read() == b"x"


def test_remove_true_replaces_non_ring_file(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"junk" * 100)
    with RingBuffer(p, 4096, remove=True) as rb:
        assert rb.capacity == 4096
    assert os.path.getsize(p) == HEADER_SIZE + 4096


def test_open_missing_file(tmp_path):
    p = tmp_path / "missing.ring"
    with pytest.raises(FileNotFoundError) as ei:
        RingBuffer.open(p)
    assert ei.value.errno == errno.ENOENT
    assert ei.value.filename == str(p)


def test_create_in_missing_directory(tmp_path):
    p = tmp_path / "no" / "such" / "dir.ring"
    with pytest.raises(FileNotFoundError) as ei:
        RingBuffer(p, 4096)
    assert ei.value.filename == str(p)


@pytest.mark.skipif(IS_ROOT, reason="root bypasses file permissions (tests run as root here)")
def test_open_without_read_permission(ring_path):
    RingBuffer(ring_path, 4096).close()
    os.chmod(ring_path, 0o200)
    with pytest.raises(PermissionError) as ei:
        RingBuffer.open(ring_path)
    assert ei.value.errno == errno.EACCES
    assert ei.value.filename == str(ring_path)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to switch to an unprivileged user")
def test_open_without_permission_as_other_user():
    """As root (CI), check permissions from a child that drops to 'nobody'."""
    folder = tempfile.mkdtemp(prefix="rb-perm-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "private.ring")
        RingBuffer(path, 4096).close()  # mode 0600, owned by root
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    RingBuffer.open(path)
                except PermissionError as e:
                    code = 0 if (e.errno == errno.EACCES and e.filename == path) else 2
                try:
                    RingBuffer(os.path.join(folder, "new.ring"), 4096)
                except PermissionError as e:
                    code = code if e.errno == errno.EACCES else 3
                else:
                    code = 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(IS_ROOT, reason="root bypasses file permissions (tests run as root here)")
def test_create_in_unwritable_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o500)
    try:
        with pytest.raises(PermissionError) as ei:
            RingBuffer(d / "x.ring", 4096)
        assert ei.value.filename == str(d / "x.ring")
    finally:
        os.chmod(d, 0o700)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs mounted at /sys")
def test_create_where_even_root_cannot(tmp_path):
    # sysfs refuses new files to everyone (EACCES, or EROFS when mounted read-only):
    # the OS error surfaces as an OSError subclass with errno and filename.
    with pytest.raises(OSError) as ei:
        RingBuffer("/sys/kernel/ringbuffer-test.ring", 4096)
    assert ei.value.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    if ei.value.errno in (errno.EACCES, errno.EPERM):
        assert isinstance(ei.value, PermissionError)
    assert ei.value.filename == "/sys/kernel/ringbuffer-test.ring"


def test_open_directory(tmp_path):
    with pytest.raises(IsADirectoryError) as ei:
        RingBuffer.open(tmp_path)
    assert ei.value.errno == errno.EISDIR
    assert ei.value.filename == str(tmp_path)


def test_create_over_directory(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(FileExistsError):
        RingBuffer(d, 4096)
    with pytest.raises(IsADirectoryError):
        RingBuffer(d, 4096, remove=True)
    assert d.is_dir()
    assert os.listdir(tmp_path) == ["dir"]


def test_open_symlink_is_refused(ring_path):
    RingBuffer(ring_path, 4096).close()
    link = ring_path.parent / "link.ring"
    link.symlink_to(ring_path)
    with pytest.raises(OSError) as ei:
        RingBuffer.open(link)
    assert ei.value.errno == errno.ELOOP
    assert ei.value.filename == str(link)


def test_create_over_symlink_never_touches_its_target(tmp_path):
    target = tmp_path / "target.txt"
    target.write_bytes(b"target data")
    link = tmp_path / "link.ring"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        RingBuffer(link, 4096)
    assert target.read_bytes() == b"target data"
    # remove=True replaces the link itself, not the file it points to
    with RingBuffer(link, 4096, remove=True) as rb:
        rb.write(b"x")
    assert not link.is_symlink()
    assert target.read_bytes() == b"target data"
    with RingBuffer.open(link) as rb:
        assert rb.read() == b"x"


def test_create_with_dangling_symlink_at_path(tmp_path):
    link = tmp_path / "dangling.ring"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        RingBuffer(link, 4096)
    assert not (tmp_path / "nowhere").exists()


def test_create_with_longest_legal_file_name(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "r" * name_max
    (tmp_path / ("x" * name_max)).write_bytes(b"")  # the file system accepts such names
    with RingBuffer(tmp_path / name, 4096) as rb:
        rb.write(b"long name")
    with RingBuffer.open(tmp_path / name) as rb:
        assert rb.read() == b"long name"


def test_non_utf8_bytes_path(tmp_path):
    p = os.fsencode(tmp_path) + b"/ring-\xff\xfe.ring"
    with RingBuffer(p, 4096) as rb:
        assert os.fsencode(rb.path) == p
        other = pickle.loads(pickle.dumps(rb))
        with other:
            rb.write(b"via surrogates")
            assert other.read() == b"via surrogates"
    with RingBuffer.open(p) as rb:
        assert rb.try_read() is None


# --- corrupt files ----------------------------------------------------------


def corrupt_cases():
    """(name, function(path) that spoils a freshly created 8192-byte ring)."""

    def u32(off, v):
        return lambda p: poke_u32(p, off, v)

    def u64(off, v):
        return lambda p: poke_u64(p, off, v)

    def truncate(n):
        def f(p):
            with open(p, "r+b") as fh:
                fh.truncate(n)

        return f

    def extend(p):
        with open(p, "ab") as fh:
            fh.write(bytes(4096))

    def both(*fs):
        def f(p):
            for g in fs:
                g(p)

        return f

    return [
        ("garbage", lambda p: p.write_bytes(os.urandom(HEADER_SIZE + 8192))),
        ("zeros", lambda p: p.write_bytes(bytes(HEADER_SIZE + 8192))),
        ("empty", truncate(0)),
        ("short", truncate(100)),
        ("header-only", truncate(HEADER_SIZE)),
        ("truncated-data", truncate(HEADER_SIZE + 4096)),
        ("one-byte-short", truncate(HEADER_SIZE + 8191)),
        ("extended", extend),
        ("magic", lambda p: poke(p, OFF_MAGIC, b"RINGBUG\0")),
        ("magic-case", lambda p: poke(p, OFF_MAGIC, b"ringbuf\0")),
        ("header-size", u32(OFF_HEADER_SIZE, 8192)),
        ("header-size-v1", u32(OFF_HEADER_SIZE, 4096)),
        ("slot-count", u32(OFF_SLOT_COUNT, SLOT_COUNT // 2)),
        ("slot-size", u32(OFF_SLOT_SIZE, SLOT_SIZE * 2)),
        ("capacity-not-pow2", u64(OFF_CAPACITY, 6000)),
        ("capacity-mismatch", both(u64(OFF_CAPACITY, 4096), u64(OFF_MAX_MESSAGE, 2048))),
        ("capacity-zero", u64(OFF_CAPACITY, 0)),
        ("capacity-huge", u64(OFF_CAPACITY, 1 << 40)),
        ("max-message", u64(OFF_MAX_MESSAGE, 8192)),
        ("state-not-ready", u32(OFF_STATE, 0)),
        ("flags", u32(OFF_FLAGS, 1)),
        ("flags-unknown-bit", u32(OFF_FLAGS, 0x8)),
        ("head-after-tail", both(u64(OFF_TAIL, 16), u64(OFF_HEAD, 32))),
        ("used-over-capacity", both(u64(OFF_HEAD, 0), u64(OFF_TAIL, 8192 + 8))),
        ("unaligned-tail", u64(OFF_TAIL, 12)),
        ("unaligned-head", both(u64(OFF_TAIL, 64), u64(OFF_HEAD, 4), u64(OFF_GROUP_HEAD, 8))),
        # the default group's head: in [head, tail], 8-aligned
        ("group-head-after-tail", both(u64(OFF_TAIL, 16), u64(OFF_GROUP_HEAD, 24))),
        ("group-head-before-head", both(u64(OFF_TAIL, 32), u64(OFF_HEAD, 16), u64(OFF_GROUP_HEAD, 8))),
        ("unaligned-group-head", both(u64(OFF_TAIL, 64), u64(OFF_GROUP_HEAD, 4))),
    ]


@pytest.mark.parametrize(
    "version", [*range(ringbuffer.format_version()), ringbuffer.format_version() + 1, 0xFFFFFFFF]
)
def test_open_other_format_version(ring_path, version):
    if version == ringbuffer.format_version():
        pytest.skip("that is this library's version")
    RingBuffer(ring_path, 8192).close()
    poke_u32(ring_path, OFF_VERSION, version)
    with pytest.raises(UnsupportedVersion) as ei:
        RingBuffer.open(ring_path)
    assert isinstance(ei.value, CorruptBuffer)
    assert ei.value.code == lib.RB_EVERSION
    assert f"({ringbuffer.format_version()})" in str(ei.value)
    assert str(ring_path) in str(ei.value)


def test_a_format_2_file_is_refused_as_another_version(ring_path):
    """A ring file as the previous release wrote it (format 2: 128-byte
    slots, a 69632-byte header) gets UnsupportedVersion naming ours, not
    CorruptBuffer, though its layout differs in more than the version."""
    cap = 8192
    RingBuffer(ring_path, cap).close()
    poke_u32(ring_path, OFF_VERSION, 2)
    poke_u32(ring_path, OFF_HEADER_SIZE, 69632)
    poke_u32(ring_path, OFF_SLOT_SIZE, 128)
    os.truncate(ring_path, 69632 + cap)
    with pytest.raises(UnsupportedVersion) as ei:
        RingBuffer.open(ring_path)
    assert ei.value.code == lib.RB_EVERSION
    assert f"({FORMAT_VERSION})" in str(ei.value)


def test_a_format_3_file_is_refused_as_another_version(ring_path):
    """A ring file as the release before consumer groups wrote it (format 3:
    no group table, a 266240-byte header, one head that readers moved) gets
    UnsupportedVersion naming our version, not CorruptBuffer, though its
    layout differs in more than the version."""
    cap = 8192
    with RingBuffer(ring_path, cap) as rb:
        rb.write(b"old message")
    data = ring_path.read_bytes()[HEADER_SIZE:]
    with open(ring_path, "r+b") as f:  # the header page and slot table stay; the group table goes
        f.seek(OFF_GROUPS)
        f.write(data)
        f.truncate(OFF_GROUPS + cap)
    poke_u32(ring_path, OFF_VERSION, 3)
    poke_u32(ring_path, OFF_HEADER_SIZE, OFF_GROUPS)
    poke_u32(ring_path, OFF_GROUPS_USED, 0)
    assert os.path.getsize(ring_path) == 266240 + cap
    with pytest.raises(UnsupportedVersion) as ei:
        RingBuffer.open(ring_path)
    assert ei.value.code == lib.RB_EVERSION
    assert isinstance(ei.value, CorruptBuffer)
    msg = str(ei.value)
    assert "another format version" in msg and f"({FORMAT_VERSION})" in msg and str(ring_path) in msg, msg
    assert "a file of format version 3" in msg, msg


@pytest.mark.parametrize(("name", "spoil"), corrupt_cases(), ids=[c[0] for c in corrupt_cases()])
def test_open_corrupt_file(ring_path, name, spoil):
    RingBuffer(ring_path, 8192).close()
    spoil(ring_path)
    with pytest.raises(CorruptBuffer) as ei:
        RingBuffer.open(ring_path)
    assert ei.value.code == lib.RB_ECORRUPT
    assert isinstance(ei.value, RingBufferError)
    assert strerror(lib.RB_ECORRUPT) in str(ei.value)
    assert str(ring_path) in str(ei.value)


def forge_record(path, word: int, tail: int, body: bytes = b"") -> None:
    """Puts one record (header word + body) at position 0 of an empty ring,
    with the given tail: where the default group reads next (its head, like
    the reclaimed head, is 0 in a new ring)."""
    assert peek_u64(path, OFF_GROUP_HEAD) == peek_u64(path, OFF_HEAD) == peek_u64(path, OFF_TAIL) == 0
    poke(path, HEADER_SIZE, struct.pack("<Q", word) + body)
    poke_u64(path, OFF_TAIL, tail)


@pytest.mark.parametrize(
    ("word", "tail"),
    [
        (record_word(4, flags=0x80), 16),
        (record_word(4, flags=0x04), 16),
        (record_word(4097), 4096),
        (record_word(0xFFFFFFFF), 16),
    ],
    ids=["unknown-flag-0x80", "unknown-flag-0x04", "length-over-max", "length-huge"],
)
def test_read_impossible_record_raises_corrupt(ring_path, word, tail):
    RingBuffer(ring_path, 8192).close()
    forge_record(ring_path, word, tail, b"abcd")
    with RingBuffer.open(ring_path) as rb:
        for call in (rb.read, rb.try_read, lambda: rb.read_many(3)):
            with pytest.raises(CorruptBuffer) as ei:
                call()
            assert ei.value.code == lib.RB_ECORRUPT
        assert rb.positions() == (0, tail)  # nothing consumed


def test_busy_and_discarded_records(ring_path):
    RingBuffer(ring_path, 4096).close()
    # a discarded record is skipped, then the next one is delivered
    poke(ring_path, HEADER_SIZE, struct.pack("<Q", record_word(4, flags=0x02)) + b"gone")
    poke(ring_path, HEADER_SIZE + 16, struct.pack("<Q", record_word(5)) + b"there")
    poke_u64(ring_path, OFF_TAIL, 32)
    with RingBuffer.open(ring_path) as rb:
        assert rb.read() == b"there"
        assert rb.positions() == (32, 32)
        # a record still being written (BUSY) by a live writer (rb itself: slot 0)
        # is not delivered yet
        busy = record_word(3, flags=0x01, writer=slot_id(ring_path, 0))
        poke(ring_path, HEADER_SIZE + 32, struct.pack("<Q", busy) + b"wip")
        poke_u64(ring_path, OFF_TAIL, 48)
        assert rb.try_read() is None
        assert rb.read_many(5) == []
        poke(ring_path, HEADER_SIZE + 32, struct.pack("<Q", record_word(3)))
        assert rb.read() == b"wip"


def test_read_zero_length_record_raises_corrupt(ring_path):
    RingBuffer(ring_path, 4096).close()
    forge_record(ring_path, record_word(0), 8)
    with RingBuffer.open(ring_path) as rb:
        with pytest.raises(CorruptBuffer):
            rb.try_read()
        assert rb.positions() == (0, 8)


def test_read_zero_length_discarded_record_is_skipped(ring_path):
    # only a DISCARD record may be empty: an 8-byte gap, skipped like any other
    RingBuffer(ring_path, 4096).close()
    poke(ring_path, HEADER_SIZE, struct.pack("<Q", record_word(0, flags=0x02)))
    poke(ring_path, HEADER_SIZE + 8, struct.pack("<Q", record_word(4)) + b"next")
    poke_u64(ring_path, OFF_TAIL, 8 + rec_size(4))
    with RingBuffer.open(ring_path) as rb:
        assert rb.read() == b"next"
        assert rb.try_read() is None
        assert rb.positions() == (8 + rec_size(4), 8 + rec_size(4))


def test_read_record_past_tail_raises_corrupt(ring_path):
    RingBuffer(ring_path, 4096).close()
    forge_record(ring_path, record_word(100), 16, b"abcd")  # claims 100 bytes, tail says 16
    with RingBuffer.open(ring_path) as rb:
        try:
            with pytest.raises(CorruptBuffer):
                rb.try_read()
        finally:
            head, tail = rb.positions()
            assert head <= tail


def test_open_non_ring_files(tmp_path):
    text = tmp_path / "text"
    text.write_text("hello world\n" * 1000)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for p in (text, empty, fifo, "/dev/null"):
        with pytest.raises(CorruptBuffer):
            RingBuffer.open(p)


def test_failed_opens_and_creates_leak_no_file_descriptors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"x" * 10000)
    RingBuffer(tmp_path / "exists", 4096).close()
    gc.collect()  # a closed RingBuffer keeps its descriptor until it is collected
    before = open_fd_count()
    for _ in range(50):
        with pytest.raises(CorruptBuffer):
            RingBuffer.open(bad)
        with pytest.raises(FileNotFoundError):
            RingBuffer.open(tmp_path / "missing")
        with pytest.raises(FileExistsError):
            RingBuffer(tmp_path / "exists", 4096)
        with pytest.raises(InvalidArgument):
            RingBuffer(tmp_path / "zero", 0)
    assert open_fd_count() == before
    assert sorted(os.listdir(tmp_path)) == ["bad", "exists"]


def test_close_and_garbage_collection_release_file_descriptors(tmp_path):
    gc.collect()
    before = open_fd_count()
    rings = [RingBuffer(tmp_path / f"r{i}", 4096) for i in range(20)]
    assert open_fd_count() == before + 20
    for rb in rings[:10]:
        rb.close()
    # a closed ring keeps its descriptor (it holds the handle's slot lock, rb_close
    # drops it) until the object is collected
    assert open_fd_count() == before + 20
    refs = [weakref.ref(rb) for rb in rings]
    del rb, rings
    assert all(r() is None for r in refs)
    assert open_fd_count() == before


# --- bad sizes, modes, paths ---------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, -4096, -(2**70), 2**32 + 1, 2**33, 2**63, 2**64 - 1, 2**64, 2**70])
def test_bad_size_raises_invalid_argument(ring_path, size):
    with pytest.raises(InvalidArgument) as ei:
        RingBuffer(ring_path, size)
    assert isinstance(ei.value, ValueError)
    assert ei.value.code == lib.RB_EINVAL
    assert str(ei.value).startswith(strerror(lib.RB_EINVAL))
    assert not ring_path.exists()
    assert os.listdir(ring_path.parent) == []


@pytest.mark.parametrize("size", [4096.0, "4096", b"4096", None, [4096], 4096 + 0j])
def test_non_int_size_raises_type_error(ring_path, size):
    with pytest.raises(TypeError):
        RingBuffer(ring_path, size)
    assert not ring_path.exists()


def test_size_accepts_index_objects(ring_path):
    class Size:
        def __index__(self):
            return 5000

    with RingBuffer(ring_path, Size()) as rb:
        assert rb.capacity == 8192


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_mode_default_is_0600(ring_path, umask0):
    RingBuffer(ring_path, 4096).close()
    assert stat.S_IMODE(os.stat(ring_path).st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o644, 0o400, 0o666])
def test_mode_is_honoured(ring_path, umask0, mode):
    RingBuffer(ring_path, 4096, mode=mode).close()
    assert stat.S_IMODE(os.stat(ring_path).st_mode) == mode


def test_mode_with_remove_is_honoured(ring_path, umask0):
    RingBuffer(ring_path, 4096, mode=0o600).close()
    RingBuffer(ring_path, 4096, remove=True, mode=0o640).close()
    assert stat.S_IMODE(os.stat(ring_path).st_mode) == 0o640


def test_mode_is_subject_to_umask(ring_path):
    old = os.umask(0o022)
    try:
        RingBuffer(ring_path, 4096, mode=0o666).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(ring_path).st_mode) == 0o644


@pytest.mark.parametrize("mode", [-1, 0o10000, 0o77777, 2**40])
def test_bad_mode_raises_invalid_argument(ring_path, mode):
    with pytest.raises(InvalidArgument) as ei:
        RingBuffer(ring_path, 4096, mode=mode)
    assert isinstance(ei.value, ValueError)
    assert ei.value.code == lib.RB_EINVAL
    assert not ring_path.exists()


@pytest.mark.parametrize("mode", ["0600", 0o600 + 0.0, None])
def test_non_int_mode_raises_type_error(ring_path, mode):
    with pytest.raises(TypeError):
        RingBuffer(ring_path, 4096, mode=mode)
    assert not ring_path.exists()


def test_mode_and_keywords_are_keyword_only(ring_path):
    with pytest.raises(TypeError):
        RingBuffer(ring_path, 4096, False, 0o600)


@pytest.mark.parametrize("path", [4096, None, 1.5, ["x"]])
def test_bad_path_type_raises_type_error(path):
    with pytest.raises(TypeError):
        RingBuffer(path, 4096)
    with pytest.raises(TypeError):
        RingBuffer.open(path)


def test_empty_path_is_rejected():
    with pytest.raises((ValueError, OSError)):
        RingBuffer("", 4096)
    with pytest.raises(FileNotFoundError):
        RingBuffer.open("")


def test_path_with_nul_byte_raises_value_error(tmp_path):
    try:
        with pytest.raises(ValueError):
            RingBuffer(str(tmp_path / "x") + "\0y", 4096)
        assert os.listdir(tmp_path) == []
        RingBuffer(tmp_path / "x", 4096).close()
        with pytest.raises(ValueError):
            RingBuffer.open(str(tmp_path / "x") + "\0y")
    finally:
        for name in os.listdir(tmp_path):
            os.unlink(tmp_path / name)


# ===========================================================================
# writing and reading


def bytes_like_cases():
    data = bytes(range(256)) * 3
    return [
        ("bytes", b"hello world", b"hello world"),
        ("bytearray", bytearray(b"a bytearray"), b"a bytearray"),
        ("memoryview", memoryview(b"a memoryview"), b"a memoryview"),
        ("memoryview-slice", memoryview(data)[10:300], data[10:300]),
        ("memoryview-noncontiguous", memoryview(data)[::3], data[::3]),
        ("memoryview-negative-stride", memoryview(data)[::-1], data[::-1]),
        ("memoryview-2d", memoryview(data[:24]).cast("B", (4, 6)), data[:24]),
        ("memoryview-2d-noncontiguous", memoryview(data[:24]).cast("B", (4, 6))[::2], data[:6] + data[12:18]),
        (
            "memoryview-int32",
            memoryview(array.array("i", [1, -2, 3])),
            array.array("i", [1, -2, 3]).tobytes(),
        ),
        ("array-d", array.array("d", [1.5, -2.25]), array.array("d", [1.5, -2.25]).tobytes()),
        ("array-b", array.array("b", [-1, 2, -3]), b"\xff\x02\xfd"),
        ("bytes-subclass", type("B", (bytes,), {})(b"subclass"), b"subclass"),
        ("one-byte", b"\x00", b"\x00"),
    ]


@pytest.mark.parametrize(
    ("name", "msg", "expected"), bytes_like_cases(), ids=[c[0] for c in bytes_like_cases()]
)
def test_write_read_bytes_like(ring, name, msg, expected):
    ring.write(msg)
    assert ring.try_write(msg) is True
    ring.write(msg)
    for _ in range(2):
        got = ring.read()
        assert type(got) is bytes
        assert got == expected
    assert ring.try_read() == expected
    ring.write(msg)
    assert ring.read_many(5) == [expected]
    assert ring.try_read() is None


def write_many_cases():
    return [pytest.param(msg, expected, id=name) for name, msg, expected in bytes_like_cases()]


@pytest.mark.parametrize(("msg", "expected"), write_many_cases())
def test_write_many_bytes_like(ring, msg, expected):
    assert ring.write_many([msg, b"sep", msg]) == 3
    got = ring.read_many(5)
    assert got == [expected, b"sep", expected]
    assert all(type(m) is bytes for m in got)


def test_write_many_mixed_contiguous_types(ring):
    msgs = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"view"),
        array.array("h", [1, 2]),
        memoryview(b"0123456789")[2:5],
    ]
    expected = [b"bytes", b"bytearray", b"view", array.array("h", [1, 2]).tobytes(), b"234"]
    assert ring.write_many(msgs) == 5
    assert ring.read_many(10) == expected


class _LyingBytes(bytes):
    """A bytes subclass whose len() lies: its real size must be used."""

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("method", ["write_many", "put_many"])
def test_batches_of_bytes_and_batches_mixing_types(big_ring, method):
    # A batch of nothing but bytes takes a fast path; one other object
    # (bytearray, memoryview, a bytes subclass) anywhere sends the batch the
    # general way. Both write the same thing.
    batches = [
        [b"a", b"bb", b"ccc"],
        (b"a tuple", b"of bytes"),
        iter([b"an", b"iterator"]),
        [b"bytes first", bytearray(b"then a bytearray"), b"bytes again"],
        [memoryview(b"0123456789")[::2], b"bytes"],
        [b"plain", _LyingBytes(b"subclass")],
        [_LyingBytes(b"alone")],
    ]
    expected = [
        [b"a", b"bb", b"ccc"],
        [b"a tuple", b"of bytes"],
        [b"an", b"iterator"],
        [b"bytes first", b"then a bytearray", b"bytes again"],
        [b"02468", b"bytes"],
        [b"plain", b"subclass"],
        [b"alone"],
    ]
    for batch, want in zip(batches, expected):
        assert getattr(big_ring, method)(batch) == len(want)
        assert big_ring.get_many(100, block=False) == want


class _IteratesOtherItems(tuple):
    """A tuple whose iteration yields other items than it holds."""

    def __iter__(self):
        return iter([b"iterated", b"ones"])


def test_batch_is_what_iterating_it_gives(ring):
    # Lengths and contents come from one snapshot of the iteration, never
    # from the items a tuple or list subclass holds underneath.
    assert ring.write_many(_IteratesOtherItems((b"held", b"underneath!"))) == 2
    assert ring.read_many(10) == [b"iterated", b"ones"]


@pytest.mark.parametrize("bad", [b"", b"x" * 2049], ids=["empty", "too-large"])
def test_batch_of_bytes_with_a_bad_size_writes_nothing(ring, bad):
    for batch in ([b"ok", bad], [bad, b"ok"], [b"ok", bad, bytearray(b"mixed")]):
        with pytest.raises(InvalidSize):
            ring.write_many(batch)
        with pytest.raises(InvalidSize):
            ring.put_many(batch, timeout=1)
    assert ring.positions() == (0, 0)


def test_get_many_splits_batches_of_one_size_and_of_mixed_sizes(big_ring):
    # One size: split by one struct format (up to ring._STRUCT_SPLIT_MAX
    # messages, beyond it by the general loop); mixed sizes: the loop.
    split_max = ring_module._STRUCT_SPLIT_MAX
    cases = [
        [bytes([i]) * 64 for i in range(100)],
        [bytes([i % 256]) * 3 for i in range(split_max)],
        [bytes([i % 256]) * 2 for i in range(split_max + 1)],
        [bytes([i % 256]) * (1 + i % 7) for i in range(500)],
        [b"x" * 64] * 99 + [b"y" * 65],
        [b"one"],
        [b"\0" * 1000, b"\0" * 1000],
    ]
    for msgs in cases:
        assert big_ring.put_many(msgs, timeout=1) == len(msgs)
        got = big_ring.get_many(len(msgs) + 10, block=False)
        assert type(got) is list and all(type(m) is bytes for m in got)
        assert got == msgs


def test_written_message_is_a_copy(ring):
    buf = bytearray(b"original")
    ring.write(buf)
    buf[:] = b"changed!"
    ring.write_many([buf])
    buf[:] = b"again!!!"
    assert ring.read() == b"original"
    assert ring.read() == b"changed!"


def test_numpy_contiguous_arrays(ring):
    np = pytest.importorskip("numpy")
    a = np.arange(20, dtype=np.int32)
    b2 = np.arange(24, dtype=np.float64).reshape(4, 6)
    ring.write(a)
    assert ring.try_write(b2) is True
    ring.write(a[5:9])  # a contiguous slice
    assert ring.read() == a.tobytes()
    assert ring.read() == b2.tobytes()
    assert ring.read() == a[5:9].tobytes()
    assert ring.write_many([a, b2, a[:3]]) == 3
    assert ring.read_many(3) == [a.tobytes(), b2.tobytes(), a[:3].tobytes()]
    assert np.frombuffer(ring.write(a) or ring.read(), dtype=np.int32).tolist() == list(range(20))


@pytest.mark.parametrize("how", ["write", "try_write", "write_many"])
def test_numpy_noncontiguous_arrays(ring, how):
    np = pytest.importorskip("numpy")
    a = np.arange(20, dtype=np.int32)
    b2 = np.arange(24, dtype=np.float64).reshape(4, 6)
    msgs = [a[::2], b2.T, b2[:, 1]]
    if how == "write_many":
        assert ring.write_many(msgs) == 3
    else:
        for m in msgs:
            assert getattr(ring, how)(m) in (None, True)
    assert ring.read_many(3) == [m.tobytes() for m in msgs]


BAD_MESSAGES = ["text", "", 5, 0, None, 1.5, [1, 2, 3], {"a": 1}, object()]


@pytest.mark.parametrize("bad", BAD_MESSAGES, ids=lambda x: type(x).__name__ + repr(x)[:8])
def test_write_bad_type_raises_type_error(ring, bad):
    with pytest.raises(TypeError):
        ring.write(bad)
    with pytest.raises(TypeError):
        ring.try_write(bad)
    with pytest.raises(TypeError):
        ring.write_many([b"good", bad])
    with pytest.raises(TypeError):
        ring.write_many([bad])
    assert ring.positions() == (0, 0)
    assert ring.try_read() is None


@pytest.mark.parametrize("bad", [5, None, 1.5, object()], ids=lambda x: type(x).__name__)
def test_write_many_non_iterable_raises_type_error(ring, bad):
    with pytest.raises(TypeError):
        ring.write_many(bad)
    assert ring.positions() == (0, 0)


@pytest.mark.parametrize("bad", ["3", 3.0, None, b"3", [3]])
def test_read_many_bad_type_raises_type_error(ring, bad):
    ring.write(b"x")
    with pytest.raises(TypeError):
        ring.read_many(bad)
    assert ring.read() == b"x"


# --- capacity accounting ----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16, 17, 100, 500, 1000, 1365, 2040, 2041, 2047, 2048])
def test_exact_capacity_accounting(ring, size):
    rs = rec_size(size)
    fits = 4096 // rs
    for i in range(fits):
        ring.write(bytes([i % 256]) * size)
    assert ring.positions() == (0, fits * rs)
    with pytest.raises(BufferFull):
        ring.write(b"z" * size)
    assert ring.try_write(b"z" * size) is False
    assert ring.write_many([b"z" * size]) == 0
    assert ring.positions() == (0, fits * rs)
    # after one read, exactly one more fits
    assert ring.read() == b"\x00" * size
    ring.write(b"n" * size)
    assert ring.try_write(b"z" * size) is False
    assert ring.positions() == (rs, (fits + 1) * rs)
    got = ring.read_many(10_000)
    assert got == [bytes([i % 256]) * size for i in range(1, fits)] + [b"n" * size]
    assert ring.positions() == ((fits + 1) * rs, (fits + 1) * rs)


def test_leftover_space_is_usable_by_smaller_messages(ring):
    ring.write(b"a" * 2048)  # 2056 bytes
    ring.write(b"b" * 1000)  # 1008 bytes -> 1032 left
    with pytest.raises(BufferFull):
        ring.write(b"c" * 1025)  # 1040 bytes
    ring.write(b"c" * 1024)  # exactly 1032 bytes
    assert ring.positions() == (0, 4096)
    with pytest.raises(BufferFull):
        ring.write(b"d")
    assert ring.read_many(3) == [b"a" * 2048, b"b" * 1000, b"c" * 1024]


def test_max_message_size(ring, big_ring):
    for rb in (ring, big_ring):
        m = rb.max_message_size
        assert m == rb.capacity // 2
        rb.write(b"m" * m)
        assert rb.read() == b"m" * m
        assert rb.try_write(b"m" * m) is True
        assert rb.try_read() == b"m" * m
        assert rb.write_many([b"m" * m]) == 1
        assert rb.read_many(1) == [b"m" * m]
        for call in (rb.write, rb.try_write, lambda x, rb=rb: rb.write_many([x])):
            with pytest.raises(InvalidSize) as ei:
                call(b"m" * (m + 1))
            assert ei.value.code == lib.RB_ESIZE
        assert rb.positions()[0] == rb.positions()[1]


@pytest.mark.parametrize(
    "empty",
    [b"", bytearray(), memoryview(b""), array.array("i"), memoryview(b"abc")[1:1]],
    ids=["bytes", "bytearray", "memoryview", "array", "empty-slice"],
)
def test_empty_message_raises_invalid_size(ring, empty):
    for call in (
        ring.write,
        ring.try_write,
        lambda x: ring.write_many([x]),
        lambda x: ring.write_many([b"a", x]),
    ):
        with pytest.raises(InvalidSize) as ei:
            call(empty)
        assert ei.value.code == lib.RB_ESIZE
    assert ring.positions() == (0, 0)


def test_invalid_size_beats_full(ring):
    fill(ring, 2000)
    with pytest.raises(InvalidSize):
        ring.write(b"")
    with pytest.raises(InvalidSize):
        ring.try_write(b"x" * 2049)
    with pytest.raises(InvalidSize):
        ring.write_many([b"x", b"x" * 2049])


def test_try_write_and_try_read(ring):
    assert ring.try_read() is None
    assert ring.try_write(b"one") is True
    assert ring.try_write(bytearray(b"two")) is True
    assert ring.try_read() == b"one"
    assert ring.try_read() == b"two"
    assert ring.try_read() is None
    n = 0
    while ring.try_write(b"x" * 500):
        n += 1
    assert n == 4096 // rec_size(500)
    assert ring.try_write(b"x" * 500) is False


def test_get_within_takes_only_a_message_up_to_the_limit(ring):
    ring.put_many([b"x" * 100, b"y" * 101, b"z"])
    assert ring.get_within(100) == b"x" * 100  # exactly the limit
    for _ in range(2):  # larger: left at the head, not consumed, at once (a message is there)
        assert ring.get_within(100) is None
        assert ring.get_within(100, block=False) is None
    assert ring.get_within(101) == b"y" * 101
    assert ring.get_within(0) is None
    assert ring.get_within(10**12) == b"z"  # a limit beyond max_message_size takes any message
    with pytest.raises(BufferEmpty):
        ring.get_within(100, block=False)
    with pytest.raises(ValueError, match="limit"):
        ring.get_within(-1)
    with pytest.raises(TypeError):
        ring.get_within(1.5)


def test_fifo_order_across_many_wraps(ring):
    expected = []
    sizes = [1, 2040, 13, 700, 8, 1500, 9, 300, 2048, 5, 64]
    got = []
    for i in range(600):
        msg = payload(1, i, sizes[i % len(sizes)])
        while not ring.try_write(msg):
            got.append(ring.read())
        expected.append(msg)
    got.extend(ring.read_many(1000))
    assert got == expected
    head, tail = ring.positions()
    assert head == tail == sum(rec_size(len(m)) for m in expected)
    assert head > 20 * ring.capacity


# --- write_many ----------------------------------------------------------------


def test_write_many_all_fit(ring):
    msgs = [b"a", b"bb" * 10, b"c" * 300]
    assert ring.write_many(msgs) == 3
    assert ring.read_many(3) == msgs


def test_write_many_partial_writes_longest_prefix(ring):
    msgs = [b"a" * 1000, b"b" * 1000, b"c" * 1000, b"d" * 1000, b"e" * 57]  # 4 * 1008 bytes, then 72 > 64
    assert ring.write_many(msgs) == 4
    assert ring.positions() == (0, 4 * 1008)
    assert ring.read_many(10) == msgs[:4]


def test_write_many_stops_at_first_that_does_not_fit(ring):
    # the third does not fit; the fourth would, but is not written (in order, no skipping)
    msgs = [b"a" * 2000, b"b" * 1000, b"c" * 2000, b"d" * 8]
    assert ring.write_many(msgs) == 2
    assert ring.read_many(10) == msgs[:2]


def test_write_many_zero_when_full(ring):
    fill(ring, 1000)
    before = ring.positions()
    assert ring.write_many([b"x" * 100, b"y"]) == 0
    assert ring.positions() == before


def test_write_many_empty_inputs(ring):
    assert ring.write_many([]) == 0
    assert ring.write_many(()) == 0
    assert ring.write_many(iter([])) == 0
    fill(ring, 2000)
    assert ring.write_many([]) == 0


def test_write_many_accepts_any_iterable(ring):
    assert ring.write_many(bytes([i]) * (i + 1) for i in range(5)) == 5
    assert ring.write_many((b"t1", b"t2")) == 2
    assert ring.write_many(iter([b"i1"])) == 1
    assert ring.write_many({b"only"}) == 1
    assert ring.read_many(20) == [bytes([i]) * (i + 1) for i in range(5)] + [b"t1", b"t2", b"i1", b"only"]


def test_write_many_generator_partial_consumes_it_all(ring):
    # a generator is materialised: its items beyond what fits are dropped, not left in it
    gen = (b"g" * 1000 for _ in range(10))
    assert ring.write_many(gen) == 4
    assert next(gen, None) is None


@pytest.mark.parametrize("bad_at", [0, 1, 3, 5])
@pytest.mark.parametrize("bad", [b"", b"x" * 2049])
def test_write_many_invalid_anywhere_writes_nothing(ring, bad_at, bad):
    msgs = [b"ok" * 400] * 6  # only 5 fit
    msgs[bad_at] = bad
    with pytest.raises(InvalidSize) as ei:
        ring.write_many(msgs)
    assert ei.value.code == lib.RB_ESIZE
    assert ring.positions() == (0, 0)
    assert ring.try_read() is None


# --- read_many -------------------------------------------------------------------


def test_read_many_zero(ring):
    assert ring.read_many(0) == []
    ring.write(b"x")
    assert ring.read_many(0) == []
    assert ring.read() == b"x"


@pytest.mark.parametrize("n", [-1, -2, -(2**70)])
def test_read_many_negative(ring, n):
    ring.write(b"x")
    with pytest.raises(ValueError) as ei:
        ring.read_many(n)
    assert isinstance(ei.value, InvalidArgument)
    assert ei.value.code == lib.RB_EINVAL
    assert ring.read() == b"x"


def test_read_many_returns_at_most_n(ring):
    msgs = [bytes([i]) * (i + 1) for i in range(20)]
    assert ring.write_many(msgs) == 20
    assert ring.read_many(1) == msgs[:1]
    assert ring.read_many(5) == msgs[1:6]
    assert ring.read_many(14) == msgs[6:20]
    assert ring.read_many(3) == []


def test_read_many_returns_all_when_more_asked(ring):
    msgs = [b"m%d" % i for i in range(10)]
    ring.write_many(msgs)
    got = ring.read_many(1000)
    assert got == msgs
    assert all(type(m) is bytes for m in got)
    assert ring.read_many(1000) == []


def test_read_many_empty_ring(ring):
    assert ring.read_many(1) == []
    assert ring.read_many(100) == []


def test_read_many_accepts_index_objects(ring):
    class N:
        def __index__(self):
            return 2

    ring.write_many([b"a", b"b", b"c"])
    assert ring.read_many(N()) == [b"a", b"b"]
    assert ring.read_many(True) == [b"c"]


@pytest.mark.parametrize("n", [2**40, sys.maxsize])
def test_read_many_huge_n(ring, n):
    ring.write_many([b"a", b"b"])
    assert ring.read_many(n) == [b"a", b"b"]


# --- large messages ----------------------------------------------------------------


def test_read_message_larger_than_64k(big_ring):
    big = payload(2, 0, 300 * 1024)
    small = b"small after big"
    big_ring.write(big)
    big_ring.write(small)
    assert big_ring.read() == big
    assert big_ring.read() == small
    # several sizes around and above the initial 64 KiB read buffer, interleaved
    sizes = [65535, 65536, 65537, 1, 200_000, 3, 512 * 1024, 70_000]
    for i, s in enumerate(sizes):
        big_ring.write(payload(3, i, s))
        assert big_ring.read() == payload(3, i, s)
    for i, s in enumerate(sizes[:4]):
        big_ring.write(payload(4, i, s))
    assert [big_ring.try_read() for _ in range(4)] == [payload(4, i, s) for i, s in enumerate(sizes[:4])]


def test_get_grows_and_keeps_its_read_buffer(tmp_path):
    # get()'s pooled read buffer starts at 64 KiB, grows for a larger
    # message (kept up to 1 MiB, one-off above), and every slice comes from
    # the buffer that was just read into, whatever size came before.
    with RingBuffer(tmp_path / "g.ring", 4 << 20) as rb:
        sizes = [10, 65536, 65537, 3, 900_000, 64, 1_500_000, 7, 1_048_576, 1_048_577, 5, 100_000]
        for i, s in enumerate(sizes):
            rb.put(payload(5, i, s))
            assert rb.get() == payload(5, i, s)
            rb.put(payload(6, i, s))
            assert rb.get_nowait() == payload(6, i, s)
        for i, s in enumerate(sizes[:6]):
            rb.put(payload(7, i, s))
        assert [rb.get(timeout=1) for _ in range(6)] == [payload(7, i, s) for i, s in enumerate(sizes[:6])]


def test_read_many_large_messages(big_ring):
    sizes = [300 * 1024, 300 * 1024, 10, 300 * 1024, 300 * 1024, 70_000]
    msgs = [payload(5, i, s) for i, s in enumerate(sizes)]
    assert big_ring.write_many(msgs) == 4  # 3 * 300 KiB + 10 bytes fit in 1 MiB, a fourth 300 KiB does not
    assert big_ring.read_many(10) == msgs[:4]
    assert big_ring.write_many(msgs[4:]) == 2
    assert big_ring.read_many(1) == msgs[4:5]
    assert big_ring.read_many(1) == msgs[5:6]
    assert big_ring.read_many(1) == []


def test_read_many_message_larger_than_batch_buffer(tmp_path):
    # read_many's pooled buffer is min(capacity, 16 MiB): a 64 MiB ring can hold
    # messages larger than it.
    with RingBuffer(tmp_path / "huge.ring", 64 << 20) as rb:
        msgs = [payload(6, 0, 10 << 20), payload(6, 1, 10 << 20), payload(6, 2, 17 << 20), b"tail"]
        assert rb.write_many(msgs) == 4
        got = []
        while len(got) < 4:
            batch = rb.read_many(10)
            assert batch, "read_many returned nothing although messages are queued"
            got.extend(batch)
        assert [len(m) for m in got] == [len(m) for m in msgs]
        assert got == msgs
        rb.write(msgs[2])
        assert rb.read() == msgs[2]


# ===========================================================================
# closing, context manager, pickling, persistence


def test_close_is_idempotent_and_closed_ring_raises(ring, ring_path):
    ring.write(b"left in the ring")
    ring.close()
    ring.close()
    assert ring.closed is True
    assert ring.path == str(ring_path)
    assert ring.capacity == 4096
    assert ring.max_message_size == 2048
    assert "closed" in repr(ring)
    calls = [
        lambda: ring.write(b"x"),
        lambda: ring.write(b""),
        lambda: ring.write("wrong type"),
        lambda: ring.try_write(b"x"),
        lambda: ring.write_many([b"x"]),
        lambda: ring.write_many([]),
        ring.read,
        ring.try_read,
        lambda: ring.read_many(1),
        lambda: ring.read_many(0),
        lambda: ring.read_many(-1),
        ring.positions,
        ring.__enter__,
        lambda: pickle.dumps(ring),
        lambda: copy.copy(ring),
    ]
    for call in calls:
        with pytest.raises(BufferClosed) as ei:
            call()
        assert isinstance(ei.value, ValueError)
        assert ei.value.code == lib.RB_ECLOSED
    with pytest.raises(BufferClosed):
        with ring:
            pass
    # the file stays and still holds the message
    with RingBuffer.open(ring_path) as rb:
        assert rb.read() == b"left in the ring"


def test_context_manager(ring_path):
    with RingBuffer(ring_path, 4096) as rb:
        assert isinstance(rb, RingBuffer)
        assert not rb.closed
        rb.write(b"x")
    assert rb.closed
    opened = RingBuffer.open(ring_path)
    with opened as rb2:
        assert rb2 is opened
    assert opened.closed


def test_context_manager_closes_on_exception(ring_path):
    with pytest.raises(KeyError):
        with RingBuffer(ring_path, 4096) as rb:
            raise KeyError("boom")
    assert rb.closed


def test_repr(ring, ring_path):
    r = repr(ring)
    assert r.startswith("<RingBuffer ")
    assert repr(str(ring_path)) in r
    assert "capacity=4096" in r
    ring.close()
    r = repr(ring)
    assert repr(str(ring_path)) in r
    assert "closed" in r


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip_is_a_second_handle(ring, protocol):
    other = pickle.loads(pickle.dumps(ring, protocol=protocol))
    try:
        assert other is not ring
        assert isinstance(other, RingBuffer)
        assert other.path == ring.path
        assert other.capacity == ring.capacity
        assert other.max_message_size == ring.max_message_size
        ring.write(b"from the first")
        assert other.read() == b"from the first"
        other.write(b"from the second")
        assert ring.read() == b"from the second"
        assert ring.positions() == other.positions()
        other.close()
        assert not ring.closed
        ring.write(b"still open")
        assert ring.read() == b"still open"
    finally:
        other.close()


def test_copy_reopens(ring):
    for other in (copy.copy(ring), copy.deepcopy(ring)):
        with other:
            ring.write(b"c")
            assert other.read() == b"c"


def test_pickle_of_closed_ring_raises(ring):
    ring.close()
    with pytest.raises(BufferClosed):
        pickle.dumps(ring)


def test_unpickle_after_file_removed(ring, ring_path):
    data = pickle.dumps(ring)
    os.unlink(ring_path)
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)


def test_data_persists_across_close_and_reopen(ring_path):
    with RingBuffer(ring_path, 8192) as rb:
        rb.write_many([b"one", b"two", b"three"])
        rb.read()
        pos = rb.positions()
    with RingBuffer.open(ring_path) as rb:
        assert rb.capacity == 8192
        assert rb.positions() == pos
        rb.write(b"four")
    with RingBuffer.open(str(ring_path)) as rb:
        assert rb.read_many(10) == [b"two", b"three", b"four"]


def test_two_handles_in_one_process(ring, ring_path):
    with RingBuffer.open(ring_path) as other:
        assert fill(ring, 2000) == 2  # 2 * 2008 bytes: 80 left
        assert other.try_write(b"x" * 80) is False  # needs 88
        assert other.try_write(b"x" * 72) is True  # needs 80
        assert other.read() == b"\x00" * 2000
        # the first handle's cached head is stale; it must still see the freed space
        ring.write(b"y" * 2000)
        assert ring.try_write(b"z") is False
        assert other.try_write(b"z") is False
        assert ring.read_many(5) == [b"\x01" * 2000, b"x" * 72, b"y" * 2000]


# ===========================================================================
# processes and threads


@pytest.fixture
def spawn():
    """spawn(target, *args) starts a daemon process with the spawn start method;
    any still alive at the end of the test is killed, so a hang fails instead of blocking."""
    ctx = multiprocessing.get_context("spawn")
    procs = []

    def start(target, *args):
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


def test_multiprocessing_child_writes_parent_reads(tmp_path, spawn):
    count = 300  # about 75 KB through a 64 KiB ring: the parent reads while the child writes
    with RingBuffer(tmp_path / "mp.ring", 1 << 16) as rb:
        p = spawn(child_write, rb, count)
        got = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            msg = rb.try_read()
            if msg is None:
                time.sleep(0.001)
            else:
                got.append(msg)
        p.join(60)
        assert p.exitcode == 0
        assert got == [payload(7, i, 1 + (i * 37) % 500) for i in range(count)]
        assert rb.try_read() is None


def test_multiprocessing_child_reads_parent_writes(tmp_path, spawn):
    count = 200
    with RingBuffer(tmp_path / "mp2.ring", 1 << 16) as rb:
        p = spawn(child_read_verify, rb, count)
        deadline = time.monotonic() + 60
        for i in range(count):
            msg = payload(8, i, 1 + (i * 53) % 700)
            while not rb.try_write(msg):
                assert p.is_alive() and time.monotonic() < deadline, "the child stopped reading"
                time.sleep(0.001)
        p.join(60)
        assert p.exitcode == 0, "the child did not read exactly the parent's messages"


def test_threads_exactly_once(tmp_path):
    writers, readers, per_writer = 4, 2, 3000
    rb = RingBuffer(tmp_path / "threads.ring", 1 << 14)
    done = threading.Event()
    deadline = time.monotonic() + 100
    errors: list[str] = []
    seen: list[list[tuple[int, int]]] = [[] for _ in range(readers)]

    def msg_for(w: int, i: int) -> bytes:
        head = struct.pack("<II", w, i)
        return head + bytes([(w * 31 + i) % 256]) * ((w * 7 + i * 13) % 300)

    def writer(w: int) -> None:
        try:
            i = 0
            while i < per_writer:
                if time.monotonic() > deadline:
                    errors.append(f"writer {w}: timed out at {i}")
                    return
                if w % 2 and i + 5 <= per_writer:
                    i += rb.write_many([msg_for(w, j) for j in range(i, i + 5)])
                elif rb.try_write(msg_for(w, i)):
                    i += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(f"writer {w}: {e!r}")

    def reader(r: int) -> None:
        last = {}
        try:
            while time.monotonic() < deadline:
                finished = done.is_set()
                msgs = rb.read_many(7) if r else [m for m in [rb.try_read()] if m is not None]
                if not msgs:
                    if finished:
                        return
                    continue
                for m in msgs:
                    w, i = struct.unpack_from("<II", m)
                    if m != msg_for(w, i):
                        errors.append(f"reader {r}: corrupt message {w}/{i}")
                    if i <= last.get(w, -1):
                        errors.append(f"reader {r}: writer {w} out of order: {i} after {last[w]}")
                    last[w] = i
                    seen[r].append((w, i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(f"reader {r}: {e!r}")

    wt = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
    rt = [threading.Thread(target=reader, args=(r,), daemon=True) for r in range(readers)]
    for t in wt + rt:
        t.start()
    for t in wt:
        t.join(120)
    done.set()
    for t in rt:
        t.join(120)
    assert not any(t.is_alive() for t in wt + rt), "a thread hung"
    rb.close()
    assert errors == []
    everything = seen[0] + seen[1]
    assert len(everything) == writers * per_writer
    assert sorted(everything) == [(w, i) for w in range(writers) for i in range(per_writer)]
    assert all(seen), "both readers should have received something"


# ===========================================================================
# package metadata


def _header_version() -> int:
    text = pathlib.Path(ringbuffer.get_include(), "ringbuf.h").read_text()
    parts = [
        int(re.search(rf"#define RB_VERSION_{p} (\d+)", text).group(1)) for p in ("MAJOR", "MINOR", "PATCH")
    ]
    return parts[0] * 10000 + parts[1] * 100 + parts[2]


def test_get_include():
    inc = ringbuffer.get_include()
    assert os.path.isabs(inc)
    header = pathlib.Path(inc, "ringbuf.h")
    assert header.is_file()
    text = header.read_text()
    assert "rb_create" in text and "RB_VERSION_NUMBER" in text
    assert _header_version() == ringbuffer.c_version()


def test_get_library_dir():
    d = ringbuffer.get_library_dir()
    assert os.path.isabs(d)
    so = pathlib.Path(d, "libringbuf.so.0")
    assert so.is_file()
    assert so.read_bytes()[:4] == b"\x7fELF"


def test_get_pkgconfig_dir():
    d = ringbuffer.get_pkgconfig_dir()
    assert os.path.isabs(d)
    pc = pathlib.Path(d, "ringbuf.pc")
    assert pc.is_file()
    text = pc.read_text()
    assert "-lringbuf" in text
    m = re.search(r"^Version:\s*(\d+)\.(\d+)\.(\d+)\s*$", text, re.M)
    assert m
    assert int(m[1]) * 10000 + int(m[2]) * 100 + int(m[3]) == ringbuffer.c_version()


def test_the_loaded_library_is_the_version_the_binding_was_compiled_against():
    # c_version() asks the loaded libringbuf.so; RB_VERSION_NUMBER is the
    # header's, compiled into the extension: a stale library differs.
    assert ringbuffer.c_version() == lib.RB_VERSION_NUMBER


def test_format_version_is_the_documented_one():
    assert ringbuffer.format_version() == 4 == FORMAT_VERSION == lib.RB_FORMAT_VERSION


def test_public_names():
    for name in ringbuffer.__all__:
        assert hasattr(ringbuffer, name), name
    assert lib.RB_MIN_CAPACITY == 4096
    assert lib.RB_MAX_CAPACITY == 1 << 32
    assert lib.RB_REMOVE == 1


class _ReadOnAppend(collections.deque):
    """A read-buffer pool that, when a buffer comes back, lets another
    reader of the same RingBuffer run first (as a thread switch right after
    the append would): it takes that buffer and reads into it."""

    def __init__(self, ring):
        super().__init__()
        self.ring = ring
        self.armed = False

    def append(self, item):
        super().append(item)
        if self.armed:
            self.armed = False
            self.inner = self.ring.get(timeout=5)


def test_get_copies_its_message_out_before_its_buffer_goes_back_to_the_pool(ring):
    ring.write(b"warm")
    assert ring.get() == b"warm"  # a buffer is pooled now
    ring._bufs = pool = _ReadOnAppend(ring)
    pool.append(ring_module._read_buf(64 * 1024))
    ring.write(b"first message")
    ring.write(b"SECOND")
    pool.armed = True
    assert ring.get() == b"first message"
    assert pool.inner == b"SECOND"


def test_file_id_is_random_per_file_and_stable(ring_path):
    with RingBuffer(ring_path, 4096) as rb:
        first = rb.file_id
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        assert rb.info()["file_id"] == rb.info(count=False)["file_id"] == first
        rb.write(b"traffic")
        assert rb.read() == b"traffic"
        assert rb.file_id == first
    # In the file at offset 56, 16 bytes, written at creation.
    raw = ring_path.read_bytes()
    assert raw[OFF_FILE_ID : OFF_FILE_ID + FILE_ID_LEN].hex() == first
    with RingBuffer.open(ring_path) as again:
        assert again.file_id == first
    # A ring created again at the same path is another file: another id.
    with RingBuffer(ring_path, 4096, remove=True) as rb:
        second = rb.file_id
    assert second != first and re.fullmatch(r"[0-9a-f]{32}", second)
    assert ring_path.read_bytes()[OFF_FILE_ID : OFF_FILE_ID + FILE_ID_LEN].hex() == second
    ring_path.unlink()
    with RingBuffer(ring_path, 4096) as rb:
        assert rb.file_id not in (first, second)
