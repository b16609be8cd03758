"""The package's seams: which modules may touch the cffi binding, and that
the zero-copy blocks talk to the ring only through its Handle."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import ringbuffer

PACKAGE = pathlib.Path(ringbuffer.__file__).resolve().parent
# The rule in ring.py's docstring.
BINDING_MODULES = {"ring", "_zerocopy", "_handle", "exceptions"}


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_only_the_named_modules_import_the_binding():
    importers = {p.stem for p in PACKAGE.glob("*.py") if "ringbuffer._ringbuf" in imported_modules(p)}
    assert importers == BINDING_MODULES
    doc = ringbuffer.ring.__doc__
    for name in BINDING_MODULES - {"ring"}:
        assert f"``{name}``" in doc


def test_the_blocks_know_the_handle_not_the_ring_buffer():
    names = imported_modules(PACKAGE / "_zerocopy.py")
    assert not any(n.startswith("ringbuffer.ring") for n in names)
    tree = ast.parse((PACKAGE / "_zerocopy.py").read_text())
    handle_attrs = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("handle",)
    } | {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "_handle"
    }
    handle = ringbuffer._handle.Handle
    assert handle_attrs  # the scan found the uses
    for attr in handle_attrs:
        assert not attr.startswith("_"), attr
        assert attr in handle.__slots__ or callable(getattr(handle, attr, None)), attr


def test_the_event_kinds_of_the_coroutines_are_the_headers():
    from ringbuffer import _aio
    from ringbuffer.ring import lib

    assert (_aio.READABLE, _aio.WRITABLE) == (lib.RB_EV_READABLE, lib.RB_EV_WRITABLE)


def test_importing_ringbuffer_leaves_asyncio_and_package_metadata_unloaded():
    # Start-up cost: the coroutines import asyncio when one must wait, and
    # the version comes from the compiled header, not importlib.metadata.
    code = "import sys, ringbuffer; print(sorted({'asyncio', 'importlib.metadata'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
