"""``ringbuffer export``: rings' counters and gauges on ``/metrics`` in the
Prometheus text format, through prometheus_client (the ``prometheus`` extra).

Nothing polls in the background: :class:`RingCollector` reads every ring when
Prometheus scrapes. Per ring it calls :meth:`RingBuffer.stats` and
:meth:`RingBuffer.info` with ``count=False``, which read the file's header and
slot table and never take the read turn, so a scrape never holds consumers
up, nor takes over a dead consumer's turn. For the same reason the number of
messages waiting is not exported (counting them walks the ring under the read
turn): ``ringbuffer_bytes_used`` is the fill level, and
``ringbuffer_messages_written_total - ringbuffer_messages_read_total`` the
messages committed and not yet consumed.

A ring file deleted or replaced (another inode at the path, as ``ringbuffer
create --remove`` makes) is closed at the next scrape and the path opened
again: the counters then are the new ring's, and while no ring can be opened
there the ring reports ``ringbuffer_up 0`` and no other series.

Only the command line (ringbuffer/cli.py) imports this module, so that the
package never imports prometheus_client otherwise.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Callable, NamedTuple, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ringbuffer._watch import WatchedRing
from ringbuffer.exceptions import RingBufferError

__all__ = ["COUNTERS", "GAUGES", "UP", "Metrics", "RingCollector", "serve"]


class Spec(NamedTuple):
    """One exported metric: its name, the key of the value it takes from a
    ring's reading (``RingCollector._read``), and its HELP text."""

    name: str
    key: str
    help: str


# The README's metric table lists these (tests/test_export.py checks it).
COUNTERS = (
    Spec("ringbuffer_messages_written_total", "written", "Messages committed since the ring was created."),
    Spec("ringbuffer_bytes_written_total", "written_bytes", "Payload bytes of the messages committed."),
    Spec("ringbuffer_messages_read_total", "read", "Messages consumed since the ring was created."),
    Spec("ringbuffer_bytes_read_total", "read_bytes", "Payload bytes of the messages consumed."),
    Spec("ringbuffer_aborted_total", "aborted", "Reservations aborted instead of committed."),
    Spec(
        "ringbuffer_full_total",
        "full",
        "Non-blocking writes that found no room (a blocking put makes one before it waits).",
    ),
    Spec(
        "ringbuffer_empty_total",
        "empty",
        "Non-blocking reads and peeks that found no message (a blocking get makes one before it waits).",
    ),
    Spec("ringbuffer_parks_total", "parks", "Times a waiting producer or consumer went to sleep."),
    Spec("ringbuffer_parked_seconds_total", "parked_seconds", "Seconds waiting calls spent asleep."),
    Spec("ringbuffer_wakes_total", "wakes", "Wake-up calls made for sleeping producers or consumers."),
    Spec("ringbuffer_recovered_total", "recovered", "Dead writers' records (or unwritten gaps) discarded."),
    Spec("ringbuffer_turns_taken_total", "turns_taken", "Read turns taken over from dead consumers."),
)
GAUGES = (
    Spec(
        "ringbuffer_bytes_used",
        "bytes_used",
        "Bytes in use: messages waiting and records being written or aborted, with their headers.",
    ),
    Spec("ringbuffer_capacity_bytes", "capacity", "Capacity of the ring in bytes."),
    Spec("ringbuffer_max_message_bytes", "max_message_size", "Largest message the ring takes, in bytes."),
    Spec("ringbuffer_waiting_producers", "waiting_producers", "Producers parked waiting for space."),
    Spec("ringbuffer_waiting_consumers", "waiting_consumers", "Consumers parked waiting for a message."),
    Spec(
        "ringbuffer_attached_handles",
        "attached",
        "Handles open on the ring in any process, the exporter's own excluded.",
    ),
    Spec(
        "ringbuffer_created_timestamp_seconds",
        "created",
        "When the ring was created, in seconds since the Unix epoch.",
    ),
)
UP = Spec("ringbuffer_up", "up", "1 if the ring could be opened and read at this scrape, else 0.")

# Called when a ring becomes unreadable (with the reason) or readable again (None).
Notify = Callable[[str, Optional[BaseException]], None]


