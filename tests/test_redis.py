"""Shared state in a real redis-server: two gateway instances act as one; a Redis outage degrades."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ccx_asgi.state import BLOB_TIMEOUT, RedisStore
from tests.conftest import AppFactory
from tests.fakes.scripted_upstream import Scripted, chan, ok, status
from tests.fixture_types import ClientFor
from tests.servers import free_port

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the redis-server binary is not installed"),
]

BODY = {"model": "gpt-5", "input": "hi", "stream": True}


class RedisServer:
    """A throw-away ``redis-server`` on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """Stop the server hard (simulates a crash)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.kill()


async def test_store_operations_and_expiry(redis_server: RedisServer) -> None:
    store, other = RedisStore(redis_server.url, prefix="t"), RedisStore(redis_server.url, prefix="t")
    try:
        assert await store.get("ns", "k") is None
        await store.set("ns", "k", {"a": 1, "b": "x"}, ttl=0.15)
        assert await other.get("ns", "k") == {"a": 1, "b": "x"}  # visible to another instance
        raw = redis.Redis(port=redis_server.port)
        assert raw.exists("t:ns:k")
        assert 0 < raw.pttl("t:ns:k") <= 150
        raw.close()
        await asyncio.sleep(0.2)
        assert await other.get("ns", "k") is None
        # claim is exclusive across instances
        assert await store.claim("probe", "x", ttl=5)
        assert not await other.claim("probe", "x", ttl=5)
        await other.delete("probe", "x")
        assert await other.claim("probe", "x", ttl=5)
        assert store.healthy
    finally:
        await store.aclose()
        await other.aclose()


def _two(make_app: AppFactory, server: RedisServer, upstream: Scripted) -> tuple[Any, Any]:
    channels = [chan("a"), chan("b")]
    options: dict[str, Any] = {"transport": upstream, "redis_url": server.url, "keepalive_interval": 0}
    return make_app(channels, **options), make_app(channels, **options)


async def test_two_instances_share_breaker_state(
    redis_server: RedisServer, make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500))
    upstream.script("b.test", ok())
    first, second = _two(make_app, redis_server, upstream)
    one, two = client_for(first), client_for(second)
    for _ in range(5):
        assert (await one.post("/responses", json=BODY)).headers["x-ccx-channel"] == "b"
    upstream.calls.clear()
    response = await two.post("/responses", json=BODY)
    assert response.headers["x-ccx-channel"] == "b"
    assert upstream.hosts() == ["b.test"]  # instance two never tried 'a': its circuit is open in Redis


async def test_two_instances_share_affinity(
    redis_server: RedisServer, make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), ok())
    upstream.script("b.test", ok())
    first, second = _two(make_app, redis_server, upstream)
    one, two = client_for(first), client_for(second)
    body = {**BODY, "prompt_cache_key": "thread-42"}
    assert (await one.post("/responses", json=body)).headers["x-ccx-channel"] == "b"
    upstream.calls.clear()
    assert (await two.post("/responses", json=body)).headers["x-ccx-channel"] == "b"
    assert (await two.post("/responses", json=BODY)).headers["x-ccx-channel"] == "a"  # no session: priority
    assert upstream.hosts() == ["b.test", "a.test"]


async def test_killing_redis_degrades_to_local_state(
    redis_server: RedisServer, make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = Scripted()
    upstream.script("a.test", ok())
    upstream.script("b.test", ok())
    app = make_app([chan("a"), chan("b")], transport=upstream, redis_url=redis_server.url, keepalive_interval=0)
    client = client_for(app)
    for n in range(3):
        assert (await client.post("/responses", json={**BODY, "user": f"u{n}"})).status_code == 200
    assert app.state.healthy  # type: ignore[attr-defined]
    redis_server.kill()
    caplog.set_level(logging.WARNING, logger="ccx_asgi.state")
    upstream.script("a.test", status(500))
    started = time.monotonic()
    statuses = [(await client.post("/responses", json=BODY)).status_code for _ in range(8)]
    elapsed = time.monotonic() - started
    assert statuses == [200] * 8  # no request failed because Redis did
    assert elapsed < 3
    assert not app.state.healthy  # type: ignore[attr-defined]
    assert any("Redis state store unavailable" in r.getMessage() for r in caplog.records)
    # Breakers keep working on local state: after 5 failures 'a' is skipped.
    upstream.calls.clear()
    await client.post("/responses", json=BODY)
    assert upstream.hosts() == ["b.test"]


async def test_a_hung_redis_costs_one_bounded_wait_then_local_state(
    redis_server: RedisServer, make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", ok())
    app = make_app([chan("a")], transport=upstream, redis_url=redis_server.url, keepalive_interval=0)
    client = client_for(app)
    assert (await client.post("/responses", json=BODY)).status_code == 200
    redis_server.proc.send_signal(signal.SIGSTOP)  # alive but silent: every call would hang
    try:
        started = time.monotonic()
        statuses = [(await client.post("/responses", json={**BODY, "user": "u"})).status_code for _ in range(10)]
        elapsed = time.monotonic() - started
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert statuses == [200] * 10
    # One 0.5 s timeout of the routing state's client and one BLOB_TIMEOUT of the response store's
    # (each request stores its route), then local state until the retry pauses end.
    assert elapsed < 0.5 + BLOB_TIMEOUT + 1.0
    assert not app.state.healthy  # type: ignore[attr-defined]
