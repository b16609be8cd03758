"""Shared fixtures for the ringbuffer test suite (helper functions live in _helpers.py)."""

from __future__ import annotations

import pytest

from ringbuffer import RingBuffer


@pytest.fixture
def ring_path(tmp_path):
    """A path in a fresh temporary directory where no file exists yet."""
    return tmp_path / "test.ring"


@pytest.fixture
def ring(ring_path):
    """A fresh, empty 4096-byte RingBuffer (the minimum capacity), closed afterwards."""
    rb = RingBuffer(ring_path, 4096)
    yield rb
    rb.close()


@pytest.fixture
def big_ring(tmp_path):
    """A fresh, empty 1 MiB RingBuffer, closed afterwards."""
    rb = RingBuffer(tmp_path / "big.ring", 1 << 20)
    yield rb
    rb.close()
