"""Claude Messages stream → Responses events: recorded transcripts replayed through the pure translator.

Each transcript (``tests/fixtures/claude/*.sse``) is in Claude's wire format. The tests assert the
exact event sequence, the final response object, and validate every event with the openai SDK.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ccx_asgi.convert.claude import (
    ClaudeStreamTranslator,
    decode_reasoning,
    encode_reasoning,
    to_response,
)
from ccx_asgi.convert.tools import ToolCatalog
from ccx_asgi.sse import SSEParser
from tests.paths import FIXTURES as TEST_FIXTURES
from tests.sdk import validate_events, validate_response

FIXTURES = TEST_FIXTURES / "claude"
_CODEX_TOOLS = FIXTURES / "codex_tools.json"


def codex_request() -> dict[str, Any]:
    """A request with Codex's real tool set (custom apply_patch and a namespace group)."""
    tools = json.loads(_CODEX_TOOLS.read_text())
    return {"model": "claude-x", "input": "hi", "tools": tools, "stream": True}


def replay(name: str, request: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Feed transcript ``name`` through a translator; return all events including ``finish()``'s."""
    request = request or codex_request()
    translator = ClaudeStreamTranslator("client-model", request, catalog=ToolCatalog.from_tools(request.get("tools")))
    parser = SSEParser()
    events: list[dict[str, Any]] = []
    for sse in parser.feed((FIXTURES / f"{name}.sse").read_bytes()) + parser.finish():
        events.extend(translator.feed(orjson.loads(sse.data)))
    events.extend(translator.finish())
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_text_stream_and_cache_usage_in_openai_semantics() -> None:
    events = replay("text")
    validate_events(events)
    assert types(events) == [
        "created", "in_progress", "output_item.added", "content_part.added", "output_text.delta",
        "output_text.delta", "output_text.done", "content_part.done", "output_item.done", "completed",
    ]  # fmt: skip
    final = events[-1]["response"]
    assert final["model"] == "client-model"
    assert final["output"][0]["content"][0]["text"] == "Hello! How can I help?"
    # input = uncached 472 + cache write 1200 + cache read 8000; cached = cache read only.
    assert final["usage"]["input_tokens"] == 9672
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 8000, "cache_write_tokens": 1200}
    assert final["usage"]["output_tokens"] == 15
    assert final["usage"]["total_tokens"] == 9687


