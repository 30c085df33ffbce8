"""The gateway on its default upstream transport (httpx on aiohttp), over real HTTP on both sides.

A strict fake upstream and the gateway each run on uvicorn. Checks what the upstream receives, that
upstream error statuses reach the client exactly as they do through the ``transport=`` seam (the
same fake in process, ``httpx.ASGITransport``), and that streams and JSON answers, plain or
gzip-encoded, arrive complete. ``tests/test_real_http.py`` covers timing, the SDK's helpers and
client auth over HTTP; ``tests/test_hostile_upstream.py`` misbehaving upstreams.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.upstream import AiohttpTransport
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.sdk import parse_sse, validate_events, validate_response
from tests.servers import serve

KEY = "proxy-key-fast-client"
UPSTREAM_KEY = "sk-up-fast-client-0123456789"
WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon"]


def _script(body: dict[str, Any]) -> ResponseStream | tuple[int, dict[str, Any]]:
    text = body["input"] if isinstance(body["input"], str) else ""
    if text.startswith("status "):
        status = int(text.split()[1])
        return status, {"error": {"message": f"scripted failure {status}", "type": "scripted", "code": "scripted"}}
    stream = ResponseStream(body["model"], body)
    index = stream.open_item("message")
    for word in WORDS:
        stream.delta(index, word)
    stream.complete(usage_dict(7, 5))
    return stream


def _gzip(app: Any) -> Any:
    """Wrap an ASGI app so every answer is gzip-encoded, flushed per body message (as nginx does)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)

        async def encoding_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]
                message = {**message, "headers": [*headers, (b"content-encoding", b"gzip")]}
            elif message["type"] == "http.response.body":
                more = message.get("more_body", False)
                data = compressor.compress(message.get("body", b""))
                data += compressor.flush(zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)
                message = {**message, "body": data}
            await send(message)

        await app(scope, receive, encoding_send)

    return wrapped


