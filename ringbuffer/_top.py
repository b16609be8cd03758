"""``ringbuffer top``: a live view of rings' traffic.

Sampling (:class:`Watch`), rates (:func:`rates`) and the layout of a frame
(:func:`frame`) are plain code, tested without a terminal. :func:`run_plain`
prints frames when the output is not a terminal (or for ``--once``);
:func:`run_curses` only draws a frame's lines and reads keys.

Rates are counter differences between two samples (``RingBuffer.stats()``)
over the time between them; a counter found smaller than before (a forged
file) gives no rate rather than a negative one. A ring whose file is deleted
is shown as gone (and its handle closed, so that top does not keep a deleted
ring's memory alive); a file found at the path again, or a different file
(another inode) in its place, is opened afresh.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

from ringbuffer._watch import WatchedRing
from ringbuffer.exceptions import RingBufferError
from ringbuffer.ring import RingBuffer

__all__ = [
    "Line",
    "Rates",
    "Sample",
    "TerminalError",
    "View",
    "Watch",
    "frame",
    "rates",
    "run_curses",
    "run_plain",
]

# Bytes per MB in rates (decimal, as in network and disk rates).
MB = 1_000_000

# How many '#' or '.' the fill bar has when the width is not limited.
_BAR = 40

# Below this many columns for the bar, the fill line goes without it.
_MIN_BAR = 5


class TerminalError(Exception):
    """The terminal cannot be driven (no curses, unknown TERM)."""


class Sample(NamedTuple):
    """One look at a ring: ``stats()`` and ``info()`` at ``at`` (time.monotonic())."""

    at: float
    stats: dict[str, Any]
    info: dict[str, Any]


class Rates(NamedTuple):
    """Per-second rates between two samples; None where no rate can be given
    (a counter that went back)."""

    seconds: float
    in_messages: float | None
    in_bytes: float | None
    out_messages: float | None
    out_bytes: float | None
    parks: float | None
    recoveries: int  # recovered + turns_taken gained in the interval (0 if it went back)


def _recoveries(stats: dict[str, Any]) -> int:
    return int(stats["recovered"]) + int(stats["turns_taken"])


def rates(prev: Sample, cur: Sample) -> Rates | None:
    """The rates between two samples of one ring, None if no time passed."""
    seconds = cur.at - prev.at
    if not seconds > 0:
        return None

    def per_second(key: str) -> float | None:
        gained = cur.stats[key] - prev.stats[key]
        return gained / seconds if gained >= 0 else None

    return Rates(
        seconds=seconds,
        in_messages=per_second("written"),
        in_bytes=per_second("written_bytes"),
        out_messages=per_second("read"),
        out_bytes=per_second("read_bytes"),
        parks=per_second("parks"),
        recoveries=max(0, _recoveries(cur.stats) - _recoveries(prev.stats)),
    )


@dataclass
class View:
    """What a frame shows of one ring (everything optional but the path and state)."""

    path: str
    state: str = "ok"  # "ok", "gone" (no file at the path) or "error" (a file top cannot read)
    problem: str = ""  # why gone, or the error
    since: float | None = None  # wall-clock time it went or failed
    reopened_at: float | None = None  # wall-clock time a new file was found at the path
    capacity: int | None = None
    bytes_used: int | None = None
    waiting_producers: int | None = None
    waiting_consumers: int | None = None
    waiting_for_turn: int | None = None
    attached: int | None = None  # handles open on it, top's own excluded
    recoveries: int | None = None  # recovered + turns_taken since creation
    last_recovery_at: float | None = None  # wall-clock time of the last interval that saw one
    rates: Rates | None = None


class Line(NamedTuple):
    """A line of a frame; ``style`` is "" (plain), "title" or "alert" (a change to notice)."""

    text: str
    style: str = ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class Watch:
    """One ring that top watches: the path's handle (a WatchedRing, reopened
    when the file is replaced), its last sample and what the last frame
    shows of it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._watch = WatchedRing(path)
        self._cur: Sample | None = None
        self._view = View(path)

    def start(self) -> None:
        """Opens the ring and takes a first sample; raises OSError or
        RingBufferError if the path is not a ring now (an error at start,
        unlike a ring that goes while top runs)."""
        self._take(self._watch.attach(), time.monotonic(), time.time())

    def _close(self) -> None:
        self._watch.detach()
        self._cur = None

    def _lose(self, state: str, problem: str, wall: float) -> None:
        """Shows the ring as gone or unreadable (since the time it first was),
        without a handle, samples or numbers."""
        self._close()
        old = self._view
        since = old.since if (old.state, old.problem) == (state, problem) else wall
        self._view = View(self.path, state=state, problem=problem, since=since, reopened_at=old.reopened_at)

    def sample(self, at: float, wall: float) -> None:
        """Takes a sample at ``at`` (time.monotonic()) and ``wall`` (time.time()),
        first reopening the path if its file was replaced or came back."""
        held = self._watch.rb
        try:
            rb = self._watch.current()
        except FileNotFoundError:  # deleted (also between a stat and the open)
            self._lose("gone", "file deleted", wall)
            return
        except (OSError, RingBufferError) as exc:
            self._lose("error", _describe(exc), wall)
            return
        if rb is not held:  # a new handle: samples of the old file are no base for rates
            self._cur = None
            if held is not None or self._view.state != "ok":
                self._view.reopened_at = wall
        try:
            self._take(rb, at, wall)
        except RingBufferError as exc:  # a record that cannot be (a damaged file)
            self._lose("error", _describe(exc), wall)

    def _take(self, rb: RingBuffer, at: float, wall: float) -> None:
        cur = Sample(at, rb.stats(), rb.info(count=False))  # count=False: never takes the read turn
        prev, self._cur = self._cur, cur
        r = rates(prev, cur) if prev is not None else None
        old = self._view
        info = cur.info
        self._view = View(
            self.path,
            reopened_at=old.reopened_at,
            capacity=int(info["capacity"]),
            bytes_used=int(info["bytes_used"]),
            waiting_producers=int(info["waiting_producers"]),
            waiting_consumers=int(info["waiting_consumers"]),
            waiting_for_turn=int(info["waiting_for_turn"]),
            attached=max(0, int(info["attached"]) - 1),  # top's own handle is not news
            recoveries=_recoveries(cur.stats),
            last_recovery_at=wall if r is not None and r.recoveries else old.last_recovery_at,
            rates=r,
        )

    def view(self) -> View:
        return self._view

    def close(self) -> None:
        self._close()


