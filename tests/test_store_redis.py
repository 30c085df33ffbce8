"""Stored responses shared through one real redis-server by two gateway instances, each served by
uvicorn over real HTTP and driven by the openai SDK: create on one, retrieve and continue on the other."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from ccx_asgi.store import ROUTE_TTL, owner_fingerprint
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, AppFactory
from tests.fakes.stateful_responses_upstream import StatefulResponsesUpstream
from tests.servers import serve
from tests.stateful_helpers import QUESTION, channel_for, create, native_brain, routed, upstream_for
from tests.test_redis import RedisServer

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the redis-server binary is not installed"),
]

OTHER_KEY = "second-client-key"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.kill()


def _raw(value: bytes | str | None) -> bytes:
    """A value read with a plain client (``decode_responses`` off, so never ``str``)."""
    assert not isinstance(value, str)
    return value or b""


def over_http(url: str, key: str = PROXY_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["chat", "claude", "responses"])
async def test_create_on_one_instance_continue_on_the_other(
    redis_server: RedisServer, make_app: AppFactory, kind: str, stream: bool
) -> None:
    fake = upstream_for(kind)
    options: dict[str, Any] = {
        "transport": routed(**{kind: fake}),
        "redis_url": redis_server.url,
        "extra_proxy_access_keys": OTHER_KEY,
    }
    one, two = make_app([channel_for(kind)], **options), make_app([channel_for(kind)], **options)
    with serve(one) as url_one, serve(two) as url_two:
        first_client, second_client = over_http(url_one), over_http(url_two)
        stranger = over_http(url_two, OTHER_KEY)
        try:
            first = await create(first_client, stream=stream, model="gpt-x", input="My secret word is LIME.")
            got = await second_client.responses.retrieve(first.id)
            assert got.id == first.id and got.output_text == "Noted."
            listed = await second_client.responses.input_items.list(first.id)
            assert listed.data
            follow = await create(
                second_client, stream=stream, model="gpt-x", input=QUESTION, previous_response_id=first.id
            )
            assert follow.output_text == "Your secret word is LIME."
            with pytest.raises(openai.NotFoundError):
                await stranger.responses.retrieve(first.id)
            with pytest.raises(openai.BadRequestError) as caught:
                await stranger.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
            assert caught.value.code == "previous_response_not_found"
            await second_client.responses.delete(follow.id)
            with pytest.raises(openai.NotFoundError):
                await first_client.responses.retrieve(follow.id)
        finally:
            for client in (first_client, second_client, stranger):
                await client.close()
    await one.aclose()
    await two.aclose()

    raw = redis.Redis(port=redis_server.port)
    try:
        keys = [_raw(k).decode() for k in raw.keys("ccx:*")]
        if kind == "responses":  # a native route, kept as long as OpenAI keeps the response
            assert f"ccx:route:{first.id}" in keys
            assert 86_400_000 < raw.pttl(f"ccx:route:{first.id}") <= ROUTE_TTL * 1000
        else:
            assert f"ccx:response:{first.id}" in keys
            assert 0 < raw.pttl(f"ccx:response:{first.id}") <= 86_400_000
        dump = b"".join(_raw(raw.get(k)) for k in keys)
        assert PROXY_KEY.encode() not in dump and b"upstream-key" not in dump  # neither key is stored
        assert owner_fingerprint(PROXY_KEY.encode()).encode() in dump
    finally:
        raw.close()


class RateLimitFirstKeyOnce:
    """Wraps a fake: the first request with ``key-1`` gets a 429, so the gateway moves to ``key-2``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        if scope["type"] == "http" and auth == b"Bearer key-1" and not self.done:
            self.done = True
            await send(
                {"type": "http.response.start", "status": 429, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": b'{"error": {"message": "rate limited"}}'})
            return
        await self.app(scope, receive, send)


async def test_native_route_is_shared(redis_server: RedisServer, make_app: AppFactory) -> None:
    """Instance one was served by key-2; instance two sends the retrieve and the follow-up there too."""
    fake = StatefulResponsesUpstream(brain=native_brain, keys=("key-1", "key-2"))
    options: dict[str, Any] = {
        "transport": routed(native=RateLimitFirstKeyOnce(fake)),
        "redis_url": redis_server.url,
        "affinity_ttl": 0,
    }
    channels = [channel_for("responses", "native", api_keys=["key-1", "key-2"])]
    one, two = make_app(channels, **options), make_app(channels, **options)
    with serve(one) as url_one, serve(two) as url_two:
        first_client, second_client = over_http(url_one), over_http(url_two)
        try:
            first = await first_client.responses.create(model="gpt-x", input="My secret word is PEAR.")
            assert ("key-2", first.id) in fake.stored
            got = await second_client.responses.retrieve(first.id)
            assert got.output_text == "Noted."
            assert fake.requests[-1].headers["authorization"] == "Bearer key-2"
            follow = await second_client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
            assert follow.output_text == "Your secret word is PEAR."
            assert fake.requests[-1].headers["authorization"] == "Bearer key-2"
        finally:
            await first_client.close()
            await second_client.close()
    await one.aclose()
    await two.aclose()


async def test_blob_store_in_redis_and_its_fallback(redis_server: RedisServer) -> None:
    from ccx_asgi.state import RedisStore, create_blob_store

    one, two = RedisStore(redis_server.url, prefix="t"), RedisStore(redis_server.url, prefix="t")
    blobs_one = create_blob_store(one, max_entries=10, max_bytes=1000)
    blobs_two = create_blob_store(two, max_entries=10, max_bytes=1000)
    try:
        assert await blobs_one.put("ns", "k", b"\x00bytes\xff", 5)
        await blobs_one.put_many("ns", [("a", b"1"), ("b", b"2"), ("huge", b"x" * 2000)], 5)
        assert await blobs_two.get("ns", "k") == b"\x00bytes\xff"  # another instance sees it
        assert [await blobs_two.get("ns", k) for k in ("a", "b", "huge")] == [b"1", b"2", None]
        assert not await blobs_one.put("ns", "big", b"x" * 1001, 5)
        assert await blobs_two.delete("ns", "a")
        assert await blobs_one.get("ns", "a") is None
        assert not await blobs_two.delete("ns", "a")
        redis_server.kill()
        assert await blobs_one.get("ns", "k") == b"\x00bytes\xff"  # served from the local copy
        assert await blobs_one.put("ns", "later", b"z", 5)  # an outage never fails a write
        assert await blobs_one.get("ns", "later") == b"z"
        # The blob store's own client failed; the routing state's health flag is its own.
        assert not blobs_one.connection.healthy  # type: ignore[attr-defined]
        assert one.healthy
    finally:
        await blobs_one.aclose()
        await blobs_two.aclose()
        await one.aclose()
        await two.aclose()


async def test_a_long_chain_is_rebuilt_from_redis_on_another_instance(redis_server: RedisServer) -> None:
    """70 responses chained on one instance, rebuilt on another in ceil(69 / ANCESTOR_WINDOW) MGETs."""
    from ccx_asgi.state import RedisStore
    from ccx_asgi.store import ANCESTOR_WINDOW, ResponseStore, StoredResponse

    one, two = RedisStore(redis_server.url, prefix="t"), RedisStore(redis_server.url, prefix="t")
    writer, reader = ResponseStore(one), ResponseStore(two)
    try:
        parent: StoredResponse | None = None
        for n in range(70):
            record = StoredResponse(
                id=f"resp_{n}", owner="alice", kind="local", channel="c", response={"output": []}, input=[n]
            )
            if parent is not None:
                record.follow(parent)
            assert await writer.save(record)
            parent = record
        last = await reader.get("alice", "resp_69")
        assert last is not None and last.depth == 69
        monitor = redis.Redis(port=redis_server.port)
        before = monitor.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)
        chain = await reader.chain(last)
        after = monitor.info("commandstats")["cmdstat_mget"]["calls"]
        monitor.close()
        assert [r.input for r in chain] == [[n] for n in range(69)]
        assert after - before == -(-69 // ANCESTOR_WINDOW)
        assert await reader.get("bob", "resp_69") is None
    finally:
        for closing in (writer, reader, one, two):
            await closing.aclose()
