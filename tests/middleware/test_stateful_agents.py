"""openai-agents with ``auto_previous_response_id=True``: a tool loop whose later turns carry only
the tool's output, on chat (DeepSeek's thinking mode), claude and native responses channels,
streaming and not."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import AppFactory
from tests.stateful_helpers import channel_for, routed, sdk, upstream_for

CALLS: list[str] = []


class Recorder:
    """Wraps the gateway and keeps every request body a client sent it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = b""

        async def recorded() -> Any:
            nonlocal raw
            message = await receive()
            raw += message.get("body", b"")
            if message["type"] == "http.request" and not message.get("more_body"):
                self.bodies.append(orjson.loads(raw) if raw else {})
            return message

        await self.app(scope, recorded, send)


@function_tool
def get_weather(city: str) -> str:
    """The weather in ``city``."""
    CALLS.append(city)
    return "sunny, 21C"


@pytest.mark.parametrize("stream", [False, True], ids=["run", "streamed"])
@pytest.mark.parametrize("kind", ["chat", "claude", "responses"])
async def test_agent_tool_loop_with_automatic_chaining(make_app: AppFactory, kind: str, stream: bool) -> None:
    fake = upstream_for(kind)
    app = make_app([channel_for(kind)], transport=routed(**{kind: fake}))
    gateway = Recorder(app)
    client = sdk(gateway)
    CALLS.clear()
    agent: Agent[Any] = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="gpt-x", openai_client=client),
    )
    config = RunConfig(tracing_disabled=True)
    try:
        if stream:
            result: Any = Runner.run_streamed(
                agent, "Weather in Paris?", run_config=config, auto_previous_response_id=True, max_turns=4
            )
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(
                agent, "Weather in Paris?", run_config=config, auto_previous_response_id=True, max_turns=4
            )
        assert result.final_output == "The weather is sunny, 21C."
        assert CALLS == ["Paris"]
        sent = gateway.bodies
        assert len(sent) == 2 and "previous_response_id" not in sent[0]
        assert sent[1]["previous_response_id"]
        assert [i["type"] for i in sent[1]["input"]] == ["function_call_output"]
        if kind == "responses":
            # The native upstream resolved the chain itself, on the key that holds it.
            second = fake.requests[-1].body
            assert len(fake.requests) == 2
            assert second["previous_response_id"] == sent[1]["previous_response_id"]
            return
        first, second = (r.body for r in fake.requests)
        # The agent sent only the tool output on its second turn; the upstream got the whole chain.
        roles = [m["role"] for m in second["messages"]]
        if kind == "chat":
            assert roles == ["system", "user", "assistant", "tool"]
            assert second["messages"][2]["reasoning_content"] == "I need the weather tool."
        else:
            assert roles == ["user", "assistant", "user"]
            assert second["system"] == first["system"]
    finally:
        await client.close()
        await app.aclose()
