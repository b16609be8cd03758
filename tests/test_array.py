"""Array messages (``put_array``/``get_array``): round trips of every dtype
kind, shape, order and layout; the message is a real ``.npy`` file
(``numpy.load`` and the C example ``examples/array_reader.c`` decode it);
sizes, blocking and timeouts; what a message that is not an array does,
forged headers included; an exception or a SIGKILL in the middle of the
copy; arrays, pickled objects and raw messages mixed on one ring.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import pathlib
import queue
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings

import numpy
import pytest
from _helpers import InThread, fill, timed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ringbuffer
from ringbuffer import (
    BufferEmpty,
    BufferFull,
    InvalidSize,
    NotAnArray,
    Queue,
    RingBuffer,
    RingBufferError,
)
from ringbuffer import _array as array_module

pytestmark = pytest.mark.usefixtures("watchdog")

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "array_reader.c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
CTX = multiprocessing.get_context("fork")
MAGIC = b"\x93NUMPY"
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def npy(a) -> bytes:
    """The file numpy.save writes for ``a`` (quiet about versions 2.0 and 3.0)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        numpy.save(out, a)
    return out.getvalue()


def zero_padding(a):
    """``a`` with the padding bytes of its structured dtype zeroed (as
    put_array leaves them: the copy writes the fields only, over zeros)."""
    fortran = a.flags.f_contiguous and not a.flags.c_contiguous
    b = numpy.zeros(a.shape, a.dtype, order="F" if fortran else "C")  # zeros_like leaves padding as it is
    b[...] = a
    return b


def load(msg: bytes):
    return numpy.load(io.BytesIO(msg), allow_pickle=False, max_header_size=1 << 20)


def data_offset(msg: bytes) -> int:
    """Where the data starts: after magic, version, length field and header."""
    if msg[6] == 1:
        return 10 + struct.unpack_from("<H", msg, 8)[0]
    return 12 + struct.unpack_from("<I", msg, 8)[0]


def header_dict(msg: bytes) -> dict:
    import ast

    start = 10 if msg[6] == 1 else 12
    return ast.literal_eval(msg[start : data_offset(msg)].decode("utf8" if msg[6] == 3 else "latin1"))


def same(out, a) -> bool:
    """Same dtype, shape and element bytes (NaNs included), field by field
    (a structured dtype's padding bytes are not data)."""
    if out.dtype != a.dtype or out.shape != a.shape:
        return False
    if a.dtype.names is None:
        return out.tobytes() == a.tobytes()
    return all(same(out[name], a[name]) for name in a.dtype.names)


def random_array(dtype, shape, seed: int = 0):
    """An array of ``dtype`` and ``shape`` holding random bytes (any bit pattern)."""
    dtype = numpy.dtype(dtype)
    n = math.prod(shape)
    raw = random.Random(seed).randbytes(n * dtype.itemsize)
    return numpy.frombuffer(raw, dtype=dtype, count=n).reshape(shape).copy()


def owned(out) -> bool:
    return out.flags.owndata and out.base is None and out.flags.writeable


# -- every dtype kind ------------------------------------------------------------------

STRUCT = numpy.dtype([("x", "<i4"), ("y", ">f8")])
NESTED = numpy.dtype(
    [("p", [("x", "<f4"), ("y", ">f4")]), ("id", "<u8"), ("tag", "S3"), ("m", "<f8", (2, 2)), ("u", ">U2")]
)
ALIGNED = numpy.dtype([("a", "u1"), ("b", "<i4"), ("c", "u1")], align=True)
NON_LATIN1 = numpy.dtype([("\u03b1", "<f4"), ("\u00df", "<i2")])  # alpha: a version 3.0 header (UTF-8)
DTYPES = {
    "bool": "?",
    "int8": "i1",
    "uint8": "u1",
    "<i2": "<i2",
    ">i2": ">i2",
    "<u2": "<u2",
    "<i4": "<i4",
    ">i4": ">i4",
    ">u4": ">u4",
    "<i8": "<i8",
    ">u8": ">u8",
    "<f2": "<f2",
    "<f4": "<f4",
    ">f4": ">f4",
    "<f8": "<f8",
    ">f8": ">f8",
    "longdouble": "g",
    "<c8": "<c8",
    ">c16": ">c16",
    "clongdouble": "G",
    "<M8[ns]": "<M8[ns]",
    ">M8[us]": ">M8[us]",
    "<M8[D]": "<M8[D]",
    "<m8[s]": "<m8[s]",
    ">m8[ps]": ">m8[ps]",
    "<U1": "<U1",
    "<U7": "<U7",
    ">U5": ">U5",
    "S1": "S1",
    "S9": "S9",
    "V6": "V6",
    "struct": STRUCT,
    "nested": NESTED,
    "aligned": ALIGNED,
    "non-latin1 names": NON_LATIN1,
}