class RingCollector(Collector):
    """A prometheus_client collector for a fixed list of ring paths, read at
    each scrape (thread-safe: concurrent scrapes take turns).

    ``notify(path, reason)`` is called from the scraping thread when a ring
    that could be read cannot any more, with the exception, and with None
    when it can be read again; :meth:`open` reports nothing.
    """

    def __init__(self, paths: Sequence[str], notify: Notify | None = None) -> None:
        self._rings = [WatchedRing(p) for p in dict.fromkeys(paths)]  # duplicates once, in order
        # The last reason reported for each ring, None while it is readable.
        self._problems: dict[str, str | None] = {w.path: None for w in self._rings}
        self._notify = notify
        self._lock = threading.Lock()
        self._closed = False

    @property
    def paths(self) -> list[str]:
        return [w.path for w in self._rings]

    def open(self) -> dict[str, BaseException]:
        """Opens every ring now; returns the reason of each that could not
        be opened, by path (those report ``ringbuffer_up 0`` until they can)."""
        failed: dict[str, BaseException] = {}
        with self._lock:
            for w in self._rings:
                try:
                    w.attach()
                except (OSError, RingBufferError) as exc:
                    failed[w.path] = exc
                    self._problems[w.path] = str(exc)
        return failed

    def _read(self, w: WatchedRing) -> dict[str, Any]:
        """The values of one ring's metrics, by :class:`Spec` key. Raises
        what :meth:`WatchedRing.current` raises."""
        rb = w.current()
        values: dict[str, Any] = rb.stats()
        info = rb.info(count=False)
        values.update(
            bytes_used=max(0, info["bytes_used"]),
            capacity=info["capacity"],
            max_message_size=info["max_message_size"],
            waiting_producers=info["waiting_producers"],
            waiting_consumers=info["waiting_consumers"],
            attached=max(0, info["attached"] - 1),  # this exporter's handle is one
        )
        return values

    def _read_or_none(self, w: WatchedRing) -> dict[str, Any] | None:
        """read(), or None (and the handle closed) when the ring cannot be
        read; notifies changes."""
        try:
            values = self._read(w)
        except Exception as exc:  # never fail a scrape: report up 0
            w.detach()
            if self._problems[w.path] != str(exc):
                self._problems[w.path] = str(exc)
                if self._notify is not None:
                    self._notify(w.path, exc)
            return None
        if self._problems[w.path] is not None:
            self._problems[w.path] = None
            if self._notify is not None:
                self._notify(w.path, None)
        return values

    def collect(self) -> Iterator[Metric]:
        """The metrics of every ring, read now."""
        with self._lock:
            if self._closed:
                return
            readings = [(w.path, self._read_or_none(w)) for w in self._rings]
        up = GaugeMetricFamily(UP.name, UP.help, labels=["ring"])
        for path, values in readings:
            up.add_metric([path], 0 if values is None else 1)
        yield up
        for kind, specs in ((CounterMetricFamily, COUNTERS), (GaugeMetricFamily, GAUGES)):
            for spec in specs:
                family = kind(spec.name, spec.help, labels=["ring"])
                for path, values in readings:
                    if values is not None:
                        family.add_metric([path], values[spec.key])
                yield family

    def describe(self) -> list[Metric]:
        """Nothing: registering the collector must not read the rings."""
        return []

    def close(self) -> None:
        """Closes every ring; later scrapes report nothing."""
        with self._lock:
            self._closed = True
            for w in self._rings:
                w.detach()


# -- the HTTP server --------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No line on standard error per request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request, none of them keeping the process alive."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-reply: nothing to tell anyone


class Metrics:
    """The HTTP server of :func:`serve`, running in a thread of its own."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        """Stops serving and closes the socket (a scrape under way finishes)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(collector: RingCollector, host: str, port: int) -> Metrics:
    """Serves ``collector``'s metrics (and no others: a registry of its own)
    at ``http://host:port/metrics`` from a thread. Raises OSError if the
    address cannot be resolved or bound."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_Server):
        address_family = family

    server = make_server(sockaddr[0], port, make_wsgi_app(registry), Server, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="ringbuffer-export", daemon=True)
    thread.start()
    return Metrics(server, thread)
