"""Responses request → Claude Messages request, from recorded Codex bodies and targeted cases.

Every converted body is also checked by the strict fake's validator (the same rules the real API
applies), so a converter that produces something Claude would reject fails here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ccx_asgi.convert.claude import ClaudeOptions, encode_reasoning, to_request
from ccx_asgi.convert.effort import DEFAULT_THINKING_BUDGETS
from ccx_asgi.errors import InvalidRequestError
from ccx_asgi.settings import ChannelConfig
from tests.fakes.claude_upstream import Rejected, check_request, sign
from tests.paths import FIXTURES, codex_bodies

RECORDED = codex_bodies()
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def convert(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    out = to_request(body, model="claude-sonnet-4-5", options=ClaudeOptions(**options))
    check_request(out)
    return out


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"] for b in blocks if b["type"] == "text"]


def signed(thinking: str) -> dict[str, Any]:
    """A reasoning item as a Claude channel emitted it (signature from the fake's key)."""
    block = {"type": "thinking", "thinking": thinking, "signature": sign(thinking)}
    return {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": thinking}],
        "encrypted_content": encode_reasoning(block),
    }


@pytest.mark.skipif(not RECORDED, reason="recorded Codex bodies not available")
@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_codex_bodies_convert_to_valid_requests(path: Path) -> None:
    body = json.loads(path.read_text())
    original = copy.deepcopy(body)
    out = convert(body)
    assert body == original, "the converter must not mutate its input"
    developer = [
        part["text"]
        for item in body["input"]
        if item.get("role") == "developer"
        for part in item["content"]
        if part["text"].strip()
    ]
    assert texts(out["system"]) == developer
    assert out["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all(m["role"] in ("user", "assistant") for m in out["messages"])
    assert out["max_tokens"] == 32000
    names = [t["name"] for t in out["tools"]]
    assert "exec_command" in names and "apply_patch" in names
    assert "web_search" not in names and "tool_search" not in names
    patch = next(t for t in out["tools"] if t["name"] == "apply_patch")
    assert patch["input_schema"]["required"] == ["input"]
    assert "*** Begin Patch" in patch["description"]  # the grammar travels in the description
    assert out["tool_choice"] == {"type": "auto"}
    if any(t["type"] == "namespace" for t in body["tools"]):
        assert "multi_agent_v1__spawn_agent" in names
    calls = [i for i in body["input"] if i.get("type") == "function_call"]
    if calls:
        assistant, result = out["messages"][-2:]
        tool_use = next(b for b in assistant["content"] if b["type"] == "tool_use")
        assert tool_use["id"] == calls[0]["call_id"]
        assert tool_use["input"] == json.loads(calls[0]["arguments"])
        assert result["content"][0]["type"] == "tool_result"
        assert result["content"][0]["tool_use_id"] == calls[0]["call_id"]
    # The OpenAI reasoning item ("gAAAA…") cannot be replayed to Claude: dropped, never forged.
    assert not any(b["type"] == "thinking" for m in out["messages"] for b in m["content"])


def test_effort_maps_to_thinking_and_follows_max_tokens() -> None:
    body = {"model": "m", "input": "hi", "reasoning": {"effort": "high"}}
    assert convert(body)["thinking"] == {"type": "enabled", "budget_tokens": 24000}
    assert convert({**body, "max_output_tokens": 5000})["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    small = convert({**body, "max_output_tokens": 1000})
    assert "thinking" not in small and small["max_tokens"] == 1000
    assert "thinking" not in convert({**body, "reasoning": {"effort": "none"}})
    assert "thinking" not in convert({**body, "reasoning": {"summary": "auto"}})
    budgets = {"high": 2048}
    assert convert(body, thinking_budgets=budgets)["thinking"]["budget_tokens"] == 2048
    assert convert({"model": "m", "input": "hi"}, default_max_tokens=777)["max_tokens"] == 777


def test_sampling_is_sent_without_thinking_only() -> None:
    body = {"model": "m", "input": "hi", "temperature": 1.7, "top_p": 0.9}
    plain = convert(body)
    assert (plain["temperature"], plain["top_p"]) == (1.0, 0.9)
    thinking = convert({**body, "reasoning": {"effort": "low"}})
    assert "temperature" not in thinking and "top_p" not in thinking


def test_signed_reasoning_is_replayed_first_in_its_turn() -> None:
    body = {
        "model": "m",
        "reasoning": {"effort": "medium"},
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "make the file"}]},
            signed("I should call the tool."),
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
            {"type": "function_call", "call_id": "toolu_1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
            {"type": "function_call_output", "call_id": "toolu_1", "output": "ok"},
        ],
    }
    out = convert(body)
    assistant = out["messages"][1]
    assert [b["type"] for b in assistant["content"]] == ["thinking", "text", "tool_use"]
    assert assistant["content"][0]["signature"] == sign("I should call the tool.")
    assert out["thinking"]["budget_tokens"] == 10000


