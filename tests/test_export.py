"""``ringbuffer export`` (ringbuffer/_export.py, wired in ringbuffer/cli.py),
run as a subprocess serving on 127.0.0.1 and scraped with urllib; the text
is parsed with prometheus_client's own parser."""

from __future__ import annotations

import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from _helpers import (
    OFF_SLOTS_USED,
    SLOT_OFF_COUNT_OWN,
    SLOT_OFF_COUNT_SHARED,
    poke_u32,
    poke_u64,
    sigint_default,
    slot_offset,
)
from prometheus_client.parser import text_string_to_metric_families

from ringbuffer import BufferEmpty, BufferFull, RingBuffer
from ringbuffer._export import COUNTERS as COUNTER_SPECS
from ringbuffer._export import GAUGES as GAUGE_SPECS
from ringbuffer._export import UP

CLI = [sys.executable, "-m", "ringbuffer"]
README = Path(__file__).resolve().parent.parent / "README.md"
ALL_SPECS = (*COUNTER_SPECS, *GAUGE_SPECS, UP)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (another process may take it before
    the exporter binds it: Exporter.start retries)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Exporter:
    """A running ``ringbuffer export`` and what it wrote."""

    def __init__(self, proc: subprocess.Popen, listen: str) -> None:
        self.proc = proc
        self.url = f"http://{listen}/metrics"

    @classmethod
    def start(cls, *rings, host: str = "127.0.0.1") -> Exporter:
        for _ in range(5):
            port = free_port(host)
            listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            proc = subprocess.Popen(
                [*CLI, "export", *map(str, rings), "--listen", listen],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=sigint_default,
            )
            line = read_line(proc.stdout, 20)
            if line.startswith(b"serving "):
                assert line == f"serving http://{listen}/metrics for {len(set(rings))} ring(s)\n".encode()
                return cls(proc, listen)
            err = proc.communicate(timeout=10)[1].decode()
            assert "Address already in use" in err, err  # taken meanwhile: another port
        raise AssertionError("no free port in 5 tries")

    def scrape(self) -> dict[str, dict[str, float]]:
        """{sample name: {ring label: value}}, checking each family's form."""
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain")
            text = reply.read().decode()
        samples: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            assert family.documentation, family.name
            for s in family.samples:
                assert set(s.labels) == {"ring"}, s
                assert s.labels["ring"] not in samples.setdefault(s.name, {}), s  # no duplicates
                samples[s.name][s.labels["ring"]] = s.value
        return samples

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Sends sig; returns the exit status and standard error."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err.decode()


