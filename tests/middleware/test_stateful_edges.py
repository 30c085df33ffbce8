"""Stored responses at their edges: ids the gateway never recorded, the gateway's own reasoning
envelopes on native channels, chains stored by reference (bytes, broken links, depth), strict SDK
types of listed tool items, ``background`` and ``include`` validation, the relayed stream's
redaction, and the owner id computed only when state is used."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses.response_includable import ResponseIncludable
from openai.types.responses.response_item_list import ResponseItemList

import ccx_asgi.middleware.stateful as stateful
import ccx_asgi.store as store_module
from ccx_asgi.convert.claude import REASONING_PREFIX as CLAUDE_REASONING_PREFIX
from ccx_asgi.convert.reasoning_codec import encode_chat_reasoning
from ccx_asgi.responses_api import INCLUDABLE
from ccx_asgi.state import MemoryBlobStore, MemoryStore
from ccx_asgi.store import ANCESTOR_WINDOW, RESPONSE_SHARE, ResponseStore, StoredResponse, client_owner
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY, AppFactory, channel
from tests.fakes.chat_upstream import FakeChatUpstream
from tests.fakes.stateful_responses_upstream import StatefulResponsesUpstream
from tests.middleware.test_stateful import FailFrom
from tests.servers import serve
from tests.stateful_helpers import QUESTION, channel_for, chat_script, native_brain, routed, sdk, upstream_for

OTHER_KEY = "second-client-key"
TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]


def http(app: Any, key: str = PROXY_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw.test", headers={"authorization": f"Bearer {key}"}
    )


# -- ids the gateway holds no record of --------------------------------------------------------


async def test_an_unrecorded_id_goes_to_the_native_upstream_that_holds_it(make_app: AppFactory) -> None:
    """Two workers without Redis (or a restart, or a response older than the gateway): the worker
    that never saw the response forwards the follow-up to its native channel, which holds it."""
    native = StatefulResponsesUpstream(brain=native_brain)
    one = make_app([channel_for("responses")], transport=routed(responses=native))
    two = make_app([channel_for("responses")], transport=routed(responses=native))
    try:
        async with http(one) as first_worker, http(two) as second_worker:
            first = await first_worker.post("/responses", json={"model": "gpt-x", "input": "My secret word is FIG."})
            follow = await second_worker.post(
                "/responses", json={"model": "gpt-x", "input": QUESTION, "previous_response_id": first.json()["id"]}
            )
            assert follow.status_code == 200, follow.text
            assert follow.json()["output"][0]["content"][0]["text"] == "Your secret word is FIG."
            assert native.requests[-1].body["previous_response_id"] == first.json()["id"]
            # The follow-up was recorded on this worker: its own follow-ups are pinned from now on.
            assert (await second_worker.get(f"/responses/{follow.json()['id']}")).status_code == 200
    finally:
        await one.aclose()
        await two.aclose()


async def test_an_unrecorded_id_keeps_only_the_native_candidates(make_app: AppFactory) -> None:
    chat, native = upstream_for("chat"), StatefulResponsesUpstream(brain=native_brain)
    app = make_app(
        [channel_for("chat", priority=0), channel_for("responses", "native", priority=1)],
        transport=routed(chat=chat, native=native),
    )
    try:
        async with http(app) as client:
            answer = await client.post(
                "/responses", json={"model": "gpt-x", "input": QUESTION, "previous_response_id": "resp_unknown"}
            )
        # The native upstream answers for itself: it does not know the id either.
        assert answer.status_code == 400 and "resp_unknown" in answer.text
        assert chat.requests == [] and native.requests[-1].body["previous_response_id"] == "resp_unknown"
    finally:
        await app.aclose()


async def test_another_keys_response_is_never_forwarded(make_app: AppFactory) -> None:
    native = StatefulResponsesUpstream(brain=native_brain)
    app = make_app([channel_for("responses")], transport=routed(responses=native), extra_proxy_access_keys=OTHER_KEY)
    try:
        async with http(app) as owner, http(app, OTHER_KEY) as stranger:
            first = (await owner.post("/responses", json={"model": "gpt-x", "input": "My secret word is FIG."})).json()
            sent = len(native.requests)
            answer = await stranger.post(
                "/responses", json={"model": "gpt-x", "input": QUESTION, "previous_response_id": first["id"]}
            )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "previous_response_not_found"
        assert len(native.requests) == sent  # the shared upstream account was never asked
    finally:
        await app.aclose()


async def test_native_routes_are_cheap_and_do_not_evict_responses() -> None:
    """A route weighs ROUTE_WEIGHT bytes, in its own map: many routes fit a small budget and never
    push local responses out (each used to weigh max_bytes / max_entries in the responses' map)."""
    store = ResponseStore(MemoryStore(), max_entries=100, max_bytes=8 * 1024 * 1024)
    for n in range(100):
        assert await store.save(
            StoredResponse(id=f"resp_local{n}", owner="alice", kind="local", channel="chat", response={"output": []})
        )
    for n in range(1500):
        await store.save(
            StoredResponse(id=f"resp_n{n}", owner="alice", kind="native", channel="oa", target="oa/x", upstream_id="u")
        )
    assert all([await store.get("alice", f"resp_n{n}") is not None for n in range(1500)])
    assert all([await store.get("alice", f"resp_local{n}") is not None for n in range(100)])
    routes: Any = store.routes
    assert routes.held_bytes < 1500 * 300  # each route is a few hundred bytes
    assert store.route_ttl == store_module.ROUTE_TTL == 30 * 86400


# -- the gateway's own reasoning envelopes ------------------------------------------------------


@pytest.mark.parametrize("prefix", ["chat", "claude"])
async def test_gateway_envelopes_never_reach_a_native_channel(make_app: AppFactory, prefix: str) -> None:
    """A store:false client replays a chat channel's reasoning; chat fails over to a native channel:
    the native upstream gets the turn without the reasoning it could not read (no chain expanded)."""
    native = StatefulResponsesUpstream(brain=native_brain)
    down = FailFrom(upstream_for("chat"), 1)
    app = make_app(
        [channel_for("chat", priority=0), channel_for("responses", "native", priority=1)],
        transport=routed(chat=down, native=native),
    )
    envelope = encode_chat_reasoning("I need the tool") if prefix == "chat" else CLAUDE_REASONING_PREFIX + "eyJ9"
    try:
        async with http(app) as client:
            answer = await client.post(
                "/responses",
                json={
                    "model": "gpt-x",
                    "store": False,
                    "tools": TOOLS,
                    "input": [
                        {"role": "user", "content": "Weather?"},
                        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": envelope},
                        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                    ],
                },
            )
        assert answer.status_code == 200 and answer.headers["x-ccx-channel"] == "native"
        sent = native.requests[-1].body["input"]
        assert [i.get("type", "message") for i in sent] == ["message", "function_call", "function_call_output"]
    finally:
        await app.aclose()


def test_envelope_prefixes_come_from_the_codecs() -> None:
    from ccx_asgi.convert.reasoning_codec import CHAT_REASONING_PREFIX

    assert stateful.GATEWAY_ENVELOPES == (CHAT_REASONING_PREFIX, CLAUDE_REASONING_PREFIX)


# -- chains by reference -------------------------------------------------------------------------


async def test_a_long_chain_stores_each_turn_once_and_spares_other_clients(make_app: AppFactory) -> None:
    """40 turns of 20 KB: the store holds about 40 x 20 KB (it held the whole chain per turn, 16 MB,
    and evicted another client's response from an 8 MB budget)."""
    fake = FakeChatUpstream(script=chat_script)
    app = make_app(
        [channel_for("chat")],
        transport=routed(chat=fake),
        extra_proxy_access_keys=OTHER_KEY,
        response_store_max_mb=8,
    )
    try:
        async with http(app) as client, http(app, OTHER_KEY) as victim:
            kept = (await victim.post("/responses", json={"model": "gpt-x", "input": "My secret word is FIG."})).json()
            previous = None
            for turn in range(40):
                body: dict[str, Any] = {"model": "gpt-x", "input": f"turn {turn} " + "x" * 20_000}
                if previous:
                    body["previous_response_id"] = previous
                answer = await client.post("/responses", json=body)
                assert answer.status_code == 200, answer.text
                previous = answer.json()["id"]
            responses: Any = app.responses_store.responses
            assert responses.held_bytes < 40 * 24_000
            assert (await victim.get(f"/responses/{kept['id']}")).status_code == 200
            # The last turn's upstream request held the whole chain, rebuilt from 40 records.
            assert sum("x" * 20_000 in str(m.get("content")) for m in fake.requests[-1].body["messages"]) == 40
            # Its input items: 39 turns before it (input, reasoning, answer each), then its own input.
            listed: list[dict[str, Any]] = []
            page: dict[str, Any] = {"has_more": True}
            while page["has_more"]:
                params = {"limit": 100, "order": "asc", **({"after": listed[-1]["id"]} if listed else {})}
                page = (await client.get(f"/responses/{previous}/input_items", params=params)).json()
                listed += page["data"]
            assert len(listed) == 39 * 3 + 1 and len({i["id"] for i in listed}) == len(listed)
            assert listed[-1]["content"][0]["text"].startswith("turn 39 ")
    finally:
        await app.aclose()


async def test_a_deleted_parent_breaks_the_chain_by_name(make_app: AppFactory) -> None:
    app = make_app([channel_for("chat")], transport=routed(chat=upstream_for("chat")))
    client = sdk(app)
    try:
        first = await client.responses.create(model="gpt-x", input="My secret word is FIG.")
        second = await client.responses.create(model="gpt-x", input="And?", previous_response_id=first.id)
        third = await client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=second.id)
        assert third.output_text == "Your secret word is FIG."
        await client.responses.delete(first.id)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="gpt-x", input=QUESTION, previous_response_id=third.id)
        assert caught.value.code == "previous_response_not_found" and caught.value.param == "previous_response_id"
        assert f"'{first.id}' not found" in caught.value.message and third.id in caught.value.message
        with pytest.raises(openai.NotFoundError) as listing:
            await client.responses.input_items.list(third.id)
        assert first.id in listing.value.message
    finally:
        await client.close()
        await app.aclose()


