"""The claude channel end to end in process: gateway → strict fake Messages API → Responses stream.

Covers headers and keys, the thinking signature round trip across two requests, failover on
overload and rate limits (HTTP and in-stream), Claude's 400s reaching the client, cut streams,
incomplete answers and the non-streaming path; plus one run over real HTTP with the openai SDK.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from openai import AsyncOpenAI

from ccx_asgi.convert.claude import decode_reasoning, encode_reasoning
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, UPSTREAM_KEY, AppFactory, channel
from tests.fakes.claude_upstream import FakeClaudeUpstream, Reply, sign
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response
from tests.servers import serve

EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}


def claude(name: str = "claude", host: str = "claude.test", **fields: Any) -> dict[str, Any]:
    return channel(name, service_type="claude", base_url=f"https://{host}/v1", **fields)


class Hosts:
    """An ASGI app that sends each request to the fake registered for its Host header."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"])[b"host"].decode()
        await self.apps[host](scope, receive, send)


def transport(fake: Any) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=fake)


async def stream(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    response = await client.post("/responses", json={"stream": True, **body})
    events = parse_sse(response.content) if response.status_code == 200 else []
    if events:
        validate_events(events)
    return response, events


async def test_text_stream_headers_keys_and_mapped_model(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeClaudeUpstream()
    app = make_app([claude(model_map={"gpt": "claude-sonnet-4-5"})], transport=transport(fake))
    response, events = await stream(client_for(app), {"model": "gpt-5.5", "input": "hi"})
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "claude"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["model"] == "gpt-5.5"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello from the fake Claude."
    [sent] = fake.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert PROXY_KEY not in json.dumps(sent.headers)
    assert sent.body["model"] == "claude-sonnet-4-5"
    assert sent.body["stream"] is True


async def test_thinking_signature_survives_a_stateless_round_trip(make_app: AppFactory, client_for: ClientFor) -> None:
    def script(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"][0]
        if last["type"] == "tool_result":
            return Reply([{"type": "text", "text": "The file is written."}])
        return Reply(
            [
                {"type": "thinking", "thinking": "I need to run a command to write the marker."},
                {"type": "tool_use", "name": "exec_command", "input": {"cmd": "echo hi > m.txt"}},
            ],
            stop_reason="tool_use",
        )

    fake = FakeClaudeUpstream(script=script)
    client = client_for(make_app([claude()], transport=transport(fake)))
    first: dict[str, Any] = {
        "model": "claude-x",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "write it"}]}],
        "tools": [EXEC],
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    response, events = await stream(client, first)
    assert response.status_code == 200, response.text
    output = events[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["reasoning", "function_call"]
    assert fake.requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 10000}

    # Codex replays the items it got (store: false), plus the tool output.
    call = output[1]
    replay: dict[str, Any] = {**first, "input": [*first["input"], *output, {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}]}  # fmt: skip
    response, events = await stream(client, replay)
    assert response.status_code == 200, response.text
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "The file is written."
    sent = fake.requests[1].body
    thinking = sent["messages"][1]["content"][0]
    assert thinking == {
        "type": "thinking",
        "thinking": "I need to run a command to write the marker.",
        "signature": sign("I need to run a command to write the marker."),
    }
    assert sent["thinking"]["type"] == "enabled"
    assert fake.rejections == []

    # A tampered signature is Claude's 400, passed to the client as a 400 without trying elsewhere.
    block = decode_reasoning(output[0]["encrypted_content"])
    assert block is not None
    forged = {**output[0], "encrypted_content": encode_reasoning({**block, "thinking": "something else"})}
    tampered = {**replay, "input": [*first["input"], forged, *replay["input"][2:]]}
    response = await client.post("/responses", json={"stream": True, **tampered})
    assert response.status_code == 400
    assert "Invalid `signature`" in response.json()["error"]["message"]


