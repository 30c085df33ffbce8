"""``python -m ccx_asgi`` as an operator runs it: flags and variables, the bind, the log, the workers.

Every test starts the real server in its own process (uvicorn on a loopback port) and talks to it
over HTTP; ``--port 0`` lets the server pick a free port, which it reports in its "listening" line.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from packaging.requirements import Requirement

import ccx_asgi
from ccx_asgi.types import Receive, Scope, Send
from tests.servers import serve, wait_serving

ROOT = Path(__file__).resolve().parents[1]
KEY = "cli-test-key"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")


def server_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCX_")}
    env.update(PYTHONPATH=str(ROOT), CCX_PROXY_ACCESS_KEY=KEY, **variables)
    return env


class Gateway:
    """One ``python -m ccx_asgi`` process; its stderr is collected line by line as it arrives."""

    def __init__(self, args: Sequence[str] = (), preexec: Any = None, **variables: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccx_asgi", *args],
            env=server_env(**variables),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec,
            start_new_session=True,  # its own process group: cleanup reaches the worker processes too
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 30) -> re.Match[str]:
        """The first log line matching ``pattern``; fails with the log when it does not come."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := regex.search(line):
                    return found
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {regex.pattern!r}; exit {self.proc.poll()}; log:\n{self.log}")

    def url(self) -> str:
        """The base URL from the "listening" line, once the server answers there."""
        port = int(self.wait_for(LISTENING).group(1))
        url = f"http://127.0.0.1:{port}"
        if not wait_serving(url + "/", self.proc):
            raise AssertionError(f"the server does not answer at {url}; log:\n{self.log}")
        return url

    def stop(self) -> bool:
        """SIGTERM; whether the server shut down gracefully (uvicorn re-raises the signal once done)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=20)
        finally:
            self.kill_group()
            self.close()
        return code in (0, -signal.SIGTERM) and "Traceback" not in self.log

    def close(self) -> None:
        """Once the process is gone: let the reader finish the log, then close the pipe."""
        self._reader.join(timeout=5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the process group (workers whose supervisor is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def workers(self) -> list[int]:
        """Pids of the live processes in the server's process group, the server itself excluded."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.proc.pid:
                with contextlib.suppress(OSError, IndexError):
                    fields = (entry / "stat").read_text().rpartition(")")[2].split()
                    if int(fields[2]) == self.proc.pid and fields[0] != "Z":  # pgrp, state
                        found.append(int(entry.name))
        return found


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        if gateway.proc.poll() is None:
            gateway.stop()
        gateway.kill_group()
        gateway.close()


def run(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccx_asgi", *args],
        env=server_env(**variables),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}


def test_help_prints_usage_and_exits_0_without_serving() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run("--help", CCX_PORT=str(port))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m ccx_asgi")
    for flag, variable in [("--host", "CCX_HOST"), ("--port", "CCX_PORT"), ("--log-level", "CCX_LOG_LEVEL"),
                           ("--workers", "CCX_WORKERS"), ("--version", "")]:  # fmt: skip
        assert flag in done.stdout and variable in done.stdout
    assert "CCX_REDIS_URL" in done.stdout  # the per-process state note
    assert "listening" not in done.stdout + done.stderr


def test_every_flag_is_documented() -> None:
    flags = set(re.findall(r"--[a-z][a-z-]+", run("--help").stdout)) - {"--help", "--version"}
    assert flags == {"--host", "--port", "--log-level", "--workers"}
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for flag in flags:
        assert f"`{flag}`" in configuration and f"`{flag}`" in readme, flag


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"ccx_asgi {ccx_asgi.__version__}"


def test_bad_flag_and_bad_variable_exit_2_with_one_line() -> None:
    done = run("--port", "eighty")
    assert done.returncode == 2
    assert "invalid int value: 'eighty'" in done.stderr
    done = run(CCX_WORKERS="0")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "ccx_asgi: invalid configuration: CCX_WORKERS: Input should be greater than or equal to 1"
    )
    # A value the settings accept but a library refuses when the app is built: one line, no traceback.
    done = run("--workers", "2", CCX_REDIS_URL="foo://user:redis-password@cache")
    assert done.returncode == 2
    assert "ccx_asgi: cannot start: Redis URL must specify one of the following schemes" in done.stderr
    assert "Traceback" not in done.stderr and "redis-password" not in done.stderr