async def test_chains_deeper_than_the_cap_are_refused(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stateful, "MAX_CHAIN_DEPTH", 3)
    app = make_app([channel_for("chat")], transport=routed(chat=upstream_for("chat")))
    try:
        async with http(app) as client:
            previous = None
            statuses = []
            for turn in range(4):
                body: dict[str, Any] = {"model": "gpt-x", "input": f"turn {turn}"}
                if previous:
                    body["previous_response_id"] = previous
                answer = await client.post("/responses", json=body)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    previous = answer.json()["id"]
        assert statuses == [200, 200, 200, 400]
        error = answer.json()["error"]
        assert error["param"] == "previous_response_id" and "at most 3" in error["message"]
    finally:
        await app.aclose()


class CountingBlobs(MemoryBlobStore):
    """Counts batched reads."""

    batches = 0

    async def get_many(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        self.batches += 1
        return await super().get_many(namespace, keys)


async def test_a_chain_is_read_in_batches_of_the_ancestor_window() -> None:
    store = ResponseStore(MemoryStore())
    counting = CountingBlobs(max_entries=1000, max_bytes=64 * 1024 * 1024)
    store.responses = counting
    parent: StoredResponse | None = None
    for n in range(100):
        record = StoredResponse(
            id=f"resp_{n}", owner="alice", kind="local", channel="c", response={"output": []}, input=[n]
        )
        if parent is not None:
            record.follow(parent)
        assert await store.save(record)
        parent = record
    assert parent is not None and parent.depth == 99 and len(parent.ancestors) == ANCESTOR_WINDOW
    chain = await store.chain(parent)
    assert [r.input for r in chain] == [[n] for n in range(99)]
    assert counting.batches == math.ceil(99 / ANCESTOR_WINDOW)


# -- listed items, background, include ------------------------------------------------------------


async def test_a_tool_loop_listing_passes_the_sdks_types(make_app: AppFactory) -> None:
    app = make_app([channel_for("chat")], transport=routed(chat=FakeChatUpstream(script=chat_script)))
    try:
        async with http(app) as client:
            created = await client.post(
                "/responses",
                json={
                    "model": "gpt-x",
                    "tools": TOOLS,
                    "input": [
                        {"role": "developer", "content": "be brief"},
                        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "x"},
                        {"type": "custom_tool_call_output", "call_id": "c2", "output": "done"},
                        {"role": "user", "content": "hi"},
                    ],
                },
            )
            assert created.status_code == 200, created.text
            listing = (await client.get(f"/responses/{created.json()['id']}/input_items")).json()
        parsed = ResponseItemList.model_validate(listing)
        assert [i.type for i in parsed.data][::-1] == [
            "message", "message", "function_call", "function_call_output", "custom_tool_call",
            "custom_tool_call_output", "message",
        ]  # fmt: skip
        assert all(i.status == "completed" for i in parsed.data)  # type: ignore[union-attr]
    finally:
        await app.aclose()