@pytest.mark.parametrize(("status", "kind"), [(529, "overloaded_error"), (429, "rate_limit_error"), (500, "api_error")])
async def test_overload_and_rate_limits_fail_over(
    make_app: AppFactory, client_for: ClientFor, status: int, kind: str
) -> None:
    busy = FakeClaudeUpstream(
        script=lambda body: (status, {"type": "error", "error": {"type": kind, "message": "busy"}})
    )
    spare = FakeClaudeUpstream()
    app = make_app(
        [claude("a", "a.test"), claude("b", "b.test")], transport=transport(Hosts({"a.test": busy, "b.test": spare}))
    )
    response, events = await stream(client_for(app), {"model": "m", "input": "hi"})
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "b"
    assert len(busy.requests) == 1 and len(spare.requests) == 1
    assert events[-1]["type"] == "response.completed"


async def test_in_stream_overload_before_content_fails_over(make_app: AppFactory, client_for: ClientFor) -> None:
    overloaded = Reply([{"type": "text", "text": "x"}], error={"type": "overloaded_error", "message": "Overloaded"})
    busy = FakeClaudeUpstream(script=lambda body: overloaded)
    spare = FakeClaudeUpstream()
    app = make_app(
        [claude("a", "a.test"), claude("b", "b.test")], transport=transport(Hosts({"a.test": busy, "b.test": spare}))
    )
    response, events = await stream(client_for(app), {"model": "m", "input": "hi"})
    assert response.headers["x-ccx-channel"] == "b"
    assert events[-1]["type"] == "response.completed"


async def test_in_stream_error_after_content_is_response_failed(make_app: AppFactory, client_for: ClientFor) -> None:
    late = Reply(
        [{"type": "text", "text": "partial"}, {"type": "text", "text": "more"}],
        error={"type": "overloaded_error", "message": "Overloaded"},
        error_after=1,
    )
    fake = FakeClaudeUpstream(script=lambda body: late)
    response, events = await stream(
        client_for(make_app([claude()], transport=transport(fake))), {"model": "m", "input": "hi"}
    )
    assert response.status_code == 200
    assert events[-1]["type"] == "response.failed"
    assert "Overloaded" in events[-1]["response"]["error"]["message"]


