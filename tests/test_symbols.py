"""The binding's declarations (ringbuffer/_cdef.h) match exactly what
libringbuf.so exports, and the library exports nothing but rb_* functions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import ringbuffer

NM = shutil.which("nm") or "nm"  # binutils: .ci/run installs it (a missing nm fails, not skips)
# The binding's declarations, from the source tree (a wheel does not ship _cdef.h).
CDEF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ringbuffer", "_cdef.h")
HEADER = os.path.join(ringbuffer.get_include(), "ringbuf.h")
LIBRARY = os.path.join(ringbuffer.get_library_dir(), "libringbuf.so.0")


def strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def declared_functions(path: str) -> set[str]:
    """Names of the rb_* functions a header declares (comments ignored)."""
    # Preprocessor lines skipped: rb_info() is a macro over rb_info_sized().
    return set(re.findall(r"\b(rb_\w+)\s*\(", re.sub(r"(?m)^\s*#.*", "", strip_comments(open(path).read()))))


def dynamic_symbols() -> list[tuple[str, str]]:
    """(type, name) of every defined dynamic symbol of libringbuf.so."""
    out = subprocess.run(
        [NM, "-D", "--defined-only", LIBRARY], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            syms.append((parts[-2], parts[-1]))
    return syms


def test_cdef_declares_functions():
    names = declared_functions(CDEF)
    assert {"rb_create", "rb_open", "rb_write", "rb_read", "rb_close"} <= names
    assert len(names) >= 13


def test_cdef_matches_public_header():
    # rb_rec_* style inline helpers live in internal.h, not in the public header
    assert declared_functions(CDEF) == declared_functions(HEADER)


def test_cdef_functions_equal_exported_symbols():
    exported = {name for kind, name in dynamic_symbols() if kind == "T"}
    assert declared_functions(CDEF) == exported


def test_library_exports_only_rb_functions():
    syms = dynamic_symbols()
    assert syms, "nm found no dynamic symbols"
    leaked = [(kind, name) for kind, name in syms if not name.startswith("rb_")]
    assert leaked == []
    not_text = [(kind, name) for kind, name in syms if kind != "T"]
    assert not_text == []