def read_line(stream, timeout: float) -> bytes:
    """The next line of a child's pipe, or b"" if it ends or stays silent."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


@pytest.fixture
def exporters():
    """Starts exporters (``exporters(*rings)``) and stops them after the test."""
    started: list[Exporter] = []

    def start(*rings, **kw) -> Exporter:
        exp = Exporter.start(*rings, **kw)
        started.append(exp)
        return exp

    yield start
    for exp in started:
        if exp.proc.poll() is None:
            exp.proc.kill()
            exp.proc.communicate(timeout=10)


def expected(rb: RingBuffer) -> dict[str, float]:
    """What the exporter should report for rb's ring, with rb's own handle
    (and any other of this test's) open: the exporter's is excluded."""
    values = {**rb.stats(), **rb.info(count=False), "up": 1}
    values["attached"] -= 1
    return {spec.name: values[spec.key] for spec in ALL_SPECS}


def of_ring(samples: dict[str, dict[str, float]], ring) -> dict[str, float]:
    return {name: by_ring[str(ring)] for name, by_ring in samples.items() if str(ring) in by_ring}


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def traffic(rb: RingBuffer, other: RingBuffer, n: int) -> None:
    """Every kind of event the counters count, n messages' worth."""
    for i in range(n):
        rb.write(b"m" * (1 + i))
    assert len(other.read_many(n // 2)) == n // 2
    with pytest.raises(KeyError), rb.reserve(5):
        raise KeyError  # aborted
    while rb.try_write(b"f" * 1000):
        pass  # full once
    other.drain()
    assert other.try_read() is None  # empty
    with pytest.raises(BufferEmpty):
        other.get(timeout=0.02)  # parks
    woken = threading.Thread(target=other.get, kwargs={"timeout": 10})
    woken.start()
    wait_until(lambda: rb.info(count=False)["waiting_consumers"] == 1)
    rb.write(b"wake")  # wakes
    woken.join(10)
    rb.write(b"left in the ring")


# -- what it serves ----------------------------------------------------------------


def test_every_metric_equals_the_rings_stats_after_known_traffic(tmp_path, exporters):
    a, b = tmp_path / "a.ring", tmp_path / "b.ring"
    with RingBuffer(a, 4096) as ra, RingBuffer(b, 1 << 16) as rb, RingBuffer.open(b) as rb2:
        traffic(ra, ra, 10)
        traffic(rb, rb2, 100)
        exp = exporters(a, b)
        samples = exp.scrape()
        for ring, handle in ((a, ra), (b, rb)):
            want = expected(handle)
            assert of_ring(samples, ring) == want
        want_a = expected(ra)
        assert want_a["ringbuffer_messages_written_total"] > 10 and want_a["ringbuffer_full_total"] >= 1
        assert want_a["ringbuffer_wakes_total"] >= 1 and want_a["ringbuffer_parked_seconds_total"] > 0
        assert expected(rb)["ringbuffer_attached_handles"] == 2  # ra's and rb2, not the exporter's
        assert set(samples) == {spec.name for spec in ALL_SPECS}
    status, err = exp.stop()
    assert (status, err) == (0, "")


def test_types_and_help_texts(tmp_path, exporters):
    path = tmp_path / "r.ring"
    RingBuffer(path, 4096).close()
    exp = exporters(path)
    with urllib.request.urlopen(exp.url, timeout=10) as reply:
        families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
    for spec in COUNTER_SPECS:
        family = families[spec.name[: -len("_total")]]
        assert family.type == "counter" and family.documentation == spec.help
    for spec in (*GAUGE_SPECS, UP):
        assert families[spec.name].type == "gauge" and families[spec.name].documentation == spec.help
    assert len(families) == len(ALL_SPECS)  # nothing else: no process or platform metrics


def test_counters_never_go_back_while_traffic_runs(tmp_path, exporters):
    path = tmp_path / "r.ring"
    stop = threading.Event()

    def produce(rb: RingBuffer) -> None:
        while not stop.is_set():
            try:
                rb.put(b"x" * 100, timeout=0.01)
            except BufferFull:
                pass

    def consume(rb: RingBuffer) -> None:
        while not stop.is_set():
            try:
                rb.get_many(50, timeout=0.01)
            except BufferEmpty:
                pass

    with RingBuffer(path, 1 << 16) as rb:
        exp = exporters(path)
        threads = [threading.Thread(target=produce, args=(rb,)), threading.Thread(target=consume, args=(rb,))]
        for t in threads:
            t.start()
        try:
            last: dict[str, float] = {}
            for _ in range(20):
                now = of_ring(exp.scrape(), path)
                assert now["ringbuffer_up"] == 1
                for spec in COUNTER_SPECS:
                    assert now[spec.name] >= last.get(spec.name, 0), spec.name
                assert 0 <= now["ringbuffer_bytes_used"] <= 1 << 16
                last = now
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert last["ringbuffer_messages_written_total"] > 0


# -- rings that vanish or get replaced --------------------------------------------


@pytest.mark.parametrize("how", ["deleted then created", "replaced (create --remove)"])
def test_a_ring_recreated_at_its_path_is_reopened(tmp_path, exporters, how):
    path = tmp_path / "r.ring"
    with RingBuffer(path, 4096) as old:
        old.write_many([b"a", b"bb", b"ccc"])
        exp = exporters(path)
        before = of_ring(exp.scrape(), path)
        assert before["ringbuffer_messages_written_total"] == 3
        if how.startswith("deleted"):
            os.unlink(path)
            new = RingBuffer(path, 8192)
        else:
            new = RingBuffer(path, 8192, remove=True)
    with new:
        new.write(b"first of the new ring")
        after = of_ring(exp.scrape(), path)
        assert after == expected(new)
        assert after["ringbuffer_up"] == 1 and after["ringbuffer_messages_written_total"] == 1
        assert after["ringbuffer_capacity_bytes"] == 8192
    status, err = exp.stop()
    assert (status, err) == (0, "")  # a replaced ring is no problem to report


def test_a_deleted_ring_reports_up_0_and_nothing_else(tmp_path, exporters):
    gone, kept = tmp_path / "gone.ring", tmp_path / "kept.ring"
    with RingBuffer(gone, 4096) as rg, RingBuffer(kept, 4096) as rk:
        rg.write(b"x")
        rk.write(b"y")
        exp = exporters(gone, kept)
        assert of_ring(exp.scrape(), gone)["ringbuffer_up"] == 1
        os.unlink(gone)
        for _ in range(2):  # the second scrape too (it reports a problem once)
            samples = exp.scrape()
            assert of_ring(samples, gone) == {"ringbuffer_up": 0}
            assert of_ring(samples, kept) == expected(rk)
        # The exporter let go of the deleted file (its memory is freed).
        maps = Path(f"/proc/{exp.proc.pid}/maps").read_text()
        assert str(gone) not in maps
        assert str(kept) in maps
        RingBuffer(gone, 4096).close()
        assert of_ring(exp.scrape(), gone)["ringbuffer_up"] == 1
    status, err = exp.stop()
    assert status == 0
    assert err == (
        f"ringbuffer: warning: {gone}: No such file or directory (ringbuffer_up 0 until it can be read)\n"
        f"ringbuffer: {gone}: readable again\n"
    )


def test_a_scrape_never_takes_the_read_turn(tmp_path, exporters):
    """Not even a dead consumer's: the exporter reads no record (info without
    the count); a consumer holding the turn in a peek is not waited for."""
    path = tmp_path / "r.ring"
    with RingBuffer(path, 4096) as rb:
        rb.write_many([b"held", b"next"])
        holder = subprocess.Popen(
            [sys.executable, "-c", _PEEK_AND_DIE, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        holder.communicate(timeout=30)
        assert holder.returncode == -signal.SIGKILL
        assert rb.info(count=False)["read_turn_pid"] == holder.pid
        exp = exporters(path)
        for _ in range(3):
            time.sleep(0.15)  # past the exporter's stall timeout (0.1 s)
            assert of_ring(exp.scrape(), path)["ringbuffer_up"] == 1
        assert rb.info(count=False)["read_turn_pid"] == holder.pid
        assert rb.stats()["turns_taken"] == 0
        rb.stall_timeout = 0
        assert rb.get(timeout=5) == b"held"  # this test's handle takes it over
        assert of_ring(exp.scrape(), path)["ringbuffer_turns_taken_total"] == 1


_PEEK_AND_DIE = """
import os, signal, sys
from ringbuffer import RingBuffer
rb = RingBuffer.open(sys.argv[1])
with rb.peek():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_forged_counters_still_make_a_valid_scrape(tmp_path, exporters):
    path = tmp_path / "forged.ring"
    RingBuffer(path, 4096).close()
    top = (1 << 64) - 1
    poke_u32(path, OFF_SLOTS_USED, 6)  # slots 0-5 are summed
    for slot in (0, 5):
        for i in range(16):
            poke_u64(path, slot_offset(slot, SLOT_OFF_COUNT_OWN + 8 * i), top - i)
            poke_u64(path, slot_offset(slot, SLOT_OFF_COUNT_SHARED + 8 * i), top)
    exp = exporters(path)
    samples = of_ring(exp.scrape(), path)
    assert samples["ringbuffer_up"] == 1
    assert set(samples) == {spec.name for spec in ALL_SPECS}
    for name, value in samples.items():
        assert math.isfinite(value) and value >= 0, (name, value)
    assert samples["ringbuffer_messages_written_total"] == float(top)  # the library saturates the sums
    assert samples["ringbuffer_parked_seconds_total"] == top / 1e9
    status, err = exp.stop()
    assert (status, err) == (0, "")


# -- start-up, arguments, stopping -------------------------------------------------


def test_bad_paths_get_a_line_each_and_up_0(tmp_path, exporters):
    good, missing, text = tmp_path / "good.ring", tmp_path / "missing.ring", tmp_path / "text"
    RingBuffer(good, 4096).close()
    text.write_text("not a ring\n" * 1000)
    exp = exporters(good, missing, text, good)  # a path given twice counts once
    samples = exp.scrape()
    assert samples["ringbuffer_up"] == {str(good): 1, str(missing): 0, str(text): 0}
    assert of_ring(samples, missing) == of_ring(samples, text) == {"ringbuffer_up": 0}
    status, err = exp.stop()
    assert status == 0
    lines = err.splitlines()
    assert len(lines) == 2, err
    until = "(ringbuffer_up 0 until it can be read)"
    assert lines[0] == f"ringbuffer: warning: {missing}: No such file or directory {until}"
    assert lines[1].startswith("ringbuffer: warning: not a valid ring buffer file") and str(text) in lines[1]


def test_no_ring_to_open_is_an_error(tmp_path):
    text = tmp_path / "text"
    text.write_text("not a ring")
    proc = subprocess.run(
        [*CLI, "export", str(tmp_path / "missing"), str(text), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        timeout=30,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("ringbuffer: error: ") for line in lines), err
    assert str(tmp_path / "missing") in lines[0] and str(text) in lines[1]


@pytest.mark.parametrize(
    "listen", ["nohost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "::1:9464", "[::1]", "h:x"]
)
def test_a_malformed_listen_address_is_a_usage_error(tmp_path, listen):
    path = tmp_path / "r.ring"
    RingBuffer(path, 4096).close()
    proc = subprocess.run([*CLI, "export", str(path), "--listen", listen], capture_output=True, timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "--listen" in errors[0] and repr(listen) in errors[0], err


def test_an_address_in_use_is_one_error_line(tmp_path):
    path = tmp_path / "r.ring"
    RingBuffer(path, 4096).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*CLI, "export", str(path), "--listen", f"127.0.0.1:{port}"], capture_output=True, timeout=30
        )
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err == f"ringbuffer: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_ipv6_loopback(tmp_path, exporters):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    path = tmp_path / "r.ring"
    RingBuffer(path, 4096).close()
    exp = exporters(path, host="::1")
    assert exp.url.startswith("http://[::1]:")
    assert exp.scrape()["ringbuffer_up"] == {str(path): 1}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_with_status_0(tmp_path, exporters, sig):
    path = tmp_path / "r.ring"
    RingBuffer(path, 4096).close()
    exp = exporters(path)
    exp.scrape()
    t0 = time.monotonic()
    status, err = exp.stop(sig)
    assert (status, err) == (0, "")
    assert time.monotonic() - t0 < 5


def test_without_prometheus_client_one_line_and_status_2(tmp_path):
    path = tmp_path / "r.ring"
    RingBuffer(path, 4096).close()
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"  # import prometheus_client fails
        "from ringbuffer.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, "export", str(path)], capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        "ringbuffer: error: ringbuffer export needs prometheus_client: "
        "pip install 'ringbuffer-ipc[prometheus]'\n"
    )


def test_the_package_does_not_import_prometheus_client():
    code = (
        "import sys, ringbuffer, ringbuffer.cli\n"
        "ringbuffer.cli.build_parser().parse_args(['export', 'r'])\n"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_readme_lists_every_metric():
    text = README.read_text()
    section = text[text.index("## Command line") :]
    section = section[: section.index("\n## ", 1)]
    rows = dict(re.findall(r"(?m)^\| `(ringbuffer_\w+)` \| (counter|gauge) \|", section))
    want = {spec.name: "counter" for spec in COUNTER_SPECS}
    want.update({spec.name: "gauge" for spec in (*GAUGE_SPECS, UP)})
    assert rows == want