def test_thinking_and_tool_use_keep_the_signature_for_replay() -> None:
    events = replay("thinking_tool")
    validate_events(events)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    reasoning, message, call = final["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [
        {"type": "summary_text", "text": "The user wants the marker file. I will run a shell command."}
    ]
    assert decode_reasoning(reasoning["encrypted_content"]) == {
        "type": "thinking",
        "thinking": "The user wants the marker file. I will run a shell command.",
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
    }
    assert message["content"][0]["text"] == "Running it now."
    assert call["type"] == "function_call"
    assert call["call_id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert call["id"] != call["call_id"]
    assert json.loads(call["arguments"]) == {"cmd": "echo hi > marker.txt"}
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"cmd": "echo hi', ' > marker.txt"}']
    summary = [e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    assert summary == ["The user wants the marker file. ", "I will run a shell command."]


def test_parallel_tools_restore_custom_and_namespace() -> None:
    events = replay("parallel_tools")
    validate_events(events)
    shell, patch, agent = events[-1]["response"]["output"]
    assert (shell["type"], shell["name"], shell["arguments"]) == ("function_call", "exec_command", '{"cmd":"ls"}')
    assert patch["type"] == "custom_tool_call"
    assert patch["name"] == "apply_patch"
    assert patch["input"] == "*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch\n"
    assert patch["call_id"] == "toolu_01BBBBBBBBBBBBBBBBBBBBBB"
    assert (agent["name"], agent["namespace"]) == ("close_agent", "multi_agent_v1")
    assert len({shell["call_id"], patch["call_id"], agent["call_id"]}) == 3
    custom_deltas = [e for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert [e["delta"] for e in custom_deltas] == [patch["input"]]


@pytest.mark.parametrize(("name", "reason"), [("max_tokens", "max_output_tokens"), ("refusal", "content_filter")])
def test_stop_reasons_become_incomplete(name: str, reason: str) -> None:
    events = replay(name)
    validate_events(events)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": reason}
    assert final["output"][0]["status"] == "incomplete"


def test_overloaded_before_content_fails_without_output() -> None:
    events = replay("overloaded")
    assert types(events) == ["created", "in_progress", "failed"]
    error = events[-1]["response"]["error"]
    assert error["code"] == "server_error"
    assert "overloaded_error: Overloaded" in error["message"]
    validate_events(events)


def test_overloaded_after_content_fails_and_drops_the_cut_item() -> None:
    events = replay("overloaded_after_content")
    validate_events(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["output"] == []
    assert any(e["type"] == "response.output_text.delta" for e in events)


def test_cut_stream_is_failed_not_completed() -> None:
    events = replay("cut")
    validate_events(events)
    assert events[-1]["type"] == "response.failed"
    assert "message_stop" in events[-1]["response"]["error"]["message"]


def test_redacted_thinking_round_trips_its_data() -> None:
    events = replay("redacted")
    validate_events(events)
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["summary"] == []
    assert decode_reasoning(reasoning["encrypted_content"]) == {
        "type": "redacted_thinking",
        "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
    }
    assert message["content"][0]["text"] == "Done."


def test_events_after_the_terminal_one_are_ignored() -> None:
    translator = ClaudeStreamTranslator("m", {}, catalog=ToolCatalog())
    translator.feed({"type": "message_start", "message": {"usage": {"input_tokens": 3}}})
    translator.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}})
    assert translator.feed({"type": "message_stop"})[-1]["type"] == "response.completed"
    assert translator.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}) == []
    assert translator.finish() == []
    assert translator.fail("late") == []


def test_empty_text_block_makes_no_message_item() -> None:
    translator = ClaudeStreamTranslator("m", {}, catalog=ToolCatalog())
    events = translator.feed({"type": "message_start", "message": {"usage": {"input_tokens": 3}}})
    events += translator.feed(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    )
    events += translator.feed({"type": "content_block_stop", "index": 0})
    events += translator.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}})
    events += translator.feed({"type": "message_stop"})
    validate_events(events)
    assert events[-1]["response"]["output"] == []


def test_encrypted_content_rejects_foreign_and_damaged_values() -> None:
    block = {"type": "thinking", "thinking": "t", "signature": "sig"}
    encoded = encode_reasoning(block)
    assert encoded.startswith("ccx1.claude.")
    assert decode_reasoning(encoded) == block
    assert decode_reasoning("gAAAAABopaque-openai-value") is None
    assert decode_reasoning(encoded[:-3]) is None
    assert decode_reasoning(encode_reasoning({"type": "thinking", "thinking": "t", "signature": ""})) is None
    assert decode_reasoning(None) is None


def test_non_streaming_message_converts_like_the_stream() -> None:
    request = codex_request()
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Plan.", "signature": "SIG"},
            {"type": "text", "text": "Patching."},
            {"type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": {"input": "*** Begin Patch\n"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_goal", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 0,
            "output_tokens": 7,
        },
    }
    data = to_response(message, model="client-model", request=request, catalog=ToolCatalog.from_tools(request["tools"]))
    validate_response(data)
    assert data["status"] == "completed"
    reasoning, text, patch, goal = data["output"]
    assert decode_reasoning(reasoning["encrypted_content"]) == {
        "type": "thinking",
        "thinking": "Plan.",
        "signature": "SIG",
    }
    assert text["content"][0]["text"] == "Patching."
    assert (patch["type"], patch["input"]) == ("custom_tool_call", "*** Begin Patch\n")
    assert (goal["name"], goal["arguments"]) == ("get_goal", "{}")
    assert data["usage"]["input_tokens"] == 15
    assert data["usage"]["input_tokens_details"]["cached_tokens"] == 5
