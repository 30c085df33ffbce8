"""Claude adaptive thinking (``reasoning.effort`` per model and per channel mode) and structured outputs.

The strict fake knows, model by model, what Anthropic documents: Opus 4.7+ / 5.x / Mythos / Fable
take only ``thinking: {type: adaptive}`` with ``output_config.effort`` and refuse sampling
parameters; Opus/Sonnet 4.6 take both forms (the budget one deprecated); older models only the
budget. Every request built here is checked by it, and the thinking signature round trip is run
through the app on an adaptive-only model.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from ccx_asgi import ChannelConfig
from ccx_asgi.convert.claude import ClaudeModel, ClaudeOptions, to_request
from ccx_asgi.errors import InvalidRequestError
from tests.conftest import AppFactory, channel
from tests.fakes.claude_upstream import FakeClaudeUpstream, Rejected, Reply, check_request
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response

EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def convert(body: dict[str, Any], model: str, **options: Any) -> dict[str, Any]:
    out = to_request({"model": "gpt-5", "input": "hi", **body}, model=model, options=ClaudeOptions(**options))
    check_request(out)
    return out


@pytest.mark.parametrize(
    ("model", "style", "xhigh"),
    [
        ("claude-opus-4-7", "adaptive_only", "xhigh"),
        ("claude-opus-4-8", "adaptive_only", "xhigh"),
        ("claude-opus-5", "adaptive_only", "xhigh"),
        ("claude-sonnet-5-20261001", "adaptive_only", "xhigh"),
        ("claude-haiku-5-5", "adaptive_only", "high"),
        ("anthropic.claude-opus-4-7", "adaptive_only", "xhigh"),
        ("claude-mythos-preview", "adaptive_only", "max"),
        ("claude-fable-5-1", "adaptive_only", "xhigh"),
        ("claude-opus-4-6", "adaptive", "max"),
        ("anthropic.claude-opus-4-6-v1", "adaptive", "max"),
        ("claude-sonnet-4-6", "adaptive", "max"),
        ("claude-sonnet-4-5-20250929", "budget", "high"),
        ("claude-opus-4-5", "budget", "high"),
        ("claude-opus-4-20250514", "budget", "high"),
        ("claude-3-7-sonnet-latest", "budget", "high"),
        # A date after the family is not a version (read as 20, it made 3.x models adaptive-only).
        ("claude-3-7-sonnet-20250219", "budget", "high"),
        ("anthropic.claude-3-7-sonnet-20250219-v1:0", "budget", "high"),
        ("claude-3-5-sonnet-20241022", "budget", "high"),
        ("claude-3-5-haiku@20241022", "budget", "high"),
        ("claude-haiku-4-5", "budget", "high"),
        ("my-proxy-model", "budget", "high"),
    ],
)
def test_model_table(model: str, style: str, xhigh: str) -> None:
    assert ClaudeModel.from_id(model) == ClaudeModel(style, xhigh)  # type: ignore[arg-type]


def test_the_fake_rejects_a_budget_on_opus_4_7_and_sampling_there() -> None:
    base = {"model": "claude-opus-4-7", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(Rejected, match=r"thinking\.type\.enabled"):
        check_request({**base, "thinking": {"type": "enabled", "budget_tokens": 10000}})
    with pytest.raises(Rejected, match="temperature"):
        check_request({**base, "temperature": 0.5})
    with pytest.raises(Rejected, match="adaptive"):
        check_request({**base, "model": "claude-sonnet-4-5", "thinking": {"type": "adaptive"}})
    with pytest.raises(Rejected, match="xhigh"):
        check_request({**base, "model": "claude-sonnet-4-6", "output_config": {"effort": "xhigh"}})
    check_request({**base, "thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}})


@pytest.mark.parametrize(
    ("model", "effort", "sent"),
    [
        ("claude-opus-4-7", "medium", "medium"),
        ("claude-opus-4-7", "minimal", "low"),
        ("claude-opus-4-7", "xhigh", "xhigh"),
        ("claude-sonnet-4-6", "high", "high"),
        ("claude-sonnet-4-6", "xhigh", "max"),  # 4.6 has no xhigh; max is the level above high
        ("claude-mythos-preview", "xhigh", "max"),
        ("claude-haiku-5-5", "xhigh", "high"),  # Haiku has neither xhigh nor max
    ],
)
def test_effort_becomes_adaptive_thinking_where_the_model_takes_it(model: str, effort: str, sent: str) -> None:
    out = convert({"reasoning": {"effort": effort}, "temperature": 0.2}, model)
    assert out["thinking"] == {"type": "adaptive"}
    assert out["output_config"] == {"effort": sent}
    assert "temperature" not in out


def test_older_models_keep_the_budget_and_sampling_follows_the_model() -> None:
    out = convert({"reasoning": {"effort": "medium"}}, "claude-sonnet-4-5")
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 10000}
    assert "output_config" not in out
    # Without thinking: 4.6 still takes temperature; adaptive-only models refuse it (dropped on purpose).
    assert convert({"temperature": 0.3}, "claude-sonnet-4-6")["temperature"] == 0.3
    plain = convert({"temperature": 0.3, "top_p": 0.5}, "claude-opus-4-7")
    assert "temperature" not in plain and "top_p" not in plain and "thinking" not in plain


def test_channel_mode_forces_a_form_or_turns_thinking_off() -> None:
    body = {"reasoning": {"effort": "high"}}
    assert convert(body, "claude-sonnet-4-6", thinking="budget")["thinking"]["type"] == "enabled"
    forced = to_request(
        {"model": "m", "input": "hi", **body}, model="my-proxy-model", options=ClaudeOptions(thinking="adaptive")
    )
    assert (forced["thinking"], forced["output_config"]) == ({"type": "adaptive"}, {"effort": "high"})
    off = convert(body, "claude-opus-4-7", thinking="off")
    assert "thinking" not in off and "output_config" not in off
    assert ChannelConfig.model_validate(channel(service_type="claude", claude_thinking="off")).claude_thinking == "off"
    with pytest.raises(ValidationError):
        ChannelConfig.model_validate(channel(service_type="claude", claude_thinking="always"))


def test_adaptive_thinking_stays_on_for_a_tool_turn_without_thinking() -> None:
    # Adaptive thinking is optional for the model, so Claude accepts a tool turn it answered without
    # thinking; the budget form would have to be switched off there.
    body = {
        "reasoning": {"effort": "medium"},
        "tools": [EXEC],
        "input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "done"},
        ],
    }
    assert convert(body, "claude-opus-4-7")["thinking"] == {"type": "adaptive"}
    assert "thinking" not in convert(body, "claude-sonnet-4-5")
    # A forced tool choice excludes thinking in both forms; the effort still steers the answer.
    forced = convert({**body, "tool_choice": "required"}, "claude-opus-4-7")
    assert "thinking" not in forced and forced["output_config"] == {"effort": "medium"}
    assert "thinking" not in convert({**body, "tool_choice": "required"}, "claude-sonnet-4-5")


# -- structured outputs ------------------------------------------------------------------------------


def test_json_schema_becomes_output_config_format() -> None:
    text = {"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}}
    out = convert({"text": text, "reasoning": {"effort": "low"}}, "claude-opus-4-7")
    assert out["output_config"] == {"effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}}
    plain = convert({"text": {"format": {"type": "text"}, "verbosity": "low"}}, "claude-sonnet-4-5")
    assert "output_config" not in plain


def test_json_object_and_a_schemaless_json_schema_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_request({"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}}, model="claude-opus-4-7")
    assert caught.value.param == "text.format" and "json_object" in caught.value.message
    with pytest.raises(InvalidRequestError) as caught:
        to_request({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema"}}}, model="claude-opus-4-7")
    assert caught.value.param == "text.format.schema"


# -- through the app ---------------------------------------------------------------------------------


def _claude(**fields: Any) -> dict[str, Any]:
    return channel("claude", service_type="claude", base_url="https://claude.test/v1", **fields)


async def test_opus_4_7_tool_loop_with_adaptive_thinking_round_trips_the_signature(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    def script(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"][0]
        if last["type"] == "tool_result":
            assert body["messages"][-2]["content"][0]["type"] == "thinking"  # replayed, signature checked
            return Reply([{"type": "text", "text": "done"}])
        return Reply(
            [
                {"type": "thinking", "thinking": "Run ls first."},
                {"type": "tool_use", "name": "exec_command", "input": {"cmd": "ls"}},
            ],
            stop_reason="tool_use",
        )

    fake = FakeClaudeUpstream(script=script)
    app = make_app([_claude(model_map={"gpt-5": "claude-opus-4-7"})], transport=httpx.ASGITransport(app=fake))
    client = client_for(app)
    body = {"model": "gpt-5", "stream": True, "store": False, "reasoning": {"effort": "high"}, "tools": [EXEC]}
    first = await client.post("/responses", json={**body, "input": "list files"})
    events = parse_sse(first.content)
    validate_events(events)
    output = events[-1]["response"]["output"]
    assert [i["type"] for i in output] == ["reasoning", "function_call"]
    call = output[1]
    second = await client.post(
        "/responses",
        json={
            **body,
            "input": [
                {"type": "message", "role": "user", "content": "list files"},
                *output,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt"},
            ],
        },
    )
    events = parse_sse(second.content)
    validate_events(events)
    assert events[-1]["type"] == "response.completed", fake.rejections
    assert fake.rejections == []
    sent = [r.body for r in fake.requests]
    assert all(b["thinking"] == {"type": "adaptive"} and b["output_config"] == {"effort": "high"} for b in sent)


async def test_structured_output_through_the_app_and_json_object_is_a_400(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    fake = FakeClaudeUpstream(script=lambda body: Reply([{"type": "text", "text": '{"answer": "42"}'}]))
    app = make_app([_claude(model_map={"gpt-5": "claude-sonnet-4-5"})], transport=httpx.ASGITransport(app=fake))
    client = client_for(app)
    fmt = {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}
    response = await client.post("/responses", json={"model": "gpt-5", "input": "?", "text": {"format": fmt}})
    assert response.status_code == 200, response.text
    validate_response(response.json())
    assert response.json()["output"][0]["content"][0]["text"] == '{"answer": "42"}'
    assert fake.requests[-1].body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    refused = await client.post(
        "/responses", json={"model": "gpt-5", "input": "?", "text": {"format": {"type": "json_object"}}}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "text.format"
    assert len(fake.requests) == 1