@pytest.mark.parametrize("shape", [(), (7,), (3, 4)])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_every_dtype_kind_round_trips(big_ring, dtype, shape):
    a = random_array(dtype, shape, seed=len(shape))
    big_ring.put_array(a)
    out = big_ring.get_array(block=False)
    assert same(out, a)
    assert owned(out) and out.flags.c_contiguous


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_the_message_is_the_file_numpy_save_writes(big_ring, dtype):
    a = random_array(dtype, (3, 5), seed=1)
    big_ring.put_array(a)
    msg = big_ring.read()
    assert msg == npy(zero_padding(a))
    assert data_offset(msg) % 64 == 0
    assert same(load(msg), a)
    big_ring.put_array(numpy.asfortranarray(a))
    msg = big_ring.read()
    assert msg == npy(zero_padding(numpy.asfortranarray(a)))
    assert header_dict(msg)["fortran_order"] is True


def test_headers_take_version_2_and_3_only_when_needed(big_ring):
    many = numpy.dtype([(f"field_{i}", "<f4") for i in range(3000)])  # > 65535 bytes of header
    for dtype, version in ((STRUCT, 1), ("<f8", 1), (many, 2), (NON_LATIN1, 3)):
        a = numpy.zeros(2, dtype)
        big_ring.put_array(a)
        msg = big_ring.read()
        assert msg[6:8] == bytes((version, 0)) and msg == npy(a)
        assert data_offset(msg) % 64 == 0
        big_ring.write(msg)
        assert same(big_ring.get_array(timeout=5), a)


scalar_or_structured = st.one_of(
    hnp.scalar_dtypes(),
    hnp.array_dtypes(subtype_strategy=hnp.scalar_dtypes(), max_size=4),
    hnp.nested_dtypes(max_itemsize=64),
)


@HYPOTHESIS
@given(
    a=hnp.arrays(
        dtype=scalar_or_structured, shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
    ),
    fortran=st.booleans(),
)
def test_any_array_is_its_npy_file_and_comes_back(big_ring, a, fortran):
    if fortran:
        a = numpy.asfortranarray(a)
    big_ring.put_array(a)
    msg = big_ring.read()
    assert msg == npy(zero_padding(a))
    assert data_offset(msg) % 64 == 0
    assert same(load(msg), a)
    big_ring.write(msg)
    out = big_ring.get_array(block=False)
    assert same(out, a) and owned(out)
    assert out.flags.f_contiguous == a.flags.f_contiguous
    assert out.flags.c_contiguous == a.flags.c_contiguous


# -- shapes, orders, layouts -------------------------------------------------------------

SHAPES = [(), (5,), (2, 3), (2, 3, 4), (2, 1, 3, 2), (1, 2, 3, 2, 2), (0,), (3, 0), (2, 0, 4), (0,) * 5]


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes_from_0_to_5_dimensions_and_zero_size(big_ring, shape, order):
    a = numpy.asarray(random_array("<f8", shape, seed=3), order=order)
    big_ring.put_array(a)
    msg = big_ring.read()
    assert header_dict(msg)["shape"] == shape
    assert len(msg) == data_offset(msg) + a.nbytes
    big_ring.write(msg)
    out = big_ring.get_array(timeout=5)
    assert same(out, a) and owned(out)


