"""Failover: every trigger moves on, every non-trigger answers at once, keys rotate, 503 lists attempts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ccx_asgi.convert.events import ResponseStream
from tests.conftest import AppFactory
from tests.fakes.scripted_upstream import (
    Behaviour,
    Scripted,
    chan,
    events,
    failed,
    ok,
    partial,
    prelude,
    raises,
    status,
)
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response

BODY = {"model": "gpt-5", "input": "hi", "stream": True}


def _error_event(model: str) -> list[dict[str, Any]]:
    return [{"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached", "sequence_number": 0}]


def _empty_completion(model: str) -> list[dict[str, Any]]:
    stream = ResponseStream(model)
    stream.complete()
    return stream.take()


def _message_opened_only(model: str) -> list[dict[str, Any]]:
    stream = ResponseStream(model)
    stream.open_item("message")  # output_item.added + content_part.added, but no text yet
    return stream.take()


TRIGGERS: dict[str, Behaviour] = {
    "connect error": raises(httpx.ConnectError("connection refused")),
    "connect timeout": raises(httpx.ConnectTimeout("timed out")),
    "read timeout": raises(httpx.ReadTimeout("timed out")),
    "401": status(401, "Incorrect API key provided"),
    "402 payment required": status(402, "Payment required"),
    "403": status(403, "forbidden"),
    "408": status(408, "request timeout"),
    "429": status(429, "Rate limit reached"),
    "500": status(500, "internal error"),
    "502": status(502, "bad gateway"),
    "503": status(503, "unavailable"),
    "529 overloaded": status(529, "Overloaded"),
    "400 overloaded body": status(400, "The engine is currently overloaded, please try again later"),
    "400 rate-limit body": status(400, "rate limit exceeded for this organization"),
    "stream drops before content": events(prelude, fail=httpx.ReadError("connection reset")),
    "stream stalls before content": events(prelude, fail=httpx.ReadTimeout("idle")),
    "stream ends before content": events(prelude),
    "stream ends after an empty item": events(_message_opened_only),
    "stream completes with no output": events(_empty_completion),
    "response.failed server_error": events(failed("server_error")),
    "response.failed rate limit": events(failed("rate_limit_exceeded")),
    "error event": events(_error_event),
}


@pytest.mark.parametrize("behaviour", TRIGGERS.values(), ids=TRIGGERS.keys())
async def test_failover_trigger_moves_to_the_next_channel(
    behaviour: Behaviour, make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", behaviour)
    upstream.script("b.test", ok("from b"))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200, response.text
    assert upstream.hosts() == ["a.test", "b.test"]
    assert response.headers["x-ccx-channel"] == "b"
    assert response.headers["x-ccx-attempts"] == "2"
    stream = parse_sse(response.content)
    validate_events(stream)
    assert stream[-1]["type"] == "response.completed"
    assert "from b" in stream[-1]["response"]["output"][0]["content"][0]["text"]
    # Nothing from the failed attempt leaked into the answer.
    assert len({e["response"]["id"] for e in stream if "response" in e}) == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_failover_works_for_json_requests_too(stream: bool, make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500))
    upstream.script("b.test", ok("hello"))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0))
    response = await client.post("/responses", json={**BODY, "stream": stream})
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "b"
    if not stream:
        assert validate_response(response.json()).output_text == "hello"


NON_TRIGGERS: dict[str, tuple[Behaviour, int, str]] = {
    "400 validation": (status(400, "Invalid value for 'input'.", code_field="invalid_value"), 400, "Invalid value"),
    "404 from the upstream": (status(404, "The model 'x' does not exist", code_field="model_not_found"), 404, "x"),
    "content policy": (
        status(400, "Your request was flagged by our content policy.", code_field="content_policy_violation"),
        400,
        "content policy",
    ),
    "422": (status(422, "Unprocessable input"), 400, "Unprocessable"),
}


@pytest.mark.parametrize(("behaviour", "code", "text"), NON_TRIGGERS.values(), ids=NON_TRIGGERS.keys())
async def test_client_errors_are_returned_without_trying_elsewhere(
    behaviour: Behaviour, code: int, text: str, make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", behaviour)
    upstream.script("b.test", ok())
    client = client_for(make_app([chan("a", keys=["key-1", "key-2"]), chan("b")], transport=upstream))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == code
    assert text in response.json()["error"]["message"]
    assert upstream.hosts() == ["a.test"]  # neither the second key nor channel b


async def test_final_in_stream_failure_is_passed_through_unchanged(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(failed("invalid_prompt", "flagged by the safety system")))
    upstream.script("b.test", ok())
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    stream = parse_sse(response.content)
    validate_events(stream)
    assert stream[-1]["type"] == "response.failed"
    assert stream[-1]["response"]["error"] == {"code": "invalid_prompt", "message": "flagged by the safety system"}
    assert upstream.hosts() == ["a.test"]


@pytest.mark.parametrize(
    "behaviour",
    [events(partial, fail=httpx.ReadError("reset")), events(partial), events(partial, fail=httpx.ReadTimeout("x"))],
    ids=["dropped", "ended", "stalled"],
)
async def test_stream_with_content_is_never_replayed_elsewhere(
    behaviour: Behaviour, make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", behaviour)
    upstream.script("b.test", ok("must not be used"))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    assert upstream.hosts() == ["a.test"]
    stream = parse_sse(response.content)
    validate_events(stream)
    assert any(e["type"] == "response.output_text.delta" and e["delta"] == "partial " for e in stream)
    assert stream[-1]["type"] == "response.failed"  # a cut answer never looks complete
    assert not any(e["type"] == "response.completed" for e in stream)


async def test_keys_rotate_within_a_channel_before_the_next_channel(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500), status(429), ok("third key"))
    upstream.script("b.test", ok())
    client = client_for(make_app([chan("a", keys=["key-1", "key-2", "key-3"]), chan("b")], transport=upstream))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    assert [(c.host, c.key) for c in upstream.calls] == [
        ("a.test", "key-1"),
        ("a.test", "key-2"),
        ("a.test", "key-3"),
    ]
    assert response.headers["x-ccx-channel"] == "a"
    assert response.headers["x-ccx-attempts"] == "3"


async def test_rejected_key_is_parked_and_skipped_next_time(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()  # 'revoked' is not an accepted key: the fake answers 401
    upstream.script("a.test", ok())
    client = client_for(make_app([chan("a", keys=["revoked", "key-1"])], transport=upstream))
    first = await client.post("/responses", json=BODY)
    second = await client.post("/responses", json=BODY)
    assert first.status_code == second.status_code == 200
    assert [c.key for c in upstream.calls] == ["revoked", "key-1", "key-1"]
    assert second.headers["x-ccx-attempts"] == "1"


async def test_all_failed_is_a_503_listing_each_attempt_without_secrets(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    upstream = Scripted()
    # The upstream echoes the key back, as some do; it must not reach the client.
    upstream.script("a.test", status(500, "internal error for key key-1"))
    upstream.script("b.test", raises(httpx.ConnectError("refused")))
    upstream.script("c.test", status(429, "slow down", retry_after="7"))
    client = client_for(
        make_app([chan("a", keys=["key-1"]), chan("b", keys=["key-2"]), chan("c", keys=["key-3"])], transport=upstream)
    )
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert error["code"] == "all_channels_failed"
    message = error["message"]
    assert message.startswith("All upstream channels are currently unavailable.")
    assert "a (key #1): upstream returned HTTP 500: internal error for key [redacted]" in message
    assert "b (key #1): could not reach the upstream (ConnectError)" in message
    assert "c (key #1): upstream returned HTTP 429: slow down" in message
    for secret in ("key-1", "key-2", "key-3", "upstream-key"):
        assert secret not in response.text


async def test_mapped_model_is_sent_upstream(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(503))
    upstream.script("b.test", ok())
    client = client_for(
        make_app(
            [chan("a", model_map={"gpt": "a-model"}), chan("b", model_map={"gpt-5": "b-model"})],
            transport=upstream,
            keepalive_interval=0,
        )
    )
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    assert [c.body["model"] for c in upstream.calls] == ["a-model", "b-model"]
