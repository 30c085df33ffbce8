"""Starting, watching and stopping the benchmark's server processes (all on 127.0.0.1).

Each server runs in its own process so that its CPU time and memory can be read from ``/proc``
(Linux). Every process started here is stopped by its own pid when the run ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time consumed so far by ``pid`` (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


@dataclass
class Server:
    """A started server process: its name, port, pid and log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the process (SIGINT, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    name: str, argv: list[str], *, port: int, env: dict[str, str] | None = None, ready_path: str, timeout: float = 60
) -> Server:
    """Start ``argv`` and wait until ``GET ready_path`` answers (any HTTP status) on ``port``."""
    log = Path(tempfile.mkstemp(prefix=f"ccx-bench-{name}-", suffix=".log")[1])
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=os.getcwd())
    server = Server(name, port, process, log)
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise RuntimeError(f"{name} exited during start-up:\n{server.tail()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2)
            return server
        except urllib.error.HTTPError:
            return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not answer within {timeout:.0f}s:\n{server.tail()}")
        time.sleep(0.1)


def python_module(module: str, *args: str) -> list[str]:
    """``argv`` to run ``module`` with this interpreter (the project's venv)."""
    return [sys.executable, "-m", module, *args]
