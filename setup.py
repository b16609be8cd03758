"""Build glue only (metadata lives in pyproject.toml).

``build_ext`` first builds ``libringbuf.so`` from ``csrc/*.c`` into the
package folder, then the cffi extension that links against it. The package
also receives the public header and a relocatable ``ringbuf.pc`` so C programs
can build against the installed copy.
"""

import glob
import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_ext import build_ext

LIB_CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"]

PC_TEMPLATE = """prefix=${{pcfiledir}}/..
libdir=${{prefix}}
includedir=${{prefix}}/include

Name: ringbuf
Description: Memory-mapped, file-backed ring buffer of variable-length messages
Version: {version}
Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lringbuf
Cflags: -I${{includedir}}
"""


def _header_version() -> str:
    with open(os.path.join("csrc", "ringbuf.h")) as f:
        text = f.read()
    parts = [re.search(rf"#define RB_VERSION_{p} (\d+)", text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


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
            objects, "libringbuf.so", output_dir=pkg_dir, extra_postargs=["-Wl,-soname,libringbuf.so"]
        )
        self._install_dev_files(pkg_dir)
        for ext in self.extensions:
            ext.library_dirs.insert(0, pkg_dir)
        super().build_extensions()
        if getattr(self, "_mirror_to_source", False) and os.path.abspath(pkg_dir) != os.path.abspath(
            "ringbuffer"
        ):
            # Copy beside, then rename over: a process that has the old
            # library mapped keeps its inode instead of seeing it rewritten
            # under it (which crashed running processes during rebuilds).
            tmp = os.path.join("ringbuffer", f".libringbuf.so.{os.getpid()}")
            shutil.copy2(os.path.join(pkg_dir, "libringbuf.so"), tmp)
            os.replace(tmp, os.path.join("ringbuffer", "libringbuf.so"))
            self._install_dev_files("ringbuffer")

    @staticmethod
    def _install_dev_files(pkg_dir: str) -> None:
        os.makedirs(os.path.join(pkg_dir, "include"), exist_ok=True)
        os.makedirs(os.path.join(pkg_dir, "pkgconfig"), exist_ok=True)
        shutil.copy2(os.path.join("csrc", "ringbuf.h"), os.path.join(pkg_dir, "include", "ringbuf.h"))
        with open(os.path.join(pkg_dir, "pkgconfig", "ringbuf.pc"), "w") as f:
            f.write(PC_TEMPLATE.format(version=_header_version()))


setup(
    cffi_modules=["build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithLib},
)
