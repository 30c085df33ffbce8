"""The real Codex CLI through a chat channel: Responses → Chat Completions → Responses, over real HTTP.

The strict fake Chat upstream runs on uvicorn as DeepSeek would behave in thinking mode: it rejects
the ``developer`` role (the channel normalises roles) and demands ``reasoning_content`` back on
tool-call turns. Codex gets a model catalog entry with the freeform ``apply_patch`` tool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, load_settings
from ccx_asgi.__main__ import build_standalone
from ccx_asgi.types import Receive, Scope, Send
from tests.e2e.codex import CodexRun, catalog_entry, run_codex
from tests.fakes.chat_upstream import (
    CODE_MODE_JS,
    PATCH,
    FakeChatUpstream,
    apply_patch_script,
    code_mode_script,
    shell_script,
)
from tests.servers import serve

pytestmark = pytest.mark.e2e

MODEL = "chat-model"


class RequestRecorder:
    """Pure-ASGI wrapper that keeps the JSON body of every ``POST …/responses`` Codex sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/responses"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        self.bodies.append(orjson.loads(raw))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


def run_through_chat(
    fake: FakeChatUpstream, prompt: str, work: Path, *, slug: str = MODEL
) -> tuple[CodexRun, RequestRecorder]:
    """One Codex turn through a chat channel; ``slug`` other than :data:`MODEL` uses Codex's own catalog."""
    with serve(fake) as upstream_url:
        settings = load_settings(
            proxy_access_key="client-key",
            channels=[
                ChannelConfig(
                    name="deepseek-like",
                    service_type="chat",
                    base_url=upstream_url,
                    api_keys=[SecretStr("sk-upstream")],
                    model_map={slug: "deepseek-reasoner"},
                    normalize_roles=True,
                )
            ],
        )
        gateway = RequestRecorder(build_standalone(settings))
        catalog = [catalog_entry(MODEL)] if slug == MODEL else None
        with serve(gateway) as url:
            run = run_codex(f"{url}/v1", "client-key", slug, prompt, work, catalog=catalog)
    return run, gateway


def test_codex_runs_a_shell_command_through_a_chat_channel(tmp_path: Path) -> None:
    fake = FakeChatUpstream(
        keys=("sk-upstream",), script=shell_script, strict_roles=True, require_reasoning_content=True
    )
    work = tmp_path / "work"
    work.mkdir()
    run, gateway = run_through_chat(fake, "Run the marker command.", work)
    assert run.returncode == 0, run.explain()
    assert (work / "ccx_chat_marker.txt").read_text().strip() == "ccx-chat-42"
    commands = run.items("command_execution")
    assert commands and "ccx-chat-42" in commands[0]["aggregated_output"], run.explain()
    messages = run.items("agent_message")
    assert messages and "ccx-chat-42" in messages[-1]["text"], run.explain()
    assert len(fake.requests) == 2, [r.body["messages"][-1:] for r in fake.requests]
    first, second = (r.body for r in fake.requests)
    assert first["model"] == "deepseek-reasoner"
    assert {m["role"] for m in first["messages"]} <= {"system", "user"}
    assert fake.requests[0].headers["authorization"] == "Bearer sk-upstream"
    call_message = next(m for m in second["messages"] if m.get("tool_calls"))
    assert call_message["reasoning_content"] == "I should run the command."
    tool = second["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == call_message["tool_calls"][0]["id"]
    assert "ccx-chat-42" in tool["content"]
    # What Codex sent the gateway on turn 2: the function_call it got from us, with our ids.
    turn2 = gateway.bodies[1]["input"]
    fc = next(i for i in turn2 if i.get("type") == "function_call")
    assert fc["name"] == "exec_command" and fc["call_id"] == call_message["tool_calls"][0]["id"]


def test_codex_applies_a_freeform_patch_through_a_chat_channel(tmp_path: Path) -> None:
    fake = FakeChatUpstream(keys=("sk-upstream",), script=apply_patch_script, strict_roles=True)
    work = tmp_path / "work"
    work.mkdir()
    run, gateway = run_through_chat(fake, "Create hello.txt.", work)
    assert run.returncode == 0, run.explain()
    assert (work / "hello.txt").read_text() == "hello\n", run.explain()
    assert run.items("file_change"), run.explain()
    # Turn 1 offered apply_patch as a one-string function; Codex's turn 2 carries a custom tool output.
    tools = {t["function"]["name"]: t["function"] for t in fake.requests[0].body["tools"]}
    assert tools["apply_patch"]["parameters"]["required"] == ["input"]
    turn2: list[dict[str, Any]] = gateway.bodies[1]["input"]
    call = next(i for i in turn2 if i.get("type") == "custom_tool_call")
    assert call["name"] == "apply_patch" and call["input"] == PATCH
    output = next(i for i in turn2 if i.get("type") == "custom_tool_call_output")
    assert output["call_id"] == call["call_id"]
    # …and upstream it is again an apply_patch call with its tool answer.
    second = fake.requests[1].body["messages"]
    calls = next(m for m in second if m.get("tool_calls"))["tool_calls"]
    assert calls[0]["function"]["name"] == "apply_patch"
    assert json.loads(calls[0]["function"]["arguments"]) == {"input": PATCH}
    tool = next(m for m in second if m["role"] == "tool")
    assert tool["tool_call_id"] == call["call_id"]
    assert "hello.txt" in tool["content"]


def test_codex_gpt_6_sol_runs_a_command_through_code_mode_on_a_chat_channel(tmp_path: Path) -> None:
    # gpt-6-sol is "responses lite" for Codex: no top-level tools, the code-mode tool `exec` is a
    # custom member of the `functions` namespace in an additional_tools item.
    fake = FakeChatUpstream(keys=("sk-upstream",), script=code_mode_script, strict_roles=True)
    work = tmp_path / "work"
    work.mkdir()
    run, gateway = run_through_chat(fake, "Run the marker command.", work, slug="gpt-6-sol")
    assert run.returncode == 0, run.explain()
    assert (work / "ccx_code_marker.txt").read_text().strip() == "ccx-code-42", run.explain()
    turn1 = gateway.bodies[0]
    assert "tools" not in turn1 or not turn1["tools"]
    assert any(i.get("type") == "additional_tools" for i in turn1["input"])
    tools = {t["function"]["name"]: t["function"] for t in fake.requests[0].body["tools"]}
    assert tools["functions__exec"]["parameters"]["required"] == ["input"]
    assert "functions__wait" in tools and "clock__sleep" in tools
    # Codex got a custom_tool_call with its namespace back and ran the script.
    call = next(i for i in gateway.bodies[1]["input"] if i.get("type") == "custom_tool_call")
    assert (call["name"], call.get("namespace"), call["input"]) == ("exec", "functions", CODE_MODE_JS)
    output = next(i for i in gateway.bodies[1]["input"] if i.get("type") == "custom_tool_call_output")
    assert output["call_id"] == call["call_id"]
    assert "ccx-code-42" in json.dumps(output["output"])
    messages = run.items("agent_message")
    assert messages and "ccx-code-42" in messages[-1]["text"], run.explain()
