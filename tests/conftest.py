"""Shared fixtures for the ringbuffer test suite (helper functions live in _helpers.py)."""

from __future__ import annotations

import faulthandler

import pytest
from _helpers import fill

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


@pytest.fixture
def other(ring, ring_path):
    """A second handle on `ring`'s file."""
    rb = RingBuffer.open(ring_path)
    yield rb
    rb.close()


@pytest.fixture
def full_ring(ring):
    """`ring` filled with four 1000-byte messages (64 bytes stay free)."""
    assert fill(ring) == 4
    return ring


@pytest.fixture
def watchdog():
    """A hang in a blocking call dumps every thread's traceback and ends the run
    (used automatically by the blocking and zero-copy tests)."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def nats_server(tmp_path):
    """A real nats-server with JetStream on 127.0.0.1 (a free port, a file
    store under tmp_path), stopped afterwards; ``.kill()`` and ``.restart()``
    for the crash tests."""
    from _nats import NatsServer

    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()
