"""Property test for request conversion: every valid Responses request either reaches the strict
fake upstream in a shape it accepts (and the answer is SDK-valid), or is refused with a clear 400.

``UPSTREAMS`` maps a service type to a strict fake for it (native Responses, Chat Completions,
Claude Messages). The converter-level properties with many more examples, repairable histories and
every channel option are in ``test_properties_convert.py``; this one checks the whole HTTP path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given

from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.middleware.stateful import GATEWAY_ENVELOPES
from tests.conftest import PROXY_KEY, channel
from tests.fakes.chat_upstream import FakeChatUpstream
from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.sdk import parse_sse, validate_events, validate_response
from tests.strategies import mangled, property_settings, responses_requests

#: service_type -> a fresh strict fake upstream (an ASGI app with a ``requests`` record).
UPSTREAMS: dict[str, Callable[[], Any]] = {
    "responses": FakeResponsesUpstream,
    "chat": FakeChatUpstream,
    "claude": FakeClaudeUpstream,
}


async def _round_trip(service_type: str, body: dict[str, Any]) -> tuple[httpx.Response, Any]:
    upstream = UPSTREAMS[service_type]()
    settings_ = load_settings(
        proxy_access_key=PROXY_KEY,
        channels=[
            ChannelConfig.model_validate(channel(service_type=service_type, model_map={"gpt-test": "gpt-upstream"}))
        ],
    )
    # A fake that crashes on a malformed body answers HTTP 500, as a real upstream would (the
    # default re-raises inside the gateway, which no real transport does).
    app = create_app(settings_, transport=httpx.ASGITransport(app=upstream, raise_app_exceptions=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.post("/responses", json=body, headers={"authorization": f"Bearer {PROXY_KEY}"})
    await app.aclose()
    return response, upstream


def _gateway_reasoning(item: Any) -> bool:
    content = item.get("encrypted_content") if isinstance(item, dict) and item.get("type") == "reasoning" else None
    return isinstance(content, str) and content.startswith(GATEWAY_ENVELOPES)


@pytest.mark.parametrize("service_type", sorted(UPSTREAMS))
@property_settings(100)
@given(body=responses_requests())
def test_valid_requests_convert_or_get_a_clear_400(service_type: str, body: dict[str, Any]) -> None:
    response, upstream = asyncio.run(_round_trip(service_type, body))
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"]
        return
    assert response.status_code == 200, response.text
    assert len(upstream.requests) == 1  # accepted on the first try: the strict fake found nothing wrong
    sent = upstream.requests[0].body
    assert sent["model"] == ("gpt-upstream" if body["model"] == "gpt-test" else body["model"])
    if service_type == "responses":
        # Passed through as sent, but for reasoning in the gateway's own envelopes (the converted
        # channels' ccx1.… encrypted_content), which a native upstream cannot read.
        expected = body
        if isinstance(body.get("input"), list):
            expected = {**body, "input": [i for i in body["input"] if not _gateway_reasoning(i)]}
        assert {**sent, "model": body["model"]} == expected
    if body["stream"]:
        validate_events(parse_sse(response.content))
    else:
        validate_response(response.json())


@pytest.mark.parametrize("service_type", sorted(UPSTREAMS))
@property_settings(40)
@given(bodies=mangled(responses_requests(repairable=True).map(lambda b: [b])))
def test_malformed_bodies_never_give_a_500(service_type: str, bodies: list[dict[str, Any]]) -> None:
    body = bodies[0] if bodies else {}
    response, _ = asyncio.run(_round_trip(service_type, body))
    # A request, a clear client error, or an upstream's refusal passed on: never an internal error.
    assert response.status_code != 500, response.text
    if response.status_code == 400:
        assert response.json()["error"]["message"]
