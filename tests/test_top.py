"""``ringbuffer top`` (ringbuffer/_top.py): frames laid out without a
terminal, plain frames from a subprocess (``--once``, or an output that is
not a terminal), and the live view in a real terminal under tmux."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from _helpers import (
    CLI,
    COUNTERS,
    OFF_SLOTS_USED,
    SLOT_OFF_COUNT_OWN,
    assert_ok,
    kill_a_reader_inside_peek,
    poke_u32,
    poke_u64,
    run,
    slot_offset,
    start,
    wait_for,
)

from ringbuffer import RingBuffer
from ringbuffer._top import Rates, Sample, View, frame, rates

# A process writing messages of `size` bytes and reading them back, paced so
# that its rate at time t is `rate + ramp * t` messages per second (a ramp
# makes the rates of successive intervals differ).
PUMP = """
import sys, time
from ringbuffer import RingBuffer
path, rate, ramp, size = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
msg = b"p" * size
with RingBuffer.open(path) as rb:
    t0, n = time.monotonic(), 0
    while True:
        t = time.monotonic() - t0
        due = int(rate * t + ramp * t * t / 2)
        while n < due:
            rb.put(msg)
            rb.get()
            n += 1
        time.sleep(0.002)
"""


@pytest.fixture
def pump(request):
    """pump(path, rate, ramp=0, size=100): starts a pump process on the ring
    at path (killed after the test) once it has written."""
    procs = []

    def begin(path, rate: float, ramp: float = 0, size: int = 100) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", PUMP, str(path), str(rate), str(ramp), str(size)])
        procs.append(proc)
        with RingBuffer.open(path) as rb:
            wait_for(lambda: rb.stats()["written"] > 0)
        return proc

    yield begin
    for proc in procs:
        proc.kill()
        proc.wait(10)


def make_ring(path, size: int = 1 << 20) -> None:
    RingBuffer(path, size).close()


# -- reading frames ----------------------------------------------------------

_UNITS = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def figure(text: str) -> float | None:
    """A figure as top prints it ('-', '<0.01', '4.56', '45.7k') as a number."""
    if text == "-":
        return None
    if text == "<0.01":
        return 0.005
    if text[-1] in _UNITS:
        return float(text[:-1]) * _UNITS[text[-1]]
    return float(text)


def frames(text: str) -> list[str]:
    """The frames of plain output (each starts with its header)."""
    return ["ringbuffer top" + f for f in text.split("ringbuffer top")[1:]]


def ring_block(screen: str, name: str) -> str | None:
    """The block of the ring whose title line holds name (the last block if
    several frames), up to the next blank line."""
    found = None
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if name in line and not line.startswith(" "):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].strip()), len(lines))
            found = "\n".join(lines[i:end])
    return found


def traffic(block: str) -> dict[str, float | None]:
    """The rates of a ring's block: in/out messages and MB per second."""
    got = {}
    for way in ("in", "out"):
        m = re.search(rf"(?m)(?:^|\s){way} +(\S+) msg/s +(\S+) MB/s", block)
        assert m, block
        got[f"{way}_messages"], got[f"{way}_mb"] = figure(m.group(1)), figure(m.group(2))
    return got


def no_negative_figure(text: str) -> None:
    """No minus sign before a digit (a dash in a date or a path is not one)."""
    assert not re.search(r"(?<![\w.])-\d", text), text


# -- frames without a terminal -------------------------------------------------


def sample(at: float, **counts: int) -> Sample:
    stats = dict.fromkeys(COUNTERS, 0)
    stats.update(counts)
    return Sample(at, stats, {})


def test_rates_are_counter_differences_over_the_time_between_samples():
    r = rates(
        sample(10.0, written=100, written_bytes=1000, read=50, read_bytes=500, parks=1, recovered=1),
        sample(12.0, written=300, written_bytes=5000, read=250, read_bytes=2500, parks=5, turns_taken=2),
    )
    assert r == Rates(2.0, 100.0, 2000.0, 100.0, 1000.0, 2.0, 1)


def test_a_counter_that_went_back_gives_no_rate_never_a_negative_one():
    r = rates(sample(0.0, written=10**6, read=10, recovered=5), sample(1.0, written=3, read=20))
    assert r is not None
    assert r.in_messages is None and r.out_messages == 10.0
    assert r.recoveries == 0
    assert rates(sample(1.0), sample(1.0)) is None  # no time passed


