"""C <-> Python interoperability: a small C program built against the
package's own header and library (directly with -I/-L, and through
pkg-config) shares rings with Python, one after the other and concurrently.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import textwrap
import zlib

import pytest
from _helpers import HEADER_SIZE, payload, rec_size

import ringbuffer
from ringbuffer import RingBuffer
from ringbuffer.ring import ffi, lib

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
PKG_CONFIG = shutil.which("pkg-config")
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
STRICT = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"]

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on PATH")

TOOL_SOURCE = r"""
#include <ringbuf.h>

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what, int rc)
{
    fprintf(stderr, "%s: %s (errno %d)\n", what, rb_strerror(rc), errno);
    return 2;
}

static size_t unhex(const char *s, unsigned char *out)
{
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

static void print_msg(const unsigned char *p, size_t len)
{
    printf("%zu ", len);
    for (size_t i = 0; i < len; i++)
        printf("%02x", p[i]);
    printf("\n");
}

/* Message i of a generated stream: 4-byte little-endian i, then a pattern. */
static size_t gen(uint32_t i, unsigned char *out)
{
    size_t len = 4 + (i * 7919u) % 1500u;
    memcpy(out, &i, 4);
    for (size_t k = 4; k < len; k++)
        out[k] = (unsigned char)(i * 31u + k);
    return len;
}

static rb_ring *open_or_die(const char *path)
{
    rb_ring *rb = NULL;
    int rc = rb_open(path, &rb);
    if (rc != RB_OK) {
        die("rb_open", rc);
        exit(2);
    }
    return rb;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 64;
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0) {
        printf("%d %d %d\n", rb_version(), RB_VERSION_NUMBER, RB_FORMAT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "strerror") == 0) {
        printf("%s\n", rb_strerror(atoi(argv[2])));
        return 0;
    }
    if (argc < 3)
        return 64;
    const char *path = argv[2];
    if (strcmp(cmd, "open_status") == 0) {
        rb_ring *rb = NULL;
        errno = 0;
        int rc = rb_open(path, &rb);
        printf("%d %d\n", rc, rc == RB_ESYS ? errno : 0);
        rb_close(rb);
        return 0;
    }
    if (strcmp(cmd, "create") == 0) { /* create PATH SIZE HEX... */
        rb_ring *rb;
        int rc = rb_create(path, (size_t)strtoull(argv[3], NULL, 10), 0, &rb);
        if (rc != RB_OK)
            return die("rb_create", rc);
        unsigned char *buf = malloc(rb_max_message_size(rb) + 1);
        for (int i = 4; i < argc; i++) {
            rc = rb_write(rb, buf, unhex(argv[i], buf));
            if (rc != RB_OK)
                return die("rb_write", rc);
        }
        printf("capacity %zu max %zu\n", rb_capacity(rb), rb_max_message_size(rb));
        free(buf);
        return rb_close(rb);
    }
    rb_ring *rb = open_or_die(path);
    size_t max = rb_max_message_size(rb);
    unsigned char *buf = malloc(rb_capacity(rb));
    int rc = RB_OK;
    if (strcmp(cmd, "write") == 0) { /* write PATH HEX... : one rb_write each */
        int n = 0;
        for (int i = 3; i < argc; i++) {
            rc = rb_write(rb, buf, unhex(argv[i], buf));
            if (rc != RB_OK)
                break;
            n++;
        }
        printf("wrote %d status %d\n", n, rc);
    } else if (strcmp(cmd, "write_many") == 0) { /* write_many PATH HEX... : one call */
        size_t count = (size_t)(argc - 3), used = 0, written = 99;
        size_t *lens = calloc(count + 1, sizeof *lens);
        unsigned char *data = malloc(count * max + 1);
        for (size_t i = 0; i < count; i++) {
            lens[i] = unhex(argv[3 + i], data + used);
            used += lens[i];
        }
        rc = rb_write_many(rb, data, lens, count, &written);
        printf("wrote %zu status %d\n", written, rc);
        free(lens);
        free(data);
    } else if (strcmp(cmd, "writev") == 0) { /* writev PATH HEX... : one message, a vector each */
        int count = argc - 3;
        struct iovec *iov = calloc((size_t)count + 1, sizeof *iov);
        unsigned char *data = malloc((size_t)count * max + 1);
        size_t used = 0;
        for (int i = 0; i < count; i++) {
            iov[i].iov_base = data + used;
            iov[i].iov_len = unhex(argv[3 + i], data + used);
            used += iov[i].iov_len;
        }
        rc = rb_writev(rb, iov, count);
        printf("status %d\n", rc);
        free(iov);
        free(data);
    } else if (strcmp(cmd, "read") == 0) { /* read PATH MAX : rb_read until empty */
        long limit = strtol(argv[3], NULL, 10);
        for (long i = 0; i < limit; i++) {
            size_t len = 0;
            rc = rb_read(rb, buf, max, &len);
            if (rc != RB_OK)
                break;
            print_msg(buf, len);
        }
        printf("end %d\n", rc);
    } else if (strcmp(cmd, "read_many") == 0) { /* read_many PATH MAX : one call */
        size_t limit = (size_t)strtoull(argv[3], NULL, 10), count = 99;
        size_t *lens = calloc(limit + 1, sizeof *lens);
        rc = rb_read_many(rb, buf, rb_capacity(rb), lens, limit, &count);
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            print_msg(buf + off, lens[i]);
            off += lens[i];
        }
        printf("end %d count %zu\n", rc, count);
        free(lens);
    } else if (strcmp(cmd, "read_small") == 0) { /* read_small PATH BUFSIZE : expect ETRUNC */
        size_t len = 12345;
        rc = rb_read(rb, buf, (size_t)strtoull(argv[3], NULL, 10), &len);
        printf("status %d len %zu\n", rc, len);
    } else if (strcmp(cmd, "produce") == 0) { /* produce PATH N : generated stream, retry on full */
        uint32_t n = (uint32_t)strtoul(argv[3], NULL, 10);
        for (uint32_t i = 0; i < n; i++) {
            size_t len = gen(i, buf);
            while ((rc = rb_write(rb, buf, len)) == RB_EFULL)
                sched_yield();
            if (rc != RB_OK)
                return die("rb_write", rc);
        }
        printf("produced %u\n", n);
    } else if (strcmp(cmd, "consume") == 0) { /* consume PATH N : verify the generated stream */
        uint32_t n = (uint32_t)strtoul(argv[3], NULL, 10);
        unsigned char *want = malloc(max);
        for (uint32_t i = 0; i < n; i++) {
            size_t len = 0;
            while ((rc = rb_read(rb, buf, max, &len)) == RB_EEMPTY)
                sched_yield();
            if (rc != RB_OK)
                return die("rb_read", rc);
            size_t wlen = gen(i, want);
            if (len != wlen || memcmp(buf, want, len) != 0) {
                printf("mismatch at %u (len %zu, expected %zu)\n", i, len, wlen);
                return 1;
            }
        }
        printf("consumed %u\n", n);
        free(want);
    } else {
        return 64;
    }
    free(buf);
    rb_close(rb);
    return 0;
}
"""


_PATTERN = bytes(range(256)) * 8


def gen(i: int) -> bytes:
    """Python twin of the C program's gen(): byte k (k >= 4) is (i * 31 + k) mod 256."""
    length = 4 + (i * 7919) % 1500
    start = (i * 31 + 4) & 0xFF
    return i.to_bytes(4, "little") + _PATTERN[start : start + length - 4]


