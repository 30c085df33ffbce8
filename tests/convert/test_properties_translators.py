"""Property tests for the converting stream translators (Chat Completions and Claude Messages).

Whatever a (broken) upstream sends — valid streams built by ``chat_chunks``/``claude_events``, then
dropped, duplicated, reordered, mixed with unknown event types, non-object JSON and malformed JSON
lines, or cut short — the translator's whole output is a stream the openai SDK accepts with exactly
one terminal event, and it is never ``response.completed`` unless the upstream said it finished.
For unbroken streams the content is checked too: the text, reasoning and tool calls that went in
are the items that come out.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given

from ccx_asgi.convert import chat as chat_dialect
from ccx_asgi.convert import claude as claude_dialect
from ccx_asgi.convert.chat import ChatStreamTranslator
from ccx_asgi.convert.claude import ClaudeStreamTranslator, decode_reasoning
from ccx_asgi.convert.tools import ToolCatalog
from tests.fakes.chat_upstream import completion_from_chunks
from tests.sdk import validate_events, validate_response
from tests.strategies import (
    TRANSLATOR_REQUEST,
    Wire,
    broken,
    chat_chunks,
    claude_events,
    mangled,
    property_settings,
    run_translator,
    wire,
)

FAST = property_settings(300)
_CATALOG = ToolCatalog.from_tools(TRANSLATOR_REQUEST["tools"])


def _delivered(sent: list[Wire]) -> list[dict[str, Any]]:
    """The object events the translator actually received (what ``run_translator`` feeds it)."""
    out = []
    for line in wire(sent):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            out.append(parsed)
    return out


def _chat_finished(chunks: list[dict[str, Any]]) -> bool:
    for data in chunks:
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if isinstance(reason, str) and reason and choice.get("index", 0) == 0:
                return True
    return False


def _claude_finished(events: list[dict[str, Any]]) -> bool:
    for event in events:
        if event.get("type") == "message_stop":
            return True
        delta = event.get("delta")
        if (
            event.get("type") == "message_delta"
            and isinstance(delta, dict)
            and isinstance(delta.get("stop_reason"), str)
        ):
            return True
    return False


def _chat() -> ChatStreamTranslator:
    return ChatStreamTranslator("m", TRANSLATOR_REQUEST, catalog=_CATALOG)


def _claude() -> ClaudeStreamTranslator:
    return ClaudeStreamTranslator("m", TRANSLATOR_REQUEST, catalog=_CATALOG)


# -- Chat Completions ---------------------------------------------------------------------------------


@FAST
@given(chunks=chat_chunks())
def test_chat_streams_translate_faithfully(chunks: list[dict[str, Any]]) -> None:
    out = run_translator(_chat(), wire(list(chunks)))
    validate_events(out)
    terminal = out[-1]
    finish = next(
        (c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]), None
    )
    expected = {None: "response.failed", "length": "response.incomplete", "content_filter": "response.incomplete"}
    assert terminal["type"] == expected.get(finish, "response.completed")
    if finish is None:
        return
    output = terminal["response"]["output"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    reasoning = "".join(d.get("reasoning_content") or d.get("reasoning") or "" for d in deltas)
    assert "".join(p["text"] for i in output if i["type"] == "message" for p in i["content"]) == text
    assert "".join(s["text"] for i in output if i["type"] == "reasoning" for s in i["summary"]) == reasoning
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        for fragment in d.get("tool_calls") or ():
            call = calls.setdefault(fragment["index"], {"arguments": ""})
            call.update({k: v for k, v in fragment.get("function", {}).items() if k == "name" and v})
            call.update({"id": fragment["id"]} if "id" in fragment else {})
            call["arguments"] += fragment["function"].get("arguments", "")
    # Calls appear in the order the upstream started them, each under its own call_id.
    items = {i["call_id"]: i for i in output if i["type"] in ("function_call", "custom_tool_call")}
    assert sorted(items) == sorted(c["id"] for c in calls.values())
    for sent in calls.values():
        item = items[sent["id"]]
        if sent["name"] == "apply_patch":
            assert (item["type"], item["name"]) == ("custom_tool_call", "apply_patch")
            assert item["input"] == orjson.loads(sent["arguments"])["input"]
        else:
            assert item["type"] == "function_call"
            assert item["arguments"] == sent["arguments"]
            if sent["name"] == "multi_agent_v1__spawn_agent":
                assert (item["namespace"], item["name"]) == ("multi_agent_v1", "spawn_agent")
            else:
                assert item["name"] == sent["name"]


@FAST
@given(sent=broken(chat_chunks()))
def test_chat_any_upstream_sequence_gives_a_valid_stream(sent: list[Wire]) -> None:
    out = run_translator(_chat(), wire(sent))
    validate_events(out)
    if out[-1]["type"] == "response.completed":
        assert _chat_finished(_delivered(sent)), "completed although the upstream never finished"


# -- Claude Messages ----------------------------------------------------------------------------------


@FAST
@given(events=claude_events())
def test_claude_streams_translate_faithfully(events: list[dict[str, Any]]) -> None:
    out = run_translator(_claude(), wire(list(events)))
    validate_events(out)
    terminal = out[-1]
    reason = next((e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"), None)
    if events[-1]["type"] == "error" or reason is None:
        assert terminal["type"] == "response.failed"
        return
    expected = "response.incomplete" if reason in ("max_tokens", "refusal") else "response.completed"
    assert terminal["type"] == expected
    output = terminal["response"]["output"]
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    # Empty text blocks open no message; every other block is one item, in order.
    texts: dict[int, str] = {}
    jsons: dict[int, str] = {}
    for e in events:
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta":
            texts[e["index"]] = texts.get(e["index"], "") + e["delta"]["text"]
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta":
            jsons[e["index"]] = jsons.get(e["index"], "") + e["delta"]["partial_json"]
    kept = [(n, b) for n, b in enumerate(starts) if b["type"] != "text" or texts.get(n)]
    assert len(output) == len(kept)
    for item, (n, block) in zip(output, kept, strict=True):
        if block["type"] == "text":
            assert item["content"][0]["text"] == texts[n]
        elif block["type"] in ("thinking", "redacted_thinking"):
            assert item["type"] == "reasoning"
            restored = decode_reasoning(item["encrypted_content"])
            assert restored is not None and restored["type"] == block["type"]
        elif block["name"] == "apply_patch":
            assert item["type"] == "custom_tool_call"
            assert item["input"] == orjson.loads(jsons[n])["input"]
        else:
            assert item["type"] == "function_call" and item["call_id"] == block["id"]
            assert orjson.loads(item["arguments"]) == orjson.loads(jsons.get(n) or "{}")


@FAST
@given(sent=broken(claude_events()))
def test_claude_any_upstream_sequence_gives_a_valid_stream(sent: list[Wire]) -> None:
    out = run_translator(_claude(), wire(sent))
    validate_events(out)
    if out[-1]["type"] == "response.completed":
        assert _claude_finished(_delivered(sent)), "completed although the upstream never finished"


# -- wrong types anywhere inside the events ---------------------------------------------------------


@FAST
@given(sent=broken(mangled(chat_chunks())))
def test_chat_mangled_chunks_give_a_valid_stream(sent: list[Wire]) -> None:
    out = run_translator(_chat(), wire(sent))
    validate_events(out)
    if out[-1]["type"] == "response.completed":
        assert _chat_finished(_delivered(sent)), "completed although the upstream never finished"


@FAST
@given(sent=broken(mangled(claude_events())))
def test_claude_mangled_events_give_a_valid_stream(sent: list[Wire]) -> None:
    out = run_translator(_claude(), wire(sent))
    validate_events(out)
    if out[-1]["type"] == "response.completed":
        assert _claude_finished(_delivered(sent)), "completed although the upstream never finished"


# -- non-streaming answers: the same items as the stream ----------------------------------------------


def _summary(output: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Items without their generated ids, in a stable order (parallel calls may start in any order)."""
    rows: list[tuple[Any, ...]] = []
    for item in output:
        if item["type"] == "message":
            rows.append(("message", item["content"][0]["text"], item["status"]))
        elif item["type"] == "reasoning":
            rows.append(("reasoning", [s["text"] for s in item["summary"]], item.get("encrypted_content") is not None))
        elif item["type"] == "function_call":
            rows.append(("function_call", item["call_id"], item["name"], item.get("namespace"), item["arguments"]))
        else:
            rows.append(("custom_tool_call", item["call_id"], item["name"], item["input"]))
    return sorted(rows, key=repr)