# -- formatting ---------------------------------------------------------------


def _figure(x: float | None) -> str:
    """A rate in at most 7 characters, to about 3 significant digits: '0',
    '<0.01', '4.56', '45.6', '4567', '45.7k', ..., '18.4E', then '1.8e+21';
    '-' for no rate."""
    if x is None or not x >= 0:  # NaN too
        return "-"
    if x == 0:
        return "0"
    if x < 0.01:
        return "<0.01"
    if x < 9999.5:
        return _digits(x)
    for unit in "kMGTPE":
        x /= 1000
        if x < 999.5:
            return _digits(x) + unit
    return f"{x * 1e18:.1e}"


def _digits(x: float) -> str:
    return f"{x:.2f}" if x < 9.995 else f"{x:.1f}" if x < 99.95 else f"{x:.0f}"


def _size(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units: a ring's capacity is a power of two)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1023.95:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} PiB"


def _clock(wall: float) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(wall))
    except (OverflowError, OSError, ValueError):
        return "?"


def _fit_left(text: str, width: int) -> str:
    """``text`` in ``width`` characters, keeping its end (a path's file name)."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[len(text) - width :] if width > 0 else ""
    return "..." + text[len(text) - (width - 3) :]


def _printable(text: str) -> str:
    """``text`` with control and undecodable characters as '?' (a path may hold any byte)."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in text)