async def test_cut_stream_after_content_is_failed(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeClaudeUpstream(script=lambda body: Reply([{"type": "text", "text": "a long answer here"}]), cut_after=5)
    response, events = await stream(
        client_for(make_app([claude()], transport=transport(fake))), {"model": "m", "input": "hi"}
    )
    assert response.status_code == 200
    assert [e["type"] for e in events].count("response.output_text.delta") >= 1
    assert events[-1]["type"] == "response.failed"


@pytest.mark.parametrize(("stop", "reason"), [("max_tokens", "max_output_tokens"), ("refusal", "content_filter")])
async def test_incomplete_answers(make_app: AppFactory, client_for: ClientFor, stop: str, reason: str) -> None:
    fake = FakeClaudeUpstream(script=lambda body: Reply([{"type": "text", "text": "cut"}], stop_reason=stop))
    client = client_for(make_app([claude()], transport=transport(fake)))
    response, events = await stream(client, {"model": "m", "input": "hi", "max_output_tokens": 50})
    assert response.status_code == 200
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": reason}
    assert fake.requests[0].body["max_tokens"] == 50


async def test_non_streaming_answer(make_app: AppFactory, client_for: ClientFor) -> None:
    reply = Reply(
        [{"type": "thinking", "thinking": "hm"}, {"type": "tool_use", "name": "exec_command", "input": {"cmd": "ls"}}],
        stop_reason="tool_use",
        cache_read=30,
    )
    fake = FakeClaudeUpstream(script=lambda body: reply)
    client = client_for(make_app([claude()], transport=transport(fake)))
    body = {"model": "m", "input": "list", "tools": [EXEC], "reasoning": {"effort": "low"}}
    response = await client.post("/responses", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    validate_response(data)
    assert "stream" not in fake.requests[0].body
    assert [i["type"] for i in data["output"]] == ["reasoning", "function_call"]
    assert orjson.loads(data["output"][1]["arguments"]) == {"cmd": "ls"}
    assert data["usage"]["input_tokens"] == 80 and data["usage"]["input_tokens_details"]["cached_tokens"] == 30


async def test_wrong_upstream_key_is_not_a_success(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeClaudeUpstream(keys=("another-key",))
    response = await client_for(make_app([claude()], transport=transport(fake))).post(
        "/responses", json={"model": "m", "input": "hi", "stream": True}
    )
    assert response.status_code == 503  # every channel failed; never an empty 200
    assert "HTTP 401" in response.json()["error"]["message"]
    assert UPSTREAM_KEY not in response.text


async def test_over_real_http_with_the_openai_sdk(make_app: AppFactory) -> None:
    fake = FakeClaudeUpstream(
        script=lambda body: Reply(
            [{"type": "thinking", "thinking": "Thinking it over."}, {"type": "text", "text": "Real HTTP works."}]
        )
    )
    with serve(fake) as upstream_url:
        app = make_app([channel("c", service_type="claude", base_url=upstream_url)])
        with serve(app) as gateway:  # its lifespan closes the upstream client before the loop ends
            client = AsyncOpenAI(base_url=gateway, api_key=PROXY_KEY, max_retries=0)
            seen = []
            async with client.responses.stream(model="m", input="hi", reasoning={"effort": "low"}) as events:
                async for event in events:
                    seen.append(event.type)
                final = await events.get_final_response()
            await client.close()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert final.output_text == "Real HTTP works."
    assert final.output[0].type == "reasoning"
    assert fake.requests[0].headers["x-api-key"] == UPSTREAM_KEY


async def test_redacted_thinking_round_trips_through_the_gateway(make_app: AppFactory, client_for: ClientFor) -> None:
    def script(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["content"][0]["type"] == "tool_result":
            return Reply([{"type": "text", "text": "ok"}])
        return Reply(
            [{"type": "redacted_thinking"}, {"type": "tool_use", "name": "exec_command", "input": {"cmd": "ls"}}],
            stop_reason="tool_use",
        )

    fake = FakeClaudeUpstream(script=script)
    client = client_for(make_app([claude()], transport=transport(fake)))
    first = {"model": "m", "input": "go", "tools": [EXEC], "reasoning": {"effort": "low"}}
    _, events = await stream(client, first)
    output = events[-1]["response"]["output"]
    assert output[0]["type"] == "reasoning" and output[0]["summary"] == []
    result = {"type": "function_call_output", "call_id": output[1]["call_id"], "output": "a.txt"}
    response, events = await stream(
        client, {**first, "input": [{"type": "message", "role": "user", "content": "go"}, *output, result]}
    )
    assert response.status_code == 200, response.text
    assert events[-1]["type"] == "response.completed"
    replayed = fake.requests[1].body["messages"][1]["content"][0]
    assert replayed["type"] == "redacted_thinking"
    assert fake.requests[1].body["thinking"]["budget_tokens"] == 4096


async def test_role_normalized_attempt_body_is_what_gets_converted(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeClaudeUpstream()
    client = client_for(make_app([claude(normalize_roles=True)], transport=transport(fake)))
    body = {
        "model": "m",
        "input": [
            {"type": "message", "role": "developer", "content": "Be terse."},
            {"type": "message", "role": "critic", "content": "odd role"},
            {"type": "message", "role": "user", "content": "hi"},
        ],
    }
    response, _ = await stream(client, body)
    assert response.status_code == 200
    sent = fake.requests[0].body
    assert [b["text"] for b in sent["system"]] == ["Be terse."]
    assert [b["text"] for b in sent["messages"][0]["content"]] == ["odd role", "hi"]
