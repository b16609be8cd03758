"""The ``ringbuffer`` command line (ringbuffer/cli.py), run as subprocesses:
``python -m ringbuffer ...`` and, when installed, the ``ringbuffer`` script."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from _helpers import (
    COUNTERS,
    OFF_CREATED,
    OFF_SLOTS_USED,
    SLOT_OFF_COUNT_OWN,
    SLOT_OFF_COUNT_SHARED,
    assert_error,
    assert_ok,
    poke_u32,
    poke_u64,
    run,
    slot_offset,
    start,
    wait_for,
)

from ringbuffer import RingBuffer
from ringbuffer.cli import _peek_can_keep, parse_listen, parse_mode, parse_size
from ringbuffer.ring import format_version

CLI = [sys.executable, "-m", "ringbuffer"]

# Without RingBuffer.peek(consume_on_error=False), a reader whose output
# broke consumes the one message it could not write.
needs_keep = pytest.mark.xfail(
    not _peek_can_keep(),
    strict=True,
    reason="needs RingBuffer.peek(consume_on_error=False) to leave an unwritten message in the ring",
)


def make_ring(path, size: int = 4096, msgs=()) -> None:
    with RingBuffer(path, size) as rb:
        if msgs:
            assert rb.put_many(msgs, timeout=5) == len(msgs)


def drain(path) -> list[bytes]:
    with RingBuffer.open(path) as rb:
        return rb.drain()


def info(path) -> dict:
    with RingBuffer.open(path) as rb:
        return rb.info()


# -- argument parsing (in process) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("1", 1),
        ("64k", 64 << 10),
        ("64K", 64 << 10),
        ("64KiB", 64 << 10),
        ("64kb", 64 << 10),
        ("64M", 64 << 20),
        ("1GiB", 1 << 30),
        ("1Gi", 1 << 30),
        ("2TB", 2 << 40),
        ("4096B", 4096),
        (" 8 M ", 8 << 20),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "0k", "-1", "1.5G", "12Q", "k", "64 KB B", "1iB", "1e6", "0x100"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_mode():
    assert parse_mode("600") == parse_mode("0600") == parse_mode("0o600") == 0o600
    assert parse_mode("7777") == 0o7777
    for bad in ("", "0999", "rw", "10000", "0o"):
        with pytest.raises(ValueError):
            parse_mode(bad)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        (":9464", ("0.0.0.0", 9464)),
        ("localhost:65535", ("localhost", 65535)),
        (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
    ],
)
def test_parse_listen(text, value):
    assert parse_listen(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9464",
        "host",
        "host:",
        "host:0",
        "host:65536",
        "host:x",
        "host:\u00b2",
        "::1:9464",
        "[::1]",
        "[]:1",
    ],
)
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError):
        parse_listen(text)


# -- help and usage ------------------------------------------------------------


def test_help():
    top = run("--help")
    assert_ok(top)
    for cmd in ("create", "info", "stats", "top", "write", "read", "export", "demo", "bench"):
        assert cmd in top.stdout.decode()
    for cmd in ("create", "info", "stats", "top", "write", "read", "export"):
        proc = run(cmd, "--help")
        assert_ok(proc)
        assert proc.stdout.startswith(f"usage: ringbuffer {cmd}".encode())
    assert b"empty lines" in run("write", "--help").stdout
    version = run("--version")
    assert_ok(version)
    assert version.stdout.startswith(b"ringbuffer ")


def test_usage_errors(tmp_path):
    assert_error(run(), status=2, match="required|COMMAND")
    assert_error(run("frobnicate"), status=2, match="invalid choice")
    assert_error(run("create", tmp_path / "r"), status=2, match="--size")
    assert_error(run("read", tmp_path / "r", "--follow", "--timeout", "1"), status=2, match="not allowed")
    assert_error(run("read", tmp_path / "r", "--count", "-3"), status=2, match="count")
    assert_error(run("read", tmp_path / "r", "--timeout", "soon"), status=2, match="timeout")
    assert_error(run("write", tmp_path / "r", "--null", "--stdin-raw"), status=2, match="not allowed")
    for interval in ("0", "-1", "soon", "inf", "nan"):
        assert_error(run("top", tmp_path / "r", "--interval", interval), status=2, match="interval")
    assert_error(run("top"), status=2, match="RING")


# -- create --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "capacity"), [("4096", 4096), ("5000", 8192), ("64k", 1 << 16), ("1MiB", 1 << 20)]
)
def test_create_sizes(tmp_path, size, capacity):
    path = tmp_path / "r.ring"
    proc = run("create", path, "--size", size)
    assert_ok(proc)
    assert str(capacity).encode() in proc.stdout
    with RingBuffer.open(path) as rb:
        assert rb.capacity == capacity
        assert rb.max_message_size == capacity // 2


@pytest.mark.parametrize("size", ["12Q", "0", "-5", "1.5G", ""])
def test_create_bad_size_is_a_usage_error(tmp_path, size):
    path = tmp_path / "r.ring"
    assert_error(run("create", path, "--size", size), status=2, match="argument --size")
    assert not path.exists()


def test_create_too_large_is_one_line(tmp_path):
    path = tmp_path / "r.ring"
    assert_error(run("create", path, "--size", "1048576T"), match="invalid argument")
    assert not path.exists()


def test_create_existing_path(tmp_path):
    path = tmp_path / "r.ring"
    path.write_bytes(b"keep me")
    assert_error(run("create", path, "--size", "4k"), match=r"File exists.*--remove")
    assert path.read_bytes() == b"keep me"
    assert_ok(run("create", path, "--size", "8k", "--remove"))
    with RingBuffer.open(path) as rb:
        assert rb.capacity == 8192


def test_create_mode(tmp_path):
    def no_umask() -> None:
        os.umask(0)

    assert_ok(run("create", tmp_path / "a", "--size", "4k", "--mode", "0640", preexec_fn=no_umask))
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    assert_ok(run("create", tmp_path / "b", "--size", "4k", preexec_fn=no_umask))
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o600
    assert_error(run("create", tmp_path / "c", "--size", "4k", "--mode", "0999"), status=2, match="mode")


# -- info ----------------------------------------------------------------------

_HOLD = """
import os, sys
from ringbuffer import RingBuffer
rb = RingBuffer.open(sys.argv[1])
block = rb.reserve(10) if sys.argv[2] == "reserve" else rb.peek()
block.__enter__()
if sys.argv[3] == "die":
    os._exit(0)  # no clean-up: the read turn stays taken until a reader finds us dead
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()
"""


def hold(path, what: str, then: str = "wait") -> subprocess.Popen:
    """A process holding a reservation or a peek open (until its stdin closes)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), what, then], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    if then == "wait":
        assert proc.stdout.readline() == b"ready\n"
    else:
        proc.communicate(timeout=10)
    return proc