def test_flags_win_over_variables(gateways: list[Gateway]) -> None:
    # Every variable asks for something that cannot work (an address not ours, port 1, no workers)
    # or hides the evidence (ERROR logging); the flags override each of them.
    gateway = Gateway(
        ["--host", "127.0.0.1", "--port", "0", "--log-level", "info", "--workers", "1"],
        CCX_HOST="192.0.2.1", CCX_PORT="1", CCX_LOG_LEVEL="ERROR", CCX_WORKERS="0",
    )  # fmt: skip
    gateways.append(gateway)
    url = gateway.url()
    answer = httpx.post(f"{url}/v1/responses", json={"model": "gpt-5.5", "input": "hi"}, headers=auth(), timeout=10)
    assert answer.status_code == 200, answer.text
    assert "demo channel" in answer.json()["output"][0]["content"][0]["text"]
    assert gateway.stop()
    assert " INFO ccx_asgi.requests:" in gateway.log  # INFO, as the flag says
    assert KEY not in gateway.log


def test_variables_apply_without_flags(gateways: list[Gateway]) -> None:
    gateway = Gateway(CCX_PORT="0", CCX_LOG_LEVEL="WARNING")
    gateways.append(gateway)
    gateway.wait_for("DEMO channel")
    # WARNING: the INFO "listening" line is not logged, so find the port from the process itself.
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        ports = _listening_ports(gateway.proc.pid)
        url = f"http://127.0.0.1:{ports[0]}" if ports else None
        time.sleep(0.05)
    assert url is not None, gateway.log
    assert httpx.get(f"{url}/v1/models", headers=auth(), timeout=10).status_code == 200
    assert gateway.stop()
    assert " INFO " not in gateway.log


