"""Argument conversions shared by the RingBuffer and its blocks: what a
caller may pass (paths, sizes, buffers) turned into what the C calls take,
with Python's usual TypeError and ValueError for what cannot be."""

from __future__ import annotations

import operator
import os
from typing import Any

__all__ = ["SIZE_MAX", "contiguous", "path_arg", "size_arg"]

SIZE_MAX = 2**64 - 1  # size_t


def path_arg(path: Any) -> bytes:
    """A path (str, bytes, os.PathLike) as the bytes C takes."""
    bpath = os.fsencode(path)
    if b"\0" in bpath:
        raise ValueError("embedded null byte in path")
    return bpath


def size_arg(size: Any) -> int:
    """An integer size as a size_t; one out of range becomes 0, which the C
    side refuses (RB_EINVAL or RB_ESIZE, as it would any bad size)."""
    if isinstance(size, bool):
        raise TypeError("size must be an integer, not bool")
    n = operator.index(size)  # TypeError for non-integers
    return n if 0 <= n <= SIZE_MAX else 0


def contiguous(msg: Any) -> Any:
    """msg itself if it is a C-contiguous buffer, else a bytes copy of it
    (TypeError if it is not a bytes-like object at all)."""
    if type(msg) is bytes:
        return msg
    view = memoryview(msg)
    return msg if view.c_contiguous else view.tobytes()
