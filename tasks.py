"""Developer tasks: ``invoke --list`` shows them, ``invoke --help TASK`` their options."""

from __future__ import annotations

import glob
import os
import shutil
import sys

from invoke import Context, Exit, task

PY = sys.executable
ROOT = os.path.dirname(os.path.abspath(__file__))
PTY = sys.stdout.isatty() and not os.environ.get("CI")


def _run(c: Context, cmd: str, **kw: object):
    with c.cd(ROOT):
        return c.run(cmd, pty=PTY, echo=True, **kw)


@task
def build(c):
    """Build libringbuf (csrc/build) and the Python extension in place (editable install)."""
    _run(c, "make -s -C csrc")
    _run(c, f"{PY} -m pip install --quiet --no-deps -e .")


@task(
    pre=[build],
    help={
        "scale": "multiplier for the stress tests' message counts, e.g. 0.5 (default 1)",
        "kill_cycles": "cycles of the random kill harness in test_crash (default 200)",
    },
)
def test_c(c, scale=1.0, kill_cycles=200):
    """Build and run the C tests."""
    # A float default: invoke types an option from its default, and an int
    # one refused --scale 0.5.
    _run(c, f"make -s -C tests/c check RB_STRESS_SCALE={float(scale):g} RB_KILL_CYCLES={int(kill_cycles)}")


@task(help={"scale": "multiplier for the stress tests' message counts (default 0.25 under sanitizers)"})
def sanitize(c, scale=0.25):
    """Run the C tests under ASan+UBSan and under TSan; replay the fuzzing corpus under ASan+UBSan."""
    _run(c, f"make -s -C tests/c asan RB_STRESS_SCALE={float(scale):g}")
    _run(c, f"make -s -C tests/c tsan RB_STRESS_SCALE={float(scale):g}")
    _run(c, "make -s -C tests/fuzz replay")


@task(help={"seconds": "how long to fuzz (default 60)", "jobs": "fuzzing processes at once (default 2)"})
def fuzz(c, seconds=60, jobs=2):
    """Fuzz the library with forged ring files (libFuzzer) for --seconds; fails on any finding."""
    if shutil.which("clang") is None:
        sys.exit("invoke fuzz needs clang and libFuzzer: apt-get install clang libclang-rt-dev")
    _run(c, f"make -s -C tests/fuzz fuzz SECONDS={int(seconds)} JOBS={int(jobs)}")


@task(
    pre=[build], help={"k": "only tests matching this pytest -k expression", "x": "stop at the first failure"}
)
def test_py(c, k="", x=False):
    """Run the Python tests (pytest) against the installed package."""
    opts = (f" -k {k!r}" if k else "") + (" -x" if x else "")
    # -P: import the installed (editable) package, not the source tree by accident.
    _run(c, f"{PY} -P -m pytest -q{opts}")


@task(pre=[build], help={"sanitizers": "also run the C tests under ASan+UBSan and TSan (default: yes)"})
def test(c, sanitizers=True):
    """Run every test: C tests, C tests under sanitizers, then pytest."""
    test_c(c)
    if sanitizers:
        sanitize(c)
    test_py(c)


@task
def lint(c):
    """Check Python style (ruff), Python 3.9 compatibility (vermin) and C warnings (-Werror builds)."""
    _run(c, f"{PY} -m ruff check .")
    _run(c, f"{PY} -m ruff format --check .")
    # The README promises Python 3.9+ and only a newer Python runs here: no
    # 3.10+ syntax, module, function or keyword argument in what 3.9 runs.
    vermin = f"{PY} -c 'import sys, vermin; sys.exit(vermin.main())'"  # it has no __main__
    _run(c, f"{vermin} -q --target=3.9- --no-tips --violations ringbuffer setup.py build_ffi.py tests")
    _run(c, "make -s -C csrc")
    _run(c, "make -s -C tests/c all")
    _run(c, "make -s -C bench")


@task
def dist(c):
    """Build the sdist and wheel into dist/ (python -m build) and check the wheel's manylinux tag."""
    out = os.path.join(ROOT, "dist")
    shutil.rmtree(out, ignore_errors=True)
    # The wheel is built from the sdist, so a file missing from MANIFEST.in fails here.
    _run(c, f"{PY} -m build --outdir dist .")
    wheels = glob.glob(os.path.join(out, "*.whl"))
    if len(wheels) != 1:
        raise Exit(f"expected one wheel in dist/, found {wheels}")
    shown = _run(c, f"{PY} -m auditwheel show {wheels[0]}", hide="out")
    print(shown.stdout.strip())
    if "manylinux" not in shown.stdout:
        raise Exit("auditwheel finds no manylinux tag the wheel is consistent with")


@task(help={"count": "messages per run", "size": "bytes per message (at least 8)"})
def demo(c, count=300_000, size=64):
    """Stream messages between two processes, verify them, compare with multiprocessing.Queue."""
    if not os.path.exists(os.path.join(ROOT, "ringbuffer", "libringbuf.so.0")):
        build(c)
    _run(c, f"{PY} -m ringbuffer demo --count {int(count)} --size {int(size)}")


@task(
    help={
        "quick": "small time budgets: the whole suite in under a minute",
        "only": "only these groups, comma-separated: "
        "throughput,latency,idle,memory,objects,async,arrays,bridge,fanout,c",
    }
)
def bench(c, quick=False, only=""):
    """Run the benchmark suite (bench/) against its peers and targets; results in bench/results/.

    Groups: throughput and latency next to multiprocessing, faster-fifo and pyzmq, idle CPU,
    memory, ringbuffer.Queue objects, asyncio, arrays and large messages, the NATS bridge, fan-out to
    consumer groups (C and Python pub/sub next to pyzmq), the C benchmark."""
    if not os.path.exists(os.path.join(ROOT, "ringbuffer", "libringbuf.so.0")):
        build(c)
    _run(c, "make -s -C bench")
    opts = (" --quick" if quick else "") + (f" --only {' '.join(only.split(','))}" if only else "")
    _run(c, f"{PY} -m bench.suite{opts}")


@task(
    help={
        "a": "the revision before (default main)",
        "b": "the revision after (default WORKTREE: the working tree, uncommitted changes included)",
        "rounds": "interleaved rounds, each figure (default 7, at least 5)",
    }
)
def bench_ab(c, a="main", b="WORKTREE", rounds=7):
    """A/B: the 64 B put/get (Python) and single-message C rates of the library at two revisions.

    Builds each in a folder of its own and runs them interleaved (bench/ab.py); results in
    bench/results/ab.txt and ab.json."""
    _run(c, f"{PY} bench/ab.py --a {a} --b {b} --rounds {int(rounds)}")


@task
def clean(c):
    """Remove build outputs (C objects, the extension, caches)."""
    _run(c, "make -s -C csrc clean")
    _run(c, "make -s -C tests/c clean")
    _run(c, "make -s -C tests/fuzz clean")
    _run(c, "make -s -C bench clean")
    for rel in ("build", "dist", "ringbuffer.egg-info", ".pytest_cache", ".hypothesis", ".ruff_cache"):
        shutil.rmtree(os.path.join(ROOT, rel), ignore_errors=True)
    pkg = os.path.join(ROOT, "ringbuffer")
    for name in os.listdir(pkg):
        if name.endswith(".so") or ".so." in name or name == "_ringbuf.c":
            os.remove(os.path.join(pkg, name))
    for name in ("include", "pkgconfig"):
        shutil.rmtree(os.path.join(pkg, name), ignore_errors=True)