def test_a_fortran_array_is_sent_as_it_is_and_arrives_in_fortran_order(big_ring):
    a = numpy.asfortranarray(random_array(">f8", (3, 4, 5), seed=4))
    big_ring.put_array(a)
    msg = big_ring.read()
    assert header_dict(msg)["fortran_order"] is True
    assert msg[data_offset(msg) :] == a.tobytes(order="F")  # the memory, unchanged
    big_ring.write(msg)
    out = big_ring.get_array(timeout=5)
    assert same(out, a)
    assert out.flags.f_contiguous and not out.flags.c_contiguous
    # A transposed C array is Fortran-contiguous too; a 1-d array is C.
    big_ring.put_array(a.T.copy().T)
    assert header_dict(big_ring.read())["fortran_order"] is True
    big_ring.put_array(numpy.arange(5.0))
    assert header_dict(big_ring.read())["fortran_order"] is False


def _views():
    a = numpy.arange(5 * 6 * 4, dtype="<i8").reshape(5, 6, 4)
    c = (numpy.arange(12) + 1j * numpy.arange(12)).reshape(3, 4)
    s = numpy.zeros(6, ALIGNED)
    s["b"] = numpy.arange(6)
    return {
        "steps": a[::2, 1::3],
        "reversed": a[::-1],
        "transposed slice": a.T[::2],
        "last index": a[..., 1],
        "broadcast": numpy.broadcast_to(numpy.arange(4.0), (3, 4)),  # read-only, stride 0
        "real part": c.real,
        "one field": s["b"],
        "strided structured": s[::2],
    }


@pytest.mark.parametrize("name", list(_views()))
def test_a_non_contiguous_array_is_sent_in_c_order(big_ring, name):
    v = _views()[name]
    assert not v.flags.c_contiguous and not v.flags.f_contiguous
    big_ring.put_array(v)
    msg = big_ring.read()
    assert header_dict(msg)["fortran_order"] is False
    if v.dtype.names is None:
        assert msg[data_offset(msg) :] == v.tobytes(order="C")
    big_ring.write(msg)
    out = big_ring.get_array(timeout=5)
    assert same(out, numpy.ascontiguousarray(v)) and out.flags.c_contiguous and owned(out)


def test_read_only_arrays_go_and_what_comes_back_is_a_writeable_copy(big_ring):
    a = numpy.arange(12.0).reshape(3, 4)
    a.setflags(write=False)
    big_ring.put_array(a)
    out = big_ring.get_array(timeout=5)
    assert same(out, a) and owned(out)
    out[0, 0] = 99.0  # its own memory: neither the sender's nor the ring's
    assert a[0, 0] == 0.0
    big_ring.put_array(a)
    assert big_ring.get_array(timeout=5)[0, 0] == 0.0


def test_dtypes_of_no_bytes_have_no_data(big_ring):
    for a in (numpy.zeros((3, 2), numpy.dtype([])), numpy.zeros(4, [("none", "V0")]), numpy.zeros(4, "V0")):
        big_ring.put_array(a)
        msg = big_ring.read()
        assert len(msg) == data_offset(msg)
        big_ring.write(msg)
        out = big_ring.get_array(timeout=5)
        assert out.dtype == a.dtype and out.shape == a.shape and owned(out)


def test_array_likes_and_subclasses_arrive_as_plain_arrays(big_ring):
    big_ring.put_array([[1, 2], [3, 4]])
    out = big_ring.get_array(timeout=5)
    assert type(out) is numpy.ndarray and out.tolist() == [[1, 2], [3, 4]]
    m = numpy.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    big_ring.put_array(m)
    out = big_ring.get_array(timeout=5)
    assert type(out) is numpy.ndarray and out.tolist() == [1.0, 2.0, 3.0]  # the mask stays behind


def test_dtype_metadata_is_dropped_with_numpys_warning(big_ring):
    dt = numpy.dtype("<f8", metadata={"unit": "m"})
    with pytest.warns(UserWarning, match="metadata"):
        big_ring.put_array(numpy.zeros(3, dt))
    out = big_ring.get_array(timeout=5)
    assert out.dtype == numpy.dtype("<f8") and out.dtype.metadata is None


def test_the_header_caches_tell_dtypes_shapes_and_orders_apart(big_ring):
    a = numpy.arange(6, dtype="<i4").reshape(2, 3)
    sent = [a, a.astype(">i4"), a.astype("<u4"), a.reshape(3, 2), numpy.asfortranarray(a), a.astype("<M8[s]")]
    for _ in range(2):  # the second time from the caches
        for x in sent:
            big_ring.put_array(x)
        for x in sent:
            out = big_ring.get_array(timeout=5)
            assert same(out, x) and out.flags.f_contiguous == x.flags.f_contiguous


