"""Bridges between rings and NATS JetStream, for when one host is outgrown.

Two coroutines, each run in the caller's event loop until ``stop`` is set:

- :func:`ring_to_nats` copies a ring's messages into a JetStream stream.
  A message leaves the ring only after JetStream acknowledged it: the
  bridge peeks at a batch (``RingBuffer.peek_many``), publishes it, waits
  for every acknowledgement, and only then consumes the batch. Each message
  carries a ``Nats-Msg-Id`` made of the ring file's identity and the
  record's position, so JetStream's duplicate window drops what a restarted
  bridge publishes again; at start the bridge also reads the last message
  of the subject and skips the records it already holds.
- :func:`nats_to_ring` copies a stream's messages into a ring through a
  durable pull consumer. A message is acknowledged only once it is in the
  ring; after a crash at most ``max_inflight`` messages (the consumer's
  ``max_ack_pending``) are written again.

``ringbuffer bridge`` is the command-line face of both. Needs nats-py
(``pip install 'ringbuffer-ipc[nats]'``). The guarantees and their limits are
in docs/design.md ("The NATS bridge") and docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

from ringbuffer.exceptions import BufferEmpty, RingBufferError
from ringbuffer.ring import RingBuffer, StrPath

__all__ = [
    "BridgeError",
    "BridgeStats",
    "NatsTarget",
    "default_durable",
    "default_stream",
    "nats_to_ring",
    "parse_url",
    "ring_to_nats",
]

MSG_ID = "Nats-Msg-Id"
SCHEMES = ("nats", "tls")
DEFAULT_PORT = 4222

Ring = Union[RingBuffer, StrPath]
Report = Callable[[str], None]

# Waits for the ring, and for fetches, are sliced this finely so that a stop
# request is seen within about this time.
_POLL = 0.25
# Backoff between retries after a failure: doubles from the first to the last.
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0
# The first connection: given up after this many seconds.
_CONNECT_TIMEOUT = 10.0
# A flight of publishes stops growing at this many payload bytes; nats-py's
# write buffer is made larger than a flight plus the largest message.
_FLIGHT_BYTES = 4 << 20
_PER_MESSAGE = 256  # a message's protocol line, reply subject and header, counted in a flight's bytes
_PENDING_BYTES = 2 * _FLIGHT_BYTES + (64 << 20)


class BridgeError(Exception):
    """The bridge cannot start or go on; the text is one line for the user
    (a malformed URL, a server that cannot be reached or refused us, a
    stream that does not cover the subject, a ring that cannot be opened, a
    message JetStream refuses)."""


@dataclass
class BridgeStats:
    """What a bridge did so far (read by the rate line; returned at the end)."""

    messages: int = 0  #: messages moved (published and acknowledged, or written to the ring)
    bytes: int = 0  #: their payload bytes
    skipped: int = 0  #: duplicates not moved again (see the two functions)
    retries: int = 0  #: batches published or fetched again after a failure
    reconnects: int = 0  #: times the connection to NATS was made again
    out_of_order: int = 0  #: ring to NATS: times JetStream stored a message before an earlier one


@dataclass(frozen=True)
class NatsTarget:
    """A parsed ``nats://[USER:PASSWORD@]HOST[:PORT]/SUBJECT`` URL."""

    server: str  #: the server URL for nats-py, credentials included
    subject: str  #: the subject (may hold wildcards: only to read from)
    display: str  #: the URL without its password, for messages

    @property
    def wildcard(self) -> bool:
        return any(t in ("*", ">") for t in self.subject.split("."))


_TOKEN = re.compile(r"[^\s.*>]+")


def _check_subject(subject: str, url: str) -> None:
    tokens = subject.split(".")
    for i, t in enumerate(tokens):
        if t == ">" and i == len(tokens) - 1:
            continue
        if t != "*" and not _TOKEN.fullmatch(t):
            raise BridgeError(f"{url}: {subject!r} is not a NATS subject")


