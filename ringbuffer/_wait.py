"""The waiting policy of the blocking calls: how a timeout is checked and how
a wait is cut into slices so that Python's signal handlers run (Ctrl-C) while
a C call waits. No ring state lives here."""

from __future__ import annotations

import numbers
import time
from typing import Any, Callable, Optional

from ringbuffer.exceptions import Status

__all__ = ["STALL_DEFAULT", "Timeout", "check_timeout", "stall_ns", "wait"]

Timeout = Optional[float]

# A blocking call waits in C for at most this long before coming back to
# Python, which then runs signal handlers (Ctrl-C) and waits again.
SLICE_NS = 50_000_000
# A timeout longer than this (about 32 years; also inf, or an int too large
# for a float) waits forever, like None.
TIMEOUT_FOREVER = 1e9
# The C library's default stall timeout (rb_set_stall_timeout), in seconds.
STALL_DEFAULT = 0.1

_ETIMEDOUT = int(Status.ETIMEDOUT)
_EINTR = int(Status.EINTR)


def check_timeout(timeout: float) -> Timeout:
    """queue.Queue's rule: a negative timeout is an error (even when no wait
    is needed), and so is NaN; a non-number raises TypeError from the
    comparison. Returns the timeout to wait with: None (forever) for one
    beyond TIMEOUT_FOREVER (inf, 10**400), which deadline arithmetic cannot take."""
    if not timeout >= 0:
        raise ValueError("'timeout' must be a non-negative number")
    return None if timeout > TIMEOUT_FOREVER else timeout


def wait(fn: Callable[..., int], *args: Any, timeout: Timeout) -> int:
    """Calls a C ``*_wait`` function until it succeeds or ``timeout`` seconds
    (None: forever) pass, in slices so that signal handlers run in between.

    The C call returns ``RB_EINTR`` (having done nothing) when a signal
    arrives while it sleeps: back here, Python runs the handler before the
    next call, so Ctrl-C raises KeyboardInterrupt without losing a message.
    """
    if timeout is not None:
        timeout = check_timeout(timeout)
    if timeout is None:
        while True:
            rc = fn(*args, SLICE_NS)
            if rc != _ETIMEDOUT and rc != _EINTR:
                return rc
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        ns = int(remaining * 1e9) if remaining > 0 else 0
        rc = fn(*args, min(ns, SLICE_NS))
        if rc == _EINTR:
            continue  # the deadline is checked on the next round
        if rc != _ETIMEDOUT or ns <= SLICE_NS:
            return rc


def stall_ns(stall_timeout: float | None) -> int:
    """Seconds (None: never) as rb_set_stall_timeout's nanoseconds."""
    if stall_timeout is None:
        return -1
    if not isinstance(stall_timeout, numbers.Real):
        kind = type(stall_timeout).__name__
        raise TypeError(f"stall_timeout must be a number of seconds or None, not {kind}")
    seconds = float(stall_timeout)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"stall_timeout must be a finite number >= 0 or None, not {stall_timeout!r}")
    return min(int(seconds * 1e9), 2**62)
