"""The error model: every row of the README's "Status codes and exceptions"
table, provoked from Python, gives the documented exception with its
``.code`` and the C message; the exception classes and the status codes
are what the README says."""

from __future__ import annotations

import errno
import pathlib
import queue
import re
import signal
import warnings

import pytest
from _helpers import OFF_VERSION, fill, poke_u32

import ringbuffer
import ringbuffer.exceptions
from ringbuffer import (
    BufferClosed,
    BufferEmpty,
    BufferFull,
    CorruptBuffer,
    GroupNotFound,
    InvalidArgument,
    InvalidSize,
    MessagesLost,
    RingBuffer,
    RingBufferError,
    Status,
    TooManyGroups,
    UnsupportedVersion,
)
from ringbuffer.ring import ffi, lib

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def strerror(code: int) -> str:
    return ffi.string(lib.rb_strerror(code)).decode()


def readme_status_table() -> dict[str, str]:
    """C status name -> the README's "Python exception" cell."""
    text = README.read_text()
    section = text.split("## Status codes and exceptions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(RB_[A-Z]+)`[^|]*\|[^|]*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


# --- one case per row of the README's table ------------------------------------
# Each returns the exception the row's situation raises from Python (or None
# where the row says nothing is raised).


def provoke_ok(tmp_path):
    with RingBuffer(tmp_path / "r", 4096) as rb:
        rb.write(b"x")
        assert rb.read() == b"x"
    return None


def provoke_efull(tmp_path):
    with RingBuffer(tmp_path / "r", 4096) as rb:
        fill(rb, 100)
        with pytest.raises(RingBufferError) as ei:
            rb.write(b"x" * 100)
    return ei.value


def provoke_eempty(tmp_path):
    with RingBuffer(tmp_path / "r", 4096) as rb, pytest.raises(RingBufferError) as ei:
        rb.read()
    return ei.value


def provoke_esize(tmp_path):
    with RingBuffer(tmp_path / "r", 4096) as rb, pytest.raises(RingBufferError) as ei:
        rb.write(b"x" * 2049)
    assert "2049" in str(ei.value) and "2048" in str(ei.value)
    return ei.value


def provoke_eclosed(tmp_path):
    rb = RingBuffer(tmp_path / "r", 4096)
    rb.close()
    with pytest.raises(RingBufferError) as ei:
        rb.write(b"x")
    return ei.value


def provoke_etimedout(tmp_path):
    # The queue.Queue rule: a timeout is BufferFull when writing...
    with RingBuffer(tmp_path / "r", 4096) as rb:
        fill(rb, 100)
        with pytest.raises(RingBufferError) as ei:
            rb.put(b"x" * 100, timeout=0.01)
    assert type(ei.value) is BufferFull and ei.value.code == Status.EFULL
    # ... and BufferEmpty when reading, for every blocking call.
    with RingBuffer(tmp_path / "r2", 4096) as rb:
        calls = [
            lambda: rb.get(timeout=0.01),
            lambda: rb.get_many(4, timeout=0.01),
            lambda: rb.read_into(bytearray(8), block=True, timeout=0.01),
            lambda: rb.peek(block=True, timeout=0.01).__enter__(),
        ]
        for call in calls:
            with pytest.raises(RingBufferError) as ej:
                call()
            assert type(ej.value) is BufferEmpty and ej.value.code == Status.EEMPTY
    return ei.value


def provoke_ecorrupt(tmp_path):
    path = tmp_path / "not-a-ring"
    path.write_bytes(b"\0" * 8192)
    with pytest.raises(RingBufferError) as ei:
        RingBuffer.open(path)
    assert str(path) in str(ei.value)
    return ei.value


def provoke_eversion(tmp_path):
    path = tmp_path / "r"
    RingBuffer(path, 4096).close()
    poke_u32(path, OFF_VERSION, lib.RB_FORMAT_VERSION + 1)
    with pytest.raises(RingBufferError) as ei:
        RingBuffer.open(path)
    assert f"({lib.RB_FORMAT_VERSION})" in str(ei.value)  # names our version
    return ei.value


def provoke_etrunc(tmp_path):
    with RingBuffer(tmp_path / "r", 1 << 20) as rb:
        # Inside read: a message larger than the pooled read buffer just works.
        rb.write(b"L" * (100 * 1024))
        assert rb.read() == b"L" * (100 * 1024)
        rb.write(b"y" * 10)
        with pytest.raises(RingBufferError) as ei:
            rb.read_into(bytearray(4))
        assert ei.value.needed == 10
        assert rb.read() == b"y" * 10  # nothing consumed
    return ei.value


def provoke_einval(tmp_path):
    with pytest.raises(RingBufferError) as ei:
        RingBuffer(tmp_path / "r", 0)
    return ei.value


def provoke_eintr(tmp_path):
    # A signal during a wait runs its handler and the wait goes on: the call
    # ends by its timeout, as if no signal had come.
    handled = []
    old = signal.signal(signal.SIGALRM, lambda *a: handled.append(1))
    try:
        with RingBuffer(tmp_path / "r", 4096) as rb:
            signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
            try:
                with pytest.raises(RingBufferError) as ei:
                    rb.get(timeout=0.3)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert handled
    assert type(ei.value) is BufferEmpty  # the timeout, not RB_EINTR
    return None


def provoke_esys(tmp_path):
    path = tmp_path / "missing" / "r"
    with pytest.raises(OSError) as ei:
        RingBuffer.open(path)
    assert ei.value.errno == errno.ENOENT and ei.value.filename == str(path)
    return ei.value


def provoke_elost(tmp_path):
    path = tmp_path / "r"
    with RingBuffer(path, 4096, overwrite=True) as rb:
        for _ in range(20):  # 16 records of 256 bytes fit: the first 4 are overwritten
            rb.write(b"x" * 248)
        with pytest.raises(RingBufferError) as ei:
            rb.read()
        assert ei.value.count == 4 and str(ei.value).endswith(": 4 messages lost")
        assert rb.read() == b"x" * 248  # then the oldest message still there
    return ei.value


def provoke_enogroup(tmp_path):
    with RingBuffer(tmp_path / "r", 4096, default_group=False) as rb, pytest.raises(RingBufferError) as ei:
        rb.get(timeout=10)  # at once: no group, no wait
    return ei.value


def provoke_egroups(tmp_path):
    path = tmp_path / "r"
    RingBuffer(path, 4096).close()
    for i in range(lib.RB_GROUPS_MAX - 1):  # and the default group
        RingBuffer.open(path, group=f"g{i}").close()
    with pytest.raises(RingBufferError) as ei:
        RingBuffer.open(path, group="more")
    return ei.value


CASES = {
    "RB_OK": (provoke_ok, None, None),
    "RB_EFULL": (provoke_efull, BufferFull, "RB_EFULL"),
    "RB_EEMPTY": (provoke_eempty, BufferEmpty, "RB_EEMPTY"),
    "RB_ESIZE": (provoke_esize, InvalidSize, "RB_ESIZE"),
    "RB_ECLOSED": (provoke_eclosed, BufferClosed, "RB_ECLOSED"),
    "RB_ETIMEDOUT": (provoke_etimedout, BufferFull, "RB_EFULL"),
    "RB_ECORRUPT": (provoke_ecorrupt, CorruptBuffer, "RB_ECORRUPT"),
    "RB_EVERSION": (provoke_eversion, UnsupportedVersion, "RB_EVERSION"),
    "RB_ETRUNC": (provoke_etrunc, InvalidSize, "RB_ETRUNC"),
    "RB_EINVAL": (provoke_einval, InvalidArgument, "RB_EINVAL"),
    "RB_EINTR": (provoke_eintr, None, None),
    "RB_ESYS": (provoke_esys, FileNotFoundError, None),
    "RB_ELOST": (provoke_elost, MessagesLost, "RB_ELOST"),
    "RB_ENOGROUP": (provoke_enogroup, GroupNotFound, "RB_ENOGROUP"),
    "RB_EGROUPS": (provoke_egroups, TooManyGroups, "RB_EGROUPS"),
}


def test_the_readme_table_has_a_row_for_every_status_code_and_no_other():
    assert set(readme_status_table()) == {f"RB_{s.name}" for s in Status} == set(CASES)


@pytest.mark.parametrize("status", sorted(CASES))
def test_every_row_of_the_readme_table_holds(status, tmp_path):
    provoke, cls, code_name = CASES[status]
    cell = readme_status_table()[status]
    exc = provoke(tmp_path)
    if cls is None:
        assert exc is None
        assert cell == "—" or "never raised" in cell
        return
    assert type(exc) is cls
    # The README names the class (for RB_ESYS, OSError and the subclass).
    assert cls.__name__ in cell or (cls.__mro__[1].__name__ in cell and "OSError" in cell)
    if code_name is None:  # an OSError: errno and filename checked by its case
        assert "OSError" in cell
        return
    code = getattr(lib, code_name)
    assert exc.code == code and isinstance(exc.code, Status)
    assert str(exc).startswith(strerror(code))  # the C message, then any detail
    # Each builtin the README names beside the class is a base of it.
    for builtin in re.findall(r"\(also `(queue\.Full|queue\.Empty|ValueError|LookupError)`\)", cell):
        base = {
            "queue.Full": queue.Full,
            "queue.Empty": queue.Empty,
            "ValueError": ValueError,
            "LookupError": LookupError,
        }[builtin]
        assert isinstance(exc, base), (status, builtin)


# --- the classes and codes ---------------------------------------------------------


def test_exception_hierarchy():
    assert issubclass(BufferFull, queue.Full)
    assert issubclass(BufferEmpty, queue.Empty)
    assert issubclass(InvalidSize, ValueError)
    assert issubclass(BufferClosed, ValueError)
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(UnsupportedVersion, CorruptBuffer)
    assert issubclass(GroupNotFound, LookupError)
    assert not issubclass(MessagesLost, (ValueError, LookupError, OSError))
    assert not issubclass(TooManyGroups, (ValueError, LookupError, OSError))
    for exc in (
        BufferFull,
        BufferEmpty,
        InvalidSize,
        BufferClosed,
        InvalidArgument,
        CorruptBuffer,
        MessagesLost,
        GroupNotFound,
        TooManyGroups,
    ):
        assert issubclass(exc, RingBufferError)
    assert issubclass(RingBufferError, Exception)
    assert not issubclass(RingBufferError, OSError)
    assert not issubclass(CorruptBuffer, (ValueError, OSError))
    for name in ringbuffer.exceptions.__all__:
        assert getattr(ringbuffer, name) is getattr(ringbuffer.exceptions, name)
        assert name in ringbuffer.__all__


def test_status_names_the_c_codes_with_their_documented_values():
    expected = {
        "OK": 0,
        "EFULL": -1,
        "EEMPTY": -2,
        "ESIZE": -3,
        "ECLOSED": -4,
        "ETIMEDOUT": -5,
        "ECORRUPT": -6,
        "ETRUNC": -7,
        "EINVAL": -8,
        "ESYS": -9,
        "EINTR": -10,
        "EVERSION": -11,
        "ELOST": -12,
        "ENOGROUP": -13,
        "EGROUPS": -14,
    }
    assert {s.name: int(s) for s in Status} == expected
    for name, value in expected.items():
        assert getattr(lib, f"RB_{name}") == value


def test_error_gives_the_class_code_and_message_of_any_status():
    for status in Status:
        if status == Status.ESYS:
            continue
        exc = ringbuffer.exceptions.error(status, detail="why")
        assert isinstance(exc, RingBufferError)
        assert exc.code is status
        assert str(exc) == f"{strerror(status)}: why"
    # A code this binding does not know (a newer library): the base class, the C text.
    exc = ringbuffer.exceptions.error(-99)
    assert type(exc) is RingBufferError and exc.code == -99
    assert str(exc) == strerror(-99) != ""


def test_ring_buffer_timeout_is_deprecated_never_raised_and_still_importable():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from ringbuffer import RingBufferTimeout
        from ringbuffer.exceptions import RingBufferTimeout as again
    assert RingBufferTimeout is again
    assert caught and all(issubclass(w.category, DeprecationWarning) for w in caught)
    assert "never raised" in str(caught[0].message)
    assert issubclass(RingBufferTimeout, (RingBufferError, TimeoutError))
    assert "RingBufferTimeout" not in ringbuffer.__all__
    for cls in (BufferFull, BufferEmpty):
        assert not issubclass(cls, RingBufferTimeout)


def test_unknown_attributes_still_raise_attribute_error():
    with pytest.raises(AttributeError):
        ringbuffer.NoSuchThing  # noqa: B018
    with pytest.raises(AttributeError):
        ringbuffer.exceptions.NoSuchThing  # noqa: B018
