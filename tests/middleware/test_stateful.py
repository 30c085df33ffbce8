"""Stored responses through the whole app, driven by the real openai SDK against strict fakes.

Every channel kind (chat, claude, native responses), streaming and not: create, chain with
``previous_response_id`` (the fake must receive the whole history), retrieve, list input items,
delete; ownership between client keys; ``store: false``; expiry; ``item_reference``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseInputMessageItem, ResponseInputText, ResponseItem
from openai.types.responses.response_item_list import ResponseItemList

from ccx_asgi.convert.reasoning_codec import CHAT_REASONING_PREFIX, decode_chat_reasoning
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, AppFactory
from tests.fakes.stateful_responses_upstream import StatefulResponsesUpstream
from tests.sdk import parse_sse, validate_events, validate_response
from tests.stateful_helpers import (
    QUESTION,
    channel_for,
    create,
    native_brain,
    routed,
    sdk,
    upstream_for,
)

KINDS = ["chat", "claude", "responses"]
OTHER_KEY = "second-client-key"


def build(make_app: AppFactory, kind: str, **overrides: Any) -> tuple[Any, Any]:
    fake = upstream_for(kind)
    app = make_app([channel_for(kind)], transport=routed(**{kind: fake}), **overrides)
    return app, fake


def last_history(kind: str, fake: Any) -> list[str]:
    """The texts of the last request the fake received, oldest first (the history it was given)."""
    body = fake.requests[-1].body
    if kind == "chat":
        return [m["content"] for m in body["messages"] if isinstance(m.get("content"), str)]
    if kind == "claude":
        return [
            b["text"] if isinstance(b, dict) else b
            for m in body["messages"]
            for b in (m["content"] if isinstance(m["content"], list) else [m["content"]])
            if not isinstance(b, dict) or b.get("type") == "text"
        ]
    return [body.get("previous_response_id") or "", str(body.get("input"))]


def _weather_tool_turn(answer: str) -> Any:
    """A Claude script with thinking on: call ``get_weather``, then, given its result, ``answer``."""
    from tests.fakes.claude_upstream import Reply

    def script(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
            return Reply([{"type": "thinking", "thinking": "Report it."}, {"type": "text", "text": answer}])
        return Reply(
            [
                {"type": "thinking", "thinking": "Call the tool."},
                {"type": "tool_use", "name": "get_weather", "input": {}},
            ],
            stop_reason="tool_use",
        )

    return script


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", KINDS)
async def test_create_chain_retrieve_list_delete(make_app: AppFactory, kind: str, stream: bool) -> None:
    app, fake = build(make_app, kind)
    client = sdk(app)
    try:
        first = await create(client, stream=stream, model="gpt-x", input="My secret word is PAPAYA.")
        assert first.output_text == "Noted."
        second = await create(client, stream=stream, model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert second.output_text == "Your secret word is PAPAYA."
        history = last_history(kind, fake)
        if kind == "responses":
            # The native upstream holds the history; it got its own id and resolved the chain itself.
            assert history[0] == first.id
        else:
            assert history == ["My secret word is PAPAYA.", "Noted.", QUESTION]

        got = await client.responses.retrieve(second.id)
        assert got.id == second.id and got.output_text == "Your secret word is PAPAYA."
        raw = await client.responses.with_raw_response.retrieve(second.id)
        validate_response(raw.http_response.json())  # strictly, not the SDK's lenient construction
        listing = await client.responses.input_items.with_raw_response.list(second.id)
        ResponseItemList.model_validate(listing.http_response.json())
        got = await client.responses.retrieve(second.id, include=["reasoning.encrypted_content"])
        assert got.id == second.id
        items = await client.responses.input_items.list(second.id)
        texts = [part.text for item in items.data if item.type == "message" for part in item.content]  # type: ignore[union-attr]
        assert QUESTION in texts[0]
        if kind != "responses":
            # The effective input, as OpenAI lists it: the chain before the response, then its own.
            ascending = await client.responses.input_items.list(second.id, order="asc")
            listed = [p.text for i in ascending.data if i.type == "message" for p in i.content]  # type: ignore[union-attr]
            assert listed == ["My secret word is PAPAYA.", "Noted.", QUESTION]
            ResponseItemList.model_validate(listing.http_response.json())
            third = await create(client, stream=stream, model="gpt-x", input=QUESTION, previous_response_id=second.id)
            assert third.output_text == "Your secret word is PAPAYA."  # a chain of chains
            assert last_history(kind, fake) == ["My secret word is PAPAYA.", "Noted.", QUESTION,
                                                "Your secret word is PAPAYA.", QUESTION]  # fmt: skip

        await client.responses.delete(second.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(second.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.delete(second.id)
        with pytest.raises(openai.BadRequestError) as caught:
            await create(client, stream=stream, model="gpt-x", input=QUESTION, previous_response_id=second.id)
        assert second.id in caught.value.message
        if kind != "responses":
            assert caught.value.code == "previous_response_not_found"
            assert caught.value.param == "previous_response_id"
        else:  # no route left: forwarded, and the upstream that deleted it says so itself
            assert fake.requests[-1].body["previous_response_id"] == second.id
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_another_client_key_sees_nothing(make_app: AppFactory, kind: str) -> None:
    app, fake = build(make_app, kind, extra_proxy_access_keys=OTHER_KEY)
    owner, other = sdk(app), sdk(app, OTHER_KEY)
    try:
        first = await owner.responses.create(model="gpt-x", input="My secret word is PAPAYA.")
        sent = len(fake.requests)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.input_items.list(first.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(first.id)
        with pytest.raises(openai.BadRequestError) as caught:
            await other.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert caught.value.code == "previous_response_not_found"
        assert len(fake.requests) == sent  # nothing was sent upstream on the other key's behalf
        if kind != "responses":
            item_id = first.output[-1].id
            assert item_id is not None
            with pytest.raises(openai.NotFoundError) as missing:
                await other.responses.create(model="gpt-x", input=[{"type": "item_reference", "id": item_id}])
            assert item_id in missing.value.message
        # The owner still has everything.
        assert (await owner.responses.retrieve(first.id)).id == first.id
        follow = await owner.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert follow.output_text == "Your secret word is PAPAYA."
    finally:
        await owner.close()
        await other.close()
        await app.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", KINDS)
async def test_store_false_keeps_nothing(make_app: AppFactory, kind: str, stream: bool) -> None:
    app, _ = build(make_app, kind)
    client = sdk(app)
    try:
        first = await create(client, stream=stream, model="gpt-x", input="My secret word is KIWI.", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert caught.value.code == "previous_response_not_found"
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_stored_responses_expire(make_app: AppFactory, kind: str) -> None:
    app, _ = build(make_app, kind, response_store_ttl=0.3)
    client = sdk(app)
    try:
        first = await client.responses.create(model="gpt-x", input="My secret word is FIG.")
        assert (await client.responses.retrieve(first.id)).id == first.id
        await asyncio.sleep(0.45)
        if kind == "responses":
            # A native route is kept ROUTE_TTL (30 days, as OpenAI keeps the response), not the TTL.
            assert (await client.responses.retrieve(first.id)).id == first.id
            return
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert caught.value.code == "previous_response_not_found"
    finally:
        await client.close()
        await app.aclose()


async def test_storing_off_for_the_deployment(make_app: AppFactory) -> None:
    app, _ = build(make_app, "chat", response_store=False)
    client = sdk(app)
    try:
        first = await client.responses.create(model="gpt-x", input="My secret word is FIG.")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.retrieve(first.id)
        assert "CCX_RESPONSE_STORE" in missing.value.message
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert caught.value.code == "previous_response_not_found"
        assert "CCX_RESPONSE_STORE" in caught.value.message
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", ["chat", "claude"])
async def test_tool_turn_chained_by_previous_response_id(make_app: AppFactory, kind: str, stream: bool) -> None:
    """openai-agents' automatic chaining: the second turn carries only the tool's output."""
    app, fake = build(make_app, kind)
    client = sdk(app)
    tools: Any = [{"type": "function", "name": "get_weather", "description": "Weather of a city.",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]  # fmt: skip
    try:
        first = await create(client, stream=stream, model="gpt-x", input="Weather in Paris?", tools=tools)
        (call,) = [i for i in first.output if i.type == "function_call"]
        second = await create(
            client,
            stream=stream,
            model="gpt-x",
            tools=tools,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
        )
        assert second.output_text == "The weather is sunny, 21C."
        body = fake.requests[-1].body
        if kind == "chat":
            # DeepSeek's thinking mode (require_reasoning_content) accepted the replayed tool turn.
            assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool"]
            assert body["messages"][1]["reasoning_content"] == "I need the weather tool."
        else:
            assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    finally:
        await client.close()
        await app.aclose()


async def test_item_references_resolve_on_a_chat_channel(make_app: AppFactory) -> None:
    """The Vercel AI SDK's store:true replay: earlier output by reference, then the tool output."""
    app, fake = build(make_app, "chat")
    client = sdk(app)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    try:
        first = await client.responses.create(model="gpt-x", input="Weather in Paris?", tools=tools)
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and call.type == "function_call"
        assert call.id is not None
        second = await client.responses.create(
            model="gpt-x",
            tools=tools,
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "item_reference", "id": reasoning.id},
                {"type": "item_reference", "id": call.id},
                {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
            ],
        )
        assert second.output_text == "The weather is rainy."
        assistant = fake.requests[-1].body["messages"][1]
        assert assistant["reasoning_content"] == "I need the weather tool."
        assert assistant["tool_calls"][0]["id"] == call.call_id
        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.create(model="gpt-x", input=[{"type": "item_reference", "id": "rs_nope"}])
        assert "rs_nope" in missing.value.message and missing.value.param == "input"
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_chat_reasoning_round_trips_without_the_store(make_app: AppFactory, stream: bool) -> None:
    """store:false clients replay reasoning only with encrypted_content: the gateway makes one."""
    app, fake = build(make_app, "chat")
    client = sdk(app)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    try:
        first = await create(client, stream=stream, model="gpt-x", input="Weather?", tools=tools, store=False)
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and call.type == "function_call"
        assert call.id is not None
        assert reasoning.encrypted_content and reasoning.encrypted_content.startswith(CHAT_REASONING_PREFIX)
        assert decode_chat_reasoning(reasoning.encrypted_content) == "I need the weather tool."
        replayed = {
            "type": "reasoning",
            "id": reasoning.id,
            "summary": [],
            "encrypted_content": reasoning.encrypted_content,
        }
        second = await create(
            client,
            stream=stream,
            model="gpt-x",
            tools=tools,
            store=False,
            input=[
                {"role": "user", "content": "Weather?"},
                replayed,
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "foggy"},
            ],
        )
        assert second.output_text == "The weather is foggy."
        assert fake.requests[-1].body["messages"][1]["reasoning_content"] == "I need the weather tool."
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("field", ["background", "conversation", "prompt"])
@pytest.mark.parametrize("kind", ["chat", "claude"])
async def test_unsupported_stateful_fields_are_named(make_app: AppFactory, kind: str, field: str) -> None:
    app, fake = build(make_app, kind)
    value: Any = {"background": True, "conversation": "conv_1", "prompt": {"id": "pmpt_1"}}[field]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
        response = await http.post(
            "/responses",
            json={"model": "gpt-x", "input": "hi", field: value},
            headers={"authorization": f"Bearer {PROXY_KEY}"},
        )
    await app.aclose()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and f"'{field}'" in error["message"]
    assert fake.requests == []


