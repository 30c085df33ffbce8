"""SSRF and header injection: the upstream host comes only from configuration, client headers
cannot steer it or carry credentials upstream, and upstream response headers never reach clients."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from ccx_asgi import CCXApp
from ccx_asgi.types import Message
from ccx_asgi.upstream import forwardable_headers
from tests.conftest import PROXY_KEY, UPSTREAM_KEY, AppFactory, channel
from tests.fakes.hostile_upstream import text_events
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events

CHANNEL_HEADER = "channel-header-secret-42424242"
#: Every header our answers may carry. Anything else would have come from somewhere it should not.
OWN_HEADERS = {
    "content-type",
    "content-length",
    "x-request-id",
    "x-ccx-channel",
    "x-ccx-attempts",
    "cache-control",
    "x-accel-buffering",
    "retry-after",
    "www-authenticate",
}
HOSTILE_RESPONSE_HEADERS = [
    ("set-cookie", "session=stolen; Domain=.example.com"),
    ("location", "http://169.254.169.254/latest/meta-data/"),
    ("access-control-allow-origin", "*"),
    ("x-upstream-echo", f"Bearer {UPSTREAM_KEY}"),
    ("server", "upstream/1.0"),
    ("strict-transport-security", "max-age=0"),
    ("content-security-policy", "none"),
    ("x-ratelimit-remaining-requests", "0"),
]


class Recorder:
    """A MockTransport handler that records each request and answers from ``answer``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.stream = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = orjson.loads(request.content)
        headers = HOSTILE_RESPONSE_HEADERS
        if self.status >= 300:
            return httpx.Response(
                self.status, headers=[*headers, ("retry-after", "3")], json={"error": {"message": "no"}}
            )
        events = text_events(model=body["model"])
        if body.get("stream"):
            sse = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events if isinstance(e, dict))
            return httpx.Response(200, headers=[*headers, ("content-type", "text/event-stream")], content=sse)
        final = events[-1]
        assert isinstance(final, dict)
        return httpx.Response(200, headers=headers, json=final["response"])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def gateway(make_app: AppFactory, recorder: Recorder) -> CCXApp:
    return make_app(
        [channel("main", headers={"x-portkey-key": CHANNEL_HEADER})], transport=httpx.MockTransport(recorder)
    )


STEERING_HEADERS = {
    "host": "evil.example",
    "x-forwarded-host": "evil.example",
    "x-forwarded-for": "10.0.0.1",
    "x-forwarded-proto": "http",
    "forwarded": "host=evil.example",
    "x-real-ip": "10.0.0.1",
    "x-original-url": "http://169.254.169.254/",
    "x-api-key": "client-supplied-upstream-key",
    "api-key": "client-supplied-upstream-key",
    "x-goog-api-key": "client-supplied-upstream-key",
    "proxy-authorization": "Basic Y2xpZW50OmtleQ==",
    "cookie": "a=b",
    "anthropic-version": "1999-01-01",
    "openai-organization": "org-client",
    "x-ccx-channel": "other",
}


@pytest.mark.parametrize("stream", [True, False])
async def test_client_headers_cannot_steer_the_upstream_or_carry_credentials(
    gateway: CCXApp, recorder: Recorder, client_for: ClientFor, stream: bool
) -> None:
    response = await client_for(gateway).post(
        "/responses",
        json={"model": "m", "input": "hi", "stream": stream, "base_url": "http://evil.example"},
        headers={**STEERING_HEADERS, "x-portkey-key": "client-override", "openai-beta": "responses=experimental"},
    )
    assert len(recorder.requests) == 1
    sent = recorder.requests[0]
    assert str(sent.url) == "https://upstream.test/v1/responses"
    assert sent.headers["host"] == "upstream.test"
    assert sent.headers.get_list("authorization") == [f"Bearer {UPSTREAM_KEY}"]
    # The channel's configured header wins over a client header of the same name, and is sent once.
    assert sent.headers.get_list("x-portkey-key") == [CHANNEL_HEADER]
    for name in STEERING_HEADERS:
        if name != "host":
            assert name not in sent.headers, name
    assert sent.headers["openai-beta"] == "responses=experimental"  # ordinary headers still pass
    assert PROXY_KEY not in str(sent.headers.raw)
    assert response.status_code == 200  # (the strict fake would refuse an unknown body field; ours forwards it)


