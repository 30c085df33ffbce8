"""Out of the box: the real Codex CLI against the standalone server's built-in demo channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccx_asgi import load_settings
from ccx_asgi.__main__ import build_standalone
from tests.e2e.codex import run_codex
from tests.servers import serve

pytestmark = pytest.mark.e2e


def test_codex_works_with_the_demo_channel(tmp_path: Path) -> None:
    app = build_standalone(load_settings(proxy_access_key="demo-key"))
    work = tmp_path / "work"
    work.mkdir()
    with serve(app) as url:
        run = run_codex(f"{url}/v1", "demo-key", "gpt-5.5", "Say hello.", work)
    assert run.returncode == 0, run.explain()
    commands = run.items("command_execution")
    assert commands, run.explain()
    assert "hello from the ccx_asgi demo channel" in commands[0]["aggregated_output"]
    messages = run.items("agent_message")
    assert messages, run.explain()
    assert "The tool ran and printed" in messages[-1]["text"]


def test_codex_gpt_6_sol_runs_the_demo_command_through_code_mode(tmp_path: Path) -> None:
    # Codex's "responses lite" shape: the demo answers with a custom_tool_call to `exec` in the
    # `functions` namespace, whose JavaScript runs the shell command.
    app = build_standalone(load_settings(proxy_access_key="demo-key"))
    work = tmp_path / "work"
    work.mkdir()
    with serve(app) as url:
        run = run_codex(f"{url}/v1", "demo-key", "gpt-6-sol", "Say hello.", work)
    assert run.returncode == 0, run.explain()
    commands = run.items("command_execution")
    assert commands and "hello from the ccx_asgi demo channel" in commands[0]["aggregated_output"], run.explain()
    messages = run.items("agent_message")
    assert messages and "hello from the ccx_asgi demo channel" in messages[-1]["text"], run.explain()