async def test_unsupported_fields_go_to_a_native_candidate(make_app: AppFactory) -> None:
    """A converted channel first, a native one second: the native one serves ``conversation``."""
    chat, native = upstream_for("chat"), StatefulResponsesUpstream(brain=native_brain)
    app = make_app(
        [channel_for("chat", priority=0), channel_for("responses", "native", priority=1)],
        transport=routed(chat=chat, native=native),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
        response = await http.post(
            "/responses",
            json={"model": "gpt-x", "input": "hi", "conversation": "conv_1"},
            headers={"authorization": f"Bearer {PROXY_KEY}"},
        )
    await app.aclose()
    assert response.status_code == 200, response.text
    assert response.headers["x-ccx-channel"] == "native"
    assert chat.requests == [] and native.requests[-1].body["conversation"] == "conv_1"


def _first_text(item: ResponseItem) -> str:
    """The text of an input message item's first part."""
    assert isinstance(item, ResponseInputMessageItem)
    part = item.content[0]
    assert isinstance(part, ResponseInputText)
    return part.text


async def test_input_items_pagination(make_app: AppFactory) -> None:
    app, _ = build(make_app, "chat")
    client = sdk(app)
    try:
        turns: Any = [{"role": "user", "content": f"line {n}"} for n in range(5)]
        made = await client.responses.create(model="gpt-x", input=turns)
        page = await client.responses.input_items.list(made.id, limit=2, order="asc")
        assert [_first_text(i) for i in page.data] == ["line 0", "line 1"]
        assert page.has_more
        rest = await client.responses.input_items.list(made.id, limit=10, order="asc", after=page.data[-1].id)
        assert [_first_text(i) for i in rest.data] == ["line 2", "line 3", "line 4"]
        assert not rest.has_more
        every = [i.id async for i in client.responses.input_items.list(made.id, limit=2)]
        assert len(every) == 5 and len(set(every)) == 5  # auto-paging, newest first, stable ids
        with pytest.raises(openai.BadRequestError):
            await client.responses.input_items.list(made.id, limit=500)
    finally:
        await client.close()
        await app.aclose()


class FailOnce:
    """Wraps a fake: the first POST /responses answers 503 (the channel fails over), then it serves."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.failed:
            self.failed = True
            body = b'{"error": {"message": "overloaded", "type": "server_error"}}'
            await send(
                {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_native_follow_ups_go_to_the_account_that_holds_the_response(make_app: AppFactory, stream: bool) -> None:
    """Channel a fails once, so b serves; every follow-up then goes to b, never back to healthy a."""
    a = StatefulResponsesUpstream(brain=native_brain, keys=("key-a",))
    b = StatefulResponsesUpstream(brain=native_brain, keys=("key-b1", "key-b2"))
    app = make_app(
        [
            channel_for("responses", "a", api_keys=["key-a"], priority=0),
            channel_for("responses", "b", api_keys=["key-b1", "key-b2"], priority=1),
        ],
        transport=routed(a=FailOnce(a), b=b),
        affinity_ttl=0,  # no session affinity: only the stored route can keep the follow-up on b
    )
    client = sdk(app)
    try:
        first = await create(client, stream=stream, model="gpt-x", input="My secret word is MANGO.")
        assert [r.headers["authorization"] for r in b.requests] == ["Bearer key-b1"]
        second = await create(client, stream=stream, model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert second.output_text == "Your secret word is MANGO."
        assert len(a.requests) == 0 and b.requests[-1].body["previous_response_id"] == first.id
        assert (await client.responses.retrieve(first.id)).output_text == "Noted."
        assert b.requests[-1].path == f"/v1/responses/{first.id}"
        assert b.requests[-1].headers["authorization"] == "Bearer key-b1"
        assert PROXY_KEY not in str(b.requests[-1].headers)
        listed = await client.responses.input_items.list(second.id)
        assert listed.data and b.requests[-1].path == f"/v1/responses/{second.id}/input_items"
        await client.responses.delete(first.id)
        assert ("key-b1", first.id) not in b.stored
        forwarded = len(b.requests)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        assert len(b.requests) == forwarded  # forgotten by the gateway too: not even forwarded
        # A fresh conversation is free to use channel a again.
        await create(client, stream=stream, model="gpt-x", input="hello")
        assert len(a.requests) == 1
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_claude_thinking_survives_a_chained_tool_turn(make_app: AppFactory, stream: bool) -> None:
    """The stored chain replays Claude's signed thinking, so a thinking tool turn is accepted."""
    from tests.fakes.claude_upstream import FakeClaudeUpstream

    fake = FakeClaudeUpstream(script=_weather_tool_turn("It is warm."))
    app = make_app([channel_for("claude")], transport=routed(claude=fake))
    client = sdk(app)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    try:
        first = await create(
            client, stream=stream, model="gpt-x", input="Weather?", tools=tools, reasoning={"effort": "low"}
        )
        call = next(i for i in first.output if i.type == "function_call")
        second = await create(
            client,
            stream=stream,
            model="gpt-x",
            tools=tools,
            reasoning={"effort": "low"},
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "warm"}],
        )
        assert second.output_text == "It is warm."
        assert fake.rejections == []
        assistant = fake.requests[-1].body["messages"][1]
        assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    finally:
        await client.close()
        await app.aclose()