def view(**kw) -> View:
    base = dict(
        path="/dev/shm/a/rather/long/directory/name/for/the/ring/traffic.ring",
        capacity=1 << 20,
        bytes_used=1 << 19,
        waiting_producers=1,
        waiting_consumers=2,
        waiting_for_turn=0,
        attached=3,
        recoveries=7,
        last_recovery_at=time.time(),
        rates=Rates(1.0, 12345.0, 1.5e6, 12000.0, 1.4e6, 3.0, 2),
    )
    base.update(kw)
    return View(**base)


VIEWS = [
    view(),
    view(rates=None, last_recovery_at=None),
    view(reopened_at=time.time()),
    view(bytes_used=5 << 20, recoveries=2**64, rates=Rates(1e-9, 1.8e28, 1.8e30, 0.0, None, None, 0)),
    View("/dev/shm/gone.ring", state="gone", problem="file deleted", since=time.time()),
    View("/dev/shm/bad.ring", state="error", problem="not a valid ring buffer file", since=time.time()),
    View("/dev/shm/\udcff\x1b[2J.ring", capacity=4096, bytes_used=0),
]


@pytest.mark.parametrize("width", [*range(0, 130), None])
def test_a_frame_fits_any_width(width):
    lines = frame(VIEWS, width, time.time(), 1.0, keys="q quits")
    for line in lines:
        assert width is None or len(line.text) <= width, (width, line)
        assert line.text.isprintable(), line
        no_negative_figure(line.text)
    text = "\n".join(line.text for line in lines)
    if width is None or width >= 24:
        for name in ("traffic.ring", "gone.ring", "bad.ring"):
            assert name in text, text
    if width is None or width >= 60:
        assert re.search(r"(?m)^  in +12\.3k msg/s +1\.50 MB/s\b", text), text
        assert re.search(r"(?m)( |^  )out +12\.0k msg/s +1\.40 MB/s$", text), text
        assert "GONE since" in text and "ERROR" in text, text


def test_a_narrow_frame_puts_in_and_out_on_lines_of_their_own():
    wide = [line.text for line in frame([view()], 100, 0.0, 1.0)]
    narrow = [line.text for line in frame([view()], 50, 0.0, 1.0)]
    assert any(" in " in t and " out " in t for t in wide), wide
    assert any(t.startswith("  in ") for t in narrow) and any(t.startswith("  out ") for t in narrow), narrow


@pytest.mark.parametrize(
    ("used", "hashes"), [(0, 0), (8, 1), (1 << 18, 10), (1 << 19, 20), (1 << 20, 40), (1 << 30, 40)]
)
def test_the_fill_bar_shows_bytes_used_over_the_capacity(used, hashes):
    lines = [line.text for line in frame([view(bytes_used=used)], None, 0.0, 1.0)]
    fill = next(t for t in lines if t.startswith("  fill"))
    bar = re.search(r"\[([#.]+)\]", fill).group(1)
    assert (len(bar), bar.count("#")) == (40, hashes), fill
    assert bar == "#" * hashes + "." * (40 - hashes)


def test_a_new_recovery_is_highlighted():
    quiet = frame([view(rates=Rates(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0))], 100, 0.0, 1.0)
    alert = frame([view()], 100, 0.0, 1.0)
    assert not any(line.style == "alert" for line in quiet)
    flagged = [line.text for line in alert if line.style == "alert"]
    assert flagged and "recoveries 7 (+2), last at" in flagged[-1], flagged


# -- plain frames from the command ---------------------------------------------


def fill_half(path) -> None:
    with RingBuffer(path, 1 << 20) as rb:
        for _ in range(512):
            rb.write(b"h" * 1016)  # 1024 bytes each with its header: 512 KiB in all


def test_top_once_on_two_rings_shows_real_rates_and_fill_levels(tmp_path, pump):
    busy, half = tmp_path / "busy.ring", tmp_path / "half.ring"
    make_ring(busy)
    fill_half(half)
    pump(busy, rate=2000, size=100)
    with RingBuffer.open(busy) as rb:
        before, t0 = rb.stats()["written"], time.monotonic()
        proc = run("top", busy, half, "--once", "--interval", "1.5")
        real = (rb.stats()["written"] - before) / (time.monotonic() - t0)
    assert_ok(proc)
    out = proc.stdout.decode()
    assert len(frames(out)) == 1, out
    assert real == pytest.approx(2000, rel=0.5)  # the pump keeps its pace
    got = traffic(ring_block(out, str(busy)))
    for way in ("in", "out"):
        assert 0.6 * real <= got[f"{way}_messages"] <= 1.4 * real, (real, out)
        assert got[f"{way}_mb"] == pytest.approx(got[f"{way}_messages"] * 100 / 1e6, rel=0.1, abs=0.01)
    assert re.search(r"(?m)^  waiting .*attached 2$", ring_block(out, str(busy))), out  # pump, rb
    block = ring_block(out, str(half))
    assert traffic(block) == {"in_messages": 0, "in_mb": 0, "out_messages": 0, "out_mb": 0}, block
    assert re.search(r"\[#{20}\.{20}\] +50\.0%  512\.0 KiB of 1\.0 MiB", block), block
    assert re.search(r"attached 0$", block, re.MULTILINE), block


