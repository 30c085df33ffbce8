"""Codex's gpt-6 ("responses lite") request shape on converted channels and the demo channel.

The recorded gpt-6-sol body has no top-level ``tools``: an ``additional_tools`` input item carries
namespaces, and the ``functions`` namespace holds the custom code-mode tool ``exec`` beside plain
functions. Custom members must be offered upstream like top-level custom tools and come back as
``custom_tool_call`` items with their ``namespace`` (what Codex 0.171 runs; see tests/e2e).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ccx_asgi.channels.demo import demo_response
from ccx_asgi.convert import chat as chat_dialect
from ccx_asgi.convert import claude as claude_dialect
from ccx_asgi.convert.chat import ChatStreamTranslator
from ccx_asgi.convert.claude import ClaudeStreamTranslator
from ccx_asgi.convert.tools import ToolCatalog, custom_input, request_tools
from tests.fakes.chat_upstream import chunk, validate_chat_request
from tests.fakes.claude_upstream import check_request
from tests.paths import CODEX_FIXTURES
from tests.sdk import validate_events

JS = 'text(await tools.exec_command({cmd: "ls"}));'


def _body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CODEX_FIXTURES / "gpt-6-sol-turn1.json").read_text())
    return body


def test_custom_members_of_a_namespace_are_offered_and_restored() -> None:
    body = _body()
    assert "tools" not in body
    catalog = ToolCatalog.from_tools(request_tools(body))
    spec = catalog.resolve("functions__exec")
    assert spec is not None
    assert (spec.kind, spec.name, spec.namespace) == ("custom", "exec", "functions")
    assert spec.parameters["required"] == ["input"] and "lark" in spec.description
    assert {"functions__wait", "clock__sleep", "collaboration__spawn_agent"} <= {s.upstream_name for s in catalog.specs}
    assert catalog.dropped == []
    assert catalog.client_tool("functions__exec") == ("custom_tool_call", "exec", "functions")
    assert custom_input(orjson.dumps({"input": JS}).decode()) == JS


def test_chat_offers_exec_and_answers_with_a_namespaced_custom_call() -> None:
    body = _body()
    out = chat_dialect.to_request(body, model="deepseek-chat")
    assert validate_chat_request(out) is None
    exec_tool = next(t["function"] for t in out["tools"] if t["function"]["name"] == "functions__exec")
    assert exec_tool["parameters"]["required"] == ["input"]
    translator = ChatStreamTranslator("gpt-6-sol", body, catalog=ToolCatalog.from_tools(request_tools(body)))
    events = translator.feed(chunk({"role": "assistant", "content": None}))
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "functions__exec", "arguments": ""}}
    events += translator.feed(chunk({"tool_calls": [call]}))
    args = orjson.dumps({"input": JS}).decode()
    events += translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}))
    events += translator.feed(chunk({}, "tool_calls"))
    events += translator.finish()
    validate_events(events)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["namespace"] == "functions"
    [item] = events[-1]["response"]["output"]
    assert (item["type"], item["name"], item["namespace"], item["input"]) == (
        "custom_tool_call",
        "exec",
        "functions",
        JS,
    )


def test_claude_offers_exec_and_answers_with_a_namespaced_custom_call() -> None:
    body = _body()
    out = claude_dialect.to_request(body, model="claude-opus-4-7")
    check_request(out)
    assert out["thinking"] == {"type": "adaptive"} and out["output_config"] == {"effort": "medium"}
    assert any(t["name"] == "functions__exec" for t in out["tools"])
    translator = ClaudeStreamTranslator("gpt-6-sol", body, catalog=ToolCatalog.from_tools(request_tools(body)))
    events = translator.feed({"type": "message_start", "message": {"usage": {"input_tokens": 10}}})
    block = {"type": "tool_use", "id": "toolu_1", "name": "functions__exec", "input": {}}
    events += translator.feed({"type": "content_block_start", "index": 0, "content_block": block})
    delta = {"type": "input_json_delta", "partial_json": orjson.dumps({"input": JS}).decode()}
    events += translator.feed({"type": "content_block_delta", "index": 0, "delta": delta})
    events += translator.feed({"type": "content_block_stop", "index": 0})
    events += translator.feed({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}})
    events += translator.feed({"type": "message_stop"})
    validate_events(events)
    [item] = events[-1]["response"]["output"]
    assert (item["type"], item["name"], item["namespace"], item["input"]) == (
        "custom_tool_call",
        "exec",
        "functions",
        JS,
    )


def test_the_replayed_namespaced_call_goes_back_under_its_upstream_name() -> None:
    body = _body()
    call = {"type": "custom_tool_call", "call_id": "toolu_1", "name": "exec", "namespace": "functions", "input": JS}
    output = {"type": "custom_tool_call_output", "call_id": "toolu_1", "output": "a.txt"}
    body["input"] = [*body["input"], call, output]
    claude = claude_dialect.to_request(body, model="claude-opus-4-7")
    check_request(claude)
    tool_use = claude["messages"][-2]["content"][-1]
    assert (tool_use["name"], tool_use["input"]) == ("functions__exec", {"input": JS})
    chat = chat_dialect.to_request(body, model="deepseek-chat")
    assert validate_chat_request(chat) is None
    calls = next(m for m in chat["messages"] if m.get("tool_calls"))["tool_calls"]
    assert calls[0]["function"]["name"] == "functions__exec"


def test_demo_calls_exec_on_the_gpt6_shape() -> None:
    body = _body()
    stream = demo_response(body)
    events = stream.take()
    validate_events(events)
    [item] = events[-1]["response"]["output"]
    assert (item["type"], item["name"], item["namespace"]) == ("custom_tool_call", "exec", "functions")
    assert "tools.exec_command" in item["input"]