@pytest.mark.parametrize("value", ["yes", 1, {"x": 1}, "true"])
@pytest.mark.parametrize("kind", ["chat", "claude"])
async def test_background_must_be_a_boolean(make_app: AppFactory, kind: str, value: Any) -> None:
    fake = upstream_for(kind)
    app = make_app([channel_for(kind)], transport=routed(**{kind: fake}))
    try:
        async with http(app) as client:
            answer = await client.post("/responses", json={"model": "gpt-x", "input": "hi", "background": value})
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == "background" and answer.json()["error"]["code"] == "invalid_type"
        assert fake.requests == []
    finally:
        await app.aclose()


def test_background_predicate() -> None:
    assert not stateful.wants_background({}) and not stateful.wants_background({"background": None})
    assert not stateful.wants_background({"background": False}) and stateful.wants_background({"background": True})


def test_includable_values_are_openais() -> None:
    import typing

    assert frozenset(typing.get_args(ResponseIncludable)) == INCLUDABLE


async def test_include_is_checked_and_decides_encrypted_content(make_app: AppFactory) -> None:
    app = make_app([channel_for("chat")], transport=routed(chat=upstream_for("chat")))
    client = sdk(app)
    try:
        created = await client.responses.create(model="gpt-x", input="Hello", tools=TOOLS)
        assert created.output[0].type == "reasoning" and created.output[0].encrypted_content
        plain = await client.responses.retrieve(created.id)
        assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
        full = await client.responses.retrieve(created.id, include=["reasoning.encrypted_content"])
        assert full.output[0].encrypted_content == created.output[0].encrypted_content  # type: ignore[union-attr]
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.retrieve(created.id, include=["bogus.value"])  # type: ignore[list-item]
        assert caught.value.param == "include" and "'bogus.value'" in caught.value.message
        with pytest.raises(openai.BadRequestError):
            await client.responses.input_items.list(created.id, include=["bogus.value"])  # type: ignore[list-item]
    finally:
        await client.close()
        await app.aclose()