def test_foreign_reasoning_is_dropped_and_thinking_is_not_forced_on_its_tool_turn() -> None:
    body = {
        "model": "m",
        "reasoning": {"effort": "medium"},
        "input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "gAAAAAB-openai"},
            {"type": "reasoning", "id": "rs_y", "summary": [], "content": [{"type": "reasoning_text", "text": "x"}]},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "done"},
        ],
    }
    out = convert(body)
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use"]
    assert "thinking" not in out  # Claude would reject thinking here: the tool turn has no signed block


def test_messages_alternate_with_merged_turns_and_no_empty_text() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "system", "content": "System rule."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "  "}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Dev rule."}]},
            {"type": "message", "role": "user", "content": "two"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "three"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "four"}]},
        ],
    }
    out = convert(body, prompt_caching=False)
    assert texts(out["system"]) == ["Be brief.", "System rule.", "Dev rule."]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert texts(out["messages"][0]["content"]) == ["one", "two"]
    assert texts(out["messages"][1]["content"]) == ["three", "four"]
    assert "cache_control" not in out["system"][-1]


def test_input_string_and_conversation_starting_with_assistant() -> None:
    assert convert({"model": "m", "input": "hello"})["messages"][0]["content"][0]["text"] == "hello"
    out = convert({"model": "m", "input": [{"type": "message", "role": "assistant", "content": "earlier"}]})
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]


def test_nothing_to_send_is_a_client_error() -> None:
    with pytest.raises(InvalidRequestError):
        to_request({"model": "m", "input": [{"type": "message", "role": "developer", "content": "x"}]}, model="m")


def test_images_as_base64_and_url_sources() -> None:
    content = [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "high"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
    ]
    out = convert({"model": "m", "input": [{"type": "message", "role": "user", "content": content}]})
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert len(blocks) == 3
    # What Claude cannot take is a 400 naming the part, never a silent drop (issue 14).
    for bad, words in [
        ({"type": "input_image", "image_url": "data:application/pdf;base64,AAAA"}, "JPEG, PNG"),
        ({"type": "input_image", "file_id": "file_1"}, "'file_1'"),
    ]:
        with pytest.raises(InvalidRequestError) as caught:
            convert({"model": "m", "input": [{"type": "message", "role": "user", "content": [*content, bad]}]})
        assert caught.value.param == "input[0].content[3]" and words in caught.value.message