@FAST
@given(chunks=chat_chunks())
def test_chat_non_streaming_answers_match_the_stream(chunks: list[dict[str, Any]]) -> None:
    streamed = run_translator(_chat(), wire(list(chunks)))
    if streamed[-1]["type"] == "response.failed":
        return  # no finish_reason: a non-streaming answer always has one
    # The fake assembles only DeepSeek's spelling; OpenRouter's ``reasoning`` is the same text.
    renamed = [
        {
            **c,
            "choices": [
                {**ch, "delta": {("reasoning_content" if k == "reasoning" else k): v for k, v in ch["delta"].items()}}
                for ch in c["choices"]
            ],
        }
        for c in chunks
    ]
    completion = completion_from_chunks(renamed)
    response = chat_dialect.to_response(completion, model="m", request=TRANSLATOR_REQUEST, catalog=_CATALOG)
    validate_response(response)
    final = streamed[-1]["response"]
    assert response["status"] == final["status"]
    assert _summary(response["output"]) == _summary(final["output"])
    assert response["usage"] == final["usage"]


def _claude_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming Messages answer equivalent to a (finished) event stream."""
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    stop_reason = None
    for event in events:
        if event["type"] == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif event["type"] == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif event["type"] == "message_delta":
            stop_reason = event["delta"]["stop_reason"]
    for index, raw in partial.items():
        blocks[index]["input"] = orjson.loads(raw)
    head = events[0]["message"]
    return {**head, "content": [blocks[i] for i in sorted(blocks)], "stop_reason": stop_reason}


@FAST
@given(events=claude_events())
def test_claude_non_streaming_answers_match_the_stream(events: list[dict[str, Any]]) -> None:
    streamed = run_translator(_claude(), wire(list(events)))
    if streamed[-1]["type"] == "response.failed":
        return  # an error event or a cut stream: no non-streaming answer exists
    response = claude_dialect.to_response(
        _claude_message(events), model="m", request=TRANSLATOR_REQUEST, catalog=_CATALOG
    )
    validate_response(response)
    final = streamed[-1]["response"]
    assert response["status"] == final["status"]
    assert _summary(response["output"]) == _summary(final["output"])