def info_json(path) -> dict:
    proc = run("info", path, "--json")
    assert_ok(proc)
    assert proc.stdout.count(b"\n") == 1
    return json.loads(proc.stdout)


def test_info_matches_the_api(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"one", b"two", b"three"])
    holder = hold(path, "reserve")
    try:
        expected = info(path)
        got = info_json(path)
        human = run("info", path)
    finally:
        holder.communicate(b"\n", timeout=10)
    assert {k: got[k] for k in expected} == expected
    assert got["messages"] == 3 and got["message_bytes"] == 11 and got["busy"] == 1
    assert got["capacity"] == 4096 and got["max_message_size"] == 2048
    assert got["format_version"] == format_version()
    assert got["bytes_used"] == got["tail"] - got["head"] == 3 * 16 + 24
    assert got["read_turn_pid"] == 0 and got["read_turn_alive"] is None
    assert got["attached"] == 2  # the holder and this command
    assert got["full_fences"] is False
    assert got["file_size"] == os.path.getsize(path)
    assert re.fullmatch(r"[0-9a-f]{32}", got["file_id"])
    assert_ok(human)
    text = human.stdout.decode()
    for pattern in (
        rf"(?m)^file id +{got['file_id']} \(",
        rf"(?m)^format version +{format_version()}$",
        r"(?m)^capacity +4096 bytes",
        r"(?m)^max message size +2048 bytes",
        rf"(?m)^head +{got['head']}\b",
        rf"(?m)^tail +{got['tail']}\b",
        r"(?m)^messages waiting +3 \(11 bytes",
        r"(?m)^busy records +1\b",
        r"(?m)^discarded records +0\b",
        r"(?m)^read turn +free$",
        r"(?m)^attached handles +1 \(",
        r"note: 1 record\(s\) reserved",
    ):
        assert re.search(pattern, text), (pattern, text)
    # The holder ended without leaving its block: the reservation was aborted.
    assert drain(path) == [b"one", b"two", b"three"]