class SlowFailure:
    """Wraps a fake: POST /responses waits ``delay`` seconds, then answers 503 (after a keep-alive)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": {"message": "overloaded"}}'})


async def test_native_id_after_a_keepalive_failover_maps_to_the_upstream_id(make_app: AppFactory) -> None:
    """A keep-alive soft-committed the stream with a gateway-made id before channel b answered: the
    client knows the response by that id, b by its own; retrieve and follow-ups translate."""
    b = StatefulResponsesUpstream(brain=native_brain)
    app = make_app(
        [channel_for("responses", "a", priority=0), channel_for("responses", "b", priority=1)],
        transport=routed(a=SlowFailure(0.3), b=b),
        keepalive_interval=0.05,
        affinity_ttl=0,
    )
    client = sdk(app)
    try:
        first = await create(client, stream=True, model="gpt-x", input="My secret word is PLUM.")
        ((_, upstream_id),) = b.stored
        assert first.id != upstream_id  # the client saw the gateway's id
        got = await client.responses.retrieve(first.id)
        assert got.id == first.id and got.output_text == "Noted."
        assert b.requests[-1].path == f"/v1/responses/{upstream_id}"
        follow = await create(client, stream=False, model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert follow.output_text == "Your secret word is PLUM."
        assert b.requests[-1].body["previous_response_id"] == upstream_id
    finally:
        await client.close()
        await app.aclose()


class FailFrom:
    """Wraps a fake: from the ``n``-th POST on, answers 503 (the channel fails over)."""

    def __init__(self, app: Any, n: int) -> None:
        self.app, self.n, self.seen = app, n, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.seen += 1
            if self.seen >= self.n:
                await send(
                    {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": b'{"error": {"message": "down"}}'})
                return
        await self.app(scope, receive, send)


async def test_a_chat_chain_continues_on_a_native_fallback(make_app: AppFactory) -> None:
    """Stored on chat, continued on a native channel after chat fails: the native upstream gets the
    expanded history, no previous_response_id it never saw, and no reasoning it could not read."""
    chat, native = upstream_for("chat"), StatefulResponsesUpstream(brain=native_brain)
    app = make_app(
        [channel_for("chat", priority=0), channel_for("responses", "native", priority=1)],
        transport=routed(chat=FailFrom(chat, 2), native=native),
    )
    client = sdk(app)
    try:
        first = await client.responses.create(model="gpt-x", input="My secret word is DATE.")
        assert [i.type for i in first.output] == ["reasoning", "message"]
        follow = await client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=first.id)
        assert follow.output_text == "Your secret word is DATE."
        sent = native.requests[-1].body
        assert "previous_response_id" not in sent
        assert [i.get("type", "message") for i in sent["input"]] == ["message", "message", "message"]
        # The follow-up was served natively: its record routes to the native account.
        assert (await client.responses.retrieve(follow.id)).output_text == "Your secret word is DATE."
        assert native.requests[-1].path == f"/v1/responses/{follow.id}"
    finally:
        await client.close()
        await app.aclose()


async def test_native_items_are_referenced_through_to_the_upstream(make_app: AppFactory) -> None:
    app, fake = build(make_app, "responses")
    client = sdk(app)
    try:
        first = await client.responses.create(model="gpt-x", input="My secret word is OKRA.")
        message_id = first.output[0].id
        assert message_id is not None
        follow = await client.responses.create(
            model="gpt-x",
            input=[
                {"role": "user", "content": "My secret word is OKRA."},
                {"type": "item_reference", "id": message_id},
                {"role": "user", "content": QUESTION},
            ],
        )
        assert follow.output_text == "Your secret word is OKRA."
        assert fake.requests[-1].body["input"][1] == {"type": "item_reference", "id": first.output[0].id}
    finally:
        await client.close()
        await app.aclose()


async def test_streaming_a_stored_response_is_refused_by_name(make_app: AppFactory) -> None:
    app, _ = build(make_app, "chat")
    client = sdk(app)
    try:
        first = await client.responses.create(model="gpt-x", input="hello")
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.retrieve(first.id, stream=True)
        assert caught.value.param == "stream"
    finally:
        await client.close()
        await app.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_chained_stream_is_valid_for_the_sdk(make_app: AppFactory, kind: str) -> None:
    app, _ = build(make_app, kind)
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
        first = await http.post(
            "/responses", json={"model": "gpt-x", "input": "My secret word is YUZU."}, headers=headers
        )
        body = {"model": "gpt-x", "input": QUESTION, "previous_response_id": first.json()["id"], "stream": True}
        answer = await http.post("/responses", json=body, headers=headers)
        events = parse_sse(answer.content)
        validate_events(events)
        final = events[-1]["response"]
        assert final["output"][-1]["content"][0]["text"] == "Your secret word is YUZU."
        stored = await http.get(f"/responses/{final['id']}", headers=headers)
    await app.aclose()
    assert stored.status_code == 200 and stored.json()["id"] == final["id"]


async def test_a_native_chain_keeps_its_id_when_references_resolve_here(make_app: AppFactory) -> None:
    """A native follow-up that also references an item stored from a chat channel: the item is
    resolved by the gateway, the previous_response_id still goes to the native account."""
    chat, native = upstream_for("chat"), StatefulResponsesUpstream(brain=native_brain)
    app = make_app(
        [channel_for("chat", models=["chat-m"]), channel_for("responses", "native", models=["native-m"])],
        transport=routed(chat=chat, native=native),
    )
    client = sdk(app)
    try:
        from_chat = await client.responses.create(model="chat-m", input="Say something.")
        message = from_chat.output[-1]
        assert message.type == "message"
        started = await client.responses.create(model="native-m", input="My secret word is SLOE.")
        follow = await client.responses.create(
            model="native-m",
            previous_response_id=started.id,
            input=[{"type": "item_reference", "id": message.id}, {"role": "user", "content": QUESTION}],
        )
        assert follow.output_text == "Your secret word is SLOE."
        sent = native.requests[-1].body
        assert sent["previous_response_id"] == started.id
        assert sent["input"][0]["id"] == message.id and sent["input"][0]["type"] == "message"
    finally:
        await client.close()
        await app.aclose()


async def test_native_background_responses_poll_stream_and_cancel(make_app: AppFactory) -> None:
    """background on a native channel: created queued, then polled, streamed and cancelled through
    the gateway, on the account that runs it."""
    app, fake = build(make_app, "responses")
    client = sdk(app)
    try:
        queued = await client.responses.create(model="gpt-x", input="My secret word is NUT.", background=True)
        assert queued.status == "queued"
        polled = await client.responses.retrieve(queued.id)
        assert polled.status == "completed" and polled.output_text == "Noted."
        streamed = await client.responses.retrieve(queued.id, stream=True)
        kinds = [event.type async for event in streamed]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        cancelled = await client.responses.cancel(queued.id)
        assert cancelled.status == "cancelled"
        assert fake.requests[-1].path == f"/v1/responses/{queued.id}/cancel"
    finally:
        await client.close()
        await app.aclose()


async def test_cancelling_a_converted_response_is_refused(make_app: AppFactory) -> None:
    app, _ = build(make_app, "chat")
    client = sdk(app)
    try:
        made = await client.responses.create(model="gpt-x", input="hello")
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.cancel(made.id)
        assert "background" in caught.value.message
        with pytest.raises(openai.NotFoundError):
            await client.responses.cancel("resp_unknown")
    finally:
        await client.close()
        await app.aclose()


async def test_an_open_gateway_owns_by_the_key_the_client_sent(make_app: AppFactory) -> None:
    """Without client keys every key is accepted; a stored response still belongs to the one sent."""
    app, _ = build(make_app, "chat", proxy_access_key=None)
    alice, bob = sdk(app, "alice-key"), sdk(app, "bob-key")
    try:
        made = await alice.responses.create(model="gpt-x", input="hello")
        assert (await alice.responses.retrieve(made.id)).id == made.id
        with pytest.raises(openai.NotFoundError):
            await bob.responses.retrieve(made.id)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as anonymous:
            assert (await anonymous.get(f"/responses/{made.id}")).status_code == 404
    finally:
        await alice.close()
        await bob.close()
        await app.aclose()


async def test_item_references_keep_claude_thinking(make_app: AppFactory) -> None:
    """The AI SDK's replay on a Claude channel: the referenced reasoning is the signed thinking block,
    so thinking stays on for the tool turn (without it, it would have to be switched off)."""
    from tests.fakes.claude_upstream import FakeClaudeUpstream

    fake = FakeClaudeUpstream(script=_weather_tool_turn("It is dry."))
    app = make_app([channel_for("claude")], transport=routed(claude=fake))
    client = sdk(app)
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    try:
        first = await client.responses.create(model="gpt-x", input="Weather?", tools=tools, reasoning={"effort": "low"})
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and call.type == "function_call"
        assert call.id is not None
        second = await client.responses.create(
            model="gpt-x",
            tools=tools,
            reasoning={"effort": "low"},
            input=[
                {"role": "user", "content": "Weather?"},
                {"type": "item_reference", "id": reasoning.id},
                {"type": "item_reference", "id": call.id},
                {"type": "function_call_output", "call_id": call.call_id, "output": "dry"},
            ],
        )
        assert second.output_text == "It is dry."
        assert fake.rejections == []
        assert fake.requests[-1].body["thinking"]["type"] == "enabled"
        assistant = fake.requests[-1].body["messages"][1]
        assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    finally:
        await client.close()
        await app.aclose()


async def test_a_route_the_upstream_forgot_is_dropped(make_app: AppFactory) -> None:
    app, fake = build(make_app, "responses")
    client = sdk(app)
    try:
        made = await client.responses.create(model="gpt-x", input="hello")
        fake.stored.clear()  # expired or deleted at the provider
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(made.id)
        asked = len(fake.requests)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(made.id)
        assert len(fake.requests) == asked  # the gateway forgot the route too
    finally:
        await client.close()
        await app.aclose()