def test_parallel_calls_custom_namespace_and_image_outputs() -> None:
    body = {
        "model": "m",
        "tools": json.loads((FIXTURES / "claude" / "codex_tools.json").read_text()),
        "input": [
            {"type": "message", "role": "user", "content": "do three things"},
            {"type": "function_call", "call_id": "call:1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch\n"},
            {
                "type": "function_call",
                "call_id": "call_3",
                "name": "close_agent",
                "namespace": "multi_agent_v1",
                "arguments": "not json",
            },
            {"type": "function_call_output", "call_id": "call:1", "output": ""},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Success"},
            {
                "type": "function_call_output",
                "call_id": "call_3",
                "output": [
                    {"type": "input_text", "text": "screenshot:"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                ],
            },
        ],
    }
    out = convert(body)
    uses = out["messages"][1]["content"]
    assert [(u["id"], u["name"]) for u in uses] == [
        ("call_1", "exec_command"),
        ("call_2", "apply_patch"),
        ("call_3", "multi_agent_v1__close_agent"),
    ]
    assert uses[1]["input"] == {"input": "*** Begin Patch\n"}
    assert uses[2]["input"] == {}
    results = out["messages"][2]["content"]
    assert [r["tool_use_id"] for r in results] == ["call_1", "call_2", "call_3"]
    assert "content" not in results[0]  # empty output: no empty text block
    assert results[1]["content"] == "Success"
    assert [p["type"] for p in results[2]["content"]] == ["text", "image"]


def test_interrupted_and_orphan_tool_calls_still_make_a_valid_request() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "message", "role": "user", "content": "never mind"},
            {"type": "function_call_output", "call_id": "c1", "output": "late"},
            {"type": "function_call_output", "call_id": "ghost", "output": "who?"},
        ],
    }
    out = convert(body)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    last = out["messages"][2]["content"]
    # The late output moved up to its call (the message in between follows it); the ghost's text is kept.
    assert last[0] == {"type": "tool_result", "tool_use_id": "c1", "content": "late"}
    assert [b["type"] for b in last[1:]] == ["text", "text"]
    assert last[1]["text"] == "never mind" and "who?" in last[2]["text"]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", True, {"type": "auto"}),
        ("required", True, {"type": "any"}),
        ("none", False, {"type": "none"}),
        ({"type": "function", "name": "exec_command"}, True, {"type": "tool", "name": "exec_command"}),
        ({"type": "function", "name": "missing"}, True, {"type": "auto"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_table(choice: Any, parallel: bool, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}]
    body = {"model": "m", "input": "x", "tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}
    assert convert(body)["tool_choice"] == expected


def test_forced_tool_choice_turns_thinking_off() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    body = {"model": "m", "input": "x", "tools": tools, "tool_choice": "required", "reasoning": {"effort": "low"}}
    out = convert(body)
    assert out["tool_choice"] == {"type": "any"} and "thinking" not in out


def test_hosted_tools_only_means_no_tools_and_no_choice() -> None:
    out = convert({"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"})
    assert "tools" not in out and "tool_choice" not in out


def test_only_known_fields_are_sent() -> None:
    body = json.loads(RECORDED[0].read_text()) if RECORDED else {"model": "m", "input": "x"}
    body = {**body, "user": "u-1", "store": False, "text": {"format": {"type": "text"}}, "service_tier": "flex"}
    out = convert(body)
    assert set(out) <= {
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "stream",
    }
    assert out["metadata"] == {"user_id": "u-1"}


def test_the_fake_rejects_what_claude_rejects() -> None:
    """The strict fake is only useful if it really refuses bad requests."""
    good: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
    }
    check_request(good)
    bad = [
        {**good, "input": "x"},
        {**good, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        {**good, "messages": good["messages"] * 2},
        {**good, "messages": [*good["messages"], {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
        {
            **good,
            "messages": [
                *good["messages"],
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "forged"}, {"type": "text", "text": "y"}]},
            ],
        },
        {**good, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        {**good, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}]},
    ]  # fmt: skip
    for body in bad:
        with pytest.raises(Rejected):
            check_request(body)


def test_late_thinking_moves_to_the_front_of_its_turn() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            signed("first"),
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
    }
    out = convert(body)
    assert [b["type"] for b in out["messages"][1]["content"]] == ["thinking", "tool_use"]


def test_channel_options_are_validated() -> None:
    base = {"name": "c", "service_type": "claude", "base_url": "https://api.anthropic.com/v1"}
    config = ChannelConfig.model_validate({**base, "thinking_budgets": {"high": 8000}})
    assert config.thinking_budgets == {"high": 8000}
    assert config.anthropic_version == "2023-06-01" and config.default_max_tokens == 32000
    for bad in ({"thinking_budgets": {"high": 10}}, {"thinking_budgets": {"huge": 9000}}, {"default_max_tokens": 0}):
        with pytest.raises(ValidationError):
            ChannelConfig.model_validate({**base, **bad})