def _set_cookie(app: Any) -> Any:
    """Wrap an ASGI app so every answer sets a cookie (which must never ride on a later request)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def cookie_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"set-cookie", b"upstream=session-1; Path=/")]}
            await send(message)

        await app(scope, receive, cookie_send)

    return wrapped


class Calls:
    """Counts requests through the default transport (the gateway runs in uvicorn's thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fast = 0
        original = AiohttpTransport.handle_async_request

        async def counting(transport: AiohttpTransport, request: httpx.Request) -> httpx.Response:
            self.fast += 1
            return await original(transport, request)

        monkeypatch.setattr(AiohttpTransport, "handle_async_request", counting)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


@pytest.fixture
def upstream() -> Iterator[tuple[str, FakeResponsesUpstream]]:
    fake = FakeResponsesUpstream(keys=(UPSTREAM_KEY,), script=_script)
    with serve(fake) as url:
        yield url, fake


def _gateway(upstream_url: str, client: str, *, loop: str = "auto", fake: Any = None, **channel: Any) -> Any:
    """The gateway on uvicorn: ``client="fast"`` on the default transport, ``"inproc"`` on
    ``httpx.ASGITransport(fake)`` (the test seam, no upstream socket)."""
    settings = load_settings(
        proxy_access_key=KEY,
        channels=[
            ChannelConfig(
                name="up",
                service_type="responses",
                base_url=upstream_url,
                api_keys=[SecretStr(UPSTREAM_KEY)],
                **channel,
            )
        ],
    )
    transport = httpx.ASGITransport(app=fake) if client == "inproc" else None
    return serve(create_app(settings, transport=transport), loop=loop)


def _post(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/responses", json=body, headers={"authorization": f"Bearer {KEY}", **headers}, timeout=30)


@pytest.mark.parametrize("loop", ["auto", "asyncio"], ids=["uvloop", "asyncio"])
def test_upstream_gets_the_channel_key_and_no_client_credentials(calls: Calls, loop: str) -> None:
    fake = FakeResponsesUpstream(keys=(UPSTREAM_KEY,), script=_script)
    with serve(_set_cookie(fake)) as upstream_url, _gateway(upstream_url, "fast", loop=loop) as url:
        responses = [
            _post(
                url,
                {"model": "m", "input": "hi"},
                **{"x-api-key": KEY, "cookie": "session=user-cookie", "x-goog-api-key": KEY, "x-trace-note": "kept"},
            )
            for _ in range(2)
        ]
    for response in responses:
        assert response.status_code == 200, response.text
        validate_response(response.json())
        assert "set-cookie" not in response.headers
    assert calls.fast == 2, "the requests did not go through the fast client"
    assert len(fake.requests) == 2
    for recorded in fake.requests:
        sent = recorded.headers
        assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
        # Neither the client's cookie nor the one the upstream set on the first answer.
        assert not {"x-api-key", "cookie", "x-goog-api-key"} & set(sent)
        assert KEY not in orjson.dumps(sent).decode()
        assert sent["x-trace-note"] == "kept"  # ordinary client headers do go through


_STATUSES = [400, 401, 403, 404, 409, 413, 422, 429, 500, 503]


@pytest.mark.parametrize("status", _STATUSES)
def test_error_statuses_map_as_through_the_transport_seam(
    upstream: tuple[str, FakeResponsesUpstream], calls: Calls, status: int
) -> None:
    upstream_url, fake = upstream
    answers: dict[str, tuple[int, Any, str | None, int]] = {}
    for client in ("fast", "inproc"):
        before = len(fake.requests)
        with _gateway(upstream_url, client, fake=fake) as url:
            response = _post(url, {"model": "m", "input": f"status {status}"})
        answers[client] = (
            response.status_code,
            response.json(),
            response.headers.get("retry-after"),
            len(fake.requests) - before,
        )
    assert calls.fast >= 1
    assert answers["fast"] == answers["inproc"]
    client_status, body, _, upstream_calls = answers["fast"]
    assert client_status >= 400
    assert upstream_calls >= 1
    assert UPSTREAM_KEY not in orjson.dumps(body).decode()


def test_wrong_channel_key_maps_as_through_the_transport_seam(upstream: tuple[str, FakeResponsesUpstream]) -> None:
    upstream_url, fake = upstream
    answers = {}
    for client in ("fast", "inproc"):
        settings = load_settings(
            proxy_access_key=KEY,
            channels=[
                ChannelConfig(
                    name="up", service_type="responses", base_url=upstream_url, api_keys=[SecretStr("sk-wrong")]
                )
            ],
        )
        transport = httpx.ASGITransport(app=fake) if client == "inproc" else None
        with serve(create_app(settings, transport=transport)) as url:
            response = _post(url, {"model": "m", "input": "hi"})
        answers[client] = (response.status_code, response.json())
    assert answers["fast"] == answers["inproc"]
    assert answers["fast"][0] >= 400
    assert {r.headers["authorization"] for r in fake.requests} == {"Bearer sk-wrong"}
    assert "sk-wrong" not in orjson.dumps(answers["fast"][1]).decode()


@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("client", ["fast", "inproc"])
def test_streams_and_json_arrive_complete(client: str, encoded: bool, calls: Calls) -> None:
    fake = FakeResponsesUpstream(keys=(UPSTREAM_KEY,), script=_script)
    served = _gzip(fake) if encoded else fake
    with serve(served) as upstream_url, _gateway(upstream_url, client, fake=served) as url:
        with httpx.stream(
            "POST", f"{url}/responses", json={"model": "m", "input": "go", "stream": True},
            headers={"authorization": f"Bearer {KEY}"}, timeout=30,
        ) as response:  # fmt: skip
            assert response.status_code == 200
            raw = response.read()
        plain = _post(url, {"model": "m", "input": "go"})
        again = _post(url, {"model": "m", "input": "go", "stream": True})
    events = parse_sse(raw)
    validate_events(events)
    assert events[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "".join(WORDS)
    assert validate_response(plain.json()).output_text == "".join(WORDS)
    validate_events(parse_sse(again.content))
    assert len(fake.requests) == 3
    assert calls.fast == (3 if client == "fast" else 0)