def test_info_shows_the_read_turn_holder(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"a", b"b"])
    holder = hold(path, "peek")
    try:
        got = info_json(path)
        text = run("info", path).stdout.decode()
    finally:
        holder.communicate(b"\n", timeout=10)
    assert got["read_turn_pid"] == holder.pid and got["read_turn_alive"] is True
    assert got["counted"] is False
    assert re.search(rf"(?m)^read turn +held by pid {holder.pid} \(alive\)$", text), text
    assert re.search(r"(?m)^messages waiting +not counted", text), text
    assert drain(path) == [b"b"]  # the peek consumed "a" when the holder ended it


def test_info_shows_a_dead_read_turn_holder(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"a"])
    holder = hold(path, "peek", then="die")
    got = info_json(path)
    assert got["read_turn_pid"] == holder.pid and got["read_turn_alive"] is False
    text = run("info", path).stdout.decode()
    assert "NOT RUNNING" in text and f"note: the read turn is held by pid {holder.pid}" in text


# -- stats ---------------------------------------------------------------------

STATS_KEYS = [
    "path",
    "created",
    "age_seconds",
    "written",
    "written_bytes",
    "read",
    "read_bytes",
    "aborted",
    "full",
    "empty",
    "parks",
    "parked_seconds",
    "wakes",
    "recovered",
    "turns_taken",
    "backlog",
    "backlog_bytes",
    "written_per_second",
    "written_bytes_per_second",
    "read_per_second",
    "read_bytes_per_second",
    "mean_message_bytes",
    "mean_park_seconds",
]


def stats_json(path) -> dict:
    proc = run("stats", path, "--json")
    assert_ok(proc)
    assert proc.stdout.count(b"\n") == 1
    return json.loads(proc.stdout)


def known_traffic(path) -> None:
    """10 messages of 1 to 10 bytes written (55 bytes), the first 4 read (10
    bytes), a reservation aborted, a non-blocking read of an empty ring."""
    with RingBuffer(path, 1 << 16) as rb:
        assert rb.put_many([b"m" * n for n in range(1, 11)]) == 10
        with pytest.raises(KeyError), rb.reserve(100):
            raise KeyError
        assert rb.get_many(4) == [b"m" * n for n in range(1, 5)]
    with RingBuffer(f"{path}.other", 4096) as other:
        assert other.try_read() is None  # counted in the other ring, not this one


def test_stats_counts_known_traffic(tmp_path):
    path = tmp_path / "r.ring"
    known_traffic(path)
    got = stats_json(path)
    assert list(got) == STATS_KEYS
    documented = run("stats", "--help").stdout.decode().partition("--json keys")[2]
    assert all(re.search(rf"(?m)^  (\w+, )?{key}\b", documented) for key in STATS_KEYS), documented
    assert {k: got[k] for k in STATS_KEYS[3:17]} == {
        "written": 10,
        "written_bytes": 55,
        "read": 4,
        "read_bytes": 10,
        "aborted": 1,
        "full": 0,
        "empty": 0,
        "parks": 0,
        "parked_seconds": 0.0,
        "wakes": 0,
        "recovered": 0,
        "turns_taken": 0,
        "backlog": 6,
        "backlog_bytes": 45,
    }
    assert got["path"] == str(path)
    assert got["mean_message_bytes"] == 5.5 and got["mean_park_seconds"] is None
    assert 0 < got["age_seconds"] < 60 and abs(got["created"] + got["age_seconds"] - time.time()) < 60
    age = got["age_seconds"]
    for key, count in (("written", 10), ("written_bytes", 55), ("read", 4), ("read_bytes", 10)):
        assert got[f"{key}_per_second"] == pytest.approx(count / age)
    text = run("stats", path)
    assert_ok(text)
    out = text.stdout.decode()
    for pattern in (
        rf"(?m)^ring +{re.escape(str(path))}$",
        r"(?m)^created +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*\(\d+\.\d s ago\)$",
        r"(?m)^written +10 messages, 55 bytes \(55 bytes\)$",
        r"(?m)^read +4 messages, 10 bytes \(10 bytes\)$",
        r"(?m)^backlog +6 messages, 45 bytes \(written - read\)$",
        r"(?m)^rate in +[\d.e+]+ messages/s, [\d.e+-]+ MB/s \(average since creation\)$",
        r"(?m)^rate out +[\d.e+]+ messages/s, [\d.e+-]+ MB/s",
        r"(?m)^mean message +5\.5 bytes",
        r"(?m)^aborted +1 \(",
        r"(?m)^full +0 \(",
        r"(?m)^empty +0 \(",
        r"(?m)^parks +0 \(.*0\.000 s in all\)$",
        r"(?m)^recovered +0 \(",
        r"(?m)^turns taken +0 \(",
    ):
        assert re.search(pattern, out), (pattern, out)
    # Aligned like info: every value starts in the same column.
    assert len({len(m.group(1)) for m in re.finditer(r"(?m)^(\S.*?  +)\S", out)}) == 1, out


