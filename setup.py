"""Build glue only (metadata lives in pyproject.toml).

``build_ext`` first builds ``libringbuf.so.0`` from ``csrc/*.c`` into the
package folder, then the cffi extension that links against it. The package
also receives the public header and a relocatable ``ringbuf.pc`` so C programs
can build against the installed copy.

Single sources: the version comes from ``csrc/ringbuf.h``, the library's
compiler flags and SONAME number from ``csrc/Makefile``, the ``.pc`` file
from ``csrc/ringbuf.pc.in``.
"""

import glob
import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _header_version() -> str:
    with open(os.path.join("csrc", "ringbuf.h")) as f:
        text = f.read()
    parts = [re.search(rf"#define RB_VERSION_{p} (\d+)", text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


def _make_variable(name: str) -> str:
    """A plain ``NAME = value`` line of csrc/Makefile."""
    with open(os.path.join("csrc", "Makefile")) as f:
        m = re.search(rf"^{name}\s*=\s*(.*)$", f.read(), flags=re.M)
    if m is None:
        raise RuntimeError(f"csrc/Makefile has no {name} = ... line")
    return m.group(1).strip()


LIB_CFLAGS = _make_variable("RB_CFLAGS").split()
SONAME = f"libringbuf.so.{_make_variable('SOVERSION')}"
# Wheels cannot hold symlinks: this one-line linker script stands in for the
# usual libringbuf.so -> libringbuf.so.0 link, for -lringbuf (the extension's
# link and C programs using the shipped ringbuf.pc).
LINKER_SCRIPT = f"INPUT({SONAME})\n"


def _replace(path: str, write) -> None:
    """Create path with write(tmp_path) beside it, then rename it over: a
    process that has the old library mapped keeps its inode instead of seeing
    it rewritten under it (which crashed running processes during rebuilds)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class BuildExtWithLib(build_ext):
    def run(self):
        # setuptools resets self.inplace before build_extensions(); keep it.
        self._mirror_to_source = bool(self.inplace or getattr(self, "editable_mode", False))
        super().run()

    def build_extensions(self):
        pkg_dir = os.path.dirname(self.get_ext_fullpath("ringbuffer._ringbuf"))
        os.makedirs(pkg_dir, exist_ok=True)
        objects = self.compiler.compile(
            sorted(glob.glob(os.path.join("csrc", "*.c"))),
            output_dir=self.build_temp,
            include_dirs=["csrc"],
            extra_postargs=LIB_CFLAGS,
        )
        self.compiler.link_shared_object(
            objects, SONAME, output_dir=pkg_dir, extra_postargs=[f"-Wl,-soname,{SONAME}"]
        )
        self._install_dev_files(pkg_dir)
        for ext in self.extensions:
            ext.library_dirs.insert(0, pkg_dir)
        super().build_extensions()
        if getattr(self, "_mirror_to_source", False) and os.path.abspath(pkg_dir) != os.path.abspath(
            "ringbuffer"
        ):
            _replace(
                os.path.join("ringbuffer", SONAME),
                lambda tmp: shutil.copy2(os.path.join(pkg_dir, SONAME), tmp),
            )
            self._install_dev_files("ringbuffer")

    @staticmethod
    def _install_dev_files(pkg_dir: str) -> None:
        os.makedirs(os.path.join(pkg_dir, "include"), exist_ok=True)
        os.makedirs(os.path.join(pkg_dir, "pkgconfig"), exist_ok=True)
        _replace(os.path.join(pkg_dir, "libringbuf.so"), lambda tmp: _write_text(tmp, LINKER_SCRIPT))
        shutil.copy2(os.path.join("csrc", "ringbuf.h"), os.path.join(pkg_dir, "include", "ringbuf.h"))
        with open(os.path.join("csrc", "ringbuf.pc.in")) as f:
            pc = f.read()
        # Relocatable: pkg-config expands ${pcfiledir} to the .pc file's folder.
        for key, value in (
            ("@PREFIX@", "${pcfiledir}/.."),
            ("@LIBDIR@", "${prefix}"),
            ("@VERSION@", _header_version()),
        ):
            pc = pc.replace(key, value)
        _write_text(os.path.join(pkg_dir, "pkgconfig", "ringbuf.pc"), pc)


setup(
    version=_header_version(),
    cffi_modules=["build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithLib},
)