class Lines:
    """Collects a process's standard output lines in a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._collect, args=(stream,), daemon=True)
        self._thread.start()

    def _collect(self, stream) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace"))

    def text(self, since: int = 0) -> str:
        return "".join(self.lines[since:])

    def wait(self, pattern: str, since: int = 0, timeout: float = 15) -> str:
        """Waits for the output after line ``since`` to match ``pattern``."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text(since), re.MULTILINE):
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.text(since)}"
            time.sleep(0.02)
        return self.text(since)


@pytest.fixture
def plain_top(request):
    """plain_top(*paths, interval=0.2): `ringbuffer top` writing to a pipe
    (frames of plain lines); the test ends it with Ctrl-C, or it is killed."""
    procs = []

    def begin(*paths, interval: float = 0.2) -> tuple[subprocess.Popen, Lines]:
        proc = start("top", *paths, "--interval", interval, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc, Lines(proc.stdout)

    yield begin
    for proc in procs:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def ctrl_c(proc: subprocess.Popen) -> None:
    """Ends a top with Ctrl-C: exit status 130, nothing on standard error."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130
    assert proc.stderr.read() == b""


def test_top_shows_a_deleted_ring_as_gone_and_opens_a_new_file_at_its_path(tmp_path, plain_top):
    path, other = tmp_path / "r.ring", tmp_path / "other.ring"
    make_ring(path, 4096)
    make_ring(other, 4096)
    proc, out = plain_top(path, other)
    out.wait(r"^  fill .* of 4\.0 KiB")
    mark = len(out.lines)
    os.unlink(path)
    text = out.wait(r"^\S*r\.ring  GONE since \d\d:\d\d:\d\d$", since=mark)
    assert "file deleted; watching for it to come back" in text
    assert ring_block(frames(text)[-1], str(other)).count("\n") >= 4  # the other ring is still shown
    mark = len(out.lines)
    make_ring(path, 8192)  # a new file at the path
    reopened = r"^\S*r\.ring  \(reopened at \d\d:\d\d:\d\d: a new file\)$"
    out.wait(reopened + r"\n.*\n  fill .* of 8\.0 KiB", since=mark)
    mark = len(out.lines)
    assert_ok(run("create", path, "--size", "16k", "--remove"))  # replaced in one step: never gone
    text = out.wait(r"^  fill .* of 16\.0 KiB", since=mark)
    assert "GONE" not in text
    ctrl_c(proc)


def forge_counters(path, slot: int, value: int, counters=("written", "written_bytes", "read", "read_bytes")):
    for counter in counters:
        poke_u64(path, slot_offset(slot, SLOT_OFF_COUNT_OWN + 8 * COUNTERS.index(counter)), value)
    poke_u32(path, OFF_SLOTS_USED, max(slot + 1, 1))


def test_top_of_a_forged_file_is_sane(tmp_path, plain_top):
    """Counters that sum past 2^64 (saturated), then that go back: no
    error, no negative rate."""
    path = tmp_path / "r.ring"
    make_ring(path, 4096)
    forge_counters(path, 9, 2**64 - 1, counters=COUNTERS)
    proc = run("top", path, "--once", "--interval", "0.2")
    assert_ok(proc)
    block = ring_block(proc.stdout.decode(), str(path))
    assert traffic(block) == {"in_messages": 0, "in_mb": 0, "out_messages": 0, "out_mb": 0}, block
    assert "recoveries 36893488147419103230" in block  # two saturated counters, summed in Python
    no_negative_figure(block)

    proc, out = plain_top(path)
    out.wait(r"^  in +0 msg/s")
    mark = len(out.lines)
    forge_counters(path, 9, 0, counters=COUNTERS)  # every sum drops
    text = out.wait(r"^  in +- msg/s +- MB/s +out +- msg/s +- MB/s$", since=mark)
    no_negative_figure(text)
    out.wait(r"^  in +0 msg/s", since=len(out.lines))  # then rates again
    ctrl_c(proc)
    no_negative_figure(out.text())


def test_top_marks_a_crash_recovery(tmp_path, plain_top):
    path = tmp_path / "r.ring"
    make_ring(path, 4096)
    proc, out = plain_top(path, interval=0.3)
    out.wait(r"recoveries 0$")
    with RingBuffer.open(path) as rb:
        rb.write(b"taken over")
        rb.stall_timeout = 0.01
        kill_a_reader_inside_peek(path)
        assert rb.get(timeout=5) == b"taken over"  # takes the dead consumer's turn over
    out.wait(r"^  parks/s \S+   recoveries 1 \(\+1\), last at \d\d:\d\d:\d\d$")
    out.wait(r"^  parks/s \S+   recoveries 1, last at \d\d:\d\d:\d\d$")  # the next interval: no new one
    ctrl_c(proc)


# -- the live view in a terminal (tmux) ----------------------------------------


class Tmux:
    """A tmux server of its own (its own socket) running one command in a
    detached session. The command runs under a shell that writes its exit
    status to a file when it ends (tmux 3.3a's #{pane_dead_status} is at
    times never set), then shows the terminal's modes."""

    def __init__(self, tmp_path) -> None:
        self.socket = f"rbtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set -g status off\nset -g default-terminal screen\n")
        self.status = tmp_path / "exit-status"
        self.socket_path = ""
        self.cwd = tmp_path
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True,
            timeout=10,
            env=self.env,
            check=False,
        )
        assert proc.returncode == 0, (args, proc.stderr.decode())
        return proc.stdout.decode()

    def start(self, argv: list, width: int = 120, height: int = 40) -> None:
        # `trap : INT`: Ctrl-C reaches the command while the shell waits on
        # (a handler, unlike an ignored signal, is not inherited).
        # Then the terminal's modes (stty -a), and the pane stays open: if
        # the command left curses' modes or its screen, they show.
        script = f'trap : INT; "$@"; echo $? > {shlex.quote(str(self.status))}; stty -a; exec sleep 600'
        command = shlex.join(["sh", "-c", script, "sh", *map(str, argv)])
        size = ["-x", str(width), "-y", str(height)]
        self("new-session", "-d", "-s", "top", *size, "-c", str(self.cwd), command)
        self.socket_path = self("display-message", "-p", "#{socket_path}").strip()

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_screen(self, predicate, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            assert "Traceback" not in screen, screen
            if predicate(screen):
                return screen
            assert time.monotonic() < deadline, f"timed out; the screen:\n{screen}"
            time.sleep(0.05)

    def exit_status(self, timeout: float = 5) -> int:
        """Waits for the command to end; its exit status."""
        deadline = time.monotonic() + timeout
        while not (self.status.exists() and self.status.read_text().endswith("\n")):
            assert time.monotonic() < deadline, f"still running after {timeout} s:\n{self.screen()}"
            time.sleep(0.05)
        return int(self.status.read_text())

    def assert_restored(self) -> None:
        """After the command: its screen is gone, and the terminal echoes
        and reads lines again (curses had turned both off)."""
        screen = self.wait_screen(lambda s: "speed" in s)  # stty -a's first line
        assert "ringbuffer top" not in screen, screen
        assert re.search(r"(?<![-\w])icanon(?!\w)", screen), screen
        assert re.search(r"(?<![-\w])echo(?!\w)", screen), screen

    def kill(self) -> None:
        kill = ["tmux", "-L", self.socket, "kill-server"]
        subprocess.run(kill, capture_output=True, timeout=10, check=False)
        if self.socket_path:  # the server leaves it behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("the live view's tests need tmux: apt-get install tmux (.ci/run installs it)")
    t = Tmux(tmp_path)
    yield t
    t.kill()


def rate_in(screen: str, name: str) -> float | None:
    block = ring_block(screen, name)
    return traffic(block)["in_messages"] if block else None


def test_top_live_in_a_terminal_refreshes_resizes_and_quits_with_q(tmp_path, tmux, pump):
    path = tmp_path / "live.ring"
    make_ring(path)
    pump(path, rate=1000, ramp=400)
    tmux.start([*CLI, "top", path])
    first = tmux.wait_screen(lambda s: bool(rate_in(s, str(path))))
    time.sleep(1.5)
    second = tmux.wait_screen(lambda s: bool(rate_in(s, str(path))))
    assert str(path) in first and str(path) in second
    a, b = rate_in(first, str(path)), rate_in(second, str(path))
    assert a > 0 and b > 0 and a != b, (first, second)  # the pump speeds up by 400 messages/s each second
    assert "q quits" in second

    tmux("resize-window", "-t", "top", "-x", "60")
    narrow = tmux.wait_screen(lambda s: re.search(r"(?m)^  out +\S+ msg/s", s) is not None)
    assert max(map(len, narrow.splitlines())) <= 60
    assert "live.ring" in narrow and bool(rate_in(narrow, "live.ring"))

    tmux("send-keys", "-t", "top", "q")
    assert tmux.exit_status() == 0
    tmux.assert_restored()


def test_top_redraws_at_once_when_the_terminal_is_resized(tmp_path, tmux):
    """Long before the next refresh (60 s): the resize itself redraws."""
    path = tmp_path / "r.ring"
    make_ring(path)
    tmux.start([*CLI, "top", path, "--interval", "60"])
    wide = tmux.wait_screen(lambda s: "r.ring" in s and "ringbuffer top" in s)
    assert re.search(r"(?m)^  in .* out ", wide), wide
    tmux("resize-window", "-t", "top", "-x", "50")
    narrow = tmux.wait_screen(lambda s: re.search(r"(?m)^  out ", s) is not None, timeout=5)
    assert "r.ring" in narrow
    tmux("send-keys", "-t", "top", "q")
    assert tmux.exit_status() == 0


def test_top_in_a_terminal_ends_cleanly_on_ctrl_c(tmp_path, tmux):
    path = tmp_path / "r.ring"
    make_ring(path)
    tmux.start([*CLI, "top", path])
    tmux.wait_screen(lambda s: "r.ring" in s and "ringbuffer top" in s)
    tmux("send-keys", "-t", "top", "C-c")
    assert tmux.exit_status() == 130
    tmux.assert_restored()


def test_top_in_a_terminal_shows_a_deleted_ring_as_gone(tmp_path, tmux, pump):
    kept, doomed = tmp_path / "kept.ring", tmp_path / "doomed.ring"
    make_ring(kept)
    make_ring(doomed)
    pump(kept, rate=500)
    tmux.start([*CLI, "top", kept, doomed], width=100, height=30)
    tmux.wait_screen(lambda s: bool(rate_in(s, "kept.ring")) and "doomed.ring" in s)
    os.unlink(doomed)
    screen = tmux.wait_screen(lambda s: re.search(r"doomed\.ring  GONE since", s) is not None)
    assert bool(rate_in(screen, "kept.ring")), screen
    tmux("send-keys", "-t", "top", "q")
    assert tmux.exit_status() == 0


def test_top_in_a_tiny_terminal_does_not_crash(tmp_path, tmux):
    path = tmp_path / "r.ring"
    make_ring(path)
    tmux.start([*CLI, "top", path, path, path], width=30, height=8)
    tmux.wait_screen(lambda s: "more lines" in s)
    for width, height in ((12, 3), (1, 1), (80, 24)):
        tmux("resize-window", "-t", "top", "-x", str(width), "-y", str(height))
        time.sleep(0.3)
    tmux.wait_screen(lambda s: s.count("r.ring") == 3)
    tmux("send-keys", "-t", "top", "q")
    assert tmux.exit_status() == 0


def test_top_in_a_terminal_curses_does_not_know_is_one_line(tmp_path, tmux):
    path = tmp_path / "r.ring"
    make_ring(path)
    tmux.start(["env", "TERM=no-such-terminal", *CLI, "top", path])
    assert tmux.exit_status() == 1
    screen = tmux.screen()
    assert "ringbuffer: error: cannot drive this terminal (TERM='no-such-terminal'" in screen, screen
    assert "--once" in screen and "Traceback" not in screen


_PEEK_AND_DIE = """
import os, signal, sys
from ringbuffer import RingBuffer
rb = RingBuffer.open(sys.argv[1])
with rb.peek():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_top_never_takes_the_read_turn_not_even_a_dead_consumers(tmp_path):
    """Watching is not consuming: top reads the fill level and the waiters
    without counting the messages (info(count=False)), so it neither holds
    consumers up nor takes over a dead consumer's turn (a recovery action
    that belongs to readers)."""
    path = tmp_path / "r.ring"
    with RingBuffer(path, 4096) as rb:
        rb.write_many([b"held", b"next"])
        holder = subprocess.Popen([sys.executable, "-c", _PEEK_AND_DIE, str(path)])
        holder.wait(30)
        assert holder.returncode == -signal.SIGKILL
        assert rb.info(count=False)["read_turn_pid"] == holder.pid
        # Two samples 0.3 s apart: past top's stall timeout (0.1 s), so a
        # top that counted messages would find the turn stuck and dead.
        proc = run("top", path, "--once", "--interval", "0.3")
        assert proc.returncode == 0, proc.stderr
        assert rb.info(count=False)["read_turn_pid"] == holder.pid
        assert rb.stats()["turns_taken"] == 0