def test_stats_rates_are_averages_since_the_creation(tmp_path):
    path = tmp_path / "r.ring"
    known_traffic(path)
    poke_u64(path, OFF_CREATED, int((time.time() - 100) * 1e9))  # created 100 s ago
    got = stats_json(path)
    assert got["age_seconds"] == pytest.approx(100, abs=5)
    assert got["written_per_second"] == pytest.approx(0.1, rel=0.05)
    assert got["read_bytes_per_second"] == pytest.approx(0.1, rel=0.05)
    out = run("stats", path).stdout.decode()
    number = r"(\d[\d.e+-]*)"
    rate_in = re.search(rf"(?m)^rate in +{number} messages/s, {number} MB/s ", out)
    rate_out = re.search(rf"(?m)^rate out +{number} messages/s, {number} MB/s ", out)
    assert rate_in and rate_out, out
    assert [float(x) for x in rate_in.groups()] == pytest.approx([0.1, 55e-8], rel=0.05)
    assert [float(x) for x in rate_out.groups()] == pytest.approx([0.04, 10e-8], rel=0.05)
    assert re.search(r"(?m)^created .*\(1\.\d min ago\)$", out), out


@pytest.mark.parametrize("created", ["past", "future", "epoch"])
def test_stats_of_a_forged_file_are_sane(tmp_path, created):
    """Counters that sum past 2^64 (saturated by rb_stats), more read than
    written, a creation time in the future: no error, no negative figure."""
    path = tmp_path / "r.ring"
    known_traffic(path)
    slot = 7
    for counter, value in {
        "written": 2**64 - 1,
        "written_bytes": 2**63,
        "read": 2**64 - 1,
        "read_bytes": 2**64 - 1,
        "parks": 2**64 - 1,
        "parked_ns": 2**64 - 1,
        "recovered": 2**63,
    }.items():
        i = COUNTERS.index(counter)
        poke_u64(path, slot_offset(slot, SLOT_OFF_COUNT_OWN + 8 * i), value)
        poke_u64(path, slot_offset(slot, SLOT_OFF_COUNT_SHARED + 8 * i), value)
    poke_u32(path, OFF_SLOTS_USED, slot + 1)
    ns = {"past": int((time.time() - 10) * 1e9), "future": int((time.time() + 1e6) * 1e9), "epoch": 0}
    poke_u64(path, OFF_CREATED, ns[created])
    got = stats_json(path)
    assert got["written"] == got["read"] == got["read_bytes"] == got["parks"] == 2**64 - 1  # saturated
    assert got["written_bytes"] == 2**64 - 1  # 2 * 2^63 + 55: saturated too
    assert got["backlog"] == 0 and got["backlog_bytes"] == 0  # read_bytes > written_bytes: not below 0
    for key in STATS_KEYS[1:]:
        assert got[key] is None or got[key] >= 0 or key == "age_seconds", (key, got[key])
    if created == "future":
        assert got["written_per_second"] is None and got["read_bytes_per_second"] is None
    else:
        assert got["written_per_second"] > 0
    text = run("stats", path)
    assert_ok(text)
    out = text.stdout.decode()
    assert not re.search(r"(?<![\w.])-\d", out), out  # a minus sign, not a date's dash or an exponent's
    assert "nan" not in out and "inf" not in out
    assert re.search(r"(?m)^written +18446744073709551615 messages", out), out
    if created == "future":
        assert re.search(r"(?m)^created .*not in the past: no average rates\)$", out), out
        assert re.search(r"(?m)^rate in +- \(the creation time is not in the past\)$", out), out


# -- write ---------------------------------------------------------------------


