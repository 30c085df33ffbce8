"""``UpstreamError`` carries ``channel`` and ``reason``; the ``channel '…': `` prefix is made in one
place (its ``message``), and the failover layer's per-target outcome is the reason alone."""

from __future__ import annotations

import httpx
import pytest
import respx

from ccx_asgi.errors import UpstreamError, UpstreamStatusError, error_body
from ccx_asgi.upstream_errors import upstream_status_error
from tests.conftest import AppFactory, channel
from tests.fixture_types import ClientFor

pytestmark = pytest.mark.usefixtures("upstream_via_httpx")


def test_the_message_is_made_from_channel_and_reason() -> None:
    error = UpstreamStatusError("upstream answered with invalid JSON", channel="main", retryable=True)
    assert (error.channel, error.reason) == ("main", "upstream answered with invalid JSON")
    assert error.message == str(error) == "channel 'main': upstream answered with invalid JSON"
    assert error_body(error).startswith(b'{"error":{"message":"channel \'main\': upstream answered with invalid JSON"')
    bare = UpstreamError("no channel here")
    assert (bare.channel, bare.message, str(bare)) == (None, "no channel here", "no channel here")


def test_status_errors_name_their_channel() -> None:
    error = upstream_status_error("o'brien", 500, None, "boom")
    assert error.channel == "o'brien"
    assert error.reason == "upstream returned HTTP 500: boom"
    assert error.message == 'channel "o\'brien": upstream returned HTTP 500: boom'


async def test_client_sees_the_prefix_and_the_outcomes_do_not(make_app: AppFactory, client_for: ClientFor) -> None:
    app = make_app(
        [channel("a", base_url="https://a.test/v1", priority=1), channel("b", base_url="https://b.test/v1", priority=2)]
    )
    client = client_for(app)
    with respx.mock() as router:
        router.post("https://a.test/v1/responses").mock(return_value=httpx.Response(500, text="down"))
        router.post("https://b.test/v1/responses").mock(return_value=httpx.Response(503, text="also down"))
        failed = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert failed.status_code == 503
    # Each target's outcome is its reason: the channel is named once, by the list itself.
    assert failed.json()["error"]["message"] == (
        "All upstream channels are currently unavailable. "
        "a (key #1): upstream returned HTTP 500: down; b (key #1): upstream returned HTTP 503: also down"
    )
    with respx.mock() as router:
        router.post("https://a.test/v1/responses").mock(return_value=httpx.Response(500, text="down"))
        router.post("https://b.test/v1/responses").mock(
            return_value=httpx.Response(400, json={"error": {"message": "bad field", "code": "invalid_value"}})
        )
        final = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert final.status_code == 400
    # A final error goes to the client whole, prefix included.
    assert final.json()["error"]["message"] == "channel 'b': upstream returned HTTP 400: bad field"