def test_a_cached_header_with_the_wrong_data_length_is_not_an_array(big_ring):
    big_ring.put_array(numpy.arange(4.0))
    msg = big_ring.read()
    big_ring.write(msg)
    assert same(big_ring.get_array(timeout=5), numpy.arange(4.0))  # the header is cached now
    for bad in (msg + b"\0" * 8, msg[:-8], msg[:-1]):
        big_ring.write(bad)
        with pytest.raises(NotAnArray, match="needs 32 bytes of data"):
            big_ring.get_array(timeout=5)


# -- sizes and refusals ------------------------------------------------------------------


def test_an_array_too_large_raises_invalid_size_and_writes_nothing(ring):
    header = data_offset(npy(numpy.zeros(1, "u1")))
    fits = numpy.ones(ring.max_message_size - header, "u1")
    before = ring.positions()
    with pytest.raises(InvalidSize, match=r"message of 2049 bytes \(maximum 2048\)") as info:
        ring.put_array(numpy.ones(fits.size + 1, "u1"))
    assert isinstance(info.value, ValueError)
    assert ring.positions() == before
    with pytest.raises(BufferEmpty):
        ring.read()
    ring.put_array(fits)  # exactly the maximum
    assert same(ring.get_array(timeout=5), fits)


@pytest.mark.parametrize(
    "make",
    [
        lambda: numpy.array([1, "a", None], dtype=object),
        lambda: numpy.zeros(2, [("x", "<f8"), ("o", "O")]),
        lambda: numpy.array(["text"], dtype=numpy.dtypes.StringDType()),
    ],
    ids=["object", "object field", "StringDType"],
)
def test_arrays_of_python_objects_are_refused_and_point_to_queue(ring, make):
    with pytest.raises(TypeError, match=r"ringbuffer\.Queue"):
        ring.put_array(make())
    assert ring.positions() == (0, 0)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_an_exception_during_the_copy_writes_nothing(big_ring, monkeypatch, exc):
    a = numpy.arange(4000.0)  # 32000 bytes: copied straight into a reservation
    real = numpy.copyto

    def copy_half_then_fail(dst, src, **kwargs):
        dst.reshape(-1, order="A")[: dst.size // 2] = 7
        raise exc("in the middle of the copy")

    monkeypatch.setattr(numpy, "copyto", copy_half_then_fail)
    with pytest.raises(exc, match="middle"):
        big_ring.put_array(a)
    monkeypatch.setattr(numpy, "copyto", real)
    with pytest.raises(BufferEmpty):
        big_ring.read()
    info = big_ring.info()
    assert info["bytes_used"] == 0 and info["busy"] == 0 and info["discarded"] == 0
    big_ring.put_array(a)
    assert same(big_ring.get_array(timeout=5), a)


# -- messages that are not arrays --------------------------------------------------------


def test_a_message_that_is_not_an_array_raises_not_an_array_and_is_consumed(big_ring):
    a = numpy.arange(3.0)
    big_ring.write(b"not an array")
    big_ring.put_array(a)
    with pytest.raises(NotAnArray, match="magic") as info:
        big_ring.get_array(timeout=5)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, RingBufferError)
    assert same(big_ring.get_array(timeout=5), a)  # the ring goes on
    # A .npy of Python objects is never unpickled.
    objects = io.BytesIO()
    numpy.save(objects, numpy.array([{"a": 1}], dtype=object), allow_pickle=True)
    big_ring.write(objects.getvalue())
    with pytest.raises(NotAnArray, match="Python objects"):
        big_ring.get_array(timeout=5)
    with pytest.raises(BufferEmpty):
        big_ring.read()


def test_a_failure_while_copying_out_leaves_the_message(big_ring, monkeypatch):
    a = numpy.arange(10.0)
    big_ring.put_array(a)

    def no_memory(numpy_module, view):
        raise MemoryError

    monkeypatch.setattr(array_module, "_copy_out", no_memory)
    with pytest.raises(MemoryError):
        big_ring.get_array(timeout=5)
    monkeypatch.undo()
    assert same(big_ring.get_array(timeout=5), a)


