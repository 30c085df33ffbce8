"""Clients that go away mid-stream, on real sockets: 1,000 of them must leave no asyncio task in
the gateway's loop, no stream open at the upstream and no pile of upstream connections.

The gateway and the fake upstream both run on uvicorn; the client speaks raw HTTP/1.1 so that it can
vanish (FIN or RST) the moment the first event arrives. Each upstream stream would run for 20 s if
nobody cancelled it, so a missing cancellation shows as open upstream streams and live tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, channel
from tests.fakes.hostile_upstream import HostileUpstream, Plan, text_events
from tests.servers import serve

REQUESTS = 1000
CONCURRENCY = 50
MAX_KEEPALIVE = 128  # Upstream's pool bound: more idle upstream connections than this is a leak


class LoopSpy:
    """Wraps an ASGI app to learn which event loop serves it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def task_count(self) -> int:
        assert self.loop is not None

        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=5)


def established_to(port: int) -> int:
    """Open TCP connections to 127.0.0.1:``port`` (Linux /proc/net/tcp; state 01 = ESTABLISHED)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                count += 1
    return count


@pytest.fixture
def upstream() -> HostileUpstream:
    # 400 events 50 ms apart: 20 s of streaming unless the gateway hangs up.
    events = text_events("x" * 400, pieces=400)
    return HostileUpstream(plan=lambda body, headers: Plan(events=events, delay=0.05))


@pytest.fixture
def servers(upstream: HostileUpstream) -> Iterator[tuple[str, LoopSpy, int]]:
    with serve(upstream, lifespan="off") as upstream_url:
        settings = load_settings(
            proxy_access_key=PROXY_KEY,
            channels=[ChannelConfig.model_validate(channel(base_url=upstream_url + "/v1", first_byte_timeout=10))],
        )
        spy = LoopSpy(create_app(settings))
        with serve(spy) as gateway_url:
            yield gateway_url, spy, int(upstream_url.rsplit(":", 1)[1])


async def vanish(host: str, port: int, n: int) -> bool:
    """One streaming request that disappears after its first event; whether an event arrived."""
    body = orjson.dumps({"model": "m", "input": "hi", "stream": True})
    request = (
        f"POST /responses HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PROXY_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        seen = b""
        while b"data:" not in seen:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            if not chunk:
                return False
            seen += chunk
        return seen.startswith(b"HTTP/1.1 200")
    finally:
        if n % 2:
            writer.transport.abort()  # RST
        else:
            writer.close()  # FIN
            await writer.wait_closed()


async def settle(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()  # type: ignore[no-any-return]


async def test_a_thousand_vanishing_clients_leak_nothing(
    servers: tuple[str, LoopSpy, int], upstream: HostileUpstream
) -> None:
    url, spy, upstream_port = servers
    host, port = url.removeprefix("http://").split(":")
    assert await vanish(host, int(port), 0)  # warm up, and learn the loop
    assert await settle(lambda: upstream.active == 0, 5)
    baseline = spy.task_count()
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int) -> bool:
        async with semaphore:
            return await vanish(host, int(port), n)

    started = time.monotonic()
    results = await asyncio.gather(*(one(n) for n in range(REQUESTS)))
    assert all(results), f"{results.count(False)} requests got no first event"
    assert time.monotonic() - started < 25
    # Each stream would run 20 s more if it were not cancelled; give the cancellations 3 s.
    assert await settle(lambda: upstream.active == 0, 3), f"{upstream.active} upstream streams still open"
    assert await settle(lambda: spy.task_count() <= baseline + 2, 3), f"{spy.task_count()} tasks vs {baseline}"
    assert established_to(upstream_port) <= MAX_KEEPALIVE
    assert upstream.served >= REQUESTS
