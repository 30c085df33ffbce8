"""The first complete path, in process: a Responses request through the demo channel."""

from __future__ import annotations

from tests.conftest import AppFactory
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response


async def test_demo_channel_streams_a_valid_tool_call(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app([{"name": "demo", "service_type": "demo"}]))
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}]
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True, "tools": tools})
    assert response.status_code == 200
    assert response.headers["x-ccx-channel"] == "demo"
    events = parse_sse(response.content)
    validate_events(events)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"][0]["type"] == "function_call"
    assert final["output"][0]["name"] == "exec_command"


async def test_demo_channel_answers_json(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app([{"name": "demo", "service_type": "demo"}]))
    response = await client.post("/responses", json={"model": "m", "input": "hello there"})
    assert response.status_code == 200
    parsed = validate_response(response.json())
    assert "hello there" in parsed.output_text