def test_write_lines(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    data = b"a\nbb\n\n\nccc\r\n\xff\x00\x01\n\nlast without newline"
    assert_ok(run("write", path, input=data))
    assert drain(path) == [b"a", b"bb", b"ccc\r", b"\xff\x00\x01", b"last without newline"]
    assert_ok(run("write", path, "--lines", input=b"\n\n"))
    assert drain(path) == []


def test_write_null(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    assert_ok(run("write", path, "--null", input=b"a\0\0b\nc\0d"))
    assert drain(path) == [b"a", b"b\nc", b"d"]


def test_write_stdin_raw(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 16384)  # messages up to 8192 bytes
    data = os.urandom(10_000)
    assert_ok(run("write", path, "--stdin-raw", input=data))
    msgs = drain(path)
    assert [len(m) for m in msgs] == [8192, 1808]
    assert b"".join(msgs) == data
    assert_ok(run("write", path, "--stdin-raw", input=b""))
    assert drain(path) == []


def test_write_stdin_raw_to_a_reader(tmp_path):
    """A ring holds one message of the maximum size at a time: the writer
    waits for the reader after each."""
    path = tmp_path / "r.ring"
    make_ring(path, 8192)  # messages up to 4096 bytes
    data = os.urandom(30_000)  # 7 messages of 4096 bytes and one of 1328
    reader = start("read", path, "--follow", "--count", 8, "--raw", stdout=subprocess.PIPE)
    try:
        assert_ok(run("write", path, "--stdin-raw", input=data))
        out, _ = reader.communicate(timeout=20)
    finally:
        reader.kill()
    assert reader.returncode == 0
    assert out == data


def test_write_too_long_line(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)  # messages up to 2048 bytes
    data = b"one\n\ntwo\n" + b"x" * 2049 + b"\nthree\n"
    err = assert_error(run("write", path, input=data), match="line 4 .*2049 bytes.*2048")
    assert "2 message(s) before it were written" in err
    assert drain(path) == [b"one", b"two"]
    # A line at the limit is fine; one far longer is refused before its end.
    assert_ok(run("write", path, input=b"y" * 2048))
    assert drain(path) == [b"y" * 2048]
    assert_error(run("write", path, input=b"a\n" + b"z" * 200_000), match="line 2 .*over")
    assert drain(path) == [b"a"]
    assert_error(run("write", path, "--null", input=b"a\0" + b"z" * 3000), match="record 2")
    assert drain(path) == [b"a"]


def test_write_waits_for_space_and_ctrl_c(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    proc = start("write", path, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"m" * 1000 + b"\n")
        proc.stdin.write(b"".join(b"%d\n" % i for i in range(1000)))
        proc.stdin.flush()
        wait_for(lambda: info(path)["waiting_producers"] >= 1)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stderr.close()
    msgs = drain(path)
    assert msgs[0] == b"m" * 1000 and msgs[1:] == [b"%d" % i for i in range(len(msgs) - 1)]


# -- read ----------------------------------------------------------------------


def test_read_what_is_there(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"first", b"with\nnewline", b"\x00\xff"])
    proc = run("read", path)
    assert_ok(proc)
    assert proc.stdout == b"first\nwith\nnewline\n\x00\xff\n"
    assert drain(path) == []
    proc = run("read", path)  # nothing there: no output, success
    assert_ok(proc)
    assert proc.stdout == b""


def test_read_output_formats(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"a\nb", b"c", b"d"])
    assert run("read", path, "--null", "--count", "2").stdout == b"a\nb\0c\0"
    assert run("read", path, "--raw").stdout == b"d"
    assert_ok(run("write", path, "--null", input=b"x\ny\0z\0"))
    assert run("read", path, "--null").stdout == b"x\ny\0z\0"


def test_read_count(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"1", b"2", b"3"])
    proc = run("read", path, "--count", "2")
    assert_ok(proc)
    assert proc.stdout == b"1\n2\n"
    assert run("read", path, "-n", "0").stdout == b""
    assert drain(path) == [b"3"]


