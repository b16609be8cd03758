"""asyncio for rings: the coroutines of :class:`~ringbuffer.RingBuffer` and
:class:`~ringbuffer.Queue` (``aget``, ``aput``, ``aputv``, ``aget_many``,
``aput_many``, ``async for``).

A coroutine first tries the non-blocking call: when a message (or room) is
there, it returns without suspending. Otherwise it waits for the handle's
event descriptor (``rb_event_fd``) with the loop's ``add_reader``, never in a
C wait, then tries again. A non-blocking call that finds the ring empty (or
full) re-arms the descriptor in C, so a woken coroutine that finds nothing
sleeps again instead of spinning. Cancellation loses nothing: messages move
only in the non-blocking calls, never while a coroutine is suspended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ringbuffer._handle import Handle
from ringbuffer._wait import Timeout, check_timeout
from ringbuffer.exceptions import BufferClosed, Status, error

if TYPE_CHECKING:
    from ringbuffer.ring import RingBuffer

__all__ = ["READABLE", "WRITABLE", "aget", "aget_many", "aput", "aput_many", "aputv", "iterate", "wait_ready"]

T = TypeVar("T")

# RB_EV_READABLE and RB_EV_WRITABLE (checked against the header by a test).
READABLE = 1
WRITABLE = 2


def _wake_all(loop: asyncio.AbstractEventLoop, handle: Handle, key: tuple[Any, int]) -> None:
    """The loop's reader callback: the descriptor polls readable. Wakes
    every coroutine waiting on it and stops watching it until one waits
    again (the descriptor stays readable until a call re-arms it)."""
    waiters = handle.fd_waiters.pop(key, None)
    loop.remove_reader(key[1])
    for fut in waiters or ():
        if not fut.done():
            fut.set_result(True)


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


async def wait_ready(handle: Handle, events: int, timeout: float | None) -> bool:
    """Waits until the handle's event descriptor for ``events`` polls
    readable (True) or ``timeout`` seconds pass (False). Several coroutines
    of one loop may wait on one descriptor: one reader callback serves them."""
    fd = handle.event_fd(events)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()
    key = (loop, fd)
    waiters = handle.fd_waiters.get(key)
    if waiters is None:
        waiters = handle.fd_waiters[key] = set()
        loop.add_reader(fd, _wake_all, loop, handle, key)
    waiters.add(fut)
    timer = None if timeout is None else loop.call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        if timer is not None:
            timer.cancel()
        waiters.discard(fut)
        if not waiters and handle.fd_waiters.get(key) is waiters:
            del handle.fd_waiters[key]
            loop.remove_reader(fd)


def _deadline(timeout: Timeout) -> float | None:
    if timeout is None:
        return None
    t = check_timeout(timeout)
    return None if t is None else asyncio.get_running_loop().time() + t


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - asyncio.get_running_loop().time()


async def _retry(
    handle: Handle,
    events: int,
    timeout: Timeout,
    attempt: Callable[[], T | None],
    expired: Callable[[], T],
) -> T:
    """Waits for the descriptor, then calls ``attempt`` (a non-blocking
    call: None when it found the ring empty, or full), until it gives a
    result; ``expired()`` gives (or raises) what a timeout means."""
    deadline = _deadline(timeout)
    while True:
        left = _remaining(deadline)
        if left is not None and left <= 0:
            return expired()
        await wait_ready(handle, events, left)
        result = attempt()
        if result is not None:
            return result


def _raise(status: Status) -> Callable[[], Any]:
    def expired() -> Any:
        raise error(status)

    return expired


async def aget(ring: RingBuffer, handle: Handle, timeout: Timeout) -> bytes:
    """``RingBuffer.aget`` once the first try found nothing."""
    return await _retry(handle, READABLE, timeout, ring.try_read, _raise(Status.EEMPTY))


async def aget_many(ring: RingBuffer, handle: Handle, max_messages: int, timeout: Timeout) -> list[bytes]:
    """``RingBuffer.aget_many`` once the first try found nothing."""
    return await _retry(
        handle, READABLE, timeout, lambda: ring.read_many(max_messages) or None, _raise(Status.EEMPTY)
    )


async def aput(ring: RingBuffer, handle: Handle, msg: Any, timeout: Timeout) -> None:
    """``RingBuffer.aput`` once the first try found no room."""
    await _retry(
        handle, WRITABLE, timeout, lambda: True if ring.try_write(msg) else None, _raise(Status.EFULL)
    )


async def aputv(handle: Handle, attempt: Callable[[], bool], timeout: Timeout) -> None:
    """``RingBuffer.aputv`` once the first try found no room: ``attempt``
    is that non-blocking write again (False: still no room)."""
    await _retry(handle, WRITABLE, timeout, lambda: True if attempt() else None, _raise(Status.EFULL))


async def aput_many(ring: RingBuffer, handle: Handle, msgs: list[Any], done: int, timeout: Timeout) -> int:
    """``RingBuffer.aput_many`` once the first try left messages unwritten
    (``done`` were written): returns how many were written in all."""

    def attempt() -> int | None:
        nonlocal done
        done += ring.write_many(msgs[done:])
        return done if done == len(msgs) else None

    return await _retry(handle, WRITABLE, timeout, attempt, lambda: done)


async def iterate(ring: RingBuffer) -> AsyncIterator[bytes]:
    """``async for msg in ring``: ends when the ring is closed."""
    while True:
        try:
            yield await ring.aget()
        except BufferClosed:
            return