def test_foreign_npy_files_are_read_whatever_their_padding(big_ring):
    # A writer that pads its header to 16 bytes only (cnpy does), with
    # the keys in another order and double quotes.
    a = numpy.arange(6, dtype="<i2").reshape(2, 3)
    text = "{\"shape\": (2, 3), 'fortran_order': False, 'descr': '<i2'}"
    text += " " * (-(10 + len(text) + 1) % 16) + "\n"
    msg = MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode() + a.tobytes()
    assert data_offset(msg) % 64 != 0
    big_ring.write(msg)
    assert same(big_ring.get_array(timeout=5), a)


def _forged_headers():
    ints = st.one_of(st.integers(-3, 6), st.integers(2**31, 2**70), st.just(2**63 - 1), st.just(2**63))
    shapes = st.one_of(
        st.lists(ints, max_size=4).map(tuple),
        st.lists(st.integers(0, 1), min_size=65, max_size=70).map(tuple),  # more dimensions than numpy takes
        st.lists(ints, max_size=3),
        st.tuples(st.booleans()),
        st.tuples(st.floats(0, 4)),
        st.text(max_size=4),
    )
    descrs = st.one_of(
        st.sampled_from(["<f8", "|u1", ">i4", "<U3", "|S0", "|V0", "|O", "O", "<M8[ns]", "<f3", "", "x"]),
        st.sampled_from(
            [[("a", "<i4")], [("a", "|O")], [("", "|V4")], [], ("<f4", (2,)), [("a", "<f4", (2,))]]
        ),
        st.text(max_size=6),
        st.lists(st.tuples(st.text(max_size=3), st.sampled_from(["<i4", "|u1", "junk"])), max_size=3),
        st.integers(),
    )
    fortran = st.one_of(st.booleans(), st.integers(0, 1), st.none())
    keys = st.sampled_from(
        [("descr", "fortran_order", "shape"), ("descr", "shape"), ("descr", "fortran_order", "shape", "x")]
    )

    @st.composite
    def text_of(draw):
        values = {"descr": draw(descrs), "fortran_order": draw(fortran), "shape": draw(shapes), "x": 1}
        text = repr({k: values[k] for k in draw(keys)})
        return draw(st.one_of(st.just(text), st.just(text[: len(text) // 2]), st.text(max_size=40)))

    @st.composite
    def message(draw):
        text = draw(text_of()).encode("utf8")
        version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (0, 0), (4, 0), (1, 1)]))
        size_fmt = "<H" if version[0] in (0, 1) else "<I"
        hlen = draw(
            st.one_of(st.just(len(text)), st.integers(0, 2**16 - 1 if size_fmt == "<H" else 2**32 - 1))
        )
        data = draw(st.one_of(st.binary(max_size=64), st.integers(0, 3000).map(lambda n: b"\x01" * n)))
        return MAGIC + bytes(version) + struct.pack(size_fmt, hlen) + text + data

    return st.one_of(message(), st.binary(min_size=1, max_size=64).map(lambda b: MAGIC + b))


@HYPOTHESIS
@given(msg=_forged_headers())
def test_forged_headers_never_crash_hang_or_give_a_wrong_sized_array(big_ring, msg):
    big_ring.write(msg)
    elapsed, exc, out = timed(lambda: big_ring.get_array(block=False))
    assert elapsed < 2.0
    if exc is not None:
        assert isinstance(exc, NotAnArray), repr(exc)
    else:
        assert out.nbytes == len(msg) - data_offset(msg) and owned(out)
        assert out.tobytes(order="A") == msg[data_offset(msg) :]
    assert big_ring.try_read() is None  # consumed either way


def test_a_header_running_past_the_message_is_not_an_array(big_ring):
    good = npy(numpy.arange(3.0))
    for hlen in (len(good), 2**16 - 1):
        big_ring.write(good[:8] + struct.pack("<H", hlen) + good[10:])
        with pytest.raises(NotAnArray, match="runs past"):
            big_ring.get_array(timeout=5)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ("(-1,)", "shape"),
        ("(2**64,)", "literal"),
        (f"({2**64},)", "shape"),
        ("(3, 0, -2)", "shape"),
        ("(True,)", "shape"),
        ("(1,) * 65", "literal"),
        ("(3,)", "needs 24 bytes of data, the message has 16"),
    ],
)
def test_bad_shapes_are_not_arrays(big_ring, shape, match):
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    big_ring.write(MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode() + bytes(16))
    with pytest.raises(NotAnArray, match=match):
        big_ring.get_array(timeout=5)


