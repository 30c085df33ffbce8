"""The request context's typed fields: the gateway's layers talk through them, never ``ctx.extra``."""

from __future__ import annotations

from typing import Any

from ccx_asgi.context import RequestContext, get_context
from ccx_asgi.middleware import ModelMapperMiddleware
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import AppFactory
from tests.fakes.scripted_upstream import Scripted, asgi_client, chan, ok, stack
from tests.fixture_types import ClientFor


async def test_the_model_mapper_hands_the_context_to_its_hook() -> None:
    seen: list[tuple[Scope, RequestContext]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        assert get_context(scope) is seen[0][1]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = ModelMapperMiddleware(
        inner, channels=[ChannelConfig.model_validate(chan("a"))], on_context=lambda s, c: seen.append((s, c))
    )
    async with asgi_client(app) as client:
        assert (await client.post("/responses", json={"model": "gpt-5", "input": "hi"})).status_code == 204
        # A body the mapper rejects never reaches a layer, and the hook is not called.
        assert (await client.post("/responses", json={"model": ""})).status_code == 400
    assert len(seen) == 1
    assert seen[0][1].model == "gpt-5"


async def test_a_served_request_leaves_extra_to_the_host(make_app: AppFactory, client_for: ClientFor) -> None:
    contexts: list[RequestContext] = []

    def spy(app: Any) -> Any:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            await app(scope, receive, send)
            contexts.append(get_context(scope))

        return layer

    upstream = Scripted()
    upstream.script("a.test", ok("hello"))
    app = stack([chan("a")], upstream)
    app.app = spy(app.app)
    async with asgi_client(app) as client:
        response = await client.post("/responses", json={"model": "gpt-5", "input": "hi", "stream": True})
    assert response.status_code == 200
    (ctx,) = contexts
    assert ctx.extra == {}
    assert ctx.client_stream is not None and ctx.client_stream.content
    assert ctx.response_status == "completed"
    assert ctx.upstream_url == "https://a.test/v1/responses"
    assert ctx.client_headers is not None