async def test_model_names_cannot_change_the_url(gateway: CCXApp, recorder: Recorder, client_for: ClientFor) -> None:
    for model in ("../../admin", "http://evil.example/x", "m?x=1#frag", "m\r\nHost: evil"):
        await client_for(gateway).post("/responses", json={"model": model, "input": "hi"})
    assert {str(r.url) for r in recorder.requests} == {"https://upstream.test/v1/responses"}


def test_header_splitting_and_malformed_names_are_dropped() -> None:
    raw = [
        (b"x-ok", b"value"),
        (b"x-split", b"a\r\nAuthorization: Bearer stolen"),
        (b"x-lf", b"a\nb"),
        (b"x-nul", b"a\x00b"),
        (b"bad name", b"v"),
        (b"x-colon:", b"v"),
        (b"", b"v"),
        (b"X-Mixed-Case", b"kept"),
    ]
    assert forwardable_headers(raw) == [("x-ok", "value"), ("x-mixed-case", "kept")]


async def test_raw_asgi_header_injection_does_not_reach_the_upstream(gateway: CCXApp, recorder: Recorder) -> None:
    sent: list[Message] = []
    body = orjson.dumps({"model": "m", "input": "hi"})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/responses",
        "headers": [
            (b"authorization", f"Bearer {PROXY_KEY}".encode()),
            (b"x-inject", b"v\r\nx-api-key: stolen"),
            (b"x-request-id", b"id\r\nset-cookie: a=b"),
        ],
    }
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await gateway(scope, receive, send)
    assert sent[0]["status"] == 200
    upstream_headers = recorder.requests[0].headers
    assert "x-inject" not in upstream_headers
    assert "x-api-key" not in upstream_headers
    # A request id with control characters is replaced by a fresh one, in both directions.
    assert upstream_headers["x-request-id"].startswith("req_")
    assert dict(sent[0]["headers"])[b"x-request-id"].startswith(b"req_")


@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_response_headers_are_not_passed_on(
    gateway: CCXApp, recorder: Recorder, client_for: ClientFor, stream: bool
) -> None:
    response = await client_for(gateway).post("/responses", json={"model": "m", "input": "hi", "stream": stream})
    assert response.status_code == 200
    assert set(response.headers) <= OWN_HEADERS, set(response.headers) - OWN_HEADERS
    if stream:
        validate_events(parse_sse(response.content))


@pytest.mark.parametrize("status", [429, 500, 400, 307])
async def test_upstream_error_headers_are_not_passed_on_and_redirects_not_followed(
    gateway: CCXApp, recorder: Recorder, client_for: ClientFor, status: int
) -> None:
    recorder.status = status
    response = await client_for(gateway).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code >= 400
    assert set(response.headers) <= OWN_HEADERS, set(response.headers) - OWN_HEADERS
    # Only the configured URL was ever requested: a Location header is never followed.
    assert {str(r.url) for r in recorder.requests} == {"https://upstream.test/v1/responses"}
    if status == 429:
        assert response.headers["retry-after"] == "3"  # the one upstream header we act on, re-issued by us


async def test_upstream_cookies_never_reach_other_requests(make_app: AppFactory, client_for: ClientFor) -> None:
    """The shared upstream client must not keep a Set-Cookie from one user's request for the next."""
    seen: list[str | None] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": "ok", "annotations": []}]}  # fmt: skip
        body = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": [message],
                "status": "completed", "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}  # fmt: skip
        return httpx.Response(200, json=body, headers={"set-cookie": "session=user-a-secret; Path=/"})

    client = client_for(make_app(transport=httpx.MockTransport(upstream)))
    for _ in range(2):
        assert (await client.post("/responses", json={"model": "m", "input": "hi"})).status_code == 200
    assert seen == [None, None]
