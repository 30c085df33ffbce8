"""The native ``responses`` channel in process, with respx standing in for the upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from tests.conftest import PROXY_KEY, UPSTREAM_KEY, AppFactory, channel
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response

URL = "https://upstream.test/v1/responses"
pytestmark = pytest.mark.usefixtures("upstream_via_httpx")  # respx mocks httpx


def _sse(stream: ResponseStream, *, cut_after: int | None = None) -> bytes:
    events = stream.take()
    return b"".join(encode_event(e) for e in events[:cut_after])


def _text_stream(model: str = "m", text: str = "hello") -> ResponseStream:
    stream = ResponseStream(model)
    index = stream.open_item("message")
    stream.delta(index, text)
    stream.complete(usage_dict(10, 2))
    return stream


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_header_hygiene(make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter) -> None:
    route = upstream.post(URL).mock(return_value=httpx.Response(200, json=_text_stream().response()))
    app = make_app([channel(headers={"x-tenant": "acme"})])
    client = client_for(app)
    response = await client.post(
        "/responses",
        json={"model": "m", "input": "hi"},
        headers={
            "x-api-key": PROXY_KEY,
            "cookie": "session=1",
            "x-forwarded-for": "10.0.0.1",
            "x-forwarded-host": "evil.test",
            "forwarded": "for=1.2.3.4",
            "x-real-ip": "1.2.3.4",
            "proxy-authorization": "Basic eA==",
            "connection": "keep-alive, x-custom",
            "x-custom": "hop-by-hop",
            "session-id": "sess-1",
            "originator": "codex_exec",
            "x-codex-turn-metadata": '{"turn": 1}',
            "user-agent": "codex/0.169",
            "x-request-id": "req-abc",
        },
    )
    assert response.status_code == 200, response.text
    sent = route.calls.last.request
    assert sent.url.host == "upstream.test"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for dropped in ("x-api-key", "cookie", "x-forwarded-for", "x-forwarded-host", "forwarded", "x-real-ip",
                    "proxy-authorization", "x-custom"):  # fmt: skip
        assert dropped not in sent.headers, dropped
    assert PROXY_KEY not in str(sent.headers)
    assert "x-custom" not in sent.headers.get("connection", "")
    assert sent.headers["session-id"] == "sess-1"
    assert sent.headers["originator"] == "codex_exec"
    assert sent.headers["x-tenant"] == "acme"
    assert sent.headers["x-request-id"] == "req-abc"
    assert response.headers["x-request-id"] == "req-abc"
    assert response.headers["x-ccx-channel"] == "main"
    assert UPSTREAM_KEY not in response.text + str(response.headers)


async def test_body_forwarded_with_mapped_model(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    route = upstream.post(URL).mock(return_value=httpx.Response(200, json=_text_stream().response()))
    client = client_for(make_app([channel(model_map={"gpt": "deepseek-chat", "gpt-5.5-mini": "small"})]))
    body = {"model": "gpt-5.5", "input": [{"type": "message", "role": "user", "content": "hi"}], "store": False,
            "include": ["reasoning.encrypted_content"], "unknown_future_field": {"x": 1}}  # fmt: skip
    response = await client.post("/responses", json=body)
    assert response.status_code == 200
    validate_response(response.json())
    forwarded = json.loads(route.calls.last.request.content)
    assert forwarded == {**body, "model": "deepseek-chat"}


async def test_streaming_passthrough(make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter) -> None:
    upstream.post(URL).mock(
        return_value=httpx.Response(200, content=_sse(_text_stream()), headers={"content-type": "text/event-stream"})
    )
    client = client_for(make_app())
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["type"] == "response.completed"


async def test_cut_stream_after_content_ends_failed(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    stream = _text_stream()
    upstream.post(URL).mock(
        return_value=httpx.Response(
            200, content=_sse(stream, cut_after=5), headers={"content-type": "text/event-stream"}
        )
    )
    client = client_for(make_app())
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["type"] == "response.failed"
    assert "response.completed" not in [e["type"] for e in events]
    assert events[-1]["response"]["id"] == stream.id
    assert "ended before response.completed" in events[-1]["response"]["error"]["message"]


async def test_stream_cut_before_content_is_an_error_not_a_success(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    upstream.post(URL).mock(
        return_value=httpx.Response(
            200, content=_sse(_text_stream(), cut_after=2), headers={"content-type": "text/event-stream"}
        )
    )
    client = client_for(make_app())
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert response.status_code == 503
    assert "ended before response.completed" in response.json()["error"]["message"]


async def test_missing_sequence_numbers_are_filled(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    frames = b""
    for event in _text_stream().take():
        del event["sequence_number"]
        frames += b"data: " + orjson.dumps(event) + b"\n\n"
    upstream.post(URL).mock(return_value=httpx.Response(200, content=frames + b"data: [DONE]\n\n"))
    client = client_for(make_app())
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    validate_events(parse_sse(response.content))


@pytest.mark.parametrize(
    ("status", "body", "client_status", "fragment"),
    [
        (
            400,
            {"error": {"message": "unknown variant `developer`, expected `system`"}},
            400,
            "unknown variant `developer`",
        ),
        (404, {"error": {"message": "model not found"}}, 404, "model not found"),
        (422, {"detail": "bad field"}, 400, "bad field"),
        (500, {"error": {"message": "boom"}}, 503, "HTTP 500: boom"),
        (401, {"error": {"message": "Incorrect API key"}}, 503, "HTTP 401"),
        (429, {"error": {"message": "slow down"}}, 503, "HTTP 429"),
        (400, {"error": {"message": "Your credit balance is too low"}}, 429, "credit balance"),  # insufficient_quota
    ],
)
async def test_upstream_errors(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter, status: int, body: dict[str, Any], client_status: int,
    fragment: str,
) -> None:  # fmt: skip
    upstream.post(URL).mock(return_value=httpx.Response(status, json=body))
    client = client_for(make_app())
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert response.status_code == client_status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"]
    assert "main" in error["message"]


async def test_upstream_error_echoing_the_key_is_redacted(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    upstream.post(URL).mock(
        return_value=httpx.Response(
            400, json={"error": {"message": f"bad header Authorization: Bearer {UPSTREAM_KEY}"}}
        )
    )
    response = await client_for(make_app()).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 400
    assert UPSTREAM_KEY not in response.text


async def test_upstream_unreachable(make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter) -> None:
    upstream.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    response = await client_for(make_app()).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 503
    assert "could not reach the upstream" in response.json()["error"]["message"]


async def test_retry_after_is_passed_on(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    upstream.post(URL).mock(
        return_value=httpx.Response(429, json={"error": {"message": "x"}}, headers={"retry-after": "7"})
    )
    response = await client_for(make_app()).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"


async def test_unknown_event_before_content_does_not_fix_the_channel(
    make_app: AppFactory, client_for: ClientFor, upstream: respx.MockRouter
) -> None:
    """An event type the gateway does not know proves nothing: a failure after it still fails over."""
    broken = ResponseStream("m")
    broken.start()
    frames = b"".join(encode_event(e) for e in broken.take())
    frames += encode_event({"type": "response.future_thing", "sequence_number": 2, "note": "new"})
    upstream.post(URL).mock(
        return_value=httpx.Response(200, content=frames, headers={"content-type": "text/event-stream"})
    )
    upstream.post("https://backup.test/v1/responses").mock(
        return_value=httpx.Response(200, content=_sse(_text_stream()), headers={"content-type": "text/event-stream"})
    )
    client = client_for(make_app([channel(), channel("backup", base_url="https://backup.test/v1")]))
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "backup"
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["type"] == "response.completed"
    assert "response.future_thing" not in [e["type"] for e in events]