def _bar(fraction: float, width: int) -> str:
    full = round(fraction * width)
    if fraction > 0 and full == 0:
        full = 1  # something is there: show it
    return "[" + "#" * full + "." * (width - full) + "]"


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _rows(parts: Sequence[str], width: int | None) -> list[str]:
    """``parts`` on one indented line, three spaces apart, or on as many
    lines as ``width`` needs (a part longer than a line is cut later)."""
    lines = ["  " + parts[0]]
    for part in parts[1:]:
        if width is None or len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += "   " + part
        else:
            lines.append("  " + part)
    return lines


def _fill(used: int, capacity: int, width: int | None) -> str:
    """The fill line: a bar as wide as fits (up to _BAR), the percentage and
    the amounts; the amounts, then the bar, go first when the line is narrow."""
    fraction = min(1.0, max(0.0, used / capacity)) if capacity > 0 else 0.0
    percent = f"{100 * fraction:5.1f}%"
    for amount in (f"{percent}  {_size(used)} of {_size(capacity)}", percent):
        bar = _BAR if width is None else min(_BAR, width - len("  fill [] ") - 1 - len(amount))
        if bar >= _MIN_BAR:
            return f"  fill {_bar(fraction, bar)}  {amount}"
    return f"  fill {percent}"


def block(v: View, width: int | None) -> list[Line]:
    """The lines of one ring; ``width`` None for no limit (plain output)."""
    path = _printable(v.path)
    if v.state != "ok":
        status = f"GONE since {_clock(v.since or 0)}" if v.state == "gone" else "ERROR"
        title = f"{_fit_left(path, max(12, width - len(status) - 2)) if width else path}  {status}"
        why = _printable(v.problem) + ("; watching for it to come back" if v.state == "gone" else "")
        return [Line(title, "alert"), *(Line(text) for text in _rows([why], width))]
    note = f"  (reopened at {_clock(v.reopened_at)}: a new file)" if v.reopened_at is not None else ""
    title = (_fit_left(path, max(12, width - len(note))) if width else path) + note
    r = v.rates
    if r is None:
        r = Rates(0.0, None, None, None, None, None, 0)
    mb_in = None if r.in_bytes is None else r.in_bytes / MB
    mb_out = None if r.out_bytes is None else r.out_bytes / MB
    io = [
        f"in  {_figure(r.in_messages):>6} msg/s {_figure(mb_in):>6} MB/s",
        f"out {_figure(r.out_messages):>6} msg/s {_figure(mb_out):>6} MB/s",
    ]
    waiting = [
        f"waiting  producers {_count(v.waiting_producers)}",
        f"consumers {_count(v.waiting_consumers)}",
        f"for turn {_count(v.waiting_for_turn)}",
        f"attached {_count(v.attached)}",
    ]
    recovered = f"recoveries {_count(v.recoveries)}"
    if r.recoveries:
        recovered += f" (+{r.recoveries})"
    if v.last_recovery_at is not None:
        recovered += f", last at {_clock(v.last_recovery_at)}"
    health = [f"parks/s {_figure(r.parks)}", recovered]
    return [
        Line(title, "title"),
        *(Line(text) for text in _rows(io, width)),
        Line(_fill(v.bytes_used or 0, v.capacity or 0, width)),
        *(Line(text) for text in _rows(waiting, width)),
        *(Line(text, "alert" if r.recoveries else "") for text in _rows(health, width)),
    ]


def frame(
    views: Sequence[View], width: int | None, wall: float, interval: float, keys: str = ""
) -> list[Line]:
    """The lines of a frame: a header, then a block per ring, each line at most
    ``width`` characters (None: no limit)."""
    rings = f"{len(views)} ring" + ("s" if len(views) != 1 else "")
    header = f"ringbuffer top   {_clock(wall)}   every {interval:g} s   {rings}"
    if keys:
        header += f"   {keys}"
    lines = [Line(header, "title")]
    for v in views:
        lines.append(Line(""))
        lines += block(v, width)
    if width is not None:
        lines = [Line(line.text[: max(0, width)], line.style) for line in lines]
    return lines


