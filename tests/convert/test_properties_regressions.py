"""Plain regression tests for the bugs the property tests found (each named after what broke)."""

from __future__ import annotations

from typing import Any

import pytest

from ccx_asgi.convert import chat as chat_dialect
from ccx_asgi.convert import claude as claude_dialect
from ccx_asgi.convert.chat import ChatStreamTranslator
from ccx_asgi.convert.claude import ClaudeStreamTranslator
from ccx_asgi.convert.roles import normalize_roles
from ccx_asgi.convert.tools import INTERRUPTED_OUTPUT, ToolCatalog, pair_tool_calls
from ccx_asgi.errors import InvalidRequestError
from tests.fakes.chat_upstream import validate_chat_request
from tests.sdk import validate_events


def test_chat_input_with_nothing_to_send_is_a_clear_400() -> None:
    # Found by test_chat_conversion_is_accepted_or_a_clear_400: only a reasoning item (no Chat form)
    # gave ``messages: []``, which every Chat upstream refuses with its own, confusing 400.
    body = {"model": "m", "input": [{"type": "reasoning", "id": "rs_0", "summary": []}]}
    with pytest.raises(InvalidRequestError, match="no instructions or messages") as info:
        chat_dialect.to_request(body, model="up")
    assert info.value.status == 400
    assert chat_dialect.to_request({**body, "instructions": "be brief"}, model="up")["messages"] == [
        {"role": "system", "content": "be brief"}
    ]


def test_an_orphan_output_inside_a_call_group_does_not_split_the_pairing() -> None:
    # Found by the converter property test: an interrupted call, then an output for an unknown call,
    # put the orphan's user message between the call and its synthesized output (Chat: 400
    # "tool_call_ids did not have response messages").
    items = [
        {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_orphan", "output": "x"},
    ]
    out = pair_tool_calls(items)
    assert [i["type"] for i in out] == ["function_call", "function_call_output", "message"]
    assert out[1]["output"] == INTERRUPTED_OUTPUT


def test_a_call_after_its_groups_outputs_starts_a_new_group() -> None:
    # Found by the converter property test: calls a, b; b answered; then a new call c. The new call
    # joined the open group after b's output, so a's synthesized output came after c's assistant turn.
    items = [
        {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_b", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_b", "output": "b"},
        {"type": "function_call", "call_id": "call_c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_c", "output": "c"},
    ]
    out = pair_tool_calls(items)
    assert [(i["type"], i["call_id"]) for i in out] == [
        ("function_call", "call_a"),
        ("function_call", "call_b"),
        ("function_call_output", "call_b"),
        ("function_call_output", "call_a"),
        ("function_call", "call_c"),
        ("function_call_output", "call_c"),
    ]
    chat = chat_dialect.to_request(
        {"model": "m", "input": items, "tools": [{"type": "function", "name": "f"}]}, model="up"
    )
    assert validate_chat_request(chat) is None


def test_an_interrupted_calls_id_is_not_reused_by_a_later_call() -> None:
    # Found by the converter property test: a call interrupted (given the synthesized output) and a
    # later call with the same id both reached Chat: 400 "Duplicate tool_call id".
    call = {"type": "function_call", "call_id": "call_0", "name": "f", "arguments": "{}"}
    items = [call, {"type": "message", "role": "user", "content": "go on"}, dict(call)]
    out = pair_tool_calls(items)
    assert [i["type"] for i in out] == ["function_call", "function_call_output", "message"]
    chat = chat_dialect.to_request({"model": "m", "input": items}, model="up")
    assert validate_chat_request(chat) is None


def test_chat_tool_fragment_after_the_finish_reason_is_dropped() -> None:
    # Found by the translator property test: a broken upstream sent an argument fragment after the
    # finish_reason chunk; the translator wrote a delta into the closed item (KeyError mid-stream).
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    translator = ChatStreamTranslator("m")
    start = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    events = translator.feed(chunk({"tool_calls": [start]}))
    events += translator.feed(chunk({}, "tool_calls"))
    events += translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    events += translator.finish()
    validate_events(events)
    assert events[-1]["response"]["output"][0]["arguments"] == "{}"


@pytest.mark.parametrize("chunk", [{"choices": True}, {"choices": [{"index": 0, "delta": {"tool_calls": 7}}]}])
def test_chat_chunks_with_wrongly_typed_lists_are_skipped(chunk: dict[str, Any]) -> None:
    # Found by the mangled-chunk property test: ``"choices": true`` or ``"tool_calls": 7`` from a
    # broken upstream raised TypeError inside the translator mid-stream.
    translator = ChatStreamTranslator("m")
    events = translator.feed(chunk)
    events += translator.feed({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    events += translator.finish()
    validate_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "hi"


def test_claude_tool_use_without_a_name_is_dropped() -> None:
    # Found by the mangled-event property test: a tool_use block without a name became a
    # function_call item with an empty name, which no client can run.
    translator = ClaudeStreamTranslator("m", {}, catalog=ToolCatalog())
    events: list[dict[str, Any]] = []
    upstream: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "input": {}},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "done"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    ]
    for event in upstream:
        events += translator.feed(event)
    events += translator.finish()
    validate_events(events)
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["message"]


@pytest.mark.parametrize(
    "item",
    [
        {"type": [], "role": "user", "content": "x"},
        {"type": "message", "role": [], "content": "x"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": [], "text": "x"}, {"type": "input_text", "text": "y"}],
        },
        {"type": "reasoning", "summary": 5, "content": True},
    ],
)
def test_unhashable_types_and_roles_are_ignored_not_a_crash(item: dict[str, Any]) -> None:
    # Found by test_malformed_bodies_never_crash_a_converter: ``"type": []`` (or a list role, or a
    # non-list summary) raised TypeError inside the converters, a 500 instead of a request or a 400.
    body = {"model": "m", "input": [item, {"type": "message", "role": "user", "content": "go"}]}
    chat = chat_dialect.to_request(normalize_roles(body), model="up")
    assert validate_chat_request(chat, strict_roles=True) is None
    claude = claude_dialect.to_request(body, model="up")
    assert claude["messages"][-1]["role"] == "user"
