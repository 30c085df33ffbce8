"""The real Codex CLI through a claude channel, against the strict fake Messages API over real HTTP.

Two Codex runs, each a full agent loop (gateway and fake both on uvicorn):

- a shell turn with thinking enabled: Claude thinks (signed) and calls ``exec_command``; Codex runs
  it and sends the tool output back. The second Messages request must carry the thinking block
  with its valid signature (the fake verifies it and the script insists it is there);
- an ``apply_patch`` turn: Claude calls the freeform tool with a patch; Codex applies it and the
  file exists;
- Codex's gpt-6-sol shape on a channel mapped to Claude Opus 4.7: adaptive thinking (the budget form
  would be a 400 there), and the code-mode tool ``exec`` of the ``functions`` namespace runs a
  command from JavaScript.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, load_settings
from ccx_asgi.__main__ import build_standalone
from tests.e2e.codex import catalog_entry, run_codex
from tests.fakes.chat_upstream import CODE_MODE_JS
from tests.fakes.claude_upstream import FakeClaudeUpstream, Reply
from tests.servers import serve

pytestmark = pytest.mark.e2e

SLUG = "claude-coder"
MARKER = "ccx-claude-42"
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"
THOUGHT = "The user wants the marker; I will run one shell command."


def _missing_thinking(body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """A 400 unless the replayed assistant turn starts with its signed thinking block."""
    assistant = body["messages"][-2]["content"]
    if body.get("thinking", {}).get("type") != "enabled" or assistant[0]["type"] != "thinking":
        message = "script: turn 2 must replay the signed thinking block with thinking enabled"
        return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return None


def script(body: dict[str, Any]) -> Reply | tuple[int, dict[str, Any]]:
    """Turn 1 thinks and calls a tool; turn 2 (after the tool result) answers with text."""
    last = body["messages"][-1]["content"]
    prompt = " ".join(b.get("text", "") for m in body["messages"] if m["role"] == "user" for b in m["content"])
    if last[0]["type"] == "tool_result":
        problem = _missing_thinking(body)
        if problem is not None:
            return problem
        output = str(last[0].get("content", ""))
        return Reply([{"type": "text", "text": f"Done. Tool said: {output[-200:]}"}])
    if "hello.txt" in prompt:
        return Reply(
            [
                {"type": "thinking", "thinking": "I will add the file with a patch."},
                {"type": "tool_use", "name": "apply_patch", "input": {"input": PATCH}},
            ],
            stop_reason="tool_use",
        )
    return Reply(
        [
            {"type": "thinking", "thinking": THOUGHT},
            {"type": "text", "text": "Running the command."},
            {
                "type": "tool_use",
                "name": "exec_command",
                "input": {"cmd": f"echo {MARKER} > ccx_marker.txt; echo {MARKER}"},
            },
        ],
        stop_reason="tool_use",
        cache_read=100,
    )


@pytest.fixture
def gateway() -> Any:
    """The fake Claude and the standalone gateway, both on uvicorn; yields ``(base_url, fake)``."""
    fake = FakeClaudeUpstream(keys=("sk-ant-test",), script=script)
    with serve(fake) as upstream_url:
        settings = load_settings(
            proxy_access_key="client-key",
            channels=[
                ChannelConfig(
                    name="claude",
                    service_type="claude",
                    base_url=upstream_url,
                    api_keys=[SecretStr("sk-ant-test")],
                    model_map={SLUG: "claude-sonnet-4-5"},
                )
            ],
        )
        app = build_standalone(settings)
        with serve(app) as url:
            yield f"{url}/v1", fake


def codex(base_url: str, prompt: str, workdir: Path) -> Any:
    return run_codex(
        base_url,
        "client-key",
        SLUG,
        prompt,
        workdir,
        catalog=[catalog_entry(SLUG)],
        extra_config=['model_reasoning_effort="medium"'],
    )


def test_codex_shell_turn_with_thinking_round_trip(gateway: Any, tmp_path: Path) -> None:
    base_url, fake = gateway
    work = tmp_path / "work"
    work.mkdir()
    run = codex(base_url, "Run the marker command.", work)
    assert run.returncode == 0, run.explain() + f"\nrejections: {fake.rejections}"
    assert (work / "ccx_marker.txt").read_text().strip() == MARKER
    assert fake.rejections == []
    first, second = (r.body for r in fake.requests)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 10000}
    assert first["model"] == "claude-sonnet-4-5"
    assert any(t["name"] == "apply_patch" for t in first["tools"])
    assistant = second["messages"][-2]["content"]
    assert assistant[0]["type"] == "thinking" and assistant[0]["thinking"] == THOUGHT
    assert [b["type"] for b in assistant] == ["thinking", "text", "tool_use"]
    assert MARKER in str(second["messages"][-1]["content"][0]["content"])
    assert all(r.headers.get("x-api-key") == "sk-ant-test" and "authorization" not in r.headers for r in fake.requests)
    messages = run.items("agent_message")
    assert messages and MARKER in messages[-1]["text"], run.explain()


def test_codex_apply_patch_turn_writes_the_file(gateway: Any, tmp_path: Path) -> None:
    base_url, fake = gateway
    work = tmp_path / "work"
    work.mkdir()
    run = codex(base_url, "Create hello.txt containing hello.", work)
    assert run.returncode == 0, run.explain() + f"\nrejections: {fake.rejections}"
    assert (work / "hello.txt").read_text() == "hello\n"
    assert fake.rejections == []
    assert len(fake.requests) == 2
    result = fake.requests[1].body["messages"][-1]["content"][0]
    assert result["type"] == "tool_result"
    assert run.items("file_change"), run.explain()


def code_mode_script(body: dict[str, Any]) -> Reply:
    """Turn 1 thinks and calls ``functions__exec`` with JavaScript; turn 2 reports the tool output."""
    last = body["messages"][-1]["content"]
    if last[0]["type"] == "tool_result":
        return Reply([{"type": "text", "text": f"The script ran: {str(last[0].get('content', ''))[-300:]}"}])
    return Reply(
        [
            {"type": "thinking", "thinking": "The exec tool runs JavaScript that can call the shell."},
            {"type": "tool_use", "name": "functions__exec", "input": {"input": CODE_MODE_JS}},
        ],
        stop_reason="tool_use",
    )


def test_codex_gpt_6_sol_runs_a_command_through_code_mode_on_opus_4_7(tmp_path: Path) -> None:
    fake = FakeClaudeUpstream(keys=("sk-ant-test",), script=code_mode_script)
    work = tmp_path / "work"
    work.mkdir()
    with serve(fake) as upstream_url:
        settings = load_settings(
            proxy_access_key="client-key",
            channels=[
                ChannelConfig(
                    name="claude",
                    service_type="claude",
                    base_url=upstream_url,
                    api_keys=[SecretStr("sk-ant-test")],
                    model_map={"gpt-6-sol": "claude-opus-4-7"},
                )
            ],
        )
        with serve(build_standalone(settings)) as url:
            run = run_codex(f"{url}/v1", "client-key", "gpt-6-sol", "Run the marker command.", work)
    assert run.returncode == 0, run.explain() + f"\nrejections: {fake.rejections}"
    assert fake.rejections == []
    assert (work / "ccx_code_marker.txt").read_text().strip() == "ccx-code-42", run.explain()
    first, second = (r.body for r in fake.requests)
    assert first["thinking"] == {"type": "adaptive"} and first["output_config"] == {"effort": "medium"}
    tools = {t["name"] for t in first["tools"]}
    assert {"functions__exec", "functions__wait", "clock__sleep"} <= tools
    assistant = second["messages"][-2]["content"]
    assert [b["type"] for b in assistant] == ["thinking", "tool_use"]  # signed thinking replayed
    assert assistant[1]["input"] == {"input": CODE_MODE_JS}
    assert "ccx-code-42" in str(second["messages"][-1]["content"][0].get("content"))
    messages = run.items("agent_message")
    assert messages and "ccx-code-42" in messages[-1]["text"], run.explain()
