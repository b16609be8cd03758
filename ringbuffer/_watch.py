"""A ring watched by path, for the monitors (``ringbuffer top``,
``ringbuffer export``): a handle on the file at the path, reopened when
the file is replaced (same path, another file) and closed when it is
deleted, so that a deleted ring's memory is freed once no one maps it."""

from __future__ import annotations

import os

from ringbuffer.ring import RingBuffer

__all__ = ["WatchedRing"]


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class WatchedRing:
    """A ring path and, while it can be read, ``rb``: the handle open on the
    file that was at the path when it was opened (``identity``, its device
    and inode)."""

    __slots__ = ("identity", "path", "rb")

    def __init__(self, path: str) -> None:
        self.path = path
        self.rb: RingBuffer | None = None
        self.identity: tuple[int, int] | None = None

    def attach(self) -> RingBuffer:
        """Opens the ring at the path (closing any handle held). Raises
        OSError (FileNotFoundError if there is no file) or RingBufferError."""
        self.detach()
        for _ in range(3):
            before = _identity(self.path)
            rb = RingBuffer.open(self.path)
            # The same file before and after: the handle is on that file
            # (not on one that replaced it in between).
            try:
                after = _identity(self.path)
            except OSError:
                rb.close()
                raise
            if after == before:
                self.rb, self.identity = rb, after
                return rb
            rb.close()
        raise OSError(f"{self.path}: the file keeps being replaced")

    def detach(self) -> None:
        """Closes the handle, if any."""
        if self.rb is not None:
            self.rb.close()
        self.rb = self.identity = None

    def current(self) -> RingBuffer:
        """The handle on the file at the path now: the one held, or a new one
        if the file was replaced or none is held. Raises as :meth:`attach`
        (a path with no file closes the handle held)."""
        try:
            identity = _identity(self.path)
        except OSError:
            self.detach()
            raise
        if self.rb is not None and identity != self.identity:
            self.detach()
        return self.attach() if self.rb is None else self.rb
