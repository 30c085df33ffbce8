"""The Responses event builder, judged by the openai SDK's types and the stream invariants."""

from __future__ import annotations

from openai.types.responses import ResponseUsage

from ccx_asgi.convert.events import ResponseStream, usage_dict
from tests.sdk import validate_events


def test_all_item_kinds_in_one_stream() -> None:
    stream = ResponseStream("gpt-5.5", {"tool_choice": "auto", "parallel_tool_calls": False})
    reasoning = stream.open_item("reasoning")
    stream.delta(reasoning, "thinking")
    stream.item(reasoning)["encrypted_content"] = "opaque"
    stream.close_item(reasoning)
    message = stream.open_item("message")
    stream.delta(message, "hi ")
    stream.delta(message, "there")
    call = stream.open_item("function_call", call_id="call_1", name="spawn", namespace="agents")
    stream.delta(call, '{"a":')
    stream.delta(call, "1}")
    patch = stream.open_item("custom_tool_call", call_id="call_2", name="apply_patch")
    stream.delta(patch, "*** Begin Patch")
    stream.complete(usage_dict(100, 20, cached_tokens=60, reasoning_tokens=5))
    events = stream.take()
    validate_events(events)
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call", "custom_tool_call"]
    assert final["output"][0]["encrypted_content"] == "opaque"
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "thinking"}]
    assert final["output"][1]["content"][0]["text"] == "hi there"
    assert final["output"][2]["namespace"] == "agents"
    assert final["output"][2]["arguments"] == '{"a":1}'
    assert final["output"][3]["input"] == "*** Begin Patch"
    assert final["parallel_tool_calls"] is False
    usage = ResponseUsage.model_validate(final["usage"])
    assert usage.input_tokens == 100
    assert usage.input_tokens_details.cached_tokens == 60
    assert usage.total_tokens == 120
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert added[2]["item"]["name"] == "spawn"
    assert added[2]["item"]["arguments"] == ""


def test_incomplete_and_failed() -> None:
    stream = ResponseStream("m")
    index = stream.open_item("message")
    stream.delta(index, "cut")
    stream.incomplete("max_output_tokens")
    events = stream.take()
    validate_events(events)
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"

    failing = ResponseStream("m")
    call = failing.open_item("function_call", name="exec_command")
    failing.delta(call, '{"cmd": "rm -')
    failing.fail("upstream died", code="upstream_stream_error")
    events = failing.take()
    validate_events(events)
    final = events[-1]["response"]
    assert final["status"] == "failed"
    assert final["error"] == {"code": "server_error", "message": "upstream died"}
    # A half-built tool call must never be handed to the client as done.
    assert final["output"] == []
    assert "response.output_item.done" not in [e["type"] for e in events]


def test_keepalive_is_a_json_event() -> None:
    stream = ResponseStream("m")
    stream.keepalive()
    stream.keepalive()
    stream.complete()
    events = stream.take()
    validate_events(events)
    assert [e["type"] for e in events].count("response.in_progress") == 3