def test_thinking_only_turns_are_not_sent() -> None:
    out = convert(
        {
            "model": "m",
            "input": [
                {"type": "message", "role": "user", "content": "one"},
                signed("thought, then the answer was lost"),
                {"type": "message", "role": "user", "content": "two"},
            ],
        }
    )
    assert [m["role"] for m in out["messages"]] == ["user"]
    assert [b["text"] for b in out["messages"][0]["content"]] == ["one", "two"]


def test_pdf_files_become_document_blocks() -> None:
    content = [
        {"type": "input_text", "text": "summarise"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQK"},
        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
    ]
    blocks = convert({"model": "m", "input": [{"type": "message", "role": "user", "content": content}]})["messages"][0][
        "content"
    ]
    assert blocks[1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
        "title": "a.pdf",
    }
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/b.pdf"}
    assert len(blocks) == 3
    # An uploaded-file id, another file type and audio are 400s naming the part (issue 14).
    for bad, words in [
        ({"type": "input_file", "file_id": "file_123"}, "'file_123'"),
        ({"type": "input_file", "filename": "n.txt", "file_data": "data:text/plain;base64,aGk="}, "must be a PDF"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "no audio"),
    ]:
        with pytest.raises(InvalidRequestError) as caught:
            convert({"model": "m", "input": [{"type": "message", "role": "user", "content": [*content, bad]}]})
        assert caught.value.param == "input[0].content[3]" and words in caught.value.message


def test_a_repeated_tool_output_gives_one_tool_result() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "first"},
            {"type": "function_call_output", "call_id": "c1", "output": "again"},
        ],
    }
    results = convert(body)["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "text"]
    assert results[0]["content"] == "first" and "again" in results[1]["text"]


def test_additional_tools_items_offer_tools_like_plain_tools() -> None:
    """Codex's "responses lite" shape moves tools into an input item; Claude must still see them."""
    from ccx_asgi.convert.claude import to_request as convert

    tool = {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}
    body = {
        "model": "m",
        "input": [
            {"type": "additional_tools", "tools": [tool]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run it"}]},
        ],
    }
    request = convert(body, model="claude-x")
    assert [t["name"] for t in request["tools"]] == ["exec_command"]
    assert all(m["role"] in ("user", "assistant") for m in request["messages"])
    assert "additional_tools" not in str(request["messages"])


def test_options_are_read_from_the_channel_once_per_channel_config() -> None:
    config = ChannelConfig(
        name="c",
        service_type="claude",
        base_url="https://api.anthropic.com/v1",
        default_max_tokens=4096,
        thinking_budgets={"high": 8000},
        prompt_caching=False,
        claude_thinking="budget",
    )
    options = ClaudeOptions.from_channel(config)
    assert options == ClaudeOptions(
        default_max_tokens=4096,
        thinking_budgets={**DEFAULT_THINKING_BUDGETS, "high": 8000},
        prompt_caching=False,
        thinking="budget",
    )
    for option in fields(ClaudeOptions):
        assert {option.name, f"claude_{option.name}"} & set(ChannelConfig.model_fields)
    assert ClaudeOptions.from_channel(config) is options  # built once, not per request
    assert ClaudeOptions.from_channel(config.model_copy()) is not options
    assert (
        ClaudeOptions.from_channel(ChannelConfig(name="d", service_type="claude", base_url="https://x/v1"))
        == ClaudeOptions()
    )
    out = to_request({"model": "m", "input": "hi", "reasoning": {"effort": "high"}}, model="claude-x", options=options)
    assert out["max_tokens"] == 4096 and out["thinking"] == {"type": "enabled", "budget_tokens": 4095}


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt", {"id": "pmpt_1"}), ("conversation", "conv_1"), ("background", True), ("background", "yes")],
)
def test_fields_whose_state_lives_at_openai_are_a_400(field: str, value: Any) -> None:
    # The converter on its own refuses them too (the stateful layer filters them in the app), so a
    # host that composes its own pipeline never gets an answer that ignored one.
    with pytest.raises(InvalidRequestError) as caught:
        to_request({"model": "m", "input": "x", field: value}, model="claude-sonnet-4-5")
    assert caught.value.param == field and caught.value.status == 400
    assert "background" not in convert({"model": "m", "input": "x", "background": False})
