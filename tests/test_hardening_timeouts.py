"""Connect, first-byte and idle timeouts against real sockets: a stalled upstream never holds a
client for longer than the channel's limits, and a stall before the commit fails over."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ccx_asgi import ChannelConfig
from tests.conftest import AppFactory, channel
from tests.fakes.hostile_upstream import HostileUpstream, Plan, text_events
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events
from tests.servers import serve


@pytest.fixture
def upstream() -> HostileUpstream:
    return HostileUpstream(plan=lambda body, headers: Plan(events=text_events()))


@pytest.fixture
def upstream_url(upstream: HostileUpstream) -> Iterator[str]:
    with serve(upstream, lifespan="off") as url:
        yield url + "/v1"


def fast(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return channel(name, base_url=url, connect_timeout=1, first_byte_timeout=0.5, idle_timeout=0.5, **fields)


def body(stream: bool = True) -> dict[str, Any]:
    return {"model": "m", "input": "hi", "stream": stream}


async def test_first_byte_timeout_fails_over_to_the_next_channel(
    make_app: AppFactory, client_for: ClientFor, upstream: HostileUpstream, upstream_url: str
) -> None:
    upstream.plan = lambda body, headers: Plan(
        stall_before_headers=headers.get("x-which") == "stuck", events=text_events("from the healthy one")
    )
    app = make_app(
        [
            fast("stuck", upstream_url, headers={"x-which": "stuck"}),
            fast("healthy", upstream_url, headers={"x-which": "ok"}),
        ]
    )
    started = time.monotonic()
    response = await client_for(app).post("/responses", json=body())
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "healthy"
    assert response.headers["x-ccx-attempts"] == "2"
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "from the healthy one"
    assert 0.5 <= elapsed < 3


@pytest.mark.parametrize("stream", [True, False])
async def test_a_stalled_only_channel_gives_a_clear_error_in_bounded_time(
    make_app: AppFactory, client_for: ClientFor, upstream: HostileUpstream, upstream_url: str, stream: bool
) -> None:
    upstream.plan = lambda body, headers: Plan(stall_before_headers=True)
    started = time.monotonic()
    response = await client_for(make_app([fast("only", upstream_url)])).post("/responses", json=body(stream))
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert "first_byte_timeout" in response.json()["error"]["message"]
    assert upstream.active == 0 or await _settles(upstream)


async def test_idle_stall_after_commit_ends_the_stream_with_response_failed(
    make_app: AppFactory, client_for: ClientFor, upstream: HostileUpstream, upstream_url: str
) -> None:
    events = text_events("a long answer in many pieces", pieces=8)
    upstream.plan = lambda body, headers: Plan(events=events, stall_after=5)
    started = time.monotonic()
    response = await client_for(make_app([fast("only", upstream_url)])).post("/responses", json=body())
    assert time.monotonic() - started < 3
    assert response.status_code == 200
    received = parse_sse(response.content)
    validate_events(received)
    assert received[-1]["type"] == "response.failed"
    assert "idle_timeout" in received[-1]["response"]["error"]["message"]


async def test_idle_stall_before_commit_fails_over(
    make_app: AppFactory, client_for: ClientFor, upstream: HostileUpstream, upstream_url: str
) -> None:
    # Only response.created arrives from the first channel: nothing committed, so try the next.
    upstream.plan = lambda body, headers: Plan(
        events=text_events("second"), stall_after=1 if headers.get("x-which") == "slow" else None
    )
    app = make_app(
        [fast("slow", upstream_url, headers={"x-which": "slow"}), fast("next", upstream_url, headers={"x-which": "n"})]
    )
    response = await client_for(app).post("/responses", json=body())
    assert response.headers["x-ccx-channel"] == "next"
    received = parse_sse(response.content)
    validate_events(received)
    assert received[-1]["type"] == "response.completed"


async def test_slow_but_steady_streams_are_not_cut(
    make_app: AppFactory, client_for: ClientFor, upstream: HostileUpstream, upstream_url: str
) -> None:
    # ~11 events 0.15 s apart: longer in total than the 0.5 s idle limit, but never idle that long.
    upstream.plan = lambda body, headers: Plan(events=text_events("abcd", pieces=2), delay=0.15)
    response = await client_for(make_app([fast("only", upstream_url)])).post("/responses", json=body())
    received = parse_sse(response.content)
    validate_events(received)
    assert received[-1]["type"] == "response.completed"


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback port whose accept queue is full, so new connections hang in SYN-SENT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


async def test_connect_timeout(make_app: AppFactory, client_for: ClientFor, blackhole: str) -> None:
    probe = httpx.AsyncClient(timeout=httpx.Timeout(0.3))
    try:
        await probe.get(blackhole)
    except httpx.ConnectTimeout:
        pass
    except httpx.HTTPError as exc:  # pragma: no cover - depends on the kernel's SYN handling
        pytest.skip(f"this kernel does not leave connections hanging on a full backlog ({exc!r})")
    finally:
        await probe.aclose()
    app = make_app([channel("hole", base_url=blackhole, connect_timeout=0.3, first_byte_timeout=30)])
    started = time.monotonic()
    response = await client_for(app).post("/responses", json=body())
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert "timed out (ConnectTimeout)" in response.json()["error"]["message"]


def test_timeout_defaults_and_the_legacy_read_timeout() -> None:
    default = ChannelConfig.model_validate(channel())
    assert (default.connect_timeout, default.first_byte_timeout, default.idle_timeout) == (10, 300, 300)
    legacy = ChannelConfig.model_validate(channel(read_timeout=42))
    assert (legacy.first_byte_timeout, legacy.idle_timeout) == (42, 42)
    mixed = ChannelConfig.model_validate(channel(read_timeout=42, idle_timeout=7))
    assert (mixed.first_byte_timeout, mixed.idle_timeout) == (42, 7)
    with pytest.raises(ValueError, match="greater than 0"):
        ChannelConfig.model_validate(channel(idle_timeout=0))


async def _settles(upstream: HostileUpstream) -> bool:
    """Whether the upstream's open requests drop to zero within a second."""
    for _ in range(100):
        if upstream.active == 0:
            return True
        await asyncio.sleep(0.01)
    return False
