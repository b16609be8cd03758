"""cffi builder (out-of-line API mode) for ``ringbuffer._ringbuf``.

The declarations live in ``ringbuffer/_cdef.h``; the extension includes the
real ``csrc/ringbuf.h`` and the binding's few C helpers
(``ringbuffer/_shim.h``, there for speed only), so the C compiler checks the
declarations against them. It links with ``-lringbuf`` against what
setup.py builds into the package: ``libringbuf.so`` there is the linker
script ``INPUT(libringbuf.so.0)``, so the extension records NEEDED
``libringbuf.so.0`` and finds it at run time through ``RUNPATH=$ORIGIN``.
"""

from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((ROOT / "ringbuffer" / "_cdef.h").read_text())
ffibuilder.set_source(
    "ringbuffer._ringbuf",
    '#include "ringbuf.h"\n' + (ROOT / "ringbuffer" / "_shim.h").read_text(),
    include_dirs=["csrc"],
    libraries=["ringbuf"],
    extra_compile_args=[
        "-Werror=incompatible-pointer-types",
        "-Werror=implicit-function-declaration",
        "-Werror=int-conversion",
    ],
    # setuptools passes this to the linker without a shell: no escaping.
    extra_link_args=["-Wl,-rpath,$ORIGIN"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