def test_read_timeout(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    t0 = time.monotonic()
    proc = run("read", path, "--timeout", "0.5")
    assert_ok(proc)
    assert proc.stdout == b"" and time.monotonic() - t0 >= 0.5

    def later() -> None:
        time.sleep(0.5)
        with RingBuffer.open(path) as rb:
            rb.put(b"late")

    writer = threading.Thread(target=later)
    writer.start()
    t0 = time.monotonic()
    proc = run("read", path, "--timeout", "20", "--count", "1")
    writer.join()
    assert_ok(proc)
    assert proc.stdout == b"late\n" and time.monotonic() - t0 < 15


def test_read_follow_with_a_later_writer(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    reader = start("read", path, "--follow", "--count", "3", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: info(path)["waiting_consumers"] >= 1)
        assert_ok(run("write", path, input=b"a\nb\nc\nd\n"))
        out, err = reader.communicate(timeout=20)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    assert out == b"a\nb\nc\n"
    assert drain(path) == [b"d"]


def test_read_follow_ctrl_c_is_quiet(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"x"])
    reader = start("read", path, "--follow", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: info(path)["waiting_consumers"] >= 1)
        reader.send_signal(signal.SIGINT)
        out, err = reader.communicate(timeout=10)
    finally:
        reader.kill()
    assert reader.returncode == 130
    assert out == b"x\n" and err == b""


def test_pipeline_of_two_processes(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 1 << 16)  # far smaller than the data: the writer waits for the reader
    n = 100_000
    data = b"".join(b"%d\n" % i for i in range(1, n + 1))  # like `seq 100000`
    (tmp_path / "input").write_bytes(data)
    reader = start("read", path, "--follow", "--count", n, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(tmp_path / "input", "rb") as stdin:
        writer = start("write", path, stdin=stdin, stderr=subprocess.PIPE)
    try:
        out, err = reader.communicate(timeout=60)
        assert writer.wait(10) == 0
    finally:
        reader.kill()
        writer.kill()
        writer.stderr.close()
    assert reader.returncode == 0, err
    assert out.count(b"\n") == n
    assert out == data
    assert info(path)["messages"] == 0


# -- a reader whose output goes away -------------------------------------------


def _messages(n: int, size: int) -> list[bytes]:
    return [b"%06d" % i + b"." * (size - 6) for i in range(n)]


def test_broken_pipe_is_quiet_and_keeps_the_rest(tmp_path):
    """`ringbuffer read PATH | head -1`: the reader reads one line and closes
    the pipe; the command exits 0 without a word, and the ring still holds a
    suffix of the messages (what sat unread in the pipe is gone, as with any
    pipe: the exact accounting is the socket test below)."""
    path = tmp_path / "r.ring"
    msgs = _messages(2000, 200)  # 400 kB: far more than the pipe holds
    make_ring(path, 1 << 20, msgs)
    proc = start("read", path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == msgs[0] + b"\n"
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.stderr.close()
    assert err == b""
    left = drain(path)
    assert 0 < len(left) < len(msgs)
    assert left == msgs[len(msgs) - len(left) :]


@needs_keep
def test_broken_output_consumes_exactly_what_was_written(tmp_path):
    """Standard output is a socket whose reading side shuts down after the
    first bytes: the write then fails like a closed pipe's, but what was
    written before stays readable. Everything written, plus everything left
    in the ring, is every message exactly once, in order."""
    path = tmp_path / "r.ring"
    msgs = _messages(5000, 200)  # 1 MB: more than a socket buffer holds
    make_ring(path, 2 << 20, msgs)
    ours, theirs = socket.socketpair()
    with ours:
        with theirs:
            proc = start("read", path, stdout=theirs, stderr=subprocess.PIPE)
        try:
            seen = ours.recv(1000)
            time.sleep(0.2)  # let the writer fill the socket and block
            ours.shutdown(socket.SHUT_RD)
            err = proc.stderr.read()
            assert proc.wait(10) == 0
        finally:
            proc.kill()
            proc.stderr.close()
        while True:
            more = ours.recv(1 << 16)
            if not more:
                break
            seen += more
    assert err == b""
    written = seen.split(b"\n")
    assert written.pop() == b""
    left = drain(path)
    assert left, "the reader stopped before the end"
    assert written + left == msgs


@needs_keep
def test_sigterm_while_blocked_gives_the_read_turn_back(tmp_path):
    """A reader blocked on a full output pipe holds the read turn; SIGTERM
    makes it give the turn back (and keep the message it was writing)."""
    path = tmp_path / "r.ring"
    msgs = _messages(300, 4000)  # each line fits PIPE_BUF: written whole or not at all
    make_ring(path, 2 << 20, msgs)
    proc = start("read", path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: info(path)["read_turn_pid"] == proc.pid)
        time.sleep(0.2)  # blocked writing to the full pipe by now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        written = proc.stdout.read()
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert info(path)["read_turn_pid"] == 0
    lines = written.split(b"\n")
    assert lines.pop() == b""
    assert lines + drain(path) == msgs


# -- errors --------------------------------------------------------------------


@pytest.fixture
def bad_paths(tmp_path):
    (tmp_path / "text").write_bytes(b"hello, not a ring\n" * 1000)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    return {
        "missing": (tmp_path / "missing", "No such file or directory"),
        "text": (tmp_path / "text", "not a valid ring buffer file"),
        "empty": (tmp_path / "empty", "not a valid ring buffer file"),
        "dir": (tmp_path / "dir", "Is a directory"),
    }


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "dir"])
def test_errors_are_one_line(bad_paths, kind):
    path, message = bad_paths[kind]
    for args in (
        ["info", path],
        ["stats", path],
        ["top", path, "--once", "--interval", "0.1"],
        ["top", path],  # not a terminal: frames of plain lines, but none for a bad path
        ["read", path],
        ["write", path],
    ):
        err = assert_error(run(*args, input=b"x\n"), match=message)
        assert str(path) in err


def test_permission_denied(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root is not denied")
    path = tmp_path / "r.ring"
    make_ring(path)
    os.chmod(path, 0o400)
    assert_error(run("info", path), match="Permission denied")


def test_missing_directory_on_create(tmp_path):
    assert_error(run("create", tmp_path / "no" / "r.ring", "--size", "4k"), match="No such file")


# -- demo, bench, the installed script -----------------------------------------


def test_demo(tmp_path):
    proc = run("demo", "--count", "2000", timeout=60)
    assert_ok(proc)
    assert b"all messages verified" in proc.stdout


def test_bench(tmp_path):
    out = tmp_path / "bench.json"
    proc = run("bench", "--rounds", "200", "--json", out, timeout=60)
    assert_ok(proc)
    assert json.loads(out.read_text())["rounds"] == 200


def test_console_script(tmp_path):
    script = shutil.which("ringbuffer", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the ringbuffer script is not installed next to this Python (pip install -e .)")
    path = tmp_path / "r.ring"
    create = subprocess.run([script, "create", path, "--size", "4k"], capture_output=True, timeout=30)
    assert_ok(create)
    write = subprocess.run([script, "write", path], input=b"hi\n", capture_output=True, timeout=30)
    assert_ok(write)
    read = subprocess.run([script, "read", path], capture_output=True, timeout=30)
    assert_ok(read)
    assert read.stdout == b"hi\n"


# -- consumer groups -------------------------------------------------------------


def test_create_overwrite_and_no_default_group(tmp_path):
    path = tmp_path / "o.ring"
    proc = run("create", path, "--size", "4k", "--overwrite")
    assert_ok(proc)
    assert b"overwrite ring" in proc.stdout
    with RingBuffer.open(path) as rb:
        assert rb.overwrite
        for _ in range(100):
            rb.write(b"x" * 1000)  # never full
    path = tmp_path / "n.ring"
    proc = run("create", path, "--size", "4k", "--no-default-group")
    assert_ok(proc)
    assert b"no default group" in proc.stdout
    with RingBuffer.open(path) as rb:
        assert not rb.overwrite and rb.groups() == []
        rb.write(b"x")
    assert_error(run("read", path), match="default group")


def test_read_group_gets_every_message_and_resumes(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"1", b"2", b"3"])
    proc = run("read", path, "--group", "audit", "--start", "earliest", "--count", "2")
    assert_ok(proc)
    assert proc.stdout == b"1\n2\n"
    proc = run("read", path, "--group", "audit", "--start", "earliest")  # resumes where it stood
    assert_ok(proc)
    assert proc.stdout == b"3\n"
    assert_ok(run("write", path, input=b"4\n"))
    assert run("read", path, "--group", "audit").stdout == b"4\n"
    assert run("read", path, "--group", "late").stdout == b""  # made at latest
    assert drain(path) == [b"1", b"2", b"3", b"4"]  # the default group got them all too


def test_read_subscribe_takes_nothing_from_other_readers(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"old"])
    assert run("read", path, "--subscribe", "--start", "earliest").stdout == b"old\n"
    assert run("read", path, "--subscribe").stdout == b""  # latest: nothing new yet
    reader = start(
        "read",
        path,
        "--subscribe",
        "--follow",
        "--count",
        "2",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def subscribed() -> bool:
            with RingBuffer.open(path) as rb:
                return any(g["ephemeral"] for g in rb.groups())

        wait_for(subscribed)
        assert_ok(run("write", path, input=b"a\nb\n"))
        out, err = reader.communicate(timeout=20)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    assert out == b"a\nb\n"
    assert drain(path) == [b"old", b"a", b"b"]
    with RingBuffer.open(path) as rb:
        assert [g["kind"] for g in rb.groups()] == ["default"]  # gone with the command


def test_read_group_options_usage_errors(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    assert_error(run("read", path, "--group", "g", "--subscribe"), status=2, match="not allowed with")
    assert_error(run("read", path, "--start", "earliest"), status=2, match="--start needs --group")
    assert_error(run("read", path, "--group", "g", "--start", "middle"), status=2, match="invalid choice")
    assert_error(run("read", path, "--group", ""), match="group name")
    assert_error(run("read", path, "--group", "x" * 64), match="group name")


def test_read_reports_lost_messages_in_one_line_and_goes_on(tmp_path):
    path = tmp_path / "o.ring"
    with RingBuffer(path, 4096, overwrite=True) as rb:
        RingBuffer.open(path, group="g").close()
        for i in range(20):  # records of 256 bytes: 16 fit, the first 4 are overwritten
            rb.write(b"%03d" % i + b"." * 245)
    proc = run("read", path, "--group", "g")
    assert_ok(proc)
    assert [line[:3] for line in proc.stdout.splitlines()] == [b"%03d" % i for i in range(4, 20)]
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "4 messages lost" in err and err.startswith("ringbuffer: read: "), err


def test_read_on_an_overwrite_ring_copies(tmp_path):
    path = tmp_path / "o.ring"
    with RingBuffer(path, 4096, overwrite=True) as rb:
        rb.write(b"one")
        rb.write(b"two")
    proc = run("read", path)
    assert_ok(proc)
    assert proc.stdout == b"one\ntwo\n" and proc.stderr == b""


def test_groups_lists_and_removes(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096)
    with RingBuffer.open(path, group="audit") as g, RingBuffer.open(path) as rb:
        rb.write(b"abc")
        rb.write(b"de")
        g.read()
        proc = run("groups", path)
        assert_ok(proc)
        text = proc.stdout.decode()
        lines = text.splitlines()
        assert lines[0].split() == [
            "NAME",
            "KIND",
            "MEMBERS",
            "POSITION",
            "BACKLOG",
            "BACKLOG",
            "BYTES",
            "LOST",
        ]
        rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
        assert rows["(default)"][0] == "default" and rows["(default)"][1] == "1"  # rb; the command's excluded
        assert rows["(default)"][3:] == ["2", "5", "0"]
        assert (
            rows["audit"][0] == "durable" and rows["audit"][1] == "1" and rows["audit"][3:] == ["1", "2", "0"]
        )
        proc = run("groups", path, "--json")
        assert_ok(proc)
        got = {str(e["name"]): e for e in json.loads(proc.stdout)}
        api = {str(e["name"]): e for e in rb.groups()}
        assert got["audit"] == api["audit"]
        assert got["None"] == {**api["None"], "members": 2}  # the command's own handle counts in JSON
    proc = run("groups", path, "--remove", "audit")
    assert_ok(proc)
    assert b"removed group 'audit'" in proc.stdout
    assert_error(run("groups", path, "--remove", "audit"), match="'audit'")
    assert_error(run("groups", path, "--remove", "x" * 64), match="group name")
    proc = run("groups", path, "--remove-default")
    assert_ok(proc)
    with RingBuffer.open(path) as rb:
        assert rb.groups() == []
    proc = run("groups", path)
    assert_ok(proc)
    assert b"no consumer groups" in proc.stdout
    assert_error(run("groups", path, "--remove", "a", "--remove-default"), status=2, match="not allowed with")


def test_info_lists_the_groups_with_their_backlog(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path, 4096, [b"x" * 10])
    RingBuffer.open(path, group="audit", start="earliest").close()
    proc = run("info", path)
    assert_ok(proc)
    text = proc.stdout.decode()
    assert re.search(r"(?m)^consumer groups +2 ", text), text
    assert re.search(r"(?m)^  \(default\) +1 messages, 10 bytes, 0 lost, 0 member", text), text
    assert re.search(r"(?m)^  audit +1 messages, 10 bytes, 0 lost, 0 member", text), text
    assert re.search(r"(?m)^kind +lossless", text), text
    got = info_json(path)
    assert [g["name"] for g in got["groups"]] == [None, "audit"] and got["overwrite"] is False
    assert got["writable"] == 4096 - 24 and got["group_count"] == 2


def test_bridge_group_is_for_ring_to_nats(tmp_path):
    path = tmp_path / "r.ring"
    make_ring(path)
    proc = run("bridge", "nats://127.0.0.1:1/x", path, "--group", "g")
    assert_error(proc, status=2, match="--group is for RING to URL")