def build_direct(src: str, out: str) -> None:
    libdir = ringbuffer.get_library_dir()
    cmd = [
        CC,
        *STRICT,
        src,
        f"-I{ringbuffer.get_include()}",
        f"-L{libdir}",
        f"-Wl,-rpath,{libdir}",
        "-lringbuf",
    ]
    subprocess.run([*cmd, "-o", out], check=True, capture_output=True, text=True, timeout=120)


def build_pkg_config(src: str, out: str) -> None:
    env = dict(os.environ, PKG_CONFIG_PATH=ringbuffer.get_pkgconfig_dir())
    flags = subprocess.run(
        [PKG_CONFIG, "--cflags", "--libs", "ringbuf"], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    assert any(f.startswith("-I") for f in flags) and "-lringbuf" in flags
    subprocess.run(
        [CC, *STRICT, src, *flags, "-o", out], check=True, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module", params=["direct", "pkg-config"])
def tool(request, tmp_path_factory):
    """Path of the compiled C tool, built one way or the other."""
    if request.param == "pkg-config" and PKG_CONFIG is None:
        pytest.skip("pkg-config not installed")
    d = tmp_path_factory.mktemp(f"tool-{request.param}")
    src = d / "rbtool.c"
    src.write_text(TOOL_SOURCE)
    exe = str(d / "rbtool")
    try:
        (build_direct if request.param == "direct" else build_pkg_config)(str(src), exe)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"compiling the C tool failed:\n{e.stderr}")
    return exe


def run(tool: str, *args, timeout: float = 60) -> list[str]:
    res = subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout.splitlines()


def parse_messages(lines: list[str]) -> list[bytes]:
    out = []
    for line in lines:
        length, _, hexdata = line.partition(" ")
        msg = bytes.fromhex(hexdata)
        assert len(msg) == int(length)
        out.append(msg)
    return out


def interesting_messages(k: int = 40) -> list[bytes]:
    sizes = [1, 2, 7, 8, 9, 255, 256, 1000, 2047, 2048, 4095, 4096]
    msgs = [payload(11, i, sizes[i % len(sizes)]) for i in range(k)]
    msgs[0] = b"\x00"  # NUL bytes survive
    msgs[1] = b"\x00hello\x00world\x00"
    return msgs


def advance(rb: RingBuffer, nbytes: int) -> None:
    """Moves head and tail forward by about nbytes so that later records wrap around the end."""
    while rb.positions()[1] < nbytes:
        rb.write(b"w" * 1000)
        rb.read()


def test_versions_match(tool):
    c_lib, c_header, c_format = map(int, run(tool, "version")[0].split())
    assert c_lib == c_header == ringbuffer.c_version() == lib.RB_VERSION_NUMBER
    assert c_format == ringbuffer.format_version()


def test_status_messages_match(tool):
    for code in range(-10, 1):
        assert run(tool, "strerror", code) == [ffi.string(lib.rb_strerror(code)).decode()]


@pytest.mark.parametrize("how", ["write", "write_many"])
def test_c_writes_python_reads(tool, tmp_path, how):
    path = tmp_path / "c-writes.ring"
    msgs = interesting_messages()
    with RingBuffer(path, 1 << 17) as rb:
        advance(rb, rb.capacity - 3000)  # the C writes wrap around the end of the data region
        out = run(tool, how, path, *(m.hex() for m in msgs))
        assert out == [f"wrote {len(msgs)} status 0"]
        got = rb.read_many(len(msgs) + 1)
        assert got == msgs
        assert rb.try_read() is None
        head, tail = rb.positions()
        assert head == tail


def test_c_write_many_partial_and_full(tool, tmp_path):
    path = tmp_path / "partial.ring"
    with RingBuffer(path, 4096) as rb:
        msgs = [b"a" * 1000] * 5
        assert run(tool, "write_many", path, *(m.hex() for m in msgs)) == ["wrote 4 status 0"]
        assert run(tool, "write_many", path, (b"b" * 100).hex()) == [f"wrote 0 status {lib.RB_EFULL}"]
        assert run(tool, "write", path, (b"c" * 100).hex()) == [f"wrote 0 status {lib.RB_EFULL}"]
        assert run(tool, "write_many", path, "aa", "") == [f"wrote 0 status {lib.RB_ESIZE}"]
        assert rb.read_many(10) == msgs[:4]


@pytest.mark.parametrize("how", ["read", "read_many"])
def test_python_writes_c_reads(tool, tmp_path, how):
    path = tmp_path / "py-writes.ring"
    msgs = interesting_messages()
    with RingBuffer(path, 1 << 17) as rb:
        advance(rb, 3 * rb.capacity - 5000)
        for m in msgs[:20]:
            rb.write(m)
        assert rb.write_many(msgs[20:]) == len(msgs) - 20
        out = run(tool, how, path, 1000)
        if how == "read":
            assert out[-1] == f"end {lib.RB_EEMPTY}"
        else:
            assert out[-1] == f"end 0 count {len(msgs)}"
        assert parse_messages(out[:-1]) == msgs
        assert rb.try_read() is None
        head, tail = rb.positions()
        assert head == tail


def test_python_writev_c_reads(tool, tmp_path):
    # Messages gathered from several buffers (two bytes objects, other
    # buffers, numpy arrays, empty pieces), across the end of the ring: C's
    # rb_read gets exactly their concatenation.
    np = pytest.importorskip("numpy")
    path = tmp_path / "py-writev.ring"
    arr = np.arange(300, dtype=np.float64).reshape(30, 10)
    gathers = [
        [b"\x00" * 8, b"payload"],
        [b"hdr:", bytearray(b"body"), b"", memoryview(b"tail")],
        [np.uint32(len(arr)).tobytes(), memoryview(arr)],
        [arr[:, 3], b"", arr.T],  # non-contiguous views: copied first
        [b""] * 5 + [b"!"],
        *([m[: len(m) // 3], m[len(m) // 3 :]] for m in interesting_messages(24)),
    ]
    expected = [b"".join(memoryview(p).tobytes() for p in g) for g in gathers]
    with RingBuffer(path, 1 << 17) as rb:
        advance(rb, 3 * rb.capacity - 5000)
        for g in gathers:
            rb.writev(g)
        out = run(tool, "read", path, 1000)
        assert out[-1] == f"end {lib.RB_EEMPTY}"
        assert parse_messages(out[:-1]) == expected
        head, tail = rb.positions()
        assert head == tail


def test_c_writev_python_reads(tool, tmp_path):
    path = tmp_path / "c-writev.ring"
    with RingBuffer(path, 1 << 17) as rb:
        advance(rb, rb.capacity - 3000)
        for pieces in (["0011", "", "2233"], ["ff" * 1000, "ee" * 1500, "dd" * 700], ["", "01"]):
            assert run(tool, "writev", path, *pieces) == ["status 0"]
            assert rb.read() == bytes.fromhex("".join(pieces))
        assert run(tool, "writev", path, "", "") == [f"status {lib.RB_ESIZE}"]
        assert run(tool, "writev", path, "aa" * 40000, "bb" * 30000) == [f"status {lib.RB_ESIZE}"]
        assert rb.try_read() is None


def test_c_read_with_small_buffer_consumes_nothing(tool, tmp_path):
    path = tmp_path / "small.ring"
    with RingBuffer(path, 8192) as rb:
        rb.write(b"x" * 300)
        assert run(tool, "read_small", path, 299) == [f"status {lib.RB_ETRUNC} len 300"]
        assert run(tool, "read_small", path, 0) == [f"status {lib.RB_ETRUNC} len 300"]
        assert rb.read() == b"x" * 300
        assert run(tool, "read_small", path, 10) == [f"status {lib.RB_EEMPTY} len 12345"]


def test_c_creates_python_opens(tool, tmp_path):
    path = tmp_path / "c-created.ring"
    msgs = [b"from C", b"\x00\x01\x02", b"z" * 4096]
    assert run(tool, "create", path, 5000, *(m.hex() for m in msgs)) == ["capacity 8192 max 4096"]
    assert os.path.getsize(path) == HEADER_SIZE + 8192
    with RingBuffer.open(path) as rb:
        assert rb.capacity == 8192
        assert rb.max_message_size == 4096
        assert rb.positions() == (0, sum(rec_size(len(m)) for m in msgs))
        assert [g["kind"] for g in rb.info()["groups"]] == ["default"]  # made by C's rb_create, joined here
        assert rb.read_many(10) == msgs
        rb.write(b"back to C")
    assert parse_messages(run(tool, "read", path, 10)[:-1]) == [b"back to C"]


def test_c_create_refuses_existing_file(tool, tmp_path):
    path = tmp_path / "exists.ring"
    RingBuffer(path, 4096).close()
    res = subprocess.run([tool, "create", str(path), "4096"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "rb_create" in res.stderr
    assert f"errno {errno.EEXIST}" in res.stderr


def test_c_and_python_agree_on_corrupt_files(tool, tmp_path):
    good = tmp_path / "good.ring"
    RingBuffer(good, 4096).close()
    bad = tmp_path / "bad.ring"
    bad.write_bytes(b"not a ring" * 1000)
    assert run(tool, "open_status", good) == ["0 0"]
    assert run(tool, "open_status", bad) == [f"{lib.RB_ECORRUPT} 0"]
    assert run(tool, "open_status", tmp_path / "missing") == [f"{lib.RB_ESYS} {errno.ENOENT}"]


def test_c_producer_python_consumer_concurrently(tool, tmp_path):
    path = tmp_path / "c-produces.ring"
    n = 20_000
    with RingBuffer(path, 1 << 14) as rb:
        proc = subprocess.Popen([tool, "produce", str(path), str(n)], stdout=subprocess.PIPE, text=True)
        try:
            got = 0
            crc_got = crc_want = 0
            while got < n:
                batch = rb.read_many(64)
                if not batch:
                    assert proc.poll() in (None, 0), "the C producer died"
                    continue
                for m in batch:
                    crc_got = zlib.crc32(m, crc_got)
                    crc_want = zlib.crc32(gen(got), crc_want)
                    assert m == gen(got), f"message {got}"
                    got += 1
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        assert proc.stdout.read().strip() == f"produced {n}"
        assert rb.try_read() is None
        assert crc_got == crc_want


def test_python_producer_c_consumer_concurrently(tool, tmp_path):
    path = tmp_path / "py-produces.ring"
    n = 20_000
    with RingBuffer(path, 1 << 14) as rb:
        proc = subprocess.Popen([tool, "consume", str(path), str(n)], stdout=subprocess.PIPE, text=True)
        try:
            i = 0
            while i < n:
                batch = [gen(j) for j in range(i, min(n, i + 8))]
                written = rb.write_many(batch) if i % 16 else int(rb.try_write(batch[0]))
                if not written:
                    assert proc.poll() is None, "the C consumer exited early"
                i += written
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        assert proc.returncode == 0, out
        assert out.strip() == f"consumed {n}"
        assert rb.try_read() is None


@pytest.mark.parametrize("std", ["c99", "c11", "gnu17"])
def test_header_compiles_standalone_strictly(tmp_path, std):
    src = tmp_path / "only_header.c"
    src.write_text(
        "#include <ringbuf.h>\nint main(void) { return rb_version() == RB_VERSION_NUMBER ? 0 : 1; }\n"
    )
    exe = tmp_path / "only_header"
    libdir = ringbuffer.get_library_dir()
    res = subprocess.run(
        [CC, f"-std={std}", "-pedantic-errors", "-Wall", "-Wextra", "-Werror", str(src),
         f"-I{ringbuffer.get_include()}", f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lringbuf", "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert subprocess.run([str(exe)], timeout=60).returncode == 0


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_header_compiles_as_cpp(tmp_path):
    src = tmp_path / "use.cpp"
    src.write_text(
        textwrap.dedent(
            """\
            #include <ringbuf.h>
            #include <cstdio>
            int main() {
                rb_ring *rb = nullptr;
                int rc = rb_open("/nonexistent/x.ring", &rb);
                std::printf("%d %s\\n", rc, rb_strerror(rc));
                return rb_version() == RB_VERSION_NUMBER ? 0 : 1;
            }
            """
        )
    )
    exe = tmp_path / "use"
    libdir = ringbuffer.get_library_dir()
    res = subprocess.run(
        [CXX, "-Wall", "-Wextra", "-Werror", str(src), f"-I{ringbuffer.get_include()}", f"-L{libdir}",
         f"-Wl,-rpath,{libdir}", "-lringbuf", "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.split()[0] == str(lib.RB_ESYS)