def parse_url(url: str) -> NatsTarget:
    """Parses a bridge URL; :class:`BridgeError` if it is not one."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BridgeError(f"{url}: malformed URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise BridgeError(f"{url}: the URL must start with nats:// or tls://")
    if not parts.hostname:
        raise BridgeError(f"{url}: no host in the URL")
    if parts.query or parts.fragment:
        raise BridgeError(f"{url}: a bridge URL has no ?query or #fragment")
    subject = urllib.parse.unquote(parts.path[1:])
    if not subject:
        raise BridgeError(f"{url}: no subject: write nats://HOST:PORT/SUBJECT")
    _check_subject(subject, url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    where = f"{host}:{port or DEFAULT_PORT}"
    auth = parts.netloc.rpartition("@")[0]
    server = f"{parts.scheme}://{auth + '@' if auth else ''}{where}"
    user = f"{parts.username}@" if parts.username else ""
    return NatsTarget(server, subject, f"{parts.scheme}://{user}{where}/{subject}")


def default_stream(subject: str) -> str:
    """The stream a bridge creates for ``subject`` when none covers it and
    no name was given: ``orders.eu`` gets ``ORDERS_EU``, ``orders.>``
    ``ORDERS_ALL``."""
    words = {"*": "ANY", ">": "ALL"}
    return "_".join(words.get(t, re.sub(r"[^A-Za-z0-9_-]", "_", t)).upper() for t in subject.split("."))


def default_durable(file_id: str) -> str:
    """The durable consumer a NATS-to-ring bridge uses when none is named:
    one per ring file (a ring made again at the same path is a new file,
    and starts from the stream's first message)."""
    return f"ring-{file_id[:16]}"


def covers(pattern: str, subject: str) -> bool:
    """Whether every subject matching ``subject`` matches ``pattern`` (NATS
    wildcards: ``*`` one token, ``>`` one or more at the end)."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok == "*":
            if s[i] == ">":
                return False
        elif tok != s[i]:
            return False
    return len(p) == len(s)


# -- connecting ---------------------------------------------------------------


def _nats() -> Any:
    try:
        import nats
    except ImportError as exc:
        raise BridgeError("the bridge needs nats-py: pip install 'ringbuffer-ipc[nats]'") from exc
    return nats


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
        return "no answer in time"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}): pass --tls-ca"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("nats: ").strip("'")


def _refused(exc: BaseException) -> bool:
    """A reason the first connection will never succeed: TLS or credentials."""
    if isinstance(exc, ssl.SSLError):
        return True
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text or "credentials" in text


def _say(report: Report | None, line: str) -> None:
    if report is not None:
        report(line)


class _Link:
    """The connection to NATS: made once (failing at once if it cannot be),
    then kept by nats-py, which reconnects in the background."""

    def __init__(self, target: NatsTarget, report: Report | None, stats: BridgeStats) -> None:
        self.target, self.report, self.stats = target, report, stats
        self.nc: Any = None
        self.up = False  # connected once, and not closing: notices are reported
        self.last: BaseException | None = None
        self.fatal: asyncio.Future[BaseException] | None = None
        self.epoch = 0  # disconnections so far: a flight spanning one is cut short

    async def _on_error(self, exc: Exception) -> None:
        self.last = exc
        if self.up:
            _say(self.report, f"NATS: {_describe(exc)}")
        elif self.fatal is not None and not self.fatal.done() and _refused(exc):
            # No point trying again (and nats-py keeps waiting after a failed
            # TLS handshake): give up here, with this reason.
            self.fatal.set_result(exc)

    async def _on_disconnect(self) -> None:
        self.epoch += 1
        if self.up:
            _say(self.report, f"disconnected from {self.target.display}; reconnecting")

    async def _on_reconnect(self) -> None:
        self.stats.reconnects += 1
        if self.up:
            _say(self.report, f"reconnected to {self.target.display}")

    async def connect(self, creds: StrPath | None, tls_ca: StrPath | None, stop: asyncio.Event) -> Any:
        """The connection; raises _Stopped if ``stop`` is set first."""
        nats = _nats()
        kwargs: dict[str, Any] = {
            "servers": [self.target.server],
            "name": "ringbuffer-bridge",
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
            "connect_timeout": 2,
            "max_reconnect_attempts": 2,  # the first connection; forever once connected (below)
            "reconnect_time_wait": 0.5,
            # Larger than what the bridge ever has queued (one flight of at
            # most _FLIGHT_BYTES, plus a message of up to 64 MiB, the
            # largest max_payload a server takes): publish never waits for a
            # forced flush, a pause in which the connection could change
            # under a flight (see _publish).
            "pending_size": _PENDING_BYTES,
            "flush_timeout": _CONNECT_TIMEOUT,
            # A link that silently stopped carrying anything is found within
            # about half a minute, not nats-py's default four minutes.
            "ping_interval": 10,
            "max_outstanding_pings": 3,
        }
        if creds is not None:
            path = os.fsdecode(creds)
            if not os.access(path, os.R_OK):
                raise BridgeError(f"{path}: cannot read the credentials file")
            try:
                import nkeys  # noqa: F401  (nats-py needs it for a credentials file)
            except ImportError:
                raise BridgeError("--creds needs nkeys: pip install 'ringbuffer-ipc[nats]'") from None
            kwargs["user_credentials"] = path
        if tls_ca is not None:
            try:
                kwargs["tls"] = ssl.create_default_context(cafile=os.fsdecode(tls_ca))
            except (OSError, ssl.SSLError) as exc:
                raise BridgeError(
                    f"{os.fsdecode(tls_ca)}: not a CA certificate file ({_describe(exc)})"
                ) from None
        where = self.target.display
        self.fatal = asyncio.get_running_loop().create_future()
        attempt = asyncio.ensure_future(nats.connect(**kwargs))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {attempt, self.fatal, stopped}, timeout=_CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if stop.is_set() and not attempt.done():
                raise _Stopped
            if not attempt.done():
                why = self.fatal.result() if self.fatal.done() else self.last
                raise BridgeError(f"cannot connect to {where}: {_describe(why)}")
            nc = attempt.result()
        except nats.errors.NoServersError:
            raise BridgeError(f"cannot connect to {where}: {_describe(self.last)}") from None
        except (OSError, ssl.SSLError, nats.errors.Error) as exc:
            raise BridgeError(f"cannot connect to {where}: {_describe(exc)}") from None
        finally:
            stopped.cancel()
            if not attempt.done():
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
        # Documented nats-py options, read at each reconnection: once we
        # were connected, a server that goes away is waited for.
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 1.0
        self.nc, self.up = nc, True
        return nc

    async def close(self) -> None:
        self.up = False
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 1.5)  # a stalled link never flushes
            except Exception:  # closing a connection that is gone anyway
                pass


async def _ensure_stream(js: Any, target: NatsTarget, stream: str | None) -> str:
    """The stream that holds the subject: the one named (made with the
    subject if it does not exist), else the one that covers it, else a new
    one (:func:`default_stream`)."""
    nats = _nats()
    subject = target.subject
    try:
        if stream is not None:
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(name=stream, subjects=[subject])
                return stream
            subjects = info.config.subjects or []
            if not any(covers(p, subject) for p in subjects):
                raise BridgeError(
                    f"stream {stream} does not cover subject {subject} "
                    f"(its subjects: {', '.join(subjects) or 'none'})"
                )
            return stream
        try:
            name = await js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            name = default_stream(subject)
            await js.add_stream(name=name, subjects=[subject])
            return name
        info = await js.stream_info(name)
        if not any(covers(p, subject) for p in info.config.subjects or []):
            raise BridgeError(
                f"stream {name} holds part of {subject} but not all of it: name a stream with --stream"
            )
        return str(name)
    except nats.errors.NoRespondersError:
        raise BridgeError(f"{target.display}: JetStream is not enabled on that server") from None
    except nats.js.errors.APIError as exc:
        raise BridgeError(f"{target.display}: {exc.description or exc}") from None
    except nats.errors.TimeoutError:
        raise BridgeError(f"{target.display}: JetStream did not answer") from None


def _identity(rb: RingBuffer) -> str:
    """The ring file's identity; refused when the file has none."""
    if rb.file_id.strip("0"):
        return rb.file_id
    raise BridgeError(
        f"{rb.path} has no file id (made by a development build of 0.2.0): the bridge tells rings "
        "apart by it; create the ring again"
    )


def _open(ring: Ring, group: str | None = None) -> tuple[RingBuffer, bool]:
    """The ring, and whether we opened it (and so close it); a path is
    opened in the consumer group ``group`` (made at the oldest message still
    in the ring if missing), None the default group."""
    if isinstance(ring, RingBuffer):
        if group is not None:
            raise ValueError("group= is for a ring given by path (an open RingBuffer reads in its own group)")
        return ring, False
    try:
        if group is None:
            return RingBuffer.open(ring), True
        return RingBuffer.open(ring, group=group, start="earliest"), True
    except (RingBufferError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.strerror:
            raise BridgeError(f"{os.fsdecode(ring)}: {exc.strerror}") from None
        raise BridgeError(f"{os.fsdecode(ring)}: {exc}") from None


class _Rate:
    """The rate line, every ``interval`` seconds while messages move."""

    def __init__(self, what: str, stats: BridgeStats, report: Report | None, interval: float) -> None:
        self.what, self.stats, self.report, self.interval = what, stats, report, interval
        self.t = time.monotonic()
        self.n = self.b = 0

    def tick(self) -> None:
        if self.report is None:
            return
        now = time.monotonic()
        dt = now - self.t
        if dt < self.interval:
            return
        s = self.stats
        n, b = s.messages - self.n, s.bytes - self.b
        if n or dt >= 6 * self.interval:
            self.report(
                f"{self.what}: {n / dt:,.0f} msgs/s, {b / dt / 1e6:,.2f} MB/s; "
                f"{s.messages:,} messages, {s.bytes:,} bytes in all"
            )
            self.t, self.n, self.b = now, s.messages, s.bytes


async def _backoff(delay: float, stop: asyncio.Event) -> float:
    """Sleeps ``delay`` (cut short by ``stop``); returns the next delay."""
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except asyncio.TimeoutError:
        pass
    return min(delay * 2, _BACKOFF_MAX)


# -- ring to NATS ---------------------------------------------------------------


def _retryable(nats: Any, exc: BaseException) -> bool:
    """A failure worth publishing again for: the connection or the server's
    JetStream was away, or an answer was late. Anything else (the stream
    refused the message) stops the bridge."""
    if isinstance(exc, (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError)):
        return True
    errors = nats.errors
    if isinstance(
        exc,
        (
            errors.TimeoutError,
            errors.NoRespondersError,
            errors.ConnectionClosedError,
            errors.ConnectionReconnectingError,
            errors.OutboundBufferLimitError,
            errors.StaleConnectionError,
            errors.UnexpectedEOF,
            nats.js.errors.NoStreamResponseError,
            nats.js.errors.TooManyStalledMsgsError,
        ),
    ):
        return True
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.code == 503


async def _last_position(js: Any, stream: str, subject: str, file_id: str) -> int | None:
    """The position of the last record of this ring in the stream, if the
    subject's last message came from it."""
    nats = _nats()
    try:
        msg = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return None
    except nats.errors.Error as exc:
        raise BridgeError(
            f"cannot read the last message of {subject} in stream {stream}: {_describe(exc)}"
        ) from None
    ident = (msg.headers or {}).get(MSG_ID, "")
    fid, _, pos = ident.partition(":")
    return int(pos) if fid == file_id and pos.isdigit() else None


async def _publish(
    link: _Link,
    js: list[Any],
    make_js: Callable[[], Any],
    subject: str,
    items: Sequence[tuple[int, bytes]],
    file_id: str,
    ack_timeout: float,
    stop: asyncio.Event,
    report: Report | None,
) -> bool:
    """Publishes ``items`` (position, payload) in order until JetStream has
    acknowledged every one; False if ``stop`` came first. Flights of at most
    ``_FLIGHT_BYTES``; a failure sends again from the first message not
    acknowledged (the duplicate window drops any that had been stored):
    that one alone first, until it is acknowledged (JetStream is back), then
    the rest, pipelined again. ``js`` holds the JetStream context, made anew
    when nats-py may have lost one of its in-flight slots."""
    nats = _nats()
    nc, stats = link.nc, link.stats
    start, delay, probe = 0, _BACKOFF_FIRST, False
    while start < len(items):
        futs: list[asyncio.Future[Any]] = []
        problem: BaseException | None = None
        epoch, size = link.epoch, 0
        if nc.pending_data_size:
            # The socket has not taken what was queued before (a link that
            # stopped carrying anything): queue nothing more until it does,
            # or until a new connection sends it (it is at most one retry of
            # the first message not acknowledged, so it goes first).
            problem = nats.errors.ConnectionReconnectingError()
        try:
            for pos, data in () if problem else items[start : start + 1] if probe else items[start:]:
                if not nc.is_connected or link.epoch != epoch:
                    # Reconnecting, or reconnected since the flight began:
                    # the rest of the flight would go out on the new
                    # connection ahead of what the old socket lost
                    # (docs/design.md, "The NATS bridge").
                    problem = nats.errors.ConnectionReconnectingError()
                    break
                if futs and size + len(data) + _PER_MESSAGE > _FLIGHT_BYTES:
                    break  # the flight is full: the rest go in the next one
                # No wait_stall: with it nats-py waits for its semaphore in a
                # task of its own, a pause in which the connection could go
                # down before the message is queued. A flight is never
                # larger than the semaphore (batch <= max_inflight), so the
                # wait never happens.
                futs.append(await js[0].publish_async(subject, data, headers={MSG_ID: f"{file_id}:{pos}"}))
                size += len(data) + _PER_MESSAGE
            if link.epoch != epoch:
                problem = nats.errors.ConnectionReconnectingError()
            if futs:
                await asyncio.wait(futs, timeout=ack_timeout)
        except Exception as exc:  # raised by publish_async itself
            if not _retryable(nats, exc):
                pos, data = items[start + len(futs)]
                raise BridgeError(
                    f"cannot publish the message at ring position {pos} ({len(data):,} bytes): "
                    f"{_describe(exc)}{_limit(nc, exc)}; it stays in the ring"
                ) from None
            problem = exc
            # It may have taken one of the context's in-flight slots and
            # never given a future back to free it: start a fresh context.
            js[0] = make_js()
        acked = 0
        for fut in futs:
            if not fut.done() or fut.cancelled():
                break
            exc = fut.exception()
            if exc is not None:
                if not _retryable(nats, exc):
                    pos, data = items[start + acked]
                    raise BridgeError(
                        f"JetStream refused the message at ring position {pos} ({len(data):,} bytes): "
                        f"{_describe(exc)}; it stays in the ring"
                    )
                problem = problem or exc
                break
            if fut.result().duplicate:
                stats.skipped += 1
            acked += 1
        _check_order(futs, acked, items, start, stats, report)
        for fut in futs[acked:]:
            fut.cancel()  # frees its place among the acks in flight
        start += acked
        if problem is None and acked == len(futs):
            probe = False
            continue
        probe = True
        stats.retries += 1
        what = _describe(problem) if problem is not None and str(problem) else "no acknowledgement"
        _say(report, f"publish failed ({what}); retrying")
        if stop.is_set():
            return False
        delay = await _backoff(delay, stop)
        if stop.is_set():
            return False
    return True


def _limit(nc: Any, exc: BaseException) -> str:
    if isinstance(exc, _nats().errors.MaxPayloadError):
        return f" (the server takes at most {nc.max_payload:,} bytes)"
    return ""


def _check_order(
    futs: list[asyncio.Future[Any]],
    acked: int,
    items: Sequence[tuple[int, bytes]],
    start: int,
    stats: BridgeStats,
    report: Report | None,
) -> None:
    """Reports a message stored while one before it was not (JetStream
    failed a message and took the next, as during a leader change): the
    stream's order then differs from the ring's at that point."""
    for i, fut in enumerate(futs[acked + 1 :], acked + 1):
        if fut.done() and not fut.cancelled() and fut.exception() is None and not fut.result().duplicate:
            stats.out_of_order += 1
            _say(
                report,
                f"warning: JetStream stored ring position {items[start + i][0]} before "
                f"{items[start + acked][0]} (a partial failure): "
                "the stream's order differs from the ring's there",
            )
            return


class _Stopped(Exception):
    """Leaves a peeked batch in the ring (the bridge was asked to stop)."""


async def ring_to_nats(
    ring: Ring,
    url: str,
    *,
    stream: str | None = None,
    batch: int = 256,
    max_inflight: int = 256,
    ack_timeout: float = 5.0,
    creds: StrPath | None = None,
    tls_ca: StrPath | None = None,
    report: Report | None = None,
    interval: float = 5.0,
    stop: asyncio.Event | None = None,
    group: str | None = None,
) -> BridgeStats:
    """Copies the messages of ``ring`` (a :class:`RingBuffer` or a path) to
    the subject of ``url`` (``nats://HOST:PORT/SUBJECT``) in JetStream, until
    ``stop`` is set (then it finishes the batch in hand, or leaves it in the
    ring if it cannot be published yet, and returns). The bridge is the
    ring's consumer: it takes up to ``batch`` messages at a time (at most
    ``max_inflight``: every message of a batch is published before the
    first acknowledgement is awaited), and consumes a batch only once all
    of it is acknowledged. The stream is the one
    named by ``stream`` (made with the subject if missing), else the stream
    that covers the subject, else a new one named by
    :func:`default_stream`. ``report`` gets one-line notices (failures,
    reconnections) and a rate line every ``interval`` seconds.

    Exactly once in the stream: each message carries ``Nats-Msg-Id`` =
    ``FILE_ID:POSITION``; a bridge restarted after a crash skips the
    records up to the subject's last message from this ring, and
    JetStream's duplicate window (2 minutes by default) drops anything else
    sent twice. Raises :class:`BridgeError` for what cannot be retried.

    ``group`` (with a path): the bridge reads the ring in that durable
    consumer group, made at the oldest message still in the ring if it does
    not exist, so that it gets every message while other groups get theirs
    too; a restarted bridge resumes where the group stands. An overwrite
    ring is refused: the bridge consumes a message only once JetStream has
    it, which needs a zero-copy read, and such a ring's writers may reclaim
    the message meanwhile."""
    if batch < 1 or max_inflight < 1:
        raise ValueError("batch and max_inflight must be at least 1")
    target = parse_url(url)
    if target.wildcard:
        raise BridgeError(f"{target.display}: a bridge cannot publish to a wildcard subject")
    stop = stop or asyncio.Event()
    stats = BridgeStats()
    rb, owned = _open(ring, group)
    link = _Link(target, report, stats)
    try:
        if rb.overwrite:
            raise BridgeError(
                f"{rb.path} is an overwrite ring: the bridge consumes a message only once JetStream has "
                "it, and such a ring's writers may overwrite it meanwhile"
            )
        file_id = _identity(rb)
        try:
            nc = await link.connect(creds, tls_ca, stop)
        except _Stopped:
            return stats  # stopped while connecting: nothing was taken

        def make_js() -> Any:
            return nc.jetstream(publish_async_max_pending=max_inflight)

        js = [make_js()]
        name = await _ensure_stream(js[0], target, stream)
        last = await _last_position(js[0], name, target.subject, file_id)
        rate = _Rate(f"{rb.path} -> {target.display}", stats, report, interval)
        where = f", ring group {rb.group!r}" if rb.group is not None else ""
        _say(report, f"bridging {rb.path} -> {target.display} (stream {name}{where})")
        take = min(batch, max_inflight)
        while not stop.is_set():
            rate.tick()
            try:
                with rb.peek_many(take, consume_on_error=False) as peeked:
                    items = [(pos, bytes(view)) for pos, view in peeked if last is None or pos > last]
                    stats.skipped += len(peeked) - len(items)
                    if not await _publish(
                        link, js, make_js, target.subject, items, file_id, ack_timeout, stop, report
                    ):
                        raise _Stopped
                    stats.messages += len(items)
                    stats.bytes += sum(len(d) for _, d in items)
            except BufferEmpty:
                await rb.wait_readable(_POLL)
            except _Stopped:
                break
        return stats
    finally:
        await link.close()
        if owned:
            rb.close()


# -- NATS to ring ---------------------------------------------------------------


async def _resync(
    js: Any,
    stream: str,
    durable: str,
    subject: str,
    max_inflight: int,
    ack_wait: float,
    first: bool,
    stop: asyncio.Event,
) -> int:
    """Makes the durable consumer deliver, in order, from its first message
    not acknowledged; returns the consumer sequence its next delivery will
    have. A consumer left with messages delivered and not acknowledged (a
    bridge died, or a connection broke) would send those again only after
    ``ack_wait``, after newer ones: it is made again from its
    acknowledgement floor instead (so is one whose settings differ from
    ours). On the ``first`` call, a consumer that another client is pulling
    from is refused: two bridges on one durable would acknowledge each
    other's messages."""
    nats = _nats()
    api = nats.js.api
    config = api.ConsumerConfig(
        durable_name=durable,
        name=durable,
        filter_subject=subject,
        ack_policy=api.AckPolicy.ALL,
        max_ack_pending=max_inflight,
        ack_wait=ack_wait,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    try:
        info = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(stream, config=config)
        return 1
    have = info.config
    if have.filter_subject != subject:
        raise BridgeError(f"consumer {durable} of stream {stream} reads {have.filter_subject}, not {subject}")
    if have.deliver_subject:
        raise BridgeError(f"consumer {durable} of stream {stream} is a push consumer: name another --durable")
    if have.ack_policy != api.AckPolicy.ALL or have.headers_only:
        # Not one a bridge made: remaking it would change another program's consumer.
        raise BridgeError(
            f"consumer {durable} of stream {stream} is not a bridge's (it acknowledges "
            f"{have.ack_policy}{', headers only' if have.headers_only else ''}): name another --durable"
        )
    if first and info.num_waiting:
        # Pull requests of a bridge that died expire within a second (_POLL * 4).
        await _backoff(_POLL * 6, stop)
        info = await js.consumer_info(stream, durable)
        if info.num_waiting:
            raise BridgeError(
                f"consumer {durable} of stream {stream} is in use by another client "
                f"({info.num_waiting} pull requests waiting): one bridge per durable"
            )
    same = have.max_ack_pending == max_inflight and abs((have.ack_wait or 0) - ack_wait) < 1e-3
    if same and not info.num_ack_pending:
        return int(info.delivered.consumer_seq) + 1 if info.delivered is not None else 1
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
    config.opt_start_seq = (floor or 0) + 1
    await js.delete_consumer(stream, durable)
    await js.add_consumer(stream, config=config)
    return 1


async def nats_to_ring(
    url: str,
    ring: Ring,
    *,
    durable: str | None = None,
    stream: str | None = None,
    batch: int = 256,
    max_inflight: int = 1024,
    ack_wait: float = 30.0,
    creds: StrPath | None = None,
    tls_ca: StrPath | None = None,
    report: Report | None = None,
    interval: float = 5.0,
    stop: asyncio.Event | None = None,
) -> BridgeStats:
    """Copies the messages of the subject of ``url`` (wildcards allowed)
    from JetStream into ``ring`` (a :class:`RingBuffer` or a path), through
    the durable pull consumer ``durable`` (by default one per ring file:
    :func:`default_durable`), until ``stop`` is set. Messages go into the
    ring in stream order; a full ring makes the bridge wait (nothing is
    fetched meanwhile). A message is acknowledged only once it is in the
    ring, so a crash loses nothing, and after one at most ``max_inflight``
    messages (the consumer's ``max_ack_pending``) are written again. The
    stream is found or made as for :func:`ring_to_nats`. One bridge per
    durable: a second one would take its messages. Raises
    :class:`BridgeError` for what cannot be retried."""
    if batch < 1 or max_inflight < 1:
        raise ValueError("batch and max_inflight must be at least 1")
    target = parse_url(url)
    stop = stop or asyncio.Event()
    stats = BridgeStats()
    rb, owned = _open(ring)
    link = _Link(target, report, stats)
    try:
        durable = durable or default_durable(_identity(rb))
        nats = _nats()
        try:
            nc = await link.connect(creds, tls_ca, stop)
        except _Stopped:
            return stats  # stopped while connecting: nothing was taken
        js = nc.jetstream()
        name = await _ensure_stream(js, target, stream)
        rate = _Rate(f"{target.display} -> {rb.path}", stats, report, interval)
        take = min(batch, max_inflight)
        last_seq = 0  # stream sequence of the last message written (this run)
        sub = None
        expect = 1  # the consumer sequence of the next delivery
        first = True
        limit = rb.max_message_size
        delay = _BACKOFF_FIRST
        while not stop.is_set():
            rate.tick()
            try:
                if sub is None:
                    expect = await _resync(
                        js, name, durable, target.subject, max_inflight, ack_wait, first, stop
                    )
                    if first:
                        _say(
                            report,
                            f"bridging {target.display} -> {rb.path} "
                            f"(stream {name}, durable consumer {durable})",
                        )
                        first = False
                    sub = await js.pull_subscribe_bind(durable=durable, stream=name)
                try:
                    msgs = await sub.fetch(take, timeout=_POLL * 4)
                except nats.errors.TimeoutError:
                    continue
                delay = _BACKOFF_FIRST
            except BridgeError:
                raise
            except Exception as exc:
                if not _retryable(nats, exc):
                    raise BridgeError(f"{target.display}: {_describe(exc)}") from None
                stats.retries += 1
                _say(report, f"fetch failed ({_describe(exc)}); retrying")
                await _drop(sub)
                sub = None
                delay = await _backoff(delay, stop)
                continue
            plan: list[tuple[Any, bool]] = []  # (message, to write) in delivery order
            gap = False
            refused = None
            for m in msgs:
                seq = m.metadata.sequence
                if seq.consumer != expect:
                    gap = True  # a delivery was lost in transit: start again from the floor
                    break
                if seq.stream <= last_seq:
                    stats.skipped += 1  # delivered again: written already
                    plan.append((m, False))
                elif not 0 < len(m.data) <= limit:
                    refused = m  # written up to it, then the bridge stops
                    break
                else:
                    plan.append((m, True))
                expect = seq.consumer + 1
            fresh = [m for m, new in plan if new]
            done = await _write(rb, [m.data for m in fresh], stop)
            if done:
                last_seq = fresh[done - 1].metadata.sequence.stream
                stats.messages += done
                stats.bytes += sum(len(m.data) for m in fresh[:done])
            # AckAll: acknowledging a message acknowledges every one before
            # it; the last one that is in the ring (written now or before).
            ackable, written = None, 0
            for m, new in plan:
                if new:
                    if written == done:
                        break
                    written += 1
                ackable = m
            if ackable is not None:
                await _ack(ackable)
            if refused is not None:
                what = (
                    "is empty" if not refused.data else f"is {len(refused.data):,} bytes, more than {limit:,}"
                )
                raise BridgeError(
                    f"message {refused.metadata.sequence.stream} of stream {name} {what}: a ring message "
                    f"is 1 to {limit:,} bytes; it stays in the stream, not acknowledged"
                )
            if gap or done < len(fresh):
                await _drop(sub)
                sub = None
        if nc.is_connected:
            try:
                await nc.flush(timeout=5)  # the last acknowledgement reaches the server
            except Exception:  # gone meanwhile: those messages come again, at most max_inflight
                pass
        return stats
    finally:
        await link.close()
        if owned:
            rb.close()


async def _write(rb: RingBuffer, datas: list[bytes], stop: asyncio.Event) -> int:
    """Writes ``datas`` in order, waiting for room; returns how many were
    written (fewer only if ``stop`` came while the ring stayed full)."""
    done = 0
    while done < len(datas):
        done += await rb.aput_many(datas[done:], timeout=_POLL)
        if stop.is_set():
            break
    return done


async def _ack(msg: Any) -> None:
    try:
        await msg.ack()
    except Exception:  # the connection is away: the floor stays, the messages come again
        pass


async def _drop(sub: Any) -> None:
    if sub is not None:
        try:
            await sub.unsubscribe()
        except Exception:  # the connection is away: nothing to drop
            pass


async def run_until_signal(coro: Callable[[asyncio.Event], Awaitable[BridgeStats]]) -> BridgeStats:
    """Runs a bridge in this loop, setting its ``stop`` on SIGINT or SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await coro(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