# -- running ------------------------------------------------------------------


def _sample_all(watches: Sequence[Watch]) -> list[View]:
    at, wall = time.monotonic(), time.time()
    for w in watches:
        w.sample(at, wall)
    return [w.view() for w in watches]


def _sleep_until(deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


def run_plain(
    watches: Sequence[Watch], interval: float, once: bool, out: TextIO, width: int | None = None
) -> int:
    """Prints a frame every ``interval`` seconds (each after a full interval, so
    its rates are real), frames separated by a blank line; with ``once`` one
    frame and returns 0. Every ring was sampled once by Watch.start()."""
    deadline = time.monotonic()
    first = True
    while True:
        deadline += interval
        _sleep_until(deadline)
        views = _sample_all(watches)
        text = "\n".join(line.text for line in frame(views, width, time.time(), interval))
        out.write(("" if first else "\n") + text + "\n")
        out.flush()
        first = False
        if once:
            return 0
        if time.monotonic() > deadline + interval:
            deadline = time.monotonic()  # fell behind (a stopped process): no burst of frames


def run_curses(watches: Sequence[Watch], interval: float) -> int:
    """The live view: redraws every ``interval`` seconds and on a resize; 'q'
    returns 0. curses.wrapper restores the terminal however this ends
    (KeyboardInterrupt included)."""
    try:
        import curses
    except ImportError as exc:
        raise TerminalError(f"no curses in this Python ({exc}): use --once or redirect the output") from None
    try:
        return int(curses.wrapper(_loop, curses, watches, interval))
    except curses.error as exc:
        term = os.environ.get("TERM", "")
        raise TerminalError(
            f"cannot drive this terminal (TERM={term!r}: {exc}): use --once or redirect the output"
        ) from None


def _loop(screen: Any, curses: Any, watches: Sequence[Watch], interval: float) -> int:
    try:
        curses.curs_set(0)
    except curses.error:
        pass  # a terminal that cannot hide the cursor
    styles = {"": curses.A_NORMAL, "title": curses.A_BOLD, "alert": curses.A_BOLD | curses.A_REVERSE}
    views = [w.view() for w in watches]  # Watch.start() took the first samples
    draw = _drawer(screen, curses, styles, interval)
    draw(views)
    deadline = time.monotonic() + interval
    while True:
        screen.timeout(max(0, math.ceil((deadline - time.monotonic()) * 1000)))
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return 0
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            draw(views)
            continue
        now = time.monotonic()
        if now >= deadline:
            views = _sample_all(watches)
            draw(views)
            deadline += interval
            if deadline <= now:  # fell behind (a stopped process): no burst of samples
                deadline = now + interval


def _drawer(
    screen: Any, curses: Any, styles: dict[str, int], interval: float
) -> Callable[[list[View]], None]:
    encoding = getattr(screen, "encoding", None) or "utf-8"

    def draw(views: list[View]) -> None:
        height, columns = screen.getmaxyx()
        # One column short: a character in the bottom-right cell moves the
        # cursor past the screen's end, which curses reports as an error.
        width = max(0, columns - 1)
        lines = frame(views, width, time.time(), interval, keys="q quits")
        if len(lines) > height > 0:
            more = len(lines) - height + 1
            cut = Line(f"... {more} more lines: enlarge the window"[:width], "alert")
            lines = [*lines[: height - 1], cut]
        screen.erase()
        for y, line in enumerate(lines[: max(0, height)]):
            text = line.text.encode(encoding, "replace").decode(encoding)
            try:
                screen.addstr(y, 0, text, styles[line.style])
            except curses.error:
                pass  # the terminal shrank under us: the next resize redraws
        screen.refresh()

    return draw