@pytest.mark.parametrize(
    ("descr", "match"),
    [
        ("'|O'", "Python objects"),
        ("[('a', '<i4'), ('b', '|O')]", "Python objects"),
        ("'|S0'", "numpy makes"),  # an unsized string: numpy would make it 'S1'
        ("'<U0'", "numpy makes"),
        ("('<f4', (2,))", "subarray"),
        ("'<f3'", "descr"),
        ("'junk'", "descr"),
    ],
)
def test_bad_descrs_are_not_arrays(big_ring, descr, match):
    text = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (), }}"
    big_ring.write(MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode())
    with pytest.raises(NotAnArray, match=match):
        big_ring.get_array(timeout=5)


# -- blocking, timeouts, other processes ---------------------------------------------------


def test_get_array_on_an_empty_ring_raises_buffer_empty(ring):
    elapsed, exc, _ = timed(lambda: ring.get_array(timeout=0.05))
    assert isinstance(exc, BufferEmpty) and isinstance(exc, queue.Empty)
    assert 0.05 <= elapsed < 2.0
    elapsed, exc, _ = timed(lambda: ring.get_array(block=False))
    assert isinstance(exc, BufferEmpty) and elapsed < 0.5


def test_put_array_on_a_full_ring_raises_buffer_full(full_ring):
    a = numpy.zeros(100, "u1")
    elapsed, exc, _ = timed(lambda: full_ring.put_array(a, block=False))
    assert isinstance(exc, BufferFull) and isinstance(exc, queue.Full) and elapsed < 0.5
    elapsed, exc, _ = timed(lambda: full_ring.put_array(a, timeout=0.05))
    assert isinstance(exc, BufferFull) and 0.05 <= elapsed < 2.0


def test_a_blocked_get_array_is_woken_by_put_array_and_a_blocked_put_array_by_a_read(ring):
    a = numpy.arange(20, dtype="<i4")
    waiter = InThread(ring.get_array, timeout=10)
    time.sleep(0.05)
    ring.put_array(a)
    assert waiter.join(5) and waiter.exc is None and same(waiter.result, a)
    fill(ring)
    writer = InThread(ring.put_array, a, timeout=10)
    time.sleep(0.05)
    assert not writer.done
    ring.read()
    assert writer.join(5) and writer.exc is None
    while True:
        msg = ring.read()
        if msg.startswith(MAGIC):
            break
    assert same(load(msg), a)


def _put_arrays(path: str) -> None:
    with RingBuffer.open(path) as rb:
        for i in range(5):
            rb.put_array(numpy.asfortranarray(numpy.full((64, 100, 3), i, dtype=">f4")))
        rb.put_array(numpy.arange(300_000, dtype="<i8"))


def test_a_child_process_puts_arrays_and_the_parent_gets_them(tmp_path):
    path = str(tmp_path / "ring")
    with RingBuffer(path, 1 << 23) as rb:
        child = CTX.Process(target=_put_arrays, args=(path,))
        child.start()
        for i in range(5):
            out = rb.get_array(timeout=30)
            assert out.dtype == numpy.dtype(">f4") and out.shape == (64, 100, 3) and out.flags.f_contiguous
            assert (out == i).all()
        assert same(rb.get_array(timeout=30), numpy.arange(300_000, dtype="<i8"))
        child.join(30)
        assert child.exitcode == 0


# -- a writer killed in the middle of put_array -------------------------------------------

STALL = 0.02
N = (6 << 20) // 4  # elements of uint32 per array: a copy takes milliseconds


def _produce_arrays(path: str, producer: int, started) -> None:
    """put_array for ever: element 0 the sequence number, the others
    producer + 1; ``started`` is set just before the first. The source is
    strided (every other element of a larger array): a copy of milliseconds."""
    rb = RingBuffer.open(path, stall_timeout=STALL)
    a = numpy.full((N, 2), producer + 1, dtype="<u4")[:, 0]
    started.set()
    seq = 0
    while True:
        a[0] = seq
        rb.put_array(a)
        seq += 1


