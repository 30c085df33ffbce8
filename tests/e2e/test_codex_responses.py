"""The real Codex CLI, through a FastAPI host app that mounts ccx at /v1, to a native Responses upstream."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, create_app, load_settings
from examples.fastapi_app.app import build_host_app
from tests.e2e.codex import run_codex
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.servers import serve

pytestmark = pytest.mark.e2e


def test_codex_runs_a_shell_tool_through_a_fastapi_host(tmp_path: Path) -> None:
    upstream = FakeResponsesUpstream(keys=("sk-upstream",))
    with serve(upstream) as upstream_url:
        settings = load_settings(
            proxy_access_key="client-key",
            channels=[
                ChannelConfig(
                    name="native",
                    service_type="responses",
                    base_url=upstream_url,  # no /v1: ccx adds it
                    api_keys=[SecretStr("sk-upstream")],
                    model_map={"gpt": "upstream-model"},
                )
            ],
        )
        host = build_host_app(create_app(settings))
        with serve(host) as host_url:
            work = tmp_path / "work"
            work.mkdir()
            run = run_codex(f"{host_url}/v1", "client-key", "gpt-5.5", "Run the marker command.", work)
    assert run.returncode == 0, run.explain()
    assert (work / "ccx_marker.txt").read_text().strip() == "ccx-e2e-42"
    commands = run.items("command_execution")
    assert commands, run.explain()
    assert "ccx-e2e-42" in commands[0]["aggregated_output"]
    # Two upstream requests: the first turn, then one carrying Codex's tool output.
    assert len(upstream.requests) == 2, [r.body.get("input", [])[-1:] for r in upstream.requests]
    first, second = upstream.requests
    assert first.body["model"] == "upstream-model"
    assert first.headers["authorization"] == "Bearer sk-upstream"
    assert "client-key" not in str(first.headers)
    outputs = [i for i in second.body["input"] if i.get("type") == "function_call_output"]
    assert outputs
    assert "ccx-e2e-42" in str(outputs[-1]["output"])
    messages = run.items("agent_message")
    assert messages
    assert "ccx-e2e-42" in messages[-1]["text"]
