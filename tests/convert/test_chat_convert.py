"""Responses → Chat request conversion, judged by the strict fake's validator (what real upstreams reject)."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

from ccx_asgi.convert.chat import ChatOptions, ChatStreamTranslator, chat_messages, to_request
from ccx_asgi.convert.roles import normalize_roles
from ccx_asgi.convert.tools import INTERRUPTED_OUTPUT
from ccx_asgi.settings import ChannelConfig
from tests.fakes.chat_upstream import PATCH, tool_reply, validate_chat_request
from tests.paths import CODEX_FIXTURES, codex_bodies

CODEX = CODEX_FIXTURES
RECORDED = [p.name for p in codex_bodies()]


def load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CODEX / name).read_text())
    return body


def convert(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return to_request(body, model="up-model", options=ChatOptions(**options))


def assert_valid(chat: dict[str, Any], **strictness: Any) -> None:
    assert validate_chat_request(chat, **strictness) is None, validate_chat_request(chat, **strictness)


def test_all_four_recorded_codex_bodies_are_found() -> None:
    assert len(RECORDED) == 4


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_codex_bodies_convert_to_valid_chat_requests(name: str) -> None:
    body = load(name)
    chat = convert(body)
    assert_valid(chat)
    assert chat["model"] == "up-model"
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["messages"][0]["role"] == "developer"  # kept unless the channel normalises roles
    names = [t["function"]["name"] for t in chat["tools"]]
    assert "apply_patch" in names and "exec_command" in names
    assert "web_search" not in names and "tool_search" not in names  # hosted tools dropped
    for dropped in ("store", "include", "prompt_cache_key", "client_metadata", "input", "text", "reasoning"):
        assert dropped not in chat
    if "multi_agent" in json.dumps(body["tools"]):
        assert "multi_agent_v1__spawn_agent" in names
    # The strict variant (DeepSeek) rejects developer until roles are normalised.
    assert validate_chat_request(chat, strict_roles=True) is not None
    normalized = convert(normalize_roles(body))
    assert_valid(normalized, strict_roles=True)
    assert normalized["messages"][0]["role"] == "system"


def test_codex_turn2_tool_history_pairs_and_carries_reasoning() -> None:
    body = load("request-custom-slug-turn2-reasoning-tool.json")
    chat = convert(body)
    assert_valid(chat, require_reasoning_content=True)
    assistant = next(m for m in chat["messages"] if m.get("tool_calls"))
    assert assistant["reasoning_content"].startswith("Let me think about this")
    call = assistant["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("call_c5683b313827", "exec_command")
    tool = chat["messages"][chat["messages"].index(assistant) + 1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_c5683b313827"
    assert tool["content"].startswith("Chunk ID:")
    # Without reasoning_content passing, DeepSeek-class thinking models reject the history.
    bare = convert(body, reasoning_content=False)
    assert validate_chat_request(bare, require_reasoning_content=True) is not None


def test_namespace_and_apply_patch_survive_the_round_trip() -> None:
    request = load("request-custom-slug-turn1.json")
    chat = convert(request)
    assert_valid(chat)
    # The upstream answers with calls to the flattened names…
    translator = ChatStreamTranslator("client", request)
    reply = tool_reply([("apply_patch", {"input": PATCH}), ("multi_agent_v1__spawn_agent", {"message": "go"})])
    events = [e for c in reply.chunks for e in translator.feed(c)] + translator.finish()
    custom, namespaced = events[-1]["response"]["output"]
    assert custom["type"] == "custom_tool_call" and custom["input"] == PATCH and custom["name"] == "apply_patch"
    assert (namespaced["name"], namespaced["namespace"]) == ("spawn_agent", "multi_agent_v1")
    # …Codex replays them with their outputs, and they go upstream again under the flattened names.
    turn2 = dict(request)
    turn2["input"] = [
        *request["input"],
        custom,
        namespaced,
        {"type": "custom_tool_call_output", "call_id": custom["call_id"], "output": "Success. Updated: hello.txt"},
        {"type": "function_call_output", "call_id": namespaced["call_id"], "output": "agent started"},
    ]
    chat2 = convert(turn2)
    assert_valid(chat2)
    calls = next(m for m in chat2["messages"] if m.get("tool_calls"))["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["apply_patch", "multi_agent_v1__spawn_agent"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"input": PATCH}
    tools = [m for m in chat2["messages"] if m["role"] == "tool"]
    assert [t["content"] for t in tools] == ["Success. Updated: hello.txt", "agent started"]


def test_custom_tool_definition_is_a_one_string_function_with_the_grammar() -> None:
    chat = convert(load("request-gpt-5.5-turn1.json"))
    patch = next(t["function"] for t in chat["tools"] if t["function"]["name"] == "apply_patch")
    assert patch["parameters"]["required"] == ["input"]
    assert patch["parameters"]["properties"]["input"]["type"] == "string"
    assert "Begin Patch" in patch["description"]  # the lark grammar travels in the description


def test_instructions_string_input_and_fields() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": "hi",
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        "prompt_cache_key": "thread-1",
        "store": False,
        "metadata": {"a": "b"},
        "truncation": "auto",
        "service_tier": "auto",
    }
    chat = convert(body)
    assert_valid(chat)
    assert chat == {
        "model": "up-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
        "max_tokens": 300,
        "reasoning_effort": "high",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
    }
    other = convert(body, max_tokens_field="max_completion_tokens", prompt_cache_key=True, reasoning_effort="none")
    assert other["max_completion_tokens"] == 300 and "max_tokens" not in other
    assert other["prompt_cache_key"] == "thread-1"
    assert "reasoning_effort" not in other
    assert convert(body, reasoning_effort="reasoning")["reasoning"] == {"effort": "high"}
    assert convert({**body, "text": {"format": {"type": "json_object"}}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in convert({**body, "text": {"format": {"type": "text"}, "verbosity": "low"}})


def test_message_parts_images_and_refusals() -> None:
    items = [
        {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
        ]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "no"},
        ]},
        {"role": "user", "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}]},
    ]  # fmt: skip
    messages = chat_messages(None, items)
    assert messages == [
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
        ]},
        {"role": "assistant", "content": "a\n\nno"},
        {"role": "user", "content": "one\n\ntwo"},
    ]  # fmt: skip
    assert_valid({"model": "m", "messages": messages})


def test_consecutive_calls_merge_into_the_preceding_assistant_text() -> None:
    items = [
        {"role": "user", "content": "do two things"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": '{"x":1}'},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": ""},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"role": "user", "content": "thanks"},
    ]
    messages = chat_messages(None, items)
    assert messages[1] == {
        "role": "assistant",
        "content": "On it.",
        "reasoning_content": "plan",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
        ],
    }
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert_valid({"model": "m", "messages": messages})


def test_orphans_are_repaired_so_strict_upstreams_accept_the_history() -> None:
    items = [
        {"role": "user", "content": "hi"},
        {"type": "function_call_output", "call_id": "ghost", "output": "stale"},  # call never made
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},  # interrupted
        {"role": "user", "content": "continue"},
        {"type": "function_call", "call_id": "c2", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "ok"},
        {"type": "function_call_output", "call_id": "c2", "output": "duplicate"},  # answered twice
    ]
    messages = chat_messages(None, items)
    assert_valid({"model": "m", "messages": messages})
    assert messages[1] == {"role": "user", "content": "[output of tool call ghost]\nstale"}
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": INTERRUPTED_OUTPUT}
    assert messages == chat_messages(None, items)  # deterministic
    # Unrepaired, the fake rejects exactly these shapes (it is strict).
    raw = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}],
        },
        {"role": "user", "content": "continue"},
    ]
    assert "did not have response messages" in str(validate_chat_request({"model": "m", "messages": raw}))
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "ghost", "content": "x"}]
    assert "preceeding message with 'tool_calls'" in str(validate_chat_request({"model": "m", "messages": orphan}))


def test_tool_output_images_follow_the_tool_messages() -> None:
    items = [
        {"role": "user", "content": "show"},
        {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": '{"path":"a.png"}'},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "here"},
            {"type": "input_image", "image_url": "data:image/png;base64,BBBB"},
        ]},
        {"type": "function_call", "call_id": "c2", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "none"},
    ]  # fmt: skip
    messages = chat_messages(None, items)
    assert_valid({"model": "m", "messages": messages})
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user", "assistant", "tool"]
    assert messages[2]["content"] == "here"
    assert messages[3]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBBB"}}


def test_tool_choice_and_dropped_tools() -> None:
    tools = [
        {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
        {"type": "custom", "name": "apply_patch"},
        {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g", "parameters": {}}]},
        {"type": "web_search"},
    ]
    base = {"model": "m", "input": "x", "tools": tools, "parallel_tool_calls": False}
    cases = [
        ("required", "required"),
        ({"type": "function", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
        ({"type": "function", "name": "g", "namespace": "ns"}, {"type": "function", "function": {"name": "ns__g"}}),
        ({"type": "web_search"}, "auto"),
        ({"type": "function", "name": "gone"}, "auto"),
        ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}, "required"),
        ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]}, "none"),
    ]
    for choice, expected in cases:
        chat = convert({**base, "tool_choice": choice})
        assert chat["tool_choice"] == expected, choice
        assert chat["parallel_tool_calls"] is False
        assert_valid(chat)
    assert "strict" not in convert(base)["tools"][0]["function"]
    assert convert(base, strict_tools=True)["tools"][0]["function"]["strict"] is True
    hosted_only = convert(
        {
            "model": "m",
            "input": "x",
            "tools": [{"type": "web_search"}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        }
    )
    assert "tools" not in hosted_only and "tool_choice" not in hosted_only and "parallel_tool_calls" not in hosted_only
    assert_valid(hosted_only)


def test_stream_usage_option_and_non_stream() -> None:
    body = {"model": "m", "input": "x", "stream": True}
    assert "stream_options" not in convert(body, stream_usage=False)
    assert "stream" not in convert({**body, "stream": False})


def test_long_and_odd_tool_names_fit_the_chat_pattern() -> None:
    tools = [{"type": "namespace", "name": "mcp.server-with.a.very.long.name", "tools": [
        {"type": "function", "name": "tool/with spaces and a long long long long name", "parameters": {}},
    ]}]  # fmt: skip
    chat = convert({"model": "m", "input": "x", "tools": tools})
    assert_valid(chat)
    name = chat["tools"][0]["function"]["name"]
    translator = ChatStreamTranslator("m", {"tools": tools})
    reply = tool_reply([(name, {})])
    events = [e for c in reply.chunks for e in translator.feed(c)] + translator.finish()
    call = events[-1]["response"]["output"][0]
    assert (call["namespace"], call["name"]) == (
        "mcp.server-with.a.very.long.name",
        "tool/with spaces and a long long long long name",
    )


def test_unknown_items_are_dropped_and_history_stays_valid() -> None:
    items = [
        {"role": "user", "content": "search"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "item_reference", "id": "msg_1"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "found"}]},
    ]
    messages = chat_messages(None, items)
    assert messages == [{"role": "user", "content": "search"}, {"role": "assistant", "content": "found"}]


def test_chat_style_tool_answers_are_paired_without_role_normalisation() -> None:
    items = [
        {"role": "user", "content": "run"},
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
        {"role": "tool", "tool_call_id": "c1", "content": "ran"},
        {"role": "tool", "tool_call_id": "nobody", "content": "stray"},
    ]
    messages = chat_messages(None, items)
    assert_valid({"model": "m", "messages": messages})
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "ran"}
    assert messages[3] == {"role": "user", "content": "[output of tool call nobody]\nstray"}


def test_additional_tools_items_are_offered_too() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "additional_tools", "tools": [{"type": "function", "name": "late", "parameters": {}}]},
            {"role": "user", "content": "x"},
        ],
        "tools": [{"type": "function", "name": "early", "parameters": {}}],
    }
    chat = convert(body)
    assert_valid(chat)
    assert [t["function"]["name"] for t in chat["tools"]] == ["early", "late"]
    assert chat["messages"] == [{"role": "user", "content": "x"}]


def test_options_are_read_from_the_channel_once_per_channel_config() -> None:
    config = ChannelConfig(
        name="c",
        service_type="chat",
        base_url="https://api.example.com/v1",
        max_tokens_field="max_completion_tokens",
        chat_strict_tools=True,
        chat_prompt_cache_key=True,
        chat_stream_usage=False,
        chat_reasoning_effort="reasoning",
        chat_reasoning_content=False,
        chat_allowed_tools="native",
        chat_forward_fields=["verbosity", "service_tier"],
    )
    options = ChatOptions.from_channel(config)
    assert options == ChatOptions(
        max_tokens_field="max_completion_tokens",
        strict_tools=True,
        prompt_cache_key=True,
        stream_usage=False,
        reasoning_effort="reasoning",
        reasoning_content=False,
        allowed_tools="native",
        forward_fields=frozenset({"verbosity", "service_tier"}),
    )
    # Every option is a channel field (the same name, or with the chat_ prefix).
    for option in fields(ChatOptions):
        assert {option.name, f"chat_{option.name}"} & set(ChannelConfig.model_fields)
    assert ChatOptions.from_channel(config) is options  # built once, not per request
    copy = config.model_copy()
    assert ChatOptions.from_channel(copy) == options and ChatOptions.from_channel(copy) is not options
    assert (
        ChatOptions.from_channel(ChannelConfig(name="d", service_type="chat", base_url="https://x/v1")) == ChatOptions()
    )
