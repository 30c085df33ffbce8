"""The Chat → Responses stream translator, replaying recorded upstream chunk sequences.

Each transcript in ``fixtures/chat_streams`` is raw SSE as an upstream sent it; it goes through the
real SSE parser and the translator, and every produced event is validated with the openai SDK.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ccx_asgi.convert.chat import ChatStreamTranslator, to_response
from ccx_asgi.sse import SSEParser
from tests.fakes.chat_upstream import PATCH, chunk, completion_from_chunks, tool_reply
from tests.paths import CODEX_FIXTURES, FIXTURES
from tests.sdk import parse_sse, validate_events, validate_response

STREAMS = FIXTURES / "chat_streams"
CODEX = CODEX_FIXTURES
# Codex's real request: exec_command, view_image, custom apply_patch, the multi_agent_v1 namespace.
REQUEST: dict[str, Any] = json.loads((CODEX / "request-custom-slug-turn1.json").read_text())


def chunks_of(name: str) -> list[dict[str, Any]]:
    parser = SSEParser()
    raw = (STREAMS / name).read_bytes()
    events = parser.feed(raw) + parser.finish()
    return [orjson.loads(e.data) for e in events if e.data and e.data != "[DONE]"]


def replay(name: str, *, split: bool = False) -> list[dict[str, Any]]:
    translator = ChatStreamTranslator("client-model", REQUEST)
    events: list[dict[str, Any]] = []
    for data in chunks_of(name):
        events += translator.feed(data)
    events += translator.finish()
    assert translator.finish() == []  # exactly one terminal event, however often finish is called
    validate_events(events)
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_text_stream_exact_sequence_and_usage() -> None:
    events = replay("text.sse")
    assert types(events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        *["output_text.delta"] * 9,
        "output_text.done", "content_part.done", "output_item.done", "completed",
    ]  # fmt: skip
    final = events[-1]["response"]
    assert final["model"] == "client-model"
    assert final["id"].startswith("resp_") and final["id"] == events[0]["response"]["id"]
    message = final["output"][0]
    assert message["id"].startswith("msg_")
    assert message["content"][0]["text"] == "Hello! How can I help you today?"
    # OpenAI semantics: input includes the cached tokens, total = input + output.
    assert final["usage"]["input_tokens"] == 1520
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 1024
    assert final["usage"]["output_tokens"] == 12
    assert final["usage"]["total_tokens"] == 1532


def test_reasoning_then_text_uses_delta_and_deepseek_usage() -> None:
    events = replay("reasoning_text.sse")
    reasoning_deltas = [e for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    assert "".join(e["delta"] for e in reasoning_deltas) == "The user asks 2+2. That is 4."
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["id"].startswith("rs_")
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "The user asks 2+2. That is 4."}]
    assert final["output"][1]["content"][0]["text"] == "2 + 2 = 4."
    # The reasoning item is closed before the message opens.
    done_rs = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.done")
    added_msg = [i for i, e in enumerate(events) if e["type"] == "response.output_item.added"][1]
    assert done_rs < added_msg
    usage = final["usage"]
    assert (usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"]) == (230, 192)
    assert usage["output_tokens_details"]["reasoning_tokens"] == 48


def test_parallel_tool_calls_carry_real_names_and_ids() -> None:
    events = replay("parallel_tools.sse")
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(i["name"], i["call_id"]) for i in added] == [("exec_command", "call_Ab12"), ("view_image", "call_Cd34")]
    assert all(i["id"].startswith("fc_") and i["id"] != i["call_id"] for i in added)
    final = events[-1]
    assert final["type"] == "response.completed"
    calls = final["response"]["output"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"cmd": "ls -la"}, {"path": "a.png"}]
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"cmd": "ls -la"}{"path": "a.png"}'


def test_custom_tool_comes_back_as_custom_tool_call_with_raw_input() -> None:
    events = replay("custom_tool.sse")
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "custom_tool_call"]
    call = final["output"][1]
    assert call["name"] == "apply_patch"
    assert call["call_id"] == "chatcmpl-tool-5e0c"
    assert call["input"] == PATCH
    assert "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta") == PATCH
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == PATCH
    assert final["usage"]["input_tokens"] == 900


def test_namespace_tool_gets_its_namespace_back() -> None:
    events = replay("namespace_tool.sse")
    added = next(e["item"] for e in events if e["type"] == "response.output_item.added")
    assert (added["name"], added["namespace"]) == ("spawn_agent", "multi_agent_v1")
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "function_call"
    assert (call["name"], call["namespace"]) == ("spawn_agent", "multi_agent_v1")
    assert json.loads(call["arguments"]) == {"message": "check the tests"}


@pytest.mark.parametrize(
    ("name", "reason"), [("length.sse", "max_output_tokens"), ("content_filter.sse", "content_filter")]
)
def test_finish_reasons_become_incomplete(name: str, reason: str) -> None:
    events = replay(name)
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": reason}
    assert final["output"][0]["status"] == "incomplete"


def test_cut_stream_fails_and_never_completes() -> None:
    events = replay("cut.sse")
    assert events[-1]["type"] == "response.failed"
    assert "finish_reason" in events[-1]["response"]["error"]["message"]
    assert not any(e["type"] == "response.completed" for e in events)
    # The partial message was streamed (content reached the client) but is not claimed as output.
    assert events[-1]["response"]["output"] == []


def test_fail_after_content_reuses_the_response_id() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events = translator.feed(chunk({"content": "partial"}))
    events += translator.fail("upstream connection failed mid-response")
    assert translator.finish() == []
    validate_events(events)
    assert events[-1]["type"] == "response.failed"


def test_error_chunk_in_stream_fails() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events = translator.feed({"error": {"message": "Model overloaded", "code": "overloaded"}})
    events += translator.finish()
    validate_events(events)
    assert events[-1]["response"]["error"]["message"] == "upstream error: Model overloaded"


def test_tool_name_arriving_after_arguments_opens_the_item_with_the_name() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events = translator.feed(chunk({"tool_calls": [{"index": 0, "id": "call_x", "function": {"arguments": '{"cmd"'}}]}))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]
    events += translator.feed(
        chunk({"tool_calls": [{"index": 0, "function": {"name": "exec_command", "arguments": ': "pwd"}'}}]})
    )
    events += translator.feed(chunk({}, "tool_calls"))
    events += translator.finish()
    validate_events(events)
    call = events[-1]["response"]["output"][0]
    assert (call["name"], call["call_id"], call["arguments"]) == ("exec_command", "call_x", '{"cmd": "pwd"}')


def test_unknown_tool_name_is_passed_through_as_a_function_call() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events = translator.feed(
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "nope", "arguments": "{}"}}]}, "tool_calls")
    )
    events += translator.finish()
    validate_events(events)
    assert events[-1]["response"]["output"][0]["name"] == "nope"


@pytest.mark.parametrize(
    "name",
    ["text.sse", "reasoning_text.sse", "parallel_tools.sse", "custom_tool.sse", "namespace_tool.sse", "length.sse"],
)
def test_non_streaming_conversion_matches_the_stream(name: str) -> None:
    chunks = chunks_of(name)
    completion = completion_from_chunks(chunks)
    response = to_response(completion, model="client-model", request=REQUEST)
    validate_response(response)
    streamed = replay(name)[-1]["response"]

    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "id"} for i in items]

    assert strip(response["output"]) == strip(streamed["output"])
    assert response["status"] == streamed["status"]
    assert response["usage"] == streamed["usage"]


def test_sse_roundtrip_of_translated_events() -> None:
    # What the endpoint writes must parse back to the same events.
    from ccx_asgi.sse import encode_event

    events = replay("parallel_tools.sse")
    assert parse_sse(b"".join(encode_event(e) for e in events)) == events


def test_fake_tool_reply_helper_round_trips() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events: list[dict[str, Any]] = []
    for data in tool_reply([("apply_patch", {"input": PATCH})], reasoning="think").chunks:
        events += translator.feed(data)
    events += translator.finish()
    validate_events(events)
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["reasoning", "custom_tool_call"]


def test_calls_sharing_one_index_but_different_ids_stay_separate() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events: list[dict[str, Any]] = []
    for call_id, cmd in (("call_a", "ls"), ("call_b", "pwd")):
        fragment = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": "exec_command", "arguments": json.dumps({"cmd": cmd})},
        }
        events += translator.feed(chunk({"tool_calls": [fragment]}))
    events += translator.feed(chunk({}, "tool_calls")) + translator.finish()
    validate_events(events)
    calls = events[-1]["response"]["output"]
    assert [(c["call_id"], json.loads(c["arguments"])["cmd"]) for c in calls] == [("call_a", "ls"), ("call_b", "pwd")]


def test_tool_fragments_without_index() -> None:
    translator = ChatStreamTranslator("m", REQUEST)
    events = translator.feed(
        chunk({"tool_calls": [{"id": "c1", "function": {"name": "exec_command", "arguments": '{"cmd":'}}]})
    )
    events += translator.feed(chunk({"tool_calls": [{"function": {"arguments": ' "ls"}'}}]}))
    events += translator.feed(
        chunk({"tool_calls": [{"id": "c2", "function": {"name": "view_image", "arguments": "{}"}}]}, "tool_calls")
    )
    events += translator.finish()
    validate_events(events)
    calls = events[-1]["response"]["output"]
    assert [(c["name"], c["arguments"]) for c in calls] == [("exec_command", '{"cmd": "ls"}'), ("view_image", "{}")]