def test_a_writer_killed_during_put_array_never_delivers_a_torn_array(tmp_path):
    path = str(tmp_path / "ring")
    rb = RingBuffer(path, 16 << 20, stall_timeout=STALL)
    rng = random.Random(11)
    got: dict[int, int] = {}  # producer -> arrays received, in order
    killed_mid_copy = 0

    def take(timeout: float) -> bool:
        try:
            out = rb.get_array(timeout=timeout)
        except BufferEmpty:
            return False
        assert out.shape == (N,) and out.dtype == numpy.dtype("<u4")
        producer = int(out[-1]) - 1
        # Torn: a part never written reads as zeros (the ring's free bytes are).
        assert producer >= 0 and (out[1:] == producer + 1).all(), "a torn array"
        assert int(out[0]) == got.get(producer, 0), "out of order, lost or duplicated"
        got[producer] = int(out[0]) + 1
        return True

    for p in range(15):
        started = CTX.Event()
        proc = CTX.Process(target=_produce_arrays, args=(path, p, started))
        proc.start()
        assert started.wait(30)
        # Within the first copies (the ring is empty: no wait for space),
        # or later, while this process reads as well.
        until = time.monotonic() + (rng.uniform(0, 0.008) if p % 3 else rng.uniform(0.01, 0.1))
        while time.monotonic() < until:
            if p % 3 == 0:
                take(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        killed_mid_copy += rb.info()["busy"] > 0  # its reservation is left half-written
        while take(0.3):  # what it committed; its half-written one is skipped
            pass
    while take(2.0):
        pass
    assert killed_mid_copy >= 3  # the kills did land in put_array's copy
    info = rb.info()
    assert info["busy"] == 0 and info["bytes_used"] == 0
    rb.close()


# -- the C example ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def array_reader(tmp_path_factory):
    """examples/array_reader.c, built against the installed package's header and library."""
    if CC is None:
        pytest.skip("no C compiler (cc) on PATH")
    exe = str(tmp_path_factory.mktemp("array_reader") / "array_reader")
    libdir = ringbuffer.get_library_dir()
    cmd = [
        CC,
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O1",
        str(EXAMPLE),
        f"-I{ringbuffer.get_include()}",
    ]
    cmd += [f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lringbuf", "-o", exe]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return exe


def run_reader(exe: str, path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args, str(path), "5000"], capture_output=True, text=True, timeout=60)


C_CASES = {
    "<f4 C": numpy.arange(12, dtype="<f4").reshape(3, 4) / 4,
    "<f8 F 3-d": numpy.asfortranarray(numpy.random.default_rng(1).normal(size=(2, 3, 4))),
    "<i4": numpy.arange(-50, 50, dtype="<i4"),
    "<i8 0-d": numpy.array(-(2**40), dtype="<i8"),
    "|u1 zero-size": numpy.zeros((3, 0), "u1"),
    "|u1": numpy.arange(256, dtype="u1").reshape(4, 4, 4, 4),
    ">f8 F": numpy.asfortranarray(numpy.arange(6, dtype=">f8").reshape(2, 3)),
    ">i2": numpy.arange(-5, 5, dtype=">i2"),
    "<u8 wraps": numpy.array([2**64 - 1, 2], dtype="<u8"),
    "|b1": numpy.array([[True, False], [True, True]]),
    "|i1 steps": numpy.arange(-60, 60, dtype="i1").reshape(10, 12)[::3, 1::4],
}


@pytest.mark.parametrize("name", list(C_CASES))
def test_the_c_example_reads_what_put_array_writes(array_reader, big_ring, name):
    a = C_CASES[name]
    big_ring.put_array(a)
    r = run_reader(array_reader, big_ring.path, "--values")
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in r.stdout.splitlines())
    assert lines["shape"] == str(a.shape)
    assert lines["dtype"] == a.dtype.str
    assert lines["order"] == ("F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C")
    values = a.ravel(order="C").tolist()
    if a.dtype.kind == "f":
        assert math.isclose(float(lines["sum"]), float(a.astype("<f8").sum()), rel_tol=1e-12, abs_tol=1e-12)
        assert [float(v) for v in lines["values"].split()] == values
    else:
        want = a.sum(dtype="<u8" if a.dtype.kind in "ub" else "<i8")
        assert int(lines["sum"]) == int(want)
        assert [int(v) for v in lines["values"].split()] == [int(v) for v in values]
    assert big_ring.try_read() is None


