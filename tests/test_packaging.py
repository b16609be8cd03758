"""The wheel ships libringbuf.so, the header and ringbuf.pc, and the extension
finds the library through RUNPATH=$ORIGIN (so `pip install .` works from any
directory, not only from an editable checkout); an sdist builds the same
wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def source_copy(dest: Path) -> Path:
    """A copy of the tree without build outputs, so builds use sources only."""
    src = dest / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.so", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = source_copy(out)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        check=True,
        timeout=600,
    )
    (found,) = out.glob("ringbuffer-*.whl")
    return found


def check_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "ringbuffer/libringbuf.so",
        "ringbuffer/include/ringbuf.h",
        "ringbuffer/pkgconfig/ringbuf.pc",
        "ringbuffer/py.typed",
        "ringbuffer/ring.py",
    ):
        assert needed in names
    assert any(n.startswith("ringbuffer/_ringbuf") and n.endswith(".so") for n in names)
    assert not any(n.endswith(".c") or n.endswith(".o") for n in names)


def test_wheel_contents(wheel):
    check_wheel_contents(wheel)


def test_sdist_builds_the_wheel(tmp_path):
    # The sdist must carry what the build reads (MANIFEST.in): csrc/,
    # build_ffi.py, the cffi declarations and the binding's helpers.
    src = source_copy(tmp_path)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (sdist,) = dist.glob("ringbuffer-*.tar.gz")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(sdist)],
        check=True,
        timeout=600,
    )
    (built,) = dist.glob("ringbuffer-*.whl")
    check_wheel_contents(built)


def test_installed_wheel_works_from_any_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    code = (
        "import os, ringbuffer\n"
        "from ringbuffer import RingBuffer\n"
        f"assert ringbuffer.__file__.startswith({str(target)!r}), ringbuffer.__file__\n"
        f"rb = RingBuffer({str(tmp_path / 'w.ring')!r}, 4096)\n"
        "rb.write(b'from the wheel'); assert rb.read() == b'from the wheel'\n"
        "print(ringbuffer.get_library_dir())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    import _cffi_backend  # the runtime dependency, from this environment

    env["PYTHONPATH"] = os.pathsep.join([str(target), os.path.dirname(_cffi_backend.__file__)])
    # -S: no site processing, so the editable checkout's import hook (a .pth
    # file) cannot supply ringbuffer instead of the wheel.
    run = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    libdir = run.stdout.strip()
    if shutil.which("readelf"):
        (ext,) = Path(libdir).glob("_ringbuf*.so")
        dyn = subprocess.run(["readelf", "-d", str(ext)], capture_output=True, text=True, check=True).stdout
        assert "libringbuf.so" in dyn
        assert "$ORIGIN" in dyn
