"""The ``ringbuffer`` command line (also ``python -m ringbuffer``).

    ringbuffer create PATH --size SIZE [--remove] [--mode 0600] [--overwrite] [--no-default-group]
    ringbuffer info PATH [--json]
    ringbuffer groups PATH [--json | --remove NAME | --remove-default]
    ringbuffer stats PATH [--json]
    ringbuffer top RING... [--interval SECONDS] [--once]
    ringbuffer write PATH [--lines | --null | --stdin-raw]
    ringbuffer read PATH [--count N] [--follow | --timeout S] [--lines | --null | --raw]
                         [--group NAME | --subscribe] [--start earliest|latest]
    ringbuffer export RING... [--listen HOST:PORT]
    ringbuffer bridge RING nats://HOST:PORT/SUBJECT [--stream NAME] [--group NAME] [options]
    ringbuffer bridge nats://HOST:PORT/SUBJECT RING [--durable NAME] [options]
    ringbuffer demo [--count N] [--size S]
    ringbuffer bench [--rounds N] [--json FILE]

so that ``seq 1000000 | ringbuffer write /dev/shm/q`` in one terminal and
``ringbuffer read /dev/shm/q --follow | wc -l`` in another just work.

Exit status: 0 success (also when ``read``'s output pipe is closed early,
as with ``| head``, and when ``export`` is stopped by Ctrl-C or SIGTERM), 1 a
runtime error (one line on standard error starting with ``ringbuffer:
error:``), 2 a usage error (also ``export`` without prometheus_client), 130
Ctrl-C, 128 + N another terminating signal N (SIGTERM, SIGHUP).
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import os
import re
import select
import shutil
import signal
import sys
import time
from types import FrameType
from typing import Any, BinaryIO, Callable, NoReturn, TextIO

from ringbuffer.exceptions import BufferEmpty, MessagesLost, RingBufferError
from ringbuffer.ring import RingBuffer, c_version, format_version

__all__ = ["main", "parse_listen", "parse_mode", "parse_size"]

PROG = "ringbuffer"

# Bytes asked of standard input per read when splitting it into messages.
_CHUNK = 1 << 16

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_SIZE_RE = re.compile(r"(\d+)\s*(?:([kmgt])(i?b?)|(b?))", re.IGNORECASE)

DEFAULT_LISTEN = "127.0.0.1:9464"  # 9464: the port of OpenTelemetry's Prometheus exporter

# Subcommands whose arguments go unparsed to another module's main().
_FORWARDED = ("demo", "bench")


class _Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so that blocks unwind (an open
    peek gives back the read turn) before the process exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _MessageTooLong(Exception):
    """A message of standard input does not fit in the ring."""


# -- argument types -----------------------------------------------------------


def parse_size(text: str) -> int:
    """A byte count: ``4096``, ``64k``, ``64M``, ``1GiB``, ``2TB``; units K/M/G/T
    (any case, optionally followed by ``i``, ``iB`` or ``B``) are powers of 1024.

    Raises ValueError for anything else, or for 0.
    """
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"invalid size {text!r} (examples: 4096, 64k, 64M, 1GiB)")
    size = int(m.group(1)) << (10 * _UNITS[(m.group(2) or "").lower()])
    if size == 0:
        raise ValueError("the size must be at least 1 byte")
    return size


def parse_mode(text: str) -> int:
    """Permission bits in octal (``600``, ``0600``, ``0o640``); ValueError otherwise."""
    digits = text.strip()
    if digits[:2].lower() == "0o":
        digits = digits[2:]
    if not digits or not all(c in "01234567" for c in digits):
        raise ValueError(f"invalid mode {text!r}: octal permission bits, such as 0600 or 0640")
    mode = int(digits, 8)
    if mode > 0o7777:
        raise ValueError(f"invalid mode {text!r}: at most 07777")
    return mode


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every IPv4 interface)
    -> (host, port); ValueError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or host.startswith("[") != host.endswith("]"):
        raise ValueError(f"invalid address {text!r}: HOST:PORT, such as {DEFAULT_LISTEN} or [::1]:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"invalid address {text!r}: brackets hold an IPv6 address, as in [::1]:9464")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"invalid address {text!r}: an IPv6 address goes in brackets, as in [::1]:9464")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port in {text!r}: a number from 1 to 65535")
    return host or "0.0.0.0", int(port)


def _argtype(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Wraps a parser so that argparse reports its ValueError message (exit status 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"invalid count {text!r}: a whole number") from None
    if n < 0:
        raise ValueError(f"invalid count {text!r}: at least 0")
    return n


def _positive(text: str) -> int:
    n = _count(text)
    if n < 1:
        raise ValueError(f"invalid count {text!r}: at least 1")
    return n


def _interval(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise ValueError(f"invalid interval {text!r}: a number of seconds") from None
    if not 0 < s < float("inf"):
        raise ValueError(f"invalid interval {text!r}: a finite number of seconds, more than 0")
    return s


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise ValueError(f"invalid timeout {text!r}: a number of seconds") from None
    if not s >= 0 or s == float("inf"):
        raise ValueError(f"invalid timeout {text!r}: a finite number of seconds, at least 0")
    return s


# -- create -------------------------------------------------------------------


def _cmd_create(opts: argparse.Namespace) -> int:
    out = _stdout()
    try:
        rb = RingBuffer(
            opts.path,
            opts.size,
            remove=opts.remove,
            mode=opts.mode,
            overwrite=opts.overwrite,
            default_group=not opts.no_default_group,
        )
    except FileExistsError as exc:
        raise _Failure(f"{_describe_os_error(exc)} (--remove replaces it)") from None
    try:
        kind = []
        if opts.overwrite:
            kind.append("overwrite ring (writers never wait; slow readers lose messages)")
        if opts.no_default_group:
            kind.append("no default group (only --group and --subscribe readers receive messages)")
        out.write(
            f"created {rb.path}: capacity {rb.capacity} bytes ({_human(rb.capacity)}), "
            f"messages up to {rb.max_message_size} bytes" + "".join(f"; {k}" for k in kind) + "\n"
        )
    finally:
        rb.close()
    return 0


# -- info ---------------------------------------------------------------------


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` exists (in this pid namespace); None for pid 0."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _human(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.4g} {unit}"
        value /= 1024
    return f"{value:.4g} TiB"


def _snapshot(rb: RingBuffer) -> dict[str, Any]:
    """info() plus what the command line adds: file size and whether the
    read turn's holder is alive. ``attached`` counts this command's own
    handle too."""
    info = rb.info()
    info["file_size"] = os.stat(rb.path).st_size
    info["read_turn_alive"] = _pid_alive(info["read_turn_pid"])
    return info


def _hints(info: dict[str, Any]) -> list[str]:
    """Plain-language reasons a pipeline may be stuck, from an info snapshot."""
    hints = []
    pid = info["read_turn_pid"]
    if pid and info["read_turn_alive"] is False:
        hints.append(
            f"the read turn is held by pid {pid}, which is not running (in this pid namespace): "
            "the next consumer to read takes it over after its stall timeout (default 0.1 s) "
            "and gets what the dead one had not finished reading"
        )
    elif pid:
        hints.append(
            f"pid {pid} holds the read turn (reading now, or inside an open peek): other consumers "
            "wait for it; a consumer blocked writing its output keeps the turn"
        )
    if info["counted"] and info["busy"]:
        hints.append(
            f"{info['busy']} record(s) reserved but not committed: consumers stop at the first one "
            "until its producer commits or aborts it (if that producer died, consumers skip it "
            "after their stall timeout, default 0.1 s)"
        )
    free = info["writable"]
    if info["waiting_producers"] or (free < 16 and not info["overwrite"]):
        hints.append(
            f"{free} bytes free: producers wait for consumers to make room"
            if info["waiting_producers"]
            else f"the ring is full ({free} bytes free)"
        )
    if info["counted"] and info["messages"] and info["waiting_consumers"]:
        hints.append(
            "messages are waiting and so are consumers: normal for an instant; if it persists, "
            "a wake-up was lost"
        )
    return hints


def _format_info(info: dict[str, Any]) -> str:
    cap = info["capacity"]
    used = info["bytes_used"]
    rows = [
        ("ring", info["path"]),
        ("file id", f"{info['file_id']} (random, set when the file was created)"),
        ("format version", str(info["format_version"])),
        ("file size", f"{info['file_size']} bytes ({_human(info['file_size'])})"),
        ("capacity", f"{cap} bytes ({_human(cap)})"),
        ("max message size", f"{info['max_message_size']} bytes ({_human(info['max_message_size'])})"),
        (
            "kind",
            "overwrite (writers never wait; slow groups lose messages)" if info["overwrite"] else "lossless",
        ),
        ("head", f"{info['head']} (the default group's read position)"),
        ("tail", f"{info['tail']} (producer position)"),
        ("bytes in use", f"{used} ({100 * used / cap:.1f}% of capacity, {info['writable']} writable now)"),
    ]
    if info["counted"]:
        rows += [
            ("messages waiting", f"{info['messages']} ({info['message_bytes']} bytes of payload)"),
            ("busy records", f"{info['busy']} (reserved, not yet committed)"),
            ("discarded records", f"{info['discarded']} (aborted, not yet skipped)"),
        ]
    else:
        rows.append(
            ("messages waiting", "not counted: another consumer held the read turn (counting needs it)")
        )
    pid = info["read_turn_pid"]
    if not pid:
        turn = "free"
    else:
        turn = f"held by pid {pid} ({'alive' if info['read_turn_alive'] else 'NOT RUNNING'})"
    rows += [
        ("read turn", turn),
        ("waiting consumers", f"{info['waiting_consumers']} (parked, waiting for a message)"),
        ("waiting producers", f"{info['waiting_producers']} (parked, waiting for space)"),
        ("waiting for turn", f"{info['waiting_for_turn']} (consumers parked, waiting for the read turn)"),
        ("attached handles", f"{info['attached'] - 1} (open in any process, this command's excluded)"),
        (
            "wake-up fences",
            "full (a waiter could not use membarrier; recreate the file to undo)"
            if info["full_fences"]
            else "light (waiters use membarrier)",
        ),
    ]
    groups = info.get("groups") or []
    rows.append(("consumer groups", f"{info['group_count']} (backlog: messages, payload bytes, lost)"))
    for g in groups:
        backlog = (
            f"{g['backlog_messages']} messages, {g['backlog_bytes']} bytes" if g["counted"] else "not counted"
        )
        rows.append((f"  {_group_name(g)}", f"{backlog}, {g['lost']} lost, {_members(g)} member(s)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for hint in _hints(info):
        lines.append(f"note: {hint}")
    return "\n".join(lines) + "\n"


def _group_name(g: dict[str, Any]) -> str:
    """A group as the tables name it."""
    if g["kind"] == "default":
        return "(default)"
    if g["kind"] == "ephemeral":
        return f"(ephemeral, pid {g['pid']})"
    return str(g["name"])


def _members(g: dict[str, Any]) -> int:
    """A group's members, without this command's own handle (a member of
    the default group when there is one)."""
    return g["members"] - 1 if g["kind"] == "default" and g["members"] > 0 else g["members"]


def _cmd_info(opts: argparse.Namespace) -> int:
    with RingBuffer.open(opts.path) as rb:
        info = _snapshot(rb)
    out = _stdout()
    out.write(json.dumps(info) + "\n" if opts.json else _format_info(info))
    out.flush()
    return 0


# -- groups -------------------------------------------------------------------


def _format_groups(groups: list[dict[str, Any]]) -> str:
    head = ("NAME", "KIND", "MEMBERS", "POSITION", "BACKLOG", "BACKLOG BYTES", "LOST")
    rows = [head]
    for g in groups:
        counted = g["counted"]
        rows.append(
            (
                _group_name(g),
                g["kind"],
                str(_members(g)),
                str(g["position"]),
                str(g["backlog_messages"]) if counted else "-",
                str(g["backlog_bytes"]) if counted else "-",
                str(g["lost"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    if not groups:
        text += "no consumer groups: writes always succeed, and nobody receives them\n"
    if any(not g["counted"] for g in groups):
        text += "-: not counted (a member held the group's read turn)\n"
    return text


def _cmd_groups(opts: argparse.Namespace) -> int:
    out = _stdout()
    with RingBuffer.open(opts.path) as rb:
        if opts.remove is not None or opts.remove_default:
            name = None if opts.remove_default else opts.remove
            rb.remove_group(name)
            out.write(f"removed {'the default group' if name is None else f'group {name!r}'} of {rb.path}\n")
            out.flush()
            return 0
        groups = rb.groups()
    out.write(json.dumps(groups) + "\n" if opts.json else _format_groups(groups))
    out.flush()
    return 0


# -- stats --------------------------------------------------------------------

# Bytes per MB in rates (decimal, as in network and disk rates).
_MB = 1_000_000


def _stats_summary(path: str, stats: dict[str, Any], now: float) -> dict[str, Any]:
    """stats() plus the age of the ring, average rates since its creation
    (None when the creation time is not in the past: a forged file or a
    clock set back) and the backlog. Each counter is read while others may
    add to theirs, so written - read can be briefly off by the messages in
    flight; the backlog is never below 0."""
    age = now - stats["created"]

    def per_second(n: int) -> float | None:
        return n / age if age > 0 else None

    written, read = stats["written"], stats["read"]
    return {
        "path": path,
        "created": stats["created"],
        "age_seconds": age,
        **{k: v for k, v in stats.items() if k != "created"},
        "backlog": max(0, written - read),
        "backlog_bytes": max(0, stats["written_bytes"] - stats["read_bytes"]),
        "written_per_second": per_second(written),
        "written_bytes_per_second": per_second(stats["written_bytes"]),
        "read_per_second": per_second(read),
        "read_bytes_per_second": per_second(stats["read_bytes"]),
        "mean_message_bytes": stats["written_bytes"] / written if written else None,
        "mean_park_seconds": stats["parked_seconds"] / stats["parks"] if stats["parks"] else None,
    }


def _rate(x: float) -> str:
    """A rate to three significant digits, whole numbers from 1000 on."""
    if x < 1000:
        return f"{x:.3g}"
    return f"{x:.0f}" if x < 1e15 else f"{x:.3e}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _format_stats(s: dict[str, Any]) -> str:
    try:
        created = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(s["created"]))
    except (OverflowError, OSError, ValueError):
        created = f"{s['created']:.0f} s after the epoch"
    age = s["age_seconds"]
    created += f" ({_duration(age)} ago)" if age > 0 else " (not in the past: no average rates)"

    def rate(messages: float | None, nbytes: float | None) -> str:
        if messages is None or nbytes is None:
            return "- (the creation time is not in the past)"
        return f"{_rate(messages)} messages/s, {_rate(nbytes / _MB)} MB/s (average since creation)"

    mean = s["mean_message_bytes"]
    rows = [
        ("ring", s["path"]),
        ("created", created),
        ("written", f"{s['written']} messages, {s['written_bytes']} bytes ({_human(s['written_bytes'])})"),
        ("read", f"{s['read']} messages, {s['read_bytes']} bytes ({_human(s['read_bytes'])})"),
        ("backlog", f"{s['backlog']} messages, {s['backlog_bytes']} bytes (written - read)"),
        ("rate in", rate(s["written_per_second"], s["written_bytes_per_second"])),
        ("rate out", rate(s["read_per_second"], s["read_bytes_per_second"])),
        ("mean message", "-" if mean is None else f"{mean:.1f} bytes (of those written)"),
        ("aborted", f"{s['aborted']} (reservations given up)"),
        ("full", f"{s['full']} (non-blocking writes that found no room)"),
        ("empty", f"{s['empty']} (non-blocking reads that found no message)"),
        ("parks", f"{s['parks']} (sleeps of waiting calls, {s['parked_seconds']:.3f} s in all)"),
        ("wakes", f"{s['wakes']} (wake-ups sent to sleepers)"),
        ("recovered", f"{s['recovered']} (dead writers' records (or unwritten gaps) discarded)"),
        ("turns taken", f"{s['turns_taken']} (read turns taken over from dead consumers)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k:<{width}}  {v}\n" for k, v in rows)


def _cmd_stats(opts: argparse.Namespace) -> int:
    with RingBuffer.open(opts.path) as rb:
        summary = _stats_summary(rb.path, rb.stats(), time.time())
    out = _stdout()
    out.write(json.dumps(summary) + "\n" if opts.json else _format_stats(summary))
    out.flush()
    return 0


# -- top ----------------------------------------------------------------------


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def _cmd_top(opts: argparse.Namespace) -> int:
    from ringbuffer import _top

    watches: list[_top.Watch] = []
    try:
        for path in opts.paths:
            watches.append(_top.Watch(path))
            watches[-1].start()
        out = _stdout()
        terminal = _is_terminal(out)
        if opts.once or not terminal:
            width = shutil.get_terminal_size().columns if terminal else None
            return _top.run_plain(watches, opts.interval, opts.once, out, width)
        try:
            return _top.run_curses(watches, opts.interval)
        except _top.TerminalError as exc:
            raise _Failure(str(exc)) from None
    finally:
        for w in watches:
            w.close()


# -- write --------------------------------------------------------------------


def _stdout() -> TextIO:
    stream = sys.stdout
    if stream is None:
        raise _Failure("standard output is closed")
    return stream


def _stdin() -> BinaryIO:
    stream = sys.stdin
    if stream is None:
        raise _Failure("standard input is closed")
    return stream.buffer  # type: ignore[return-value]


def _write_separated(rb: RingBuffer, stream: BinaryIO, sep: bytes, what: str) -> int:
    """Writes each ``sep``-terminated piece of ``stream`` (and a last one
    without ``sep``) as a message, skipping empty ones; returns how many
    messages were written. Raises _MessageTooLong after writing the pieces
    before the first one longer than ``rb.max_message_size``."""
    limit = rb.max_message_size
    read1 = getattr(stream, "read1", stream.read)
    pending = bytearray()  # the piece read so far whose separator has not come yet
    number = 0  # pieces completed so far (empty ones included), for error messages
    written = 0
    while True:
        chunk = read1(_CHUNK)
        if not chunk:
            break
        parts = chunk.split(sep)
        if len(parts) == 1:
            pending += chunk
            if len(pending) > limit:
                raise _too_long(what, number + 1, len(pending), limit, written, more=True)
            continue
        if pending:
            pending += parts[0]
            parts[0] = bytes(pending)
        pending = bytearray(parts.pop())
        msgs = [p for p in parts if p]
        if msgs and max(map(len, msgs)) > limit:
            for i, p in enumerate(parts):
                if len(p) > limit:
                    good = [q for q in parts[:i] if q]
                    written += rb.put_many(good) if good else 0
                    raise _too_long(what, number + i + 1, len(p), limit, written)
        number += len(parts)
        if msgs:
            written += rb.put_many(msgs)
        if len(pending) > limit:
            raise _too_long(what, number + 1, len(pending), limit, written, more=True)
    if pending:
        rb.put(bytes(pending))
        written += 1
    return written


def _too_long(
    what: str, number: int, size: int, limit: int, written: int, more: bool = False
) -> _MessageTooLong:
    """The error for piece ``number`` of ``size`` bytes (at least, if ``more``)."""
    return _MessageTooLong(
        f"{what} {number} ({'over ' if more else ''}{size} bytes) is longer than the ring's maximum "
        f"message size ({limit} bytes); the {written} message(s) before it were written"
    )


def _write_raw(rb: RingBuffer, stream: BinaryIO) -> int:
    """Writes all of ``stream`` as messages of max_message_size bytes (the last one shorter)."""
    written = 0
    while True:
        chunk = stream.read(rb.max_message_size)
        if not chunk:
            return written
        rb.put(chunk)
        written += 1


def _cmd_write(opts: argparse.Namespace) -> int:
    stream = _stdin()
    with RingBuffer.open(opts.path) as rb:
        try:
            if opts.input == "raw":
                _write_raw(rb, stream)
            elif opts.input == "null":
                _write_separated(rb, stream, b"\0", "record")
            else:
                _write_separated(rb, stream, b"\n", "line")
        except _MessageTooLong as exc:
            raise _Failure(str(exc)) from None
    return 0


# -- read ---------------------------------------------------------------------


def _peek_can_keep() -> bool:
    """Whether RingBuffer.peek() takes ``consume_on_error`` (a block that
    raises then leaves its message in the ring)."""
    try:
        return "consume_on_error" in inspect.signature(RingBuffer.peek).parameters
    except (TypeError, ValueError):
        return False


class _Output:
    """Writes messages to standard output, each followed by ``sep``, and
    returns only once the bytes are written out (to the pipe, file or
    terminal), so that a message is consumed only after that."""

    def __init__(self, sep: bytes) -> None:
        self.sep = sep
        self.fd: int | None = None
        self.stream: BinaryIO | None = None
        stdout = _stdout()
        stdout.flush()
        try:
            self.fd = stdout.fileno()
        except (AttributeError, OSError, ValueError):
            # A stream without a descriptor (a test's capture): through its buffer.
            self.stream = stdout.buffer  # type: ignore[attr-defined]

    def write(self, view: memoryview) -> None:
        if self.stream is not None:
            self.stream.write(view)
            if self.sep:
                self.stream.write(self.sep)
            self.stream.flush()
            return
        try:
            n = os.writev(self.fd, [view, self.sep]) if self.sep else os.write(self.fd, view)  # type: ignore[arg-type]
        except BlockingIOError:
            n = 0
        if n < len(view) + len(self.sep):
            self._write_rest(bytes(view) + self.sep, n)

    def _write_rest(self, data: bytes, done: int) -> None:
        """Finishes a partial write (a signal, or a non-blocking descriptor)."""
        rest = memoryview(data)[done:]
        while rest:
            try:
                rest = rest[os.write(self.fd, rest) :]  # type: ignore[arg-type]
            except BlockingIOError:
                select.select([], [self.fd], [])


def _lost(exc: MessagesLost) -> None:
    """The one line a read that met a gap prints (then it goes on)."""
    noun = "message" if exc.count == 1 else "messages"
    _say(f"read: {exc.count} {noun} lost (overwritten before this group read them)")


def _cmd_read(opts: argparse.Namespace) -> int:
    if opts.follow:
        block, timeout = True, None
    elif opts.timeout is not None:
        block, timeout = True, opts.timeout
    else:
        block, timeout = False, None
    if opts.start is not None and opts.group is None and not opts.subscribe:
        _error("read: --start needs --group or --subscribe (the default group has no start)")
        return 2
    keep: dict[str, Any] = {"consume_on_error": False} if _peek_can_keep() else {}
    out = _Output({"lines": b"\n", "null": b"\0", "raw": b""}[opts.output])
    done = 0
    with RingBuffer.open(
        opts.path, group=opts.group, ephemeral=opts.subscribe, start=opts.start or "latest"
    ) as rb:
        # An overwrite ring refuses peeks (a writer may reclaim the record
        # meanwhile): there a message is copied out, consumed, then written.
        copy = rb.overwrite
        while opts.count is None or done < opts.count:
            try:
                if copy:
                    out.write(memoryview(rb.get(block, timeout)))
                else:
                    with rb.peek(block=block, timeout=timeout, **keep) as view:
                        out.write(view)
            except BufferEmpty:
                break
            except MessagesLost as exc:
                _lost(exc)
                continue
            done += 1
    return 0


# -- export -------------------------------------------------------------------

_NEEDS_PROMETHEUS = "ringbuffer export needs prometheus_client: pip install 'ringbuffer-ipc[prometheus]'"


def _reason(exc: BaseException) -> str:
    return _describe_os_error(exc) if isinstance(exc, OSError) else str(exc)


def _say(line: str) -> None:
    """One line on standard error, from any thread; never raises."""
    try:
        sys.stderr.write(f"{PROG}: {line}\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _export_notice(path: str, problem: BaseException | None) -> None:
    if problem is None:
        _say(f"{path}: readable again")
    else:
        _say(f"warning: {_reason(problem)} (ringbuffer_up 0 until it can be read)")


def _cmd_export(opts: argparse.Namespace) -> int:
    try:
        from ringbuffer import _export
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        _error(_NEEDS_PROMETHEUS)
        return 2
    host, port = opts.listen
    collector = _export.RingCollector(opts.rings, notify=_export_notice)
    failed = collector.open()
    if len(failed) == len(collector.paths):
        for problem in failed.values():
            _error(_reason(problem))
        return 1
    for path, problem in failed.items():
        _export_notice(path, problem)
    try:
        server = _export.serve(collector, host, port)
    except OSError as exc:
        collector.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise _Failure(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        try:
            out = _stdout()
            out.write(f"serving {server.url} for {len(collector.paths)} ring(s)\n")
            out.flush()
        except (OSError, ValueError, _Failure):
            pass  # nobody reads standard output: serve all the same
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    except _Terminated as exc:
        if exc.signum != signal.SIGTERM:
            raise
        return 0
    finally:
        server.stop()
        collector.close()


# -- bridge -------------------------------------------------------------------

_NEEDS_NATS = "ringbuffer bridge needs nats-py: pip install 'ringbuffer-ipc[nats]'"


def _is_url(text: str) -> bool:
    return text.partition("://")[0] in ("nats", "tls") and "://" in text


def _cmd_bridge(opts: argparse.Namespace) -> int:
    import asyncio

    from ringbuffer import bridge

    if _is_url(opts.source) == _is_url(opts.destination):
        _error("bridge: one of SOURCE and DESTINATION is a nats://HOST:PORT/SUBJECT URL, the other a ring")
        return 2
    if opts.group is not None and not _is_url(opts.destination):
        _error("bridge: --group is for RING to URL (the bridge reads the ring in that group)")
        return 2
    try:
        import nats  # noqa: F401
    except ImportError:
        _error(_NEEDS_NATS)
        return 2
    to_nats = _is_url(opts.destination)
    common: dict[str, Any] = {
        "stream": opts.stream,
        "batch": opts.batch,
        "creds": opts.creds,
        "tls_ca": opts.tls_ca,
        "report": None if opts.quiet else _say,
        "interval": opts.interval,
    }
    if opts.max_inflight is not None:
        common["max_inflight"] = opts.max_inflight

    async def run(stop: asyncio.Event) -> bridge.BridgeStats:
        if to_nats:
            return await bridge.ring_to_nats(
                opts.source, opts.destination, group=opts.group, stop=stop, **common
            )
        return await bridge.nats_to_ring(
            opts.source, opts.destination, durable=opts.durable, ack_wait=opts.ack_wait, stop=stop, **common
        )

    try:
        stats = asyncio.run(bridge.run_until_signal(run))
    except bridge.BridgeError as exc:
        raise _Failure(str(exc)) from None
    except (KeyboardInterrupt, _Terminated):
        # While the event loop was starting or ending, outside the bridge's
        # own handlers: nothing is held then (no batch, no fetch), so a clean stop.
        return 0
    if not opts.quiet:
        _say(
            f"bridge stopped: {stats.messages:,} messages ({stats.bytes:,} bytes) moved, "
            f"{stats.skipped:,} duplicates skipped"
        )
    return 0


# -- demo, bench --------------------------------------------------------------


def _run_forwarded(name: str, args: list[str]) -> int:
    if name == "demo":
        from ringbuffer import demo

        return demo.main(args, out=sys.stdout)
    from ringbuffer import benchmark

    return benchmark.main(args)


# -- the parser and main ------------------------------------------------------


class _Failure(Exception):
    """A runtime error to report as one line on standard error (exit status 1)."""


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions, with a wider column for the options."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the top-level description and epilog (an example) as written."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ringbuffer`` command."""
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Create, inspect, fill and drain ringbuffer files from the shell.",
        epilog=(
            "example:\n"
            "  ringbuffer create /dev/shm/q --size 64M\n"
            "  seq 1000000 | ringbuffer write /dev/shm/q      # one terminal\n"
            "  ringbuffer read /dev/shm/q --follow | wc -l    # another\n\n"
            "exit status: 0 ok, 1 error, 2 usage error, 130 Ctrl-C.\n"
            "'ringbuffer COMMAND --help' describes each command."
        ),
        formatter_class=_RawFormatter,
    )
    ap.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {_package_version()} (libringbuf {c_version()}, file format {format_version()})",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "create",
        help="create a new ring file",
        formatter_class=_Formatter,
        description=(
            "Create a ring file. Its capacity is SIZE rounded up to a power of two of at least 4096 "
            "bytes; messages may be up to half the capacity. The space is reserved up front, and the "
            "file appears only once complete."
        ),
    )
    p.add_argument("path", metavar="PATH", help="file to create (e.g. /dev/shm/q for a ring in memory)")
    p.add_argument(
        "--size",
        required=True,
        type=_argtype(parse_size, "size"),
        help="capacity: 4096, 64k, 64M, 1GiB, ... (K/M/G/T are powers of 1024, optionally with i, iB or B)",
    )
    p.add_argument(
        "--remove", action="store_true", help="replace PATH if it exists (atomically); without it, fail"
    )
    p.add_argument(
        "--mode",
        type=_argtype(parse_mode, "mode"),
        default=0o600,
        help="permission bits in octal, before the umask (default 0600)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="writers never wait for readers: when the ring is full the oldest messages are "
        "overwritten, and a reader's group that had not read them loses them",
    )
    p.add_argument(
        "--no-default-group",
        action="store_true",
        help="no default consumer group: only 'read --group' and 'read --subscribe' readers receive "
        "messages (with none, writes always succeed)",
    )
    p.set_defaults(run=_cmd_create)

    p = sub.add_parser(
        "info",
        help="show a ring's state (for debugging a stuck pipeline)",
        formatter_class=_Formatter,
        description=(
            "Show format version, capacity, maximum message size, head and tail positions, bytes and "
            "messages waiting, records being written (busy) or aborted (discarded), the process holding "
            "the read turn and whether it is alive, the parked producers and consumers, and how many "
            "handles are open on the ring. Counting the messages takes the read turn briefly, like a "
            "read; nothing is consumed."
        ),
    )
    p.add_argument("path", metavar="PATH", help="ring file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser(
        "groups",
        help="list a ring's consumer groups, or remove one",
        formatter_class=_Formatter,
        description=(
            "List the ring's consumer groups: name ((default) for the default group, (ephemeral, pid N) "
            "for a subscriber's), kind, members attached now (this command's handle excluded), read "
            "position, backlog (messages and payload bytes committed that the group has not read) and "
            "messages lost to an overwrite ring's writers. Every group gets every message; the members "
            "of a group share its messages. Counting a backlog takes the group's read turn briefly. "
            "--remove NAME removes a durable group and --remove-default the default group: their unread "
            "messages stop holding writers back, and their members' next reads fail."
        ),
    )
    p.add_argument("path", metavar="PATH", help="ring file")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of objects, one per group, with the keys of RingBuffer.groups() "
        "(the default group's members count this command's handle too)",
    )
    g.add_argument("--remove", metavar="NAME", help="remove the durable group NAME")
    g.add_argument("--remove-default", action="store_true", help="remove the default group")
    p.set_defaults(run=_cmd_groups)

    p = sub.add_parser(
        "stats",
        help="show a ring's counters and average rates since its creation",
        formatter_class=_RawFormatter,
        description=(
            "Show the ring's counters since its creation, summed over every handle that ever used\n"
            "it in any process (closed and killed ones too): messages and bytes written and read,\n"
            "reservations aborted, non-blocking calls that found the ring full or empty, sleeps of\n"
            "waiting calls and their time, wake-ups sent, crash recoveries; with the average rates\n"
            "since the ring was created and the backlog (written - read). Counters only grow.\n"
            "Reading them takes nothing from producers and consumers."
        ),
        epilog=(
            "--json keys (one object on one line):\n"
            "  path                   the ring file\n"
            "  created                creation time, seconds since the epoch\n"
            "  age_seconds            now - created\n"
            "  written, read          messages committed, consumed\n"
            "  written_bytes          their payload bytes\n"
            "  read_bytes\n"
            "  aborted                reservations aborted\n"
            "  full, empty            non-blocking calls that found no room, no message\n"
            "  parks, parked_seconds  sleeps of waiting calls, their time\n"
            "  wakes                  wake-ups sent to sleepers\n"
            "  recovered              dead writers' records (or unwritten gaps) discarded\n"
            "  turns_taken            read turns taken over from dead consumers\n"
            "  backlog                written - read (at least 0)\n"
            "  backlog_bytes          written_bytes - read_bytes (at least 0)\n"
            "  written_per_second     averages since creation; null unless created is in the past\n"
            "  written_bytes_per_second\n"
            "  read_per_second\n"
            "  read_bytes_per_second\n"
            "  mean_message_bytes     written_bytes / written (null if nothing was written)\n"
            "  mean_park_seconds      parked_seconds / parks (null if no call slept)\n"
            "The text output shows rates in MB/s: 10^6 bytes per second."
        ),
    )
    p.add_argument("path", metavar="PATH", help="ring file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead (keys below)")
    p.set_defaults(run=_cmd_stats)

    p = sub.add_parser(
        "top",
        help="watch rings' traffic live (rates, fill level, waiters)",
        formatter_class=_Formatter,
        description=(
            "A live view of one or more rings, refreshed every --interval seconds: per ring, messages/s "
            "and MB/s (10^6 bytes) written (in) and read (out) over the last interval, how full it is, "
            "the parked producers and consumers, the handles open on it (top's own excluded), sleeps of "
            "waiting calls per second and crash recoveries (dead writers' records or gaps discarded, "
            "read turns taken over from dead consumers; a new one is highlighted). 'q' or Ctrl-C quits. "
            "A ring whose file is deleted is shown as gone; a new file at its path is opened. When "
            "standard output is not a terminal, prints a frame of plain lines every interval instead. "
            "Each refresh counts the messages waiting as 'info' does, taking the read turn briefly."
        ),
    )
    p.add_argument("paths", metavar="RING", nargs="+", help="ring file(s)")
    p.add_argument(
        "--interval",
        type=_argtype(_interval, "interval"),
        default=1.0,
        metavar="SECONDS",
        help="time between refreshes, and the span of the rates (default 1)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="print one frame of plain lines (two samples --interval apart, for real rates) and exit",
    )
    p.set_defaults(run=_cmd_top)

    p = sub.add_parser(
        "write",
        help="write messages from standard input",
        formatter_class=_Formatter,
        description=(
            "Write messages read from standard input, waiting for space when the ring is full. "
            "Messages are 1 byte or more: empty lines (or empty NUL-separated records) are skipped. "
            "A line longer than the ring's maximum message size is an error (exit status 1) after "
            "the lines before it were written. Ctrl-C stops (exit status 130); what was written stays."
        ),
    )
    p.add_argument("path", metavar="PATH", help="ring file")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--lines",
        dest="input",
        action="store_const",
        const="lines",
        help="one message per line, without its newline (default); empty lines are skipped",
    )
    g.add_argument(
        "--null",
        dest="input",
        action="store_const",
        const="null",
        help="NUL-separated messages (as from find -print0); empty ones are skipped",
    )
    g.add_argument(
        "--stdin-raw",
        dest="input",
        action="store_const",
        const="raw",
        help="all of standard input as is, cut into messages of the maximum message size",
    )
    p.set_defaults(run=_cmd_write, input="lines")

    p = sub.add_parser(
        "read",
        help="read messages to standard output",
        formatter_class=_Formatter,
        description=(
            "Read and consume messages, writing each to standard output followed by a newline "
            "(bytes as they are). Without --follow, read what is there now and exit. A message is "
            "consumed only once written out: if the output is closed early (| head), the command "
            "exits quietly with status 0, and the message it could not write and all later ones stay "
            "in the ring (what was already in the pipe but never read by the next command is gone, "
            "as with any pipe). While it waits for its output to drain it keeps the ring's read turn, "
            "so other consumers wait too. It reads in the ring's default group, shared with every "
            "plain reader, or in a consumer group of its own (--group, --subscribe), which gets every "
            "message. On an overwrite ring a message is consumed before it is written out, and when "
            "the group was overrun one line on standard error says how many messages it lost; "
            "reading goes on."
        ),
    )
    p.add_argument("path", metavar="PATH", help="ring file")
    p.add_argument("--count", "-n", type=_argtype(_count, "count"), metavar="N", help="stop after N messages")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="wait for more messages forever (until --count or Ctrl-C)",
    )
    g.add_argument(
        "--timeout",
        type=_argtype(_seconds, "timeout"),
        metavar="S",
        help="wait up to S seconds for each next message, then exit",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--lines",
        dest="output",
        action="store_const",
        const="lines",
        help="end each message with a newline (default)",
    )
    g.add_argument(
        "--null", dest="output", action="store_const", const="null", help="end each message with a NUL byte"
    )
    g.add_argument(
        "--raw",
        dest="output",
        action="store_const",
        const="raw",
        help="write the messages back to back, with nothing after each",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--group",
        metavar="NAME",
        help="read in the durable consumer group NAME (made if missing; it keeps its position "
        "after this command exits, until 'ringbuffer groups PATH --remove NAME')",
    )
    g.add_argument(
        "--subscribe",
        action="store_true",
        help="read in a group of this command's own, removed when it exits (tail -f for a ring: "
        "takes nothing from other readers)",
    )
    p.add_argument(
        "--start",
        choices=("earliest", "latest"),
        help="where a group made by --group or --subscribe starts: the oldest message still in the "
        "ring, or the next one written (default latest); an existing group resumes where it is",
    )
    p.set_defaults(run=_cmd_read, output="lines")

    p = sub.add_parser(
        "export",
        help="serve rings' counters to Prometheus (needs the prometheus extra)",
        formatter_class=_Formatter,
        description=(
            "Serve the counters and gauges of each RING at http://HOST:PORT/metrics in the Prometheus "
            'text format, read at each scrape; every series has the label ring="RING". A ring deleted '
            "or replaced is reopened at the next scrape; while none can be opened at its path, it "
            "reports ringbuffer_up 0 and no other series. A RING that cannot be opened at the start "
            "gets one warning line and ringbuffer_up 0, unless none can be opened: then the command "
            "fails (exit status 1). A scrape never takes the read turn (consumers are never held up), "
            "so messages waiting are not counted: use ringbuffer_bytes_used, or written minus read. "
            "Ctrl-C or SIGTERM stops it (exit status 0). Needs prometheus_client "
            "(pip install 'ringbuffer-ipc[prometheus]')."
        ),
    )
    p.add_argument("rings", metavar="RING", nargs="+", help="ring file (the label's value, as written)")
    p.add_argument(
        "--listen",
        type=_argtype(parse_listen, "address"),
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}; [::1]:9464 for IPv6, :9464 for every "
        "IPv4 interface)",
    )
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser(
        "bridge",
        help="copy a ring's messages into NATS JetStream, or a stream's into a ring",
        formatter_class=_Formatter,
        description=(
            "Copy messages between a ring and a NATS JetStream subject until Ctrl-C or SIGTERM (then "
            "exit status 0, nothing lost). RING to URL: the bridge is the ring's consumer and consumes "
            "a message only once JetStream acknowledged it; each carries Nats-Msg-Id FILE_ID:POSITION, "
            "so a restarted bridge stores nothing twice (within the stream's duplicate window). The "
            "stream is --stream (made with the subject if missing), else the one that covers the "
            "subject, else a new one. URL to RING: reads through the durable consumer --durable "
            "(default: one per ring file) and acknowledges a message once it is in the ring; after a "
            "crash at most --max-inflight messages are written again. The URL is "
            "nats://[USER:PASSWORD@]HOST[:PORT]/SUBJECT (tls:// for TLS). Needs nats-py "
            "(pip install 'ringbuffer-ipc[nats]'). docs/scaling.md tells how to use it."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="a ring file, or a nats:// URL to read from")
    p.add_argument("destination", metavar="DESTINATION", help="a nats:// URL to publish to, or a ring file")
    p.add_argument(
        "--stream", metavar="NAME", help="JetStream stream (default: the one covering the subject)"
    )
    p.add_argument(
        "--durable", metavar="NAME", help="durable consumer name (URL to RING; default ring-FILE_ID)"
    )
    p.add_argument(
        "--group",
        metavar="NAME",
        help="RING to URL: read in the ring's durable consumer group NAME (made if missing, at the "
        "oldest message still in the ring) instead of the default group",
    )
    p.add_argument(
        "--batch",
        type=_argtype(_positive, "count"),
        default=256,
        metavar="N",
        help="messages taken at a time (default 256)",
    )
    p.add_argument(
        "--max-inflight",
        type=_argtype(_positive, "count"),
        default=None,
        metavar="N",
        help="acknowledgements awaited at once (default 256 to NATS, 1024 from NATS)",
    )
    p.add_argument(
        "--ack-wait",
        type=_argtype(_interval, "interval"),
        default=30.0,
        metavar="SECONDS",
        help="URL to RING: the consumer's ack wait, after which JetStream sends again (default 30)",
    )
    p.add_argument("--creds", metavar="FILE", help="NATS credentials file (JWT and NKey seed)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificates to verify the server's TLS certificate")
    p.add_argument(
        "--interval",
        type=_argtype(_interval, "interval"),
        default=5.0,
        metavar="SECONDS",
        help="seconds between rate lines on standard error (default 5)",
    )
    p.add_argument("--quiet", action="store_true", help="no rate lines or notices, only errors")
    p.set_defaults(run=_cmd_bridge)

    sub.add_parser(
        "demo",
        help="stream messages between two processes and compare with multiprocessing.Queue",
        add_help=False,
        description="Runs python -m ringbuffer.demo with the same arguments (see 'ringbuffer demo --help').",
    )
    sub.add_parser(
        "bench",
        help="ping-pong latency between two processes next to multiprocessing.Pipe",
        add_help=False,
        description="Runs python -m ringbuffer.benchmark with the same arguments.",
    )
    return ap


def _package_version() -> str:
    from ringbuffer import __version__

    return __version__


def _describe_os_error(exc: OSError) -> str:
    if exc.strerror is None:
        return str(exc)
    name = exc.filename if exc.filename is not None else None
    if name is None:
        return exc.strerror
    return f"{os.fsdecode(name)}: {exc.strerror}"


def _on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Terminated(signum)


def _catch_termination() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C (unless they were ignored, as
    under nohup), so that an open peek gives its read turn back: a consumer
    killed while holding it would stop every other consumer."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_signal)


def _error(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()
    return 1


def _silence_stdout() -> None:
    """Points standard output at /dev/null, so that the interpreter's final
    flush does not complain about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Runs the ``ringbuffer`` command; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args and args[0] in _FORWARDED:
            return _run_forwarded(args[0], args[1:])
        opts = build_parser().parse_args(args)
        _catch_termination()
        return int(opts.run(opts))
    except KeyboardInterrupt:
        return 130
    except _Terminated as exc:
        return 128 + exc.signum
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except _Failure as exc:
        return _error(str(exc))
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            return 0
        return _error(_describe_os_error(exc))
    except (RingBufferError, ValueError) as exc:
        return _error(str(exc))