def test_the_c_example_refuses_what_it_does_not_decode(array_reader, big_ring):
    for a, says in (
        (numpy.zeros(2, "<c8"), "unsupported dtype '<c8'"),
        (numpy.zeros(2, STRUCT), "structured"),
        (numpy.zeros(2, "<f2"), "unsupported dtype '<f2'"),
    ):
        big_ring.put_array(a)
        r = run_reader(array_reader, big_ring.path)
        assert r.returncode == 1 and says in r.stderr, r.stderr
    for msg, says in ((b"hello", "no .npy magic"), (npy(numpy.arange(3.0))[:-8], "not as long as the shape")):
        big_ring.write(msg)
        r = run_reader(array_reader, big_ring.path)
        assert r.returncode == 1 and says in r.stderr, r.stderr
    assert big_ring.try_read() is None  # each consumed
    r = subprocess.run([array_reader, big_ring.path, "50"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3


# -- arrays, objects and raw messages on one ring ------------------------------------------

MIXED_DTYPES = st.sampled_from(["?", "i1", "<u2", ">i4", "<i8", "<f4", ">f8", "<c16", "<M8[ms]", "<U3", "S2"])
mixed_arrays = st.tuples(
    hnp.arrays(dtype=MIXED_DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    st.booleans(),
).map(lambda t: numpy.asfortranarray(t[0]) if t[1] else t[0])
objects = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=10,
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("array"), mixed_arrays),
        st.tuples(st.just("object"), objects),
        st.tuples(st.just("raw"), st.binary(min_size=1, max_size=200)),
        st.tuples(st.just("get"), st.none()),
        st.tuples(st.just("get_array"), st.none()),  # whatever comes next
    ),
    max_size=30,
)


@HYPOTHESIS
@given(actions=actions)
def test_arrays_objects_and_raw_messages_share_a_ring_in_order(tmp_path_factory, actions):
    path = tmp_path_factory.mktemp("mixed") / "ring"
    rb = RingBuffer(path, 1 << 20)
    q = Queue.open(path)
    model: list[tuple[str, object]] = []

    def check(kind, item):
        if kind == "array":
            out = rb.get_array(block=False)
            assert same(out, item) and out.flags.f_contiguous == item.flags.f_contiguous
        elif kind == "object":
            assert q.get(block=False) == item
        else:
            assert rb.read() == item

    try:
        for kind, item in [*actions, *[("get", None)] * 31]:
            if kind == "array":
                rb.put_array(item)
            elif kind == "object":
                q.put(item)
            elif kind == "raw":
                rb.write(item)
            elif not model:
                with pytest.raises(BufferEmpty):
                    rb.get_array(block=False) if kind == "get_array" else rb.read()
            elif kind == "get":
                check(*model.pop(0))
            elif model[0][0] == "array":
                check(*model.pop(0))
            else:  # get_array on a pickle or a raw message: refused and consumed
                with pytest.raises(NotAnArray):
                    rb.get_array(block=False)
                model.pop(0)
            if kind in ("array", "object", "raw"):
                model.append((kind, item))
        assert rb.try_read() is None
    finally:
        q.close()
        rb.close()


# -- numpy stays optional ------------------------------------------------------------------


def test_importing_ringbuffer_does_not_import_numpy():
    code = "import sys, ringbuffer; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_numpy_the_array_methods_raise_a_clear_import_error(tmp_path):
    code = f"""
import sys
sys.modules["numpy"] = None  # as if it were not installed
import ringbuffer
rb = ringbuffer.RingBuffer({str(tmp_path / "ring")!r}, 4096)
rb.write(b"x")
for call in (lambda: rb.put_array([1, 2]), lambda: rb.get_array(block=False)):
    try:
        call()
    except ImportError as e:
        print(e)
print(rb.read())
"""
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "put_array needs numpy: pip install numpy",
        "get_array needs numpy: pip install numpy",
        "b'x'",  # nothing consumed, nothing written
    ]


def test_in_process_without_numpy_put_array_raises_import_error(ring, monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ImportError, match="pip install numpy"):
        ring.put_array([1])
    with pytest.raises(ImportError, match="get_array needs numpy"):
        ring.get_array(timeout=5)