def _listening_ports(pid: int) -> list[int]:
    """Loopback TCP ports in LISTEN state owned by ``pid`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            ports.append(int(fields[1].split(":")[1], 16))
    return ports


def test_a_port_in_use_exits_1_with_one_line_and_never_says_listening() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args in (["--port", str(port)], ["--port", str(port), "--workers", "2"]):
            done = run(*args)
            assert done.returncode == 1, done.stderr
            errors = [line for line in done.stderr.splitlines() if line.startswith("ccx_asgi:")]
            assert errors == [f"ccx_asgi: cannot listen on 127.0.0.1:{port}: Address already in use"]
            assert "Traceback" not in done.stderr
            assert "listening" not in done.stderr


def test_open_file_soft_limit_is_raised_to_the_hard_limit(gateways: list[Gateway]) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    gateway = Gateway(["--port", "0"], preexec=lower)
    gateways.append(gateway)
    gateway.url()
    shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert gateway.wait_for(r"open-file limit: (\S+) \(hard limit").group(1) == shown
    limits = Path(f"/proc/{gateway.proc.pid}/limits").read_text()
    row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert row.split()[3] == row.split()[4]  # soft == hard in the running server


def test_start_up_log_says_state_is_per_process(gateways: list[Gateway]) -> None:
    single = Gateway(["--port", "0"])
    gateways.append(single)
    single.wait_for(r"INFO ccx_asgi: breaker, affinity and stored-response state is in this process")
    assert single.stop()
    several = Gateway(["--port", "0", "--workers", "2"])
    gateways.append(several)
    several.wait_for(r"WARNING ccx_asgi: breaker, affinity and stored-response state is per process: each of the 2")
    assert "(2 workers, pid" in several.wait_for(LISTENING).string
    several.url()
    deadline = time.monotonic() + 30
    while len(several.workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(several.workers()) >= 2, several.log  # two workers (plus multiprocessing's tracker)
    several.proc.terminate()
    assert several.proc.wait(timeout=30) == 0  # the supervisor stops its workers, then exits
    deadline = time.monotonic() + 10
    while several.workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert several.workers() == []


def test_metrics_come_with_the_server_extra(gateways: list[Gateway]) -> None:
    # The README's serve command installs '.[server]': that extra must bring the Prometheus client.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = {Requirement(r).name for r in project["optional-dependencies"]["server"]}
    assert {"uvicorn", "prometheus-client"} <= server
    library = {Requirement(r).name for r in project["dependencies"]}
    assert "prometheus-client" not in library and "uvicorn" not in library  # the library stays lean
    gateway = Gateway(["--port", "0"])
    gateways.append(gateway)
    url = gateway.url()
    httpx.post(f"{url}/v1/responses", json={"model": "gpt-5.5", "input": "hi"}, headers=auth(), timeout=10)
    metrics = httpx.get(f"{url}/v1/metrics", headers=auth(), timeout=10)
    assert metrics.status_code == 200, metrics.text
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    assert samples[("ccx_requests_total", (("channel", "demo"), ("status", "200")))] == 1.0, metrics.text


# -- several workers behind one port, sharing state through Redis ------------------------------


def _failing_upstream() -> tuple[Any, list[str]]:
    hits: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        hits.append(scope["path"])
        body = orjson.dumps({"error": {"message": "upstream overloaded", "type": "server_error"}})
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app, hits


def _admin(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/admin/channels")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the redis-server binary is not installed")
def test_two_workers_share_the_breaker_through_redis(gateways: list[Gateway]) -> None:
    from tests.test_redis import RedisServer

    redis_server = RedisServer()
    upstream, hits = _failing_upstream()
    try:
        with serve(upstream, lifespan="off") as upstream_url:
            channels = [
                {"name": "flaky", "service_type": "responses", "base_url": upstream_url + "/v1", "api_keys": ["k"]},
                {"name": "backup", "service_type": "demo"},
            ]
            gateway = Gateway(
                ["--port", "0", "--workers", "2"],
                CCX_CHANNELS=orjson.dumps(channels).decode(),
                CCX_REDIS_URL=redis_server.url,
                CCX_BREAKER_FAILURE_THRESHOLD="2",
                CCX_BREAKER_BACKOFF="600",
                CCX_KEEPALIVE_INTERVAL="0",
            )
            gateways.append(gateway)
            url = gateway.url()
            gateway.wait_for("state is shared through CCX_REDIS_URL")
            body = {"model": "gpt-5.5", "input": "hi"}
            # One keep-alive connection: every request lands on the same worker.
            with httpx.Client(base_url=url, headers=auth(), timeout=10) as first:
                for _ in range(3):
                    answer = first.post("/v1/responses", json=body)
                    assert answer.status_code == 200, answer.text
                    assert answer.headers["x-ccx-channel"] == "backup"
                opener = _admin(first)
            flaky = next(c for c in opener["channels"] if c["name"] == "flaky")
            assert flaky["breaker"]["state"] == "open", opener
            assert flaky["stats"]["failed_attempts"] == 2
            assert hits == ["/v1/responses", "/v1/responses"]  # the third request skipped the open circuit
            # New connections until one lands on the other worker (the kernel picks the acceptor).
            other = None
            deadline = time.monotonic() + 60
            while other is None and time.monotonic() < deadline:
                client = httpx.Client(base_url=url, headers=auth(), timeout=10)
                doc = _admin(client)
                if doc["gateway"]["pid"] != opener["gateway"]["pid"]:
                    other = (client, doc)
                else:
                    client.close()
            assert other is not None, "every new connection went to the same worker"
            client, doc = other
            try:
                flaky = next(c for c in doc["channels"] if c["name"] == "flaky")
                assert flaky["stats"]["failed_attempts"] == flaky["stats"]["requests"] == 0  # never tried it itself...
                assert flaky["breaker"]["state"] == "open"  # ...but sees the circuit the other one opened
                answer = client.post("/v1/responses", json=body)
                assert answer.status_code == 200, answer.text
                assert (answer.headers["x-ccx-channel"], answer.headers["x-ccx-attempts"]) == ("backup", "1")
                assert _admin(client)["gateway"]["pid"] == doc["gateway"]["pid"]
            finally:
                client.close()
            assert len(hits) == 2  # the second worker never called the failing upstream
            assert gateway.stop()
    finally:
        redis_server.kill()