# -- the relayed stream of a native background response -----------------------------------------


class SplitSecret:
    """A native upstream whose stored-response stream carries its API key split across two chunks."""

    def __init__(self, native: StatefulResponsesUpstream, key: str) -> None:
        self.native, self.key = native, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope.get("query_string") == b"stream=true":
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            half = len(self.key) // 2
            await send({"type": "http.response.body", "body": b'data: {"echo": "' + self.key[:half], "more_body": True})
            await asyncio.sleep(0.1)  # two reads on the gateway's side, not one
            await send({"type": "http.response.body", "body": self.key[half:] + b'"}\n\n', "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.native(scope, receive, send)


async def test_a_relayed_stream_redacts_a_secret_split_across_chunks(make_app: AppFactory) -> None:
    """Over real HTTP (uvicorn), so the two halves arrive as two reads of the gateway's client."""
    key = "sk-upstream-secret-0123456789"
    native = StatefulResponsesUpstream(brain=native_brain, keys=(key,))
    with serve(SplitSecret(native, key)) as url:
        app = make_app([channel("native", base_url=f"{url}/v1", api_keys=[key])])
        try:
            async with http(app) as client:
                created = (await client.post("/responses", json={"model": "gpt-x", "input": "hi"})).json()
                streamed = await client.get(f"/responses/{created['id']}", params={"stream": "true"})
            assert streamed.status_code == 200
            assert key not in streamed.text and key[:10] not in streamed.text and "[redacted]" in streamed.text
        finally:
            await app.aclose()


# -- the owner id only when state is used ----------------------------------------------------------


async def test_the_owner_is_computed_only_when_state_is_used(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real = client_owner

    def counting(scope: Scope, keys: Any) -> str:
        calls.append(scope)
        return real(scope, keys)

    monkeypatch.setattr(stateful, "client_owner", counting)
    app = make_app([channel_for("chat")], transport=routed(chat=upstream_for("chat")))
    try:
        async with http(app) as client:
            codex_turn = {"model": "gpt-x", "input": "hi", "store": False}
            assert (await client.post("/responses", json=codex_turn)).status_code == 200
            assert calls == []
            stored = await client.post("/responses", json={"model": "gpt-x", "input": "hi"})
            assert stored.status_code == 200 and len(calls) == 1
    finally:
        await app.aclose()


# -- documentation agrees with the code ------------------------------------------------------------


def test_the_single_record_limit_is_documented_as_the_code_applies_it() -> None:
    share = round(RESPONSE_SHARE * 100)
    text = (Path(__file__).resolve().parents[2] / "docs" / "state.md").read_text()
    assert f"{share} %" in text
    store = ResponseStore(MemoryStore(), max_entries=10, max_bytes=100_000)
    assert store.max_record_bytes == int(100_000 * RESPONSE_SHARE)
