"""What a release ships. `python -m build` makes the sdist and, from it, the
wheel (as `invoke dist` does): the wheel holds libringbuf.so.0, the header
and a relocatable ringbuf.pc, and once installed in a fresh venv it serves
Python and a C program built with its pkg-config file. The versions written
in several places agree, and rb_info writes exactly the caller's struct size
(the ABI policy, docs/abi.md)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import ringbuffer

ROOT = Path(__file__).resolve().parent.parent
CC = shutil.which("cc") or shutil.which("gcc")
PKG_CONFIG = shutil.which("pkg-config")
READELF = shutil.which("readelf")


def source_copy(dest: Path) -> Path:
    """A copy of the tree without build outputs, so builds use sources only."""
    src = dest / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.so", "*.so.*", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    return src


def header_version() -> str:
    text = (ROOT / "csrc" / "ringbuf.h").read_text()
    return ".".join(re.search(rf"#define RB_VERSION_{p} (\d+)", text)[1] for p in ("MAJOR", "MINOR", "PATCH"))


def soname() -> str:
    m = re.search(r"^SOVERSION\s*=\s*(\d+)\s*$", (ROOT / "csrc" / "Makefile").read_text(), re.M)
    return f"libringbuf.so.{m[1]}"


def dynamic_section(path: Path) -> str:
    return subprocess.run([READELF, "-d", str(path)], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel), the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    src = source_copy(out)
    run = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (sdist,) = (out / "dist").glob("ringbuffer_ipc-*.tar.gz")
    (wheel,) = (out / "dist").glob("ringbuffer_ipc-*.whl")
    return sdist, wheel


def test_wheel_holds_the_library_header_and_pc_as_real_files(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for needed in (
            f"ringbuffer/{soname()}",
            "ringbuffer/libringbuf.so",
            "ringbuffer/include/ringbuf.h",
            "ringbuffer/pkgconfig/ringbuf.pc",
            "ringbuffer/py.typed",
            "ringbuffer/ring.py",
        ):
            assert needed in names
        assert any(n.startswith("ringbuffer/_ringbuf") and n.endswith(".so") for n in names)
        assert not any(n.endswith((".c", ".o")) for n in names)
        # Wheels cannot hold symlinks: libringbuf.so is a linker script for -lringbuf.
        links = [i.filename for i in zf.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
        assert links == []
        assert zf.read(f"ringbuffer/{soname()}")[:4] == b"\x7fELF"
        assert zf.read("ringbuffer/libringbuf.so") == f"INPUT({soname()})\n".encode()
        pc = zf.read("ringbuffer/pkgconfig/ringbuf.pc").decode()
    assert "prefix=${pcfiledir}/.." in pc
    assert f"Version: {header_version()}" in pc


def test_sdist_carries_what_the_build_reads(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "build_ffi.py",
        "setup.py",
        "csrc/Makefile",
        "csrc/ringbuf.h",
        "csrc/ringbuf.pc.in",
        "csrc/ring.c",
        "ringbuffer/_cdef.h",
        "ringbuffer/_shim.h",
    ):
        assert needed in names


def test_versions_agree_with_the_header(dist):
    sdist, wheel = dist
    version = header_version()
    assert wheel.name.startswith(f"ringbuffer_ipc-{version}-")
    assert sdist.name == f"ringbuffer_ipc-{version}.tar.gz"
    assert ringbuffer.__version__ == version
    major, minor, patch = map(int, version.split("."))
    assert ringbuffer.c_version() == major * 10000 + minor * 100 + patch
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.skipif(shutil.which("auditwheel") is None, reason="auditwheel not installed")
def test_wheel_is_manylinux_compatible(dist):
    _, wheel = dist
    shown = subprocess.run(
        ["auditwheel", "show", str(wheel)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert re.search(r'platform tag:\s*"manylinux_\d+_\d+_', shown), shown


@pytest.mark.skipif(None in (CC, PKG_CONFIG, READELF), reason="needs cc, pkg-config and readelf")
def test_wheel_in_a_fresh_venv_serves_python_and_c(dist, tmp_path):
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    unset = ("PYTHONPATH", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)]
    subprocess.run(pip, check=True, env=env, timeout=600)

    def venv_python(code: str) -> str:
        # From /: the source tree is not on the path, only the installed wheel.
        run = subprocess.run([py, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout

    pkg, pcdir, version = venv_python(
        "import ringbuffer\n"
        "print(ringbuffer.__file__, ringbuffer.get_pkgconfig_dir(), ringbuffer.__version__, sep='\\n')\n"
    ).split()
    assert pkg.startswith(str(venv)), pkg
    assert version == header_version()

    # The extension loads the library beside it, whatever the directory.
    (ext,) = Path(pkg).parent.glob("_ringbuf*.so")
    dyn = dynamic_section(ext)
    assert f"Shared library: [{soname()}]" in dyn
    assert re.search(r"R(UN)?PATH.*\$ORIGIN", dyn), dyn

    # A C program built with the shipped pkg-config file.
    prog = tmp_path / "echo_back"
    src = tmp_path / "echo_back.c"
    src.write_text(C_ECHO_BACK)
    flags = subprocess.run(
        [PKG_CONFIG, "--cflags", "--libs", "ringbuf"],
        env={**env, "PKG_CONFIG_PATH": pcdir},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    cflags = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
    subprocess.run([CC, *cflags, str(src), *flags, "-o", str(prog)], check=True, timeout=120)
    assert f"Shared library: [{soname()}]" in dynamic_section(prog)

    # Python writes, the C program reads it and answers, Python reads that.
    ring = tmp_path / "venv.ring"
    venv_python(
        "import subprocess\n"
        "from ringbuffer import RingBuffer\n"
        f"rb = RingBuffer({str(ring)!r}, 4096)\n"
        "rb.write(b'from Python')\n"
        f"out = subprocess.run([{str(prog)!r}, {str(ring)!r}], capture_output=True, text=True)\n"
        "assert out.returncode == 0 and out.stdout == 'from Python\\n', out\n"
        "assert rb.read() == b'from C'\n"
    )
    cli = subprocess.run(
        [str(venv / "bin" / "ringbuffer"), "--version"], cwd="/", env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0 and header_version() in cli.stdout, cli


C_ECHO_BACK = r"""
#include <ringbuf.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    rb_ring *rb;
    char buf[64];
    size_t len;
    struct rb_info info;
    if (argc != 2 || rb_version() != RB_VERSION_NUMBER)
        return 2;
    if (rb_open(argv[1], &rb) != RB_OK || rb_read(rb, buf, sizeof buf, &len) != RB_OK)
        return 3;
    if (rb_write(rb, "from C", 6) != RB_OK || rb_info(rb, &info) != RB_OK || info.messages != 1)
        return 4;
    printf("%.*s\n", (int)len, buf);
    return rb_close(rb) == RB_OK ? 0 : 5;
}
"""


def test_rb_info_writes_exactly_the_callers_struct_size(tmp_path):
    # A program compiled against an older, shorter struct rb_info passes its
    # smaller size: it gets its own fields and nothing past them is written.
    # A newer, longer struct gets zeros in the fields this library lacks.
    from ringbuffer._ringbuf import ffi, lib

    out = ffi.new("rb_ring **")
    assert lib.rb_create(str(tmp_path / "abi.ring").encode(), 4096, 0, out) == lib.RB_OK
    rb = out[0]
    try:
        assert lib.rb_write(rb, b"abc", 3) == lib.RB_OK
        full = ffi.sizeof("struct rb_info")
        older = ffi.offsetof("struct rb_info", "busy")  # a struct that ended before busy
        raw = ffi.new("unsigned char[]", full + 16)
        info = ffi.cast("struct rb_info *", raw)

        ffi.memmove(raw, b"\xa5" * len(raw), len(raw))
        assert lib.rb_info_sized(rb, info, older) == lib.RB_OK
        assert (info.capacity, info.messages, info.message_bytes) == (4096, 1, 3)
        assert ffi.buffer(raw)[older:] == b"\xa5" * (len(raw) - older)

        ffi.memmove(raw, b"\xa5" * len(raw), len(raw))
        assert lib.rb_info_sized(rb, info, full + 8) == lib.RB_OK
        assert (info.capacity, info.messages, info.attached) == (4096, 1, 1)
        assert ffi.buffer(raw)[full:] == bytes(8) + b"\xa5" * 8

        ffi.memmove(raw, b"\xa5" * len(raw), len(raw))
        assert lib.rb_info_sized(rb, info, 0) == lib.RB_EINVAL
        assert ffi.buffer(raw)[:] == b"\xa5" * len(raw)
    finally:
        lib.rb_close(rb)


def test_the_oldest_python_is_the_same_everywhere():
    # Only a newer Python runs here: the promise stays checkable through
    # ruff's and vermin's targets, which must name the same version.
    pyproject = (ROOT / "pyproject.toml").read_text()
    oldest = int(re.search(r'^requires-python = ">=3\.(\d+)"$', pyproject, re.M)[1])
    assert re.search(rf'^target-version = "py3{oldest}"$', pyproject, re.M)
    assert f"--target=3.{oldest}-" in (ROOT / "tasks.py").read_text()
    assert f"Python 3.{oldest}+" in (ROOT / "README.md").read_text()
    minors = [int(m) for m in re.findall(r'"Programming Language :: Python :: 3\.(\d+)"', pyproject)]
    assert minors == list(range(oldest, minors[-1] + 1))
    builds = re.search(r'^build = "(.*)"$', pyproject, re.M)[1].split()
    assert builds == [f"cp3{m}-*" for m in minors]
