"""The service-type registry: every built-in type's wire facts live on its adapter, and a new type
is one adapter module plus :func:`ccx_asgi.channels.register` (``tests/channels/echo_adapter.py``, which no
package module knows about, served end to end through the app)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr, ValidationError

from ccx_asgi import channels as registry
from ccx_asgi.channels.base import ModelsRequest
from ccx_asgi.channels.demo import DEMO_BASE_URL
from ccx_asgi.middleware.stateful import holds_state, speaks_responses
from ccx_asgi.settings import ChannelConfig
from tests.channels.echo_adapter import ECHO_MODELS, EchoAdapter, EchoUpstream
from tests.conftest import UPSTREAM_KEY, AppFactory, channel
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response

ECHO = channel("echo", service_type="echo", base_url="https://echo.test/v1", model_map={"gpt-echo": "echo-large"})


@pytest.fixture
def echo_type() -> Iterator[None]:
    registry.register("echo", EchoAdapter())
    try:
        yield
    finally:
        registry.unregister("echo")


def test_the_built_in_types_are_registered_with_their_wire_facts() -> None:
    assert registry.service_types() == ("responses", "chat", "claude", "demo")
    endpoints = {name: registry.ADAPTERS[name].endpoint for name in registry.service_types()}
    assert endpoints == {
        "responses": "/responses",
        "chat": "/chat/completions",
        "claude": "/messages",
        "demo": "/responses",
    }
    key = SecretStr("k-1")
    claude = ChannelConfig.model_validate(
        channel(service_type="claude", base_url="https://api.anthropic.test", anthropic_version="2024-01-01")
    )
    # Anthropic's version comes from the channel, the key never goes in Authorization.
    assert registry.ADAPTERS["claude"].auth_headers(claude, key) == [
        ("anthropic-version", "2024-01-01"),
        ("x-api-key", "k-1"),
    ]
    assert registry.ADAPTERS["claude"].models_request(claude) == ModelsRequest("/models", "limit=1000")
    for name in ("responses", "chat"):
        config = ChannelConfig.model_validate(channel(service_type=name))
        assert registry.ADAPTERS[name].auth_headers(config, key) == [("authorization", "Bearer k-1")]
        assert registry.ADAPTERS[name].auth_headers(config, None) == []
        assert registry.ADAPTERS[name].models_request(config) == ModelsRequest("/models", "")
    demo = ChannelConfig.model_validate({"name": "d", "service_type": "DEMO"})
    assert demo.base_url == DEMO_BASE_URL == registry.ADAPTERS["demo"].base_url
    assert registry.ADAPTERS["demo"].models_request(demo) is None
    assert list(registry.local_transports()) == ["all://demo.ccx.invalid"]
    assert [n for n in registry.service_types() if registry.ADAPTERS[n].stores_responses] == ["responses"]


def test_a_service_type_is_valid_only_while_registered() -> None:
    with pytest.raises(ValidationError, match="Input should be 'responses', 'chat', 'claude' or 'demo'"):
        ChannelConfig.model_validate(ECHO)
    registry.register("echo", EchoAdapter())
    try:
        assert ChannelConfig.model_validate(ECHO).service_type == "echo"
        with pytest.raises(ValueError, match="already registered"):
            registry.register("echo", EchoAdapter())
        with pytest.raises(ValidationError, match="base_url is required for service_type 'echo'"):
            ChannelConfig.model_validate({**ECHO, "base_url": ""})
        # The stateful layer asks the adapter too: echo neither stores responses nor takes their body.
        echo = ChannelConfig.model_validate(ECHO)
        assert (holds_state(echo), speaks_responses(echo)) == (False, False)
    finally:
        registry.unregister("echo")
    demo = ChannelConfig.model_validate({"name": "d", "service_type": "demo"})
    native = ChannelConfig.model_validate(channel())
    assert [(holds_state(c), speaks_responses(c)) for c in (demo, native)] == [(False, True), (True, True)]
    with pytest.raises(ValidationError, match="Input should be"):
        ChannelConfig.model_validate(ECHO)


@pytest.mark.usefixtures("echo_type")
async def test_a_registered_type_serves_requests_end_to_end(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = EchoUpstream(UPSTREAM_KEY)
    client = client_for(make_app([ECHO], transport=upstream))

    answer = await client.post("/responses", json={"model": "gpt-echo", "input": "hello there"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-ccx-channel"] == "echo"
    data = answer.json()
    validate_response(data)
    assert data["output"][0]["content"][0]["text"] == "echo-large: hello there"

    streamed = await client.post("/responses", json={"model": "gpt-echo", "input": "hi", "stream": True})
    assert streamed.status_code == 200
    events = parse_sse(streamed.text)
    validate_events(events)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["echo-large:", " hi"]
    assert events[-1]["type"] == "response.completed"

    posts = [r for r in upstream.requests if r.method == "POST"]
    assert [str(r.url) for r in posts] == ["https://echo.test/v1/echo"] * 2
    assert all(r.headers["x-echo-key"] == UPSTREAM_KEY for r in posts)

    models = await client.get("/models")
    listed = [m["id"] for m in models.json()["data"]]
    assert listed == ["gpt-echo", *ECHO_MODELS]
    (fetch,) = [r for r in upstream.requests if r.method == "GET"]
    assert str(fetch.url) == "https://echo.test/v1/echo-models"

    admin = await client.get("/admin/channels")
    (shown,) = admin.json()["channels"]
    assert shown["service_type"] == "echo"
    assert shown["endpoint_url"] == "https://echo.test/v1/echo"


@pytest.mark.usefixtures("echo_type")
async def test_a_registered_type_fails_over_like_the_built_in_ones(make_app: AppFactory, client_for: ClientFor) -> None:
    # The echo upstream refuses a wrong key with a 401: the next channel (the demo) answers.
    client = client_for(
        make_app(
            [{**ECHO, "api_keys": ["wrong"], "priority": 1}, {"name": "demo", "service_type": "demo", "priority": 2}],
            transport=EchoUpstream(UPSTREAM_KEY),
        )
    )
    answer = await client.post("/responses", json={"model": "gpt-echo", "input": "hi"})
    assert answer.status_code == 200
    assert answer.headers["x-ccx-channel"] == "demo"
    assert "ccx_asgi demo channel" in answer.json()["output"][0]["content"][0]["text"]
