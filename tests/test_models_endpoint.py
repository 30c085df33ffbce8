"""GET /models: configured names plus upstream lists (cached briefly), never failing on an upstream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from ccx_asgi import create_app, load_settings
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, AppFactory, channel
from tests.fixture_types import ClientFor
from tests.servers import serve


class ListUpstreams:
    """Strict fakes of the model-list endpoints of OpenAI-style and Anthropic upstreams."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        host, path = request.url.host, request.url.path
        if request.method != "GET" or path != "/v1/models":
            return httpx.Response(404, json={"error": {"message": "not found"}})
        if host == "oa.test":
            if request.headers.get("authorization") != "Bearer key-oa":
                return httpx.Response(401, json={"error": {"message": "bad key"}})
            ids = ["gpt-5", "gpt-4o", "text-embedding-3-small"]
            return httpx.Response(200, json={"object": "list", "data": [{"id": i, "created": 17} for i in ids]})
        if host == "an.test":
            if request.headers.get("x-api-key") != "key-an" or request.headers.get("anthropic-version") is None:
                return httpx.Response(401, json={"type": "error", "error": {"type": "authentication_error"}})
            assert "authorization" not in request.headers
            assert request.url.params.get("limit") == "1000"
            data = [{"type": "model", "id": "claude-sonnet-4-5", "created_at": "2025-09-29T00:00:00Z"}]
            return httpx.Response(200, json={"data": data, "has_more": False})
        if host == "broken.test":
            return httpx.Response(500, text="upstream exploded")
        if host == "junk.test":
            return httpx.Response(200, content=b"<html>not json</html>")
        if host == "down.test":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(404)


CHANNELS = [
    channel("local", base_url="https://local.test/v1", model_map={"fast": "gpt-5-mini"}, models=["fast", "deep", "x*"]),
    channel("oa", base_url="https://oa.test/v1", api_keys=["key-oa"], models=["gpt*"]),
    channel("an", service_type="claude", base_url="https://an.test", api_keys=["key-an"]),
    channel("broken", service_type="chat", base_url="https://broken.test/v1"),
    channel("junk", service_type="chat", base_url="https://junk.test/v1"),
    channel("down", base_url="https://down.test/v1"),
    {"name": "demo", "service_type": "demo", "model_map": {"demo-model": "demo"}},
]


async def test_lists_configured_and_upstream_models(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = ListUpstreams()
    client = client_for(make_app(CHANNELS, transport=httpx.MockTransport(fake.handler)))
    response = await client.get("/models", headers={"x-request-id": "list-1"})
    assert response.status_code == 200
    doc = response.json()
    assert doc["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in doc["data"]] == [
        ("fast", "local"),
        ("deep", "local"),
        ("demo-model", "demo"),
        ("gpt-5", "oa"),
        ("gpt-4o", "oa"),
        ("claude-sonnet-4-5", "an"),
    ]
    assert all(m["object"] == "model" for m in doc["data"])
    assert doc["data"][3]["created"] == 17
    hosts = sorted(r.url.host for r in fake.calls)
    assert hosts == ["an.test", "broken.test", "down.test", "junk.test", "local.test", "oa.test"]
    assert all(r.headers["x-request-id"] == "list-1" for r in fake.calls)


async def test_cached_for_the_ttl_and_refreshed_after(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = ListUpstreams()
    client = client_for(make_app(CHANNELS[1:2], transport=httpx.MockTransport(fake.handler), models_cache_ttl=0.3))
    results = await asyncio.gather(*(client.get("/models") for _ in range(5)))
    assert {r.status_code for r in results} == {200}
    assert len(fake.calls) == 1  # concurrent callers share one refresh
    await client.get("/models")
    assert len(fake.calls) == 1
    await asyncio.sleep(0.35)
    assert [m["id"] for m in (await client.get("/models")).json()["data"]] == ["gpt-5", "gpt-4o"]
    assert len(fake.calls) == 2


async def test_upstream_lists_can_be_turned_off(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = ListUpstreams()
    client = client_for(make_app(CHANNELS, transport=httpx.MockTransport(fake.handler), models_from_upstream=False))
    ids = [m["id"] for m in (await client.get("/models")).json()["data"]]
    assert ids == ["fast", "deep", "demo-model"]
    assert fake.calls == []


async def test_requires_the_proxy_key(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app(models_from_upstream=False), key=None)
    assert (await client.get("/models")).status_code == 401


def _slow_upstream(delay: float) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(delay)
        body = orjson.dumps({"data": [{"id": "slow-model"}]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize(("delay", "expected"), [(0.0, ["slow-model"]), (0.6, [])])
async def test_real_timeout_skips_a_slow_upstream(delay: float, expected: list[str]) -> None:
    with serve(_slow_upstream(delay), lifespan="off") as base:
        settings = load_settings(
            proxy_access_key=PROXY_KEY,
            channels=[ChannelConfig(name="slow", service_type="chat", base_url=base + "/v1")],
            models_fetch_timeout=0.2,
        )
        app = create_app(settings)  # real network: httpx enforces the timeout
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            started = time.monotonic()
            response = await client.get("/models", headers={"authorization": f"Bearer {PROXY_KEY}"})
            elapsed = time.monotonic() - started
        await app.aclose()
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == expected
    assert elapsed < 0.8
