"""The NATS JetStream bridge (ringbuffer.bridge, ``ringbuffer bridge``),
against a real nats-server on 127.0.0.1 (the ``nats_server`` fixture)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nats
import pytest
import trustme
from _nats import NatsServer, free_port

from ringbuffer import RingBuffer, bridge
from ringbuffer.bridge import BridgeError, covers, default_stream, parse_url

pytestmark = pytest.mark.usefixtures("watchdog")

N = 100_000


def message(i: int) -> bytes:
    """Message i: its number, then 0 to 999 bytes that depend on it."""
    return i.to_bytes(8, "little") + bytes([i % 251]) * ((i * 7919) % 1000)


def number(msg: bytes) -> int:
    i = int.from_bytes(msg[:8], "little")
    assert msg == message(i), f"message {i} corrupted"
    return i


def bridge_cmd(src: str, dst: str, *opts: str) -> list[str]:
    return [sys.executable, "-m", "ringbuffer", "bridge", src, dst, *opts]


def start_bridge(
    tmp_path: Path, src: str, dst: str, *opts: str, name: str = "bridge"
) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{name}.{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen(bridge_cmd(src, dst, "--interval", "0.5", *opts), stdout=log, stderr=log)
    log.close()
    proc.log = log.name  # type: ignore[attr-defined]
    return proc


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log).read_text()  # type: ignore[attr-defined]


def running(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Waits until the bridge process says it is bridging."""
    wait_until(lambda: proc.poll() is not None or "bridging" in log_of(proc), timeout, "the bridge to start")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Stops a bridge that is running (once it says so: a signal before its
    handlers are in place would kill the interpreter as it starts)."""
    if proc.poll() is None:
        running(proc)
        proc.send_signal(sig)
    return proc.wait(timeout)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringbuffer", "bridge", *args], capture_output=True, text=True, timeout=timeout
    )


def writer_thread(path: Path, msgs: list[bytes]) -> threading.Thread:
    def run() -> None:
        with RingBuffer.open(path) as rb:
            for m in msgs:
                rb.put(m, timeout=120)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def read_ring(path: Path, count: int, timeout: float = 120) -> list[bytes]:
    """Reads ``count`` messages from the ring at ``path`` (fewer if
    ``timeout`` seconds pass without one)."""
    out: list[bytes] = []
    with RingBuffer.open(path) as rb:
        while len(out) < count:
            got = rb.get_many(1024, timeout=timeout)
            out.extend(got)
    return out


async def _stream_contents(address: str, subject: str, expect: int, quiet: float) -> list[bytes]:
    nc = await nats.connect(address)
    try:
        js = nc.jetstream()
        none = nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.NONE)
        sub = await js.pull_subscribe(subject, durable=None, config=none)
        out: list[bytes] = []
        while len(out) < expect:
            try:
                msgs = await sub.fetch(1000, timeout=quiet)
            except nats.errors.TimeoutError:
                break
            out.extend(m.data for m in msgs)
        # Anything more (a duplicate) would come now.
        try:
            out.extend(m.data for m in await sub.fetch(1000, timeout=0.5))
        except nats.errors.TimeoutError:
            pass
        return out
    finally:
        await nc.close()


def stream_contents(server: NatsServer, subject: str, expect: int, quiet: float = 5) -> list[bytes]:
    """Every message of ``subject``'s stream, read from the start by a fresh consumer."""
    return asyncio.run(_stream_contents(server.address, subject, expect, quiet))


async def _publish(address: str, subject: str, msgs: list[bytes], stream: str | None = None) -> None:
    nc = await nats.connect(address)
    try:
        js = nc.jetstream(publish_async_max_pending=1000)
        if stream is not None:
            await js.add_stream(name=stream, subjects=[subject])
        for m in msgs:
            await js.publish_async(subject, m)
        await js.publish_async_completed()
    finally:
        await nc.close()


