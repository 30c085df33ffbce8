"""``python -m ccx_asgi`` as a user runs it: a real process, the demo channel, the /v1 mount."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sdk import parse_sse, validate_events
from tests.servers import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def standalone() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCX_")}
    env.update(CCX_PORT=str(port), CCX_PROXY_ACCESS_KEY="standalone-key", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccx_asgi"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_serving(url, proc, 20):
        proc.kill()
        raise RuntimeError(proc.stdout.read() if proc.stdout else "no output")
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_standalone_serves_the_demo_channel(standalone: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = standalone
    headers = {"authorization": "Bearer standalone-key"}
    response = httpx.post(f"{url}/v1/responses", json={"model": "gpt-5.5", "input": "hi", "stream": True},
                          headers=headers, timeout=10)  # fmt: skip
    assert response.status_code == 200
    events = parse_sse(response.content)
    validate_events(events)
    assert "demo channel" in events[-1]["response"]["output"][0]["content"][0]["text"]
    hint = httpx.post(f"{url}/responses", json={"model": "m"}, headers=headers, timeout=10)
    assert hint.status_code == 404
    assert "/v1" in hint.json()["error"]["message"]
    proc.terminate()
    log, _ = proc.communicate(timeout=10)
    assert "DEMO channel" in log
    assert "listening on http://127.0.0.1:" in log
    assert "standalone-key" not in log
