"""What the real Codex CLI does with the gateway's error codes (the CLI is the judge, not the SDK).

Codex runs with 2 request and 2 stream retries, so a retried error shows as more upstream requests:

- Claude's 400 "prompt is too long" becomes ``context_length_exceeded``: Codex stops at once and says
  it ran out of room in the context window (one upstream request, no retry);
- a Chat provider's in-stream ``context_length_exceeded`` error is passed on in ``response.failed``
  with its code: Codex stops the same way instead of reconnecting;
- Claude's "credit balance is too low" on every key becomes a 429 ``insufficient_quota``: each key is
  tried once, then Codex reports "Quota exceeded" without retrying;
- for contrast, an overloaded Claude is retried by Codex (more requests than keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ccx_asgi import ChannelConfig, load_settings
from ccx_asgi.__main__ import build_standalone
from tests.e2e.codex import CodexRun, catalog_entry, run_codex
from tests.fakes.chat_upstream import FakeChatUpstream, Reply, chunk
from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.servers import serve

pytestmark = pytest.mark.e2e

SLUG = "err-model"
CONTEXT_MESSAGE = "ran out of room in the model's context window"


def _claude_error(kind: str, message: str, status: int = 400) -> Any:
    def script(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return status, {"type": "error", "error": {"type": kind, "message": message}}

    return script


def _codex(upstream: Any, channel: dict[str, Any], work: Path) -> CodexRun:
    with serve(upstream) as upstream_url:
        settings = load_settings(
            proxy_access_key="client-key",
            channels=[
                ChannelConfig(name="up", base_url=upstream_url, model_map={SLUG: "claude-sonnet-4-5"}, **channel)
            ],
        )
        with serve(build_standalone(settings)) as url:
            return run_codex(f"{url}/v1", "client-key", SLUG, "hi", work, catalog=[catalog_entry(SLUG)], retries=2)


def _errors(run: CodexRun) -> list[str]:
    return [e.get("message", "") for e in run.events if e.get("type") == "error"]


def test_claude_prompt_too_long_stops_codex_as_a_context_window_error(tmp_path: Path) -> None:
    fake = FakeClaudeUpstream(
        keys=("k1",),
        script=_claude_error("invalid_request_error", "prompt is too long: 210412 tokens > 200000 maximum"),
    )
    run = _codex(fake, {"service_type": "claude", "api_keys": ["k1"]}, tmp_path)
    assert run.returncode != 0
    assert any(CONTEXT_MESSAGE in m for m in _errors(run)), run.explain()
    assert not any("Reconnecting" in m for m in _errors(run)), run.explain()
    assert len(fake.requests) == 1


def test_chat_in_stream_context_length_stops_codex_instead_of_retrying(tmp_path: Path) -> None:
    def script(body: dict[str, Any]) -> Reply:
        error = {"message": "This model's maximum context length is 65536 tokens.", "code": "context_length_exceeded"}
        return Reply([chunk({"role": "assistant", "content": ""}), {"error": error}], done=False)

    fake = FakeChatUpstream(keys=("k1",), script=script)
    run = _codex(fake, {"service_type": "chat", "api_keys": ["k1"]}, tmp_path)
    assert run.returncode != 0
    assert any(CONTEXT_MESSAGE in m for m in _errors(run)), run.explain()
    assert len(fake.requests) == 1


def test_claude_credit_balance_on_every_key_stops_codex_with_quota_exceeded(tmp_path: Path) -> None:
    fake = FakeClaudeUpstream(
        keys=("k1", "k2"),
        script=_claude_error("invalid_request_error", "Your credit balance is too low to access the Anthropic API."),
    )
    run = _codex(fake, {"service_type": "claude", "api_keys": ["k1", "k2"]}, tmp_path)
    assert run.returncode != 0
    assert any("Quota exceeded" in m for m in _errors(run)), run.explain()
    assert len(fake.requests) == 2  # each key once; Codex did not retry


def test_an_overloaded_claude_is_retried_by_codex(tmp_path: Path) -> None:
    fake = FakeClaudeUpstream(keys=("k1",), script=_claude_error("overloaded_error", "Overloaded", status=529))
    run = _codex(fake, {"service_type": "claude", "api_keys": ["k1"]}, tmp_path)
    assert run.returncode != 0
    assert len(fake.requests) > 1, run.explain()  # Codex retried the 503 the gateway answered
