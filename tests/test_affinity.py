"""Session affinity: a conversation sticks to the channel and key that served it, for a TTL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from ccx_asgi.affinity import session_key
from ccx_asgi.breaker import target_id
from ccx_asgi.context import RequestContext
from ccx_asgi.state import MemoryStore
from tests.fakes.scripted_upstream import FakeClock, Scripted, asgi_client, chan, ok, stack, status

BODY = {"model": "gpt-5", "input": "hi", "stream": True}

# (extra body fields, headers) that identify the same conversation.
IDENTITIES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "prompt_cache_key": ({"prompt_cache_key": "thread-1"}, {}),
    "session-id header": ({}, {"session-id": "thread-1"}),
    "session_id header": ({}, {"session_id": "thread-1"}),
    "user": ({"user": "alice"}, {}),
}


def ctx(body: dict[str, Any], headers: dict[str, str]) -> RequestContext:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    return RequestContext.from_body({"model": "m", **body}, request_id="r", headers=raw)


def test_session_key_sources_and_precedence() -> None:
    assert session_key(ctx({}, {})) is None
    keys = {name: session_key(ctx(body, headers)) for name, (body, headers) in IDENTITIES.items()}
    assert all(k is not None and len(k) == 32 for k in keys.values())
    assert keys["session-id header"] == keys["session_id header"]
    assert keys["prompt_cache_key"] != keys["session-id header"]  # sources do not collide
    both = session_key(ctx({"prompt_cache_key": "thread-1", "user": "alice"}, {"session-id": "other"}))
    assert both == keys["prompt_cache_key"]
    assert "thread-1" not in str(keys["prompt_cache_key"])  # only a digest is stored


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _app(upstream: Scripted, clock: FakeClock, **options: Any) -> Any:
    channels = [chan("a", keys=["key-1", "key-2"]), chan("b")]
    return stack(channels, upstream, clock=clock, state=MemoryStore(clock=clock), affinity_ttl=600, **options)


@pytest.mark.parametrize(("extra", "headers"), IDENTITIES.values(), ids=IDENTITIES.keys())
async def test_conversation_sticks_until_the_ttl_expires(
    extra: dict[str, Any], headers: dict[str, str], clock: FakeClock
) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), status(500), ok("from a"))  # both keys fail once
    upstream.script("b.test", ok("from b"))
    async with asgi_client(_app(upstream, clock)) as client:
        first = await client.post("/responses", json={**BODY, **extra}, headers=headers)
        assert first.headers["x-ccx-channel"] == "b"
        upstream.calls.clear()
        # 'a' is healthy again, but the conversation stays on 'b' (its prompt cache lives there).
        clock.advance(599)
        again = await client.post("/responses", json={**BODY, **extra}, headers=headers)
        assert again.headers["x-ccx-channel"] == "b"
        assert upstream.hosts() == ["b.test"]
        # A different conversation goes by priority.
        other = await client.post("/responses", json={**BODY, "prompt_cache_key": "thread-2"})
        assert other.headers["x-ccx-channel"] == "a"
        # Stickiness was refreshed less than a quarter-TTL ago? No: 599 s > 150 s, so the second
        # request rewrote it; it expires 600 s after that.
        clock.advance(599)
        still = await client.post("/responses", json={**BODY, **extra}, headers=headers)
        assert still.headers["x-ccx-channel"] == "b"
        clock.advance(601)
        expired = await client.post("/responses", json={**BODY, **extra}, headers=headers)
        assert expired.headers["x-ccx-channel"] == "a"


async def test_sticks_to_the_key_too(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), ok())  # key-1 fails once, key-2 serves
    async with asgi_client(_app(upstream, clock)) as client:
        for _ in range(3):
            response = await client.post("/responses", json={**BODY, "prompt_cache_key": "t"})
            assert response.status_code == 200
        # Without affinity the healthy key-1 would be first again.
        fresh = await client.post("/responses", json=BODY)
        assert fresh.status_code == 200
    assert [c.key for c in upstream.calls] == ["key-1", "key-2", "key-2", "key-2", "key-1"]


async def test_sticky_target_with_open_circuit_is_skipped(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), status(500), ok())
    upstream.script("b.test", ok())
    app = _app(upstream, clock)
    async with asgi_client(app) as client:
        await client.post("/responses", json={**BODY, "user": "u"})  # sticks to b
        for _ in range(5):
            await app.app.breaker.failure(target_id("b", SecretStr("upstream-key")))
        upstream.calls.clear()
        response = await client.post("/responses", json={**BODY, "user": "u"})
        assert response.headers["x-ccx-channel"] == "a"
        assert upstream.hosts() == ["a.test"]


async def test_conversation_moves_when_its_channel_fails(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), status(500), ok())
    upstream.script("b.test", ok(), status(503))
    async with asgi_client(_app(upstream, clock)) as client:
        assert (await client.post("/responses", json={**BODY, "user": "u"})).headers["x-ccx-channel"] == "b"
        assert (await client.post("/responses", json={**BODY, "user": "u"})).headers["x-ccx-channel"] == "a"
        upstream.calls.clear()
        assert (await client.post("/responses", json={**BODY, "user": "u"})).headers["x-ccx-channel"] == "a"
        assert upstream.hosts() == ["a.test"]  # now sticky to a


async def test_prefer_priority_lets_a_healthy_higher_priority_channel_win(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), status(500), ok())
    upstream.script("b.test", ok())
    async with asgi_client(_app(upstream, clock, affinity_prefer_priority=True)) as client:
        first = await client.post("/responses", json={**BODY, "user": "u"})
        assert first.headers["x-ccx-channel"] == "b"
        again = await client.post("/responses", json={**BODY, "user": "u"})
        assert again.headers["x-ccx-channel"] == "a"


async def test_prefer_priority_still_uses_the_sticky_key_first(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), ok())
    async with asgi_client(_app(upstream, clock, affinity_prefer_priority=True)) as client:
        await client.post("/responses", json={**BODY, "user": "u"})
        await client.post("/responses", json={**BODY, "user": "u"})
    assert [(c.host, c.key) for c in upstream.calls] == [("a.test", "key-1"), ("a.test", "key-2"), ("a.test", "key-2")]


async def test_affinity_can_be_disabled(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), status(500), ok())
    upstream.script("b.test", ok())
    channels = [chan("a", keys=["key-1", "key-2"]), chan("b")]
    app = stack(channels, upstream, clock=clock, state=MemoryStore(clock=clock), affinity_ttl=0)
    async with asgi_client(app) as client:
        assert (await client.post("/responses", json={**BODY, "user": "u"})).headers["x-ccx-channel"] == "b"
        assert (await client.post("/responses", json={**BODY, "user": "u"})).headers["x-ccx-channel"] == "a"
