"""The streaming commit rule with keep-alives, and client-disconnect cancellation over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, AppFactory
from tests.fakes.scripted_upstream import (
    Scripted,
    after,
    answer_events,
    chan,
    events,
    ok,
    prelude,
    status,
)
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events
from tests.servers import serve

BODY = {"model": "gpt-5", "input": "hi", "stream": True}


def _text(stream: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in stream if e["type"] == "response.output_text.delta")


async def test_slow_upstream_gets_json_keepalives_before_content(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(lambda m: answer_events(m, "slow but complete"), delay=0.08))
    client = client_for(make_app([chan("a")], transport=upstream, keepalive_interval=0.02))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    stream = parse_sse(response.content)
    validate_events(stream)
    first_content = next(i for i, e in enumerate(stream) if e["type"] == "response.output_item.added")
    keepalives = [e for e in stream[:first_content] if e["type"] == "response.in_progress"]
    assert len(keepalives) >= 2  # real JSON events, not SSE comments
    assert b"\n:" not in response.content
    assert not response.content.startswith(b":")
    assert stream[-1]["type"] == "response.completed"
    assert _text(stream) == "slow but complete "
    # The upstream's own created/in_progress were dropped: one response.created only.
    assert [e["type"] for e in stream].count("response.created") == 1


async def test_keepalives_flow_while_the_upstream_has_not_even_answered(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", after(0.12, ok("late")))
    client = client_for(make_app([chan("a")], transport=upstream, keepalive_interval=0.03))
    response = await client.post("/responses", json=BODY)
    stream = parse_sse(response.content)
    validate_events(stream)
    assert [e["type"] for e in stream[:3]] == ["response.created", "response.in_progress", "response.in_progress"]
    assert _text(stream) == "late "
    assert stream[-1]["type"] == "response.completed"


async def test_keepalives_also_flow_between_content_events(make_app: AppFactory, client_for: ClientFor) -> None:
    def slow_middle(model: str) -> list[dict[str, Any]]:
        return answer_events(model, "a b c d")

    upstream = Scripted()
    upstream.script("a.test", events(slow_middle, delay=0.06))
    client = client_for(make_app([chan("a")], transport=upstream, keepalive_interval=0.025))
    response = await client.post("/responses", json=BODY)
    stream = parse_sse(response.content)
    validate_events(stream)
    first_delta = next(i for i, e in enumerate(stream) if e["type"] == "response.output_text.delta")
    assert any(e["type"] == "response.in_progress" for e in stream[first_delta:])


async def test_failover_still_works_after_a_keepalive_started_the_stream(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(prelude, delay=0.1, fail=httpx.ReadTimeout("idle")))
    upstream.script("b.test", events(lambda m: answer_events(m, "rescued by b"), delay=0.01))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0.02))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    assert "x-ccx-channel" not in response.headers  # the 200 went out before any channel was chosen
    assert upstream.hosts() == ["a.test", "b.test"]
    stream = parse_sse(response.content)
    validate_events(stream)  # one response id and gap-free sequence numbers across both attempts
    assert stream[-1]["type"] == "response.completed"
    assert _text(stream) == "rescued by b "
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))


async def test_all_failed_after_a_keepalive_ends_with_response_failed(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(prelude, delay=0.06, fail=httpx.ReadError("reset")))
    upstream.script("b.test", status(500, "down"))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0.02))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    stream = parse_sse(response.content)
    validate_events(stream)
    final = stream[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["error"]["code"] == "server_error"  # retryable for Codex
    message = final["response"]["error"]["message"]
    assert "a (key #1): upstream connection failed mid-response (ReadError)" in message
    assert "b (key #1): upstream returned HTTP 500: down" in message


async def test_rate_limited_after_a_keepalive_tells_codex_when_to_retry(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(prelude, delay=0.06, fail=httpx.ReadError("reset")))
    upstream.script("b.test", status(429, "slow down", retry_after="12"))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0.02))
    stream = parse_sse((await client.post("/responses", json=BODY)).content)
    validate_events(stream)
    error = stream[-1]["response"]["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].endswith("Please try again in 12s.")


async def test_client_error_after_a_keepalive_is_a_failed_event(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(prelude, delay=0.06, fail=httpx.ReadError("reset")))
    upstream.script("b.test", status(400, "Invalid 'input'"))
    client = client_for(make_app([chan("a"), chan("b"), chan("c")], transport=upstream, keepalive_interval=0.02))
    stream = parse_sse((await client.post("/responses", json=BODY)).content)
    validate_events(stream)
    assert stream[-1]["response"]["error"]["code"] == "invalid_prompt"
    assert "Invalid 'input'" in stream[-1]["response"]["error"]["message"]
    assert upstream.hosts() == ["a.test", "b.test"]


async def test_no_keepalive_when_disabled_or_fast(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", ok("quick"))
    client = client_for(make_app([chan("a")], transport=upstream, keepalive_interval=5))
    response = await client.post("/responses", json=BODY)
    stream = parse_sse(response.content)
    validate_events(stream)
    assert response.headers["x-ccx-channel"] == "a"
    assert [e["type"] for e in stream].count("response.in_progress") == 1  # the upstream's own


class _EndlessUpstream:
    """A real-HTTP upstream that streams text forever and records when its client went away."""

    def __init__(self) -> None:
        self.sent = 0
        self.disconnected_at: float | None = None
        self.finished = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected_at = time.monotonic()

        watcher = asyncio.ensure_future(watch())
        stream = ResponseStream("m")
        index = stream.open_item("message")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        try:
            for n in range(400):  # 20 s at most
                if watcher.done():
                    break
                stream.delta(index, f"word{n} ")
                body = b"".join(encode_event(e) for e in stream.take())
                await send({"type": "http.response.body", "body": body, "more_body": True})
                self.sent += 1
                await asyncio.sleep(0.05)
            else:
                stream.complete(usage_dict(1, 1))
                await send({"type": "http.response.body", "body": b"".join(encode_event(e) for e in stream.take())})
        finally:
            watcher.cancel()


def test_client_disconnect_cancels_the_upstream_at_once() -> None:
    upstream = _EndlessUpstream()
    with serve(upstream) as upstream_url:
        settings = load_settings(
            proxy_access_key=PROXY_KEY,
            channels=[ChannelConfig(name="up", service_type="responses", base_url=upstream_url + "/v1")],
        )
        with serve(create_app(settings)) as gateway:
            with httpx.Client(base_url=gateway, headers={"authorization": f"Bearer {PROXY_KEY}"}) as client:
                with client.stream("POST", "/responses", json=BODY) as response:
                    assert response.status_code == 200
                    for chunk in response.iter_bytes():
                        if b"word3" in chunk:
                            break
                closed_at = time.monotonic()
            deadline = time.monotonic() + 5
            while upstream.disconnected_at is None and time.monotonic() < deadline:
                time.sleep(0.02)
    assert upstream.disconnected_at is not None, "the upstream was never told the client left"
    assert upstream.disconnected_at - closed_at < 1.0
    assert upstream.sent < 40
