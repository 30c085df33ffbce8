"""The chat channel through the whole app: strict fake Chat upstream in process, openai SDK as the client."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import openai
import pytest

from ccx_asgi.context import SCOPE_KEY, Attempt, RequestContext
from ccx_asgi.convert.chat import to_request
from ccx_asgi.convert.roles import normalize_roles
from ccx_asgi.middleware.role_normalizer import RoleNormalizerMiddleware
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, UPSTREAM_KEY, AppFactory, channel
from tests.fakes.chat_upstream import FakeChatUpstream, Reply, chunk, error, text_reply, validate_chat_request
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fixture_types import ClientFor
from tests.paths import CODEX_FIXTURES
from tests.sdk import parse_sse, validate_events, validate_response

CODEX = CODEX_FIXTURES


def chat_channel(name: str = "chat", **fields: Any) -> dict[str, Any]:
    return channel(name, **{"service_type": "openai", "base_url": f"https://{name}.test/v1", **fields})


def routed(**fakes: Any) -> httpx.AsyncBaseTransport:
    """One transport that sends each channel's host to its own fake app."""
    transports = {host: httpx.ASGITransport(app=fake) for host, fake in fakes.items()}

    class Router(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await transports[request.url.host.split(".")[0]].handle_async_request(request)

    return Router()


def codex_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CODEX / name).read_text())
    return body


async def test_codex_turn_through_a_chat_channel(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream()
    app = make_app([chat_channel(model_map={"fake": "deepseek-chat"})], transport=routed(chat=fake))
    body = codex_body("request-custom-slug-turn1.json")
    response = await client_for(app).post("/responses", json=body, headers={"session-id": "s1"})
    assert response.status_code == 200, response.text
    assert response.headers["x-ccx-channel"] == "chat"
    events = parse_sse(response.content)
    validate_events(events)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["model"] == "fake-custom"
    assert [i["type"] for i in final["output"]] == ["reasoning", "function_call"]
    assert final["output"][1]["name"] == "exec_command"
    assert final["usage"]["input_tokens"] == 150 and final["usage"]["input_tokens_details"]["cached_tokens"] == 100
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "deepseek-chat"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert PROXY_KEY not in json.dumps(sent.headers)
    assert sent.headers["session-id"] == "s1"


async def test_openai_sdk_stream_and_create(make_app: AppFactory) -> None:
    fake = FakeChatUpstream(script=lambda body: text_reply("Hi there, friend.", reasoning="Greet them."))
    app = make_app([chat_channel()], transport=routed(chat=fake))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    # openai types http_client as an httpx2 client; it accepts an httpx one too (_httpx2.is_legacy_httpx_async_client)
    client = openai.AsyncOpenAI(api_key=PROXY_KEY, base_url="http://gw.test", http_client=http, max_retries=0)  # type: ignore[arg-type]
    try:
        async with client.responses.stream(model="gpt-x", input="hello", instructions="Be nice.") as stream:
            texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert "".join(texts) == "Hi there, friend."
        assert final.output_text == "Hi there, friend."
        assert final.status == "completed" and final.model == "gpt-x"
        assert final.usage is not None and final.usage.input_tokens == 120
        created = await client.responses.create(model="gpt-x", input="hello")
        assert created.output_text == "Hi there, friend."
        assert [item.type for item in created.output] == ["reasoning", "message"]
    finally:
        await http.aclose()
        await app.aclose()
    first, second = fake.requests
    assert first.body["messages"][0] == {"role": "system", "content": "Be nice."}
    assert first.body["stream_options"] == {"include_usage": True}
    assert "stream" not in second.body and "stream_options" not in second.body


async def test_non_stream_json_answer(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream()
    app = make_app([chat_channel()], transport=routed(chat=fake))
    body = {**codex_body("request-gpt-5.5-turn2-tool-output.json"), "stream": False}
    response = await client_for(app).post("/responses", json=body)
    assert response.status_code == 200, response.text
    parsed = validate_response(response.json())
    assert parsed.output_text.startswith("The command finished.")
    assert parsed.id.startswith("resp_")


async def test_developer_role_rejected_upstream_reaches_the_client_as_400(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    fake = FakeChatUpstream(strict_roles=True)
    app = make_app([chat_channel()], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json=codex_body("request-gpt-5.5-turn1.json"))
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "unknown variant `developer`" in message
    assert len(fake.requests) == 1  # a validation error is not retried elsewhere


async def test_normalize_roles_makes_the_strict_upstream_accept(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(strict_roles=True)
    app = make_app([chat_channel(normalize_roles=True)], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json=codex_body("request-gpt-5.5-turn1.json"))
    assert response.status_code == 200, response.text
    validate_events(parse_sse(response.content))
    roles = [m["role"] for m in fake.requests[0].body["messages"]]
    assert roles[:2] == ["system", "system"] and "developer" not in roles


async def test_failover_only_normalises_the_channel_that_asks(make_app: AppFactory, client_for: ClientFor) -> None:
    strict = FakeChatUpstream(strict_roles=True, script=lambda body: error(500, "boom", code=None))
    loose = FakeChatUpstream()
    app = make_app(
        [chat_channel("strict", normalize_roles=True), chat_channel("loose")],
        transport=routed(strict=strict, loose=loose),
    )
    response = await client_for(app).post("/responses", json=codex_body("request-gpt-5.5-turn1.json"))
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "loose"
    assert strict.requests[0].body["messages"][0]["role"] == "system"
    assert loose.requests[0].body["messages"][0]["role"] == "developer"


def test_role_rules_tool_call_id_becomes_a_tool_message() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": "run it"},
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "input_text", "text": "done"}]},
            {"role": "critic", "content": "be shorter"},
        ],
    }
    chat = to_request(normalize_roles(body), model="m")
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "done"}
    assert validate_chat_request(chat, strict_roles=True) is None