def publish(server: NatsServer, subject: str, msgs: list[bytes], stream: str | None = None) -> None:
    asyncio.run(_publish(server.address, subject, msgs, stream))


def wait_until(cond, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def positions_used(path: Path) -> tuple[int, int]:
    with RingBuffer.open(path) as rb:
        return rb.positions()


def two_bridges(tmp_path: Path, server: NatsServer, subject: str):
    """Rings a and b (1 MiB), and two bridge processes a -> subject -> b."""
    a, b = tmp_path / "a.ring", tmp_path / "b.ring"
    RingBuffer(a, 1 << 20).close()
    RingBuffer(b, 1 << 20).close()
    url = server.url(subject)
    return (
        a,
        b,
        start_bridge(tmp_path, str(a), url, name="out"),
        start_bridge(tmp_path, url, str(b), name="in"),
    )


# -- URLs and names ---------------------------------------------------------


def test_parse_url():
    t = parse_url("nats://127.0.0.1:4333/orders.eu")
    assert (t.server, t.subject, t.display) == (
        "nats://127.0.0.1:4333",
        "orders.eu",
        "nats://127.0.0.1:4333/orders.eu",
    )
    t = parse_url("nats://alice:secret@example.com/a.*.>")
    assert t.server == "nats://alice:secret@example.com:4222"
    assert "secret" not in t.display and t.wildcard
    assert parse_url("tls://[::1]:5/x").server == "tls://[::1]:5"


@pytest.mark.parametrize(
    "url, says",
    [
        ("http://127.0.0.1:4222/x", "must start with nats://"),
        ("nats://127.0.0.1:4222", "no subject"),
        ("nats://127.0.0.1:4222/", "no subject"),
        ("nats://127.0.0.1:99999/x", "malformed"),
        ("nats://127.0.0.1:port/x", "malformed"),
        ("nats:///x", "no host"),
        ("nats://h/a..b", "not a NATS subject"),
        ("nats://h/a.>.b", "not a NATS subject"),
        ("nats://h/a%20b", "not a NATS subject"),
        ("nats://h/x?y=1", "no [?]query"),
    ],
)
def test_parse_url_refuses(url, says):
    with pytest.raises(BridgeError, match=says):
        parse_url(url)


def test_covers_and_default_stream():
    assert covers("orders.>", "orders.eu") and covers("orders.*", "orders.eu") and covers("a", "a")
    assert covers(">", "a.b.c") and covers("orders.>", "orders.*.x") and covers("orders.*", "orders.*")
    assert not covers("orders.*", "orders.eu.x") and not covers("orders.eu", "orders.*")
    assert not covers("orders.*", "orders.>") and not covers("orders.>", "orders") and not covers("b", "a")
    assert default_stream("orders.eu") == "ORDERS_EU"
    assert default_stream("orders.*.>") == "ORDERS_ANY_ALL"


# -- end to end -------------------------------------------------------------


def test_100k_messages_ring_to_nats_to_ring(tmp_path, nats_server):
    """Two bridges (processes): every message arrives, once, in order."""
    a, b, out, inn = two_bridges(tmp_path, nats_server, "e2e.data")
    try:
        msgs = [message(i) for i in range(N)]
        w = writer_thread(a, msgs)
        got = read_ring(b, N, timeout=60)
        w.join(60)
        assert [number(m) for m in got] == list(range(N))
        assert got == msgs
        time.sleep(0.5)
        with RingBuffer.open(b) as rb:
            assert rb.try_read() is None  # nothing twice
    finally:
        assert stop(out) == 0, log_of(out)
        assert stop(inn) == 0, log_of(inn)
    assert "msgs/s" in log_of(out) and "msgs/s" in log_of(inn)
    assert "Traceback" not in log_of(out) + log_of(inn)
    assert len(stream_contents(nats_server, "e2e.data", N)) == N


def test_ring_to_nats_killed_20_times_exactly_once(tmp_path, nats_server):
    """SIGKILL at random moments, restarted each time, while 100k messages
    flow: the stream holds each once, in order."""
    a = tmp_path / "a.ring"
    RingBuffer(a, 1 << 20).close()
    url = nats_server.url("kill.out")
    msgs = [message(i) for i in range(N)]
    w = writer_thread(a, msgs)
    rng = random.Random(1)
    proc = start_bridge(tmp_path, str(a), url, "--batch", "128", "--max-inflight", "64")
    for _ in range(20):
        time.sleep(rng.uniform(0.2, 0.8))
        proc.kill()
        proc.wait()
        proc = start_bridge(tmp_path, str(a), url, "--batch", "128", "--max-inflight", "64")
    w.join(120)
    wait_until(lambda: positions_used(a)[0] == positions_used(a)[1], 120, "the ring to drain")
    assert stop(proc) == 0, log_of(proc)
    got = stream_contents(nats_server, "kill.out", N)
    assert [number(m) for m in got] == list(range(N))


def test_nats_to_ring_killed_duplicates_within_the_inflight_bound(tmp_path, nats_server):
    b = tmp_path / "b.ring"
    RingBuffer(b, 1 << 20).close()
    url = nats_server.url("kill.in")
    publish(nats_server, "kill.in", [message(i) for i in range(N)], stream="KILLIN")
    inflight = 64
    opts = ("--batch", "32", "--max-inflight", str(inflight), "--durable", "killin")
    got: list[bytes] = []
    reader_done = threading.Event()

    def reader() -> None:
        with RingBuffer.open(b) as rb:
            while not reader_done.is_set():
                got.extend(rb.get_many(1024, timeout=30))
                if got and number(got[-1]) == N - 1:
                    return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    rng = random.Random(2)
    kills = 0
    proc = start_bridge(tmp_path, url, str(b), *opts)
    while kills < 10 and t.is_alive():
        running(proc)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()
        kills += t.is_alive()  # killed while messages were still coming
        proc = start_bridge(tmp_path, url, str(b), *opts)
    t.join(120)
    assert kills >= 5
    reader_done.set()
    assert stop(proc) == 0, log_of(proc)
    high, dups, run = -1, 0, 0
    for m in got:
        i = number(m)
        if i == high + 1:
            high, run = i, 0
        else:
            assert i <= high, f"message {high + 1} skipped (got {i})"
            assert i > high - inflight, f"message {i} written again after {high}: beyond the in-flight bound"
            dups += 1
            run += 1
            assert run <= inflight
    assert high == N - 1
    assert dups <= kills * inflight


def test_server_killed_and_restarted_nothing_lost(tmp_path, nats_server):
    a, b, out, inn = two_bridges(tmp_path, nats_server, "restart.data")
    count = 30_000
    msgs = [message(i) for i in range(count)]
    try:
        w = writer_thread(a, msgs)
        got: list[bytes] = []
        with RingBuffer.open(b) as rb:
            while len(got) < count // 3:
                got.extend(rb.get_many(1024, timeout=60))
            nats_server.kill()
            time.sleep(1.0)
            nats_server.restart()
            while len(got) < count:
                got.extend(rb.get_many(1024, timeout=60))
        w.join(60)
        assert [number(m) for m in got] == list(range(count))
        time.sleep(0.5)
        with RingBuffer.open(b) as rb:
            assert rb.try_read() is None
    finally:
        assert stop(out) == 0, log_of(out)
        assert stop(inn) == 0, log_of(inn)
    assert "reconnected" in log_of(out) and "reconnected" in log_of(inn)


def test_sigterm_and_sigint_stop_cleanly_nothing_lost(tmp_path, nats_server):
    a, b, out, inn = two_bridges(tmp_path, nats_server, "clean.stop")
    url = nats_server.url("clean.stop")
    count = 20_000
    w = writer_thread(a, [message(i) for i in range(count)])
    wait_until(lambda: positions_used(b)[1] > 0, 30, "messages to reach b")
    assert stop(out, signal.SIGTERM) == 0, log_of(out)
    assert stop(inn, signal.SIGINT) == 0, log_of(inn)
    assert "bridge stopped" in log_of(out) and "bridge stopped" in log_of(inn)
    out = start_bridge(tmp_path, str(a), url, name="out")
    inn = start_bridge(tmp_path, url, str(b), name="in")
    try:
        got = read_ring(b, count, timeout=60)
        w.join(60)
        time.sleep(0.5)
        with RingBuffer.open(b) as rb:
            got += rb.drain()
    finally:
        assert stop(out) == 0 and stop(inn) == 0
    assert [number(m) for m in got] == list(range(count))


def test_a_full_ring_holds_the_bridge_back(tmp_path, nats_server):
    """Flow control: nothing is dropped and at most --max-inflight messages
    are held unacknowledged while the ring is full."""
    b = tmp_path / "b.ring"
    RingBuffer(b, 4096).close()
    count = 2000
    publish(nats_server, "flow.in", [message(i % 7) for i in range(count)], stream="FLOW")
    inn = start_bridge(
        tmp_path, nats_server.url("flow.in"), str(b), "--max-inflight", "16", "--durable", "flow"
    )
    try:
        wait_until(lambda: positions_used(b)[1] - positions_used(b)[0] > 2048, 30, "the ring to fill")
        time.sleep(1.0)
        assert inn.poll() is None

        async def pending() -> int:
            nc = await nats.connect(nats_server.address)
            try:
                info = await nc.jetstream().consumer_info("FLOW", "flow")
                return int(info.num_ack_pending)
            finally:
                await nc.close()

        assert asyncio.run(pending()) <= 16
        got = read_ring(b, count, timeout=30)
        assert got == [message(i % 7) for i in range(count)]
    finally:
        assert stop(inn) == 0, log_of(inn)


def test_restart_skips_what_the_stream_has(tmp_path, nats_server):
    """Records published (with their ids) but still in the ring, as after a
    crash between the acknowledgement and the release: a new bridge
    consumes them without publishing them again."""
    a = tmp_path / "a.ring"
    with RingBuffer(a, 1 << 16) as rb:
        for i in range(10):
            rb.write(message(i))

        class Leave(Exception):
            pass

        with pytest.raises(Leave), rb.peek_many(4, consume_on_error=False) as peeked:
            first = [(pos, bytes(v)) for pos, v in peeked]
            raise Leave  # the four stay in the ring

        async def publish_first() -> None:
            nc = await nats.connect(nats_server.address)
            js = nc.jetstream()
            # A duplicate window this short has passed when the bridge
            # starts: JetStream would store those four again, only the
            # bridge's own skip keeps them out.
            await js.add_stream(name="SKIP", subjects=["skip.x"], duplicate_window=0.1)
            for pos, data in first:
                await js.publish("skip.x", data, headers={bridge.MSG_ID: f"{rb.file_id}:{pos}"})
            await nc.close()

        asyncio.run(publish_first())
        time.sleep(0.3)

        async def run() -> bridge.BridgeStats:
            halt = asyncio.Event()
            task = asyncio.ensure_future(bridge.ring_to_nats(rb, nats_server.url("skip.x"), stop=halt))
            while rb.positions()[0] != rb.positions()[1]:
                await asyncio.sleep(0.05)
            halt.set()
            return await task

        stats = asyncio.run(run())
    assert stats.skipped == 4 and stats.messages == 6
    got = stream_contents(nats_server, "skip.x", 10)
    assert [number(m) for m in got] == list(range(10))


def test_python_coroutines_in_one_loop(tmp_path, nats_server):
    a, b = RingBuffer(tmp_path / "a.ring", 1 << 16), RingBuffer(tmp_path / "b.ring", 1 << 16)
    url = nats_server.url("loop.x")
    notes: list[str] = []

    async def main() -> list[bytes]:
        halt = asyncio.Event()
        out = asyncio.ensure_future(bridge.ring_to_nats(a, url, stop=halt, report=notes.append, interval=0.1))
        inn = asyncio.ensure_future(bridge.nats_to_ring(url, b, stop=halt, report=notes.append, interval=0.1))
        for i in range(500):
            await a.aput(message(i))
        got = [await b.aget(timeout=30) for _ in range(500)]
        await asyncio.sleep(0.3)  # a rate line at least
        halt.set()
        s_out, s_in = await out, await inn
        assert (s_out.messages, s_in.messages) == (500, 500)
        return got

    try:
        got = asyncio.run(main())
    finally:
        a.close()
        b.close()
    assert [number(m) for m in got] == list(range(500))
    assert any("msgs/s" in n for n in notes)


def test_tls_with_a_ca_file(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    server = NatsServer(
        tmp_path / "tls", extra=["--tls", "--tlscert", str(cert_file), "--tlskey", str(key_file)]
    )
    server.scheme = "tls"
    server.start()
    try:
        a = tmp_path / "a.ring"
        with RingBuffer(a, 1 << 16) as rb:
            for i in range(100):
                rb.write(message(i))
        out = start_bridge(tmp_path, str(a), server.url("tls.x"), "--tls-ca", str(ca_file))
        wait_until(lambda: positions_used(a)[0] == positions_used(a)[1], 30, "the ring to drain")
        assert stop(out) == 0, log_of(out)
        # Without the CA the server's certificate is not trusted: one line.
        r = run_cli(str(a), server.url("tls.x"))
        assert r.returncode == 1 and "cannot connect" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        server.stop()


# -- bad input: one line, exit status 1 (2 for usage), never a traceback --


def assert_one_line(r: subprocess.CompletedProcess[str], says: str, status: int = 1) -> None:
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert says in lines[0]
    assert lines[0].startswith("ringbuffer: error: ")


@pytest.fixture
def a_ring(tmp_path):
    path = tmp_path / "a.ring"
    RingBuffer(path, 1 << 16).close()
    return path


def test_bad_url(a_ring):
    assert_one_line(run_cli(str(a_ring), "nats://127.0.0.1:99999/x"), "malformed URL")
    assert_one_line(run_cli(str(a_ring), "nats://127.0.0.1:4222"), "no subject")


def test_unreachable_server(a_ring):
    port = free_port()
    assert_one_line(run_cli(str(a_ring), f"nats://127.0.0.1:{port}/x"), "cannot connect to")
    assert_one_line(run_cli(f"nats://127.0.0.1:{port}/x", str(a_ring)), "Connection refused")


def test_refused_authorisation(tmp_path, a_ring):
    server = NatsServer(tmp_path / "auth", extra=["--user", "alice", "--pass", "s3cret"])
    server.start()
    try:
        r = run_cli(str(a_ring), server.url("x", auth="alice:wrong"))
        assert_one_line(r, "Authorization Violation")
        assert "wrong" not in r.stderr  # the password is never printed
        assert_one_line(run_cli(str(a_ring), server.url("x")), "Authorization Violation")
    finally:
        server.stop()


def test_subject_not_covered_by_the_stream(nats_server, a_ring):
    publish(nats_server, "other.subject", [b"x"], stream="OTHER")
    r = run_cli(str(a_ring), nats_server.url("mine.x"), "--stream", "OTHER")
    assert_one_line(r, "stream OTHER does not cover subject mine.x")
    assert_one_line(run_cli(nats_server.url("mine.x"), str(a_ring), "--stream", "OTHER"), "does not cover")


def test_not_a_ring(tmp_path, nats_server):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a ring at all" * 1000)
    assert_one_line(run_cli(str(junk), nats_server.url("x")), str(junk))
    assert_one_line(run_cli(nats_server.url("x"), str(tmp_path / "missing")), "No such file")


def test_usage_errors(a_ring, tmp_path):
    assert_one_line(run_cli(str(a_ring), str(a_ring)), "one of SOURCE and DESTINATION", status=2)
    assert_one_line(run_cli("nats://h/x", "nats://h/y"), "one of SOURCE and DESTINATION", status=2)
    r = run_cli(str(a_ring), "nats://h/x", "--batch", "0")
    assert r.returncode == 2 and "at least 1" in r.stderr
    assert_one_line(run_cli(str(a_ring), "nats://127.0.0.1:1/a.*"), "wildcard subject")
    assert_one_line(
        run_cli(str(a_ring), "nats://127.0.0.1:1/x", "--creds", str(tmp_path / "none")), "credentials"
    )
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    assert_one_line(run_cli(str(a_ring), "nats://127.0.0.1:1/x", "--tls-ca", str(bad_ca)), "CA certificate")


def test_a_message_the_ring_cannot_hold_stops_the_bridge(tmp_path, nats_server):
    b = tmp_path / "b.ring"
    RingBuffer(b, 4096).close()  # messages up to 2048 bytes
    publish(nats_server, "big.x", [b"ok-1", b"x" * 3000, b"ok-2"], stream="BIG")
    r = run_cli(nats_server.url("big.x"), str(b), "--quiet", timeout=30)
    assert_one_line(r, "is 3,000 bytes, more than 2,048")
    with RingBuffer.open(b) as rb:
        assert rb.drain() == [b"ok-1"]
    publish(nats_server, "empty.x", [b""], stream="EMPTY")
    assert_one_line(run_cli(nats_server.url("empty.x"), str(b), "--quiet", timeout=30), "is empty")


def test_quiet_prints_nothing(tmp_path, nats_server, a_ring):
    with RingBuffer.open(a_ring) as rb:
        rb.write(b"one")
    proc = subprocess.Popen(
        bridge_cmd(str(a_ring), nats_server.url("q.x"), "--quiet", "--interval", "0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: positions_used(a_ring)[0] == positions_used(a_ring)[1], 30, "the ring to drain")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == b"" and err == b""


def test_needs_nats_py(tmp_path, a_ring):
    """Without nats-py installed: a clear line, exit status 2."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "nats.py").write_text("raise ImportError('no nats here')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    r = subprocess.run(
        [sys.executable, "-m", "ringbuffer", "bridge", str(a_ring), "nats://h/x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert_one_line(r, "needs nats-py", status=2)


def test_server_frozen_then_killed_mid_flight_keeps_order(tmp_path, nats_server):
    """Large messages (flights of megabytes, more than nats-py buffers
    without a forced flush), the server frozen (SIGSTOP) as the bridge
    starts publishing, then killed and restarted: the stream holds every
    message once, in ring order (the part of the flight lost with the old
    socket is not overtaken by the rest of it)."""
    size, count = 60_000, 1000
    a = tmp_path / "a.ring"
    big = [i.to_bytes(8, "little") + bytes([i % 251]) * (size - 8) for i in range(count)]
    with RingBuffer(a, 128 << 20) as rb:
        rb.put_many(big)
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        if "bridging" in line:  # said just before the first batch: freeze the server now
            nats_server.proc.send_signal(signal.SIGSTOP)
            threading.Timer(1.5, nats_server.restart).start()  # SIGKILL, then start again

    async def run() -> bridge.BridgeStats:
        halt = asyncio.Event()
        task = asyncio.ensure_future(
            bridge.ring_to_nats(a, nats_server.url("frozen.x"), report=note, stop=halt)
        )
        with RingBuffer.open(a) as rb:
            while rb.positions()[0] != rb.positions()[1]:
                await asyncio.sleep(0.1)
        halt.set()
        return await task

    stats = asyncio.run(run())
    assert stats.reconnects >= 1 and stats.out_of_order == 0, notes
    got = stream_contents(nats_server, "frozen.x", count)
    assert [int.from_bytes(m[:8], "little") for m in got] == list(range(count))


def test_a_ring_without_a_file_id_is_refused(tmp_path, nats_server):
    """A ring made before file ids existed (16 zero bytes at offset 56)
    would share its message ids and default durable with every such ring:
    refused, for both directions."""
    from _helpers import poke

    a = tmp_path / "a.ring"
    RingBuffer(a, 1 << 16).close()
    poke(a, 56, bytes(16))
    assert_one_line(run_cli(str(a), nats_server.url("x")), "has no file id")
    assert_one_line(run_cli(nats_server.url("x"), str(a)), "has no file id")


def test_a_message_over_the_server_max_payload_stops_the_bridge(tmp_path, nats_server):
    a = tmp_path / "a.ring"
    with RingBuffer(a, 4 << 20) as rb:
        rb.write(b"small")
        rb.write(b"x" * (1 << 20) + b"more")  # the server's default max_payload is 1 MiB
    r = run_cli(str(a), nats_server.url("big.out"), "--quiet")
    assert_one_line(r, "the server takes at most 1,048,576 bytes")
    assert "it stays in the ring" in r.stderr
    # The batch stays whole: "small" was published, but is released only
    # with the batch (and a restarted bridge skips it: it is the subject's
    # last message).
    assert_one_line(run_cli(str(a), nats_server.url("big.out"), "--quiet"), "at most 1,048,576 bytes")
    with RingBuffer.open(a) as rb:
        assert [len(m) for m in rb.drain()] == [5, (1 << 20) + 4]
    assert stream_contents(nats_server, "big.out", 1) == [b"small"]


def test_a_push_consumer_or_one_in_use_is_refused(tmp_path, nats_server, a_ring):
    async def setup() -> None:
        nc = await nats.connect(nats_server.address)
        js = nc.jetstream()
        await js.add_stream(name="USED", subjects=["used.x"])
        await js.add_consumer(
            "USED", durable_name="pushy", deliver_subject="somewhere", filter_subject="used.x"
        )
        await nc.close()

    asyncio.run(setup())
    assert_one_line(
        run_cli(nats_server.url("used.x"), str(a_ring), "--durable", "pushy"), "is a push consumer"
    )
    first = start_bridge(tmp_path, nats_server.url("used.x"), str(a_ring), "--durable", "shared")
    try:
        running(first)
        r = run_cli(nats_server.url("used.x"), str(a_ring), "--durable", "shared")
        assert_one_line(r, "is in use by another client")
    finally:
        assert stop(first) == 0
    # Once the first one is gone, the durable is free again.
    second = start_bridge(tmp_path, nats_server.url("used.x"), str(a_ring), "--durable", "shared")
    try:
        running(second)
        time.sleep(1.0)
        assert second.poll() is None, log_of(second)
    finally:
        assert stop(second) == 0


def test_a_signal_while_connecting_is_a_clean_stop(tmp_path, a_ring):
    """SIGTERM while the bridge is still trying to connect: exit status 0."""
    port = free_port()
    with socket.socket() as s:  # accepts, never answers: connecting hangs
        s.bind(("127.0.0.1", port))
        s.listen()
        proc = subprocess.Popen(
            bridge_cmd(str(a_ring), f"nats://127.0.0.1:{port}/x"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


def test_stop_is_heard_while_the_server_is_frozen(tmp_path, nats_server, monkeypatch):
    """A server that stops answering (SIGSTOP: the socket fills, nothing
    errors) with megabytes in flight: the bridge keeps retrying without
    queueing more and more, and a stop request ends it at once, the batch
    left in the ring."""
    a = tmp_path / "a.ring"
    count, size = 40, 900_000
    with RingBuffer(a, 64 << 20) as rb:
        rb.put_many([i.to_bytes(8, "little") + bytes(size - 8) for i in range(count)])
    notes: list[str] = []
    queued: list[int] = []  # nats-py's write buffer after each command queued
    send = nats.aio.client.Client._send_command

    async def spy(self, cmd, priority=False):  # type: ignore[no-untyped-def]
        await send(self, cmd, priority)
        queued.append(self._pending_data_size)

    monkeypatch.setattr(nats.aio.client.Client, "_send_command", spy)

    def note(line: str) -> None:
        notes.append(line)
        if "bridging" in line:
            nats_server.proc.send_signal(signal.SIGSTOP)

    async def run() -> tuple[bridge.BridgeStats, float]:
        halt = asyncio.Event()
        task = asyncio.ensure_future(
            bridge.ring_to_nats(a, nats_server.url("frozen.stop"), report=note, stop=halt, ack_timeout=0.5)
        )
        await asyncio.sleep(5)
        halt.set()
        t0 = time.monotonic()
        stats = await asyncio.wait_for(task, 30)
        return stats, time.monotonic() - t0

    try:
        stats, took = asyncio.run(run())
    finally:
        nats_server.proc.send_signal(signal.SIGCONT)
    assert took < 3, notes
    assert stats.retries >= 3 and stats.messages == 0
    # Retries queue nothing while the socket has not taken what came before:
    # at most one message waits in nats-py's buffer beyond a flight.
    assert max(queued) < (4 << 20) + 2 * size
    with RingBuffer.open(a) as rb:
        assert len(rb.drain()) == count  # nothing was consumed


def test_ring_to_nats_in_a_group_takes_nothing_from_other_readers(tmp_path, nats_server):
    path = tmp_path / "g.ring"
    with RingBuffer(path, 1 << 16) as rb:
        for i in range(10):
            rb.write(message(i))  # before the group exists: it starts at the earliest

        async def run() -> bridge.BridgeStats:
            halt = asyncio.Event()
            task = asyncio.ensure_future(
                bridge.ring_to_nats(path, nats_server.url("grp.x"), group="out", stop=halt)
            )
            while not any(g["name"] == "out" and g["backlog_messages"] == 0 for g in rb.groups()):
                await asyncio.sleep(0.05)
            halt.set()
            return await task

        stats = asyncio.run(run())
        assert stats.messages == 10
        assert [number(m) for m in rb.drain()] == list(range(10))  # the default group has them all still
    assert [number(m) for m in stream_contents(nats_server, "grp.x", 10)] == list(range(10))


def test_bridge_group_on_the_command_line(tmp_path, nats_server):
    path = tmp_path / "g.ring"
    with RingBuffer(path, 1 << 16) as rb:
        for i in range(5):
            rb.write(message(i))
        proc = start_bridge(tmp_path, str(path), nats_server.url("cli.x"), "--group", "cli")

        def sent() -> bool:
            return any(g["name"] == "cli" and g["backlog_messages"] == 0 for g in rb.groups())

        try:
            running(proc)
            wait_until(sent, 30, "the group's backlog to be sent")
        finally:
            assert stop(proc) == 0, log_of(proc)
        assert "ring group 'cli'" in log_of(proc)
        assert len(rb.drain()) == 5
    assert [number(m) for m in stream_contents(nats_server, "cli.x", 5)] == list(range(5))


def test_ring_to_nats_refuses_an_overwrite_ring(tmp_path, nats_server):
    path = tmp_path / "o.ring"
    RingBuffer(path, 1 << 16, overwrite=True).close()
    with pytest.raises(BridgeError, match="overwrite ring"):
        asyncio.run(bridge.ring_to_nats(path, nats_server.url("ow.x")))
    with pytest.raises(ValueError, match="group= is for a ring given by path"), RingBuffer.open(path) as rb:
        asyncio.run(bridge.ring_to_nats(rb, nats_server.url("ow.x"), group="g"))