async def test_role_normalizer_in_front_of_a_passthrough_channel(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = FakeResponsesUpstream(keys=(UPSTREAM_KEY,))
    app = make_app([channel(normalize_roles=True)], transport=httpx.ASGITransport(app=upstream))
    response = await client_for(app).post("/responses", json=codex_body("request-gpt-5.5-turn1.json"))
    assert response.status_code == 200, response.text
    roles = [i.get("role") for i in upstream.requests[0].body["input"]]
    assert roles[:2] == ["system", "system"] and "developer" not in roles


async def test_role_normalizer_composes_as_plain_asgi() -> None:
    seen: list[Mapping[str, Any]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope[SCOPE_KEY].attempt.body if SCOPE_KEY in scope else scope)

    config = ChannelConfig.model_validate(channel())
    original: dict[str, Any] = {"model": "m", "input": [{"role": "developer", "content": "x"}]}
    ctx = RequestContext.from_body(original, request_id="r", headers=[])
    ctx.attempt = Attempt(config, "m", None, 0, original)
    app = RoleNormalizerMiddleware(inner, always=True)
    await app({"type": "http", SCOPE_KEY: ctx}, None, None)  # type: ignore[arg-type]
    await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]  # other scopes pass through untouched
    assert seen[0]["input"][0]["role"] == "system"
    assert seen[1] == {"type": "lifespan"}
    assert original["input"][0]["role"] == "developer"  # the client's body is never mutated


def cut_reply(body: dict[str, Any]) -> Reply:
    return Reply([chunk({"role": "assistant", "content": ""})], done=False)


async def test_stream_cut_before_content_fails_over(make_app: AppFactory, client_for: ClientFor) -> None:
    cut, good = FakeChatUpstream(script=cut_reply), FakeChatUpstream(script=lambda b: text_reply("ok"))
    app = make_app([chat_channel("cut"), chat_channel("good")], transport=routed(cut=cut, good=good))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "good"
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "ok"


async def test_stream_cut_after_content_is_failed_not_completed(make_app: AppFactory, client_for: ClientFor) -> None:
    def script(body: dict[str, Any]) -> Reply:
        return Reply([chunk({"content": "half an ans"})], done=False)

    fake = FakeChatUpstream(script=script)
    app = make_app([chat_channel(), chat_channel("other")], transport=routed(chat=fake, other=FakeChatUpstream()))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "hi", "stream": True})
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["type"] == "response.failed"
    assert any(e["type"] == "response.output_text.delta" for e in events)


async def test_length_limit_and_max_tokens_field(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(
        max_tokens_field="max_completion_tokens", script=lambda b: text_reply("cut sh", finish="length")
    )
    app = make_app([chat_channel(max_tokens_field="max_completion_tokens")], transport=routed(chat=fake))
    body = {"model": "m", "input": "hi", "stream": True, "max_output_tokens": 5}
    response = await client_for(app).post("/responses", json=body)
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert fake.requests[0].body["max_completion_tokens"] == 5
    # The same request on a channel left at the default spelling is rejected by this upstream, visibly.
    app2 = make_app([chat_channel()], transport=routed(chat=fake))
    rejected = await client_for(app2).post("/responses", json=body)
    assert rejected.status_code == 400
    assert "max_completion_tokens" in rejected.json()["error"]["message"]


async def test_bad_upstream_key_is_not_shown_and_fails_over(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(keys=("the-real-key",))
    app = make_app([chat_channel(api_keys=["wrong-key", "the-real-key"])], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "ping", "stream": True})
    assert response.status_code == 200
    assert [r.headers["authorization"] for r in fake.requests] == ["Bearer wrong-key", "Bearer the-real-key"]


@pytest.mark.parametrize("garbage", [[1, 2], {"choices": []}, {"error": {"message": "nope"}}])
async def test_unreadable_json_answer_is_an_upstream_error(
    make_app: AppFactory, client_for: ClientFor, garbage: Any
) -> None:
    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(garbage).encode()})

    app = make_app([chat_channel()], transport=routed(chat=upstream))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "ping"})
    assert response.status_code >= 500
    assert "error" in response.json()


async def test_real_http_stream_is_not_buffered() -> None:
    import time

    from ccx_asgi import create_app, load_settings
    from tests.servers import serve

    fake = FakeChatUpstream(script=lambda body: text_reply("one two three four five six"), delay=0.15)
    with serve(fake) as upstream_url:
        settings = load_settings(
            proxy_access_key=PROXY_KEY,
            channels=[ChannelConfig.model_validate(chat_channel(base_url=upstream_url))],
        )
        app = create_app(settings)
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {PROXY_KEY}"}) as client:
                start = time.monotonic()
                first_delta = None
                raw = b""
                body = {"model": "m", "input": "count", "stream": True}
                async with client.stream("POST", "/responses", json=body) as response:
                    assert response.status_code == 200
                    async for part in response.aiter_bytes():
                        raw += part
                        if first_delta is None and b"output_text.delta" in raw:
                            first_delta = time.monotonic() - start
                total = time.monotonic() - start
        await app.aclose()
    events = parse_sse(raw)
    validate_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "one two three four five six"
    assert first_delta is not None and first_delta < total - 0.5, (first_delta, total)
